//! `augurctl predictor train-state`: teaches the daemon's own ensemble (the members
//! `[predictor] models` would build, via `prefetch::predict::build_ensemble`) a set of exported
//! traces and writes the state file the daemon loads at start (`prefetch::predict::state_file`).
//! Used to seed a new node from another node's traces, and by the end-to-end predictor
//! benchmark. `--image` re-keys every trace to the reference the node pulls, because replay
//! keys what it learned by image reference; whether the LSTM was trained on a run is still
//! judged by the reference it was recorded under (`Ensemble::learn_as`). If the LSTM's model
//! has cross-fitting folds (`train.py --folds`), a fold that was not trained on a run answers
//! for the LSTM there, so the state carries the LSTM's out-of-sample calibration (decision
//! 0029); without folds the LSTM is not asked in its own training runs (decision 0028).
//! Continuation learns from the runs' own chunk records which files hold several chunks
//! (decision 0031): a recorded run has no TOC.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use augur_predictor::trace::jsonl;
use augur_predictor::{Layout, Predictor};
use augur_snapshotter::prefetch::PredictorSettings;
use augur_snapshotter::prefetch::predict::{
    build_ensemble, load_lstm, load_lstm_folds, state_file,
};
use augur_snapshotter::prefetch::settings::{ModelKind, parse_models};

/// `augurctl predictor train-state` arguments.
#[derive(Debug, clap::Args)]
pub struct TrainStateArgs {
    /// Exported traces (`augurctl trace export`): JSON Lines files.
    #[arg(long = "traces", value_name = "FILE", required = true, num_args = 1..)]
    traces: Vec<PathBuf>,
    /// The models, as `[predictor] models` names them on the node that will load the state.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "replay,markov,continuation,lstm"
    )]
    models: Vec<String>,
    /// The node's state directory (`<root>/predictor`); created if missing.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Learn every trace as a run of this image reference (as the node's containerd names it).
    #[arg(long, value_name = "REF")]
    image: Option<String>,
    /// The LSTM's model directory (`[predictor] model_dir`); needed when --models has lstm.
    #[arg(long, value_name = "DIR")]
    model_dir: Option<PathBuf>,
    /// ONNX Runtime's library (default: $AUGUR_ORT_LIB, else /usr/local/lib/augur/).
    #[arg(long, value_name = "FILE")]
    onnxruntime_library: Option<PathBuf>,
}

/// Trains and writes the state file; prints its path.
pub fn run(args: TrainStateArgs) -> anyhow::Result<()> {
    let models = parse_models("--models", &args.models)?;
    let settings = PredictorSettings {
        model_dir: args.model_dir.clone(),
        model_dir_is_default: false,
        onnxruntime: args.onnxruntime_library.clone(),
        state_dir: args.out.clone(),
        models: models.clone(),
    };
    let lstm = if models.contains(&ModelKind::Lstm) {
        Some(load_lstm(&settings).context(
            "--models has lstm, but its model did not load (give --model-dir, and \
             --onnxruntime-library or $AUGUR_ORT_LIB)",
        )?)
    } else {
        None
    };
    let mut traces = Vec::new();
    for path in &args.traces {
        traces.extend(jsonl::read_file(path)?);
    }
    anyhow::ensure!(!traces.is_empty(), "the trace files hold no runs");
    // Continuation's layout for these recorded runs: the chunks they read of each file.
    let layout = Arc::new(Layout::from_traces(&traces));
    let mut ensemble = build_ensemble(&models, lstm, layout);
    if models.contains(&ModelKind::Lstm) {
        let folds = load_lstm_folds(&settings).context("the LSTM's cross-fitting folds")?;
        let count = folds.len();
        let folds = folds
            .into_iter()
            .map(|f| Box::new(f) as Box<dyn Predictor>)
            .collect();
        if ensemble.add_folds("lstm", folds) && count > 0 {
            eprintln!("train-state: the LSTM is calibrated out of sample by its folds ({count})");
        }
    }
    let runs = traces.len();
    for trace in traces {
        match &args.image {
            Some(image) => ensemble.learn_as(trace, image),
            None => ensemble.learn(&trace),
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let file = state_file(&ensemble, &args.out);
    augur_predictor::model::save_to_file(&ensemble, &file)?;
    println!(
        "{} ({runs} runs learned by {})",
        file.display(),
        ensemble.member_names().join(", ")
    );
    Ok(())
}
