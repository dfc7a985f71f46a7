//! `augur-lazy-bench`: time from pull start to a container's first output, and the bytes fetched
//! from the registry, for containerd's overlayfs full pull against Augur's lazy pull, under
//! shaped networks, side by side in one run.
//!
//! | module | what it holds |
//! |---|---|
//! | `main` | workloads, the interleaved loop over rounds × profiles × images × modes |
//! | [`opts`] | the command line; daemon variants to compare (`--variant`) |
//! | [`bed`] | the images and their eStargz copies, served through the shaped network of `augur_integration_tests::shaped` (namespace, HTB limits, one delay proxy per profile) |
//! | [`measure`] | one run on fresh containerd (and a fresh Augur daemon): pull, `ctr run`, first output byte, bytes through the proxy |
//! | [`report`] | medians and spread per cell, ratios with bootstrap intervals, the Markdown report, target checks |
//!
//! Both modes fetch through the same delay proxy, which counts the bytes it delivers, so "bytes
//! fetched" is measured the same way for both. Everything started here is owned by an RAII
//! guard, so an error, a panic or Ctrl-C (checked between steps and while waiting on children)
//! stops every process, unmounts, and removes the network namespace and the scratch directory.
//!
//! Usage: see `USAGE` (or `--help`); root, the images from `images.sh` and release binaries needed: see
//! `integration-tests/scripts/bench-lazy.sh`.

mod bed;
mod measure;
mod opts;
mod report;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use augur_integration_tests::bench::{check_interrupted, watch_signals};
pub use augur_integration_tests::shaped::{PROFILES, Profile};

use crate::bed::Bed;
use crate::opts::Opts;
use crate::report::Report;

/// An image and the workload run in it.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Name in `images.sh` and the registry repository.
    pub image: &'static str,
    /// The container's command; it prints (flushed) once the imports are done.
    pub cmd: &'static [&'static str],
    /// Text its output must contain.
    pub expect: &'static str,
}

/// `python3 -c 'import json'` on python, `import numpy, pandas` on python-big.
pub const WORKLOADS: [Workload; 2] = [
    Workload {
        image: "python",
        cmd: &[
            "python3",
            "-c",
            "import json; print('import json: ok', flush=True)",
        ],
        expect: "import json: ok",
    },
    Workload {
        image: "python-big",
        cmd: &[
            "python3",
            "-c",
            "import numpy, pandas; print('import numpy, pandas: ok', numpy.__version__, \
             pandas.__version__, flush=True)",
        ],
        expect: "import numpy, pandas: ok",
    },
];

fn main() -> ExitCode {
    let opts = match Opts::parse(bed::augur_bin()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("augur-lazy-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    watch_signals("augur-lazy-bench");
    let started = Instant::now();
    match run(&opts) {
        Ok(report) => {
            println!("{}", report.markdown(&opts, started.elapsed()));
            let missed = report.missed_targets();
            for m in &missed {
                eprintln!("augur-lazy-bench: target missed: {m}");
            }
            if opts.strict && !missed.is_empty() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("augur-lazy-bench: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Progress on stderr.
pub fn progress(msg: impl std::fmt::Display) {
    eprintln!("augur-lazy-bench: {msg}");
}

fn run(opts: &Opts) -> Result<Report> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "must run as root (network namespace, tc, containerd, FUSE)"
    );
    let bed = Bed::start(opts)?;
    let mut report = Report::new(&bed, opts);
    let mut seq = 0;
    for round in 0..opts.rounds {
        for &p in &opts.profiles {
            for &w in &opts.workloads {
                // Rotate which mode goes first, so drift hits all alike.
                let modes = opts.modes();
                let first = (round + p + w) % modes.len();
                let order = modes[first..].iter().chain(&modes[..first]).copied();
                for mode in order {
                    check_interrupted()?;
                    seq += 1;
                    let sample =
                        measure::run_once(&bed, opts, &PROFILES[p], &WORKLOADS[w], mode, seq)
                            .with_context(|| {
                                format!(
                                    "round {}, {} {} {}",
                                    round + 1,
                                    PROFILES[p].name,
                                    WORKLOADS[w].image,
                                    opts.mode_name(mode)
                                )
                            })?;
                    progress(format!(
                        "round {}/{}: {:<12} {:<10} {:<9} {sample}",
                        round + 1,
                        opts.rounds,
                        PROFILES[p].name,
                        WORKLOADS[w].image,
                        opts.mode_name(mode),
                    ));
                    report.add(p, w, mode, sample);
                }
            }
        }
    }
    report.finish(&bed);
    progress(format!(
        "HTB classes of the namespace's lo at the end:\n{}",
        bed.tc_stats()
    ));
    Ok(report)
}
