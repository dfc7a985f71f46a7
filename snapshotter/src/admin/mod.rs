//! The admin API: JSON over HTTP/1.1 on a root-only unix socket (`admin.address`, mode 0600),
//! for `augurctl` and for operators' scripts. It observes and steers the daemon; containerd never
//! talks to it.
//!
//! | method and path | what it does |
//! |---|---|
//! | `GET /health` | liveness: `{"status":"ok", ...}` |
//! | `GET /cache/status` | the chunk cache's tiers: budgets, use, hits, evictions, corrupt chunks |
//! | `POST /cache/evict` | `{"scope":"unreferenced"}` (default) or `{"scope":"all"}`: drops chunks now |
//! | `PUT /cache/thresholds` | `{"ram":0.8,"nvme":0.4}`: the admission thresholds, at run time |
//! | `GET /traces` | the kept access traces (run, image, workload, start, accesses, bytes) and the recorder's counters |
//! | `GET /traces/export` | every kept trace as JSON Lines (`docs/traces.md`), streamed |
//! | `GET /status` | one summary: version, uptime, lazy layers, cache, prefetcher, model, trace counters |
//! | `POST /models/reload` | `{"dir":"/abs"}` or no body (`predictor.model_dir`): validates an LSTM model and serves it, no restart |
//! | `GET /predictions/{snapshot}` | the models' current top predictions for a running container's snapshot |
//! | `POST /prefetch/layer/{digest}` | fetch a mounted lazy layer whole now, in the background: 202 queued, 200 complete |
//! | `POST /manifest/parse` | `{"image":"ref","platform":"os/arch"}`: the layers in Augur's preferred fetch order, and the models' prefetch plan |
//! | `GET /layers/{digest}` | a mounted lazy layer's whole-fetch progress (bytes present of its size) |
//!
//! The same routes can also be served over TCP ([`tcp`], `admin.tcp_address`, off by default),
//! where every request must carry the bearer token of `admin.token_file` ([`settings`]).
//! Design of the plan, the layer order and the TCP listener: decision 0022.
//!
//! [`AdminClient`] is the client `augurctl` uses.
//!
//! Bad input gets a 4xx answer whose body is `{"error": "..."}` saying what to change. Handlers
//! that touch the disk run on the blocking pool. Why HTTP and not gRPC: operators can use `curl
//! --unix-socket` on it, and the dashboard (issue 6) is served from the same router.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::cache::{CacheStatus, Evicted};

use crate::lazy::LazyLayers;
use crate::prefetch::Prefetcher;
use crate::trace::Recorder;
pub use client::{AdminClient, ClientError};

/// What the handlers reach.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The lazy-pulling subsystem (and its cache), if enabled.
    pub lazy: Option<Arc<LazyLayers>>,
    /// The access trace recorder, if traces are recorded.
    pub trace: Option<Arc<Recorder>>,
    /// The prefetcher and its models, if prefetching runs.
    pub prefetch: Option<Prefetcher>,
    /// When the daemon started serving (for `uptime_s`).
    pub started: std::time::Instant,
}

/// Why a request was refused. Each becomes a status code and `{"error": message}`.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request is malformed or its values are out of range (400).
    #[error("{0}")]
    BadRequest(String),
    /// The feature is turned off in the config (409).
    #[error("{0}")]
    Disabled(&'static str),
    /// No such path (404).
    #[error("no such endpoint: {0}")]
    NotFound(String),
    /// Nothing to answer with yet (404).
    #[error("{0}")]
    Empty(String),
    /// The request conflicts with the daemon's state or settings (409).
    #[error("{0}")]
    Conflict(String),
    /// The path exists, not with this method (405).
    #[error("method not allowed: {0} (see the table in docs/operations.md)")]
    MethodNotAllowed(String),
    /// The registry refused or failed (502), with its error.
    #[error("{0}")]
    BadGateway(String),
    /// A bug or a panic in a handler (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let code = match self {
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Disabled(_) | AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::NotFound(_) | AdminError::Empty(_) => StatusCode::NOT_FOUND,
            AdminError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            AdminError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = Json(serde_json::json!({ "error": self.to_string() }));
        (code, body).into_response()
    }
}

/// A JSON body whose rejection (bad JSON, wrong fields) is an [`AdminError`] with the parser's
/// message, so every 4xx has the same shape.
struct Body<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = AdminError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AdminError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(e @ JsonRejection::MissingJsonContentType(_)) => Err(AdminError::BadRequest(
                format!("{e}: send the body with Content-Type: application/json"),
            )),
            Err(e) => Err(AdminError::BadRequest(e.body_text())),
        }
    }
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/cache/status", get(cache_status))
        .route("/cache/evict", post(cache_evict))
        .route("/cache/thresholds", put(cache_thresholds))
        .route("/traces", get(traces::list))
        .route("/traces/export", get(traces::export))
        .route("/status", get(models::status))
        .route("/models/reload", post(models::reload))
        .route("/predictions/{snapshot}", get(models::predictions))
        .route("/prefetch/layer/{digest}", post(layers::prefetch))
        .route("/layers/{digest}", get(layers::progress))
        .route("/manifest/parse", post(manifest::parse))
        .fallback(|req: Request| async move {
            AdminError::NotFound(format!("{} {}", req.method(), req.uri().path()))
        })
        .method_not_allowed_fallback(|req: Request| async move {
            AdminError::MethodNotAllowed(format!("{} {}", req.method(), req.uri().path()))
        })
        .with_state(state)
}

/// `GET /health`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Health {
    /// Always `ok` when the daemon answers.
    pub status: String,
    /// The daemon's version.
    pub version: String,
    /// Whether lazy pulling is enabled.
    pub lazy: bool,
}

async fn health(State(s): State<AdminState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        lazy: s.lazy.is_some(),
    })
}

fn lazy(s: &AdminState) -> Result<Arc<LazyLayers>, AdminError> {
    s.lazy.clone().ok_or(AdminError::Disabled(
        "lazy pulling is disabled (remote.enable = false), so there is no chunk cache",
    ))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AdminError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AdminError::Internal(e.to_string()))
}

async fn cache_status(State(s): State<AdminState>) -> Result<Json<CacheStatus>, AdminError> {
    let lazy = lazy(&s)?;
    Ok(Json(blocking(move || lazy.cache().status()).await?))
}

/// `POST /cache/evict` body.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvictRequest {
    /// `unreferenced` (chunks of removed images; the default) or `all`.
    #[serde(default)]
    pub scope: Option<String>,
}

async fn cache_evict(
    State(s): State<AdminState>,
    Body(req): Body<EvictRequest>,
) -> Result<Json<Evicted>, AdminError> {
    let lazy = lazy(&s)?;
    let all = match req.scope.as_deref().unwrap_or("unreferenced") {
        "unreferenced" => false,
        "all" => true,
        other => {
            return Err(AdminError::BadRequest(format!(
                "scope {other:?}: use \"unreferenced\" (chunks no mounted layer uses) or \"all\""
            )));
        }
    };
    let evicted = blocking(move || {
        if all {
            lazy.cache().evict_all()
        } else {
            lazy.cache().evict_unreferenced()
        }
    })
    .await?;
    tracing::info!(
        chunks = evicted.chunks,
        all,
        "cache eviction requested over the admin API"
    );
    Ok(Json(evicted))
}

/// `PUT /cache/thresholds` body and answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Prefetches at least this likely go to RAM.
    pub ram: f32,
    /// Prefetches at least this likely go to NVMe.
    pub nvme: f32,
}

async fn cache_thresholds(
    State(s): State<AdminState>,
    Body(req): Body<Thresholds>,
) -> Result<Json<Thresholds>, AdminError> {
    let lazy = lazy(&s)?;
    lazy.cache()
        .set_thresholds(req.ram, req.nvme)
        .map_err(|e| AdminError::BadRequest(e.to_string()))?;
    tracing::info!(
        ram = req.ram,
        nvme = req.nvme,
        "cache thresholds changed over the admin API"
    );
    let (ram, nvme) = lazy.cache().thresholds();
    Ok(Json(Thresholds { ram, nvme }))
}

pub mod client;
pub mod layers;
pub mod manifest;
pub mod models;
pub mod settings;
pub mod tcp;
pub mod traces;

#[cfg(test)]
mod models_tests;
#[cfg(test)]
mod tests;
