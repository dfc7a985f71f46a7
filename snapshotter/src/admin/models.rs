//! The prediction side of the admin API: `POST /models/reload` (a new LSTM model validated and
//! swapped in while running), `GET /predictions/{snapshot}` (what the models expect a running
//! container to read next), and `GET /status` (one summary of the daemon for `augurctl status`).

use std::path::PathBuf;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};

use super::{AdminError, AdminState, blocking};
use crate::cache::{CacheStatus, ChunkKey};
use crate::prefetch::{PrefetchStats, Prefetcher};
use crate::trace::RecorderStats;

/// `POST /models/reload` body.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadRequest {
    /// The model directory (absolute); default `[predictor] model_dir`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

/// A model being served (answer of `POST /models/reload`, part of `GET /status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Its directory.
    pub dir: PathBuf,
    /// Its `meta.json` label.
    pub label: String,
    /// When it was trained (its version).
    pub created: String,
    /// Tokens in its vocabulary.
    pub vocab: usize,
    /// Tokens per input window.
    pub window: usize,
    /// The images it was trained on (empty: not recorded).
    pub images: Vec<String>,
}

impl From<augur_predictor::lstm::ModelInfo> for Model {
    fn from(m: augur_predictor::lstm::ModelInfo) -> Model {
        Model {
            dir: m.dir,
            label: m.label,
            created: m.created,
            vocab: m.vocab,
            window: m.window,
            images: m.images,
        }
    }
}

fn prefetcher(s: &AdminState) -> Result<Prefetcher, AdminError> {
    s.prefetch.clone().ok_or(AdminError::Disabled(
        "prefetching is off (prefetch.enabled = false, or lazy pulling or traces are off), so \
         no models run",
    ))
}

/// `POST /models/reload`.
pub async fn reload(
    State(s): State<AdminState>,
    body: axum::body::Bytes,
) -> Result<Json<Model>, AdminError> {
    let p = prefetcher(&s)?;
    let dir = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<ReloadRequest>(&body)
            .map_err(|e| {
                AdminError::BadRequest(format!(
                    "body: {e}: send nothing, or {{\"dir\": \"/absolute/model/dir\"}}"
                ))
            })?
            .dir
    };
    let loaded = blocking(move || p.reload_model(dir.as_deref())).await?;
    match loaded {
        Ok(info) => Ok(Json(info.into())),
        Err(e) if e.is_input() => Err(AdminError::BadRequest(e.to_string())),
        Err(e) => Err(AdminError::Internal(e.to_string())),
    }
}

/// One prediction of `GET /predictions/{snapshot}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictedChunk {
    /// The chunk's sha256 (`sha256:...`).
    pub chunk: String,
    /// The file holding it, if a mounted layer has the chunk.
    pub path: Option<String>,
    /// Calibrated probability that the run reads it.
    pub probability: f32,
    /// Expected time until the read, from the run's latest access, ms.
    pub expected_in_ms: u64,
    /// Whether it is in the cache already.
    pub cached: bool,
}

/// `GET /predictions/{snapshot}` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Predictions {
    /// The snapshot key.
    pub snapshot: String,
    /// The prefetch threshold now (predictions at or above it are prefetched).
    pub threshold: f32,
    /// Best first.
    pub predictions: Vec<PredictedChunk>,
}

/// `GET /predictions/{snapshot}`.
pub async fn predictions(
    State(s): State<AdminState>,
    Path(key): Path<String>,
) -> Result<Json<Predictions>, AdminError> {
    let p = prefetcher(&s)?;
    let recorder = s.trace.clone().ok_or(AdminError::Disabled(
        "traces are off (trace.enabled = false), so runs are not followed",
    ))?;
    let lazy = s.lazy.clone();
    blocking(move || {
        let run = recorder.run_of(&key).ok_or_else(|| {
            AdminError::Empty(format!(
                "no active run of snapshot {key:?}: give the key of a container's snapshot \
                 prepared on lazily pulled layers and not yet removed (ctr snapshots ls)"
            ))
        })?;
        let list = p.predictions(run).unwrap_or_default();
        let predictions = list
            .iter()
            .map(|pr| PredictedChunk {
                chunk: pr.chunk.to_string(),
                path: lazy.as_ref().and_then(|l| file_of(l, &pr.chunk)),
                probability: pr.probability,
                expected_in_ms: u64::try_from(pr.expected_in.as_millis()).unwrap_or(u64::MAX),
                cached: lazy
                    .as_ref()
                    .is_some_and(|l| l.cache().contains(&ChunkKey(pr.chunk.0))),
            })
            .collect();
        Ok(Json(Predictions {
            snapshot: key,
            threshold: p.threshold(),
            predictions,
        }))
    })
    .await?
}

fn file_of(lazy: &crate::lazy::LazyLayers, chunk: &augur_predictor::ChunkId) -> Option<String> {
    let (data, index) = lazy.locator().locate(chunk)?;
    let idx = data.index();
    let node = idx.file_of_chunk(index)?;
    Some(idx.path_of(node).display().to_string())
}

/// `GET /status` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// The daemon's version.
    pub version: String,
    /// Seconds since the admin API started.
    pub uptime_s: u64,
    /// Lazily mounted layers now (`None`: lazy pulling is off).
    pub lazy_layers: Option<usize>,
    /// The chunk cache (`None`: lazy pulling is off).
    pub cache: Option<CacheStatus>,
    /// The prefetcher (`None`: prefetching is off).
    pub prefetch: Option<PrefetchStats>,
    /// The LSTM model served, if any.
    pub model: Option<Model>,
    /// The trace recorder's counters (`None`: traces are off).
    pub traces: Option<RecorderStats>,
    /// The LSTM's model steps so far, all models (`None`: no LSTM).
    #[serde(default)]
    pub inference: Option<StepLatency>,
}

/// The LSTM's per-step latency since start (the engine's own histogram, within 19 %).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepLatency {
    /// Steps run.
    pub steps: u64,
    /// Median, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
}

/// `GET /status`.
pub async fn status(State(s): State<AdminState>) -> Result<Json<Status>, AdminError> {
    let started = s.started;
    blocking(move || {
        Json(Status {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_s: Instant::now().saturating_duration_since(started).as_secs(),
            lazy_layers: s.lazy.as_ref().map(|l| l.locator().layers()),
            cache: s.lazy.as_ref().map(|l| l.cache().status()),
            prefetch: s.prefetch.as_ref().map(Prefetcher::stats),
            model: s
                .prefetch
                .as_ref()
                .and_then(Prefetcher::model)
                .map(Model::from),
            traces: s.trace.as_ref().map(|t| t.stats()),
            inference: s
                .prefetch
                .as_ref()
                .and_then(Prefetcher::lstm_engine)
                .map(|e| {
                    let step = e.latency().step;
                    StepLatency {
                        steps: step.count,
                        p50_us: step.p50_us,
                        p99_us: step.p99_us,
                    }
                }),
        })
    })
    .await
}
