//! The scheduler: the state the predictor thread and the workers share ([`Shared`]: queue,
//! bandwidth bucket, ledger, counters, current threshold) and the worker loop.
//!
//! A worker (`augur-prefetch-N`, a fixed pool) repeats: wait while any demand fetch is in
//! flight (demand first, always); take the first entry of the queue (only while no demand
//! fetch is in flight, so waiting work stays where `cancel_run` finds it); find a mounted layer
//! holding the chunk; decline it if the chunk is too big for its probability
//! (`augur_predictor::policy`: the threshold bounds expected wasted bytes); take the member's
//! compressed size from the bandwidth bucket (waiting if it is empty); wait for demand again;
//! skip it if its run was cancelled meanwhile; fetch the member through the layer's
//! single-flight path
//! (a reader wanting it joins the fetch); record the chunk in the ledger. A worker holds no
//! lock while it fetches or waits. Each worker fetches one member at a time, so the workers'
//! count bounds concurrency.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use std::collections::{HashMap, VecDeque};

use augur_predictor::policy::worth_prefetching;
use augur_predictor::{ChunkId, Prediction, RunId};

use crate::cache::{ChunkCache, ChunkKey};
use crate::lazy::activity::Activity;
use crate::lazy::locator::ChunkLocator;
use crate::prefetch::bucket::TokenBucket;
use crate::prefetch::ledger::{Issued, Ledger};
use crate::prefetch::queue::{Entry, Pushed, Queue};
use crate::prefetch::warmed::WarmSets;

/// How often a waiting worker looks at the demand side and the stop flag again.
const POLL: Duration = Duration::from_millis(10);
/// An entry this late is dropped (its run has moved on).
pub const LATE_GRACE: Duration = Duration::from_secs(2);
/// Cancelled runs remembered (runs end far less often than this many fetches take).
const CANCELLED_KEPT: usize = 1024;
/// A prefetch waiting on the registry longer than this fails (and is counted).
const FETCH_DEADLINE: Duration = Duration::from_secs(30);

/// Scheduler counters (see [`super::PrefetchStats`] for their meaning).
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) queued: AtomicU64,
    /// Events the predictor thread has handled (and made predictions after).
    pub(crate) events_handled: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) unlocated: AtomicU64,
    pub(crate) declined: AtomicU64,
    pub(crate) retracted: AtomicU64,
    pub(crate) fetch_errors: AtomicU64,
    pub(crate) fetched_bytes: AtomicU64,
    /// Nanoseconds workers spent fetching (their busy share, when bandwidth is unbounded).
    pub(crate) busy_nanos: AtomicU64,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) max_in_flight: AtomicUsize,
}

/// What the predictor thread and the workers share.
#[derive(Debug)]
pub struct Shared {
    pub(crate) queue: Mutex<Queue>,
    work: Condvar,
    pub(crate) stop: AtomicBool,
    pub(crate) bucket: Mutex<TokenBucket>,
    pub(crate) cache: Arc<ChunkCache>,
    pub(crate) activity: Arc<Activity>,
    locator: Arc<ChunkLocator>,
    pub(crate) ledger: Ledger,
    pub(crate) counters: Counters,
    threshold: AtomicU32,
    /// Runs cancelled lately (a worker may hold one of their entries while it waits).
    cancelled: Mutex<VecDeque<RunId>>,
    /// Each live run's latest predictions (all asked for, before the threshold), for
    /// `GET /predictions/{snapshot}`.
    predictions: Mutex<HashMap<RunId, Vec<Prediction>>>,
    /// Layers of images warmed ahead of their pull (in no mount's locator yet).
    pub(crate) warm: WarmSets,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Shared {
    /// Shared state over the daemon's cache, demand activity and chunk locator.
    pub fn new(
        parts: &super::Parts,
        queue_max: usize,
        bytes_per_sec: u64,
        threshold: f32,
    ) -> Shared {
        let now = Instant::now();
        Shared {
            queue: Mutex::new(Queue::new(queue_max, now)),
            work: Condvar::new(),
            stop: AtomicBool::new(false),
            bucket: Mutex::new(TokenBucket::new(bytes_per_sec, now)),
            cache: Arc::clone(&parts.cache),
            activity: Arc::clone(&parts.activity),
            locator: Arc::clone(&parts.locator),
            ledger: Ledger::default(),
            counters: Counters::default(),
            threshold: AtomicU32::new(threshold.to_bits()),
            cancelled: Mutex::new(VecDeque::new()),
            predictions: Mutex::new(HashMap::new()),
            warm: WarmSets::default(),
        }
    }

    /// Keeps `run`'s latest predictions (the predictor thread, after each batch).
    pub(crate) fn note_predictions(&self, run: RunId, predictions: &[Prediction]) {
        lock(&self.predictions).insert(run, predictions.to_vec());
    }

    /// `run`'s latest predictions, best first (`None`: none made for it yet).
    pub(crate) fn predictions(&self, run: RunId) -> Option<Vec<Prediction>> {
        lock(&self.predictions).get(&run).cloned()
    }

    /// Forgets `run`'s predictions (it ended).
    pub(crate) fn forget_predictions(&self, run: RunId) {
        lock(&self.predictions).remove(&run);
    }

    /// The current prefetch threshold.
    pub fn threshold(&self) -> f32 {
        f32::from_bits(self.threshold.load(Ordering::Acquire))
    }

    pub(crate) fn set_threshold(&self, t: f32) {
        self.threshold.store(t.to_bits(), Ordering::Release);
    }

    /// Whether the cache holds `chunk`.
    pub fn cached(&self, chunk: &ChunkId) -> bool {
        self.cache.contains(&ChunkKey(chunk.0))
    }

    /// Queues entries and wakes the workers.
    pub fn enqueue(&self, entries: impl IntoIterator<Item = Entry>) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        for e in entries {
            // Predicted while its run was ending: the run is gone.
            if self.is_cancelled(e.run) {
                continue;
            }
            match q.push(e) {
                Pushed::Added | Pushed::Merged => bump(&self.counters.queued),
                Pushed::Displaced => {
                    bump(&self.counters.queued);
                    bump(&self.counters.refused);
                }
                Pushed::Refused => bump(&self.counters.refused),
            }
        }
        drop(q);
        self.work.notify_all();
    }

    /// Drops `run`'s queued entries that its newest predictions no longer admit (see
    /// [`Queue::retract`]).
    pub fn retract(&self, run: RunId, admitted: impl Fn(&ChunkId) -> bool) {
        let n = self
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retract(run, admitted);
        self.counters
            .retracted
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Drops `run`'s queued entries, and keeps workers from starting one they already took;
    /// returns how many were queued.
    pub fn cancel_run(&self, run: RunId) -> usize {
        {
            let mut c = self.cancelled.lock().unwrap_or_else(|p| p.into_inner());
            if c.len() >= CANCELLED_KEPT {
                c.pop_front();
            }
            c.push_back(run);
        }
        let n = self
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cancel_run(run);
        self.counters
            .cancelled
            .fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Stops the workers after their current fetch.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.work.notify_all();
    }

    fn is_cancelled(&self, run: RunId) -> bool {
        self.cancelled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&run)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Waits while a demand fetch is in flight; false if stopped.
    fn wait_for_demand(&self) -> bool {
        while self.activity.demand_in_flight() > 0 {
            if self.stopped() {
                return false;
            }
            std::thread::sleep(POLL);
        }
        !self.stopped()
    }

    /// The next entry worth fetching, taken only while no demand fetch is in flight (so that
    /// entries wait where `cancel_run` finds them); `None` once stopped.
    fn next(&self) -> Option<Entry> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.stopped() {
                return None;
            }
            if self.activity.demand_in_flight() > 0 {
                drop(q);
                std::thread::sleep(POLL);
                q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                continue;
            }
            let (entry, dropped) = q.pop(Instant::now(), LATE_GRACE, |c| self.cached(c));
            self.counters
                .dropped
                .fetch_add(dropped as u64, Ordering::Relaxed);
            if entry.is_some() {
                return entry;
            }
            q = self
                .work
                .wait_timeout(q, Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Takes `bytes` from the bandwidth bucket, waiting as it says; false if stopped.
    fn take_bandwidth(&self, bytes: u64) -> bool {
        loop {
            if self.stopped() {
                return false;
            }
            let taken = self
                .bucket
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(bytes, Instant::now());
            match taken {
                Ok(()) => return true,
                Err(wait) => std::thread::sleep(wait.min(POLL * 5)),
            }
        }
    }
}

/// The worker loop.
pub fn work(shared: &Shared) {
    while shared.wait_for_demand() {
        let Some(entry) = shared.next() else {
            return;
        };
        fetch(shared, &entry);
    }
}

fn fetch(shared: &Shared, entry: &Entry) {
    let located = shared
        .locator
        .locate(&entry.chunk)
        .or_else(|| shared.warm.locate(entry.run, &entry.chunk));
    let Some((data, ci)) = located else {
        bump(&shared.counters.unlocated);
        return;
    };
    let chunk = data.index().chunks()[ci as usize];
    if !worth_prefetching(entry.probability, chunk.size, shared.threshold()) {
        bump(&shared.counters.declined);
        return;
    }
    let member = data.index().members()[chunk.member as usize];
    if !shared.take_bandwidth(member.len()) || !shared.wait_for_demand() {
        return;
    }
    if shared.cached(&entry.chunk) || shared.is_cancelled(entry.run) {
        return;
    }
    let c = &shared.counters;
    let now = c.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
    c.max_in_flight.fetch_max(now, Ordering::AcqRel);
    let began = Instant::now();
    shared.ledger.begin(entry.chunk);
    let result = data.prefetch_member(chunk.member, ci, entry.probability, began + FETCH_DEADLINE);
    c.in_flight.fetch_sub(1, Ordering::AcqRel);
    let took = u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX);
    c.busy_nanos.fetch_add(took, Ordering::Relaxed);
    match result {
        // Joined a fetch already under way: not ours to count.
        Ok(0) => shared.ledger.abandon(&entry.chunk),
        Ok(bytes) => {
            c.fetched_bytes.fetch_add(bytes, Ordering::Relaxed);
            shared.ledger.issue(
                entry.chunk,
                Issued {
                    run: entry.run,
                    bytes: chunk.size,
                    probability: entry.probability,
                    used: false,
                },
            );
        }
        Err(e) => {
            shared.ledger.abandon(&entry.chunk);
            bump(&c.fetch_errors);
            tracing::debug!(layer = data.source_name(), error = %e, "prefetch failed");
        }
    }
}

/// Locks `m`, taking over the data of a thread that panicked holding it (the maps it guards
/// stay consistent at every await-free step).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
