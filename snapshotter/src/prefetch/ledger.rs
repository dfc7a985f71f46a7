//! [`Ledger`]: what was prefetched and what became of it, the measure of the predictor's
//! worth. A chunk a worker fetched is *issued*; it is *used* when any run later reads it,
//! *wasted* when it leaves the cache unread or its run ends without reading it. Bytes are the
//! chunks' uncompressed sizes (what the cache holds).
//!
//! The trace recorder asks [`Ledger::was_prefetched`] to classify a read as a prefetch hit;
//! the answer stays true after the read, until the chunk's run ends.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use augur_predictor::{AccessSource, ChunkId, RunId};

use crate::cache::{ChunkCache, ChunkKey};

/// One prefetched chunk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Issued {
    /// The run it was predicted for.
    pub run: RunId,
    /// Uncompressed size.
    pub bytes: u64,
    /// The probability it was admitted with.
    pub probability: f32,
    /// Whether a run read it since.
    pub used: bool,
}

/// Totals since start.
#[derive(Debug, Default)]
pub struct Totals {
    /// Chunks issued.
    pub issued_chunks: AtomicU64,
    /// Their bytes.
    pub issued_bytes: AtomicU64,
    /// Chunks used.
    pub used_chunks: AtomicU64,
    /// Their bytes.
    pub used_bytes: AtomicU64,
    /// Chunks wasted.
    pub wasted_chunks: AtomicU64,
    /// Their bytes.
    pub wasted_bytes: AtomicU64,
    /// Wasted because the cache evicted them unread.
    pub evicted_unused: AtomicU64,
    /// Bytes runs read that had to be fetched on demand (for recall).
    pub miss_bytes: AtomicU64,
}

/// The prefetched chunks still in play, and the totals.
#[derive(Debug, Default)]
pub struct Ledger {
    live: Mutex<HashMap<ChunkId, Issued>>,
    /// Counters.
    pub totals: Totals,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Ledger {
    /// Records a chunk a worker prefetched.
    pub fn issue(&self, chunk: ChunkId, issued: Issued) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if live.insert(chunk, issued).is_none() {
            add(&self.totals.issued_chunks, 1);
            add(&self.totals.issued_bytes, issued.bytes);
        }
    }

    /// A run read `chunk` (`size` bytes), served from `source`.
    pub fn read(&self, chunk: &ChunkId, size: u64, source: AccessSource) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        match live.get_mut(chunk) {
            Some(i) if !i.used => {
                i.used = true;
                add(&self.totals.used_chunks, 1);
                add(&self.totals.used_bytes, i.bytes);
            }
            Some(_) => {}
            None if source == AccessSource::Miss => add(&self.totals.miss_bytes, size),
            None => {}
        }
    }

    /// Whether `chunk` is in the cache because it was prefetched (and its run is still on).
    pub fn was_prefetched(&self, chunk: &ChunkId) -> bool {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(chunk)
    }

    /// `run` ended: its unread chunks are wasted; its chunks leave the ledger.
    pub fn run_ended(&self, run: RunId) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, i| {
            if i.run != run {
                return true;
            }
            if !i.used {
                add(&self.totals.wasted_chunks, 1);
                add(&self.totals.wasted_bytes, i.bytes);
            }
            false
        });
    }

    /// Unread chunks the cache no longer holds are wasted (evicted); returns how many.
    pub fn sweep_evicted(&self, cache: &ChunkCache) -> u64 {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let mut evicted = 0;
        live.retain(|chunk, i| {
            if i.used || cache.contains(&ChunkKey(chunk.0)) {
                return true;
            }
            evicted += 1;
            add(&self.totals.wasted_chunks, 1);
            add(&self.totals.wasted_bytes, i.bytes);
            false
        });
        add(&self.totals.evicted_unused, evicted);
        evicted
    }

    /// The chunks in play (for status and tests).
    pub fn live(&self) -> Vec<(ChunkId, Issued)> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = live.iter().map(|(c, i)| (*c, *i)).collect();
        v.sort_by_key(|(c, _)| *c);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(run: u64, bytes: u64) -> Issued {
        Issued {
            run: RunId(run),
            bytes,
            probability: 0.9,
            used: false,
        }
    }

    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    #[test]
    fn reads_count_once_and_a_runs_unread_chunks_are_wasted_at_its_end() {
        let l = Ledger::default();
        let (a, b, c) = (ChunkId([1; 32]), ChunkId([2; 32]), ChunkId([3; 32]));
        l.issue(a, issued(1, 100));
        l.issue(b, issued(1, 200));
        l.issue(c, issued(2, 400));
        l.read(&a, 100, AccessSource::PrefetchHit);
        l.read(&a, 100, AccessSource::PrefetchHit);
        l.read(&ChunkId([9; 32]), 50, AccessSource::Miss);
        assert!(l.was_prefetched(&a));
        assert_eq!(
            (get(&l.totals.used_bytes), get(&l.totals.used_chunks)),
            (100, 1)
        );
        assert_eq!(get(&l.totals.miss_bytes), 50);
        l.run_ended(RunId(1));
        assert_eq!(get(&l.totals.wasted_bytes), 200);
        assert!(!l.was_prefetched(&a) && !l.was_prefetched(&b));
        assert!(l.was_prefetched(&c), "another run's chunk stays");
        assert_eq!(get(&l.totals.issued_bytes), 700);
    }
}
