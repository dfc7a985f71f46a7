//! The command line of `augur-predict-bench`, and the variants it compares: each is one daemon
//! config (`[prefetch]`, `[predictor] models`) plus the state its models start from.

use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use augur_integration_tests::bench::pick;
use augur_integration_tests::shaped::PROFILES;

/// What a run's daemon predicts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Variant {
    /// `[prefetch] enabled = false`.
    None,
    /// Record-and-replay alone, state from the training runs.
    Replay,
    /// The online Markov model alone, state from the training runs.
    Markov,
    /// The LSTM alone, trained on the training runs only.
    Lstm,
    /// Replay and Markov: the ensemble without the LSTM (`predictor.models` on a node without
    /// a model), so that what the LSTM adds end to end is measured.
    Online,
    /// All three, state from the training runs.
    Ensemble,
    /// Replay with state from the test argument set's own recorded runs: it knows the run.
    Oracle,
}

impl Variant {
    /// Every variant, in report order.
    pub const ALL: [Variant; 7] = [
        Variant::None,
        Variant::Replay,
        Variant::Markov,
        Variant::Lstm,
        Variant::Online,
        Variant::Ensemble,
        Variant::Oracle,
    ];

    /// Its name (options, report).
    pub fn name(self) -> &'static str {
        match self {
            Variant::None => "none",
            Variant::Replay => "replay",
            Variant::Markov => "markov",
            Variant::Lstm => "lstm",
            Variant::Online => "online",
            Variant::Ensemble => "ensemble",
            Variant::Oracle => "oracle",
        }
    }

    /// `[predictor] models`, or `None` for no prefetch.
    pub fn models(self) -> Option<&'static [&'static str]> {
        match self {
            Variant::None => None,
            Variant::Replay | Variant::Oracle => Some(&["replay"]),
            Variant::Markov => Some(&["markov"]),
            Variant::Lstm => Some(&["lstm"]),
            Variant::Online => Some(&["replay", "markov"]),
            Variant::Ensemble => Some(&["replay", "markov", "continuation", "lstm"]),
        }
    }

    /// Whether it needs the LSTM trained on the training runs.
    pub fn needs_lstm(self) -> bool {
        self.models().is_some_and(|m| m.contains(&"lstm"))
    }

    /// The daemon's config: background fetch off for every variant (so what arrives before it
    /// is read was predicted), prefetch on or off (at `threshold` if given), the models, the
    /// LSTM's files.
    pub fn config(self, lstm: Option<&(PathBuf, PathBuf)>, threshold: Option<f32>) -> String {
        let mut c = String::from("[remote]\nbackground_fetch = false\n\n[prefetch]\n");
        let Some(models) = self.models() else {
            c.push_str("enabled = false\n");
            return c;
        };
        c.push_str("enabled = true\n");
        if let Some(t) = threshold {
            c.push_str(&format!("threshold = {t}\n"));
        }
        c.push_str("\n[predictor]\n");
        let quoted: Vec<String> = models.iter().map(|m| format!("\"{m}\"")).collect();
        c.push_str(&format!("models = [{}]\n", quoted.join(", ")));
        if let (true, Some((dir, lib))) = (self.needs_lstm(), lstm) {
            c.push_str(&format!(
                "model_dir = \"{}\"\nonnxruntime_library = \"{}\"\n",
                dir.display(),
                lib.display()
            ));
        }
        c
    }
}

/// The command line.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Measured runs per profile × argument set × variant.
    pub rounds: usize,
    /// Profiles to run (indices into [`PROFILES`]).
    pub profiles: Vec<usize>,
    /// Variants to run, in report order.
    pub variants: Vec<Variant>,
    /// Test argument sets to run at most (the first of the split's, by name).
    pub workloads: Option<usize>,
    /// Seed of the held-out split.
    pub seed: u64,
    /// The daemons' `--log-level`.
    pub augur_log_level: String,
    /// Keep each run's daemon and containerd logs here.
    pub keep_logs: Option<PathBuf>,
    /// The daemons' starting prefetch threshold (`None`: the daemon's default).
    pub threshold: Option<f32>,
    /// Train the models on another image's runs (`python-big`), so that the measured runs are
    /// of an image the models never saw; the same argument sets are measured.
    pub unseen_image: bool,
}

/// How to call it.
pub const USAGE: &str = "usage: augur-predict-bench [--rounds N (3)] \
[--profiles LIST of unshaped,100mbit-20ms,25mbit-50ms (100mbit-20ms,25mbit-50ms)] \
[--variants LIST of none,replay,markov,lstm,online,ensemble,oracle (all)] \
[--workloads N (every test argument set)] [--seed S (1)] [--augur-log-level LEVEL (info)] \
[--keep-logs DIR] [--threshold P (the daemon's default)] [--unseen-image (train on python-big's runs instead: an image never seen)]";

impl Opts {
    /// Parses the process's arguments.
    pub fn parse() -> Result<Opts> {
        let mut o = Opts {
            rounds: 3,
            profiles: vec![1, 2],
            variants: Variant::ALL.to_vec(),
            workloads: None,
            seed: 1,
            augur_log_level: "info".to_owned(),
            keep_logs: None,
            threshold: None,
            unseen_image: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value =
                |name: &str| args.next().with_context(|| format!("{name} needs a value"));
            match a.as_str() {
                "--rounds" => o.rounds = number(&value("--rounds")?, "--rounds")?,
                "--profiles" => {
                    o.profiles = pick(&value("--profiles")?, &PROFILES.map(|p| p.name))?;
                }
                "--variants" => {
                    let picked = pick(&value("--variants")?, &Variant::ALL.map(Variant::name))?;
                    o.variants = Variant::ALL
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| picked.contains(i))
                        .map(|(_, v)| v)
                        .collect();
                }
                "--workloads" => o.workloads = Some(number(&value("--workloads")?, "--workloads")?),
                "--seed" => o.seed = number(&value("--seed")?, "--seed")? as u64,
                "--augur-log-level" => o.augur_log_level = value("--augur-log-level")?,
                "--keep-logs" => o.keep_logs = Some(value("--keep-logs")?.into()),
                "--threshold" => {
                    let v = value("--threshold")?;
                    let t: f32 = v.parse().with_context(|| format!("--threshold {v:?}"))?;
                    // Within the daemon's default bounds (prefetch.threshold_min/_max).
                    ensure!(
                        (0.05..=0.9).contains(&t),
                        "--threshold {v}: from 0.05 to 0.9 (the daemon's threshold bounds)"
                    );
                    o.threshold = Some(t);
                }
                "--unseen-image" => o.unseen_image = true,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        ensure!(o.rounds > 0, "--rounds must be at least 1");
        ensure!(o.workloads != Some(0), "--workloads must be at least 1");
        Ok(o)
    }
}

fn number(v: &str, name: &str) -> Result<usize> {
    v.parse().with_context(|| format!("{name} {v:?}"))
}
