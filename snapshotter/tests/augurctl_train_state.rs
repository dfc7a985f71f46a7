//! `augurctl predictor train-state` on a recorded run of a real program
//! (`onnx-models/traces/tools-v1.jsonl`): the state file it writes is the one the daemon's
//! `load_models` loads, under the re-keyed image reference, and makes it predict that run's
//! chunks. No daemon, no root.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use augur_predictor::trace::jsonl;
use augur_predictor::{ChunkId, Predictor, RunContext, RunId, Trace};
use augur_snapshotter::prefetch::PredictorSettings;
use augur_snapshotter::prefetch::predict::load_models;
use augur_snapshotter::prefetch::settings::ModelKind;

const IMAGE: &str = "127.0.0.1:5003/tools:esgz";

/// The first recorded run of the tools traces, written alone to `dir/run.jsonl`.
fn one_run(dir: &Path) -> (Trace, PathBuf) {
    let all =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../onnx-models/traces/tools-v1.jsonl");
    let trace = jsonl::read_file(&all).unwrap().remove(0);
    let path = dir.join("run.jsonl");
    let mut out = std::fs::File::create(&path).unwrap();
    jsonl::write_trace(&trace, &mut out, &path).unwrap();
    (trace, path)
}

/// What the daemon's replay and Markov, with state from `state_dir`, predict for a new run of
/// `trace` (as `IMAGE`) once they saw its first 8 chunks.
fn daemon_predicts(state_dir: &Path, trace: &Trace) -> Vec<ChunkId> {
    daemon_with_predicts(&[ModelKind::Replay, ModelKind::Markov], state_dir, trace)
}

/// [`daemon_predicts`] with the daemon's `models`.
fn daemon_with_predicts(models: &[ModelKind], state_dir: &Path, trace: &Trace) -> Vec<ChunkId> {
    let mut models = load_models(&PredictorSettings {
        model_dir: None,
        model_dir_is_default: false,
        onnxruntime: None,
        state_dir: state_dir.to_path_buf(),
        models: models.to_vec(),
    });
    let ensemble = models.ensemble_mut();
    let mut ctx = RunContext::from_header(&trace.header);
    ctx.image = IMAGE.to_owned();
    ensemble.start_run(RunId(1), &ctx);
    for a in trace.first_accesses().iter().take(8) {
        ensemble.observe(RunId(1), a);
    }
    ensemble
        .predict(RunId(1), 64)
        .into_iter()
        .filter(|p| p.probability >= 0.3)
        .map(|p| p.chunk)
        .collect()
}

#[test]
fn the_state_written_is_loaded_by_the_daemon_and_predicts_the_trained_run() {
    let dir = tempfile::tempdir().unwrap();
    let (trace, traces) = one_run(dir.path());
    let state = dir.path().join("predictor");
    let out = Command::new(env!("CARGO_BIN_EXE_augurctl"))
        .args([
            "predictor",
            "train-state",
            "--models",
            "replay,markov",
            "--image",
            IMAGE,
        ])
        .arg("--traces")
        .arg(&traces)
        .arg("--out")
        .arg(&state)
        .output()
        .expect("run augurctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(state.join("replay+markov.state.gz").exists());

    let untrained = daemon_predicts(&dir.path().join("empty"), &trace);
    assert!(
        untrained.is_empty(),
        "untrained models predicted {untrained:?}"
    );
    let predicted = daemon_predicts(&state, &trace);
    let read: HashSet<ChunkId> = trace
        .first_accesses()
        .iter()
        .skip(8)
        .map(|a| a.chunk)
        .collect();
    let right = predicted.iter().filter(|c| read.contains(c)).count();
    assert!(
        right >= 32.min(read.len()),
        "{right} of {} predictions are chunks the run read next",
        predicted.len()
    );

    // A node upgraded to a build with continuation keeps what replay and Markov learned: the
    // set with it has no file yet, so the one saved without it is loaded.
    let upgraded = [
        ModelKind::Replay,
        ModelKind::Markov,
        ModelKind::Continuation,
    ];
    assert!(!state.join("replay+markov+continuation.state.gz").exists());
    let after_upgrade = daemon_with_predicts(&upgraded, &state, &trace);
    let right = after_upgrade.iter().filter(|c| read.contains(c)).count();
    assert!(
        right >= 32.min(read.len()),
        "after the upgrade {right} of {} predictions are chunks the run read next",
        after_upgrade.len()
    );
}

#[test]
fn lstm_without_a_model_and_unknown_models_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, traces) = one_run(dir.path());
    for (models, says) in [
        ("replay,lstm", "--model-dir"),
        ("replay,mrkov", "unknown model"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_augurctl"))
            .args(["predictor", "train-state", "--models", models, "--traces"])
            .arg(&traces)
            .arg("--out")
            .arg(dir.path().join("out"))
            .env_remove("AUGUR_ORT_LIB")
            .output()
            .expect("run augurctl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(says),
            "{models}: {stderr}"
        );
    }
    assert!(
        !dir.path().join("out").exists(),
        "nothing is written on error"
    );
}

/// The test cache's ONNX Runtime library (as `setup.sh` extracts it), or `$AUGUR_ORT_LIB`.
fn ort_library() -> PathBuf {
    let library = augur_predictor::lstm::runtime::test_library();
    assert!(
        library.exists(),
        "ONNX Runtime not found at {}: run `bash onnx-models/setup.sh`",
        library.display()
    );
    library
}

/// A copy of the shipped `tools-v1` in `dir` whose `meta.json` names `run_keys` as its
/// training runs (`meta.json` is not among the hashed files).
fn tools_v1_trained_on(dir: &Path, run_keys: &[String]) {
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../onnx-models/tools-v1");
    std::fs::create_dir_all(dir).unwrap();
    for file in ["model.onnx", "vocab.json", "golden.json"] {
        std::fs::copy(shipped.join(file), dir.join(file)).unwrap();
    }
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shipped.join("meta.json")).unwrap()).unwrap();
    meta["training"]["run_keys"] = serde_json::json!(run_keys);
    std::fs::write(dir.join("meta.json"), serde_json::to_vec(&meta).unwrap()).unwrap();
}

/// `train-state --models lstm` with the model in `model`; its stdout and stderr, and the
/// state file's bytes.
fn train_lstm_state(model: &Path, traces: &Path, out: &Path) -> (String, Vec<u8>) {
    let run = Command::new(env!("CARGO_BIN_EXE_augurctl"))
        .args([
            "predictor",
            "train-state",
            "--models",
            "lstm",
            "--image",
            IMAGE,
        ])
        .arg("--model-dir")
        .arg(model)
        .arg("--onnxruntime-library")
        .arg(ort_library())
        .arg("--traces")
        .arg(traces)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run augurctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "{text}");
    (text, std::fs::read(out.join("lstm.state.gz")).unwrap())
}

#[test]
fn the_lstms_folds_answer_for_it_on_the_runs_it_was_trained_on() {
    let dir = tempfile::tempdir().unwrap();
    let (trace, traces) = one_run(dir.path());
    let key = format!("{} {}", trace.header.image, trace.header.started_unix_ms);
    let model = dir.path().join("model");
    tools_v1_trained_on(&model, &[key]);

    // Trained on the run, no folds: not asked, so nothing is calibrated.
    let (said, muted) = train_lstm_state(&model, &traces, &dir.path().join("muted"));
    assert!(!said.contains("folds"), "{said}");
    // A fold trained on other runs answers for it, and what it said is calibrated.
    tools_v1_trained_on(&model.join("folds/1"), &["elsewhere 1".to_owned()]);
    let (said, folded) = train_lstm_state(&model, &traces, &dir.path().join("folded"));
    assert!(
        said.contains("calibrated out of sample by its folds (1)"),
        "{said}"
    );
    assert_ne!(
        muted, folded,
        "the fold's forecasts changed the calibration"
    );
    // A fold trained on the same run is no better than the model: the state is as without.
    tools_v1_trained_on(
        &model.join("folds/1"),
        &[format!(
            "{} {}",
            trace.header.image, trace.header.started_unix_ms
        )],
    );
    let (_, same) = train_lstm_state(&model, &traces, &dir.path().join("same"));
    assert_eq!(muted, same);
}
