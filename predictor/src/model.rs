//! The contract between the daemon and every model: [`Predictor`], what it is fed
//! ([`Access`]) and what it answers ([`Prediction`]), plus saving learned state across restarts.
//!
//! One instance of a model serves every run on the node (a *shared model with per-run state*):
//! runs are told apart by a [`RunId`] the caller chooses, learned state is shared, so a run of
//! an image benefits from every earlier run of it. All methods take `&mut self`: the daemon
//! owns each predictor on one thread (blocking, CPU-bound work never runs on tokio workers)
//! and feeds it through a channel; the trait only requires `Send`.

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::chunk::ChunkId;
use crate::error::Error;
use crate::layout::Layout;
use crate::trace::{AccessSource, RunHeader, Trace};
use crate::workload::WORKLOAD_LABEL;

/// One access as a model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// The chunk read.
    pub chunk: ChunkId,
    /// Time since the run began.
    pub at: Duration,
    /// The chunk's size in bytes.
    pub size: u32,
    /// Where the read was served from.
    pub source: AccessSource,
}

/// A chunk a model expects the run to read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// The chunk.
    pub chunk: ChunkId,
    /// Probability that the run reads it later (from now to the end of the run).
    pub probability: f32,
    /// When, counted from the run's latest observed access (from its start before any).
    pub expected_in: Duration,
}

/// Names one run among those a predictor follows at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(pub u64);

/// The run id [`learn_by_replaying`] uses; callers must not use it for live runs.
pub const LEARN_RUN: RunId = RunId(u64::MAX);

/// What is known about a run when it starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunContext {
    /// The image reference.
    pub image: String,
    /// The `containerd.io/snapshot/augur.workload` label, if the user set one.
    pub label: Option<String>,
    /// Layer digests, lowest first.
    pub layers: Vec<String>,
    /// The image's multi-chunk files (from the layers' TOCs; empty for a recorded run, whose
    /// trace has no TOC).
    pub layout: Arc<Layout>,
}

impl RunContext {
    /// The context a recorded run started with.
    pub fn from_header(header: &RunHeader) -> Self {
        RunContext {
            image: header.image.clone(),
            label: header.labels.get(WORKLOAD_LABEL).cloned(),
            layers: header.layers.clone(),
            layout: Arc::default(),
        }
    }
}

/// A model: fed every access of a run as it happens, asked often for what comes next, taught
/// from finished runs.
///
/// Contract for implementations:
/// - `predict` is cheap (microseconds to a millisecond; see `benches/predict.rs`), returns at
///   most `max` predictions, each chunk once, none the run has already read, ordered by
///   descending probability (ties: sooner first, then by chunk id, so results are
///   deterministic).
/// - Calls about a run that was never started (or already finished) are ignored.
/// - A model may learn online in `observe`; `finish_run` must then not count the same
///   accesses twice.
/// - No method panics on any input.
pub trait Predictor: Send + fmt::Debug {
    /// Short stable name (`replay`, `markov`, `lstm`, `ensemble`); it keys saved state and
    /// calibration.
    fn name(&self) -> &str;

    /// A run begins (its rootfs was mounted).
    fn start_run(&mut self, run: RunId, ctx: &RunContext);

    /// The run read a chunk.
    fn observe(&mut self, run: RunId, access: &Access);

    /// The chunks the run is expected to read next, at most `max`.
    fn predict(&mut self, run: RunId, max: usize) -> Vec<Prediction>;

    /// The run ended; `trace` is its full trace when one was recorded. Per-run state is
    /// dropped; what the run taught is kept.
    fn finish_run(&mut self, run: RunId, trace: Option<&Trace>);

    /// Learns from a recorded run that this instance did not follow live (training at start-up,
    /// the evaluator's training set). The default replays it through the live methods.
    fn learn(&mut self, trace: &Trace) {
        learn_by_replaying(self, trace);
    }

    /// Whether this model was (or may have been) fitted offline on the recorded run `header`
    /// (the LSTM, trained on exported traces), so that its forecasts for it would be in sample.
    /// The ensemble does not calibrate on them, and asks a cross-fitting fold that was not
    /// fitted on the run instead if it has one (see [`crate::ensemble`]).
    fn trained_on(&self, _header: &RunHeader) -> bool {
        false
    }

    /// Whether this model's forecasts owe nothing to learned history (continuation: the rest
    /// of a file begun, from the image's layout), so that its own calibration holds whatever
    /// the run's novelty and whoever else speaks. The ensemble then answers a chunk it predicts
    /// with at least that calibrated probability (see [`crate::ensemble`]). Default: no.
    fn history_free(&self) -> bool {
        false
    }

    /// Whether this model may say nothing at all about whole runs ([`Predictor::abstains_on`]).
    /// The ensemble then also learns how it would answer without it (see
    /// [`crate::ensemble`]). Default: no.
    fn may_abstain(&self) -> bool {
        false
    }

    /// Whether this model says nothing about runs of `image` (the LSTM about an image it was
    /// not trained on). Only asked of models that [`Predictor::may_abstain`].
    fn abstains_on(&self, _image: &str) -> bool {
        false
    }

    /// The learned state, serialised (not per-run state).
    fn save_state(&self) -> Result<Vec<u8>, Error>;

    /// Replaces the learned state with a saved one; on error the model is unchanged.
    fn load_state(&mut self, state: &[u8]) -> Result<(), Error>;
}

/// Teaches `model` a recorded run by replaying it as if it were live, under [`LEARN_RUN`].
pub fn learn_by_replaying(model: &mut (impl Predictor + ?Sized), trace: &Trace) {
    model.start_run(LEARN_RUN, &RunContext::from_header(&trace.header));
    trace
        .model_accesses()
        .for_each(|a| model.observe(LEARN_RUN, &a));
    model.finish_run(LEARN_RUN, Some(trace));
}

/// Orders predictions as the contract says and keeps the first `max`.
pub fn rank(predictions: &mut Vec<Prediction>, max: usize) {
    predictions.sort_by(|a, b| {
        b.probability
            .total_cmp(&a.probability)
            .then(a.expected_in.cmp(&b.expected_in))
            .then(a.chunk.cmp(&b.chunk))
    });
    predictions.truncate(max);
}

#[derive(Serialize, serde::Deserialize)]
struct Envelope<T> {
    model: String,
    version: u32,
    state: T,
}

/// Serialises a model's state with its name and format version, so that loading another
/// model's state, or a newer format, is a clear error.
pub fn encode_state<T: Serialize>(model: &str, version: u32, state: &T) -> Result<Vec<u8>, Error> {
    let envelope = Envelope {
        model: model.to_owned(),
        version,
        state,
    };
    serde_json::to_vec(&envelope).map_err(|e| Error::State {
        model: model.to_owned(),
        reason: e.to_string(),
    })
}

/// The inverse of [`encode_state`].
pub fn decode_state<T: DeserializeOwned>(
    model: &str,
    version: u32,
    bytes: &[u8],
) -> Result<T, Error> {
    let fail = |reason: String| Error::State {
        model: model.to_owned(),
        reason,
    };
    let envelope: Envelope<serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|e| fail(e.to_string()))?;
    if envelope.model != model {
        return Err(fail(format!("it is the state of {:?}", envelope.model)));
    }
    if envelope.version != version {
        return Err(fail(format!(
            "format version {}, this build reads {version}",
            envelope.version
        )));
    }
    serde_json::from_value(envelope.state).map_err(|e| fail(e.to_string()))
}

/// Saves a model's learned state to `path`, gzip-compressed, atomically (temporary file,
/// fsync, rename), so a crash leaves the old state or the new one.
pub fn save_to_file(model: &dyn Predictor, path: &Path) -> Result<(), Error> {
    write_state_file(&model.save_state()?, path)
}

/// Loads what [`save_to_file`] wrote.
pub fn load_from_file(model: &mut dyn Predictor, path: &Path) -> Result<(), Error> {
    model.load_state(&read_state_file(path)?)
}

/// Writes encoded state (see [`encode_state`]) to `path` as [`save_to_file`] does: gzip,
/// temporary file, fsync, rename. For models outside the [`Predictor`] trait.
pub fn write_state_file(state: &[u8], path: &Path) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let file = std::fs::File::create(&tmp)?;
        let mut gz = GzEncoder::new(file, Compression::fast());
        gz.write_all(state)?;
        gz.finish()?.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io("save model state to", path, e)
    })
}

/// Reads what [`write_state_file`] wrote (the encoded state, decompressed).
pub fn read_state_file(path: &Path) -> Result<Vec<u8>, Error> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut state = Vec::new();
    GzDecoder::new(file)
        .read_to_end(&mut state)
        .map_err(|e| Error::io("read model state from", path, e))?;
    Ok(state)
}
