//! # Prefetching
//!
//! The predicted chunks of running containers fetched before they are read, without getting in
//! the way of the reads that are waiting (demand first, always), within a bandwidth and a
//! concurrency bound, into the cache tier their probability earns.
//!
//! | module | role |
//! |---|---|
//! | this one | [`Prefetcher`], the daemon's cheap cloneable handle: the run events in, stats out, start and stop |
//! | [`predict`] | the `augur-predict` thread: the models (replay + Markov, plus the ONNX LSTM when it loads), predictions into the queue, saved state |
//! | [`scheduler`] | what the threads share ([`scheduler::Shared`]) and the `augur-prefetch-N` worker loop |
//! | [`queue`] | [`queue::Queue`]: by time of need then probability, one entry per chunk, bounded (pure) |
//! | [`bucket`] | [`bucket::TokenBucket`]: the bandwidth bound (pure) |
//! | [`threshold`] | [`threshold::ThresholdController`]: the adaptive threshold's rule (pure) |
//! | [`adapt`] | the signals the rule reads, measured once per interval |
//! | [`ledger`] | issued, used and wasted chunks; `was_prefetched` for the trace recorder |
//! | [`settings`] | the `[prefetch]` and `[predictor]` config tables |
//! | [`warmed`] | images warmed ahead of their pull: their layers, and their likely chunks queued as background work |
//! | [`plan`] | [`Prefetcher::plan`]: what the models would fetch first for an image not running yet (a dry run) |
//! | [`reload`] | [`Prefetcher::reload_model`]: a new LSTM model validated and swapped in (or the LSTM added) while running |
//!
//! Where chunks are fetched from is [`crate::lazy::locator::ChunkLocator`] (kept by
//! [`crate::lazy::LazyLayers`] in step with its mounts); how is
//! [`crate::lazy::data::LayerData::prefetch_member`], the same single-flight path demand reads
//! take. Design and the threshold rule: `docs/decisions/0018-prefetch-scheduler.md`.
//!
//! ## Threads
//!
//! | thread | runs |
//! |---|---|
//! | caller (the trace recorder's thread) | [`Prefetcher::run_started`], [`Prefetcher::access`], [`Prefetcher::run_finished`]: a ledger update and a channel send, never a model |
//! | `augur-predict` | every model call (CPU work, never on tokio workers), queueing, threshold adaptation, state saves |
//! | `augur-prefetch-N` | waiting for demand to be quiet, the bandwidth bucket, fetches (blocking) |

pub mod adapt;
pub mod bucket;
pub mod ledger;
pub mod plan;
pub mod predict;
pub mod queue;
pub mod reload;
pub mod scheduler;
pub mod settings;
pub mod threshold;
pub mod warmed;

#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use augur_predictor::{Access, ChunkId, RunContext, RunId, Trace};

pub use ledger::Issued;
pub use settings::{PredictorSettings, PrefetchSettings};

use crate::cache::ChunkCache;
use crate::lazy::activity::Activity;
use crate::lazy::locator::ChunkLocator;
use crate::metrics::inference::InferenceLatency;
use predict::Event;
use scheduler::Shared;

/// Events waiting for the predictor thread at most; accesses beyond are dropped (counted).
const EVENT_QUEUE: usize = 16_384;

/// What the prefetcher works with: the daemon's cache, demand activity and chunk locator.
#[derive(Debug, Clone)]
pub struct Parts {
    /// The node's chunk cache.
    pub cache: Arc<ChunkCache>,
    /// Demand fetches in flight.
    pub activity: Arc<Activity>,
    /// Chunk → mounted layer.
    pub locator: Arc<ChunkLocator>,
}

/// Why the prefetcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum PrefetchError {
    /// A thread could not be spawned.
    #[error("cannot start prefetch thread {name}: {source}")]
    Spawn {
        /// The thread's name.
        name: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The prefetcher's counters and state at one moment.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PrefetchStats {
    /// Chunks prefetched.
    pub issued_chunks: u64,
    /// Their uncompressed bytes.
    pub issued_bytes: u64,
    /// Compressed bytes the workers fetched.
    pub fetched_bytes: u64,
    /// Prefetched chunks later read, and their bytes.
    pub used_chunks: u64,
    /// See `used_chunks`.
    pub used_bytes: u64,
    /// Prefetched chunks evicted unread or whose run ended unread, and their bytes.
    pub wasted_chunks: u64,
    /// See `wasted_chunks`.
    pub wasted_bytes: u64,
    /// `used / (used + wasted)` bytes, once anything was resolved.
    pub precision: Option<f64>,
    /// Estimated: `used / (used + demand-missed)` bytes of what runs read.
    pub recall: Option<f64>,
    /// Entries queued now.
    pub queue_len: usize,
    /// Entries ever queued (or merged into a queued one).
    pub queued: u64,
    /// Entries removed by `cancel_run`.
    pub cancelled: u64,
    /// Entries dropped at pop: cached meanwhile, or too late.
    pub dropped: u64,
    /// Entries the full queue refused or displaced.
    pub refused: u64,
    /// Entries whose chunk no mounted layer holds.
    pub unlocated: u64,
    /// Entries declined once their chunk's size was known: too big for their probability
    /// (expected wasted bytes above the bound of `augur_predictor::policy`).
    pub declined: u64,
    /// Entries removed because their run's newer predictions no longer admitted them.
    pub retracted: u64,
    /// Prefetches that failed.
    pub fetch_errors: u64,
    /// Fetches in flight now, and the most at once.
    pub in_flight: usize,
    /// See `in_flight`.
    pub max_in_flight: usize,
    /// Accesses dropped because the predictor thread was behind.
    pub events_dropped: u64,
    /// Events sent to the predictor thread that it has not handled yet.
    pub events_pending: u64,
    /// The current threshold.
    pub threshold: f32,
    /// Whether the LSTM is among the models.
    pub lstm: bool,
}

struct Inner {
    shared: Arc<Shared>,
    events: SyncSender<Event>,
    events_sent: std::sync::atomic::AtomicU64,
    events_dropped: std::sync::atomic::AtomicU64,
    /// The LSTM's engine once it is among the models.
    lstm: Mutex<Option<Arc<augur_predictor::lstm::Engine>>>,
    /// Where models come from (`model_dir`, the ONNX Runtime library).
    predictor: PredictorSettings,
    /// Held while a model reload runs.
    reloading: Mutex<()>,
    /// The LSTM's step latency per model version (its engine reports each step here).
    inference: Arc<InferenceLatency>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    /// The last handle gone without [`Prefetcher::stop`]: the threads end on their own
    /// (workers after their fetch, the predictor thread when its channel closes).
    fn drop(&mut self) {
        self.shared.stop();
    }
}

/// The prefetcher: a cheap handle, cloned wherever runs are observed.
#[derive(Clone)]
pub struct Prefetcher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Prefetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefetcher")
            .field("threshold", &self.inner.shared.threshold())
            .finish_non_exhaustive()
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, PrefetchError> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .map_err(|source| PrefetchError::Spawn { name, source })
}

impl Prefetcher {
    /// Loads the models (blocking: call it off tokio workers) and starts the predictor thread
    /// and the workers.
    pub fn start(
        settings: &PrefetchSettings,
        predictor: &PredictorSettings,
        parts: &Parts,
    ) -> Result<Prefetcher, PrefetchError> {
        let models = predict::load_models(predictor);
        let lstm = models.lstm.clone();
        let inference = Arc::new(InferenceLatency::default());
        if let Some(engine) = &lstm {
            engine.set_step_observer(inference.observer());
        }
        let shared = Arc::new(Shared::new(
            parts,
            settings.queue_max,
            settings.max_bandwidth,
            settings.threshold,
        ));
        let (tx, rx) = mpsc::sync_channel(EVENT_QUEUE);
        let controller = threshold::ThresholdController::new(
            settings.threshold,
            settings.threshold_min,
            settings.threshold_max,
            threshold::DEFAULT_STEP,
        );
        let adapter = adapt::Adapter::new(controller, settings.adapt_interval, settings.workers);
        let mut threads = Vec::new();
        let s = Arc::clone(&shared);
        threads.push(spawn("augur-predict".into(), move || {
            predict::run(models, &rx, &s, adapter);
        })?);
        for n in 0..settings.workers {
            let s = Arc::clone(&shared);
            match spawn(format!("augur-prefetch-{n}"), move || scheduler::work(&s)) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    shared.stop();
                    let _ = tx.send(Event::Stop);
                    threads.into_iter().for_each(|t| drop(t.join()));
                    return Err(e);
                }
            }
        }
        tracing::info!(
            workers = settings.workers,
            max_bandwidth_mib_s = settings.max_bandwidth >> 20,
            threshold = settings.threshold,
            "prefetcher started"
        );
        Ok(Prefetcher {
            inner: Arc::new(Inner {
                shared,
                events: tx,
                events_sent: Default::default(),
                events_dropped: Default::default(),
                lstm: Mutex::new(lstm),
                predictor: predictor.clone(),
                reloading: Mutex::new(()),
                inference,
                threads: Mutex::new(threads),
            }),
        })
    }

    /// Sends `ev`, waiting if the thread is behind (a lost start or end would leave the
    /// models' per-run state wrong).
    fn send(&self, ev: Event) {
        if self.inner.events.send(ev).is_ok() {
            self.inner.events_sent.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// A run began: its snapshot was prepared on lazily mounted layers.
    pub fn run_started(&self, run: RunId, ctx: &RunContext) {
        self.send(Event::Started(run, ctx.clone()));
    }

    /// One access of the run (a read, or the part of it in one chunk), in order.
    pub fn access(&self, run: RunId, access: &Access) {
        self.inner
            .shared
            .ledger
            .read(&access.chunk, u64::from(access.size), access.source);
        match self.inner.events.try_send(Event::Access(run, *access)) {
            Ok(()) => {
                self.inner.events_sent.fetch_add(1, Ordering::AcqRel);
            }
            Err(TrySendError::Full(_)) => {
                self.inner.events_dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// The run ended (its snapshot was removed); its trace, if one was kept. Its queued work
    /// is cancelled at once; fetches in flight finish (they may serve others).
    pub fn run_finished(&self, run: RunId, trace: Option<&Arc<Trace>>) {
        self.cancel_run(run);
        self.inner.shared.ledger.run_ended(run);
        self.inner.shared.forget_predictions(run);
        self.send(Event::Finished(run, trace.cloned()));
    }

    /// Stops prefetching for `run`: its queued prefetches are dropped (returns how many), one a
    /// worker already took is skipped, later predictions for it are not queued. Fetches in
    /// flight finish (a read may have joined them).
    pub fn cancel_run(&self, run: RunId) -> usize {
        self.inner.shared.cancel_run(run)
    }

    /// Whether `chunk` was brought into the cache by a prefetch (for a run still going).
    pub fn was_prefetched(&self, chunk: &ChunkId) -> bool {
        self.inner.shared.ledger.was_prefetched(chunk)
    }

    /// An image was warmed ahead of its pull: the models' likeliest chunks for a run of it are
    /// queued after every running container's (see [`warmed`]). Never blocks: if the
    /// predictor thread is behind, the warm-up is dropped (and counted with the accesses).
    pub fn warm_image(&self, warm: warmed::WarmUp) {
        if warm.layers.is_empty() {
            return;
        }
        match self.inner.events.try_send(Event::Warm(Box::new(warm))) {
            Ok(()) => {
                self.inner.events_sent.fetch_add(1, Ordering::AcqRel);
            }
            Err(TrySendError::Full(_)) => {
                self.inner.events_dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// The LSTM's step latency per model version (empty before its first step).
    pub fn inference_latency(&self) -> Vec<(String, crate::metrics::HistogramSnapshot)> {
        self.inner.inference.snapshot()
    }

    /// The current threshold.
    pub fn threshold(&self) -> f32 {
        self.inner.shared.threshold()
    }

    /// The prefetched chunks still in play, with the probability each was admitted at.
    pub fn issued(&self) -> Vec<(ChunkId, Issued)> {
        self.inner.shared.ledger.live()
    }

    /// Counters and state now.
    pub fn stats(&self) -> PrefetchStats {
        let s = &self.inner.shared;
        let t = &s.ledger.totals;
        let c = &s.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let (used, wasted, missed) = (get(&t.used_bytes), get(&t.wasted_bytes), get(&t.miss_bytes));
        let ratio = |a: u64, b: u64| (a + b > 0).then(|| a as f64 / (a + b) as f64);
        PrefetchStats {
            issued_chunks: get(&t.issued_chunks),
            issued_bytes: get(&t.issued_bytes),
            fetched_bytes: get(&c.fetched_bytes),
            used_chunks: get(&t.used_chunks),
            used_bytes: used,
            wasted_chunks: get(&t.wasted_chunks),
            wasted_bytes: wasted,
            precision: ratio(used, wasted),
            recall: ratio(used, missed),
            queue_len: s.queue.lock().unwrap_or_else(|p| p.into_inner()).len(),
            queued: get(&c.queued),
            cancelled: get(&c.cancelled),
            dropped: get(&c.dropped),
            refused: get(&c.refused),
            unlocated: get(&c.unlocated),
            declined: get(&c.declined),
            retracted: get(&c.retracted),
            fetch_errors: get(&c.fetch_errors),
            in_flight: c.in_flight.load(Ordering::Relaxed),
            max_in_flight: c.max_in_flight.load(Ordering::Relaxed),
            events_dropped: self.inner.events_dropped.load(Ordering::Relaxed),
            events_pending: self
                .inner
                .events_sent
                .load(Ordering::Acquire)
                .saturating_sub(c.events_handled.load(Ordering::Acquire)),
            threshold: s.threshold(),
            lstm: self.lstm_engine().is_some(),
        }
    }

    /// Stops the threads and waits for them: queued work is dropped, fetches in flight end
    /// (within their deadline), the models' state is saved. Idempotent.
    pub fn stop(&self) {
        self.inner.shared.stop();
        let _ = self.inner.events.send(Event::Stop);
        let threads =
            std::mem::take(&mut *self.inner.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a prefetch thread panicked");
            }
        }
    }
}

/// The trace recorder tells the prefetcher about runs and their reads (on `augur-trace`).
impl crate::trace::AccessObserver for Prefetcher {
    fn run_started(&self, run: RunId, ctx: &RunContext) {
        Prefetcher::run_started(self, run, ctx);
    }

    fn access(&self, run: RunId, access: &Access) {
        Prefetcher::access(self, run, access);
    }

    fn run_finished(&self, run: RunId, trace: Option<&Arc<Trace>>) {
        Prefetcher::run_finished(self, run, trace);
    }
}

/// Hits on chunks the prefetcher brought in are recorded as `prefetch_hit` in traces.
impl crate::trace::PrefetchedChunks for Prefetcher {
    fn was_prefetched(&self, chunk: &ChunkId) -> bool {
        Prefetcher::was_prefetched(self, chunk)
    }
}
