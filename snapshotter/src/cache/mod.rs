//! # The tiered chunk cache
//!
//! Verified, content-addressed chunks of lazy layers, kept in three tiers with a byte budget
//! each: RAM (hottest, most confidently predicted), an mmap'd preallocated file on NVMe, and a
//! spill directory on a slower disk. A chunk lives in exactly one tier at a time.
//!
//! | module | role |
//! |---|---|
//! | [`key`] | [`ChunkKey`] (sha256 of the uncompressed chunk) and [`Verified`] bytes |
//! | [`policy`] | eviction policies (LFU with decay, LRU, score) and per-chunk [`Meta`] |
//! | `shards` | the sharded maps of the hit path and the victim pool of the eviction path |
//! | [`ram`], [`nvme`], [`hdd`] | the tiers |
//! | [`settings`] | the `[cache]` config table, parsed and validated |
//! | [`alloc`], [`journal`], [`mmap`] | the NVMe tier's extent allocator, on-disk index and mapping (the one `unsafe` module) |
//!
//! ## How chunks move
//! - **Admission**: a demand miss goes to RAM; a prefetched chunk goes to the tier its predicted
//!   probability earns (`ram_threshold`, `nvme_threshold`, adjustable at run time); a chunk of a
//!   background whole-layer fetch goes to the spill tier.
//! - **Eviction, just in time**: only when an insertion needs space, the tier evicts its
//!   lowest-ranked chunks (never on a timer). An evicted chunk is demoted one tier down, but only
//!   if it outranks what it would displace there; from the spill tier it is gone.
//! - **Promotion**: every `promote_after_hits`-th hit in a tier tries to move the chunk one tier
//!   up, on the same "outrank what you displace" rule; so does a chunk's first hit in the spill
//!   tier.
//! - **Garbage**: chunks no mounted layer references rank below every referenced chunk, so
//!   they go first; `evict_unreferenced` drops them at once.
//!
//! ## Integrity
//! Nothing enters a tier unless it was checked against its key. The NVMe and spill tiers
//! re-check a chunk the first time this process reads it (chunks it wrote itself were checked
//! before writing). A chunk that fails is dropped, counted in
//! `corrupt`, and reported as a miss, so the caller fetches it again: the cache is never a
//! source of wrong bytes.
//!
//! ## Threads
//! Everything here is synchronous and may block on disk: call it from FUSE threads, prefetch
//! workers or the blocking pool, never from an async worker. Hits take one shard's read lock and
//! update atomics; a tier-wide mutex is taken only to make room, insert or remove.

pub mod alloc;
mod flow;
pub mod hdd;
pub mod journal;
pub mod key;
pub mod mmap;
pub mod nvme;
pub mod policy;
pub mod ram;
pub mod settings;
mod shards;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64};

pub use key::{ChunkKey, Verified};
pub use policy::{Meta, Policy};

use hdd::HddTier;
use nvme::{NvmeTier, Slot};
use policy::{Clock, Priority};
use ram::{RamChunk, RamTier};
use shards::Shards;

/// Validated `[cache]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    /// RAM tier budget, bytes (0: no RAM tier).
    pub ram_bytes: u64,
    /// The NVMe tier's file.
    pub nvme_path: PathBuf,
    /// NVMe tier budget, bytes (0: no NVMe tier).
    pub nvme_bytes: u64,
    /// The spill tier's directory.
    pub hdd_path: PathBuf,
    /// Spill tier budget, bytes (0: no spill tier).
    pub hdd_bytes: u64,
    /// Eviction policy.
    pub policy: Policy,
    /// Prefetched chunks predicted at least this likely go to RAM.
    pub ram_threshold: f32,
    /// Prefetched chunks predicted at least this likely (and below `ram_threshold`) go to NVMe.
    pub nvme_threshold: f32,
    /// Every this many hits in a tier, a chunk tries to move one tier up.
    pub promote_after_hits: u32,
}

/// The tiers, fastest first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// In-process memory.
    Ram,
    /// The mmap'd file.
    Nvme,
    /// The spill directory.
    Hdd,
}

impl Tier {
    /// Its name in status output and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Ram => "ram",
            Tier::Nvme => "nvme",
            Tier::Hdd => "hdd",
        }
    }
}

/// Why a chunk is being stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// A reader is waiting for it: RAM.
    Demand,
    /// Predicted to be read with this probability: the tier the thresholds give.
    Prefetch {
        /// Predicted probability, 0 to 1.
        probability: f32,
    },
    /// Part of a whole-layer background fetch: the spill tier.
    Background,
}

/// Why the cache failed to open or refused a setting.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A file operation failed.
    #[error("cache: cannot {what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Admission thresholds out of order or range.
    #[error(
        "cache thresholds must satisfy 0 <= nvme_threshold <= ram_threshold <= 1 (got ram {ram}, nvme {nvme})"
    )]
    Thresholds {
        /// RAM threshold given.
        ram: f32,
        /// NVMe threshold given.
        nvme: f32,
    },
}

impl CacheError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CacheError {
        let path = path.to_path_buf();
        move |source| CacheError::Io { what, path, source }
    }
}

/// Per-tier counters.
#[derive(Debug, Default)]
pub struct TierCounters {
    /// Reads served from the tier.
    pub hits: AtomicU64,
    /// Chunks stored in the tier (admitted, promoted into, or demoted into it).
    pub inserts: AtomicU64,
    /// Chunks the tier evicted to make room.
    pub evictions: AtomicU64,
    /// Chunks moved up out of the tier.
    pub promotions: AtomicU64,
    /// Chunks moved down into the tier.
    pub demotions: AtomicU64,
}

/// What ranking needs: the clock, the policy and which chunks are referenced.
#[derive(Debug)]
pub struct Ctx {
    clock: Clock,
    policy: Policy,
    refs: Shards<u32>,
}

impl Ctx {
    fn rank(&self, key: &ChunkKey, meta: &Meta) -> Priority {
        let referenced = self.refs.get(key).is_some_and(|n| n > 0);
        meta.priority(self.clock.now(), &self.policy, referenced)
    }
}

/// A cached chunk, readable until dropped (even if it is evicted meanwhile).
#[derive(Debug, Clone)]
pub enum Chunk {
    /// From RAM.
    Ram(Arc<RamChunk>),
    /// From the NVMe file.
    Nvme(Arc<Slot>),
    /// From the spill tier, read whole (its first read in this process, or a promotion try).
    Spill(Arc<[u8]>),
    /// From the spill tier, open for ranged reads.
    SpillFile(Arc<hdd::SpillFile>),
}

impl Chunk {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Chunk::Ram(c) => c.bytes.len() as u64,
            Chunk::Nvme(s) => s.len(),
            Chunk::Spill(b) => b.len() as u64,
            Chunk::SpillFile(f) => f.len(),
        }
    }

    /// Whether the chunk is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies bytes from `offset` into `buf`; returns how many (fewer at the end).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> usize {
        let from_slice = |b: &[u8], buf: &mut [u8]| {
            let start = (offset as usize).min(b.len());
            let n = (b.len() - start).min(buf.len());
            buf[..n].copy_from_slice(&b[start..start + n]);
            n
        };
        match self {
            Chunk::Ram(c) => from_slice(&c.bytes, buf),
            Chunk::Nvme(s) => s.read_at(offset, buf),
            Chunk::Spill(b) => from_slice(b, buf),
            Chunk::SpillFile(f) => f.read_at(offset, buf),
        }
    }

    /// The tier it was served from.
    pub fn tier(&self) -> Tier {
        match self {
            Chunk::Ram(_) => Tier::Ram,
            Chunk::Nvme(_) => Tier::Nvme,
            Chunk::Spill(_) | Chunk::SpillFile(_) => Tier::Hdd,
        }
    }
}

/// One tier in [`CacheStatus`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TierStatus {
    /// Which.
    pub tier: Tier,
    /// Its file or directory (none for RAM).
    pub path: Option<PathBuf>,
    /// Budget, bytes.
    pub budget_bytes: u64,
    /// In use, bytes.
    pub used_bytes: u64,
    /// Chunks held.
    pub chunks: u64,
    /// See [`TierCounters`].
    pub hits: u64,
    /// See [`TierCounters`].
    pub inserts: u64,
    /// See [`TierCounters`].
    pub evictions: u64,
    /// See [`TierCounters`].
    pub promotions: u64,
    /// See [`TierCounters`].
    pub demotions: u64,
}

/// A snapshot of the cache's state and counters.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CacheStatus {
    /// `lfu`, `lru` or `score`.
    pub policy: String,
    /// Current RAM admission threshold.
    pub ram_threshold: f32,
    /// Current NVMe admission threshold.
    pub nvme_threshold: f32,
    /// The enabled tiers.
    pub tiers: Vec<TierStatus>,
    /// Lookups that found nothing.
    pub misses: u64,
    /// Chunks dropped because their bytes failed verification.
    pub corrupt: u64,
    /// Chunks no tier would take.
    pub rejected: u64,
    /// Chunks referenced by at least one mounted layer.
    pub referenced_chunks: u64,
}

/// What `evict_unreferenced` removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Evicted {
    /// Chunks removed.
    pub chunks: u64,
}

/// The cache. Share it with an `Arc`.
#[derive(Debug)]
pub struct ChunkCache {
    ctx: Ctx,
    ram: Option<RamTier>,
    nvme: Option<NvmeTier>,
    hdd: Option<(HddTier, PathBuf)>,
    ram_threshold: AtomicU32,
    nvme_threshold: AtomicU32,
    promote_after: u32,
    misses: AtomicU64,
    corrupt: AtomicU64,
    rejected: AtomicU64,
}
