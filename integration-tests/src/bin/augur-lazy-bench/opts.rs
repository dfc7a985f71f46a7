//! The command line of `augur-lazy-bench`, and the daemon variants it compares.
//!
//! Besides the daemon under test (`augur`), `--variant NAME=BIN[,CONFIG]` adds another daemon
//! binary and/or config, run as one more mode (`augur:NAME`) interleaved with the others in the
//! same run: that is how a change is measured against what it replaces under the same load.

use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use augur_integration_tests::bench::pick;

use crate::measure::Mode;
use crate::{PROFILES, WORKLOADS};

/// One Augur daemon to measure.
#[derive(Debug, Clone)]
pub struct Variant {
    /// `augur` for the daemon under test, else the `--variant` name.
    pub name: String,
    /// Its binary.
    pub bin: PathBuf,
    /// Its config file (`None`: the defaults).
    pub config: Option<PathBuf>,
}

/// The command line.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Measured runs per profile × image × mode.
    pub rounds: usize,
    /// Profiles to run (indices into [`PROFILES`]).
    pub profiles: Vec<usize>,
    /// Workloads to run (indices into [`WORKLOADS`]).
    pub workloads: Vec<usize>,
    /// Run the overlayfs full pull (`--modes`).
    pub overlayfs: bool,
    /// Run the Augur daemons (`--modes`).
    pub augur: bool,
    /// The daemons: the one under test first, then `--variant`s.
    pub variants: Vec<Variant>,
    /// The daemons' `--log-level` (`info`: a line per layer, not per read).
    pub augur_log_level: String,
    /// Keep each run's daemon and containerd logs and its timeline here (for analysis).
    pub keep_logs: Option<PathBuf>,
    /// Exit 1 if a target is missed.
    pub strict: bool,
}

const USAGE: &str = "usage: augur-lazy-bench [--rounds N (5)] \
[--profiles unshaped,100mbit-20ms,25mbit-50ms] [--images python,python-big] \
[--modes overlayfs,augur] [--augur-config FILE] [--variant NAME=BIN[,CONFIG]]... \
[--augur-log-level LEVEL (info)] [--keep-logs DIR] [--strict]";

impl Opts {
    /// Parses the process's arguments; `augur_bin` is the daemon under test.
    pub fn parse(augur_bin: PathBuf) -> Result<Opts> {
        let mut o = Opts {
            rounds: 5,
            profiles: (0..PROFILES.len()).collect(),
            workloads: (0..WORKLOADS.len()).collect(),
            overlayfs: true,
            augur: true,
            variants: vec![Variant {
                name: "augur".to_owned(),
                bin: augur_bin,
                config: None,
            }],
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
                    let picked = pick(&value("--modes")?, &["overlayfs", "augur"])?;
                    o.overlayfs = picked.contains(&0);
                    o.augur = picked.contains(&1);
                }
                "--augur-config" => o.variants[0].config = Some(value("--augur-config")?.into()),
                "--variant" => o.variants.push(variant(&value("--variant")?)?),
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

    /// Every mode this run measures, in a fixed order (the run rotates it).
    pub fn modes(&self) -> Vec<Mode> {
        let mut modes = Vec::new();
        if self.overlayfs {
            modes.push(Mode::Overlayfs);
        }
        if self.augur {
            modes.extend((0..self.variants.len()).map(Mode::Augur));
        }
        modes
    }

    /// Modes in report order (overlayfs, then the daemons), whether measured or not.
    pub fn all_modes(&self) -> Vec<Mode> {
        std::iter::once(Mode::Overlayfs)
            .chain((0..self.variants.len()).map(Mode::Augur))
            .collect()
    }

    /// `overlayfs`, `augur`, `augur:NAME`.
    pub fn mode_name(&self, mode: Mode) -> String {
        match mode {
            Mode::Overlayfs => "overlayfs".to_owned(),
            Mode::Augur(0) => "augur".to_owned(),
            Mode::Augur(i) => format!("augur:{}", self.variants[i].name),
        }
    }
}

/// `NAME=BIN[,CONFIG]`.
fn variant(spec: &str) -> Result<Variant> {
    let (name, rest) = spec
        .split_once('=')
        .with_context(|| format!("--variant {spec:?}: expected NAME=BIN[,CONFIG]"))?;
    let (bin, config) = match rest.split_once(',') {
        Some((b, c)) => (b, Some(PathBuf::from(c))),
        None => (rest, None),
    };
    let bin = PathBuf::from(bin);
    ensure!(
        bin.exists(),
        "--variant {name}: {} does not exist",
        bin.display()
    );
    Ok(Variant {
        name: name.to_owned(),
        bin,
        config,
    })
}
