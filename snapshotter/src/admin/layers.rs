//! The layer side of the admin API: `POST /prefetch/layer/{digest}` (fetch a mounted lazy layer
//! whole now, in the background) and `GET /layers/{digest}` (how far that fetch is, what
//! `augurctl prefetch layer --wait` polls).
//!
//! The fetch is the layer's ordinary background fetch ([`crate::lazy::background`]) told not to
//! wait for quiet: one path for whole-layer fetches, demand reads still first, and a layer too
//! large for the tier that keeps whole layers is refused as the mount refuses it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{AdminError, AdminState, blocking, lazy};
use crate::lazy::LazyError;
use crate::lazy::progress::{FetchNow, LayerProgress};

/// `POST /prefetch/layer/{digest}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefetchLayer {
    /// `queued` (202: the fetch runs now) or `complete` (200: nothing to fetch).
    pub status: String,
    /// The layer's progress when asked.
    pub layer: LayerProgress,
}

/// `POST /prefetch/layer/{digest}`.
pub async fn prefetch(
    State(s): State<AdminState>,
    Path(digest): Path<String>,
) -> Result<(StatusCode, Json<PrefetchLayer>), AdminError> {
    check_digest(&digest)?;
    let lazy = lazy(&s)?;
    let done = blocking(move || lazy.fetch_now(&digest)).await?;
    match done {
        Ok(FetchNow::Complete(layer)) => Ok((
            StatusCode::OK,
            Json(PrefetchLayer {
                status: "complete".into(),
                layer,
            }),
        )),
        Ok(FetchNow::Queued(layer)) => Ok((
            StatusCode::ACCEPTED,
            Json(PrefetchLayer {
                status: "queued".into(),
                layer,
            }),
        )),
        Err(e @ LazyError::NotMounted(_)) => Err(AdminError::Empty(e.to_string())),
        Err(e @ LazyError::TooLarge { .. }) => Err(AdminError::Conflict(e.to_string())),
        Err(e) => Err(AdminError::Internal(e.to_string())),
    }
}

/// `GET /layers/{digest}`.
pub async fn progress(
    State(s): State<AdminState>,
    Path(digest): Path<String>,
) -> Result<Json<LayerProgress>, AdminError> {
    check_digest(&digest)?;
    let lazy = lazy(&s)?;
    let found = blocking(move || lazy.layer_progress(&digest).ok_or(digest)).await?;
    found
        .map(Json)
        .map_err(|digest| AdminError::Empty(LazyError::NotMounted(digest).to_string()))
}

/// Accepts `sha256:<64 lowercase hex>`, the digests containerd and registries give layers.
pub(super) fn check_digest(digest: &str) -> Result<(), AdminError> {
    let ok = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if ok {
        Ok(())
    } else {
        Err(AdminError::BadRequest(format!(
            "{digest:?} is not a layer digest: give sha256:<64 lowercase hex digits>, as \
             `ctr images inspect` or the image's manifest lists them"
        )))
    }
}
