//! `augurctl`: the command-line tool for Augur. Thin: it parses arguments, sets up logging and
//! the async runtime, and calls the library (`augur_snapshotter::rpull`, `::convert`, …). Each
//! subcommand lives in its own file; `augurctl image <subcommand>` groups those that work on
//! images.

mod admin_args;
mod cache;
mod convert;
mod models;
mod plan;
mod predictor;
mod predictor_eval;
mod prefetch;
mod progress;
mod rpull;
mod trace;
mod train_state;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Augur's command-line tool.
#[derive(Debug, Parser)]
#[command(name = "augurctl", version)]
struct Cli {
    /// Log filter for diagnostics on stderr: error, warn, info, debug, trace or a tracing
    /// directive.
    #[arg(long, global = true, value_name = "LEVEL", default_value = "warn")]
    log_level: String,
    /// `--admin-socket`, accepted here too, before the subcommand; the admin commands read it
    /// from their own arguments, which clap fills from this.
    #[command(flatten)]
    _admin_socket: admin_args::TopLevel,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with container images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Inspect and steer the daemon's chunk cache (through its admin socket).
    Cache(cache::Args),
    /// Evaluate the predictor's models on recorded or synthetic logs (no daemon needed).
    #[command(subcommand)]
    Predictor(predictor::Command),
    /// List and export the access traces the daemon kept (through its admin socket).
    Trace(trace::Args),
    /// The daemon's summary: lazy layers, cache, prefetcher, model, traces.
    Status(models::StatusArgs),
    /// What the models expect a running container to read next.
    Predict(models::PredictArgs),
    /// Manage the daemon's LSTM model.
    Model(models::ModelArgs),
    /// Fetch a mounted lazy layer whole now (through the admin socket).
    Prefetch(prefetch::Args),
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Pull an image into containerd with the remote-snapshot labels, so Augur mounts its
    /// eStargz layers lazily (what `ctr-remote image rpull` does).
    Rpull(rpull::Args),
    // The help text is `convert::Args`'s doc comment.
    Convert(convert::Args),
    /// The image's layers in the order Augur prefers to fetch them, and the models' prefetch
    /// plan for it (through the admin socket).
    Plan(plan::Args),
}

/// Exit status for a run stopped by SIGINT or SIGTERM (the shell's 128 + SIGINT).
const INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("augurctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .with_context(|| format!("--log-level {:?} is not a log filter", cli.log_level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("augurctl")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Image(ImageCommand::Rpull(args)) => {
                rpull::run(args).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Image(ImageCommand::Convert(args)) => convert::run(args).await,
            Command::Image(ImageCommand::Plan(args)) => {
                plan::run(args).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Cache(args) => cache::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Predictor(c) => tokio::task::spawn_blocking(move || predictor::run(c))
                .await
                .context("the evaluation panicked")?
                .map(|()| ExitCode::SUCCESS),
            Command::Trace(args) => trace::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Status(args) => models::status(args).await.map(|()| ExitCode::SUCCESS),
            Command::Predict(args) => models::predict(args).await.map(|()| ExitCode::SUCCESS),
            Command::Model(args) => models::model(args).await.map(|()| ExitCode::SUCCESS),
            Command::Prefetch(args) => prefetch::run(args).await.map(|()| ExitCode::SUCCESS),
        }
    })
}

/// Resolves on the first SIGINT or SIGTERM.
fn interrupted() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Command, ImageCommand};

    /// `augurctl ARGS…` parsed.
    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from([&["augurctl"], args].concat())
    }

    #[test]
    fn flags_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn admin_flags_work_before_and_after_the_subcommand() {
        let socket = |args: &[&str]| {
            let cli = parse(args).expect("parses");
            let Command::Status(status) = cli.command else {
                panic!("not status: {:?}", cli.command);
            };
            let connection = &status.admin().connection;
            (connection.admin_socket.clone(), connection.address.clone())
        };
        let at = |p: &str| (std::path::PathBuf::from(p), None);
        assert_eq!(
            socket(&["status"]),
            at(super::admin_args::DEFAULT_ADMIN_SOCKET)
        );
        assert_eq!(socket(&["--admin-socket", "/a", "status"]), at("/a"));
        assert_eq!(socket(&["status", "--admin-socket", "/b"]), at("/b"));
        // Both: the subcommand's own, the nearer one, wins.
        assert_eq!(
            socket(&["--admin-socket", "/a", "status", "--admin-socket", "/b"]),
            at("/b")
        );
        let (_, address) = socket(&["status", "--address", "http://127.0.0.1:9"]);
        assert_eq!(address.as_deref(), Some("http://127.0.0.1:9"));
        // rpull's own --address (containerd's socket) is not the admin API's.
        let cli = parse(&[
            "--admin-socket",
            "/a",
            "image",
            "rpull",
            "--address",
            "/run/c.sock",
            "r/i:1",
        ])
        .expect("parses");
        assert!(matches!(
            cli.command,
            Command::Image(ImageCommand::Rpull(_))
        ));
    }

    #[test]
    fn platform_choices_exclude_each_other_and_ctr_remote_names_work() {
        let cli = parse(&[
            "--log-level",
            "debug",
            "image",
            "convert",
            "--estargz-chunk-size",
            "65536",
            "a:1/b",
            "oci:/x",
        ])
        .expect("parses");
        assert!(matches!(
            cli.command,
            Command::Image(ImageCommand::Convert(_))
        ));
        assert_eq!(cli.log_level, "debug");
        let e = parse(&[
            "image",
            "convert",
            "--platform",
            "linux/arm64",
            "--all-platforms",
            "a",
            "b",
        ])
        .expect_err("conflict");
        assert!(e.to_string().contains("cannot be used with"), "{e}");
    }
}
