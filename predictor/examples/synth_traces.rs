//! Writes seeded synthetic traces as JSON Lines, one file per run: the training data of the
//! shipped `onnx-models/synthetic-v0` model (until real traces exist) and of tests.
//!
//! `cargo run -p augur-predictor --example synth_traces -- OUT_DIR [RUNS_PER_ARGUMENT]`
//!
//! Four programs stand in for an interpreter, a second interpreter sharing its base layer, a
//! compiler and a shell: each reads a start-up prefix, then the branches its two arguments
//! choose. The same arguments give the same traces on every machine.

use std::path::{Path, PathBuf};

use augur_predictor::Trace;
use augur_predictor::synth::{Program, RunStyle};
use augur_predictor::trace::jsonl;

/// The programs, and the argument pairs each is run with.
pub fn corpus(runs_per_argument: u64) -> Vec<Trace> {
    let python = Program::new("127.0.0.1:5000/python:esgz", 240, &[120; 6], 11);
    let perl = Program::sharing_prefix("127.0.0.1:5000/perl:esgz", &python, &[90; 5], 12);
    let gcc = Program::new("127.0.0.1:5000/gcc:esgz", 300, &[200; 4], 13);
    let shell = Program::new("127.0.0.1:5000/busybox:esgz", 40, &[30; 8], 14);
    let style = RunStyle {
        gap_us: 5_000,
        ..RunStyle::default()
    };
    let mut traces = Vec::new();
    for (p, prog) in [python, perl, gcc, shell].iter().enumerate() {
        let args = prog.branches.len();
        for a in 0..args {
            let segments = [a, (a + 1 + p) % args];
            for r in 0..runs_per_argument {
                let seed = 1_000 * p as u64 + 10 * a as u64 + r;
                traces.push(prog.run_segments(&segments, &style, seed));
            }
        }
    }
    traces
}

fn write(dir: &Path, traces: &[Trace]) -> Result<(), augur_predictor::Error> {
    std::fs::create_dir_all(dir).map_err(|e| augur_predictor::Error::io("create", dir, e))?;
    for (i, trace) in traces.iter().enumerate() {
        let image = trace.header.image.rsplit('/').next().unwrap_or("run");
        let path: PathBuf = dir.join(format!("{i:03}-{}.jsonl", image.replace(':', "-")));
        let mut file = std::fs::File::create(&path)
            .map_err(|e| augur_predictor::Error::io("create", &path, e))?;
        jsonl::write_trace(trace, &mut file, &path)?;
    }
    Ok(())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: synth_traces OUT_DIR [RUNS_PER_ARGUMENT (default 4)]");
        std::process::exit(2);
    };
    let runs = args.next().and_then(|n| n.parse().ok()).unwrap_or(4);
    let traces = corpus(runs);
    if let Err(e) = write(Path::new(&dir), &traces) {
        eprintln!("synth_traces: {e}");
        std::process::exit(1);
    }
    println!("{} traces in {dir}", traces.len());
}
