//! [`Ledger`]: what was prefetched and what became of it, the measure of the predictor's
//! worth. A chunk a worker fetched is *issued*; it is *used* when any run later reads it,
//! *wasted* when it leaves the cache unread or its run ends without reading it. Bytes are the
//! chunks' uncompressed sizes (what the cache holds).
//!
//! The trace recorder asks [`Ledger::was_prefetched`] to classify a read as a prefetch hit;
//! the answer stays true after the read, until the chunk's run ends.
//!
//! A read can arrive while the chunk's prefetch is still in flight: it joins the fetch (single
//! flight) and may be recorded before the worker, woken by the same completion, issues the
//! chunk. So a worker announces a fetch ([`Ledger::begin`]) before it starts; a read of a
//! chunk in flight is noted there, and the chunk is issued as used (a late prefetch, as the
//! evaluation counts it) or, if the fetch was not the worker's after all
//! ([`Ledger::abandon`]), the read is counted as the miss it was. Without this, such chunks
//! were counted read on demand and then wasted.

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
    book: Mutex<Book>,
    /// Counters.
    pub totals: Totals,
}

#[derive(Debug, Default)]
struct Book {
    live: HashMap<ChunkId, Issued>,
    /// Chunks a worker is fetching now → whether a run read it meanwhile, and the bytes of
    /// those reads that were misses.
    flying: HashMap<ChunkId, (bool, u64)>,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Ledger {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A worker starts fetching `chunk`: reads until [`Ledger::issue`] or
    /// [`Ledger::abandon`] are held for it.
    pub fn begin(&self, chunk: ChunkId) {
        self.book().flying.entry(chunk).or_insert((false, 0));
    }

    /// The worker's fetch of `chunk` was not its own (another fetch was under way) or failed:
    /// reads held for it were misses.
    pub fn abandon(&self, chunk: &ChunkId) {
        if let Some((_, missed)) = self.book().flying.remove(chunk) {
            add(&self.totals.miss_bytes, missed);
        }
    }

    /// Records a chunk a worker prefetched (used already if a run read it in flight); a chunk
    /// issued again replaces its entry and is counted once.
    pub fn issue(&self, chunk: ChunkId, mut issued: Issued) {
        let mut book = self.book();
        let read_in_flight = book.flying.remove(&chunk).is_some_and(|(read, _)| read);
        if !book.live.contains_key(&chunk) {
            add(&self.totals.issued_chunks, 1);
            add(&self.totals.issued_bytes, issued.bytes);
        }
        if read_in_flight && !issued.used {
            issued.used = true;
            add(&self.totals.used_chunks, 1);
            add(&self.totals.used_bytes, issued.bytes);
        }
        book.live.insert(chunk, issued);
    }

    /// A run read `chunk` (`size` bytes), served from `source`.
    pub fn read(&self, chunk: &ChunkId, size: u64, source: AccessSource) {
        let mut book = self.book();
        if let Some(i) = book.live.get_mut(chunk) {
            if !i.used {
                i.used = true;
                add(&self.totals.used_chunks, 1);
                add(&self.totals.used_bytes, i.bytes);
            }
            return;
        }
        if let Some((read, missed)) = book.flying.get_mut(chunk) {
            *read = true;
            if source == AccessSource::Miss {
                *missed += size;
            }
            return;
        }
        if source == AccessSource::Miss {
            add(&self.totals.miss_bytes, size);
        }
    }

    /// Whether `chunk` is in the cache because it was prefetched (and its run is still on).
    pub fn was_prefetched(&self, chunk: &ChunkId) -> bool {
        self.book().live.contains_key(chunk)
    }

    /// `run` ended: its unread chunks are wasted; its chunks leave the ledger.
    pub fn run_ended(&self, run: RunId) {
        self.book().live.retain(|_, i| {
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
        let mut evicted = 0;
        self.book().live.retain(|chunk, i| {
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
        let book = self.book();
        let mut v: Vec<_> = book.live.iter().map(|(c, i)| (*c, *i)).collect();
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

    #[test]
    fn a_read_that_joins_a_prefetch_in_flight_counts_it_used_not_missed() {
        let l = Ledger::default();
        let (a, b, c) = (ChunkId([1; 32]), ChunkId([2; 32]), ChunkId([3; 32]));
        // a: read while in flight, recorded before the worker issues it.
        l.begin(a);
        l.read(&a, 100, AccessSource::Miss);
        l.issue(a, issued(1, 100));
        // b: in flight, never read.
        l.begin(b);
        l.issue(b, issued(1, 200));
        // c: the worker joined someone else's fetch; the read was a miss.
        l.begin(c);
        l.read(&c, 300, AccessSource::Miss);
        l.abandon(&c);
        assert_eq!(
            (get(&l.totals.used_chunks), get(&l.totals.used_bytes)),
            (1, 100)
        );
        assert_eq!(get(&l.totals.miss_bytes), 300);
        assert_eq!(get(&l.totals.issued_bytes), 300);
        l.run_ended(RunId(1));
        assert_eq!(get(&l.totals.wasted_bytes), 200, "only b is wasted");
    }
}
