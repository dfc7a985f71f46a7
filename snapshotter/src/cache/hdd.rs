//! The HDD spill tier: one file per chunk in a directory (may be on another, slower disk), for
//! chunks demoted from NVMe and for low-confidence prefetches.
//!
//! Layout: `<dir>/<first 2 hex digits>/<64 hex digits>`. A chunk is written to a temporary name
//! and renamed into place, so a file under its final name was written whole; it is still read
//! whole and verified the first time this process reads it (as the NVMe tier does), so a
//! damaged file is dropped and fetched again. Later reads open the file and read just the range
//! asked for: a reader of a 4 MiB chunk in 128 KiB pieces must not read it 32 times. The
//! directory is the index: it is scanned at start. The budget counts whole 4 KiB blocks per
//! file, which is what the chunks take on a typical filesystem.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::alloc::BLOCK;
use super::alloc::Extent;
use super::key::{ChunkKey, Verified};
use super::policy::{Meta, Priority};
use super::shards::{Shards, VictimPool};
use super::{CacheError, Ctx, TierCounters};

/// One chunk on the spill disk.
#[derive(Debug)]
pub struct HddEntry {
    len: u64,
    /// Checked against its key by this process.
    verified: AtomicBool,
    /// Its access statistics.
    pub meta: Arc<Meta>,
}

/// A spilled chunk verified earlier, open for ranged reads.
#[derive(Debug)]
pub struct SpillFile {
    file: File,
    len: u64,
}

impl SpillFile {
    /// Chunk length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the chunk is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies bytes from `offset` into `buf`; returns how many (fewer at the end, or 0 if the
    /// file cannot be read: the caller then sees a short chunk and fails the read).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> usize {
        let n = self.len.saturating_sub(offset).min(buf.len() as u64) as usize;
        match self.file.read_exact_at(&mut buf[..n], offset) {
            Ok(()) => n,
            Err(_) => 0,
        }
    }
}

/// What a read from the tier found.
#[derive(Debug)]
pub enum HddRead {
    /// The whole chunk, verified.
    Whole(Vec<u8>, Arc<Meta>),
    /// The chunk (verified earlier in this process), open for ranged reads.
    Open(Arc<SpillFile>, Arc<Meta>),
    /// Not here.
    Miss,
    /// Here but damaged (now dropped).
    Corrupt,
}

/// The HDD tier.
#[derive(Debug)]
pub struct HddTier {
    dir: PathBuf,
    budget: u64,
    used: AtomicU64,
    map: Shards<Arc<HddEntry>>,
    space: Mutex<VictimPool>,
    tmp_seq: AtomicU64,
    /// Counters.
    pub counters: TierCounters,
}

fn charged(len: u64) -> u64 {
    Extent::blocks_for(len) * BLOCK
}

impl HddTier {
    /// Opens the spill directory (created if missing) and indexes the chunks in it. Leftover
    /// temporary files are removed; if the chunks found exceed `budget` (it was lowered), the
    /// excess is deleted.
    pub fn open(dir: &Path, budget: u64, clock_now: u32, ctx: &Ctx) -> Result<HddTier, CacheError> {
        std::fs::create_dir_all(dir).map_err(CacheError::io("create", dir))?;
        let tier = HddTier {
            dir: dir.to_path_buf(),
            budget,
            used: AtomicU64::new(0),
            map: Shards::new(),
            space: Mutex::new(VictimPool::default()),
            tmp_seq: AtomicU64::new(0),
            counters: TierCounters::default(),
        };
        let entries = std::fs::read_dir(dir).map_err(CacheError::io("read", dir))?;
        for sub in entries.flatten() {
            let Ok(files) = std::fs::read_dir(sub.path()) else {
                continue;
            };
            for f in files.flatten() {
                tier.index_file(&f.path(), clock_now);
            }
        }
        if tier.used() > budget {
            let mut pool = tier.space();
            let over = tier.used() - budget;
            let mut freed = 0;
            pool.evict_until(
                || tier.scan(ctx),
                |k| tier.map.get(k).map(|e| ctx.rank(k, &e.meta)),
                None,
                |k| {
                    freed += tier.delete(&k);
                    freed >= over
                },
            );
        }
        Ok(tier)
    }

    fn index_file(&self, path: &Path, clock_now: u32) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        match ChunkKey::parse(name) {
            Some(key) if path.parent() == Some(&self.dir_of(&key)) => {
                let len = std::fs::metadata(path).map_or(0, |m| m.len());
                self.used.fetch_add(charged(len), Ordering::Relaxed);
                self.map.insert(
                    key,
                    Arc::new(HddEntry {
                        len,
                        verified: AtomicBool::new(false),
                        meta: Arc::new(Meta::new(clock_now, 0.0)),
                    }),
                );
            }
            // Temporary files of an interrupted write, and anything else: not ours to keep.
            _ => {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    fn space(&self) -> std::sync::MutexGuard<'_, VictimPool> {
        self.space.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dir_of(&self, key: &ChunkKey) -> PathBuf {
        self.dir.join(&key.hex()[..2])
    }

    fn path_of(&self, key: &ChunkKey) -> PathBuf {
        self.dir_of(key).join(key.hex())
    }

    /// Reads the chunk: whole, verifying it, if this process has not verified it yet or if
    /// `whole` (given its statistics) asks for the bytes; otherwise opened for ranged reads.
    pub fn read(&self, key: &ChunkKey, whole: impl FnOnce(&Meta) -> bool) -> HddRead {
        let Some(entry) = self.map.get(key) else {
            return HddRead::Miss;
        };
        let meta = Arc::clone(&entry.meta);
        let verified = entry.verified.load(Ordering::Acquire);
        if verified && !whole(&meta) {
            return match File::open(self.path_of(key)) {
                Ok(file) => HddRead::Open(
                    Arc::new(SpillFile {
                        file,
                        len: entry.len,
                    }),
                    meta,
                ),
                Err(e) => self.drop_unreadable(key, &entry, Err(e)),
            };
        }
        let read = std::fs::read(self.path_of(key));
        if let Ok(bytes) = &read
            && (verified || key.matches(bytes))
        {
            entry.verified.store(true, Ordering::Release);
            return HddRead::Whole(read.unwrap_or_default(), meta);
        }
        self.drop_unreadable(key, &entry, read)
    }

    /// A chunk that could not be read or did not verify: dropped (unless it was evicted
    /// meanwhile, which is just a miss).
    fn drop_unreadable(
        &self,
        key: &ChunkKey,
        entry: &Arc<HddEntry>,
        read: std::io::Result<Vec<u8>>,
    ) -> HddRead {
        let _pool = self.space();
        if self.map.remove_if(key, |e| Arc::ptr_eq(e, entry)).is_none() {
            // Evicted (its file deleted) between the lookup and the read: just gone.
            return HddRead::Miss;
        }
        match &read {
            Err(e) => tracing::warn!(chunk = %key, error = %e, "spilled chunk unreadable; dropped"),
            Ok(_) => tracing::warn!(chunk = %key, "spilled chunk failed verification; dropped"),
        }
        self.delete_file(key, entry.len);
        HddRead::Corrupt
    }

    /// Whether the chunk is here.
    pub fn contains(&self, key: &ChunkKey) -> bool {
        self.map.contains(key)
    }

    /// Bytes charged (whole blocks per chunk).
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Budget in bytes.
    pub fn budget(&self) -> u64 {
        self.budget
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

    /// Stores `chunk`, deleting lower-ranked chunks if room is needed (the last tier: evicted
    /// chunks are gone). With `incoming` set, only chunks ranked below it may go.
    pub fn insert(
        &self,
        chunk: Verified<'_>,
        meta: &Arc<Meta>,
        incoming: Option<Priority>,
        ctx: &Ctx,
    ) -> bool {
        let cost = charged(chunk.bytes().len() as u64);
        if cost > self.budget {
            return false;
        }
        let mut pool = self.space();
        if self.map.contains(&chunk.key()) {
            return true;
        }
        if self.used() + cost > self.budget {
            let over = self.used() + cost - self.budget;
            let mut freed = 0;
            let made = pool.evict_until(
                || self.scan(ctx),
                |k| self.map.get(k).map(|e| ctx.rank(k, &e.meta)),
                incoming,
                |k| {
                    freed += self.delete(&k);
                    freed >= over
                },
            );
            if !made && self.used() + cost > self.budget {
                return false;
            }
        }
        if let Err(e) = self.write_file(&chunk) {
            tracing::warn!(chunk = %chunk.key(), error = %e, dir = %self.dir.display(), "spill write failed; chunk not kept");
            return false;
        }
        meta.entered_tier();
        self.used.fetch_add(cost, Ordering::Relaxed);
        self.map.insert(
            chunk.key(),
            Arc::new(HddEntry {
                len: chunk.bytes().len() as u64,
                // Written from bytes that were verified before they came here.
                verified: AtomicBool::new(true),
                meta: Arc::clone(meta),
            }),
        );
        self.counters.inserts.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn write_file(&self, chunk: &Verified<'_>) -> std::io::Result<()> {
        let dir = self.dir_of(&chunk.key());
        std::fs::create_dir_all(&dir)?;
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".tmp-{}-{n}", std::process::id()));
        let written = std::fs::write(&tmp, chunk.bytes())
            .and_then(|()| std::fs::rename(&tmp, self.path_of(&chunk.key())));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Evicts `key` for good (its file deleted); returns the bytes charged that were freed.
    fn delete(&self, key: &ChunkKey) -> u64 {
        match self.map.remove_if(key, |_| true) {
            Some(e) => {
                self.counters.evictions.fetch_add(1, Ordering::Relaxed);
                self.delete_file(key, e.len)
            }
            None => 0,
        }
    }

    fn delete_file(&self, key: &ChunkKey, len: u64) -> u64 {
        if let Err(e) = std::fs::remove_file(self.path_of(key))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(chunk = %key, error = %e, "could not delete a spilled chunk");
        }
        self.used.fetch_sub(charged(len), Ordering::Relaxed);
        charged(len)
    }

    /// Removes `key` (moving it up a tier, or dropping garbage).
    pub fn remove(&self, key: &ChunkKey) -> bool {
        let _pool = self.space();
        match self.map.remove_if(key, |_| true) {
            Some(e) => {
                self.delete_file(key, e.len);
                true
            }
            None => false,
        }
    }

    /// Removes every chunk `pred` selects; returns how many.
    pub fn remove_where(&self, pred: impl Fn(&ChunkKey) -> bool) -> usize {
        let mut keys = Vec::new();
        self.map.for_each(|k, _| {
            if pred(k) {
                keys.push(*k);
            }
        });
        keys.iter().filter(|k| self.remove(k)).count()
    }

    fn scan(&self, ctx: &Ctx) -> Vec<(Priority, ChunkKey)> {
        let mut all = Vec::new();
        self.map
            .for_each(|k, e| all.push((ctx.rank(k, &e.meta), *k)));
        all
    }
}
