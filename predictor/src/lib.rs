//! # augur-predictor
//!
//! Access traces in, calibrated chunk predictions out. This crate depends on nothing in the
//! workspace: the daemon (`augur-snapshotter`) writes traces and asks models for predictions
//! through it, the Python trainer reads its export format, and `augurctl predictor eval` runs
//! its evaluator.
//!
//! ## Layers
//!
//! | module | role |
//! |---|---|
//! | [`eval`] | replays held-out traces against trained models in simulated time (network profile, prefetch queue) and reports precision, recall, byte hit ratio, wasted bytes, timeliness and calibration; splits by run, workload and image |
//! | [`deploy`] | deployment-level prediction: which images the node pulls next (transitions, periodicity, decayed popularity), its evaluator against baselines, synthetic pull logs |
//! | [`ensemble`] | any set of models combined, with per-model and final calibration |
//! | [`replay`], [`markov`] | the record-and-replay baseline and the online first/second-order Markov model |
//! | [`continuation`], [`layout`] | the rest of a multi-chunk file a run has begun to read, from the image's [`Layout`] (its TOCs; recorded runs' chunk records in the evaluator) |
//! | [`lstm`] | the ONNX LSTM trained offline (`onnx-models/`): model directories validated against golden outputs, ONNX Runtime loaded at run time, inference on the `augur-lstm` thread, hot model swaps, per-step latency |
//! | [`calibration`], [`stacking`] | reliability bins with an isotonic map (scores in, probabilities out); the logistic stacker that weighs members |
//! | [`model`] | the [`Predictor`] trait the daemon uses (and the LSTM implements), [`Access`], [`Prediction`], saved state |
//! | [`trace`] | the run/chunk/access vocabulary, the binary on-disk encoding, the JSON Lines export, trace directories and retention |
//! | [`workload`] | [`WorkloadKey`]: an image plus the user's label or a hash of the first 8 chunks |
//! | [`chunk`] | [`ChunkId`] (a chunk's sha256) and deterministic chunk-keyed maps |
//! | [`synth`] | seeded synthetic workloads where the right answer is known (tests, benchmarks) |
//! | [`error`] | the crate's one error type |
//!
//! ## How the daemon uses it
//!
//! One instance of each model (or one [`Ensemble`]) serves every run on the node, owned by one
//! thread that receives accesses over a channel (prediction is CPU work and never runs on tokio
//! workers). The LSTM's inference runs on a thread of its own (`augur-lstm`), which its
//! `predict` waits for at most a bounded time; the daemon keeps its [`lstm::Engine`] to swap
//! in a validated new model without a restart. Per run: [`Predictor::start_run`], then [`Predictor::observe`] for each access and
//! [`Predictor::predict`] whenever the prefetch queue wants work, then
//! [`Predictor::finish_run`] with the run's trace. Learned state survives restarts through
//! [`model::save_to_file`] and [`model::load_from_file`]. No method panics on any input; a
//! corrupt trace or state file is an [`Error`] that names the file (and offset).
//!
//! Design choices are recorded in `docs/decisions/` (the predictor models record); the
//! formats for users are in `docs/traces.md`.

pub mod calibration;
pub mod chunk;
pub mod continuation;
pub mod deploy;
pub mod ensemble;
pub mod error;
pub mod eval;
pub mod layout;
pub mod lstm;
pub mod markov;
pub mod model;
pub mod policy;
pub mod replay;
pub mod stacking;
pub mod synth;
pub mod trace;
pub mod workload;

pub use chunk::ChunkId;
pub use continuation::Continuation;
pub use ensemble::{Combine, Ensemble, EnsembleConfig};
pub use error::{Error, Result};
pub use layout::Layout;
pub use lstm::{Lstm, LstmConfig};
pub use markov::{Markov, MarkovConfig};
pub use model::{Access, Prediction, Predictor, RunContext, RunId};
pub use replay::{Replay, ReplayConfig};
pub use trace::{AccessSource, Trace};
pub use workload::WorkloadKey;
