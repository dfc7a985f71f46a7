//! The predictor thread `augur-predict`: it owns the models and turns a run's accesses into
//! queued prefetches, adapts the threshold once per interval, and saves what the models
//! learned.
//!
//! - **Models**: an [`Ensemble`] of the models `[predictor] models` selects (default all):
//!   record-and-replay, the online Markov model, continuation (the rest of a multi-chunk file
//!   a run has begun, from the layers' TOCs), and the ONNX LSTM when `[predictor] model_dir`
//!   (default `<root>/models/current`) holds a valid model and ONNX Runtime loads. If the LSTM
//!   does not load, one line says what is missing and that the daemon runs on the other models:
//!   a warning, or info when no model is installed at the default place or `model_dir = ""`
//!   turned the LSTM off. [`build_ensemble`] and [`state_file`] are shared with
//!   `augurctl predictor train-state`.
//! - **Events** arrive over a bounded channel from [`super::Prefetcher`]'s methods (which only
//!   send). After a batch of accesses (at most [`BATCH`] long), each run that read something
//!   new is asked for its next [`PREDICT_MAX`] chunks; those at or above the threshold that
//!   are not cached are queued, due at now + their expected time, and the run's queued chunks
//!   these predictions no longer admit are retracted (the model changed its mind before a
//!   worker took them; measured in `augurctl predictor eval`, where it cut wasted bytes).
//! - **State**: `<root>/predictor/<members>.state.gz`, loaded at start (a corrupt file is
//!   logged and ignored), saved every [`SAVE_EVERY`] and at stop. A set with continuation whose
//!   file is missing loads the file of the same set without it (saved before continuation
//!   existed), so an upgrade keeps what replay and Markov learned.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use augur_predictor::lstm::{Engine, runtime};
use augur_predictor::{
    Access, ChunkId, Continuation, Ensemble, EnsembleConfig, Layout, Lstm, LstmConfig, Markov,
    MarkovConfig, Predictor, Replay, ReplayConfig, RunContext, RunId, Trace,
};

use crate::prefetch::PredictorSettings;
use crate::prefetch::adapt::Adapter;
use crate::prefetch::queue::Entry;
use crate::prefetch::scheduler::Shared;
use crate::prefetch::settings::ModelKind;
use crate::prefetch::warmed::WARM_MODEL_RUN;

/// Predictions asked for per run and batch.
pub const PREDICT_MAX: usize = 64;
/// Longest a batch of events runs before predictions are made.
const BATCH: Duration = Duration::from_millis(20);
/// How often learned state is saved.
const SAVE_EVERY: Duration = Duration::from_secs(300);

/// What the predictor thread is told.
#[derive(Debug)]
pub enum Event {
    /// A run began.
    Started(RunId, RunContext),
    /// A run read a chunk.
    Access(RunId, Access),
    /// A run ended.
    Finished(RunId, Option<Arc<Trace>>),
    /// The LSTM loaded after start (`POST /models/reload`): added as a member; the sender is
    /// told once it is in.
    AddLstm(Box<Lstm>, std::sync::mpsc::SyncSender<()>),
    /// An image was warmed ahead of its pull: queue its likely chunks as background work.
    Warm(Box<super::warmed::WarmUp>),
    /// What a run of an image would be predicted first (`POST /manifest/parse`), answered
    /// without teaching the models ([`super::plan`]).
    Plan(Box<super::plan::PlanRequest>),
    /// Stop (save first).
    Stop,
}

/// The models and where their state lives.
#[derive(Debug)]
pub struct Models {
    ensemble: Ensemble,
    state_file: PathBuf,
    /// The LSTM's inference engine, if the LSTM is among the members (to reload its model).
    pub lstm: Option<Arc<Engine>>,
}

impl Models {
    /// The ensemble itself (for tools and tests that ask it directly, off the daemon's thread).
    pub fn ensemble_mut(&mut self) -> &mut Ensemble {
        &mut self.ensemble
    }
}

/// Builds the ensemble of the selected models (with the LSTM if selected and it loads) and
/// loads its saved state.
pub fn load_models(settings: &PredictorSettings) -> Models {
    let lstm = if settings.models.contains(&ModelKind::Lstm) {
        daemon_lstm(settings)
    } else {
        None
    };
    let engine = lstm.as_ref().map(|l| Arc::clone(l.engine()));
    let mut ensemble = build_ensemble(&settings.models, lstm, Arc::default());
    if ensemble.member_names().is_empty() {
        tracing::warn!(
            "no models: predictor.models names only the LSTM and it did not load; nothing is \
             prefetched until a model is loaded (augurctl model reload)"
        );
    }
    let state_file = state_file(&ensemble, &settings.state_dir);
    if state_file.exists() {
        load_state(&mut ensemble, &state_file);
    } else if let Some(before) = state_file_before_continuation(&ensemble, &settings.state_dir) {
        tracing::info!(
            file = %before.display(),
            "loading the state saved before the continuation model joined; it is saved \
             under the new set's file from now on"
        );
        load_state(&mut ensemble, &before);
    }
    tracing::info!(
        models = %ensemble.member_names().join(", "),
        state = %state_file.display(),
        "predictor ready"
    );
    Models {
        ensemble,
        state_file,
        lstm: engine,
    }
}

/// Why the LSTM of the settings did not load.
#[derive(Debug, thiserror::Error)]
pub enum LoadLstmError {
    /// `model_dir` is not set.
    #[error("predictor.model_dir is not set")]
    NoModelDir,
    /// The model or ONNX Runtime failed; the message names which check.
    #[error("model_dir {dir}, ONNX Runtime {library}: {source}")]
    Load {
        /// The model directory.
        dir: PathBuf,
        /// ONNX Runtime's library.
        library: PathBuf,
        /// What failed.
        source: augur_predictor::lstm::LstmError,
    },
}

/// `[predictor] model_dir` and the ONNX Runtime library the settings name (else
/// `$AUGUR_ORT_LIB`, else the node's default place).
fn model_and_library(settings: &PredictorSettings) -> Result<(&PathBuf, PathBuf), LoadLstmError> {
    let dir = settings
        .model_dir
        .as_ref()
        .ok_or(LoadLstmError::NoModelDir)?;
    let library = settings
        .onnxruntime
        .clone()
        .unwrap_or_else(runtime::library_from_env);
    Ok((dir, library))
}

/// Loads and validates the LSTM of `[predictor] model_dir` with the settings' ONNX Runtime.
pub fn load_lstm(settings: &PredictorSettings) -> Result<Lstm, LoadLstmError> {
    let (dir, library) = model_and_library(settings)?;
    Lstm::load(dir, &library, LstmConfig::default()).map_err(|source| LoadLstmError::Load {
        dir: dir.clone(),
        library,
        source,
    })
}

/// The cross-fitting folds beside the configured model (`<model_dir>/folds/<n>/`, written by
/// `onnx-models/train.py --folds`), each an [`Lstm`] of its own: what `augurctl predictor
/// train-state` asks in the model's stead on the runs it was trained on. None if the model has
/// no folds. The daemon itself never loads them.
pub fn load_lstm_folds(settings: &PredictorSettings) -> Result<Vec<Lstm>, LoadLstmError> {
    let (dir, library) = model_and_library(settings)?;
    let engines =
        augur_predictor::lstm::load_folds(dir, &library).map_err(|source| LoadLstmError::Load {
            dir: dir.join("folds"),
            library,
            source,
        })?;
    Ok(engines
        .into_iter()
        .map(|e| Lstm::new(e, LstmConfig::default()))
        .collect())
}

/// The daemon's LSTM, if a model is configured (or installed at the default place) and loads;
/// why not is said once: a warning, except for `model_dir = ""` or a node with no model
/// installed at the default place (an info line, the state of every fresh install).
fn daemon_lstm(settings: &PredictorSettings) -> Option<Lstm> {
    let dir = settings.model_dir.as_ref();
    if dir.is_some_and(|d| settings.model_dir_is_default && std::fs::symlink_metadata(d).is_err()) {
        tracing::info!(
            model_dir = %dir.map(|d| d.display().to_string()).unwrap_or_default(),
            "no LSTM model installed (onnx-models/install.sh installs the shipped one); the \
             daemon runs on the other models of predictor.models"
        );
        return None;
    }
    match load_lstm(settings) {
        Ok(l) => {
            let info = l.engine().model();
            tracing::info!(
                dir = %info.dir.display(),
                version = %info.version(),
                label = %info.label,
                "LSTM model loaded"
            );
            Some(l)
        }
        Err(LoadLstmError::NoModelDir) => {
            tracing::info!(
                "no LSTM: predictor.model_dir is \"\"; the daemon runs on the other models of \
                 predictor.models"
            );
            None
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                "no LSTM: the daemon runs on the other models of predictor.models"
            );
            None
        }
    }
}

/// The daemon's ensemble of the `selected` models, in member order; the LSTM joins only if
/// selected and given. Shared with `augurctl predictor train-state`, which must build the same
/// members to write state the daemon loads. `layout` is continuation's for runs whose context
/// has none (recorded runs: train-state builds it from their chunk records; the daemon's
/// live runs bring their own, so it passes an empty one).
pub fn build_ensemble(selected: &[ModelKind], lstm: Option<Lstm>, layout: Arc<Layout>) -> Ensemble {
    let mut members: Vec<Box<dyn Predictor>> = Vec::new();
    if selected.contains(&ModelKind::Replay) {
        members.push(Box::new(Replay::new(ReplayConfig::default().as_member())));
    }
    if selected.contains(&ModelKind::Markov) {
        members.push(Box::new(Markov::new(MarkovConfig::default())));
    }
    if selected.contains(&ModelKind::Continuation) {
        members.push(Box::new(Continuation::with_layout(layout)));
    }
    if selected.contains(&ModelKind::Lstm)
        && let Some(l) = lstm
    {
        members.push(Box::new(l));
    }
    Ensemble::new(members, EnsembleConfig::default())
}

/// `<state_dir>/<member>+<member>....state.gz`: state saved for one set of members.
pub fn state_file(ensemble: &Ensemble, state_dir: &Path) -> PathBuf {
    set_state_file(state_dir, &ensemble.member_names())
}

/// `<state_dir>/<name>+<name>....state.gz` for the set of members `names`, in member order.
fn set_state_file(state_dir: &Path, names: &[impl AsRef<str>]) -> PathBuf {
    let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    state_dir.join(format!("{}.state.gz", names.join("+")))
}

/// The state file of `ensemble`'s set without continuation, if continuation is a member and
/// that file exists (a node upgraded from a build without it).
fn state_file_before_continuation(ensemble: &Ensemble, state_dir: &Path) -> Option<PathBuf> {
    let names = ensemble.member_names();
    let cont = ModelKind::Continuation.name();
    if !names.iter().any(|n| n == cont) {
        return None;
    }
    let before: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| *n != cont)
        .collect();
    let file = set_state_file(state_dir, &before);
    file.exists().then_some(file)
}

/// Adds the LSTM loaded after start. What the other members learned so far is saved first
/// (under the old set's file); from now on state goes to the new set's file.
fn add_lstm(models: &mut Models, lstm: Box<Lstm>) {
    save_state(models);
    models.lstm = Some(Arc::clone(lstm.engine()));
    models.ensemble.add_member(lstm);
    if let Some(dir) = models.state_file.parent() {
        models.state_file = state_file(&models.ensemble, dir);
    }
    tracing::info!(
        models = %models.ensemble.member_names().join(", "),
        state = %models.state_file.display(),
        "the LSTM joined the running predictor"
    );
}

fn load_state(ensemble: &mut Ensemble, path: &Path) {
    if !path.exists() {
        return;
    }
    if let Err(e) = augur_predictor::model::load_from_file(ensemble, path) {
        tracing::warn!(
            file = %path.display(),
            error = %e,
            "ignoring the saved predictor state (the models start afresh; the file is \
             replaced at the next save)"
        );
    }
}

fn save_state(models: &Models) {
    if let Some(dir) = models.state_file.parent()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot save the predictor state");
        return;
    }
    if let Err(e) = augur_predictor::model::save_to_file(&models.ensemble, &models.state_file) {
        tracing::warn!(error = %e, "cannot save the predictor state");
    }
}

/// The thread's loop, until [`Event::Stop`] or every sender is gone.
pub fn run(mut models: Models, rx: &Receiver<Event>, shared: &Shared, mut adapter: Adapter) {
    let mut saved = Instant::now();
    loop {
        let wait = adapter
            .due_in()
            .min(SAVE_EVERY.saturating_sub(saved.elapsed()));
        let mut dirty = BTreeSet::new();
        let (stop, handled) = match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
            Ok(ev) => handle_batch(&mut models, ev, rx, shared, &mut dirty),
            Err(RecvTimeoutError::Timeout) => (false, 0),
            Err(RecvTimeoutError::Disconnected) => (true, 0),
        };
        for run in dirty {
            predict(&mut models.ensemble, run, shared);
        }
        shared
            .counters
            .events_handled
            .fetch_add(handled, std::sync::atomic::Ordering::Release);
        if adapter.due_in().is_zero() {
            adapter.adapt(shared);
        }
        if stop {
            break;
        }
        if saved.elapsed() >= SAVE_EVERY {
            save_state(&models);
            saved = Instant::now();
        }
    }
    save_state(&models);
}

/// Handles `first` and whatever else is waiting, for at most [`BATCH`]; returns whether to
/// stop, and how many events were handled.
fn handle_batch(
    models: &mut Models,
    first: Event,
    rx: &Receiver<Event>,
    shared: &Shared,
    dirty: &mut BTreeSet<RunId>,
) -> (bool, u64) {
    let began = Instant::now();
    let mut next = Some(first);
    let mut handled = 0;
    while let Some(ev) = next.take() {
        handled += 1;
        match ev {
            Event::Started(run, ctx) => models.ensemble.start_run(run, &ctx),
            Event::Access(run, a) => {
                models.ensemble.observe(run, &a);
                dirty.insert(run);
            }
            Event::Finished(run, trace) => {
                dirty.remove(&run);
                models.ensemble.finish_run(run, trace.as_deref());
            }
            Event::AddLstm(lstm, ack) => {
                add_lstm(models, lstm);
                let _ = ack.send(());
            }
            Event::Warm(warm) => queue_warm(&mut models.ensemble, &warm, shared),
            Event::Plan(req) => {
                let _ = req
                    .reply
                    .send(super::plan::dry_run(&mut models.ensemble, &req));
            }
            Event::Stop => return (true, handled),
        }
        if began.elapsed() < BATCH {
            next = rx.try_recv().ok();
        }
    }
    (false, handled)
}

/// Queues `run`'s predictions at or above the threshold that are not cached, and retracts its
/// queued ones below it or no longer predicted.
fn predict(model: &mut Ensemble, run: RunId, shared: &Shared) {
    let threshold = shared.threshold();
    let now = Instant::now();
    let predictions = model.predict(run, PREDICT_MAX);
    shared.note_predictions(run, &predictions);
    let admitted: HashSet<ChunkId> = predictions
        .iter()
        .filter(|p| p.probability >= threshold)
        .map(|p| p.chunk)
        .collect();
    shared.retract(run, |chunk| admitted.contains(chunk));
    let entries: Vec<Entry> = predictions
        .into_iter()
        .filter(|p| admitted.contains(&p.chunk) && !shared.cached(&p.chunk))
        .map(|p| Entry {
            run,
            chunk: p.chunk,
            probability: p.probability,
            due: now + p.expected_in,
            background: false,
        })
        .collect();
    if !entries.is_empty() {
        shared.enqueue(entries);
    }
}

/// Queues the chunks a run of a warmed image is likely to read first, as background entries:
/// the models' predictions for a run of the image that has read nothing yet, each chunk's
/// probability times the pull's, at or above the threshold, not cached, in the image's layers.
fn queue_warm(model: &mut Ensemble, warm: &super::warmed::WarmUp, shared: &Shared) {
    let (run, evicted) = shared.warm.insert(warm);
    if let Some(old) = evicted {
        shared.cancel_run(old);
        shared.ledger.run_ended(old);
    }
    let ctx = RunContext {
        image: warm.image.clone(),
        label: None,
        layers: warm.layers.iter().map(|(d, _)| d.clone()).collect(),
        layout: Default::default(),
    };
    model.start_run(WARM_MODEL_RUN, &ctx);
    let predictions = model.predict(WARM_MODEL_RUN, PREDICT_MAX);
    let (threshold, now) = (shared.threshold(), Instant::now());
    let entries: Vec<Entry> = predictions
        .into_iter()
        .map(|p| (p.probability * warm.probability, p))
        .filter(|(probability, p)| {
            *probability >= threshold
                && !shared.cached(&p.chunk)
                && shared.warm.holds(run, &p.chunk)
        })
        .map(|(probability, p)| Entry {
            run,
            chunk: p.chunk,
            probability,
            due: now + warm.expected_in + p.expected_in,
            background: true,
        })
        .collect();
    tracing::debug!(
        image = %warm.image,
        chunks = entries.len(),
        "queued the likely chunks of a warmed image"
    );
    if !entries.is_empty() {
        shared.enqueue(entries);
    }
}
