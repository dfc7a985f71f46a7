//! `augurctl`: the command-line tool for Augur users. `augurctl image <subcommand>`; the work is
//! done by library modules (`augur_snapshotter::convert`, …), this binary parses flags, sets up
//! logging and the runtime, and prints progress.

mod convert;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Augur's command-line tool.
#[derive(Debug, Parser)]
#[command(name = "augurctl", version)]
struct Cli {
    /// Log filter for diagnostics on stderr: error, warn, info, debug, trace or a tracing
    /// directive.
    #[arg(long, value_name = "LEVEL", default_value = "warn", global = true)]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with container images.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Convert an image to eStargz, so Augur can pull it lazily.
    Convert(convert::Args),
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
        .thread_name("augurctl")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let code = runtime.block_on(async {
        match cli.command {
            Command::Image {
                command: ImageCommand::Convert(args),
            } => convert::run(args).await,
        }
    })?;
    Ok(code)
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
