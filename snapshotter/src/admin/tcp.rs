//! The admin API's optional TCP listener (`admin.tcp_address`, off by default): the same routes
//! as the unix socket, each request required to carry `Authorization: Bearer <token>` with the
//! token of `admin.token_file`. For operators who reach the API from another host or a
//! container without the socket mounted; the unix socket stays the root-only way in.
//!
//! There is no TLS: bind it to loopback, or put it behind a TLS-terminating proxy, or the token
//! travels in clear. Tokens are compared in constant time (their SHA-256 digests, so neither
//! content nor length leaks through timing).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use sha2::{Digest, Sha256};

use super::settings::{AdminTcp, Token, load_token};
use super::{AdminState, router};
use crate::daemon::DaemonError;

/// The listener, bound, and the token it requires.
#[derive(Debug)]
pub struct Bound {
    listener: tokio::net::TcpListener,
    token: Token,
}

/// Loads the token (an error names `admin.token_file`) and binds `tcp.address` (an error names
/// `admin.tcp_address`), before the daemon says it is ready.
pub async fn bind(tcp: &AdminTcp) -> Result<Bound, DaemonError> {
    let path = tcp.token_file.clone();
    let token = tokio::task::spawn_blocking(move || load_token(&path))
        .await
        .map_err(DaemonError::Startup)??;
    let listener = tokio::net::TcpListener::bind(tcp.address)
        .await
        .map_err(|source| DaemonError::AdminTcp {
            address: tcp.address,
            source,
        })?;
    Ok(Bound { listener, token })
}

/// The admin routes behind the bearer-token check.
pub fn tcp_router(state: AdminState, token: Token) -> Router {
    let expected = Arc::new(Sha256::digest(&token.0));
    router(state).layer(axum::middleware::from_fn_with_state(
        expected,
        require_token,
    ))
}

/// Serves until `stop` turns true; a failure is logged, not fatal.
pub async fn serve(bound: Bound, state: AdminState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let address = bound.listener.local_addr().ok();
    tracing::info!(
        ?address,
        "admin API listening on TCP (bearer token required)"
    );
    let served = axum::serve(bound.listener, tcp_router(state, bound.token))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "admin API over TCP stopped");
    }
}

async fn require_token(
    State(expected): State<Arc<sha2::digest::Output<Sha256>>>,
    req: Request,
    next: Next,
) -> Response {
    match bearer(req.headers()) {
        Some(given) if same_digest(&Sha256::digest(given), &expected) => next.run(req).await,
        Some(_) => {
            unauthorized("wrong bearer token: send the token of the daemon's admin.token_file")
        }
        None => unauthorized(
            "send Authorization: Bearer <token>, with the token of the daemon's \
             admin.token_file (augurctl: --token-file or AUGUR_TOKEN_FILE)",
        ),
    }
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    (scheme.eq_ignore_ascii_case(b"bearer ") && !token.is_empty()).then_some(token.trim_ascii())
}

/// Equal digests, compared without an early exit.
fn same_digest(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized(message: &str) -> Response {
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"augur\""),
    );
    resp
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;

    async fn status_of(app: &Router, path: &str, auth: Option<&str>) -> (StatusCode, String) {
        let mut req = Request::builder().uri(path);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let code = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn only_requests_with_the_token_reach_the_routes() {
        let app = tcp_router(super::super::tests::state(), Token(b"t0ken".to_vec()));
        let ok = status_of(&app, "/health", Some("Bearer t0ken")).await;
        assert_eq!(ok.0, StatusCode::OK, "{}", ok.1);
        assert_eq!(
            status_of(&app, "/health", Some("bearer t0ken")).await.0,
            StatusCode::OK,
            "the scheme is case-insensitive"
        );
        let (code, body) = status_of(&app, "/health", None).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        assert!(body.contains("Authorization: Bearer"), "{body}");
        for wrong in [
            "Bearer t0ke",
            "Bearer t0kenn",
            "Basic dDBrZW4=",
            "Bearer ",
            "t0ken",
        ] {
            let (code, body) = status_of(&app, "/health", Some(wrong)).await;
            assert_eq!(code, StatusCode::UNAUTHORIZED, "{wrong}: {body}");
        }
        // Unknown paths are refused before they are looked up.
        let (code, _) = status_of(&app, "/nothing", None).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        let (code, _) = status_of(&app, "/nothing", Some("Bearer t0ken")).await;
        assert_eq!(code, StatusCode::NOT_FOUND);
    }
}
