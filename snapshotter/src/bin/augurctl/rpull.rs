//! `augurctl image rpull`: arguments, progress on stderr (a bar of layers prepared when stderr is
//! a terminal, lines otherwise), the call into `augur_snapshotter::rpull`, and the result as text
//! or `--json` on stdout.

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
    /// Print nothing but errors (and the --json result).
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Print the result as JSON on stdout (image, target, chain ID, each layer's outcome).
    #[arg(long)]
    json: bool,
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
    let mut progress = Progress::new(args.quiet);
    let mut report = |e: Event| progress.event(e);
    let pulled = rpull::rpull(&containerd, &registry, &args.reference, &opts, &mut report)
        .await
        .with_context(|| format!("rpull {}", args.reference))?;
    progress.bar.finish_and_clear();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&result_json(&args, &pulled, &progress.layers))?
        );
    } else if !args.quiet {
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

/// What the pull reports as it goes: a bar of layers on a terminal, else one line per event;
/// and each layer's digest and size, for the JSON result.
struct Progress {
    quiet: bool,
    bar: indicatif::ProgressBar,
    layers: Vec<(String, u64)>,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        Progress {
            quiet,
            bar: crate::progress::items(0, "layers prepared", quiet),
            layers: Vec::new(),
        }
    }

    fn event(&mut self, e: Event) {
        match &e {
            Event::Resolved { layers, .. } => {
                self.bar.set_length(*layers as u64);
                self.layers = vec![(String::new(), 0); *layers];
            }
            Event::Layer {
                index,
                digest,
                size,
                ..
            } => {
                if let Some(slot) = self.layers.get_mut(*index) {
                    *slot = (digest.clone(), *size);
                }
                self.bar.inc(1);
            }
        }
        if self.bar.is_hidden() {
            if !self.quiet {
                let _ = writeln!(std::io::stderr(), "{}", describe(&e));
            }
        } else {
            self.bar.println(describe(&e));
        }
    }
}

fn result_json(args: &Args, pulled: &rpull::Pulled, layers: &[(String, u64)]) -> serde_json::Value {
    let layers: Vec<serde_json::Value> = pulled
        .layers
        .iter()
        .zip(layers)
        .map(|(outcome, (digest, size))| {
            let (name, fetched) = match outcome {
                LayerOutcome::Lazy => ("lazy", 0),
                LayerOutcome::Fetched { bytes } => ("fetched", *bytes),
                LayerOutcome::Present => ("present", 0),
            };
            serde_json::json!({
                "digest": digest, "size": size, "outcome": name, "fetched_bytes": fetched,
            })
        })
        .collect();
    serde_json::json!({
        "name": pulled.name,
        "namespace": args.namespace,
        "snapshotter": args.snapshotter,
        "target": pulled.target,
        "chain_id": pulled.chain_id,
        "layers": layers,
    })
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
