//! The evaluator on synthetic programs where the right answer is known: the baselines are what
//! they must be, each model recalls what it can know and no more, the ensemble's advantage on
//! held-out arguments, new images, slow links, directories, splits, determinism.

use std::path::Path;

use augur_predictor::eval::{self, EvalOptions, NetworkProfile, Report, split};
use augur_predictor::synth::{Program, RunStyle};
use augur_predictor::trace::{binary, jsonl};
use augur_predictor::workload::WORKLOAD_LABEL;
use augur_predictor::{Error, Trace};

const IMAGE: &str = "127.0.0.1:5000/python:esgz";

/// A 40-chunk prefix, then six 30-chunk segments; a run goes through the prefix and two of
/// them (its two arguments).
fn program() -> Program {
    Program::new(IMAGE, 40, &[30; 6], 1)
}

/// A run through `segments`, 20 ms between new chunks, its workload named by the user's label
/// (the arguments), so that runs with other arguments are other workloads.
fn labelled_run(prog: &Program, segments: &[usize], seed: u64) -> Trace {
    let style = RunStyle {
        gap_us: 20_000,
        ..RunStyle::default()
    };
    let mut trace = prog.run_segments(segments, &style, seed);
    let arg = trace.header.labels["arg"].clone();
    trace
        .header
        .labels
        .insert(WORKLOAD_LABEL.into(), arg.clone());
    trace.header.workload = format!("label:{arg}");
    trace
}

fn runs(prog: &Program, combos: &[&[usize]], per_combo: u64, seed: u64) -> Vec<Trace> {
    let mut out = Vec::new();
    for i in 0..per_combo {
        for (c, segments) in combos.iter().enumerate() {
            out.push(labelled_run(prog, segments, seed + 10 * i + c as u64));
        }
    }
    out
}

fn opts(network: NetworkProfile, threshold: f32) -> EvalOptions {
    EvalOptions {
        network,
        threshold,
        ..EvalOptions::default()
    }
}

fn row<'a>(report: &'a Report, group: &str, model: &str) -> &'a eval::ModelRow {
    report
        .row(group, model)
        .unwrap_or_else(|| panic!("no {model} in {group}:\n{}", report.to_markdown()))
}

#[test]
fn the_oracle_is_perfect_and_no_prefetch_recalls_nothing() {
    let prog = program();
    let train = runs(&prog, &[&[0, 3], &[1, 4]], 2, 0);
    let test = runs(&prog, &[&[0, 3], &[2, 5]], 1, 100);
    let report =
        eval::run_traces(&train, &test, &opts(NetworkProfile::DATACENTER, 0.5), &[]).unwrap();
    let oracle = row(&report, "all", "oracle");
    assert_eq!((oracle.recall, oracle.precision), (1.0, Some(1.0)));
    assert_eq!((oracle.wasted_bytes, oracle.late, oracle.missed), (0, 0, 0));
    let none = row(&report, "all", "none");
    assert_eq!(
        (none.recall, none.precision, none.prefetched),
        (0.0, None, 0)
    );
    assert_eq!(none.missed, none.accessed);
    assert!(none.stall_ms_per_run > oracle.stall_ms_per_run);
    // Every model's numbers are internally consistent.
    for group in &report.groups {
        for m in &group.models {
            assert_eq!(m.timely + m.late + m.missed, m.accessed, "{}", m.model);
            assert!(m.recall <= 1.0 && m.byte_hit_ratio <= 1.0);
        }
    }
}

#[test]
fn on_held_out_arguments_replay_recalls_the_prefix_and_markov_also_the_branch() {
    // Trained on arguments 0 and 1, tested on 0 under another label: replay knows the prefix
    // for sure and each branch only as "half the past runs"; Markov follows the branch once
    // the run is in it.
    let prog = Program::new(IMAGE, 40, &[30, 30], 1);
    let train = runs(&prog, &[&[0], &[1]], 3, 0);
    let mut test = labelled_run(&prog, &[0], 77);
    test.header.workload = "label:0-with-other-flags".into();
    test.header
        .labels
        .insert(WORKLOAD_LABEL.into(), "0-with-other-flags".into());
    let report =
        eval::run_traces(&train, &[test], &opts(NetworkProfile::DATACENTER, 0.6), &[]).unwrap();
    let group = "seen image, new workload";
    let replay = row(&report, group, "replay");
    let markov = row(&report, group, "markov");
    assert_eq!(
        replay.precision,
        Some(1.0),
        "replay prefetches only the sure prefix"
    );
    assert!(
        (0.5..=0.58).contains(&replay.recall),
        "prefix = 40 of 70: {}",
        replay.recall
    );
    assert!(
        markov.recall > replay.recall + 0.3,
        "{} vs {}",
        markov.recall,
        replay.recall
    );
}

#[test]
fn the_ensemble_beats_replay_on_recall_at_no_more_waste_on_held_out_arguments() {
    let prog = program();
    let train = runs(&prog, &[&[0, 3], &[1, 4], &[2, 5], &[0, 4], &[1, 5]], 2, 0);
    let test = runs(&prog, &[&[2, 3], &[0, 5]], 2, 500);
    let thresholds = [0.5, 0.7, 0.9];
    let base = opts(NetworkProfile::REGIONAL, 0.5);
    let reports = eval::sweep_traces(&train, &test, &base, &[], &thresholds).unwrap();
    let group = "seen image, new workload";
    let best_replay = reports
        .iter()
        .map(|r| row(r, group, "replay"))
        .max_by(|a, b| a.recall.total_cmp(&b.recall))
        .unwrap();
    // At no more waste, within one of the synthetic program's largest chunks (256 KiB).
    let winner = reports.iter().map(|r| row(r, group, "ensemble")).find(|e| {
        e.recall > best_replay.recall + 0.05
            && e.wasted_bytes <= best_replay.wasted_bytes + (256 << 10)
    });
    let table: Vec<String> = reports.iter().map(Report::to_markdown).collect();
    assert!(winner.is_some(), "{}", table.join("\n"));
    // The ensemble's calibration on new workloads is learned from the training runs that
    // were new when learned (one per argument set here), so it is coarse: it must still rank.
    let at_05 = row(&reports[0], group, "ensemble");
    assert!(at_05.calibration_error.unwrap() < 0.25, "{}", table[0]);
}

#[test]
fn on_a_new_image_only_shared_chunks_carry_over() {
    let prog = program();
    let sibling = Program::sharing_prefix("127.0.0.1:5000/django:esgz", &prog, &[30], 5);
    let train = runs(&prog, &[&[0, 3], &[1, 4]], 2, 0);
    let test = vec![sibling.run(
        0,
        &RunStyle {
            gap_us: 20_000,
            ..RunStyle::default()
        },
        9,
    )];
    let report =
        eval::run_traces(&train, &test, &opts(NetworkProfile::DATACENTER, 0.5), &[]).unwrap();
    assert_eq!(report.groups[1].category, "new image");
    let replay = row(&report, "new image", "replay");
    let markov = row(&report, "new image", "markov");
    let ensemble = row(&report, "new image", "ensemble");
    assert_eq!(
        replay.prefetched, 0,
        "replay knows nothing of another image"
    );
    // The shared prefix is 40 of 70 chunks; its first chunk cannot be foreseen.
    assert!(
        markov.recall > 0.45 && markov.recall < 0.6,
        "{}",
        markov.recall
    );
    assert!(ensemble.recall > 0.45, "{}", ensemble.recall);
    // After the prefix Markov expects the training image's branches; those chunks are in a
    // layer this image does not have, so (as in the daemon) they are never fetched.
    for model in [markov, ensemble] {
        assert_eq!(model.wasted_bytes, 0, "{}", report.to_markdown());
    }
}

#[test]
fn learning_test_runs_makes_only_the_first_run_of_a_new_image_new() {
    let prog = program();
    let sibling = Program::sharing_prefix("127.0.0.1:5000/django:esgz", &prog, &[30], 5);
    let train = runs(&prog, &[&[0, 3], &[1, 4]], 2, 0);
    // Two runs of the same workload on the new image; the later one listed first.
    let test = vec![
        labelled_run(&sibling, &[0], 19),
        labelled_run(&sibling, &[0], 9),
    ];
    assert!(test[1].header.started_unix_ms < test[0].header.started_unix_ms);
    let fresh = opts(NetworkProfile::DATACENTER, 0.5);
    let report = eval::run_traces(&train, &test, &fresh, &[]).unwrap();
    assert!(!report.learn_test_runs);
    assert_eq!(report.row("new image", "replay").unwrap().prefetched, 0);
    assert!(report.row("seen image, seen workload", "replay").is_none());

    let learning = EvalOptions {
        learn_test_runs: true,
        ..fresh
    };
    let report = eval::run_traces(&train, &test, &learning, &[]).unwrap();
    assert!(report.learn_test_runs);
    assert!(
        report
            .to_markdown()
            .contains("Test runs are learned when they end")
    );
    let first = row(&report, "new image", "replay");
    assert_eq!((report.groups[1].runs, first.prefetched), (1, 0));
    let second = row(&report, "seen image, seen workload", "replay");
    assert!(second.recall > 0.9, "{}", report.to_markdown());
}

#[test]
fn a_thin_link_makes_even_the_oracle_late() {
    let prog = program();
    let train = runs(&prog, &[&[0, 3]], 2, 0);
    let style = RunStyle::default(); // 2 ms between chunks: far more than 20 Mbit/s carries
    let test = vec![prog.run_segments(&[0, 3], &style, 42)];
    let report =
        eval::run_traces(&train, &test, &opts(NetworkProfile::CONSTRAINED, 0.5), &[]).unwrap();
    let oracle = row(&report, "all", "oracle");
    assert_eq!(oracle.precision, Some(1.0));
    assert!(
        oracle.recall < 0.9 && oracle.late > 0,
        "{}",
        report.to_markdown()
    );
    let none = row(&report, "all", "none");
    assert!(oracle.stall_ms_per_run < none.stall_ms_per_run);
}

#[test]
fn the_evaluation_is_deterministic() {
    let prog = program();
    let train = runs(&prog, &[&[0, 3], &[1, 4]], 2, 0);
    let test = runs(&prog, &[&[0, 4]], 2, 100);
    let o = opts(NetworkProfile::REGIONAL, 0.5);
    let a = eval::run_traces(&train, &test, &o, &[]).unwrap().to_json();
    let b = eval::run_traces(&train, &test, &o, &[]).unwrap().to_json();
    assert_eq!(a, b);
}

fn write_dir(dir: &Path, traces: &[Trace]) {
    for (i, t) in traces.iter().enumerate() {
        std::fs::write(
            dir.join(format!("{i:03}.augtrace")),
            binary::encode(t).unwrap(),
        )
        .unwrap();
    }
}

#[test]
fn directories_in_markdown_and_json_out() {
    let prog = program();
    let (train_dir, test_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_dir(train_dir.path(), &runs(&prog, &[&[0, 3], &[1, 4]], 1, 0));
    // One test run as a JSON Lines export, one binary with its tail torn off.
    let mut export = Vec::new();
    jsonl::write_trace(
        &labelled_run(&prog, &[0, 3], 50),
        &mut export,
        Path::new("-"),
    )
    .unwrap();
    std::fs::write(test_dir.path().join("a.jsonl"), export).unwrap();
    let torn = binary::encode(&labelled_run(&prog, &[1, 4], 51)).unwrap();
    std::fs::write(test_dir.path().join("b.augtrace"), &torn[..torn.len() - 7]).unwrap();

    let report = eval::run(train_dir.path(), test_dir.path(), &EvalOptions::default()).unwrap();
    assert_eq!((report.train_runs, report.test_runs), (2, 2));
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("b.augtrace") && n.contains("torn"))
    );
    let md = report.to_markdown();
    assert!(
        md.contains("| ensemble |") && md.contains("## all (2 runs)"),
        "{md}"
    );
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    let first = &json["groups"][0]["models"][0];
    for field in [
        "model",
        "precision",
        "recall",
        "byte_hit_ratio",
        "wasted_bytes",
        "lead_ms",
        "calibration_error",
    ] {
        assert!(first.get(field).is_some(), "{field}");
    }

    let empty = tempfile::tempdir().unwrap();
    let err = eval::run(train_dir.path(), empty.path(), &EvalOptions::default()).unwrap_err();
    assert!(matches!(err, Error::NothingToEvaluate(_)), "{err}");
    std::fs::write(
        test_dir.path().join("c.augtrace"),
        b"AUGURTRC\x01\x00\x05\x00\x00\x00\x00abcde\x01",
    )
    .unwrap();
    let err = eval::run(train_dir.path(), test_dir.path(), &EvalOptions::default()).unwrap_err();
    assert!(err.to_string().contains("c.augtrace"), "{err}");
}

#[test]
fn splits_hold_out_what_they_say() {
    let prog = program();
    let other = Program::new("127.0.0.1:5000/node:esgz", 20, &[10, 10], 3);
    let mut all = runs(&prog, &[&[0, 3], &[1, 4], &[2, 5]], 3, 0);
    all.extend((0..4).map(|s| labelled_run(&other, &[s % 2], 900 + s as u64)));
    let total = all.len();

    let by_image = split::by_image(all.clone(), 0.5, 7);
    let images = |ts: &[Trace]| {
        ts.iter()
            .map(|t| t.header.image.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert!(images(&by_image.train).is_disjoint(&images(&by_image.test)));
    assert_eq!(by_image.train.len() + by_image.test.len(), total);

    let by_workload = split::by_workload(all.clone(), 0.34, 7);
    let keys = |ts: &[Trace]| {
        ts.iter()
            .map(|t| (t.header.image.clone(), t.header.workload.clone()))
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert!(keys(&by_workload.train).is_disjoint(&keys(&by_workload.test)));
    assert!(
        !by_workload.test.is_empty()
            && images(&by_workload.test).is_subset(&images(&by_workload.train))
    );

    let by_run = split::by_run(all.clone(), 0.34, 7);
    assert!(keys(&by_run.test).is_subset(&keys(&by_run.train)));
    assert_eq!(by_run.train.len() + by_run.test.len(), total);

    let again = split::by_workload(all, 0.34, 7);
    assert_eq!(again.test, by_workload.test, "seeded");
}

#[test]
fn network_profiles_parse_or_say_how() {
    assert_eq!(
        NetworkProfile::parse("regional"),
        Ok(NetworkProfile::REGIONAL)
    );
    let custom = NetworkProfile::parse("5ms,40mbit").unwrap();
    assert_eq!(
        (custom.latency_us, custom.bandwidth_bytes_per_s),
        (5_000, 5_000_000)
    );
    for bad in [
        "fast",
        "5ms",
        "5,40mbit",
        "-1ms,40mbit",
        "5ms,0mbit",
        "5ms,NaNmbit",
    ] {
        let err = NetworkProfile::parse(bad).unwrap_err();
        assert!(err.contains("20ms,100mbit"), "{bad}: {err}");
    }
}

#[test]
fn argument_splits_keep_every_program_in_training_and_program_splits_do_not() {
    let prog = program();
    // Three programs of one image, named by the args label `<program>/<name>`.
    let mut all = Vec::new();
    for (i, program) in ["python", "perl", "sqlite"].iter().enumerate() {
        for arg in 0..3 {
            for run in 0..2 {
                let mut t = labelled_run(&prog, &[arg], (i * 100 + arg * 10 + run) as u64);
                t.header
                    .labels
                    .insert("args".into(), format!("{program}/{arg}"));
                all.push(t);
            }
        }
    }
    let args_of = |t: &Trace| t.header.labels["args"].clone();
    let set = |ts: &[Trace], f: &dyn Fn(&Trace) -> String| {
        ts.iter().map(f).collect::<std::collections::BTreeSet<_>>()
    };
    let program = |t: &Trace| split::program_of(&args_of(t)).to_owned();

    let by_args = split::by_arguments(all.clone(), args_of, 0.3, 3);
    assert!(set(&by_args.train, &args_of).is_disjoint(&set(&by_args.test, &args_of)));
    assert_eq!(set(&by_args.test, &program).len(), 3, "one set per program");
    assert_eq!(set(&by_args.train, &program), set(&by_args.test, &program));
    assert_eq!(by_args.test.len(), 6);

    let by_program = split::by_program(all.clone(), args_of, 0.3, 3);
    assert!(set(&by_program.train, &program).is_disjoint(&set(&by_program.test, &program)));
    assert_eq!(
        by_program.test.len(),
        6,
        "one whole program: 3 sets x 2 runs"
    );
    assert_eq!(split::program_of("no-slash"), "");
}

#[test]
fn pooled_splits_count_every_splits_test_runs_with_their_own_training() {
    let prog = program();
    let all = runs(&prog, &[&[0, 3], &[1, 4], &[2, 5], &[0, 4], &[1, 5]], 2, 0);
    let args_of = |t: &Trace| t.header.labels["arg"].clone();
    let splits: Vec<split::Split> = (1..=3)
        .map(|seed| split::by_arguments(all.clone(), args_of, 0.4, seed))
        .collect();
    let o = opts(NetworkProfile::REGIONAL, 0.5);
    let pooled = eval::sweep_pooled(&splits, &o, &[0.5]).unwrap().remove(0);
    let single: Vec<Report> = splits
        .iter()
        .map(|s| eval::run_traces(&s.train, &s.test, &o, &[]).unwrap())
        .collect();
    assert_eq!(
        pooled.test_runs,
        splits.iter().map(|s| s.test.len()).sum::<usize>()
    );
    // Counts add up split by split, for every model (each split trained on its own runs).
    for model in ["none", "replay", "markov", "ensemble", "oracle"] {
        let sum = |f: &dyn Fn(&eval::ModelRow) -> u64| {
            single.iter().map(|r| f(row(r, "all", model))).sum::<u64>()
        };
        let p = row(&pooled, "all", model);
        assert_eq!(p.accessed, sum(&|r| r.accessed), "{model}");
        assert_eq!(p.timely, sum(&|r| r.timely), "{model}");
        assert_eq!(p.wasted_bytes, sum(&|r| r.wasted_bytes), "{model}");
    }
    assert!(pooled.to_markdown().contains("pooled over 3 splits"));
}
