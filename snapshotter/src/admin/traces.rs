//! `GET /traces` and `GET /traces/export`: the access traces the daemon kept. Both read the
//! trace directory on the blocking pool; the export is streamed, one run at a time, as the
//! JSON Lines documented in `docs/traces.md`.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{AdminError, AdminState, blocking};
use crate::trace::files::{self, TraceSummary};
use crate::trace::{Recorder, RecorderStats};

/// Runs buffered between the exporting thread and the HTTP connection.
const EXPORT_QUEUE: usize = 4;

/// `GET /traces`.
#[derive(Debug, Serialize, Deserialize)]
pub struct TraceList {
    /// Kept traces, oldest first.
    pub traces: Vec<TraceSummary>,
    /// The recorder's counters (drops, unattributed reads, active runs).
    pub recorder: RecorderStats,
}

fn recorder(s: &AdminState) -> Result<Arc<Recorder>, AdminError> {
    s.trace.clone().ok_or(AdminError::Disabled(
        "access traces are not recorded (trace.enabled = false, or remote.enable = false)",
    ))
}

/// `GET /traces`.
pub async fn list(State(s): State<AdminState>) -> Result<Json<TraceList>, AdminError> {
    let recorder = recorder(&s)?;
    let list = blocking(move || {
        files::list(recorder.dir()).map(|traces| TraceList {
            traces,
            recorder: recorder.stats(),
        })
    })
    .await?
    .map_err(|e| AdminError::Internal(e.to_string()))?;
    Ok(Json(list))
}

/// `GET /traces/export`: every kept trace as JSON Lines (404 if none is kept).
pub async fn export(State(s): State<AdminState>) -> Result<Response, AdminError> {
    let recorder = recorder(&s)?;
    let dir = recorder.dir().to_path_buf();
    let found = blocking(move || files::trace_files(&dir))
        .await?
        .map_err(|e| AdminError::Internal(e.to_string()))?;
    if found.is_empty() {
        return Err(AdminError::Empty(
            "no traces kept yet: a trace is written when a container that ran on lazily \
             mounted layers is removed (and read something)"
                .into(),
        ));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(EXPORT_QUEUE);
    tokio::task::spawn_blocking(move || {
        for path in found {
            let mut buf = Vec::new();
            let chunk = files::export(std::slice::from_ref(&path), &mut buf)
                .map(|_| Bytes::from(buf))
                .map_err(std::io::Error::other);
            let failed = chunk.is_err();
            // The client went away: stop reading traces.
            if tx.blocking_send(chunk).is_err() || failed {
                break;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(([(header::CONTENT_TYPE, "application/jsonl")], body).into_response())
}
