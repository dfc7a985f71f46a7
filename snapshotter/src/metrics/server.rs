//! The metrics endpoint: HTTP/1.1 on `[metrics] address`, answering `GET /metrics` with the
//! text exposition of [`Metrics`] and `GET /` with a pointer to it. Read-only, no
//! authentication (which is why the address is loopback unless `allow_remote` says otherwise).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use super::{CONTENT_TYPE, Metrics};

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address could not be bound.
    #[error(
        "cannot listen for metrics on {address}: {source} (set metrics.address to a free port, or \"\" to turn the endpoint off)"
    )]
    Bind {
        /// The configured address.
        address: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Binds the endpoint's listener (done before the daemon reports ready, so a taken port stops
/// start-up with an error rather than a silently missing endpoint).
pub async fn bind(address: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| MetricsError::Bind { address, source })
}

/// The routes.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/", get(index))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: metrics are at /metrics\n",
            )
        })
        .with_state(metrics)
}

/// Serves until `stop` turns true; a failure is logged, not fatal (containerd's socket matters
/// more than the scraper's).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let served = axum::serve(listener, router(metrics))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "metrics endpoint stopped");
    }
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    match tokio::task::spawn_blocking(move || metrics.render()).await {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("metrics collection failed: {e}\n"),
        ),
    }
}

async fn index() -> &'static str {
    "augur-snapshotter: Prometheus metrics are at /metrics\n"
}
