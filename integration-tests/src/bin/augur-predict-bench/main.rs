//! `augur-predict-bench`: the predictor end to end. Real containerd, a real registry behind the
//! shaped network of the lazy-pull benchmark, real FUSE, one fresh Augur daemon per run: time
//! from pull start to a workload's first output with no prefetch, with each model trained on
//! other argument sets, and with an oracle that knows the run.
//!
//! | module | what it holds |
//! |---|---|
//! | `main` | the interleaved loop over rounds × profiles × test argument sets × variants |
//! | [`opts`] | the command line; the variants (`none`, `replay`, `markov`, `lstm`, `online` = replay and Markov, `ensemble`, `oracle`) and their daemon configs |
//! | [`prepare`] | the held-out split of the recorded traces, the LSTM trained on the training runs (cached), the models' state per variant and profile (`augurctl predictor train-state`), the image and its eStargz copy behind `augur_integration_tests::shaped` |
//! | [`measure`] | one run: fresh daemon root seeded with the variant's state, fresh containerd, lazy pull, `ctr run` with the argument set's label, first output, bytes through the proxy, the prefetcher's counters |
//! | [`report`] | medians per profile, variant and workload group, the gap closed, the Markdown report |
//!
//! Everything started here is owned by an RAII guard, so an error, a panic or Ctrl-C stops
//! every process, unmounts, and removes the network namespace and the scratch directory.
//! Usage: see `opts::USAGE`; as root, through `integration-tests/scripts/bench-predict.sh`.

mod measure;
mod opts;
mod prepare;
mod report;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use augur_integration_tests::bench::{check_interrupted, watch_signals};
use augur_integration_tests::shaped::PROFILES;

use crate::opts::Opts;
use crate::prepare::Prepared;
use crate::report::Report;

fn main() -> ExitCode {
    let opts = match Opts::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("augur-predict-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    watch_signals("augur-predict-bench");
    let started = Instant::now();
    match run(&opts) {
        Ok(report) => {
            println!("{}", report.markdown(&opts, started.elapsed()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("augur-predict-bench: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Progress on stderr.
pub fn progress(msg: impl std::fmt::Display) {
    eprintln!("augur-predict-bench: {msg}");
}

fn run(opts: &Opts) -> Result<Report> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "must run as root (network namespace, tc, containerd, FUSE)"
    );
    let prep = Prepared::start(opts)?;
    let mut report = Report::new(opts, &prep);
    let mut seq = 0;
    for round in 0..opts.rounds {
        for &p in &opts.profiles {
            for (w, set) in prep.sets.iter().enumerate() {
                // Rotate which variant goes first, so drift hits all alike.
                let n = opts.variants.len();
                let first = (round + p + w) % n;
                for i in (0..n).map(|k| (first + k) % n) {
                    check_interrupted()?;
                    seq += 1;
                    let v = opts.variants[i];
                    let sample =
                        measure::run_once(&prep, opts, p, w, v, seq).with_context(|| {
                            format!(
                                "round {}, {} {} {}",
                                round + 1,
                                PROFILES[p].name,
                                set.label,
                                v.name()
                            )
                        })?;
                    progress(format!(
                        "round {}/{}: {:<12} {:<18} {:<8} {sample}",
                        round + 1,
                        opts.rounds,
                        PROFILES[p].name,
                        set.label,
                        v.name(),
                    ));
                    report.add(p, w, v, sample);
                }
            }
        }
    }
    Ok(report)
}
