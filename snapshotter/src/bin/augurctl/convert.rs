//! `augurctl image convert`: flags, progress on stderr (a bar per layer in flight when stderr is
//! a terminal, lines otherwise), the summary line (or `--json`) on stdout.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use augur_snapshotter::convert::{
    self, ConvertError, ConvertOptions, Event, LayerId, LayerOutcome, Platforms, Report,
};
use augur_snapshotter::estargz::{DEFAULT_CHUNK_SIZE, WriterOptions};
use augur_snapshotter::registry::{Platform, RegistryConfig};

/// Convert an image to eStargz, so Augur can pull it lazily.
///
/// SRC and DST are registry references (host:port/repo:tag, or host:port/repo@sha256:… for SRC)
/// or OCI image layouts (oci:DIR or oci:DIR:TAG, as skopeo writes them). Plain HTTP is used only for loopback
/// registries and --insecure-host; credentials come from Docker's config.json.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image to convert.
    #[arg(value_name = "SRC")]
    src: String,
    /// Where to store the eStargz image (a registry tag or an OCI layout).
    #[arg(value_name = "DST")]
    dst: String,
    /// Platform to convert from a multi-platform image: os/arch[/variant] (default: this
    /// host's). The result is a single-platform image.
    #[arg(long, value_name = "PLATFORM", conflicts_with = "all_platforms")]
    platform: Option<String>,
    /// Convert every platform of a multi-platform image and write an index.
    #[arg(long)]
    all_platforms: bool,
    /// Largest chunk of a file, in bytes (ctr-remote's --estargz-chunk-size).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_CHUNK_SIZE,
          alias = "estargz-chunk-size")]
    chunk_size: u64,
    /// Let chunks smaller than this share a gzip member, in bytes; 0: one member per chunk
    /// (ctr-remote's --estargz-min-chunk-size).
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 0,
        alias = "estargz-min-chunk-size"
    )]
    min_chunk_size: u64,
    /// gzip level, 0-9 (ctr-remote's --estargz-compression-level).
    #[arg(
        long,
        value_name = "LEVEL",
        default_value_t = 9,
        alias = "estargz-compression-level"
    )]
    compression_level: u32,
    /// Directory for temporary files (one eStargz layer per job at a time) [default: the
    /// system's temporary directory].
    #[arg(long, value_name = "DIR")]
    tmp_dir: Option<PathBuf>,
    /// Layers converted at the same time.
    #[arg(long, value_name = "N", default_value_t = 2)]
    jobs: usize,
    /// containerd's hosts.toml directory (its config_path): mirrors, CA certificates,
    /// skip_verify. A missing directory means none.
    #[arg(long, value_name = "DIR", default_value = "/etc/containerd/certs.d")]
    hosts_dir: PathBuf,
    /// Directory holding Docker's config.json [default: $DOCKER_CONFIG, else ~/.docker].
    #[arg(long, value_name = "DIR")]
    docker_config: Option<PathBuf>,
    /// A host or host:port that may be reached over plain HTTP (loopback always may).
    /// Repeatable.
    #[arg(long, value_name = "HOST")]
    insecure_host: Vec<String>,
    /// No progress on stderr; only errors and the summary line.
    #[arg(long, short)]
    quiet: bool,
    /// Print the summary as JSON on stdout (DST, digest, media type, per image: platform,
    /// digests, layers converted and kept, bytes before and after).
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let opts = options(&args)?;
    let renderer = Arc::new(Renderer::new(args.quiet));
    let r = renderer.clone();
    let progress: convert::Progress = Arc::new(move |e: &Event| r.event(e));
    let interrupt = crate::interrupted()?;
    match convert::convert(&args.src, &args.dst, &opts, progress, interrupt).await {
        Ok(report) => {
            renderer.finish();
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summary_json(&args, &report))?
                );
            } else {
                println!("{}", summary(&args.src, &report));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(ConvertError::Interrupted) => {
            eprintln!("augurctl: {}", ConvertError::Interrupted);
            Ok(ExitCode::from(crate::INTERRUPTED))
        }
        Err(e) => Err(e.into()),
    }
}

fn options(args: &Args) -> anyhow::Result<ConvertOptions> {
    let platforms = match (&args.platform, args.all_platforms) {
        (_, true) => Platforms::All,
        (Some(p), false) => Platforms::One(Platform::parse(p)?),
        (None, false) => Platforms::Host,
    };
    Ok(ConvertOptions {
        platforms,
        writer: WriterOptions {
            chunk_size: args.chunk_size,
            min_chunk_size: args.min_chunk_size,
            compression_level: args.compression_level,
            ..WriterOptions::default()
        },
        tmp_dir: args.tmp_dir.clone().unwrap_or_else(std::env::temp_dir),
        jobs: args.jobs,
        registry: RegistryConfig {
            hosts_dir: Some(args.hosts_dir.clone()),
            docker_config: args.docker_config.clone(),
            insecure_hosts: args.insecure_host.clone(),
            ..RegistryConfig::default()
        },
    })
}

/// The last line: what DST names now.
fn summary(src: &str, r: &Report) -> String {
    let converted: usize = r.images.iter().map(|i| i.converted).sum();
    let kept: usize = r.images.iter().map(|i| i.kept).sum();
    let before: u64 = r.images.iter().map(|i| i.bytes.0).sum();
    let after: u64 = r.images.iter().map(|i| i.bytes.1).sum();
    let what = if r.images.len() > 1 || r.media_type.contains("index") {
        format!("index {} of {} images", r.digest, r.images.len())
    } else {
        format!("manifest {}", r.digest)
    };
    format!(
        "converted {src} to {}: {what}; {converted} layer(s) converted, {kept} already eStargz; \
         layers {} -> {}",
        r.reference,
        mib(before),
        mib(after)
    )
}

/// The summary as JSON (`--json`).
fn summary_json(args: &Args, r: &Report) -> serde_json::Value {
    let images: Vec<serde_json::Value> = r
        .images
        .iter()
        .map(|i| {
            serde_json::json!({
                "platform": i.platform,
                "source_digest": i.source_digest,
                "digest": i.digest,
                "converted": i.converted,
                "kept": i.kept,
                "bytes_before": i.bytes.0,
                "bytes_after": i.bytes.1,
            })
        })
        .collect();
    serde_json::json!({
        "src": args.src,
        "reference": r.reference,
        "digest": r.digest,
        "media_type": r.media_type,
        "images": images,
    })
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// How often a layer's byte counts are printed.
const EVERY: Duration = Duration::from_secs(2);

/// Prints progress to stderr: on a terminal, a bar per layer in flight (bytes read of its
/// size, then bytes stored) with the other lines above the bars; otherwise lines, at most one per
/// layer every [`EVERY`].
#[derive(Debug)]
struct Renderer {
    quiet: bool,
    bars: Option<indicatif::MultiProgress>,
    layers: Mutex<HashMap<(Option<String>, usize), Layer>>,
}

#[derive(Debug)]
struct Layer {
    started: Instant,
    printed: Instant,
    size: u64,
    bar: Option<indicatif::ProgressBar>,
}

impl Renderer {
    fn new(quiet: bool) -> Self {
        Renderer {
            quiet,
            bars: crate::progress::wanted(quiet).then(indicatif::MultiProgress::new),
            layers: Mutex::new(HashMap::new()),
        }
    }

    /// A line above the bars, or on stderr.
    fn line(&self, text: &str) {
        match &self.bars {
            Some(m) => {
                let _ = m.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    /// Removes whatever bars remain.
    fn finish(&self) {
        if let Some(m) = &self.bars {
            let _ = m.clear();
        }
    }

    /// A bar for a layer of `size` bytes, when bars are drawn.
    fn layer_bar(&self, layer: &LayerId, size: u64) -> Option<indicatif::ProgressBar> {
        let m = self.bars.as_ref()?;
        Some(m.add(crate::progress::bytes(size, &tag(layer), self.quiet)))
    }

    fn event(&self, e: &Event) {
        if self.quiet {
            return;
        }
        let mut layers = self.layers.lock().unwrap_or_else(PoisonError::into_inner);
        match e {
            Event::Image {
                platform,
                digest,
                layers: n,
            } => {
                let p = platform
                    .as_deref()
                    .map(|p| format!(" for {p}"))
                    .unwrap_or_default();
                self.line(&format!("image {digest}{p}: {n} layer(s)"));
            }
            Event::LayerStart {
                layer,
                media_type,
                size,
            } => {
                let now = Instant::now();
                let state = Layer {
                    started: now,
                    printed: now,
                    size: *size,
                    bar: self.layer_bar(layer, *size),
                };
                layers.insert(key(layer), state);
                self.line(&format!(
                    "{} {}: {media_type}, {}",
                    tag(layer),
                    layer.digest,
                    mib(*size)
                ));
            }
            Event::Converting {
                layer,
                read,
                written,
            } => {
                let Some(l) = layers.get_mut(&key(layer)) else {
                    return;
                };
                if let Some(bar) = &l.bar {
                    bar.set_position(*read);
                } else if l.due() {
                    let rate = rate(*read, l.started);
                    let (read, size, written) = (mib(*read), mib(l.size), mib(*written));
                    eprintln!(
                        "{} read {read} of {size}, wrote {written}, {rate}",
                        tag(layer)
                    );
                }
            }
            Event::Uploading { layer, sent, total } => {
                let Some(l) = layers.get_mut(&key(layer)) else {
                    return;
                };
                if let Some(bar) = &l.bar {
                    bar.set_message(format!("{} storing", tag(layer)));
                    bar.set_length(*total);
                    bar.set_position(*sent);
                } else if l.due() {
                    eprintln!("{} storing: {} of {}", tag(layer), mib(*sent), mib(*total));
                }
            }
            Event::LayerDone { layer, outcome } => {
                if let Some(l) = layers.remove(&key(layer)) {
                    if let Some(bar) = &l.bar {
                        bar.finish_and_clear();
                    }
                    self.line(&format!("{} {}", tag(layer), done(&l, outcome)));
                }
            }
            Event::Stored {
                what,
                digest,
                reference,
            } => self.line(&format!("stored {what} {digest} as {reference}")),
        }
    }
}

impl Layer {
    /// True (and the clock restarted) if this layer's last line is [`EVERY`] old.
    fn due(&mut self) -> bool {
        let due = self.printed.elapsed() >= EVERY;
        if due {
            self.printed = Instant::now();
        }
        due
    }
}

/// The line that ends a layer.
fn done(l: &Layer, outcome: &LayerOutcome) -> String {
    let had = "; DST had it already";
    match outcome {
        LayerOutcome::Converted {
            digest,
            size,
            uploaded,
        } => format!(
            "eStargz {digest}, {} -> {} in {:.1} s ({}){}",
            mib(l.size),
            mib(*size),
            l.started.elapsed().as_secs_f64(),
            rate(l.size, l.started),
            if *uploaded { "" } else { had }
        ),
        LayerOutcome::AlreadyEstargz { uploaded: true } => "already eStargz, copied".to_owned(),
        LayerOutcome::AlreadyEstargz { uploaded: false } => format!("already eStargz{had}"),
    }
}

fn key(l: &LayerId) -> (Option<String>, usize) {
    (l.platform.clone(), l.index)
}

/// `[1/2]`, or `[linux/arm64 1/2]` for one platform of several.
fn tag(l: &LayerId) -> String {
    match &l.platform {
        Some(p) => format!("[{p} {}/{}]", l.index, l.count),
        None => format!("[{}/{}]", l.index, l.count),
    }
}

fn rate(bytes: u64, since: Instant) -> String {
    let secs = since.elapsed().as_secs_f64().max(0.001);
    format!("{:.1} MiB/s", bytes as f64 / f64::from(1 << 20) / secs)
}
