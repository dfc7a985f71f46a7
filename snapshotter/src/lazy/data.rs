//! One lazy layer's bytes on this node: which of its chunks the cache holds, fetching the ones it
//! does not, and never handing out a byte that did not match its digest.
//!
//! Chunk bytes live in the node-wide [`ChunkCache`], keyed by their digest, so a chunk that two
//! layers (or two images) share is stored and fetched once. What stays per layer, under
//! `layers/<digest hex>/`, is `stats.json`: the layer's fetch counters as of the last save.
//!
//! Concurrent misses on one gzip member of a layer are fetched once: the first reader fetches,
//! the others wait on its [`Flight`] and take the verified chunks from it (not from the cache,
//! which may already have moved or dropped them). Demand fetches are reported to the daemon's
//! [`Activity`], so the background fetch and the prefetcher keep off the network while they
//! wait. The prefetcher's fetches ([`LayerData::prefetch_member`]) take the same single-flight
//! path, so a reader wanting a chunk that is being prefetched joins that fetch.
//!
//! With access traces on, each read reports every chunk part it served, hit or miss, to the
//! layer's [`TraceTap`] (a non-blocking send; see [`crate::trace`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::cache::{Admission, Chunk, ChunkCache, ChunkKey, Tier, Verified};
use crate::estargz::{self, LayerIndex, NodeId, NodeKind};
use crate::lazy::activity::Activity;
use crate::lazy::source::{BlobSource, FetchError};
use crate::metrics::hot::{HOT, ReadSource as ServedFrom};
use crate::trace::TraceTap;
use crate::trace::recorder::{ReadEvent, ReadSource as TraceSource};

/// On a miss, also fetch the following missing members in the same request, up to this many
/// compressed bytes in all (one round trip instead of several; see `fetch_member_now`).
pub const MISS_READAHEAD: u64 = 128 << 10;

/// Predicted probability the cache is told for read-ahead chunks: a guess that neighbours are
/// read together, below the default NVMe threshold's certainty about a demand read.
const READAHEAD_PROBABILITY: f32 = 0.5;

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
    /// Local state failed.
    #[error("local layer data: {0}")]
    Local(String),
}

/// Counters of one layer, kept across restarts in `stats.json`; the metrics endpoint reads them at
/// scrape time (`metrics::collect::LazyCollector`).
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

/// The verified chunks of one fetched member, by chunk index.
type MemberChunks = Arc<Vec<(u32, Arc<[u8]>)>>;

/// The outcome of one member fetch that other readers may be waiting for.
#[derive(Debug, Default)]
struct Flight {
    done: Mutex<Option<Result<MemberChunks, ReadError>>>,
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
    fn land(self, result: Result<MemberChunks, ReadError>) {
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

/// A chunk's bytes as a read gets them: from the cache, or straight from a fetch.
enum ChunkBytes {
    Cached(Chunk),
    Fetched(Arc<[u8]>),
}

impl ChunkBytes {
    fn source(&self) -> ServedFrom {
        match self {
            ChunkBytes::Cached(c) => match c.tier() {
                Tier::Ram => ServedFrom::Ram,
                Tier::Nvme => ServedFrom::Nvme,
                Tier::Hdd => ServedFrom::Hdd,
            },
            ChunkBytes::Fetched(_) => ServedFrom::Network,
        }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> usize {
        match self {
            ChunkBytes::Cached(c) => c.read_at(offset, buf),
            ChunkBytes::Fetched(b) => {
                let start = (offset as usize).min(b.len());
                let n = (b.len() - start).min(buf.len());
                buf[..n].copy_from_slice(&b[start..start + n]);
                n
            }
        }
    }
}

/// A lazy layer's chunks and its fetcher.
pub struct LayerData {
    index: Arc<LayerIndex>,
    source: Arc<dyn BlobSource>,
    cache: Arc<ChunkCache>,
    stats_path: PathBuf,
    /// Chunk indexes per member, in inner-offset order.
    member_chunks: Vec<Vec<u32>>,
    inflight: Mutex<HashMap<u32, Arc<Flight>>>,
    read_deadline: Duration,
    activity: Arc<Activity>,
    complete: AtomicBool,
    /// Where reads are reported for access traces (none: not traced).
    trace: Option<TraceTap>,
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
    /// Opens the layer whose counters live in `dir`, its chunks in `cache` (which from now on
    /// counts them as referenced, until this is dropped); its demand fetches are reported to
    /// `activity`.
    pub fn open(
        dir: &Path,
        index: Arc<LayerIndex>,
        source: Arc<dyn BlobSource>,
        cache: Arc<ChunkCache>,
        read_deadline: Duration,
        activity: Arc<Activity>,
    ) -> std::io::Result<LayerData> {
        std::fs::create_dir_all(dir)?;
        // Files of the per-layer store that the cache replaced.
        for old in ["data", "present"] {
            let _ = std::fs::remove_file(dir.join(old));
        }
        let mut member_chunks = vec![Vec::new(); index.members().len()];
        for (i, c) in index.chunks().iter().enumerate() {
            member_chunks[c.member as usize].push(i as u32);
        }
        for list in &mut member_chunks {
            list.sort_by_key(|&i| index.chunks()[i as usize].inner_offset);
        }
        let keys: Vec<ChunkKey> = index.chunks().iter().map(|c| ChunkKey(c.digest)).collect();
        cache.reference(&keys);
        let data = LayerData {
            index,
            source,
            cache,
            stats_path: dir.join("stats.json"),
            member_chunks,
            inflight: Mutex::new(HashMap::new()),
            read_deadline,
            activity,
            complete: AtomicBool::new(false),
            trace: None,
            stats: LayerStats::default(),
        };
        if let Ok(saved) = std::fs::read(&data.stats_path)
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
        data.mark_progress_in_memory();
        Ok(data)
    }

    /// Reports this layer's reads to `tap` (set before the layer is shared).
    pub fn set_trace(&mut self, tap: TraceTap) {
        self.trace = Some(tap);
    }

    /// The layer's index.
    pub fn index(&self) -> &Arc<LayerIndex> {
        &self.index
    }

    /// Whether every chunk was in the cache when last checked (reads then need no network,
    /// unless the cache evicts chunks or a stored chunk fails verification).
    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    /// `size` bytes of file `node` at `offset` (fewer at end of file), fetching what is missing.
    /// Counted in the metrics by source; a read that waited on the network also by duration.
    pub fn read(&self, node: NodeId, offset: u64, size: u32) -> Result<Vec<u8>, ReadError> {
        self.read_by(0, node, offset, size)
    }

    /// [`Self::read`] for process `pid` (0: unknown): each chunk part it reads is reported to
    /// the trace tap, if any, as a hit or a miss.
    pub fn read_by(
        &self,
        pid: u32,
        node: NodeId,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, ReadError> {
        let start = Instant::now();
        let mut blocked = false;
        let result = self.read_inner(pid, node, offset, size, &mut blocked);
        if result.is_err() {
            self.stats.read_errors.fetch_add(1, Ordering::Relaxed);
            HOT.lazy_read_error();
        }
        if blocked {
            HOT.blocked_read(start.elapsed());
        }
        result
    }

    /// Sets `blocked` if a chunk had to be fetched.
    fn read_inner(
        &self,
        pid: u32,
        node: NodeId,
        offset: u64,
        size: u32,
        blocked: &mut bool,
    ) -> Result<Vec<u8>, ReadError> {
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
            let bytes = self.chunk(ci)?;
            let from = offset.max(c_start);
            let to = end.min(c_end);
            let at = out.len();
            out.resize(at + (to - from) as usize, 0);
            let n = bytes.read_at(from - c_start, &mut out[at..]);
            let source = bytes.source();
            *blocked |= source == ServedFrom::Network;
            HOT.lazy_read(source, n as u64);
            if n != (to - from) as usize {
                return Err(ReadError::Local(format!(
                    "chunk {ci} is shorter than the TOC says"
                )));
            }
            if let Some(tap) = &self.trace {
                tap.record(ReadEvent {
                    pid,
                    node,
                    chunk: ci,
                    offset: from,
                    len: (to - from) as u32,
                    at: Instant::now(),
                    source: match bytes {
                        ChunkBytes::Cached(_) => TraceSource::Hit,
                        ChunkBytes::Fetched(_) => TraceSource::Miss,
                    },
                });
            }
        }
        Ok(out)
    }

    /// Chunk `ci`'s bytes: from the cache, or fetched (its member, once).
    fn chunk(&self, ci: u32) -> Result<ChunkBytes, ReadError> {
        let c = &self.index.chunks()[ci as usize];
        if let Some(hit) = self.cache.get(&ChunkKey(c.digest)) {
            return Ok(ChunkBytes::Cached(hit));
        }
        let fetched = self.fetch_member(c.member, Instant::now() + self.read_deadline)?;
        fetched
            .iter()
            .find(|(i, _)| *i == ci)
            .map(|(_, b)| ChunkBytes::Fetched(Arc::clone(b)))
            .ok_or_else(|| ReadError::Local(format!("chunk {ci} missing from its member")))
    }

    /// Fetches member `m` once, however many readers ask at the same time.
    pub(crate) fn fetch_member(
        &self,
        m: u32,
        deadline: Instant,
    ) -> Result<MemberChunks, ReadError> {
        self.single_flight(m, true, || self.fetch_member_now(m, deadline))
            .map(|(chunks, _)| chunks)
    }

    /// Prefetches member `m`, admitting its chunk `ci` to the cache as `probability` likely
    /// to be read (its other chunks as read-ahead). Joins a fetch of `m` already in flight
    /// (and a demand read of `m` joins this one). Returns the compressed bytes this call
    /// fetched: 0 if it joined another fetch.
    pub(crate) fn prefetch_member(
        &self,
        m: u32,
        ci: u32,
        probability: f32,
        deadline: Instant,
    ) -> Result<u64, ReadError> {
        let mut fetched = 0;
        self.single_flight(m, false, || {
            let (chunks, bytes) = self.prefetch_member_now(m, ci, probability, deadline)?;
            fetched = bytes;
            Ok(chunks)
        })?;
        Ok(fetched)
    }

    /// Runs `lead` for member `m` unless a fetch of it is in flight, whose result is then
    /// shared; the flag says whether this call led. A `demand` follower counts as a demand
    /// fetch in [`Activity`] while it waits, so prefetching keeps off the link meanwhile.
    fn single_flight(
        &self,
        m: u32,
        demand: bool,
        lead: impl FnOnce() -> Result<MemberChunks, ReadError>,
    ) -> Result<(MemberChunks, bool), ReadError> {
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
            let _waiting = demand.then(|| self.activity.fetching());
            let mut done = flight.done.lock().unwrap_or_else(|p| p.into_inner());
            while done.is_none() {
                done = flight.cv.wait(done).unwrap_or_else(|p| p.into_inner());
            }
            return done
                .clone()
                .unwrap_or_else(|| Err(ReadError::Local("fetch vanished".into())))
                .map(|chunks| (chunks, false));
        }
        // Completes the flight even if the fetch panics, so no follower waits forever.
        let landing = Landing {
            data: self,
            member: m,
            flight: &flight,
        };
        let result = lead();
        landing.land(result.clone());
        result.map(|chunks| (chunks, true))
    }

    /// Fetches exactly member `m` for the prefetcher (no read-ahead: its bandwidth bound
    /// counts what it asks for); returns the chunks and the compressed bytes read.
    fn prefetch_member_now(
        &self,
        m: u32,
        ci: u32,
        probability: f32,
        deadline: Instant,
    ) -> Result<(MemberChunks, u64), ReadError> {
        let member = &self.index.members()[m as usize];
        let prefetching = self.activity.prefetching();
        let compressed = self
            .read_source(member.offset, member.end - member.offset, deadline)
            .map_err(|source| ReadError::Fetch {
                offset: member.offset,
                source,
            });
        drop(prefetching);
        let compressed = compressed?;
        let admission = |i: u32| Admission::Prefetch {
            probability: if i == ci {
                probability
            } else {
                READAHEAD_PROBABILITY
            },
        };
        let chunks = self.store_member_with(m, &compressed, admission)?;
        Ok((chunks, compressed.len() as u64))
    }

    /// Fetches member `m` and, in the same request, the members right after it that are not
    /// cached yet, up to [`MISS_READAHEAD`] bytes in all: files of one directory sit next to
    /// each other in a layer, and a program that reads one usually reads its neighbours next,
    /// so one round trip serves several misses. Only `m` must verify; a bad neighbour is just
    /// dropped.
    fn fetch_member_now(&self, m: u32, deadline: Instant) -> Result<MemberChunks, ReadError> {
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
            .read_source(start, end - start, deadline)
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
        let slice = |j: usize| {
            let mm = &members[j];
            &compressed[(mm.offset - start) as usize..(mm.end - start) as usize]
        };
        let wanted = self.store_member(m, slice(m as usize), Admission::Demand)?;
        for j in m as usize + 1..=last {
            let ahead = Admission::Prefetch {
                probability: READAHEAD_PROBABILITY,
            };
            if let Err(e) = self.store_member(j as u32, slice(j), ahead) {
                tracing::debug!(member = j, error = %e, "read-ahead member dropped");
            }
        }
        Ok(wanted)
    }

    /// Inflates one member's compressed bytes, verifies every chunk in it and offers them to
    /// the cache; returns them. Nothing is stored unless every chunk matches.
    pub(crate) fn store_member(
        &self,
        m: u32,
        compressed: &[u8],
        admission: Admission,
    ) -> Result<MemberChunks, ReadError> {
        self.store_member_with(m, compressed, |_| admission)
    }

    /// [`LayerData::store_member`], each chunk admitted as `admission` says for its index.
    fn store_member_with(
        &self,
        m: u32,
        compressed: &[u8],
        admission: impl Fn(u32) -> Admission,
    ) -> Result<MemberChunks, ReadError> {
        let offset = self.index.members()[m as usize].offset;
        let corrupt = |detail: String| ReadError::Corrupt { offset, detail };
        let inflated = estargz::inflate_member(compressed).map_err(|e| corrupt(e.to_string()))?;
        let chunks = &self.member_chunks[m as usize];
        let mut verified = Vec::with_capacity(chunks.len());
        for &ci in chunks {
            let c = &self.index.chunks()[ci as usize];
            // chunk_bytes checks the bytes against the chunk's digest, the cache key.
            let bytes = estargz::chunk_bytes(&inflated, c).map_err(|e| corrupt(e.to_string()))?;
            verified.push((ci, Arc::<[u8]>::from(bytes)));
        }
        for (ci, bytes) in &verified {
            let key = ChunkKey(self.index.chunks()[*ci as usize].digest);
            self.cache
                .insert(Verified::assume(key, bytes), admission(*ci));
        }
        Ok(Arc::new(verified))
    }

    /// Whether every chunk of member `m` is in the cache.
    pub(crate) fn member_present(&self, m: u32) -> bool {
        self.member_chunks[m as usize].iter().all(|&ci| {
            self.cache
                .contains(&ChunkKey(self.index.chunks()[ci as usize].digest))
        })
    }

    /// Whether a demand read is fetching member `m` right now.
    pub(crate) fn member_in_flight(&self, m: u32) -> bool {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&m)
    }

    fn mark_progress_in_memory(&self) -> bool {
        let complete = (0..self.member_chunks.len()).all(|m| self.member_present(m as u32));
        self.complete.store(complete, Ordering::Release);
        complete
    }

    /// Re-checks completeness (after a fetch pass) and saves the counters.
    pub(crate) fn mark_progress(&self) -> std::io::Result<bool> {
        let complete = self.mark_progress_in_memory();
        self.persist()?;
        Ok(complete)
    }

    /// Writes `stats.json` atomically (no fsync: the counters are informational).
    pub fn persist(&self) -> std::io::Result<()> {
        let stats = SavedStats {
            fetched_bytes: self.stats.fetched_bytes.load(Ordering::Relaxed),
            fetches: self.stats.fetches.load(Ordering::Relaxed),
            read_errors: self.stats.read_errors.load(Ordering::Relaxed),
        };
        let json = serde_json::to_vec_pretty(&stats).map_err(std::io::Error::other)?;
        write_replace(&self.stats_path, &json)
    }

    /// The source's name, for logs.
    pub fn source_name(&self) -> &str {
        self.source.name()
    }

    /// Reads `len` compressed bytes at `offset`, counted in the layer's statistics.
    pub(crate) fn read_source(
        &self,
        offset: u64,
        len: u64,
        deadline: Instant,
    ) -> Result<Vec<u8>, FetchError> {
        let bytes = self.source.read_range(offset, len, deadline)?;
        HOT.registry_fetched(bytes.len() as u64);
        self.stats
            .fetched_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.stats.fetches.fetch_add(1, Ordering::Relaxed);
        Ok(bytes)
    }
}

impl Drop for LayerData {
    fn drop(&mut self) {
        let keys: Vec<ChunkKey> = self
            .index
            .chunks()
            .iter()
            .map(|c| ChunkKey(c.digest))
            .collect();
        self.cache.release(&keys);
    }
}
