//! The ONNX LSTM: a next-chunk model trained offline (`onnx-models/train.py`) on exported
//! traces, run with ONNX Runtime (`ort`, loaded at run time from the library of the matching
//! PyPI wheel) on its own thread.
//!
//! | module | holds |
//! |---|---|
//! | this one | [`Lstm`], the [`Predictor`]: per-run history and pace, cached answers, the bounded wait; [`LstmFactory`] for the evaluator |
//! | [`engine`] | the `augur-lstm` thread that owns the session, its bounded queue, the rollout, model swaps, latency |
//! | [`session`] | [`LoadedModel`]: a model directory admitted by validation (graph signature, golden outputs) |
//! | [`model_dir`] | reading and checking `meta.json`, `vocab.json`, `golden.json`, file hashes; the golden comparison |
//! | [`vocab`] | chunk ids ↔ tokens, the token window of a run |
//! | [`runtime`] | loading ONNX Runtime once per process, with typed errors for a missing or wrong library |
//! | [`latency`] | the per-step and per-request histograms |
//! | [`error`] | [`LstmError`] |
//!
//! ## Threads and waiting
//!
//! The caller (the daemon's predictor thread, or the evaluator) never runs inference itself.
//! `predict` sends the run's recent chunks to the `augur-lstm` thread and waits for the answer
//! at most [`LstmConfig::timeout`] (a rollout takes about a millisecond; the default timeout is
//! 50 ms). If the answer is late, or the queue is full, `predict` returns the run's last answer
//! (minus chunks read since) and picks the late one up on its next call. An answer is reused
//! until the run reads a new chunk or the model is swapped. So a slow model makes predictions
//! stale, never the caller slow.
//!
//! ## When the LSTM is unavailable
//!
//! [`Lstm::load`] fails with an [`LstmError`] that says what to fix (the library path and the
//! wheel to take it from, or the model directory's failed check). The daemon logs it once and
//! runs its ensemble without the LSTM.
//!
//! ## Which runs it speaks about
//!
//! Only runs of the images it was trained on (`meta.json` `training.images`, compared by
//! repository and tag whatever registry served them, [`engine::repository`]): its vocabulary
//! is their chunks, and on an image it never saw its forecasts wasted more than they saved
//! (decision 0029). [`Predictor::trained_on`] names the recorded runs it was trained on
//! (`training.run_keys`), and [`load_folds`] loads the cross-fitting folds the ensemble asks
//! in its stead on those runs while it learns them ([`crate::Ensemble::add_folds`]).
//!
//! ## Learned state
//!
//! The weights are the model directory, not saved state. What the LSTM learns online is the
//! node's pace: the mean time between a run's new chunks, used (with the run's own pace once
//! it has one) to turn rollout steps into expected times of need. That is its saved state.

pub mod engine;
pub mod error;
pub mod latency;
pub mod model_dir;
pub mod runtime;
pub mod session;
pub mod vocab;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::chunk::{FastMap, FastSet};
use crate::error::Error;
use crate::eval::ModelFactory;
use crate::model::{
    Access, Prediction, Predictor, RunContext, RunId, decode_state, encode_state, rank,
};
use crate::trace::{RunHeader, Trace};
pub use engine::{Candidate, Engine, Latency, ModelInfo, StepObserver};
pub use error::LstmError;
pub use session::LoadedModel;

const STATE_VERSION: u32 = 1;
/// Pace assumed when neither the run, the node nor the model's training knows one.
const DEFAULT_GAP_US: f32 = 1_000.0;
/// Weight of the newest gap in a run's pace.
const RUN_PACE_ALPHA: f32 = 0.2;

/// How [`Lstm`] asks the inference thread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LstmConfig {
    /// Longest `predict` waits for an answer before returning the previous one.
    pub timeout: Duration,
    /// Steps of the rollout (how far ahead it looks, in new chunks).
    pub depth: usize,
    /// Chains less likely than this are not followed, chunks less likely are not returned.
    pub min_probability: f32,
}

impl Default for LstmConfig {
    fn default() -> Self {
        LstmConfig {
            timeout: Duration::from_millis(50),
            depth: 8,
            min_probability: 0.01,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
struct Learned {
    /// Mean gap between a run's new chunks over the runs followed, µs.
    gap_mean_us: f64,
    /// Gaps counted in the mean (capped, so the mean keeps moving).
    gaps: u64,
}

#[derive(Debug)]
struct Cached {
    generation: u64,
    model: u64,
    candidates: Vec<Candidate>,
}

#[derive(Debug, Default)]
struct LiveRun {
    image: String,
    recent: VecDeque<crate::ChunkId>,
    total: usize,
    seen: FastSet<crate::ChunkId>,
    last_at_us: u64,
    pace_us: Option<f32>,
    cached: Option<Cached>,
    pending: Option<(u64, Receiver<engine::Reply>)>,
}

/// The ONNX LSTM as a [`Predictor`]; many may share one [`Engine`].
#[derive(Debug)]
pub struct Lstm {
    engine: Arc<Engine>,
    config: LstmConfig,
    learned: Learned,
    runs: FastMap<RunId, LiveRun>,
}

impl Lstm {
    /// Loads and validates the model in `dir` with the ONNX Runtime library at `library`, and
    /// starts its inference thread.
    pub fn load(dir: &Path, library: &Path, config: LstmConfig) -> Result<Self, LstmError> {
        let engine = Engine::start(LoadedModel::load(dir, library)?)?;
        Ok(Lstm::new(engine, config))
    }

    /// A predictor served by `engine`.
    pub fn new(engine: Arc<Engine>, config: LstmConfig) -> Self {
        Lstm {
            engine,
            config,
            learned: Learned::default(),
            runs: FastMap::default(),
        }
    }

    /// Its inference thread (to reload the model, read latencies).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    fn pace_us(&self, live: &LiveRun) -> f32 {
        live.pace_us
            .or((self.learned.gaps > 0).then_some(self.learned.gap_mean_us as f32))
            .or((self.engine.median_gap_us() > 0).then_some(self.engine.median_gap_us() as f32))
            .unwrap_or(DEFAULT_GAP_US)
    }

    fn learn_gap(&mut self, gap_us: f32) {
        let l = &mut self.learned;
        l.gaps = (l.gaps + 1).min(100_000);
        l.gap_mean_us += (f64::from(gap_us) - l.gap_mean_us) / l.gaps as f64;
    }

    /// Answers for `run`, from the cache, a pending reply, or a new request.
    fn refresh(&mut self, run: RunId, max: usize) {
        let model = self.engine.generation();
        let (timeout, depth, min_probability) = (
            self.config.timeout,
            self.config.depth,
            self.config.min_probability,
        );
        let window = self.engine.window();
        let Some(live) = self.runs.get_mut(&run) else {
            return;
        };
        let generation = live.total as u64;
        if let Some((asked, rx)) = live.pending.take() {
            match rx.try_recv() {
                Ok(reply) => store(live, asked, reply),
                Err(TryRecvError::Empty) if asked == generation => live.pending = Some((asked, rx)),
                Err(_) => {}
            }
        }
        if live
            .cached
            .as_ref()
            .is_some_and(|c| c.generation == generation && c.model == model)
        {
            return;
        }
        let rx = match live.pending.take() {
            Some((_, rx)) => rx,
            None => {
                let (reply, rx) = mpsc::sync_channel(1);
                let skip = live.recent.len().saturating_sub(window);
                let request = engine::Request {
                    recent: live.recent.iter().skip(skip).copied().collect(),
                    total: live.total,
                    max,
                    depth,
                    min_probability,
                    queued: Instant::now(),
                    reply,
                };
                if !self.engine.submit(request) {
                    return;
                }
                rx
            }
        };
        match rx.recv_timeout(timeout) {
            Ok(reply) => store(live, generation, reply),
            Err(RecvTimeoutError::Timeout) => live.pending = Some((generation, rx)),
            Err(RecvTimeoutError::Disconnected) => {}
        }
    }
}

fn store(live: &mut LiveRun, generation: u64, reply: engine::Reply) {
    if let Ok(candidates) = reply.candidates {
        live.cached = Some(Cached {
            generation,
            model: reply.generation,
            candidates,
        });
    }
}

impl Predictor for Lstm {
    fn name(&self) -> &str {
        "lstm"
    }

    fn start_run(&mut self, run: RunId, ctx: &RunContext) {
        let live = LiveRun {
            image: ctx.image.clone(),
            ..LiveRun::default()
        };
        self.runs.insert(run, live);
    }

    fn observe(&mut self, run: RunId, access: &Access) {
        let window = self.engine.window().max(1);
        let Some(live) = self.runs.get_mut(&run) else {
            return;
        };
        if !live.seen.insert(access.chunk) {
            return;
        }
        let at_us = access.at.as_micros() as u64;
        let gap = at_us.saturating_sub(live.last_at_us) as f32;
        let first = live.total == 0;
        live.total += 1;
        live.last_at_us = at_us;
        live.recent.push_back(access.chunk);
        while live.recent.len() > window {
            live.recent.pop_front();
        }
        if !first {
            live.pace_us = Some(match live.pace_us {
                Some(p) => p + RUN_PACE_ALPHA * (gap - p),
                None => gap,
            });
            self.learn_gap(gap);
        }
    }

    fn predict(&mut self, run: RunId, max: usize) -> Vec<Prediction> {
        let Some(live) = self.runs.get(&run) else {
            return Vec::new();
        };
        // Only for images seen in training: its vocabulary is their chunks, and on an image it
        // never saw its forecasts wasted more than they saved even when calibrated (decision
        // 0029).
        if max == 0 || !self.engine.knows_image(&live.image) {
            return Vec::new();
        }
        self.refresh(run, max);
        let Some(live) = self.runs.get(&run) else {
            return Vec::new();
        };
        let pace = self.pace_us(live);
        let Some(cached) = &live.cached else {
            return Vec::new();
        };
        let mut out: Vec<Prediction> = cached
            .candidates
            .iter()
            .filter(|c| !live.seen.contains(&c.chunk))
            .map(|c| Prediction {
                chunk: c.chunk,
                probability: c.probability,
                expected_in: Duration::from_micros((c.steps as f32 * pace).max(0.0) as u64),
            })
            .collect();
        rank(&mut out, max);
        out
    }

    fn finish_run(&mut self, run: RunId, _trace: Option<&Trace>) {
        // The pace was learned online in `observe`.
        self.runs.remove(&run);
    }

    /// The runs of the model's training traces (`meta.json` `training.run_keys`); a model
    /// that recorded only their images may have seen any run of those, and one that recorded
    /// neither any run.
    fn trained_on(&self, header: &RunHeader) -> bool {
        self.engine.trained_on(header)
    }

    fn may_abstain(&self) -> bool {
        true
    }

    /// Images it was not trained on: it predicts nothing in their runs.
    fn abstains_on(&self, image: &str) -> bool {
        !self.engine.knows_image(image)
    }

    fn save_state(&self) -> Result<Vec<u8>, Error> {
        encode_state(self.name(), STATE_VERSION, &self.learned)
    }

    fn load_state(&mut self, state: &[u8]) -> Result<(), Error> {
        self.learned = decode_state("lstm", STATE_VERSION, state)?;
        Ok(())
    }
}

/// Builds [`Lstm`]s that share one engine: how the LSTM joins an evaluation
/// ([`crate::eval::run_with`]).
#[derive(Debug, Clone)]
pub struct LstmFactory {
    /// The shared inference thread.
    pub engine: Arc<Engine>,
    /// The model's cross-fitting folds ([`model_dir::fold_dirs`]), one thread each.
    pub folds: Vec<Arc<Engine>>,
    /// Each model's configuration.
    pub config: LstmConfig,
}

impl ModelFactory for LstmFactory {
    fn name(&self) -> &str {
        "lstm"
    }

    fn build(&self) -> Result<Box<dyn Predictor>, Error> {
        Ok(Box::new(Lstm::new(Arc::clone(&self.engine), self.config)))
    }

    fn folds(&self) -> Result<Vec<Box<dyn Predictor>>, Error> {
        Ok(self
            .folds
            .iter()
            .map(|e| Box::new(Lstm::new(Arc::clone(e), self.config)) as Box<dyn Predictor>)
            .collect())
    }
}

/// The cross-fitting folds beside the model in `dir` ([`model_dir::fold_dirs`]), each loaded
/// and served by a thread of its own. None if `dir` has no folds.
pub fn load_folds(dir: &Path, library: &Path) -> Result<Vec<Arc<Engine>>, LstmError> {
    let dirs = model_dir::fold_dirs(dir).map_err(|source| LstmError::ModelFile {
        path: dir.join("folds"),
        source,
    })?;
    dirs.iter()
        .map(|d| Engine::start(LoadedModel::load(d, library)?))
        .collect()
}
