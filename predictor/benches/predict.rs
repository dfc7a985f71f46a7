//! Micro-benchmark of the per-access cost the daemon pays: `observe` and `predict(64)` for
//! each model on a large synthetic program, plus the size of saved state and of binary traces.
//! It prints, it does not assert (timings belong here, not in tests).
//!
//! `cargo bench -p augur-predictor --bench predict`

use std::hint::black_box;
use std::time::{Duration, Instant};

use augur_predictor::synth::{Program, RunStyle};
use augur_predictor::trace::binary;
use augur_predictor::{
    Ensemble, Markov, MarkovConfig, Predictor, Replay, ReplayConfig, RunContext, RunId,
};

const MAX: usize = 64;

fn main() {
    // A 2,000-chunk start-up, then one of three 1,000-chunk branches: 3,000 new chunks a run.
    let prog = Program::new("127.0.0.1:5000/big:esgz", 2_000, &[1_000, 1_000, 1_000], 1);
    let style = RunStyle::default();
    let train: Vec<_> = (0..8)
        .map(|s| prog.run((s % 3) as usize, &style, s))
        .collect();
    let test = prog.run(1, &style, 99);
    let bytes = binary::encode(&test).expect("valid trace");
    println!(
        "trace: {} accesses, {} chunks, {} bytes on disk ({:.1} bytes/access with the chunk table)",
        test.accesses.len(),
        test.chunks.len(),
        bytes.len(),
        bytes.len() as f64 / test.accesses.len() as f64
    );
    let models: Vec<Box<dyn Predictor>> = vec![
        Box::new(Replay::new(ReplayConfig::default())),
        Box::new(Markov::new(MarkovConfig::default())),
        Box::new(Ensemble::standard()),
    ];
    println!(
        "{:<9} {:>12} {:>14} {:>14} {:>12}",
        "model", "learn/run", "observe/call", "predict/call", "state"
    );
    for mut model in models {
        let started = Instant::now();
        train.iter().for_each(|t| model.learn(t));
        let learn = started.elapsed() / train.len() as u32;
        let (observe, predict) = time_run(model.as_mut(), &test);
        let state = model.save_state().map(|s| s.len()).unwrap_or(0);
        println!(
            "{:<9} {:>12} {:>14} {:>14} {:>10} KiB",
            model.name(),
            fmt(learn),
            fmt(observe),
            fmt(predict),
            state / 1024
        );
    }
}

/// Mean time of `observe` (every access) and `predict(64)` (after every new chunk).
fn time_run(model: &mut dyn Predictor, trace: &augur_predictor::Trace) -> (Duration, Duration) {
    let run = RunId(1);
    model.start_run(run, &RunContext::from_header(&trace.header));
    let (mut observe, mut predict) = (Duration::ZERO, Duration::ZERO);
    let (mut observes, mut predicts) = (0u32, 0u32);
    let mut seen = std::collections::HashSet::new();
    for access in trace.model_accesses() {
        let t = Instant::now();
        model.observe(run, &access);
        observe += t.elapsed();
        observes += 1;
        if seen.insert(access.chunk) {
            let t = Instant::now();
            black_box(model.predict(run, MAX));
            predict += t.elapsed();
            predicts += 1;
        }
    }
    model.finish_run(run, None);
    (observe / observes.max(1), predict / predicts.max(1))
}

fn fmt(d: Duration) -> String {
    match d.as_nanos() {
        n if n >= 10_000_000 => format!("{:.1} ms", n as f64 / 1e6),
        n if n >= 10_000 => format!("{:.1} µs", n as f64 / 1e3),
        n => format!("{n} ns"),
    }
}
