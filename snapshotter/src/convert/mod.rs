//! # Image conversion to eStargz (`augurctl image convert`)
//!
//! Reads an image from a registry or an OCI layout, rewrites every layer as eStargz with
//! [`crate::estargz::write_estargz`], and writes the image (new layers, config with the new
//! diff IDs, OCI manifest, and an index with `--all-platforms`) to a registry or an OCI layout,
//! so users need no other tool to make images Augur can pull lazily. What it writes is what
//! `ctr-remote image convert --estargz --oci` writes: same TOC, footer, chunking, layer
//! annotations and media types (decision 0008).
//!
//! | module | role |
//! |---|---|
//! | [`location`] | SRC/DST syntax: registry references, `oci:DIR[:TAG]` |
//! | `source`, `target` | reading and writing images, registry or layout |
//! | `layout` | OCI image layout files (blocking) |
//! | `image` | manifest, config and index JSON; which layers convert (pure) |
//! | `layer` | one layer: copy an eStargz one, else convert and store |
//! | `streams` | the byte pipeline of a conversion: channel, verify, decode, count |
//! | `scratch` | the temporary directory, blocking jobs, cancellation |
//! | [`progress`] | the [`Event`]s a caller renders |
//! | `error` | [`ConvertError`] |
//!
//! ## Threads, memory, disk
//! Network I/O runs on the caller's tokio runtime; gunzip, tar, gzip and hashing run on the
//! blocking pool, one job per layer in flight (`jobs` layers at a time). Memory is bounded: a
//! layer is streamed, never held. Disk: one eStargz file per layer in flight, in a temporary
//! directory removed when [`convert`] returns, whatever happened (also on SIGINT/SIGTERM, via
//! the `interrupt` future).
//!
//! ## Order of writes
//! Blobs first, then each manifest, the tag last: until the tag moves, DST names what it named
//! before, and an interrupted run leaves at most unreferenced blobs behind.

mod error;
mod image;
mod layer;
mod layout;
pub mod location;
pub mod progress;
mod scratch;
mod source;
mod streams;
mod target;

use std::future::Future;
use std::path::PathBuf;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use oci_client::manifest::{OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, OciImageIndex};

pub use error::ConvertError;
pub use location::{Location, Side};
pub use progress::{Event, LayerId, LayerOutcome, Progress};

use crate::estargz::{WriterOptions, format_digest, sha256};
use crate::registry::{Platform, Registry, RegistryConfig, offered, select};
use layer::Ctx;
use layout::Layout;
use scratch::Scratch;
use source::{Doc, Source, blocking};
use target::Target;

/// Which manifests of a multi-platform source are converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Platforms {
    /// The host's (`linux/amd64` here), written as a single image.
    Host,
    /// This one, written as a single image.
    One(Platform),
    /// Every platform image of the index, written as an index.
    All,
}

/// How to convert.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// Which platforms of an index.
    pub platforms: Platforms,
    /// Chunk size, compression level, landmark (defaults: `ctr-remote`'s).
    pub writer: WriterOptions,
    /// Where the temporary directory is made.
    pub tmp_dir: PathBuf,
    /// Layers converted at the same time (at least 1).
    pub jobs: usize,
    /// How registries are reached (hosts.toml, credentials, plain-HTTP hosts).
    pub registry: RegistryConfig,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Report {
    /// Where the result is (DST as given, or the layout).
    pub reference: String,
    /// Digest of the manifest (or index) DST now names.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Per converted image.
    pub images: Vec<ImageReport>,
}

/// One converted image manifest.
#[derive(Debug, Clone)]
pub struct ImageReport {
    /// Its platform, when chosen from an index.
    pub platform: Option<String>,
    /// The source manifest's digest.
    pub source_digest: String,
    /// The new manifest's digest.
    pub digest: String,
    /// Layers rewritten as eStargz.
    pub converted: usize,
    /// Layers that were eStargz already and were copied as they are.
    pub kept: usize,
    /// Total size of the source layers and of the new ones.
    pub bytes: (u64, u64),
}

/// Converts `src` to eStargz and stores it as `dst`. Stops with [`ConvertError::Interrupted`]
/// when `interrupt` completes; the temporary directory is gone when this returns.
pub async fn convert(
    src: &str,
    dst: &str,
    opts: &ConvertOptions,
    progress: Progress,
    interrupt: impl Future<Output = ()>,
) -> Result<Report, ConvertError> {
    let src = Location::parse(src, Side::Src)?;
    let dst = Location::parse(dst, Side::Dst)?;
    check_options(opts)?;
    let scratch = Scratch::new(&opts.tmp_dir)?;
    let result = tokio::select! {
        r = run(&src, &dst, opts, &progress, &scratch) => r,
        () = interrupt => Err(ConvertError::Interrupted),
    };
    scratch.close().await;
    result
}

fn check_options(opts: &ConvertOptions) -> Result<(), ConvertError> {
    let w = &opts.writer;
    if w.chunk_size == 0 || w.compression_level > 9 || opts.jobs == 0 {
        return Err(ConvertError::Options(format!(
            "--chunk-size must be > 0, --compression-level 0-9 and --jobs ≥ 1 (got {}, {}, {})",
            w.chunk_size, w.compression_level, opts.jobs
        )));
    }
    Ok(())
}

async fn run(
    src: &Location,
    dst: &Location,
    opts: &ConvertOptions,
    progress: &Progress,
    scratch: &Scratch,
) -> Result<Report, ConvertError> {
    // Reads no files until a registry is used.
    let client = Registry::new(opts.registry.clone())
        .map_err(ConvertError::registry("the registry configuration"))?;
    let source = open_source(src, client.clone()).await?;
    let top = source.top().await?;
    let target = open_target(dst, client).await?;
    target.check(&top.digest).await?;
    let ctx = Ctx {
        source: &source,
        target: &target,
        scratch,
        writer: &opts.writer,
        progress,
    };
    if !top.index {
        return single(ctx, opts.jobs, &top, None).await;
    }
    let index = image::parse_index(&top.bytes, &top.digest)?;
    let want = match &opts.platforms {
        Platforms::All => return all_platforms(ctx, opts.jobs, &index).await,
        Platforms::Host => Platform::host(),
        Platforms::One(p) => p.clone(),
    };
    let entry = select(&index, &want).ok_or_else(|| ConvertError::Platform {
        image: source.name().to_owned(),
        wanted: want.to_string(),
        offered: offered(&index),
    })?;
    let doc = source.manifest(&entry.digest).await?;
    single(ctx, opts.jobs, &doc, image::platform_name(entry)).await
}

async fn open_source(loc: &Location, client: Registry) -> Result<Source, ConvertError> {
    Ok(match loc {
        Location::Registry { reference } => Source::Registry {
            client,
            reference: reference.clone(),
        },
        Location::Layout { dir, tag } => {
            let dir = dir.clone();
            let layout = blocking(move || Layout::open(&dir)).await?;
            Source::Layout {
                layout,
                tag: tag.clone(),
                display: loc.display(),
            }
        }
    })
}

async fn open_target(loc: &Location, client: Registry) -> Result<Target, ConvertError> {
    Ok(match loc {
        Location::Registry { reference } => Target::Registry {
            client,
            reference: reference.clone(),
        },
        Location::Layout { dir, tag } => {
            let tag = tag.clone().unwrap_or_else(|| "latest".to_owned());
            let display = format!("oci:{}:{tag}", dir.display());
            let dir = dir.clone();
            let layout = blocking(move || Layout::create(&dir)).await?;
            Target::Layout {
                layout,
                tag,
                display,
            }
        }
    })
}

/// Converts one image manifest and tags it.
async fn single(
    ctx: Ctx<'_>,
    jobs: usize,
    doc: &Doc,
    platform: Option<String>,
) -> Result<Report, ConvertError> {
    if doc.index {
        return Err(nested(doc));
    }
    let (new, report) = convert_image(ctx, jobs, doc, platform).await?;
    let reference = store(ctx, &new, true).await?;
    Ok(Report {
        reference,
        digest: new.digest,
        media_type: new.media_type,
        images: vec![report],
    })
}

/// Converts every platform image of `index` and tags a new index of them.
async fn all_platforms(
    ctx: Ctx<'_>,
    jobs: usize,
    index: &OciImageIndex,
) -> Result<Report, ConvertError> {
    let entries = image::platform_images(index);
    if entries.is_empty() {
        return Err(ConvertError::Unsupported {
            what: "index",
            digest: ctx.source.name().to_owned(),
            reason: "lists no platform images".to_owned(),
        });
    }
    let mut members = Vec::new();
    let mut reports = Vec::new();
    for entry in entries {
        let doc = ctx.source.manifest(&entry.digest).await?;
        if doc.index {
            return Err(nested(&doc));
        }
        let (new, report) = convert_image(ctx, jobs, &doc, image::platform_name(entry)).await?;
        store(ctx, &new, false).await?;
        members.push((entry, new.digest.clone(), new.bytes.len() as u64));
        reports.push(report);
    }
    let index = new_doc(
        OCI_IMAGE_INDEX_MEDIA_TYPE,
        true,
        image::index_bytes(index, &members),
    );
    let reference = store(ctx, &index, true).await?;
    Ok(Report {
        reference,
        digest: index.digest,
        media_type: index.media_type,
        images: reports,
    })
}

fn nested(doc: &Doc) -> ConvertError {
    ConvertError::Unsupported {
        what: "index",
        digest: doc.digest.clone(),
        reason: "is nested in another index; convert it by its own reference".to_owned(),
    }
}

async fn store(ctx: Ctx<'_>, doc: &Doc, tagged: bool) -> Result<String, ConvertError> {
    let reference = ctx.target.put_manifest(doc, tagged).await?;
    (ctx.progress)(&Event::Stored {
        what: if doc.index { "index" } else { "manifest" },
        digest: doc.digest.clone(),
        reference: reference.clone(),
    });
    Ok(reference)
}

fn new_doc(media_type: &str, index: bool, bytes: Vec<u8>) -> Doc {
    Doc {
        media_type: media_type.to_owned(),
        index,
        digest: format_digest(&sha256(&bytes)),
        bytes: Bytes::from(bytes),
    }
}

/// Converts the layers of one manifest (`jobs` at a time), then stores its config; returns the
/// new manifest (not stored yet).
async fn convert_image(
    ctx: Ctx<'_>,
    jobs: usize,
    doc: &Doc,
    platform: Option<String>,
) -> Result<(Doc, ImageReport), ConvertError> {
    let manifest = image::parse_manifest(&doc.bytes, &doc.digest)?;
    let count = manifest.layers.len();
    (ctx.progress)(&Event::Image {
        platform: platform.clone(),
        digest: doc.digest.clone(),
        layers: count,
    });
    let config_size = u64::try_from(manifest.config.size).unwrap_or(u64::MAX);
    let config = ctx
        .source
        .small_blob(&manifest.config.digest, config_size)
        .await?;
    let layers: Vec<layer::Done> = futures::stream::iter(manifest.layers.iter().enumerate())
        .map(|(i, desc)| {
            let id = LayerId {
                platform: platform.clone(),
                index: i + 1,
                count,
                digest: desc.digest.clone(),
            };
            layer::convert(ctx, id, desc)
        })
        .buffered(jobs)
        .try_collect()
        .await?;
    let diff_ids: Vec<Option<String>> = layers.iter().map(|l| l.diff_id.clone()).collect();
    let config = image::rewrite_config(&config, &manifest.config.digest, &diff_ids)?;
    let config_desc = image::config_descriptor(&manifest.config, &config);
    ctx.target
        .put_bytes(Bytes::from(config), &config_desc.digest)
        .await?;
    let size = |d: &oci_client::manifest::OciDescriptor| u64::try_from(d.size).unwrap_or(0);
    let report = ImageReport {
        platform,
        source_digest: doc.digest.clone(),
        digest: String::new(),
        converted: layers.iter().filter(|l| l.diff_id.is_some()).count(),
        kept: layers.iter().filter(|l| l.diff_id.is_none()).count(),
        bytes: (
            manifest.layers.iter().map(size).sum(),
            layers.iter().map(|l| size(&l.desc)).sum(),
        ),
    };
    let descs = layers.into_iter().map(|l| l.desc).collect();
    let new = new_doc(
        OCI_IMAGE_MEDIA_TYPE,
        false,
        image::manifest_bytes(&manifest, config_desc, descs),
    );
    let report = ImageReport {
        digest: new.digest.clone(),
        ..report
    };
    Ok((new, report))
}
