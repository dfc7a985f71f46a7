//! `augur-lazy-bench`: time from pull start to a container's first output, and the bytes fetched
//! from the registry, for containerd's overlayfs full pull against Augur's lazy pull, under
//! shaped networks, side by side in one run.
//!
//! | module | what it holds |
//! |---|---|
//! | `main` | options, the interleaved loop over rounds × profiles × images × modes, targets |
//! | [`bed`] | the registry in a loopback-only network namespace, HTB limits, one delay proxy per profile, the images and their eStargz copies |
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
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use augur_integration_tests::bench::{check_interrupted, watch_signals};

use crate::bed::Bed;
use crate::measure::Mode;
use crate::report::Report;

/// A network profile: what clients of the registry see.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// Short name (options, progress).
    pub name: &'static str,
    /// Rate limit of what clients download, Mbit/s (`None`: loopback speed).
    pub mbit: Option<u32>,
    /// Latency added per direction.
    pub one_way: Duration,
    /// The delay proxy's port in the namespace.
    pub port: u16,
}

/// The profiles: unshaped, ~100 Mbit/s with 20 ms, ~25 Mbit/s with 50 ms (one way each, so
/// round trips of 40 and 100 ms).
pub const PROFILES: [Profile; 3] = [
    Profile {
        name: "unshaped",
        mbit: None,
        one_way: Duration::ZERO,
        port: 5001,
    },
    Profile {
        name: "100mbit-20ms",
        mbit: Some(100),
        one_way: Duration::from_millis(20),
        port: 5002,
    },
    Profile {
        name: "25mbit-50ms",
        mbit: Some(25),
        one_way: Duration::from_millis(50),
        port: 5003,
    },
];

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

/// The command line.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Measured runs per profile × image × mode.
    pub rounds: usize,
    /// Profiles to run (indices into [`PROFILES`]).
    pub profiles: Vec<usize>,
    /// Workloads to run (indices into [`WORKLOADS`]).
    pub workloads: Vec<usize>,
    /// Modes to run (both by default; one only for development).
    pub modes: Vec<Mode>,
    /// Config file for the Augur daemon (`None`: its defaults).
    pub augur_config: Option<PathBuf>,
    /// The daemon's `--log-level` (`info`: a line per layer, not per read).
    pub augur_log_level: String,
    /// Keep each run's daemon and containerd logs and its timeline here (for analysis).
    pub keep_logs: Option<PathBuf>,
    /// Exit 1 if a target is missed.
    pub strict: bool,
}

const USAGE: &str = "usage: augur-lazy-bench [--rounds N (5)] [--profiles unshaped,100mbit-20ms,25mbit-50ms] \
[--images python,python-big] [--modes overlayfs,augur] [--augur-config FILE] \
[--augur-log-level LEVEL (info)] [--keep-logs DIR] [--strict]";

impl Opts {
    fn parse() -> Result<Opts> {
        let mut o = Opts {
            rounds: 5,
            profiles: (0..PROFILES.len()).collect(),
            workloads: (0..WORKLOADS.len()).collect(),
            modes: vec![Mode::Overlayfs, Mode::Augur],
            augur_config: None,
            augur_log_level: "info".to_owned(),
            keep_logs: None,
            strict: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value =
                |name: &str| args.next().with_context(|| format!("{name} needs a value"));
            match a.as_str() {
                "--rounds" => {
                    let v = value("--rounds")?;
                    o.rounds = v.parse().with_context(|| format!("--rounds {v:?}"))?;
                }
                "--profiles" => {
                    o.profiles = pick(&value("--profiles")?, &PROFILES.map(|p| p.name))?;
                }
                "--images" => {
                    o.workloads = pick(&value("--images")?, &WORKLOADS.map(|w| w.image))?;
                }
                "--modes" => {
                    let all = [Mode::Overlayfs, Mode::Augur];
                    o.modes = pick(&value("--modes")?, &all.map(Mode::name))?
                        .into_iter()
                        .map(|i| all[i])
                        .collect();
                }
                "--augur-config" => o.augur_config = Some(value("--augur-config")?.into()),
                "--augur-log-level" => o.augur_log_level = value("--augur-log-level")?,
                "--keep-logs" => o.keep_logs = Some(value("--keep-logs")?.into()),
                "--strict" => o.strict = true,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        ensure!(o.rounds > 0, "--rounds must be at least 1");
        Ok(o)
    }
}

/// Indices of the comma-separated `list` in `names`.
fn pick(list: &str, names: &[&str]) -> Result<Vec<usize>> {
    list.split(',')
        .map(|item| {
            names
                .iter()
                .position(|n| *n == item.trim())
                .with_context(|| format!("unknown {item:?}; choose from {}", names.join(", ")))
        })
        .collect()
}

fn main() -> ExitCode {
    let opts = match Opts::parse() {
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
                // Alternate which mode goes first, so drift hits both alike.
                let modes = if (round + p + w) % 2 == 0 {
                    [Mode::Overlayfs, Mode::Augur]
                } else {
                    [Mode::Augur, Mode::Overlayfs]
                };
                for mode in modes.into_iter().filter(|m| opts.modes.contains(m)) {
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
                                    mode.name()
                                )
                            })?;
                    progress(format!(
                        "round {}/{}: {:<12} {:<10} {:<9} {sample}",
                        round + 1,
                        opts.rounds,
                        PROFILES[p].name,
                        WORKLOADS[w].image,
                        mode.name(),
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
