//! The admin routes, called in-process (no socket): status codes, bodies and error messages.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body as HttpBody;
use axum::http::{Method, Request, StatusCode};
use tower::ServiceExt;

use super::*;
use crate::cache::{CacheSettings, Policy};
use crate::lazy::LazyConfig;
use crate::registry::RegistryConfig;

pub(super) fn lazy_in(dir: &std::path::Path) -> Arc<LazyLayers> {
    let cfg = LazyConfig {
        fuse_threads: 1,
        read_deadline: Duration::from_secs(1),
        background_fetch: false,
        fetch_span: 1 << 20,
        background_idle: Duration::from_secs(2),
        require_toc_digest: true,
        registry: RegistryConfig::default(),
        cache: CacheSettings {
            ram_bytes: 1 << 20,
            nvme_path: dir.join("cache/chunks.nvme"),
            nvme_bytes: 1 << 20,
            hdd_path: dir.join("cache/spill"),
            hdd_bytes: 1 << 20,
            policy: Policy::Lru,
            ram_threshold: 0.8,
            nvme_threshold: 0.4,
            promote_after_hits: 2,
        },
        warmed_toc_bytes: 0,
    };
    Arc::new(LazyLayers::new(dir, cfg, tokio::runtime::Handle::current()).unwrap())
}

/// Nothing enabled; tests override the parts they need.
pub(super) fn state() -> AdminState {
    AdminState {
        lazy: None,
        trace: None,
        prefetch: None,
        started: std::time::Instant::now(),
    }
}

pub(super) async fn call(
    app: &Router,
    method: Method,
    path: &str,
    body: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder().method(method).uri(path);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(HttpBody::from(body.unwrap_or("").to_owned()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json)
}

#[tokio::test]
async fn health_answers_without_lazy_pulling() {
    let app = router(AdminState {
        lazy: None,
        trace: None,
        ..state()
    });
    let (code, body) = call(&app, Method::GET, "/health", None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["lazy"], false);
    let (code, body) = call(&app, Method::GET, "/cache/status", None).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert!(
        body["error"].as_str().unwrap().contains("remote.enable"),
        "{body}"
    );
}

#[tokio::test]
async fn cache_status_evict_and_thresholds() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(AdminState {
        lazy: Some(lazy_in(dir.path())),
        trace: None,
        ..state()
    });
    let (code, body) = call(&app, Method::GET, "/cache/status", None).await;
    assert_eq!(code, StatusCode::OK);
    let tiers: Vec<&str> = body["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tier"].as_str().unwrap())
        .collect();
    assert_eq!(tiers, ["ram", "nvme", "hdd"]);
    assert_eq!(body["tiers"][1]["budget_bytes"], 1 << 20);

    let (code, body) = call(&app, Method::POST, "/cache/evict", Some("{}")).await;
    assert_eq!((code, &body["chunks"]), (StatusCode::OK, &0.into()));
    let all = Some(r#"{"scope":"all"}"#);
    assert_eq!(
        call(&app, Method::POST, "/cache/evict", all).await.0,
        StatusCode::OK
    );

    let ok = Some(r#"{"ram":0.9,"nvme":0.2}"#);
    let (code, body) = call(&app, Method::PUT, "/cache/thresholds", ok).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (_, status) = call(&app, Method::GET, "/cache/status", None).await;
    assert!((status["ram_threshold"].as_f64().unwrap() - 0.9).abs() < 1e-6);
}

#[tokio::test]
async fn bad_input_gets_a_4xx_that_says_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(AdminState {
        lazy: Some(lazy_in(dir.path())),
        trace: None,
        ..state()
    });
    let cases: [(Method, &str, Option<&str>, StatusCode, &str); 6] = [
        (
            Method::POST,
            "/cache/evict",
            Some(r#"{"scope":"some"}"#),
            StatusCode::BAD_REQUEST,
            "unreferenced",
        ),
        (
            Method::POST,
            "/cache/evict",
            Some("{not json"),
            StatusCode::BAD_REQUEST,
            "JSON",
        ),
        (
            Method::POST,
            "/cache/evict",
            Some(r#"{"scop":"all"}"#),
            StatusCode::BAD_REQUEST,
            "scop",
        ),
        (
            Method::PUT,
            "/cache/thresholds",
            Some(r#"{"ram":0.1,"nvme":0.5}"#),
            StatusCode::BAD_REQUEST,
            "nvme_threshold <= ram_threshold",
        ),
        (
            Method::PUT,
            "/cache/thresholds",
            Some(r#"{"ram":0.5}"#),
            StatusCode::BAD_REQUEST,
            "nvme",
        ),
        (
            Method::GET,
            "/no/such/thing",
            None,
            StatusCode::NOT_FOUND,
            "/no/such/thing",
        ),
    ];
    for (method, path, body, want, mentions) in cases {
        let (code, answer) = call(&app, method.clone(), path, body).await;
        assert_eq!(code, want, "{method} {path} {body:?}: {answer}");
        let msg = answer["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains(mentions),
            "{method} {path}: {msg:?} should mention {mentions:?}"
        );
    }
    // A body without its content type is refused with advice.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/cache/evict")
        .body(HttpBody::from("{}"))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // The wrong method on a real path is a 405.
    let (code, body) = call(&app, Method::DELETE, "/cache/status", None).await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("DELETE /cache/status")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_are_listed_and_exported_and_their_absence_is_explained() {
    use crate::predictor::ChunkId;
    use crate::predictor::trace::{AccessSource, ChunkRecord, RunHeader, TraceBuilder};
    use crate::trace::{Recorder, TraceSettings, files};

    let off = router(AdminState {
        lazy: None,
        trace: None,
        ..state()
    });
    let (code, body) = call(&off, Method::GET, "/traces", None).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert!(
        body["error"].as_str().unwrap().contains("trace.enabled"),
        "{body}"
    );

    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::start(dir.path(), &TraceSettings::default()).unwrap();
    let app = router(AdminState {
        lazy: None,
        trace: Some(Arc::clone(&recorder)),
        ..state()
    });
    let (code, body) = call(&app, Method::GET, "/traces/export", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no traces kept yet"),
        "{body}"
    );

    let mut builder = TraceBuilder::new(RunHeader {
        image: "reg/app:1".into(),
        workload: "label:x".into(),
        layers: vec!["sha256:l".into()],
        started_unix_ms: 5,
        labels: Default::default(),
    });
    let chunk = ChunkRecord {
        digest: ChunkId([7; 32]),
        layer: 0,
        size: 4096,
        file: "usr/bin/app".into(),
        file_offset: 0,
    };
    builder.access(&chunk, 10, 0, 4096, AccessSource::Miss);
    files::write_trace(dir.path(), "0000000000005-000001", &builder.finish()).unwrap();

    let (code, body) = call(&app, Method::GET, "/traces", None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["traces"][0]["image"], "reg/app:1");
    assert_eq!(body["traces"][0]["bytes"], 4096);
    assert_eq!(body["recorder"]["dropped_events"], 0);

    let req = Request::builder()
        .uri("/traces/export")
        .body(HttpBody::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].contains(r#""type":"run""#) && lines[1].contains("usr/bin/app"));
    recorder.shutdown();
}

#[tokio::test]
async fn prefetch_layer_refuses_bad_digests_and_layers_not_mounted() {
    let dir = tempfile::tempdir().unwrap();
    let off = router(state());
    let digest = format!("sha256:{}", "ab".repeat(32));
    let (code, body) = call(
        &off,
        Method::POST,
        &format!("/prefetch/layer/{digest}"),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");

    let app = router(AdminState {
        lazy: Some(lazy_in(dir.path())),
        ..state()
    });
    for bad in ["sha256:abc", "md5:00", "SHA256:ABAB"] {
        for (method, path) in [
            (Method::POST, format!("/prefetch/layer/{bad}")),
            (Method::GET, format!("/layers/{bad}")),
        ] {
            let (code, body) = call(&app, method, &path, None).await;
            assert_eq!(code, StatusCode::BAD_REQUEST, "{path}: {body}");
            assert!(
                body["error"].as_str().unwrap().contains("sha256:<64"),
                "{body}"
            );
        }
    }
    let (code, body) = call(
        &app,
        Method::POST,
        &format!("/prefetch/layer/{digest}"),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains(&format!("no mounted lazy layer has digest {digest}")),
        "{body}"
    );
    let (code, _) = call(&app, Method::GET, &format!("/layers/{digest}"), None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _) = call(
        &app,
        Method::GET,
        &format!("/prefetch/layer/{digest}"),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn manifest_parse_refuses_bad_bodies_before_asking_a_registry() {
    let dir = tempfile::tempdir().unwrap();
    let body = Some(r#"{"image":"registry.example/app:1"}"#);
    let (code, _) = call(&router(state()), Method::POST, "/manifest/parse", body).await;
    assert_eq!(
        code,
        StatusCode::CONFLICT,
        "no lazy pulling, no registry client"
    );
    let app = router(AdminState {
        lazy: Some(lazy_in(dir.path())),
        ..state()
    });
    for (body, says) in [
        (r#"{"image":" "}"#, "image is empty"),
        (r#"{"image":"a/b:1","platform":"linux"}"#, "os/architecture"),
        (r#"{"image":"a/b:1","tag":"x"}"#, "unknown field `tag`"),
        (r#"{}"#, "missing field `image`"),
    ] {
        let (code, answer) = call(&app, Method::POST, "/manifest/parse", Some(body)).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(says), "{body}: {error}");
    }
}
