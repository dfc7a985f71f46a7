//! `augurctl predictor eval|train-state|deploy-eval|deploy-synth`: the chunk models on held-out
//! runs (`predictor_eval.rs`), the daemon's state taught from traces (`train_state.rs`), and the deployment-level model (which images the
//! node pulls next) replayed on a pull log against its baselines, and seeded synthetic logs to
//! try it on. Pure computation on files; the daemon is not involved.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use augur_predictor::deploy::eval::{EvalConfig, evaluate_all};
use augur_predictor::deploy::synth::{SynthConfig, pull_log};
use augur_predictor::deploy::{DeployConfig, read_pull_log};

/// `augurctl predictor ...`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Train the chunk models on some exported runs and test them on held-out ones (other
    /// arguments, other images, or other runs): precision, recall, bytes, timeliness.
    Eval(crate::predictor_eval::EvalArgs),
    /// Teach the daemon's models exported traces and write the state file it loads at start
    /// (to seed a node from another node's traces).
    TrainState(crate::train_state::TrainStateArgs),
    /// Replay a pull log (JSON Lines of {"t_unix_ms":…,"image":"…"}, e.g. the daemon's
    /// <root>/pulls.jsonl) against the deployment model and the baselines.
    DeployEval {
        /// The pull log.
        #[arg(long, value_name = "FILE")]
        log: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Warm at most this many images at once.
        #[arg(long, default_value_t = 3)]
        warm_k: usize,
        /// Warm only predictions at least this likely (0-1).
        #[arg(long, default_value_t = 0.0)]
        min_probability: f32,
        /// A warm-up not followed by its pull within this many seconds is wasted.
        #[arg(long, default_value_t = 900)]
        horizon_secs: u64,
    },
    /// Write a seeded synthetic pull log (pipelines, cron jobs, noise) to stdout.
    DeploySynth {
        /// The generator's seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Hours of pulls.
        #[arg(long, default_value_t = 72.0)]
        hours: f64,
    },
}

/// Runs the subcommand.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Eval(args) => crate::predictor_eval::run(args)?,
        Command::TrainState(args) => crate::train_state::run(args)?,
        Command::DeployEval {
            log,
            json,
            warm_k,
            min_probability,
            horizon_secs,
        } => {
            anyhow::ensure!(
                (0.0..=1.0).contains(&min_probability),
                "--min-probability must be from 0 to 1"
            );
            let events = read_pull_log(&log)?;
            anyhow::ensure!(!events.is_empty(), "{} holds no pulls", log.display());
            let horizon = Duration::from_secs(horizon_secs);
            let model = DeployConfig {
                horizon,
                ..DeployConfig::default()
            };
            let cfg = EvalConfig {
                warm_k,
                min_probability,
                horizon,
                ..EvalConfig::default()
            };
            let report = evaluate_all(&events, &model, &cfg);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_table());
            }
        }
        Command::DeploySynth { seed, hours } => {
            anyhow::ensure!(
                hours > 0.0 && hours <= 24.0 * 366.0,
                "--hours must be from 0 to 8784"
            );
            let events = pull_log(&SynthConfig {
                seed,
                hours,
                ..SynthConfig::default()
            });
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for e in &events {
                serde_json::to_writer(&mut out, e)?;
                out.write_all(b"\n").context("write to stdout")?;
            }
            out.flush().context("write to stdout")?;
        }
    }
    Ok(())
}
