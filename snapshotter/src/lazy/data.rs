//! One lazy layer's bytes on this node: which chunks are here, fetching the ones that are not,
//! and never handing out a byte that did not match its digest.
//!
//! Layout under `layers/<digest hex>/`:
//!
//! ```text
//! data        sparse file: every chunk's uncompressed bytes at its slot (LayerIndex order)
//! present     bitmap, one bit per chunk: "this slot was written" (a hint, rewritten atomically)
//! stats.json  the layer's fetch counters as of the last save (unmount, progress)
//! ```
//!
//! The bitmap is only a hint: a chunk found there is verified against its digest the first time
//! this process reads it, so a torn write or a lost page after a crash costs a refetch, never a
//! wrong byte. Chunks this process fetched were verified before they were written.
//!
//! Concurrent misses on one gzip member are fetched once: the first reader fetches, the others
//! wait on its [`Flight`]. Demand fetches are reported to the daemon's [`Activity`], so the
//! background fetch can keep off the network while they wait.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::estargz::{self, LayerIndex, NodeId, NodeKind};
use crate::lazy::activity::Activity;
use crate::lazy::source::{BlobSource, FetchError};

/// On a miss, also fetch the following missing members in the same request, up to this many
/// compressed bytes in all (one round trip instead of several; see `fetch_member_now`).
pub const MISS_READAHEAD: u64 = 128 << 10;

/// Why a read of a lazy layer failed (the FUSE reader gets EIO).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    /// The bytes could not be fetched in time.
    #[error("fetch of member at {offset} failed: {source}")]
    Fetch {
        /// Compressed offset of the member.
        offset: u64,
        /// What went wrong.
        source: FetchError,
    },
    /// The registry sent bytes that do not match the TOC.
    #[error("member at {offset} does not match the TOC: {detail}")]
    Corrupt {
        /// Compressed offset of the member.
        offset: u64,
        /// Which check failed.
        detail: String,
    },
    /// The local data file failed.
    #[error("local layer data: {0}")]
    Local(String),
}

/// Counters of one layer, kept across restarts in `stats.json` (until metrics export them).
#[derive(Debug, Default)]
pub struct LayerStats {
    /// Compressed bytes fetched from the source (demand and background).
    pub fetched_bytes: AtomicU64,
    /// Range requests made.
    pub fetches: AtomicU64,
    /// Reads answered with EIO.
    pub read_errors: AtomicU64,
}

/// `stats.json`: a layer's counters as of its last save.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct SavedStats {
    /// Compressed bytes fetched from the registry, over the layer's whole life on this node.
    pub fetched_bytes: u64,
    /// Range requests made.
    pub fetches: u64,
    /// Reads answered with EIO.
    pub read_errors: u64,
}

/// Replaces `path` with `bytes` via a temporary file and a rename.
fn write_replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// The outcome of one member fetch that other readers may be waiting for.
#[derive(Debug, Default)]
struct Flight {
    done: Mutex<Option<Result<(), ReadError>>>,
    cv: Condvar,
}

/// Ends a leader's [`Flight`]: publishes the result (an error if the leader unwound without
/// one), wakes the followers and forgets the flight.
struct Landing<'a> {
    data: &'a LayerData,
    member: u32,
    flight: &'a Flight,
}

impl Landing<'_> {
    fn land(self, result: Result<(), ReadError>) {
        *self.flight.done.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
    }
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        let mut done = self.flight.done.lock().unwrap_or_else(|p| p.into_inner());
        if done.is_none() {
            *done = Some(Err(ReadError::Local(
                "the fetch of this member failed".into(),
            )));
        }
        drop(done);
        self.flight.cv.notify_all();
        self.data
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.member);
    }
}

/// A fixed-size set of bits shared between threads.
#[derive(Debug)]
struct Bits(Vec<AtomicU64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits((0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect())
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64].load(Ordering::Acquire) & (1 << (i % 64)) != 0
    }
    fn set(&self, i: usize) {
        self.0[i / 64].fetch_or(1 << (i % 64), Ordering::AcqRel);
    }
    fn clear(&self, i: usize) {
        self.0[i / 64].fetch_and(!(1 << (i % 64)), Ordering::AcqRel);
    }
    fn to_bytes(&self) -> Vec<u8> {
        self.0
            .iter()
            .flat_map(|w| w.load(Ordering::Acquire).to_le_bytes())
            .collect()
    }
    fn load(&self, bytes: &[u8]) {
        for (w, b) in self.0.iter().zip(bytes.chunks_exact(8)) {
            let mut a = [0; 8];
            a.copy_from_slice(b);
            w.store(u64::from_le_bytes(a), Ordering::Release);
        }
    }
}

/// A lazy layer's local data and its fetcher.
pub struct LayerData {
    index: Arc<LayerIndex>,
    source: Arc<dyn BlobSource>,
    file: File,
    bitmap_path: PathBuf,
    /// Slot written (persisted as the `present` hint).
    present: Bits,
    /// Slot content known good in this process.
    verified: Bits,
    /// Chunk indexes per member, in inner-offset order.
    member_chunks: Vec<Vec<u32>>,
    inflight: Mutex<HashMap<u32, Arc<Flight>>>,
    read_deadline: Duration,
    activity: Arc<Activity>,
    complete: AtomicBool,
    /// Counters.
    pub stats: LayerStats,
}

impl std::fmt::Debug for LayerData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerData")
            .field("source", &self.source.name())
            .field("complete", &self.complete)
            .finish_non_exhaustive()
    }
}

impl LayerData {
    /// Opens (creating if needed) the data of the layer in `dir`; its demand fetches are
    /// reported to `activity`.
    pub fn open(
        dir: &Path,
        index: Arc<LayerIndex>,
        source: Arc<dyn BlobSource>,
        read_deadline: Duration,
        activity: Arc<Activity>,
    ) -> std::io::Result<LayerData> {
        std::fs::create_dir_all(dir)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("data"))?;
        if file.metadata()?.len() != index.data_size() {
            file.set_len(index.data_size())?;
        }
        let n = index.chunks().len();
        let mut member_chunks = vec![Vec::new(); index.members().len()];
        for (i, c) in index.chunks().iter().enumerate() {
            member_chunks[c.member as usize].push(i as u32);
        }
        for list in &mut member_chunks {
            list.sort_by_key(|&i| index.chunks()[i as usize].inner_offset);
        }
        let data = LayerData {
            index,
            source,
            file,
            bitmap_path: dir.join("present"),
            present: Bits::new(n),
            verified: Bits::new(n),
            member_chunks,
            inflight: Mutex::new(HashMap::new()),
            read_deadline,
            activity,
            complete: AtomicBool::new(false),
            stats: LayerStats::default(),
        };
        if let Ok(bytes) = std::fs::read(&data.bitmap_path) {
            data.present.load(&bytes);
        }
        if let Ok(saved) = std::fs::read(data.stats_path())
            && let Ok(saved) = serde_json::from_slice::<SavedStats>(&saved)
        {
            data.stats
                .fetched_bytes
                .store(saved.fetched_bytes, Ordering::Relaxed);
            data.stats.fetches.store(saved.fetches, Ordering::Relaxed);
            data.stats
                .read_errors
                .store(saved.read_errors, Ordering::Relaxed);
        }
        data.complete
            .store((0..n).all(|i| data.present.get(i)), Ordering::Release);
        Ok(data)
    }

    /// The layer's index.
    pub fn index(&self) -> &Arc<LayerIndex> {
        &self.index
    }

    /// Whether every chunk is on this node (reads no longer need the network, unless a local
    /// chunk fails verification).
    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    /// `size` bytes of file `node` at `offset` (fewer at end of file), fetching what is missing.
    pub fn read(&self, node: NodeId, offset: u64, size: u32) -> Result<Vec<u8>, ReadError> {
        let result = self.read_inner(node, offset, size);
        if result.is_err() {
            self.stats.read_errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn read_inner(&self, node: NodeId, offset: u64, size: u32) -> Result<Vec<u8>, ReadError> {
        let NodeKind::File { chunks, .. } = &self.index.node(node).kind else {
            return Ok(Vec::new());
        };
        let end = offset.saturating_add(u64::from(size));
        let mut out = Vec::with_capacity(size as usize);
        for ci in chunks.clone() {
            let c = &self.index.chunks()[ci as usize];
            let (c_start, c_end) = (c.file_offset, c.file_offset + c.size);
            if c_end <= offset || c_start >= end {
                continue;
            }
            self.ensure(ci as usize)?;
            let from = offset.max(c_start);
            let to = end.min(c_end);
            let at = out.len();
            out.resize(at + (to - from) as usize, 0);
            self.file
                .read_exact_at(&mut out[at..], c.slot + (from - c_start))
                .map_err(|e| ReadError::Local(e.to_string()))?;
        }
        Ok(out)
    }

    /// Makes chunk `ci` present and verified, fetching its member if needed.
    fn ensure(&self, ci: usize) -> Result<(), ReadError> {
        if self.verified.get(ci) {
            return Ok(());
        }
        if self.present.get(ci) && self.verify_local(ci)? {
            return Ok(());
        }
        let member = self.index.chunks()[ci].member;
        self.fetch_member(member, Instant::now() + self.read_deadline)?;
        if self.verified.get(ci) {
            Ok(())
        } else {
            Err(ReadError::Local(format!(
                "chunk {ci} missing after its member was fetched"
            )))
        }
    }

    /// Checks a chunk written by an earlier process; clears its bit if it is not intact.
    fn verify_local(&self, ci: usize) -> Result<bool, ReadError> {
        let c = &self.index.chunks()[ci];
        let mut buf = vec![0; c.size as usize];
        self.file
            .read_exact_at(&mut buf, c.slot)
            .map_err(|e| ReadError::Local(e.to_string()))?;
        if estargz::verify(&buf, &c.digest) {
            self.verified.set(ci);
            Ok(true)
        } else {
            tracing::warn!(
                chunk = ci,
                "local chunk failed verification; fetching it again"
            );
            self.present.clear(ci);
            Ok(false)
        }
    }

    /// Fetches member `m` once, however many readers ask at the same time.
    pub(crate) fn fetch_member(&self, m: u32, deadline: Instant) -> Result<(), ReadError> {
        let (flight, leader) = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&m) {
                Some(f) => (Arc::clone(f), false),
                None => {
                    let f = Arc::new(Flight::default());
                    map.insert(m, Arc::clone(&f));
                    (f, true)
                }
            }
        };
        if !leader {
            let mut done = flight.done.lock().unwrap_or_else(|p| p.into_inner());
            while done.is_none() {
                done = flight.cv.wait(done).unwrap_or_else(|p| p.into_inner());
            }
            return done.clone().unwrap_or(Ok(()));
        }
        // Completes the flight even if the fetch panics, so no follower waits forever.
        let landing = Landing {
            data: self,
            member: m,
            flight: &flight,
        };
        let result = self.fetch_member_now(m, deadline);
        landing.land(result.clone());
        result
    }

    /// Fetches member `m` and, in the same request, the members right after it that are not
    /// here yet, up to [`MISS_READAHEAD`] bytes in all: files of one directory sit next to each
    /// other in a layer, and a program that reads one usually reads its neighbours next, so one
    /// round trip serves several misses. Only `m` must verify; a bad neighbour is just dropped.
    fn fetch_member_now(&self, m: u32, deadline: Instant) -> Result<(), ReadError> {
        let members = self.index.members();
        let start = members[m as usize].offset;
        let mut last = m as usize;
        while last + 1 < members.len() {
            let next = &members[last + 1];
            if next.offset != members[last].end
                || next.end - start > MISS_READAHEAD
                || self.member_present(last as u32 + 1)
                || self.member_in_flight(last as u32 + 1)
            {
                break;
            }
            last += 1;
        }
        let end = members[last].end;
        let asked = Instant::now();
        let fetching = self.activity.fetching();
        let compressed = self
            .source
            .read_range(start, end - start, deadline)
            .map_err(|source| ReadError::Fetch {
                offset: start,
                source,
            });
        drop(fetching);
        let compressed = compressed?;
        tracing::debug!(
            layer = self.source_name(),
            offset = start,
            bytes = compressed.len(),
            members = last + 1 - m as usize,
            ms = asked.elapsed().as_secs_f64() * 1e3,
            "demand fetch"
        );
        self.stats
            .fetched_bytes
            .fetch_add(compressed.len() as u64, Ordering::Relaxed);
        self.stats.fetches.fetch_add(1, Ordering::Relaxed);
        let slice = |j: usize| {
            let mm = &members[j];
            &compressed[(mm.offset - start) as usize..(mm.end - start) as usize]
        };
        self.store_member(m, slice(m as usize))?;
        for j in m as usize + 1..=last {
            if let Err(e) = self.store_member(j as u32, slice(j)) {
                tracing::debug!(member = j, error = %e, "read-ahead member dropped");
            }
        }
        Ok(())
    }

    /// Inflates one member's compressed bytes, verifies every chunk in it and writes them to
    /// their slots. Nothing is written unless every chunk matches.
    pub(crate) fn store_member(&self, m: u32, compressed: &[u8]) -> Result<(), ReadError> {
        let offset = self.index.members()[m as usize].offset;
        let corrupt = |detail: String| ReadError::Corrupt { offset, detail };
        let inflated = estargz::inflate_member(compressed).map_err(|e| corrupt(e.to_string()))?;
        let chunks = &self.member_chunks[m as usize];
        let mut verified = Vec::with_capacity(chunks.len());
        for &ci in chunks {
            let c = &self.index.chunks()[ci as usize];
            let bytes = estargz::chunk_bytes(&inflated, c).map_err(|e| corrupt(e.to_string()))?;
            verified.push((ci as usize, bytes));
        }
        for (ci, bytes) in verified {
            let slot = self.index.chunks()[ci].slot;
            self.file
                .write_all_at(bytes, slot)
                .map_err(|e| ReadError::Local(e.to_string()))?;
            self.present.set(ci);
            self.verified.set(ci);
        }
        Ok(())
    }

    /// Whether every chunk of member `m` is here already.
    pub(crate) fn member_present(&self, m: u32) -> bool {
        self.member_chunks[m as usize]
            .iter()
            .all(|&ci| self.present.get(ci as usize))
    }

    /// Whether a demand read is fetching member `m` right now.
    pub(crate) fn member_in_flight(&self, m: u32) -> bool {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&m)
    }

    /// Re-checks completeness (after a fetch pass) and persists the bitmap.
    pub(crate) fn mark_progress(&self) -> std::io::Result<bool> {
        let n = self.index.chunks().len();
        let complete = (0..n).all(|i| self.present.get(i));
        self.complete.store(complete, Ordering::Release);
        self.persist()?;
        Ok(complete)
    }

    /// Writes the `present` hint and `stats.json` atomically (no fsync: the bitmap is verified
    /// on use, and the counters are informational).
    pub fn persist(&self) -> std::io::Result<()> {
        write_replace(&self.bitmap_path, &self.present.to_bytes())?;
        let stats = SavedStats {
            fetched_bytes: self.stats.fetched_bytes.load(Ordering::Relaxed),
            fetches: self.stats.fetches.load(Ordering::Relaxed),
            read_errors: self.stats.read_errors.load(Ordering::Relaxed),
        };
        let json = serde_json::to_vec_pretty(&stats).map_err(std::io::Error::other)?;
        write_replace(&self.stats_path(), &json)
    }

    fn stats_path(&self) -> PathBuf {
        self.bitmap_path.with_file_name("stats.json")
    }

    /// The source's name, for logs.
    pub fn source_name(&self) -> &str {
        self.source.name()
    }

    /// Reads `len` compressed bytes at `offset` for the background fetch.
    pub(crate) fn read_source(
        &self,
        offset: u64,
        len: u64,
        deadline: Instant,
    ) -> Result<Vec<u8>, FetchError> {
        let bytes = self.source.read_range(offset, len, deadline)?;
        self.stats
            .fetched_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.stats.fetches.fetch_add(1, Ordering::Relaxed);
        Ok(bytes)
    }
}
