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

/// What the daemon's models, with state from `state_dir`, predict for a new run of `trace`
/// (as `IMAGE`) once they saw its first 8 chunks.
fn daemon_predicts(state_dir: &Path, trace: &Trace) -> Vec<ChunkId> {
    let mut models = load_models(&PredictorSettings {
        model_dir: None,
        model_dir_is_default: false,
        onnxruntime: None,
        state_dir: state_dir.to_path_buf(),
        models: vec![ModelKind::Replay, ModelKind::Markov],
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
