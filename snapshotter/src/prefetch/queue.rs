//! [`Queue`]: the prefetch work waiting for a worker, ordered by expected time of need, then by
//! probability. Pure (no clock, no cache): callers pass the time and a "cached already" test,
//! so every rule here is unit-tested without threads.
//!
//! - **Order**: running containers' entries first, then background ones (the likely chunks of
//!   images warmed ahead of their pull); within each, times of need are rounded to
//!   [`ORDER_QUANTUM`] slots; within a slot the likelier chunk goes first (a model's times are estimates: 3 ms apart says nothing, 0.9 against 0.3
//!   does), then the chunk digest, so the order is deterministic.
//! - **One entry per chunk**: a chunk predicted again (by the same run or another) keeps the
//!   better entry: a running container's over a background one, then the higher probability,
//!   at equal probability the sooner.
//! - **Bounded**: at `capacity`, a new entry displaces the last one in order if it orders
//!   before it, and is refused otherwise.
//! - **Dropped at pop**: entries whose chunk is cached already, and those more than
//!   `grace` past their time of need (the run has moved on; if it still reads the chunk,
//!   that read fetches it on demand).
//! - **Retracted**: a run's entries that its newest predictions no longer admit
//!   ([`Queue::retract`]): the model changed its mind before a worker took them. An entry
//!   two runs predicted is held under one of them (the better prediction); if that run
//!   retracts it, the other run's next predictions queue it again.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use augur_predictor::{ChunkId, RunId};

/// Times of need closer than this are treated as equal, and the likelier chunk goes first.
pub const ORDER_QUANTUM: Duration = Duration::from_millis(50);

/// One chunk to prefetch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    /// The run it was predicted for.
    pub run: RunId,
    /// The chunk.
    pub chunk: ChunkId,
    /// Predicted probability that the run reads it.
    pub probability: f32,
    /// When the run is expected to read it.
    pub due: Instant,
    /// Background work (a warmed image's chunk, for a run not started yet): queued after
    /// every running container's entries.
    pub background: bool,
}

/// Sort key: (background, slot of the time of need, probability descending, chunk).
type Key = (bool, u64, std::cmp::Reverse<u32>, ChunkId);

/// What [`Queue::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// A new entry.
    Added,
    /// The chunk was queued already; the better of the two entries was kept.
    Merged,
    /// Added, and the last entry in order was dropped to make room.
    Displaced,
    /// The queue is full of entries that all order before this one.
    Refused,
}

/// The queue. Not thread-safe by itself: the scheduler keeps it under a mutex.
#[derive(Debug)]
pub struct Queue {
    epoch: Instant,
    capacity: usize,
    order: BTreeSet<Key>,
    entries: HashMap<ChunkId, (Key, Entry)>,
}

impl Queue {
    /// An empty queue of at most `capacity` entries (at least 1); `epoch` is any instant
    /// before every time of need (slots are counted from it).
    pub fn new(capacity: usize, epoch: Instant) -> Queue {
        Queue {
            epoch,
            capacity: capacity.max(1),
            order: BTreeSet::new(),
            entries: HashMap::new(),
        }
    }

    /// Entries queued.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn key(&self, e: &Entry) -> Key {
        let slot =
            e.due.saturating_duration_since(self.epoch).as_nanos() / ORDER_QUANTUM.as_nanos();
        let p = e.probability.clamp(0.0, 1.0);
        (
            e.background,
            u64::try_from(slot).unwrap_or(u64::MAX),
            std::cmp::Reverse(p.to_bits()),
            e.chunk,
        )
    }

    /// Queues `e` (see the module's rules).
    pub fn push(&mut self, e: Entry) -> Pushed {
        let key = self.key(&e);
        if let Some((old_key, old)) = self.entries.get(&e.chunk).copied() {
            let better = (old.background && !e.background)
                || (old.background == e.background
                    && (e.probability > old.probability
                        || (e.probability == old.probability && e.due < old.due)));
            if better {
                self.order.remove(&old_key);
                self.order.insert(key);
                self.entries.insert(e.chunk, (key, e));
            }
            return Pushed::Merged;
        }
        let mut outcome = Pushed::Added;
        if self.entries.len() >= self.capacity {
            let Some(&last) = self.order.last() else {
                return Pushed::Refused;
            };
            if key >= last {
                return Pushed::Refused;
            }
            self.order.remove(&last);
            self.entries.remove(&last.3);
            outcome = Pushed::Displaced;
        }
        self.order.insert(key);
        self.entries.insert(e.chunk, (key, e));
        outcome
    }

    /// The first entry in order that is still worth fetching at `now`; entries passed over
    /// (cached, or more than `grace` late) are removed and counted in the second value.
    pub fn pop(
        &mut self,
        now: Instant,
        grace: Duration,
        cached: impl Fn(&ChunkId) -> bool,
    ) -> (Option<Entry>, usize) {
        let mut dropped = 0;
        while let Some(key) = self.order.pop_first() {
            let Some((_, e)) = self.entries.remove(&key.3) else {
                continue;
            };
            if cached(&e.chunk) || e.due + grace < now {
                dropped += 1;
                continue;
            }
            return (Some(e), dropped);
        }
        (None, dropped)
    }

    /// Removes every entry of `run`; returns how many.
    pub fn cancel_run(&mut self, run: RunId) -> usize {
        self.remove_where(|e| e.run == run)
    }

    /// Removes `run`'s entries (not background ones) whose chunk `admitted` does not hold;
    /// returns how many.
    pub fn retract(&mut self, run: RunId, admitted: impl Fn(&ChunkId) -> bool) -> usize {
        self.remove_where(|e| e.run == run && !e.background && !admitted(&e.chunk))
    }

    fn remove_where(&mut self, gone: impl Fn(&Entry) -> bool) -> usize {
        let gone: Vec<(ChunkId, Key)> = self
            .entries
            .iter()
            .filter(|(_, (_, e))| gone(e))
            .map(|(c, (k, _))| (*c, *k))
            .collect();
        for (chunk, key) in &gone {
            self.entries.remove(chunk);
            self.order.remove(key);
        }
        gone.len()
    }

    /// Whether `chunk` is queued.
    pub fn contains(&self, chunk: &ChunkId) -> bool {
        self.entries.contains_key(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    fn entry(t0: Instant, run: u64, c: u8, p: f32, ms: u64) -> Entry {
        Entry {
            run: RunId(run),
            chunk: chunk(c),
            probability: p,
            due: t0 + Duration::from_millis(ms),
            background: false,
        }
    }

    const NEVER: fn(&ChunkId) -> bool = |_| false;
    const LONG: Duration = Duration::from_secs(3600);

    fn drain(q: &mut Queue, now: Instant) -> Vec<u8> {
        std::iter::from_fn(|| q.pop(now, LONG, NEVER).0.map(|e| e.chunk.0[0])).collect()
    }

    #[test]
    fn sooner_first_and_within_a_slot_likelier_first() {
        let t0 = Instant::now();
        let mut q = Queue::new(16, t0);
        q.push(entry(t0, 1, 1, 0.9, 500));
        q.push(entry(t0, 1, 2, 0.3, 100));
        q.push(entry(t0, 1, 3, 0.9, 110)); // same 50 ms slot as chunk 2, likelier
        q.push(entry(t0, 1, 4, 0.5, 0));
        assert_eq!(drain(&mut q, t0), [4, 3, 2, 1]);
    }

    #[test]
    fn a_chunk_is_queued_once_with_its_best_prediction() {
        let t0 = Instant::now();
        let mut q = Queue::new(16, t0);
        assert_eq!(q.push(entry(t0, 1, 7, 0.4, 900)), Pushed::Added);
        assert_eq!(q.push(entry(t0, 2, 7, 0.8, 1000)), Pushed::Merged);
        assert_eq!(q.push(entry(t0, 1, 7, 0.5, 10)), Pushed::Merged);
        assert_eq!(q.len(), 1);
        let (e, _) = q.pop(t0, LONG, NEVER);
        let e = e.unwrap();
        assert_eq!((e.run, e.probability), (RunId(2), 0.8));
        assert!(q.is_empty());
    }

    #[test]
    fn cached_and_late_entries_are_dropped_at_pop() {
        let t0 = Instant::now();
        let mut q = Queue::new(16, t0);
        q.push(entry(t0, 1, 1, 0.9, 0));
        q.push(entry(t0, 1, 2, 0.9, 100));
        q.push(entry(t0, 1, 3, 0.9, 5000));
        let now = t0 + Duration::from_millis(1500);
        let (e, dropped) = q.pop(now, Duration::from_secs(1), |c| c.0[0] == 2);
        // 1 is 1.5 s late (grace 1 s), 2 is cached: both dropped; 3 is still ahead.
        assert_eq!((e.map(|e| e.chunk), dropped), (Some(chunk(3)), 2));
        assert_eq!(q.pop(now, LONG, NEVER), (None, 0));
    }

    #[test]
    fn a_full_queue_keeps_the_entries_that_order_first() {
        let t0 = Instant::now();
        let mut q = Queue::new(2, t0);
        q.push(entry(t0, 1, 1, 0.9, 1000));
        q.push(entry(t0, 1, 2, 0.9, 2000));
        assert_eq!(q.push(entry(t0, 1, 3, 0.9, 3000)), Pushed::Refused);
        assert_eq!(q.push(entry(t0, 1, 4, 0.9, 0)), Pushed::Displaced);
        assert_eq!(q.len(), 2);
        assert!(!q.contains(&chunk(2)));
        assert_eq!(drain(&mut q, t0), [4, 1]);
    }

    #[test]
    fn background_entries_wait_for_every_running_containers_entry() {
        let t0 = Instant::now();
        let mut q = Queue::new(16, t0);
        let warm = |c, p, ms| Entry {
            background: true,
            ..entry(t0, 9, c, p, ms)
        };
        q.push(warm(1, 0.99, 0));
        q.push(entry(t0, 1, 2, 0.1, 60_000));
        q.push(warm(3, 0.5, 10));
        // A running container's prediction of a warmed chunk takes its entry over...
        assert_eq!(q.push(entry(t0, 1, 3, 0.2, 50_000)), Pushed::Merged);
        // ...and a background one never displaces a running container's.
        assert_eq!(q.push(warm(2, 0.99, 0)), Pushed::Merged);
        assert_eq!(drain(&mut q, t0), [3, 2, 1]);
    }

    #[test]
    fn retract_removes_only_that_runs_entries_no_longer_admitted() {
        let t0 = Instant::now();
        let mut q = Queue::new(16, t0);
        q.push(entry(t0, 1, 1, 0.9, 0));
        q.push(entry(t0, 1, 2, 0.9, 10));
        q.push(entry(t0, 2, 3, 0.9, 20));
        q.push(Entry {
            background: true,
            ..entry(t0, 1, 4, 0.9, 30)
        });
        // Run 1 now admits only chunk 2: chunk 1 goes; run 2's and the background entry stay.
        assert_eq!(q.retract(RunId(1), |c| c.0[0] == 2), 1);
        assert_eq!(q.retract(RunId(1), |c| c.0[0] == 2), 0);
        assert_eq!(drain(&mut q, t0), [2, 3, 4]);
    }

    #[test]
    fn cancel_run_removes_only_that_runs_entries() {
        let t0 = Instant::now();
        let mut q = Queue::new(16, t0);
        for c in 0..5 {
            q.push(entry(t0, u64::from(c % 2), c, 0.5, u64::from(c) * 100));
        }
        assert_eq!(q.cancel_run(RunId(0)), 3);
        assert_eq!(q.cancel_run(RunId(0)), 0);
        assert_eq!(drain(&mut q, t0), [1, 3]);
    }
}
