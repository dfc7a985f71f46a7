//! `POST /models/reload`, `GET /predictions/{snapshot}` and `GET /status`, called in-process
//! with a real prefetcher (and ONNX Runtime for the LSTM; `onnx-models/setup.sh` installs it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::{Method, StatusCode};

use super::tests::{call, lazy_in, state};
use super::*;
use crate::prefetch::{Parts, PredictorSettings, PrefetchSettings};

fn ort_library() -> PathBuf {
    let library = augur_predictor::lstm::runtime::test_library();
    assert!(
        library.exists(),
        "ONNX Runtime not found at {}: run `bash onnx-models/setup.sh` \
         (integration-tests/scripts/deps.sh runs it)",
        library.display()
    );
    library
}

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../onnx-models")
        .join(name)
        .canonicalize()
        .unwrap()
}

/// A prefetcher over `lazy`, started without an LSTM.
fn prefetcher(lazy: &LazyLayers, state_dir: &Path) -> Prefetcher {
    let settings = PrefetchSettings {
        enabled: true,
        workers: 1,
        max_bandwidth: 0,
        queue_max: 64,
        threshold: 0.5,
        threshold_min: 0.0,
        threshold_max: 1.0,
        adapt_interval: std::time::Duration::from_secs(3600),
    };
    let predictor = PredictorSettings {
        model_dir: None,
        model_dir_is_default: false,
        onnxruntime: Some(ort_library()),
        state_dir: state_dir.to_path_buf(),
        models: crate::prefetch::settings::ModelKind::ALL.to_vec(),
    };
    let parts = Parts {
        cache: Arc::clone(lazy.cache()),
        activity: Arc::clone(lazy.activity()),
        locator: Arc::clone(lazy.locator()),
    };
    Prefetcher::start(&settings, &predictor, &parts).unwrap()
}

fn error(body: &serde_json::Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_is_loaded_while_running_and_a_damaged_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lazy = lazy_in(dir.path());
    let p = prefetcher(&lazy, &dir.path().join("predictor"));
    assert!(p.model().is_none(), "started without an LSTM");
    let app = router(AdminState {
        lazy: Some(lazy),
        prefetch: Some(p.clone()),
        ..state()
    });

    // No directory given and none configured; a relative one; bad JSON.
    let (code, body) = call(&app, Method::POST, "/models/reload", None).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).contains("predictor.model_dir"), "{body}");
    let (code, body) = call(
        &app,
        Method::POST,
        "/models/reload",
        Some(r#"{"dir":"tools-v1"}"#),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).contains("absolute"), "{body}");
    let (code, body) = call(
        &app,
        Method::POST,
        "/models/reload",
        Some(r#"{"dri":"/x"}"#),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).contains("dri"), "{body}");

    // The first model joins the running ensemble.
    let tools = shipped("tools-v1");
    let req = serde_json::json!({ "dir": tools }).to_string();
    let (code, body) = call(&app, Method::POST, "/models/reload", Some(&req)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["dir"], serde_json::json!(tools));
    let label = body["label"].as_str().unwrap().to_owned();
    assert!(!label.is_empty());
    assert!(p.stats().lstm, "the LSTM is among the models now");

    // A damaged copy is refused, naming the failed check, and the model stays.
    let damaged = dir.path().join("damaged");
    std::fs::create_dir(&damaged).unwrap();
    for f in std::fs::read_dir(&tools).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, damaged.join(f.file_name().unwrap())).unwrap();
    }
    let mut onnx = std::fs::read(damaged.join("model.onnx")).unwrap();
    onnx.truncate(onnx.len() / 2);
    std::fs::write(damaged.join("model.onnx"), onnx).unwrap();
    let req = serde_json::json!({ "dir": damaged }).to_string();
    let (code, body) = call(&app, Method::POST, "/models/reload", Some(&req)).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).contains("model.onnx"), "{body}");
    assert!(error(&body).contains("current model is kept"), "{body}");
    assert_eq!(p.model().unwrap().dir, tools);

    // Another model swaps in through the running engine.
    let synthetic = shipped("synthetic-v0");
    let req = serde_json::json!({ "dir": synthetic }).to_string();
    let (code, body) = call(&app, Method::POST, "/models/reload", Some(&req)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(p.model().unwrap().dir, synthetic);

    let (code, body) = call(&app, Method::GET, "/status", None).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["model"]["dir"], serde_json::json!(synthetic));
    assert_eq!(body["lazy_layers"], 0);
    assert!(body["prefetch"]["lstm"].as_bool().unwrap());
    assert_eq!(body["inference"]["steps"], 0, "no prediction yet: {body}");
    assert_eq!(
        body["cache"]["tiers"].as_array().unwrap().len(),
        3,
        "{body}"
    );
    assert!(body["traces"].is_null());
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictions_name_an_active_run_and_refuse_others() {
    use crate::trace::runs::RunStart;
    use crate::trace::{Recorder, TraceSettings};

    let off = router(state());
    let (code, body) = call(&off, Method::POST, "/models/reload", None).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert!(error(&body).contains("prefetch.enabled"), "{body}");
    let (code, body) = call(&off, Method::GET, "/predictions/c1", None).await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    let (code, body) = call(&off, Method::GET, "/status", None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        body["prefetch"].is_null() && body["cache"].is_null() && body["inference"].is_null(),
        "{body}"
    );

    let dir = tempfile::tempdir().unwrap();
    let lazy = lazy_in(dir.path());
    let p = prefetcher(&lazy, &dir.path().join("predictor"));
    let recorder = Recorder::start(&dir.path().join("traces"), &TraceSettings::default()).unwrap();
    recorder.add_observer(Arc::new(p.clone()));
    let app = router(AdminState {
        lazy: Some(lazy),
        trace: Some(Arc::clone(&recorder)),
        prefetch: Some(p.clone()),
        ..state()
    });
    let (code, body) = call(&app, Method::GET, "/predictions/no-such-key", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert!(error(&body).contains("no-such-key"), "{body}");

    recorder.run_started(RunStart {
        key: "c1".into(),
        image: "example.com/app:1".into(),
        layers: vec![],
        layout: Default::default(),
        labels: Default::default(),
        started: std::time::Instant::now(),
        started_unix_ms: 0,
    });
    let (code, body) = call(&app, Method::GET, "/predictions/c1", None).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["snapshot"], "c1");
    assert_eq!(body["threshold"], 0.5);
    assert!(
        body["predictions"].as_array().unwrap().is_empty(),
        "nothing read yet"
    );

    recorder.snapshot_removed("c1");
    let (code, _) = call(&app, Method::GET, "/predictions/c1", None).await;
    assert_eq!(
        code,
        StatusCode::NOT_FOUND,
        "a removed snapshot's run is over"
    );
    recorder.shutdown();
    p.stop();
}
