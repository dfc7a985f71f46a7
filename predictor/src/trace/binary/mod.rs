//! The on-disk trace encoding (`*.augtrace`): compact, append-only, torn-tail tolerant.
//!
//! ```text
//! file    := "AUGURTRC" version:u16le frame*
//! frame   := len:varint crc32(payload):u32le payload        (1 <= len <= 1 MiB)
//! payload := record+
//! record  := 1 run     image:str workload:str started_unix_ms:varint
//!                      n:varint layer:str*n  m:varint (key:str value:str)*m
//!          | 2 chunk   digest:[32] layer:varint size:varint file:str file_offset:varint
//!          | 3 access  dt_us:zigzag chunk:varint offset:varint len:varint source:u8
//!          | 4 end     t_us:varint
//! str     := len:varint utf8-bytes
//! ```
//!
//! The run record comes first and alone in its frame. Chunk records are numbered in order
//! (0, 1, ...) and precede the first access that names them; an access's time is a delta from
//! the previous access (zigzag, since FUSE threads may record slightly out of order). A frame
//! is written whole with one `write`, so a crash leaves at most one partial frame at the end:
//! the reader stops there and reports where ([`Decoded::torn_at`]). Damage before the last
//! frame is an error that names the file and byte offset.
//!
//! The writer buffers records and writes a frame when 32 KiB are pending or on
//! [`TraceWriter::flush`]; the header waits until the workload key is known (the label, or
//! the first [`crate::workload::SIGNATURE_CHUNKS`] distinct chunks).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Crc;

use super::codec::{put_signed, put_str, put_varint};
use super::{AccessSource, ChunkRecord, ChunkTable, RunHeader, Trace};
use crate::error::Error;
use crate::workload::{SignatureBuilder, WORKLOAD_LABEL};

/// The first eight bytes of every binary trace.
pub const MAGIC: &[u8; 8] = b"AUGURTRC";
/// The file extension the daemon uses.
pub const EXTENSION: &str = "augtrace";
const HEADER_LEN: usize = MAGIC.len() + 2;
const MAX_FRAME: usize = 1 << 20;
const FRAME_TARGET: usize = 32 << 10;

mod read;

pub use read::{Decoded, decode, read_file};

const TAG_RUN: u8 = 1;
const TAG_CHUNK: u8 = 2;
const TAG_ACCESS: u8 = 3;
const TAG_END: u8 = 4;

/// What a run looks like when it starts, before its workload key is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStart {
    /// Image reference.
    pub image: String,
    /// Layer digests, lowest first.
    pub layers: Vec<String>,
    /// Unix milliseconds.
    pub started_unix_ms: u64,
    /// Labels kept in the header; [`WORKLOAD_LABEL`] among them names the workload.
    pub labels: BTreeMap<String, String>,
}

/// Appends one run's trace to a file (or any writer) as it happens.
#[derive(Debug)]
pub struct TraceWriter<W: Write> {
    out: W,
    path: PathBuf,
    start: Option<RunStart>,
    signature: SignatureBuilder,
    table: ChunkTable,
    pending: Vec<u8>,
    last_t: u64,
    accesses: u64,
    max_accesses: u64,
    dropped: u64,
    failed: bool,
}

impl<W: Write> TraceWriter<W> {
    /// Writes the file header. `path` only names the destination in errors. At most
    /// `max_accesses` accesses are kept (the per-run retention bound); later ones are counted
    /// in [`Self::dropped`].
    pub fn new(mut out: W, path: &Path, start: RunStart, max_accesses: u64) -> Result<Self, Error> {
        let mut head = MAGIC.to_vec();
        head.extend_from_slice(&(super::FORMAT_VERSION as u16).to_le_bytes());
        out.write_all(&head)
            .map_err(|e| Error::io("write", path, e))?;
        let signature = SignatureBuilder::new(start.labels.get(WORKLOAD_LABEL).map(String::as_str));
        Ok(TraceWriter {
            out,
            path: path.to_owned(),
            start: Some(start),
            signature,
            table: ChunkTable::default(),
            pending: Vec::new(),
            last_t: 0,
            accesses: 0,
            max_accesses,
            dropped: 0,
            failed: false,
        })
    }

    /// Records one access. Writes a frame when enough is pending.
    pub fn access(
        &mut self,
        chunk: &ChunkRecord,
        t_us: u64,
        offset: u64,
        len: u32,
        source: AccessSource,
    ) -> Result<(), Error> {
        if self.accesses >= self.max_accesses {
            self.dropped += 1;
            return Ok(());
        }
        self.accesses += 1;
        self.signature.observe(chunk.digest);
        let (index, new) = self.table.intern(chunk);
        if new {
            encode_chunk(&mut self.pending, chunk);
        }
        self.pending.push(TAG_ACCESS);
        put_signed(&mut self.pending, time_delta(t_us, self.last_t));
        put_varint(&mut self.pending, u64::from(index));
        put_varint(&mut self.pending, offset);
        put_varint(&mut self.pending, u64::from(len));
        self.pending.push(source_byte(source));
        self.last_t = t_us.min(i64::MAX as u64);
        if self.signature.is_complete() {
            self.write_header()?;
        }
        if self.start.is_none() && self.pending.len() >= FRAME_TARGET {
            self.write_pending()?;
        }
        Ok(())
    }

    /// Writes what is pending (once the header is out) and flushes the writer. Call it now and
    /// then (the daemon: every second); a crash loses what was not flushed.
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.start.is_none() {
            self.write_pending()?;
        }
        self.out
            .flush()
            .map_err(|e| Error::io("flush", &self.path, e))
    }

    /// Ends the run at `t_us`: writes the header if the key was still open, an end record and
    /// everything pending, and returns the writer.
    pub fn finish(mut self, t_us: u64) -> Result<W, Error> {
        self.write_header()?;
        self.pending.push(TAG_END);
        put_varint(&mut self.pending, t_us);
        self.flush()?;
        Ok(self.out)
    }

    /// Accesses not recorded because the run passed its bound.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn write_header(&mut self) -> Result<(), Error> {
        let Some(start) = self.start.take() else {
            return Ok(());
        };
        let header = RunHeader {
            image: start.image,
            workload: self.signature.signature(),
            layers: start.layers,
            started_unix_ms: start.started_unix_ms,
            labels: start.labels,
        };
        let mut record = Vec::new();
        encode_run(&mut record, &header);
        self.write_frame(&record)
    }

    fn write_pending(&mut self) -> Result<(), Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.write_frame(&pending)
    }

    fn write_frame(&mut self, payload: &[u8]) -> Result<(), Error> {
        if self.failed {
            return Err(Error::io(
                "write",
                &self.path,
                std::io::Error::other("an earlier write failed; the trace is closed"),
            ));
        }
        if payload.len() > MAX_FRAME {
            return Err(Error::InvalidTrace(format!(
                "a record of {} bytes exceeds the 1 MiB frame limit (labels too large?)",
                payload.len()
            )));
        }
        let mut frame = Vec::with_capacity(payload.len() + 14);
        put_varint(&mut frame, payload.len() as u64);
        frame.extend_from_slice(&crc32(payload).to_le_bytes());
        frame.extend_from_slice(payload);
        // One write per frame; after a failure nothing more is appended, so a partial frame can
        // only ever be the file's tail.
        self.out.write_all(&frame).map_err(|e| {
            self.failed = true;
            Error::io("write", &self.path, e)
        })
    }
}

/// `t - last` for the zigzag delta; times are clamped to `i64::MAX` µs (292,000 years).
fn time_delta(t: u64, last: u64) -> i64 {
    let clamp = |v: u64| v.min(i64::MAX as u64) as i64;
    clamp(t) - clamp(last)
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = Crc::new();
    crc.update(bytes);
    crc.sum()
}

fn source_byte(source: AccessSource) -> u8 {
    match source {
        AccessSource::Miss => 0,
        AccessSource::Hit => 1,
        AccessSource::PrefetchHit => 2,
    }
}

fn encode_run(buf: &mut Vec<u8>, header: &RunHeader) {
    buf.push(TAG_RUN);
    put_str(buf, &header.image);
    put_str(buf, &header.workload);
    put_varint(buf, header.started_unix_ms);
    put_varint(buf, header.layers.len() as u64);
    header.layers.iter().for_each(|l| put_str(buf, l));
    put_varint(buf, header.labels.len() as u64);
    for (key, value) in &header.labels {
        put_str(buf, key);
        put_str(buf, value);
    }
}

fn encode_chunk(buf: &mut Vec<u8>, chunk: &ChunkRecord) {
    buf.push(TAG_CHUNK);
    buf.extend_from_slice(&chunk.digest.0);
    put_varint(buf, u64::from(chunk.layer));
    put_varint(buf, u64::from(chunk.size));
    put_str(buf, &chunk.file);
    put_varint(buf, chunk.file_offset);
}

/// Writes a whole in-memory trace in the binary encoding (tests, conversions). The header's
/// workload is kept as it is.
pub fn encode(trace: &Trace) -> Result<Vec<u8>, Error> {
    trace.validate()?;
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&(super::FORMAT_VERSION as u16).to_le_bytes());
    let mut frame = |payload: &[u8]| {
        put_varint(&mut out, payload.len() as u64);
        out.extend_from_slice(&crc32(payload).to_le_bytes());
        out.extend_from_slice(payload);
    };
    let mut run = Vec::new();
    encode_run(&mut run, &trace.header);
    frame(&run);
    let mut pending = Vec::new();
    let mut defined = 0usize;
    let mut last_t = 0u64;
    for access in &trace.accesses {
        while defined <= access.chunk as usize && defined < trace.chunks.len() {
            encode_chunk(&mut pending, &trace.chunks[defined]);
            defined += 1;
        }
        pending.push(TAG_ACCESS);
        put_signed(&mut pending, time_delta(access.t_us, last_t));
        put_varint(&mut pending, u64::from(access.chunk));
        put_varint(&mut pending, access.offset);
        put_varint(&mut pending, u64::from(access.len));
        pending.push(source_byte(access.source));
        last_t = access.t_us.min(i64::MAX as u64);
        if pending.len() >= FRAME_TARGET {
            frame(&std::mem::take(&mut pending));
        }
    }
    trace.chunks[defined..]
        .iter()
        .for_each(|c| encode_chunk(&mut pending, c));
    if !pending.is_empty() {
        frame(&pending);
    }
    Ok(out)
}
