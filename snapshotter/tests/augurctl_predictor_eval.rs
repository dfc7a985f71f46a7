//! `augurctl predictor eval` on the recorded traces of real programs
//! (`onnx-models/traces/tools-v1.jsonl`): held-out argument sets, a threshold sweep, the split
//! written out, and bad input refused. No daemon, no root.

use std::path::PathBuf;
use std::process::Command;

fn traces() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../onnx-models/traces/tools-v1.jsonl")
}

fn eval(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_augurctl"))
        .args(["predictor", "eval", "--traces"])
        .arg(traces())
        .args(args)
        .output()
        .expect("run augurctl")
}

/// (recall, wasted bytes) of `model` in a report's "all" group.
fn row(report: &serde_json::Value, model: &str) -> (f64, u64) {
    let all = &report["groups"][0];
    assert_eq!(all["category"], "all");
    let m = all["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == model)
        .unwrap_or_else(|| panic!("no {model} row: {all}"));
    (
        m["recall"].as_f64().unwrap_or(0.0),
        m["wasted_bytes"].as_u64().unwrap(),
    )
}

#[test]
fn held_out_arguments_are_evaluated_at_each_threshold_and_the_split_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = eval(&[
        "--threshold",
        "0.3,0.7",
        "--json",
        "--write-split",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("a JSON array of reports");
    assert_eq!(reports.len(), 2, "one report per threshold");
    for r in &reports {
        let (none, oracle) = (row(r, "none"), row(r, "oracle"));
        assert_eq!(none, (0.0, 0), "no prefetch fetches nothing");
        assert_eq!(oracle.1, 0, "the oracle wastes nothing");
        for model in ["replay", "markov", "ensemble"] {
            let (recall, _) = row(r, model);
            assert!(
                recall > 0.0 && recall <= oracle.0,
                "{model}: {recall} vs oracle {}",
                oracle.0
            );
        }
    }
    // A higher threshold prefetches less: never more wasted bytes.
    assert!(row(&reports[1], "markov").1 <= row(&reports[0], "markov").1);
    let train = std::fs::read_to_string(dir.path().join("train.jsonl")).unwrap();
    let test = std::fs::read_to_string(dir.path().join("test.jsonl")).unwrap();
    let args_of = |jsonl: &str| -> std::collections::BTreeSet<String> {
        jsonl
            .lines()
            .filter(|l| l.contains("\"type\":\"run\""))
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["labels"]["containerd.io/snapshot/augur.args"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let (train_args, test_args) = (args_of(&train), args_of(&test));
    assert!(!test_args.is_empty() && !train_args.is_empty());
    assert!(
        train_args.is_disjoint(&test_args),
        "held-out argument sets must not occur in training: {:?}",
        train_args.intersection(&test_args).collect::<Vec<_>>()
    );
}

/// Issue 5's recall/waste comparison as docs/benchmarks.md states it: pooled over twelve
/// held-out-argument splits, the ensemble recalls more than replay at replay's wasted bytes,
/// both where replay runs (0.5) and where it wastes least (0.95: the chunks every past run
/// read); and at the same threshold it recalls more. Deterministic (no clocks); a change to
/// the models or the scheduler's rules that loses this shows here. About two minutes in a
/// debug build.
#[test]
fn pooled_over_twelve_splits_the_ensemble_beats_replay_at_no_more_waste() {
    let thresholds = ["0.5", "0.7", "0.9", "0.95"];
    let out = eval(&[
        "--seeds",
        "1-12",
        "--threshold",
        &thresholds.join(","),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reports.len(), thresholds.len());
    assert_eq!(reports[0]["test_runs"], 264, "the twelve splits' test runs");
    let at = |threshold: usize, model: &str| row(&reports[threshold], model);
    let (replay, ensemble) = (at(0, "replay"), at(0, "ensemble"));
    assert!(
        ensemble.0 > replay.0 * 1.1,
        "at 0.5 ensemble (recall, wasted) {ensemble:?} against replay {replay:?}"
    );
    // (ensemble's threshold, replay's): at replay's operating point, and at its most sparing.
    for (e, r) in [(1, 0), (2, 3)] {
        let (replay, ensemble) = (at(r, "replay"), at(e, "ensemble"));
        assert!(
            ensemble.0 > replay.0 && ensemble.1 <= replay.1,
            "ensemble at {} (recall, wasted) {ensemble:?} against replay at {} {replay:?}",
            thresholds[e],
            thresholds[r],
        );
    }
}

#[test]
fn learning_test_runs_as_a_node_does_makes_later_runs_of_a_held_out_set_known() {
    let seen = |args: &[&str]| {
        let out = eval(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reports: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        let report = &reports[0];
        let runs = report["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["category"] == "seen image, seen workload")
            .map_or(0, |g| g["runs"].as_u64().unwrap());
        (report["learn_test_runs"].as_bool().unwrap(), runs)
    };
    let (fresh, learned) = (seen(&["--json"]), seen(&["--json", "--learn-test-runs"]));
    assert!(!fresh.0 && learned.0);
    // Each held-out argument set ran twice; a run's workload key is its first eight chunks,
    // which many sets of one program share (12 of the 22 test runs are known without
    // learning). Learned, the second run of a set whose key is its own is known too.
    assert!(learned.1 > fresh.1, "{fresh:?} then {learned:?}");
}

#[test]
fn bad_options_are_refused_with_a_reason() {
    let out = eval(&["--threshold", "1.5"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threshold"));
    let out = eval(&["--network", "fast"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("network profile"));
    let out = eval(&["--seeds", "5-1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is empty"));
    // A model trained on one split's training runs would have seen other splits' test runs.
    let out = eval(&["--seeds", "1-3", "--lstm-model", "/nonexistent"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}
