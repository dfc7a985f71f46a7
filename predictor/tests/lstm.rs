//! The ONNX LSTM end to end: `onnx-models/train.py` trains a small model on synthetic traces
//! exported as JSON Lines, ONNX Runtime (the library `onnx-models/setup.sh` put in the test
//! cache) loads and validates it, and the evaluator runs it beside replay and Markov. Also: the
//! trainer's own Python tests, models refused with the check that failed, hot swaps, and a
//! missing or foreign runtime library as an error rather than a crash.
//!
//! Needs the venv and the library from `onnx-models/setup.sh` (run by
//! `integration-tests/scripts/deps.sh` and so by `./test.sh`); a test fails, saying that command,
//! if they are missing. ONNX Runtime loads once per process, and nextest (the project's runner)
//! runs each test in a process of its own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use augur_predictor::eval::{self, EvalOptions, NetworkProfile};
use augur_predictor::lstm::{Engine, LoadedModel, LstmError, LstmFactory};
use augur_predictor::synth::{Program, RunStyle};
use augur_predictor::trace::jsonl;
use augur_predictor::{Lstm, LstmConfig, Predictor, RunContext, RunId, Trace};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cache() -> PathBuf {
    augur_predictor::lstm::runtime::test_cache()
}

fn need(path: PathBuf, what: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{what} not found at {}: run `bash onnx-models/setup.sh` (integration-tests/scripts/deps.sh runs it)",
        path.display()
    );
    path
}

fn python() -> PathBuf {
    need(cache().join("venv-onnx/bin/python"), "the trainer's venv")
}

fn ort_lib() -> PathBuf {
    need(
        augur_predictor::lstm::runtime::test_library(),
        "the ONNX Runtime library",
    )
}

const IMAGE: &str = "127.0.0.1:5000/python:esgz";

fn program() -> Program {
    Program::new(IMAGE, 40, &[30; 4], 7)
}

fn runs(prog: &Program, args: &[usize], per_arg: u64, seed: u64) -> Vec<Trace> {
    let style = RunStyle {
        gap_us: 10_000,
        ..RunStyle::default()
    };
    args.iter()
        .flat_map(|&a| (0..per_arg).map(move |r| (a, seed + 10 * a as u64 + r)))
        .map(|(a, s)| prog.run(a, &style, s))
        .collect()
}

fn export(traces: &[Trace], dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (i, trace) in traces.iter().enumerate() {
        let path = dir.join(format!("{i:03}.jsonl"));
        let mut file = std::fs::File::create(&path).unwrap();
        jsonl::write_trace(trace, &mut file, &path).unwrap();
    }
}

/// Trains a small model on `traces` into `out` with train.py.
fn train(traces: &Path, out: &Path, seed: u32) {
    let status = Command::new(python())
        .arg(repo().join("onnx-models/train.py"))
        .arg(traces)
        .arg("--out")
        .arg(out)
        .args([
            "--embed", "16", "--hidden", "32", "--window", "16", "--epochs", "80",
        ])
        .args([
            "--batch",
            "16",
            "--seed",
            &seed.to_string(),
            "--label",
            "test",
            "--quiet",
        ])
        .status()
        .expect("run train.py");
    assert!(status.success(), "train.py failed: {status}");
}

/// A model trained on three runs of each of four arguments.
fn trained(dir: &Path) -> (PathBuf, Vec<Trace>) {
    let train_set = runs(&program(), &[0, 1, 2, 3], 3, 0);
    export(&train_set, &dir.join("traces"));
    let model = dir.join("model");
    train(&dir.join("traces"), &model, 1);
    (model, train_set)
}

#[test]
fn the_trainers_own_tests_pass() {
    let out = Command::new(python())
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(repo().join("onnx-models/tests"))
        .output()
        .expect("run python");
    let text = String::from_utf8_lossy(&out.stderr);
    println!("{text}");
    assert!(out.status.success(), "the trainer's tests failed:\n{text}");
    assert!(text.contains("Ran 9 tests"), "{text}");
}

#[test]
fn a_trained_model_passes_validation_and_prefetches_in_the_evaluation() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, train_set) = trained(tmp.path());
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("meta.json")).unwrap()).unwrap();
    println!(
        "training loss per epoch: {}",
        meta["training"]["loss_per_epoch"]
    );
    let engine = Engine::start(LoadedModel::load(&model, &ort_lib()).unwrap()).unwrap();
    let info = engine.model();
    assert_eq!((info.label.as_str(), info.window), ("test", 16));
    assert_eq!(info.vocab, 2 + 40 + 4 * 30);

    // Held-out runs of the same arguments, and runs of the other program with new chunks.
    let mut test_set = runs(&program(), &[0, 1, 2, 3], 1, 500);
    test_set.extend(runs(
        &Program::new("127.0.0.1:5000/other:esgz", 20, &[10], 9),
        &[0],
        2,
        0,
    ));
    let factory = LstmFactory {
        engine: engine.clone(),
        folds: Vec::new(),
        config: LstmConfig {
            // Deterministic: the evaluation waits for every answer.
            timeout: Duration::from_secs(30),
            ..LstmConfig::default()
        },
    };
    let opts = EvalOptions {
        network: NetworkProfile::REGIONAL,
        threshold: 0.5,
        ..EvalOptions::default()
    };
    let report = eval::run_traces(&train_set, &test_set, &opts, &[&factory]).unwrap();
    println!("{}", report.to_markdown());
    let latency = engine.latency();
    println!("LSTM latency: {latency:?}");

    let seen = "seen image, seen workload";
    let row = |group: &str, model: &str| report.row(group, model).unwrap().clone();
    let (lstm, none) = (row(seen, "lstm"), row(seen, "none"));
    assert_eq!(none.recall, 0.0);
    // Better than no prefetch on runs like those it learned; how much better is reported,
    // not asserted (docs/decisions/0014-onnx-lstm.md has the figures).
    assert!(
        lstm.recall > 0.2,
        "recall {} on runs like its training runs",
        lstm.recall
    );
    assert!(lstm.stall_ms_per_run < none.stall_ms_per_run);
    // A new image's chunks are outside the vocabulary: nothing to say, nothing wasted.
    assert_eq!(row("new image", "lstm").prefetched, 0);
    assert!(latency.step.count > 0 && latency.errors == 0);
}

#[test]
fn predictions_are_ranked_fresh_and_never_name_chunks_already_read() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, train_set) = trained(tmp.path());
    let mut lstm = Lstm::load(&model, &ort_lib(), LstmConfig::default()).unwrap();
    let trace = &train_set[0];
    let run = RunId(3);
    lstm.start_run(run, &RunContext::from_header(&trace.header));
    let first = trace.first_accesses();
    // Before any read: the start token alone predicts the program's first chunk.
    let at_start = lstm.predict(run, 8);
    assert!(
        at_start.iter().any(|p| p.chunk == first[0].chunk),
        "{at_start:?}"
    );
    for access in &first[..20] {
        lstm.observe(run, access);
    }
    let preds = lstm.predict(run, 8);
    assert!(!preds.is_empty() && preds.len() <= 8);
    assert!(
        preds
            .windows(2)
            .all(|w| w[0].probability >= w[1].probability)
    );
    assert!(
        preds
            .iter()
            .all(|p| !first[..20].iter().any(|a| a.chunk == p.chunk))
    );
    let next: Vec<_> = first[20..28].iter().map(|a| a.chunk).collect();
    assert!(
        next.contains(&preds[0].chunk),
        "top prediction {:?} is not among the next 8",
        preds[0]
    );
    // Expected times grow with steps at the run's own pace (10 ms between new chunks).
    assert!(
        preds
            .iter()
            .all(|p| p.expected_in >= Duration::from_millis(4))
    );
    // Unknown runs and max 0 get nothing; finishing forgets the run.
    assert!(lstm.predict(RunId(99), 8).is_empty() && lstm.predict(run, 0).is_empty());
    lstm.finish_run(run, None);
    assert!(lstm.predict(run, 8).is_empty());
    // The learned pace survives save and load.
    let state = lstm.save_state().unwrap();
    let mut other = Lstm::new(lstm.engine().clone(), LstmConfig::default());
    other.load_state(&state).unwrap();
    assert_eq!(other.save_state().unwrap(), state);
    assert!(other.load_state(b"{}").is_err());
    // The same reads in a run of an image it was not trained on get nothing; under its own
    // repository and tag from another registry, the same answer.
    for (id, image, speaks) in [
        (RunId(4), "127.0.0.1:5000/other:esgz", false),
        (RunId(5), "mirror.example.com/python:esgz", true),
    ] {
        let ctx = RunContext {
            image: image.to_owned(),
            ..RunContext::from_header(&trace.header)
        };
        lstm.start_run(id, &ctx);
        for access in &first[..20] {
            lstm.observe(id, access);
        }
        assert_eq!(!lstm.predict(id, 8).is_empty(), speaks, "{image}");
    }
}

fn refused(dir: &Path) -> String {
    match LoadedModel::load(dir, &ort_lib()) {
        Ok(_) => panic!("{} was accepted", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Rewrites `file` in a copy of `model` and (if `rehash`) its hash in meta.json.
fn tampered(model: &Path, out: &Path, file: &str, edit: impl Fn(&str) -> String, rehash: bool) {
    copy_dir(model, out);
    let path = out.join(file);
    let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
    let new = edit(&text);
    assert_ne!(new, text, "the edit of {file} changed nothing");
    std::fs::write(&path, &new).unwrap();
    if rehash {
        use sha2::Digest;
        let old = hex(&sha2::Sha256::digest(text.as_bytes()));
        let fresh = hex(&sha2::Sha256::digest(new.as_bytes()));
        let meta = std::fs::read_to_string(out.join("meta.json")).unwrap();
        std::fs::write(out.join("meta.json"), meta.replace(&old, &fresh)).unwrap();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn damaged_models_are_refused_with_the_check_that_failed_and_swaps_keep_the_old_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, _) = trained(tmp.path());
    let t = tmp.path();
    // A golden logit changed (and its hash updated): the graph no longer gives it.
    tampered(
        &model,
        &t.join("golden"),
        "golden.json",
        |s| s.replacen("\"logit\": ", "\"logit\": 1", 1),
        true,
    );
    // model.onnx changed behind meta.json's back.
    tampered(
        &model,
        &t.join("hash"),
        "model.onnx",
        |s| s.replacen("augur", "AUGUR", 1),
        false,
    );
    // A newer format, another vocabulary size.
    tampered(
        &model,
        &t.join("version"),
        "meta.json",
        |s| s.replace("\"format_version\": 1", "\"format_version\": 2"),
        false,
    );
    tampered(
        &model,
        &t.join("vocab"),
        "meta.json",
        |s| s.replace("\"size\": 162", "\"size\": 163"),
        false,
    );
    for (dir, check) in [
        ("golden", "refused: golden case 0: token"),
        ("hash", "refused: file hashes: model.onnx is sha256:"),
        ("version", "refused: meta.json: format version 2"),
        ("vocab", "refused: meta.json: inputs/outputs must be"),
    ] {
        let err = refused(&t.join(dir));
        assert!(err.contains(check), "{dir}: {err:?} should say {check:?}");
    }
    std::fs::remove_file(t.join("hash/vocab.json")).unwrap();
    assert!(refused(&t.join("hash")).contains("cannot read"));

    // Hot swap: a refused model leaves the current one serving; a valid one replaces it.
    let engine = Engine::start(LoadedModel::load(&model, &ort_lib()).unwrap()).unwrap();
    let before = engine.generation();
    assert!(engine.reload(&t.join("golden"), &ort_lib()).is_err());
    assert_eq!(
        (engine.generation(), engine.model().dir),
        (before, model.clone())
    );
    train(&tmp.path().join("traces"), &t.join("second"), 2);
    let info = engine.reload(&t.join("second"), &ort_lib()).unwrap();
    assert_eq!(
        (engine.generation(), info.dir),
        (before + 1, t.join("second"))
    );
}

#[test]
fn a_missing_or_foreign_runtime_library_is_an_error_not_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, _) = trained(tmp.path());
    let missing = Lstm::load(
        &model,
        Path::new("/nonexistent/libonnxruntime.so.1.31.1"),
        LstmConfig::default(),
    );
    assert!(
        matches!(missing, Err(LstmError::LibraryMissing { .. })),
        "{missing:?}"
    );
    // A shared library that is not ONNX Runtime, then a file that is no library at all.
    let foreign = Lstm::load(
        &model,
        Path::new("/lib/x86_64-linux-gnu/libz.so.1"),
        LstmConfig::default(),
    );
    let text = foreign.as_ref().map(|_| ()).unwrap_err().to_string();
    assert!(text.contains("does not export `OrtGetApiBase`"), "{text}");
    let junk = Lstm::load(&model, &model.join("vocab.json"), LstmConfig::default());
    assert!(matches!(junk, Err(LstmError::Library { .. })), "{junk:?}");
    // The real one still loads afterwards, and is then the process's library.
    Lstm::load(&model, &ort_lib(), LstmConfig::default()).unwrap();
    let other = Lstm::load(
        &model,
        Path::new("/lib/x86_64-linux-gnu/libz.so.1"),
        LstmConfig::default(),
    );
    assert!(
        matches!(other, Err(LstmError::AlreadyLoaded { .. })),
        "{other:?}"
    );
}

#[test]
fn the_shipped_model_passes_validation_and_says_it_is_synthetic() {
    let dir = repo().join("onnx-models/synthetic-v0");
    let model = LoadedModel::load(&dir, &ort_lib()).unwrap();
    let meta = &model.files.meta;
    assert!(meta.label.starts_with("SYNTHETIC"), "{:?}", meta.label);
    assert_eq!((meta.window, model.files.vocab.len()), (32, 2_792));
}
