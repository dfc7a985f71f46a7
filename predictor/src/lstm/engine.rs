//! The inference thread `augur-lstm`: it owns the validated model (ONNX Runtime session and
//! vocabulary) and answers prediction requests from a bounded queue, one at a time. Every
//! [`super::Lstm`] sharing an [`Engine`] (one per node; the evaluator's many fresh copies)
//! sends it requests; the daemon keeps an `Arc<Engine>` to swap in a new model
//! ([`Engine::reload`]) and to read latencies ([`Engine::latency`], or each step as it is
//! measured through a [`StepObserver`], which the daemon turns into a Prometheus histogram).
//!
//! A request carries a run's latest chunks; the thread turns them into tokens with the current
//! vocabulary, so a model swapped in mid-run (another vocabulary, another window) simply
//! answers the next request. The answer is a **rollout**: the next-chunk distribution after the
//! window, then after the window plus its likeliest chunk, and so on for `depth` steps; a
//! chunk's probability is that of the likeliest chain reaching it (as the Markov model's walk),
//! and its step count times the run's pace is its expected time of need.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::error::LstmError;
use super::latency::{Histogram, Percentiles};
use super::model_dir::run_key;
use super::session::LoadedModel;
use super::vocab::{OOV, START};
use crate::chunk::{ChunkId, FastMap};
use crate::trace::RunHeader;

/// Requests waiting for the thread at most; more are refused (the caller keeps its last answer).
const QUEUE: usize = 64;

/// A chunk the rollout reached.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The chunk.
    pub chunk: ChunkId,
    /// Probability of the likeliest chain that reaches it.
    pub probability: f32,
    /// Steps (new chunks) until it, along that chain: 1 = next.
    pub steps: u32,
}

/// What a run asks for.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) recent: Vec<ChunkId>,
    pub(crate) total: usize,
    pub(crate) max: usize,
    pub(crate) depth: usize,
    pub(crate) min_probability: f32,
    pub(crate) queued: Instant,
    pub(crate) reply: SyncSender<Reply>,
}

/// The answer: candidates by descending probability, from model `generation`.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) generation: u64,
    pub(crate) candidates: Result<Vec<Candidate>, String>,
}

enum Job {
    Predict(Request),
    Swap(Box<LoadedModel>, SyncSender<()>),
}

/// What the thread shares with callers without a round trip.
#[derive(Debug, Default)]
struct Shared {
    generation: AtomicU64,
    window: AtomicUsize,
    median_gap_us: AtomicU64,
    errors: AtomicU64,
    model: Mutex<ModelInfo>,
    latency: Mutex<(Histogram, Histogram)>,
    observer: Observer,
}

/// Told, on the inference thread after each request, the served model's version
/// ([`ModelInfo::version`]) and how long each of the request's model steps took. It must be
/// quick (it runs between requests).
pub type StepObserver = Arc<dyn Fn(&str, &[Duration]) + Send + Sync>;

#[derive(Default)]
struct Observer(Mutex<Option<StepObserver>>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

/// The model being served.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelInfo {
    /// Its directory.
    pub dir: std::path::PathBuf,
    /// Its `meta.json` label (`synthetic`, ...).
    pub label: String,
    /// When it was trained.
    pub created: String,
    /// Tokens in its vocabulary.
    pub vocab: usize,
    /// Tokens per input window.
    pub window: usize,
    /// The images it was trained on (empty: not recorded, every image is taken as known).
    pub images: Vec<String>,
    /// Its training runs ([`super::model_dir::run_key`]; `None`: not recorded).
    pub run_keys: Option<Arc<BTreeSet<String>>>,
}

impl ModelInfo {
    /// Whether the model saw runs of `image` in training, by repository and tag whatever
    /// registry served it ([`repository`]): the LSTM predicts only for those (decision 0029).
    pub fn knows_image(&self, image: &str) -> bool {
        let wanted = repository(image);
        self.images.is_empty() || self.images.iter().any(|i| repository(i) == wanted)
    }

    /// Whether the model may have been trained on the recorded run `header`: it was if its
    /// training runs are recorded and name it; if only images are, any run of them may be.
    pub fn trained_on(&self, header: &RunHeader) -> bool {
        match &self.run_keys {
            Some(keys) => keys.contains(&run_key(&header.image, header.started_unix_ms)),
            None => self.knows_image(&header.image),
        }
    }

    /// The model's version: the name of its directory (links resolved), e.g. `tools-v1` or a
    /// retrained `20270101T030000Z`.
    pub fn version(&self) -> String {
        self.dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    }
}

/// An image reference without its registry host: `127.0.0.1:5000/tools:esgz` and
/// `mirror.example.com/tools:esgz` are both `tools:esgz`. The first path component is a host
/// if it has a `.` or a `:` or is `localhost`, as containerd's reference parser decides.
pub fn repository(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((host, rest)) if host.contains(['.', ':']) || host == "localhost" => rest,
        _ => reference,
    }
}

/// Per-step and per-request latency of the inference thread.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Latency {
    /// One ONNX Runtime run (a model step).
    pub step: Percentiles,
    /// A whole request: time in the queue plus its rollout.
    pub request: Percentiles,
    /// Requests that failed inside ONNX Runtime.
    pub errors: u64,
}

/// The inference thread and its queue.
#[derive(Debug)]
pub struct Engine {
    jobs: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Job::Predict(_) => "Predict",
            Job::Swap(..) => "Swap",
        })
    }
}

impl Engine {
    /// Starts the thread with a validated model.
    pub fn start(model: LoadedModel) -> Result<Arc<Engine>, LstmError> {
        let shared = Arc::new(Shared::default());
        publish(&shared, &model);
        let (jobs, queue) = mpsc::sync_channel(QUEUE);
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("augur-lstm".into())
            .spawn(move || serve(model, &queue, &for_thread))
            .map_err(|e| LstmError::Runtime(format!("cannot start the inference thread: {e}")))?;
        Ok(Arc::new(Engine {
            jobs: Some(jobs),
            thread: Some(thread),
            shared,
        }))
    }

    /// Validates the model in `dir` (blocking: run it off async workers) and, if it passes,
    /// serves it from the next request on; on error the current model stays.
    pub fn reload(&self, dir: &Path, library: &Path) -> Result<ModelInfo, LstmError> {
        let model = LoadedModel::load(dir, library)?;
        self.swap(model)?;
        Ok(self.model())
    }

    /// Serves `model` from the next request on.
    pub fn swap(&self, model: LoadedModel) -> Result<(), LstmError> {
        let (ack, done) = mpsc::sync_channel(1);
        self.sender()?
            .send(Job::Swap(Box::new(model), ack))
            .map_err(|_| LstmError::EngineStopped)?;
        done.recv().map_err(|_| LstmError::EngineStopped)
    }

    /// The model being served.
    pub fn model(&self) -> ModelInfo {
        lock(&self.shared.model).clone()
    }

    /// Latencies so far.
    pub fn latency(&self) -> Latency {
        let (step, request) = &*lock(&self.shared.latency);
        Latency {
            step: step.percentiles(),
            request: request.percentiles(),
            errors: self.shared.errors.load(AtomicOrdering::Relaxed),
        }
    }

    /// Has `observer` told of every model step from now on (replacing any previous one).
    pub fn set_step_observer(&self, observer: StepObserver) {
        *lock(&self.shared.observer.0) = Some(observer);
    }

    /// Counts model swaps: a cached answer from another generation is stale.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(AtomicOrdering::Acquire)
    }

    /// Whether the current model saw `image` in training.
    pub fn knows_image(&self, image: &str) -> bool {
        lock(&self.shared.model).knows_image(image)
    }

    /// Whether the current model may have been trained on the recorded run `header`
    /// ([`ModelInfo::trained_on`]).
    pub fn trained_on(&self, header: &RunHeader) -> bool {
        lock(&self.shared.model).trained_on(header)
    }

    /// The current model's window (how many recent chunks a request needs).
    pub fn window(&self) -> usize {
        self.shared.window.load(AtomicOrdering::Acquire)
    }

    /// The current model's median gap between first accesses in training, µs.
    pub fn median_gap_us(&self) -> u64 {
        self.shared.median_gap_us.load(AtomicOrdering::Relaxed)
    }

    /// Queues a request without waiting; `false` if the queue is full or the thread is gone.
    pub(crate) fn submit(&self, request: Request) -> bool {
        match self
            .jobs
            .as_ref()
            .map(|j| j.try_send(Job::Predict(request)))
        {
            Some(Ok(())) => true,
            Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) | None => false,
        }
    }

    fn sender(&self) -> Result<&SyncSender<Job>, LstmError> {
        self.jobs.as_ref().ok_or(LstmError::EngineStopped)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has answered what is queued.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn publish(shared: &Shared, model: &LoadedModel) {
    let meta = &model.files.meta;
    *lock(&shared.model) = ModelInfo {
        dir: model.files.dir.clone(),
        label: meta.label.clone(),
        created: meta.created.clone(),
        vocab: model.files.vocab.len(),
        window: meta.window,
        images: meta.images().to_vec(),
        run_keys: meta
            .run_keys()
            .map(|keys| Arc::new(keys.iter().cloned().collect())),
    };
    shared.window.store(meta.window, AtomicOrdering::Release);
    shared
        .median_gap_us
        .store(meta.median_gap_us(), AtomicOrdering::Relaxed);
    shared.generation.fetch_add(1, AtomicOrdering::AcqRel);
}

fn serve(mut model: LoadedModel, queue: &Receiver<Job>, shared: &Shared) {
    let mut version = lock(&shared.model).version();
    while let Ok(job) = queue.recv() {
        match job {
            Job::Swap(new, ack) => {
                model = *new;
                publish(shared, &model);
                version = lock(&shared.model).version();
                let _ = ack.send(());
            }
            Job::Predict(request) => {
                let mut steps = Vec::with_capacity(request.depth);
                let candidates = rollout(&mut model, &request, &mut steps).map_err(|e| {
                    shared.errors.fetch_add(1, AtomicOrdering::Relaxed);
                    e.to_string()
                });
                {
                    let (step, whole) = &mut *lock(&shared.latency);
                    steps.iter().for_each(|d| step.record(*d));
                    whole.record(request.queued.elapsed());
                }
                if let Some(observer) = lock(&shared.observer.0).clone() {
                    observer(&version, &steps);
                }
                let generation = shared.generation.load(AtomicOrdering::Acquire);
                // The caller may have given up waiting; its next request asks again.
                let _ = request.reply.try_send(Reply {
                    generation,
                    candidates,
                });
            }
        }
    }
}

/// The rollout described in the module documentation; `steps` receives each step's duration.
fn rollout(
    model: &mut LoadedModel,
    request: &Request,
    steps: &mut Vec<Duration>,
) -> Result<Vec<Candidate>, LstmError> {
    let window = model.files.meta.window;
    let mut tokens = model
        .files
        .vocab
        .window(&request.recent, request.total, window);
    let keep = request.max.saturating_mul(2).max(1);
    if tokens.iter().all(|&t| t == OOV || t == START) && tokens.contains(&OOV) {
        // Only chunks the model has never seen: it knows nothing about this run.
        return Ok(Vec::new());
    }
    let mut best: FastMap<i64, (f32, u32)> = FastMap::default();
    let mut chain = 1.0f32;
    for step in 1..=request.depth.max(1) as u32 {
        let started = Instant::now();
        let logits = model.logits(&tokens)?;
        steps.push(started.elapsed());
        let top = top_tokens(&softmax(&logits), &tokens, keep);
        for &(token, p) in &top {
            let q = chain * p;
            let entry = best.entry(token).or_insert((q, step));
            if q > entry.0 {
                *entry = (q, step);
            }
        }
        let Some(&(next, p)) = top.first() else {
            break;
        };
        chain *= p;
        if chain < request.min_probability {
            break;
        }
        tokens.push(next);
        if tokens.len() > window {
            tokens.remove(0);
        }
    }
    let vocab = &model.files.vocab;
    let mut out: Vec<Candidate> = best
        .into_iter()
        .filter(|(_, (p, _))| *p >= request.min_probability)
        .filter_map(|(token, (probability, steps))| {
            Some(Candidate {
                chunk: vocab.chunk(token)?,
                probability,
                steps,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.probability
            .total_cmp(&a.probability)
            .then(a.steps.cmp(&b.steps))
            .then(a.chunk.cmp(&b.chunk))
    });
    out.truncate(keep);
    Ok(out)
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter()
        .map(|e| e / sum.max(f32::MIN_POSITIVE))
        .collect()
}

/// The `keep` likeliest tokens that are chunks not already in the window, likeliest first.
fn top_tokens(probs: &[f32], window: &[i64], keep: usize) -> Vec<(i64, f32)> {
    let mut all: Vec<(i64, f32)> = probs
        .iter()
        .enumerate()
        .map(|(t, &p)| (t as i64, p))
        .filter(|(t, p)| *t != OOV && *t != START && p.is_finite() && !window.contains(t))
        .collect();
    let order = |a: &(i64, f32), b: &(i64, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if all.len() > keep {
        all.select_nth_unstable_by(keep - 1, order);
        all.truncate(keep);
    }
    all.sort_by(|a, b| order(a, b));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_that_names_its_training_runs_was_trained_on_those_only() {
        let header = |image: &str, started_unix_ms| RunHeader {
            image: image.to_owned(),
            workload: String::new(),
            layers: Vec::new(),
            started_unix_ms,
            labels: Default::default(),
        };
        let mut info = ModelInfo {
            images: vec!["r/a:1".to_owned()],
            ..ModelInfo::default()
        };
        // Images only: any run of them.
        assert!(info.trained_on(&header("r/a:1", 7)));
        assert!(!info.trained_on(&header("r/b:1", 7)));
        info.run_keys = Some(Arc::new(BTreeSet::from([run_key("r/a:1", 5)])));
        assert_eq!(run_key("r/a:1", 5), "r/a:1 5");
        assert!(info.trained_on(&header("r/a:1", 5)));
        assert!(!info.trained_on(&header("r/a:1", 7)));
        assert!(!info.trained_on(&header("r/b:1", 5)));
        // Neither recorded: any run at all.
        assert!(ModelInfo::default().trained_on(&header("r/b:1", 5)));
    }

    #[test]
    fn an_image_is_known_by_repository_and_tag_whatever_registry_served_it() {
        assert_eq!(repository("127.0.0.1:5000/tools:esgz"), "tools:esgz");
        assert_eq!(
            repository("mirror.example.com/lib/tools:esgz"),
            "lib/tools:esgz"
        );
        assert_eq!(repository("localhost/tools:esgz"), "tools:esgz");
        assert_eq!(repository("library/tools:esgz"), "library/tools:esgz");
        assert_eq!(repository("tools"), "tools");
        let info = ModelInfo {
            images: vec!["127.0.0.1:41031/tools:esgz".to_owned()],
            ..ModelInfo::default()
        };
        assert!(info.knows_image("10.0.0.7:5000/tools:esgz"));
        assert!(!info.knows_image("10.0.0.7:5000/tools:latest"));
        assert!(!info.knows_image("10.0.0.7:5000/python-big:esgz"));
    }

    #[test]
    fn top_tokens_skip_special_and_recent_tokens() {
        let probs = [0.5, 0.2, 0.1, 0.05, 0.1, 0.05];
        assert_eq!(top_tokens(&probs, &[4], 2), vec![(2, 0.1), (3, 0.05)]);
        assert_eq!(top_tokens(&probs, &[], 9).len(), 4);
        assert_eq!(top_tokens(&[f32::NAN, 0.1, 0.2], &[], 3), vec![(2, 0.2)]);
        let s = softmax(&[0.0, 0.0, f32::ln(2.0)]);
        assert!((s[2] - 0.5).abs() < 1e-6 && (s.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
