//! Micro-benchmark of the ONNX LSTM: per-step latency of ONNX Runtime (one model step), the
//! cost of a whole `predict` (rollout of `depth` steps, through the `augur-lstm` thread), and
//! of `observe`, on the shipped model and a synthetic run of its training programs. It prints,
//! it does not assert.
//!
//! `cargo bench -p augur-predictor --bench lstm` (needs the library from `onnx-models/setup.sh`
//! at `$AUGUR_ORT_LIB` or in the test cache; `AUGUR_LSTM_MODEL` picks another model directory).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use augur_predictor::synth::{Program, RunStyle};
use augur_predictor::{Lstm, LstmConfig, Predictor, RunContext, RunId};

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = std::env::var_os("AUGUR_LSTM_MODEL")
        .map_or_else(|| repo.join("onnx-models/synthetic-v0"), PathBuf::from);
    let library = augur_predictor::lstm::runtime::test_library();
    let started = Instant::now();
    let mut lstm = match Lstm::load(&model, &library, LstmConfig::default()) {
        Ok(lstm) => lstm,
        Err(e) => {
            eprintln!("lstm bench: {e}");
            std::process::exit(1);
        }
    };
    let info = lstm.engine().model();
    println!(
        "model {} ({} tokens, window {}): loaded and validated in {:.0} ms",
        info.dir.display(),
        info.vocab,
        info.window,
        started.elapsed().as_secs_f64() * 1e3
    );
    // The first program of predictor/examples/synth_traces.rs (the model's training data).
    let python = Program::new("127.0.0.1:5000/python:esgz", 240, &[120; 6], 11);
    let trace = python.run_segments(&[0, 1], &RunStyle::default(), 424_242);
    let run = RunId(1);
    lstm.start_run(run, &RunContext::from_header(&trace.header));
    let (mut observe, mut predict, mut predicts) = (Duration::ZERO, Duration::ZERO, 0u32);
    let mut observes = 0u32;
    let mut seen = std::collections::HashSet::new();
    for access in trace.model_accesses() {
        let t = Instant::now();
        lstm.observe(run, &access);
        observe += t.elapsed();
        observes += 1;
        if seen.insert(access.chunk) {
            let t = Instant::now();
            black_box(lstm.predict(run, 64));
            predict += t.elapsed();
            predicts += 1;
        }
    }
    lstm.finish_run(run, None);
    let latency = lstm.engine().latency();
    let (s, r) = (latency.step, latency.request);
    println!(
        "{predicts} predict(64) calls, depth {}",
        LstmConfig::default().depth
    );
    println!(
        "model step (one ONNX Runtime run):  mean {:.0} µs, p50 {} µs, p90 {} µs, p99 {} µs, max {} µs ({} steps)",
        s.mean_us, s.p50_us, s.p90_us, s.p99_us, s.max_us, s.count
    );
    println!(
        "request (queue + rollout):          mean {:.0} µs, p50 {} µs, p90 {} µs, p99 {} µs, max {} µs",
        r.mean_us, r.p50_us, r.p90_us, r.p99_us, r.max_us
    );
    println!(
        "caller: predict {:.0} µs/call, observe {} ns/call",
        predict.as_secs_f64() * 1e6 / f64::from(predicts.max(1)),
        observe.as_nanos() / u128::from(observes.max(1))
    );
}
