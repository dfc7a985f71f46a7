//! `augurctl status`, `augurctl predict SNAPSHOT` and `augurctl model reload`: the daemon's
//! summary, a running container's predictions, and a new LSTM model swapped in, through the
//! admin API (`GET /status`, `GET /predictions/{snapshot}`, `POST /models/reload`).
//! `augurctl model check DIR` runs the daemon's own validation here, without a daemon (what
//! `onnx-models/install.sh` and `retrain.sh` run before they switch a node's model).

use std::path::PathBuf;

use anyhow::Context;
use augur_snapshotter::admin::models::{Model, Predictions, Status};

use crate::admin_args::AdminArgs;

/// `augurctl status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    common: AdminArgs,
}

impl StatusArgs {
    /// Its admin arguments, as parsed.
    #[cfg(test)]
    pub fn admin(&self) -> &AdminArgs {
        &self.common
    }
}

/// `augurctl predict`.
#[derive(Debug, clap::Args)]
pub struct PredictArgs {
    #[command(flatten)]
    common: AdminArgs,
    /// The snapshot key of a running container (`ctr snapshots ls`).
    snapshot: String,
}

/// `augurctl model ...`.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    #[command(flatten)]
    common: AdminArgs,
    #[command(subcommand)]
    command: ModelCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ModelCommand {
    /// Validate an LSTM model directory and serve it without restarting the daemon (the
    /// current model stays if the new one fails a check).
    Reload {
        /// The model directory (absolute); default the daemon's `predictor.model_dir`.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Validate an LSTM model directory as the daemon does (files, hashes, ONNX Runtime
    /// loading the graph, the golden outputs), without a daemon; exits 1 naming the failed
    /// check.
    Check {
        /// The model directory.
        dir: PathBuf,
        /// ONNX Runtime's library; default `$AUGUR_ORT_LIB`, else
        /// `/usr/local/lib/augur/libonnxruntime.so.1.31.1`.
        #[arg(long, value_name = "FILE")]
        onnxruntime_library: Option<PathBuf>,
    },
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `augurctl status`.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let s: Status = args.common.client()?.get("/status").await?;
    if args.common.json {
        return print_json(&s);
    }
    println!("augur-snapshotter {}, up {}s", s.version, s.uptime_s);
    match s.lazy_layers {
        Some(n) => println!("lazy layers:  {n} mounted"),
        None => println!("lazy layers:  off"),
    }
    if let Some(c) = &s.cache {
        for t in &c.tiers {
            println!(
                "cache {:<5}  {} / {} MiB, {} chunks, {} hits",
                serde_json::to_value(t.tier)?.as_str().unwrap_or("?"),
                t.used_bytes >> 20,
                t.budget_bytes >> 20,
                t.chunks,
                t.hits
            );
        }
    }
    match &s.prefetch {
        Some(p) => println!(
            "prefetch:     threshold {:.2}, {} issued, {} used, {} wasted, {} queued",
            p.threshold, p.issued_chunks, p.used_chunks, p.wasted_chunks, p.queue_len
        ),
        None => println!("prefetch:     off"),
    }
    match &s.model {
        Some(m) => {
            println!(
                "model:        {} ({}), {}",
                m.label,
                m.created,
                m.dir.display()
            );
            println!("              {}", speaks_for(&m.images));
        }
        None => println!("model:        none (the other models only)"),
    }
    if let Some(i) = s.inference.filter(|i| i.steps > 0) {
        println!(
            "inference:    {} LSTM steps, p50 {} µs, p99 {} µs",
            i.steps, i.p50_us, i.p99_us
        );
    }
    if let Some(t) = &s.traces {
        println!(
            "traces:       {} written, {} write errors, {} events dropped",
            t.traces_written, t.write_errors, t.dropped_events
        );
    }
    Ok(())
}

/// `augurctl predict SNAPSHOT`.
pub async fn predict(args: PredictArgs) -> anyhow::Result<()> {
    let path = format!("/predictions/{}", args.snapshot);
    anyhow::ensure!(
        !args.snapshot.contains(['/', '?', '#']) && !args.snapshot.is_empty(),
        "snapshot key {:?}: give a key as `ctr snapshots ls` prints it",
        args.snapshot
    );
    let p: Predictions = args.common.client()?.get(&path).await?;
    if args.common.json {
        return print_json(&p);
    }
    println!(
        "{} predictions for {} (prefetch threshold {:.2})",
        p.predictions.len(),
        p.snapshot,
        p.threshold
    );
    for c in &p.predictions {
        println!(
            "{:>5.2}  in {:>6} ms  {}  {}  {}",
            c.probability,
            c.expected_in_ms,
            if c.cached { "cached" } else { "      " },
            &c.chunk[..c.chunk.len().min(19)],
            c.path.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

/// `augurctl model reload|check`.
pub async fn model(args: ModelArgs) -> anyhow::Result<()> {
    match args.command {
        ModelCommand::Reload { dir } => reload(&args.common, dir).await,
        ModelCommand::Check {
            dir,
            onnxruntime_library,
        } => check(&args.common, dir, onnxruntime_library).await,
    }
}

/// `augurctl model check`: `LoadedModel::load`, the daemon's validation, on the blocking pool.
async fn check(common: &AdminArgs, dir: PathBuf, library: Option<PathBuf>) -> anyhow::Result<()> {
    use augur_predictor::lstm::{Engine, LoadedModel, runtime};
    let library = library.unwrap_or_else(runtime::library_from_env);
    let shown = dir.display().to_string();
    let info = tokio::task::spawn_blocking(move || {
        let model = LoadedModel::load(&dir, &library)?;
        Ok::<_, augur_predictor::lstm::LstmError>(Engine::start(model)?.model())
    })
    .await?
    .with_context(|| format!("model {shown} failed validation"))?;
    let version = info.version();
    let m = Model::from(info);
    if common.json {
        return print_json(&m);
    }
    println!(
        "model {shown}: valid (version {version}, {}, created {}, {} tokens, window {})",
        m.label, m.created, m.vocab, m.window
    );
    println!("{}", speaks_for(&m.images));
    Ok(())
}

/// `augurctl model reload`.
async fn reload(common: &AdminArgs, dir: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = dir
        .map(|d| std::path::absolute(&d).with_context(|| format!("--dir {}", d.display())))
        .transpose()?;
    let body = match dir {
        Some(d) => serde_json::json!({ "dir": d }),
        None => serde_json::json!({}),
    };
    let m: Model = common.client()?.post("/models/reload", &body).await?;
    if common.json {
        return print_json(&m);
    }
    println!(
        "serving {} ({}), {} tokens, from {}",
        m.label,
        m.created,
        m.vocab,
        m.dir.display()
    );
    println!("{}", speaks_for(&m.images));
    Ok(())
}

/// Which images the LSTM predicts for: those it was trained on, by repository and tag
/// whatever registry serves them (decision 0029); on the others the other models answer
/// alone, which an operator cannot tell from the metrics (an empty step histogram).
fn speaks_for(images: &[String]) -> String {
    use augur_predictor::lstm::engine::repository;
    if images.is_empty() {
        return "the LSTM predicts for every image (its training images are not recorded)".into();
    }
    let mut names: Vec<&str> = images.iter().map(|i| repository(i)).collect();
    names.sort_unstable();
    names.dedup();
    format!(
        "the LSTM predicts for {} only; other images: the other models",
        names.join(", ")
    )
}
