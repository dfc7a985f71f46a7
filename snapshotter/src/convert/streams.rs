//! The byte plumbing of one layer's conversion, all of it on a blocking thread:
//!
//! ```text
//! registry stream ─(bounded channel)─▶ ChannelReader ─┐
//! layout blob file ───────────────────────────────────┴▶ Verified ▶ gunzip? ▶ eStargz writer ▶ Counted ▶ temp file
//! ```
//!
//! [`Verified`] hashes and counts the compressed input as the decoder pulls it, so the source
//! digest is checked without a second pass; [`Counted`] counts the output. Both report to a
//! [`Meter`] for progress, and [`Verified`] stops with an error as soon as the conversion is
//! cancelled, so a blocking job never outlives a Ctrl-C by more than one read.
//!
//! Memory stays bounded whatever the layer size: the channel holds at most [`CHANNEL_CHUNKS`]
//! network chunks, the readers and writers small buffers.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::estargz::format_digest;

/// Network chunks queued between the download and the converting thread.
pub(crate) const CHANNEL_CHUNKS: usize = 16;

/// What the download side sends: data, the end, or why it stopped.
#[derive(Debug)]
pub(crate) enum Piece {
    Data(Bytes),
    /// The whole blob was sent.
    End,
}

/// Marker inside an [`io::Error`]: the conversion was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("conversion cancelled")]
pub(crate) struct Cancelled;

/// Marker inside an [`io::Error`]: the download ended early (its error is reported by the
/// download side).
#[derive(Debug, thiserror::Error)]
#[error("the download of the layer stopped")]
pub(crate) struct DownloadStopped;

/// Reads what the download side sends through a bounded channel (blocking receive).
#[derive(Debug)]
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<Piece>,
    current: Bytes,
    ended: bool,
}

impl ChannelReader {
    pub(crate) fn new(rx: mpsc::Receiver<Piece>) -> Self {
        ChannelReader {
            rx,
            current: Bytes::new(),
            ended: false,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Piece::Data(b)) => self.current = b,
                Some(Piece::End) => self.ended = true,
                None => return Err(io::Error::other(DownloadStopped)),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Progress counters of one layer, shared by its reader and writer.
pub(crate) struct Meter {
    pub(crate) read: AtomicU64,
    pub(crate) written: AtomicU64,
    report: Box<dyn Fn(u64, u64) + Send + Sync>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("read", &self.read)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl Meter {
    /// Counters that call `report(read, written)` whenever either moves.
    pub(crate) fn new(report: impl Fn(u64, u64) + Send + Sync + 'static) -> Arc<Meter> {
        Arc::new(Meter {
            read: AtomicU64::new(0),
            written: AtomicU64::new(0),
            report: Box::new(report),
        })
    }

    fn add_read(&self, n: u64) {
        let r = self.read.fetch_add(n, Ordering::Relaxed) + n;
        (self.report)(r, self.written.load(Ordering::Relaxed));
    }

    fn add_written(&self, n: u64) {
        let w = self.written.fetch_add(n, Ordering::Relaxed) + n;
        (self.report)(self.read.load(Ordering::Relaxed), w);
    }
}

/// Hashes and counts what passes through; refuses to read once `cancel` is set.
#[derive(Debug)]
pub(crate) struct Verified<R> {
    inner: R,
    hash: Sha256,
    len: u64,
    meter: Arc<Meter>,
    cancel: Arc<AtomicBool>,
}

impl<R: Read> Verified<R> {
    pub(crate) fn new(inner: R, meter: Arc<Meter>, cancel: Arc<AtomicBool>) -> Self {
        Verified {
            inner,
            hash: Sha256::new(),
            len: 0,
            meter,
            cancel,
        }
    }

    /// Reads what is left (the decoder may stop before the end of the blob) and returns the
    /// digest and length of everything read.
    pub(crate) fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((format_digest(&self.hash.finalize().into()), self.len))
    }
}

impl<R: Read> Read for Verified<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other(Cancelled));
        }
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        self.meter.add_read(n as u64);
        Ok(n)
    }
}

/// Counts what is written into the meter.
#[derive(Debug)]
pub(crate) struct Counted<W> {
    inner: W,
    meter: Arc<Meter>,
}

impl<W: Write> Counted<W> {
    pub(crate) fn new(inner: W, meter: Arc<Meter>) -> Self {
        Counted { inner, meter }
    }
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.meter.add_written(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The layer's decompressed stream: gunzip (all members) or the bytes as they are.
#[derive(Debug)]
pub(crate) enum Decoded<R: Read> {
    Gzip(flate2::read::MultiGzDecoder<Verified<R>>),
    Plain(Verified<R>),
}

impl<R: Read> Decoded<R> {
    /// Reads the decompressed stream to its end (anything after the tar's end marker, and any
    /// gzip trailer), then hands back the verified reader.
    pub(crate) fn drain(mut self) -> io::Result<Verified<R>> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(match self {
            Decoded::Gzip(d) => d.into_inner(),
            Decoded::Plain(v) => v,
        })
    }
}

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoded::Gzip(d) => d.read(buf),
            Decoded::Plain(v) => v.read(buf),
        }
    }
}

/// True if `e`, or the error it wraps, carries the marker `M`.
pub(crate) fn is<M: std::error::Error + 'static>(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<M>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter() -> Arc<Meter> {
        Meter::new(|_, _| {})
    }

    #[test]
    fn channel_reader_needs_the_end_marker() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Piece::Data(Bytes::from_static(b"abc")))
            .unwrap();
        tx.try_send(Piece::Data(Bytes::from_static(b"de"))).unwrap();
        tx.try_send(Piece::End).unwrap();
        let mut out = String::new();
        ChannelReader::new(rx).read_to_string(&mut out).unwrap();
        assert_eq!(out, "abcde");

        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Piece::Data(Bytes::from_static(b"abc")))
            .unwrap();
        drop(tx); // the download side gave up without End
        let e = ChannelReader::new(rx)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(is::<DownloadStopped>(&e), "{e}");
    }

    #[test]
    fn verified_hashes_everything_even_after_the_decoder_stops() {
        let m = meter();
        let mut v = Verified::new(&b"hello world"[..], m.clone(), Arc::default());
        let mut first = [0u8; 5];
        v.read_exact(&mut first).unwrap();
        let (digest, len) = v.finish().unwrap();
        assert_eq!(len, 11);
        assert_eq!(
            digest,
            "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(m.read.load(Ordering::Relaxed), 11);
    }

    #[test]
    fn verified_stops_when_cancelled() {
        let cancel = Arc::new(AtomicBool::new(false));
        let mut v = Verified::new(&b"data"[..], meter(), cancel.clone());
        cancel.store(true, Ordering::Relaxed);
        let e = v.read(&mut [0u8; 4]).unwrap_err();
        assert!(is::<Cancelled>(&e), "{e}");
    }

    #[test]
    fn gzip_members_are_all_decoded_and_the_input_drained() {
        let gz = |data: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        };
        let blob = [gz(b"one "), gz(b"two")].concat();
        let v = Verified::new(&blob[..], meter(), Arc::default());
        let mut d = Decoded::Gzip(flate2::read::MultiGzDecoder::new(v));
        let mut first = [0u8; 4];
        d.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"one ");
        let (_, len) = d.drain().unwrap().finish().unwrap();
        assert_eq!(len, blob.len() as u64);
    }
}
