//! One layer: copied as it is if it is eStargz already, otherwise rewritten as eStargz into a
//! temporary file and uploaded from it.
//!
//! The rewrite streams (see `streams.rs`): a registry layer is read from the network as it is
//! converted, with a bounded channel between the download (async) and the converting thread
//! (blocking pool: gunzip, tar, gzip, sha256), so the source is read once and never stored; a
//! layout layer is read from its file. The source digest and size are checked once the whole
//! blob has gone through, before anything is uploaded. The temporary file is deleted as soon as
//! it is stored.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use futures::StreamExt;
use oci_client::manifest::OciDescriptor;
use tokio::sync::mpsc;

use super::ConvertError;
use super::image::{self, Encoding};
use super::progress::{Event, LayerId, LayerOutcome, Progress};
use super::scratch::Scratch;
use super::source::{Blob, Remote, Source};
use super::streams::{
    CHANNEL_CHUNKS, Cancelled, ChannelReader, Counted, Decoded, DownloadStopped, Meter, Piece,
    Verified, is,
};
use super::target::{FileUse, Target};
use crate::estargz::{
    FOOTER_SIZE, FormatError, TOC_DIGEST_ANNOTATION, WriteSummary, WriterOptions, parse_footer,
    write_estargz,
};

/// What one layer conversion needs.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub source: &'a Source,
    pub target: &'a Target,
    pub scratch: &'a Scratch,
    pub writer: &'a WriterOptions,
    pub progress: &'a Progress,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").finish_non_exhaustive()
    }
}

/// A layer in the converted image.
#[derive(Debug, Clone)]
pub(crate) struct Done {
    /// Its descriptor in the new manifest.
    pub desc: OciDescriptor,
    /// Its diff ID, if it changed (`None`: keep the config's).
    pub diff_id: Option<String>,
}

/// Converts (or copies) `desc` and stores the result at the destination.
pub(crate) async fn convert(
    ctx: Ctx<'_>,
    id: LayerId,
    desc: &OciDescriptor,
) -> Result<Done, ConvertError> {
    let size = u64::try_from(desc.size).map_err(|_| ConvertError::Corrupt {
        what: format!("layer {}", desc.digest),
        detail: format!("has size {}", desc.size),
    })?;
    (ctx.progress)(&Event::LayerStart {
        layer: id.clone(),
        media_type: desc.media_type.clone(),
        size,
    });
    if is_estargz(ctx, desc, size).await? {
        let uploaded = copy(ctx, &id, desc, size).await?;
        (ctx.progress)(&Event::LayerDone {
            layer: id,
            outcome: LayerOutcome::AlreadyEstargz { uploaded },
        });
        return Ok(Done {
            desc: image::kept_layer(desc),
            diff_id: None,
        });
    }
    let encoding = image::encoding(desc)?;
    let out = ctx.scratch.file("estargz");
    let result = rewrite(ctx, &id, desc, size, encoding, &out).await;
    let stored = match result {
        Ok(summary) => store(ctx, &id, &out, &summary)
            .await
            .map(|up| (summary, up)),
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&out);
    let (summary, uploaded) = stored?;
    (ctx.progress)(&Event::LayerDone {
        layer: id,
        outcome: LayerOutcome::Converted {
            digest: summary.blob_digest.clone(),
            size: summary.blob_size,
            uploaded,
        },
    });
    Ok(Done {
        desc: image::estargz_layer(desc, &summary),
        diff_id: Some(summary.diff_id),
    })
}

/// An eStargz layer: gzip, with a TOC digest annotation, ending in an eStargz footer. (The TOC
/// itself is checked against the annotation by whoever pulls it lazily.)
async fn is_estargz(ctx: Ctx<'_>, desc: &OciDescriptor, size: u64) -> Result<bool, ConvertError> {
    let annotated = image::annotations(desc).contains_key(TOC_DIGEST_ANNOTATION);
    if !annotated || image::encoding(desc).ok() != Some(Encoding::Gzip) || size < FOOTER_SIZE {
        return Ok(false);
    }
    let tail = ctx.source.tail(&desc.digest, size, FOOTER_SIZE).await?;
    let ok = parse_footer(&tail).is_ok();
    if !ok {
        tracing::info!(layer = %desc.digest, "layer has a TOC digest annotation but no eStargz footer; converting it");
    }
    Ok(ok)
}

/// Copies an eStargz layer unchanged; false if the destination had it.
async fn copy(
    ctx: Ctx<'_>,
    id: &LayerId,
    desc: &OciDescriptor,
    size: u64,
) -> Result<bool, ConvertError> {
    if ctx.target.has_blob(&desc.digest).await? {
        return Ok(false);
    }
    let sent = upload_progress(ctx, id, size);
    match ctx.source.blob(&desc.digest)? {
        Blob::File(path) => {
            ctx.target
                .put_file(ctx.scratch, &path, size, &desc.digest, FileUse::Copy, sent)
                .await
        }
        Blob::Remote(remote) => {
            let tmp = ctx.scratch.file("copy");
            let result = match remote.download(&tmp).await {
                Ok(()) => {
                    ctx.target
                        .put_file(ctx.scratch, &tmp, size, &desc.digest, FileUse::Move, sent)
                        .await
                }
                Err(e) => Err(e),
            };
            let _ = std::fs::remove_file(&tmp);
            result
        }
    }
}

/// Stores the converted blob; false if the destination had it.
async fn store(
    ctx: Ctx<'_>,
    id: &LayerId,
    out: &Path,
    s: &WriteSummary,
) -> Result<bool, ConvertError> {
    let sent = upload_progress(ctx, id, s.blob_size);
    ctx.target
        .put_file(
            ctx.scratch,
            out,
            s.blob_size,
            &s.blob_digest,
            FileUse::Move,
            sent,
        )
        .await
}

fn upload_progress(ctx: Ctx<'_>, id: &LayerId, total: u64) -> crate::registry::SendProgress {
    let (progress, layer) = (ctx.progress.clone(), id.clone());
    Arc::new(move |sent| {
        progress(&Event::Uploading {
            layer: layer.clone(),
            sent,
            total,
        });
    })
}

/// What the converting thread needs to know about the layer.
struct Job {
    digest: String,
    media_type: String,
    size: u64,
    encoding: Encoding,
    out: std::path::PathBuf,
    writer: WriterOptions,
    meter: Arc<Meter>,
    cancel: Arc<AtomicBool>,
}

/// Writes the eStargz form of the layer to `out`.
async fn rewrite(
    ctx: Ctx<'_>,
    id: &LayerId,
    desc: &OciDescriptor,
    size: u64,
    encoding: Encoding,
    out: &Path,
) -> Result<WriteSummary, ConvertError> {
    let (progress, layer) = (ctx.progress.clone(), id.clone());
    let job = Job {
        digest: desc.digest.clone(),
        media_type: desc.media_type.clone(),
        size,
        encoding,
        out: out.to_path_buf(),
        writer: ctx.writer.clone(),
        meter: Meter::new(move |read, written| {
            progress(&Event::Converting {
                layer: layer.clone(),
                read,
                written,
            });
        }),
        cancel: ctx.scratch.cancel_flag(),
    };
    let started = Instant::now();
    let summary = match ctx.source.blob(&desc.digest)? {
        Blob::File(path) => {
            ctx.scratch
                .blocking(move || {
                    let input =
                        File::open(&path).map_err(ConvertError::io("cannot read", &path))?;
                    job.run(input)
                })
                .await?
        }
        Blob::Remote(remote) => {
            let stream = remote.stream().await?;
            let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
            let converting = ctx
                .scratch
                .blocking(move || job.run(ChannelReader::new(rx)));
            let (converted, fed) = tokio::join!(converting, feed(&remote, stream, tx));
            fed?; // a download error explains a failed conversion better than the conversion
            converted?
        }
    };
    tracing::debug!(layer = %desc.digest, estargz = %summary.blob_digest,
        elapsed_ms = started.elapsed().as_millis() as u64, "layer converted");
    Ok(summary)
}

/// Sends the download into the channel; stops quietly if the converting side has stopped.
async fn feed(
    remote: &Remote<'_>,
    mut stream: futures::stream::BoxStream<
        'static,
        Result<bytes::Bytes, crate::registry::RegistryError>,
    >,
    tx: mpsc::Sender<Piece>,
) -> Result<(), ConvertError> {
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| remote.stream_error(e))?;
        if tx.send(Piece::Data(chunk)).await.is_err() {
            return Ok(());
        }
    }
    let _ = tx.send(Piece::End).await;
    Ok(())
}

impl Job {
    /// Runs on the blocking pool: decode, rewrite, drain, verify.
    fn run(self, input: impl std::io::Read) -> Result<WriteSummary, ConvertError> {
        let verified = Verified::new(input, self.meter.clone(), self.cancel.clone());
        let mut decoded = match self.encoding {
            Encoding::Gzip => Decoded::Gzip(flate2::read::MultiGzDecoder::new(verified)),
            Encoding::Tar => Decoded::Plain(verified),
        };
        let file = File::create(&self.out).map_err(ConvertError::io("cannot create", &self.out))?;
        let written = write_estargz(
            &mut decoded,
            Counted::new(file, self.meter.clone()),
            &self.writer,
        );
        let summary = written.map_err(|e| self.writer_error(e))?;
        let (digest, len) = decoded
            .drain()
            .and_then(Verified::finish)
            .map_err(|e| self.read_error(e))?;
        if digest != self.digest || len != self.size {
            return Err(ConvertError::Corrupt {
                what: format!("layer {}", self.digest),
                detail: format!(
                    "the {len} bytes read have digest {digest}, the manifest says {} bytes with \
                     digest {}; the source is corrupt or changed while it was read",
                    self.size, self.digest
                ),
            });
        }
        Ok(summary)
    }

    fn writer_error(&self, e: FormatError) -> ConvertError {
        match e {
            FormatError::InputTar { source } => self.read_error(source),
            FormatError::Output { source } => ConvertError::io("cannot write", &self.out)(source),
            other => ConvertError::Format {
                digest: self.digest.clone(),
                media_type: self.media_type.clone(),
                source: other,
            },
        }
    }

    /// A failure reading the layer: cancelled, the download stopped (its own error is reported
    /// instead), or content that is not what the media type says.
    fn read_error(&self, e: std::io::Error) -> ConvertError {
        if is::<Cancelled>(&e) || is::<DownloadStopped>(&e) {
            return ConvertError::Interrupted;
        }
        let what = match self.encoding {
            Encoding::Gzip => "a gzip-compressed tar",
            Encoding::Tar => "a tar",
        };
        ConvertError::Corrupt {
            what: format!("layer {} ({})", self.digest, self.media_type),
            detail: format!("does not read as {what}: {e}"),
        }
    }
}
