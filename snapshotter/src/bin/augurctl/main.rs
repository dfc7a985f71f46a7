//! `augurctl`: the command-line tool for Augur. Thin: it parses arguments, sets up logging and
//! the async runtime, and calls the library (`augur_snapshotter::rpull`, …). Each subcommand
//! lives in its own file; `augurctl image <subcommand>` groups those that work on images.

mod cache;
mod rpull;

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Inspect and steer the daemon's chunk cache (through its admin socket).
    Cache(cache::Args),
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Pull an image into containerd with the remote-snapshot labels, so Augur mounts its
    /// eStargz layers lazily (what `ctr-remote image rpull` does).
    Rpull(rpull::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("augurctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
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
    match cli.command {
        Command::Image(ImageCommand::Rpull(args)) => runtime.block_on(rpull::run(args)),
        Command::Cache(args) => runtime.block_on(cache::run(args)),
    }
}
