//! `augurctl predictor eval`: the chunk models (no prefetch, replay, Markov, continuation, the
//! LSTM when a model is given, the ensemble, the oracle) trained on some exported runs and tested on held-out
//! ones, in simulated time over a network profile. Pure computation on files; no daemon.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use augur_predictor::eval::{self, EvalOptions, ModelFactory, NetworkProfile, split};
use augur_predictor::lstm::{Engine, LoadedModel, LstmFactory};
use augur_predictor::trace::jsonl;
use augur_predictor::{LstmConfig, Trace};

/// The label `record-traces.sh` (or a user) puts on a run's snapshot to name its arguments.
const ARGS_LABEL: &str = "containerd.io/snapshot/augur.args";

/// How test runs are held out.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SplitBy {
    /// Argument sets (the `augur.args` label `<program>/<name>`, else the workload key) held
    /// out within each program: the same programs with arguments never seen in training.
    Args,
    /// Whole programs (the `<program>` of `augur.args`) held out per image: programs of a
    /// known image that no training run started.
    Program,
    /// Whole images: never seen in training.
    Image,
    /// Single runs of workloads that also occur in training (the easy case).
    Run,
}

/// `augurctl predictor eval` arguments.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Exported traces (`augurctl trace export`): JSON Lines files.
    #[arg(long = "traces", value_name = "FILE", required = true)]
    traces: Vec<PathBuf>,
    /// How test runs are held out.
    #[arg(long, value_enum, default_value = "args")]
    split: SplitBy,
    /// Share of the groups held out for testing.
    #[arg(long, default_value_t = 0.3)]
    holdout: f32,
    /// Seed of the split.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Several splits, pooled into one report (`1-12`, or `1,4,7`): each split's models learn
    /// its own training runs; the report counts the test runs of all of them. One split's
    /// handful of held-out argument sets can decide a comparison; many splits give a fairer one.
    #[arg(long, value_name = "LIST", conflicts_with_all = ["seed", "lstm_model", "write_split"])]
    seeds: Option<String>,
    /// Predictions at or above this probability are prefetched; several (comma-separated)
    /// give one report each, the models trained once, to compare them at equal wasted bytes.
    #[arg(long, value_delimiter = ',', default_value = "0.5")]
    threshold: Vec<f32>,
    /// The simulated link: datacenter, regional, constrained, or <ms>ms,<mbit>mbit.
    #[arg(long, default_value = "regional")]
    network: String,
    /// An ONNX LSTM model directory (onnx-models/): evaluated alone and in the ensemble.
    #[arg(long, value_name = "DIR")]
    lstm_model: Option<PathBuf>,
    /// ONNX Runtime's library for --lstm-model (default: $AUGUR_ORT_LIB, else /usr/local/lib/augur/).
    #[arg(long, value_name = "FILE")]
    onnxruntime_library: Option<PathBuf>,
    /// Also write the split as `train.jsonl` and `test.jsonl` into this directory (to train an
    /// LSTM on the training runs only: `onnx-models/eval-heldout.sh`).
    #[arg(long, value_name = "DIR")]
    write_split: Option<PathBuf>,
    /// Print the reports as a JSON array (one per threshold) instead of Markdown.
    #[arg(long)]
    json: bool,
    /// Learn each test run when it ends, oldest first, as a node would; without it every test
    /// run starts from the trained state, so every run of an image never seen is its first.
    #[arg(long)]
    learn_test_runs: bool,
}

/// Runs the evaluation and prints its report.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.holdout > 0.0 && args.holdout < 1.0,
        "--holdout must be between 0 and 1 (exclusive)"
    );
    anyhow::ensure!(
        args.threshold.iter().all(|t| (0.0..=1.0).contains(t)),
        "--threshold values must be from 0 to 1"
    );
    let network = NetworkProfile::parse(&args.network).map_err(anyhow::Error::msg)?;
    let mut traces: Vec<Trace> = Vec::new();
    for path in &args.traces {
        traces.extend(jsonl::read_file(path)?);
    }
    anyhow::ensure!(
        traces.len() >= 2,
        "the traces hold {} runs: need at least 2",
        traces.len()
    );
    let make_split = |traces: Vec<Trace>, seed: u64| match args.split {
        SplitBy::Args => split::by_arguments(traces, args_of, args.holdout, seed),
        SplitBy::Program => split::by_program(traces, args_of, args.holdout, seed),
        SplitBy::Image => split::by_image(traces, args.holdout, seed),
        SplitBy::Run => split::by_run(traces, args.holdout, seed),
    };
    let opts = EvalOptions {
        network,
        threshold: args.threshold[0],
        learn_test_runs: args.learn_test_runs,
        ..EvalOptions::default()
    };
    if let Some(list) = &args.seeds {
        let seeds = parse_seeds(list)?;
        let splits: Vec<split::Split> = seeds
            .iter()
            .map(|&seed| make_split(traces.clone(), seed))
            .collect();
        let (train, test): (usize, usize) = splits
            .iter()
            .fold((0, 0), |(a, b), s| (a + s.train.len(), b + s.test.len()));
        eprintln!(
            "augurctl: {} splits ({:?}, seeds {list}): {train} training and {test} test runs in all",
            splits.len(),
            args.split
        );
        let reports = eval::sweep_pooled(&splits, &opts, &args.threshold)?;
        return print_reports(&reports, args.json);
    }
    let split = make_split(traces, args.seed);
    if let Some(dir) = &args.write_split {
        write_split(dir, &split)?;
    }
    let lstm = match &args.lstm_model {
        Some(dir) => Some(lstm_factory(dir, args.onnxruntime_library.as_deref())?),
        None => None,
    };
    let extra: Vec<&dyn ModelFactory> = lstm.iter().map(|f| f as &dyn ModelFactory).collect();
    eprintln!(
        "augurctl: {} training runs, {} test runs ({:?} split, seed {})",
        split.train.len(),
        split.test.len(),
        args.split,
        args.seed
    );
    let reports = eval::sweep_traces(&split.train, &split.test, &opts, &extra, &args.threshold)?;
    print_reports(&reports, args.json)
}

/// Markdown, or one JSON array with one report per threshold.
fn print_reports(reports: &[eval::Report], json: bool) -> anyhow::Result<()> {
    if json {
        let all: Vec<serde_json::Value> = reports
            .iter()
            .map(|r| serde_json::from_str(&r.to_json()))
            .collect::<Result<_, _>>()?;
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        reports.iter().for_each(|r| print!("{}", r.to_markdown()));
    }
    Ok(())
}

/// `1-12` or `1,4,7` (or both: `1-3,9`): distinct seeds, at most 1000.
fn parse_seeds(list: &str) -> anyhow::Result<Vec<u64>> {
    let bad =
        || anyhow::anyhow!("--seeds {list:?}: use a range such as 1-12 or a list such as 1,4,7");
    let mut seeds = Vec::new();
    for part in list.split(',') {
        let part = part.trim();
        let (from, to) = match part.split_once('-') {
            Some((a, b)) => (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            ),
            None => {
                let n: u64 = part.parse().map_err(|_| bad())?;
                (n, n)
            }
        };
        anyhow::ensure!(from <= to, "--seeds {list:?}: the range {part} is empty");
        anyhow::ensure!(to - from < 1000, "--seeds {list:?}: at most 1000 splits");
        seeds.extend(from..=to);
    }
    seeds.sort_unstable();
    seeds.dedup();
    anyhow::ensure!(
        !seeds.is_empty() && seeds.len() <= 1000,
        "--seeds {list:?}: 1 to 1000 splits"
    );
    Ok(seeds)
}

/// Writes the split's runs as JSON Lines (`train.jsonl`, `test.jsonl`) into `dir`.
fn write_split(dir: &std::path::Path, split: &split::Split) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    for (name, traces) in [("train.jsonl", &split.train), ("test.jsonl", &split.test)] {
        let path = dir.join(name);
        let file =
            std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        for t in traces {
            jsonl::write_trace(t, &mut out, &path)?;
        }
        std::io::Write::flush(&mut out).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// A run's argument set: its `augur.args` label, else its workload key.
fn args_of(t: &Trace) -> String {
    t.header
        .labels
        .get(ARGS_LABEL)
        .cloned()
        .unwrap_or_else(|| t.header.workload.clone())
}

fn lstm_factory(
    dir: &std::path::Path,
    lib: Option<&std::path::Path>,
) -> anyhow::Result<LstmFactory> {
    let lib = lib
        .map(PathBuf::from)
        .unwrap_or_else(augur_predictor::lstm::runtime::library_from_env);
    let model = LoadedModel::load(dir, &lib).with_context(|| {
        format!(
            "load the LSTM from {} with {}",
            dir.display(),
            lib.display()
        )
    })?;
    let folds = augur_predictor::lstm::load_folds(dir, &lib)
        .with_context(|| format!("load the LSTM's cross-fitting folds in {}", dir.display()))?;
    Ok(LstmFactory {
        engine: Engine::start(model)?,
        folds,
        // Deterministic: the evaluation waits for every answer.
        config: LstmConfig {
            timeout: Duration::from_secs(30),
            ..LstmConfig::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::parse_seeds;

    #[test]
    fn seeds_are_ranges_or_lists_and_bad_ones_say_how() {
        assert_eq!(parse_seeds("1-4").unwrap(), [1, 2, 3, 4]);
        assert_eq!(parse_seeds("7, 1-2,2").unwrap(), [1, 2, 7]);
        for bad in ["", "x", "3-1", "1-", "0-5000"] {
            let e = parse_seeds(bad).unwrap_err().to_string();
            assert!(e.contains("--seeds"), "{bad:?}: {e}");
        }
    }
}
