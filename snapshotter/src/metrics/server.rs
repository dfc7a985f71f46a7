//! The metrics endpoint: HTTP/1.1 on `[metrics] address`, answering `GET /metrics` with the
//! text exposition of [`Metrics`], `GET /dashboard` with the live dashboard page and
//! `GET /dashboard/data` with the JSON it polls (see [`super::dashboard`]), and `GET /` with
//! pointers to them. Read-only, no
//! authentication (which is why the address is loopback unless `allow_remote` says otherwise).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
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
        .route("/dashboard", get(dashboard_page))
        .route("/dashboard/data", get(dashboard_data))
        .route("/", get(index))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: metrics are at /metrics, the dashboard at /dashboard\n",
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
    "augur-snapshotter: Prometheus metrics are at /metrics, the live dashboard at /dashboard\n"
}

async fn dashboard_page() -> Html<&'static str> {
    Html(super::dashboard::PAGE)
}

async fn dashboard_data(State(metrics): State<Arc<Metrics>>) -> Response {
    match tokio::task::spawn_blocking(move || metrics.dashboard_data()).await {
        Ok(data) => Json(data).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("dashboard data failed: {e}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port in use is an error naming the key to change; a free one serves every route.
    #[tokio::test]
    async fn a_taken_port_is_an_actionable_error_and_a_free_one_serves_every_route() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = listener.local_addr().unwrap();
        let err = bind(address).await.unwrap_err().to_string();
        assert!(err.contains("metrics.address"), "{err}");
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let served = tokio::spawn(serve(listener, Arc::new(Metrics::new()), stop_rx));
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(address).await.unwrap();
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let metrics = get("/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains(CONTENT_TYPE), "{metrics}");
        assert!(metrics.contains("augur_build_info{version="), "{metrics}");
        assert!(get("/").await.contains("/metrics"));
        let page = get("/dashboard").await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("text/html"), "{page}");
        assert!(page.contains("id=\"hit-ratio\""), "the page has its charts");
        assert!(
            !page.contains("src=") && !page.contains("<link") && !page.contains("@import"),
            "self-contained: loads nothing from elsewhere"
        );
        let data = get("/dashboard/data").await;
        assert!(data.starts_with("HTTP/1.1 200"), "{data}");
        assert!(data.contains("application/json"), "{data}");
        let body = data.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let json: serde_json::Value = serde_json::from_str(body).expect("JSON body");
        for key in [
            "unix_ms",
            "fetched_bytes",
            "layer_bytes",
            "saved_bytes",
            "registry_errors",
        ] {
            assert!(json[key].is_u64(), "{key} in {json}");
        }
        for tier in ["ram", "nvme", "hdd", "network"] {
            assert!(json["served_bytes"][tier].is_u64(), "{tier} in {json}");
        }
        assert!(json["prefetch"].is_null(), "no prefetcher here: {json}");
        assert_eq!(json["cold_starts"], serde_json::json!([]));
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        stop_tx.send(true).unwrap();
        served.await.unwrap();
    }
}
