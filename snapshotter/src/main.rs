//! `augur-snapshotter`: the daemon containerd talks to through `[proxy_plugins.augur]`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use augur_snapshotter::config::{DEFAULT_CONFIG_PATH, Overrides, RawConfig};
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

/// A containerd remote snapshotter that starts containers before their images are pulled.
#[derive(Debug, Parser)]
#[command(name = "augur-snapshotter", version)]
struct Args {
    /// Config file (TOML). Without this flag /etc/augur/config.toml is read if it exists.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// State directory [config: root; default /var/lib/augur].
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// gRPC unix socket [config: grpc.address; default /run/augur/snapshotter.sock].
    #[arg(long, value_name = "SOCKET")]
    address: Option<PathBuf>,
    /// Log filter: error, warn, info, debug, trace or a tracing directive [config: log_level].
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("augur-snapshotter: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let (path, required) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let config = RawConfig::load(&path, required)?.validate(Overrides {
        root: args.root,
        address: args.address,
        log_level: args.log_level,
    })?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log_level))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("augur-grpc")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal().context("cannot install signal handlers")?;
        augur_snapshotter::daemon::run(config, shutdown).await?;
        Ok(())
    })
}

/// Resolves on the first SIGTERM or SIGINT.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}
