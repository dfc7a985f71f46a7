//! `augurctl image rpull`: arguments, progress lines on stderr, and the call into
//! `augur_snapshotter::rpull`.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use augur_snapshotter::containerd::{Containerd, DEFAULT_ADDRESS, DEFAULT_NAMESPACE};
use augur_snapshotter::registry::{Platform, Registry, RegistryConfig};
use augur_snapshotter::rpull::{self, Event, LayerOutcome, PullOptions};

/// Arguments of `augurctl image rpull`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image, e.g. `registry.example:5000/app:1.0` or `…/app@sha256:…`.
    reference: String,
    /// containerd's socket.
    #[arg(long, short = 'a', value_name = "SOCKET", default_value = DEFAULT_ADDRESS)]
    address: PathBuf,
    /// containerd namespace to pull into.
    #[arg(long, short = 'n', value_name = "NAME", default_value = DEFAULT_NAMESPACE)]
    namespace: String,
    /// The snapshotter to unpack on, as named in containerd's config.
    #[arg(long, value_name = "NAME", default_value = rpull::DEFAULT_SNAPSHOTTER)]
    snapshotter: String,
    /// Platform to pick from a multi-platform image, e.g. `linux/arm64` (default: this host's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// containerd's registry config directory (`<dir>/<host>/hosts.toml`: mirrors, TLS, headers).
    #[arg(long, value_name = "DIR")]
    hosts_dir: Option<PathBuf>,
    /// A registry (`host[:port]`) that may be reached over plain HTTP; loopback always may.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registries: Vec<String>,
    /// Print nothing but errors.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// Runs the pull and reports it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let platform = args
        .platform
        .as_deref()
        .map(Platform::parse)
        .transpose()
        .context("--platform")?;
    let registry = Registry::new(RegistryConfig {
        hosts_dir: args.hosts_dir.clone(),
        insecure_hosts: args.insecure_registries.clone(),
        ..RegistryConfig::default()
    })?;
    let containerd = Containerd::connect(&args.address, &args.namespace).await?;
    let opts = PullOptions {
        snapshotter: args.snapshotter.clone(),
        platform,
        ..PullOptions::default()
    };
    let quiet = args.quiet;
    let mut report = |e: Event| {
        if !quiet {
            let _ = writeln!(std::io::stderr(), "{}", describe(&e));
        }
    };
    let pulled = rpull::rpull(&containerd, &registry, &args.reference, &opts, &mut report)
        .await
        .with_context(|| format!("rpull {}", args.reference))?;
    if !quiet {
        let lazy = pulled
            .layers
            .iter()
            .filter(|l| **l == LayerOutcome::Lazy)
            .count();
        eprintln!(
            "pulled {} into namespace {} on snapshotter {}: {lazy} of {} layer(s) lazy",
            pulled.name,
            args.namespace,
            args.snapshotter,
            pulled.layers.len()
        );
    }
    Ok(())
}

fn describe(e: &Event) -> String {
    match e {
        Event::Resolved { manifest, layers } => {
            format!("resolved manifest {manifest} ({layers} layer(s))")
        }
        Event::Layer {
            index,
            count,
            digest,
            size,
            outcome,
        } => {
            let what = match outcome {
                LayerOutcome::Lazy => "lazy (remote)".to_owned(),
                LayerOutcome::Fetched { bytes } => {
                    format!("fetched {} and unpacked", mib(*bytes))
                }
                LayerOutcome::Present => "already present".to_owned(),
            };
            format!(
                "layer {}/{count} {digest} ({}): {what}",
                index + 1,
                mib(*size)
            )
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
