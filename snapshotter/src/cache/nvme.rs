//! The NVMe tier: one preallocated file, memory-mapped, carved into extents by a best-fit
//! allocator, indexed by a journal (`<file>.journal`).
//!
//! A chunk's [`Slot`] owns its extent; the extent returns to the allocator when the last `Arc`
//! of the slot is dropped, so a reader that still holds a chunk can finish copying from it
//! after the chunk was evicted. Chunks this process wrote were verified before they were
//! written; chunks found in the journal at start are verified on their first read, and one
//! that fails is dropped (counted as corrupt) and fetched again by the caller.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::alloc::{BLOCK, Extent, ExtentAllocator};
use super::journal::Journal;
use super::key::{ChunkKey, Verified};
use super::mmap::MappedFile;
use super::policy::{Meta, Priority};
use super::shards::{Shards, VictimPool};
use super::{CacheError, Ctx, TierCounters};

/// Journal records beyond twice the live chunks (plus this slack) trigger a rewrite.
const JOURNAL_SLACK: u64 = 4096;

#[derive(Debug)]
struct Shared {
    map: MappedFile,
    alloc: Mutex<ExtentAllocator>,
}

impl Shared {
    fn alloc(&self) -> std::sync::MutexGuard<'_, ExtentAllocator> {
        self.alloc.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One chunk in the mapped file.
#[derive(Debug)]
pub struct Slot {
    extent: Extent,
    len: u64,
    verified: AtomicBool,
    /// Its access statistics.
    pub meta: Arc<Meta>,
    shared: Arc<Shared>,
}

impl Slot {
    /// Chunk length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the chunk is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies bytes from `offset` into `buf`; returns how many (fewer at the chunk's end).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> usize {
        let n = (self.len.saturating_sub(offset)).min(buf.len() as u64) as usize;
        self.shared
            .map
            .read_at(self.extent.offset() + offset, &mut buf[..n]);
        n
    }

    /// A copy of the whole chunk.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len as usize];
        self.read_at(0, &mut v);
        v
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.alloc().free(self.extent);
    }
}

#[derive(Debug)]
struct Space {
    pool: VictimPool,
    journal: Journal,
}

/// The NVMe tier.
#[derive(Debug)]
pub struct NvmeTier {
    path: PathBuf,
    shared: Arc<Shared>,
    map: Shards<Arc<Slot>>,
    /// Held while making room, inserting and removing (never on the hit path).
    space: Mutex<Space>,
    /// Counters.
    pub counters: TierCounters,
}

/// A chunk leaving the NVMe tier, with a copy of its bytes for the tier below.
pub type NvmeVictim = (ChunkKey, Vec<u8>, Arc<Meta>);

impl NvmeTier {
    /// Opens (creating, resizing and preallocating) the cache file at `path` for `budget`
    /// bytes, and loads the chunks its journal lists.
    pub fn open(path: &Path, budget: u64, clock_now: u32) -> Result<NvmeTier, CacheError> {
        let io = |what: &'static str| CacheError::io(what, path);
        let total = budget / BLOCK;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(CacheError::io("create the directory of", dir))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io("open"))?;
        size_file(&file, total * BLOCK).map_err(io("preallocate"))?;
        let map = MappedFile::map(&file).map_err(io("map"))?;
        let journal_path = journal_path(path);
        let (journal, entries) =
            Journal::open(&journal_path, total).map_err(CacheError::io("open", &journal_path))?;
        let shared = Arc::new(Shared {
            map,
            alloc: Mutex::new(ExtentAllocator::new(total)),
        });
        let tier = NvmeTier {
            path: path.to_path_buf(),
            shared,
            map: Shards::new(),
            space: Mutex::new(Space {
                pool: VictimPool::default(),
                journal,
            }),
            counters: TierCounters::default(),
        };
        let listed = entries.len();
        for e in entries {
            if tier.shared.alloc().claim(e.extent) {
                tier.map.insert(
                    e.key,
                    Arc::new(Slot {
                        extent: e.extent,
                        len: e.len,
                        verified: AtomicBool::new(false),
                        meta: Arc::new(Meta::new(clock_now, 0.0)),
                        shared: Arc::clone(&tier.shared),
                    }),
                );
            }
        }
        if tier.map.len() != listed {
            tracing::warn!(
                path = %path.display(),
                dropped = listed - tier.map.len(),
                "cache journal listed overlapping extents; kept the newest"
            );
        }
        tier.compact_if_needed(&mut tier.space());
        Ok(tier)
    }

    fn space(&self) -> std::sync::MutexGuard<'_, Space> {
        self.space.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The chunk, if here.
    pub fn get(&self, key: &ChunkKey) -> Option<Arc<Slot>> {
        self.map.get(key)
    }

    /// Whether the chunk is here.
    pub fn contains(&self, key: &ChunkKey) -> bool {
        self.map.contains(key)
    }

    /// Makes sure `slot` holds `key`'s bytes: true if it does (checked once per process);
    /// false if not, in which case the chunk is dropped from the tier.
    pub fn verify(&self, key: &ChunkKey, slot: &Arc<Slot>) -> bool {
        if slot.verified.load(Ordering::Acquire) {
            return true;
        }
        if key.matches(&slot.to_vec()) {
            slot.verified.store(true, Ordering::Release);
            return true;
        }
        tracing::warn!(chunk = %key, path = %self.path.display(), "cached chunk failed verification; dropped");
        self.remove(key, Some(slot));
        false
    }

    /// Bytes of the file in use (whole blocks).
    pub fn used(&self) -> u64 {
        let a = self.shared.alloc();
        (a.total() - a.free_blocks()) * BLOCK
    }

    /// Budget: the file's size.
    pub fn budget(&self) -> u64 {
        self.shared.alloc().total() * BLOCK
    }

    /// Calls `f` with every chunk's key.
    pub fn for_each_key(&self, mut f: impl FnMut(&ChunkKey)) {
        self.map.for_each(|k, _| f(k));
    }

    /// Chunks held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it holds no chunk.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Stores `chunk`, evicting lower-ranked chunks into `victims` when no hole fits. With
    /// `incoming` set, only chunks ranked below it may be evicted; false if not admitted.
    pub fn insert(
        &self,
        chunk: Verified<'_>,
        meta: &Arc<Meta>,
        incoming: Option<Priority>,
        ctx: &Ctx,
        victims: &mut Vec<NvmeVictim>,
    ) -> bool {
        let blocks = Extent::blocks_for(chunk.bytes().len() as u64);
        let mut space = self.space();
        if blocks > self.shared.alloc().total() {
            return false;
        }
        if self.map.contains(&chunk.key()) {
            return true;
        }
        let Some(extent) = self.allocate(&mut space, blocks, incoming, ctx, victims) else {
            return false;
        };
        self.shared.map.write_at(extent.offset(), chunk.bytes());
        let len = chunk.bytes().len() as u64;
        if let Err(e) = space.journal.put(&chunk.key(), extent, len) {
            tracing::warn!(error = %e, path = %self.path.display(), "cache journal write failed; chunk not kept");
            self.shared.alloc().free(extent);
            return false;
        }
        meta.entered_tier();
        let slot = Arc::new(Slot {
            extent,
            len,
            verified: AtomicBool::new(true),
            meta: Arc::clone(meta),
            shared: Arc::clone(&self.shared),
        });
        self.map.insert(chunk.key(), slot);
        self.counters.inserts.fetch_add(1, Ordering::Relaxed);
        self.compact_if_needed(&mut space);
        true
    }

    /// An extent of `blocks`, evicting chunks (lowest rank first) until a hole fits.
    fn allocate(
        &self,
        space: &mut Space,
        blocks: u64,
        incoming: Option<Priority>,
        ctx: &Ctx,
        victims: &mut Vec<NvmeVictim>,
    ) -> Option<Extent> {
        if let Some(e) = self.shared.alloc().allocate(blocks) {
            return Some(e);
        }
        let Space { pool, journal } = space;
        pool.evict_until(
            || self.scan(ctx),
            |k| self.map.get(k).map(|s| ctx.rank(k, &s.meta)),
            incoming,
            |k| {
                if let Some(slot) = self.unpublish(journal, &k, None) {
                    self.counters.evictions.fetch_add(1, Ordering::Relaxed);
                    victims.push((k, slot.to_vec(), Arc::clone(&slot.meta)));
                    // Dropping our Arc frees the extent unless a reader still holds it.
                }
                self.shared.alloc().largest_hole() >= blocks
            },
        );
        self.shared.alloc().allocate(blocks)
    }

    /// Takes `key` out of the map and logs its removal (before its extent can be reused).
    /// With `only`, removes it only if it is still that slot.
    fn unpublish(
        &self,
        journal: &mut Journal,
        key: &ChunkKey,
        only: Option<&Arc<Slot>>,
    ) -> Option<Arc<Slot>> {
        let slot = self
            .map
            .remove_if(key, |s| only.is_none_or(|o| Arc::ptr_eq(o, s)))?;
        if let Err(e) = journal.del(key) {
            // The put stays in the journal; after a restart the extent may hold other bytes,
            // which verification on first read catches.
            tracing::warn!(error = %e, path = %self.path.display(), "cache journal write failed");
        }
        Some(slot)
    }

    /// Removes `key` (if it is still `only`, when given); returns its slot.
    pub fn remove(&self, key: &ChunkKey, only: Option<&Arc<Slot>>) -> Option<Arc<Slot>> {
        let mut space = self.space();
        self.unpublish(&mut space.journal, key, only)
    }

    /// Removes every chunk `pred` selects; returns how many.
    pub fn remove_where(&self, pred: impl Fn(&ChunkKey) -> bool) -> usize {
        let mut space = self.space();
        let mut keys = Vec::new();
        self.map.for_each(|k, _| {
            if pred(k) {
                keys.push(*k);
            }
        });
        keys.iter()
            .filter(|k| self.unpublish(&mut space.journal, k, None).is_some())
            .count()
    }

    fn scan(&self, ctx: &Ctx) -> Vec<(Priority, ChunkKey)> {
        let mut all = Vec::new();
        self.map
            .for_each(|k, s| all.push((ctx.rank(k, &s.meta), *k)));
        all
    }

    fn compact_if_needed(&self, space: &mut Space) {
        let live = self.map.len() as u64;
        if space.journal.records() <= 2 * live + JOURNAL_SLACK {
            return;
        }
        let mut entries = Vec::with_capacity(live as usize);
        self.map
            .for_each(|k, s| entries.push((*k, s.extent, s.len)));
        if let Err(e) = space.journal.compact(&entries) {
            tracing::warn!(error = %e, path = %self.path.display(), "cache journal rewrite failed");
        }
    }
}

/// The journal beside the cache file.
pub fn journal_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".journal");
    path.with_file_name(name)
}

/// Makes `file` exactly `len` bytes with every block allocated, so that writes through the
/// mapping never need the filesystem to find space (see `mmap.rs`).
fn size_file(file: &File, len: u64) -> std::io::Result<()> {
    if file.metadata()?.len() > len {
        file.set_len(len)?;
    }
    if len > 0 {
        let off = libc::off_t::try_from(len).map_err(std::io::Error::other)?;
        nix::fcntl::fallocate(file, nix::fcntl::FallocateFlags::empty(), 0, off)
            .map_err(std::io::Error::from)?;
    }
    Ok(())
}
