//! The binary trace reader: frames checked one by one, records decoded with bounds checks, a
//! torn last frame reported rather than fatal, damage before it an error with the offset.

use std::collections::BTreeMap;
use std::path::Path;

use super::{HEADER_LEN, MAGIC, MAX_FRAME, TAG_ACCESS, TAG_CHUNK, TAG_END, TAG_RUN, crc32};
use crate::chunk::ChunkId;
use crate::error::Error;
use crate::trace::codec::Cursor;
use crate::trace::{AccessRecord, AccessSource, ChunkRecord, FORMAT_VERSION, RunHeader, Trace};

/// A trace read back, with how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Everything up to the end or the torn tail.
    pub trace: Trace,
    /// Byte offset where a partial last frame begins, if the writer did not finish it.
    pub torn_at: Option<u64>,
    /// The time of the end record, if the run finished cleanly.
    pub ended_at_us: Option<u64>,
}

/// Reads a binary trace file.
pub fn read_file(path: &Path) -> Result<Decoded, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    decode(&bytes, path)
}

/// Decodes a binary trace held in memory; `path` only names it in errors.
pub fn decode(bytes: &[u8], path: &Path) -> Result<Decoded, Error> {
    check_file_header(bytes, path)?;
    let mut state = DecodeState::default();
    let mut pos = HEADER_LEN;
    let mut torn_at = None;
    while pos < bytes.len() {
        match next_frame(bytes, pos) {
            FrameRead::Ok { payload, next } => {
                let at = (next - payload.len()) as u64;
                state
                    .records(payload, at)
                    .map_err(|(offset, reason)| corrupt(path, offset, reason))?;
                pos = next;
            }
            FrameRead::Torn => {
                torn_at = Some(pos as u64);
                break;
            }
            FrameRead::Bad(reason) => return Err(corrupt(path, pos as u64, reason)),
        }
    }
    let header = state.header.ok_or_else(|| Error::NoHeader {
        path: path.to_owned(),
    })?;
    Ok(Decoded {
        trace: Trace {
            header,
            chunks: state.chunks,
            accesses: state.accesses,
        },
        torn_at,
        ended_at_us: state.ended_at_us,
    })
}

fn check_file_header(bytes: &[u8], path: &Path) -> Result<(), Error> {
    let not = |reason: &str| Error::NotATrace {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if bytes.len() < HEADER_LEN {
        return if MAGIC.starts_with(&bytes[..bytes.len().min(MAGIC.len())]) {
            Err(Error::NoHeader {
                path: path.to_owned(),
            })
        } else {
            Err(not("not an Augur trace (no AUGURTRC magic)"))
        };
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(not("not an Augur trace (no AUGURTRC magic)"));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if u32::from(version) != FORMAT_VERSION {
        return Err(not(&format!(
            "trace format version {version}; this build reads version {FORMAT_VERSION}"
        )));
    }
    Ok(())
}

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        path: path.to_owned(),
        offset,
        reason: reason.into(),
    }
}

enum FrameRead<'a> {
    Ok { payload: &'a [u8], next: usize },
    Torn,
    Bad(&'static str),
}

/// Reads the frame at `pos`. A frame that runs past the end of the file, or a bad last frame,
/// or a tail of zeros (a file system that extended the file but never wrote it) is torn;
/// anything else that is wrong is damage.
fn next_frame(bytes: &[u8], pos: usize) -> FrameRead<'_> {
    let rest = &bytes[pos..];
    if rest.iter().all(|&b| b == 0) {
        return FrameRead::Torn;
    }
    let mut cur = Cursor::new(rest);
    let Ok(len) = cur.varint() else {
        return if rest.len() < 10 {
            FrameRead::Torn
        } else {
            FrameRead::Bad("bad frame length")
        };
    };
    let Ok(len) = usize::try_from(len) else {
        return FrameRead::Bad("frame length overflows");
    };
    if len == 0 || len > MAX_FRAME {
        return FrameRead::Bad("frame length out of range");
    }
    let start = pos + cur.pos() + 4;
    let end = start.saturating_add(len);
    if end > bytes.len() {
        return FrameRead::Torn;
    }
    let crc_at = pos + cur.pos();
    let stored = u32::from_le_bytes([
        bytes[crc_at],
        bytes[crc_at + 1],
        bytes[crc_at + 2],
        bytes[crc_at + 3],
    ]);
    let payload = &bytes[start..end];
    if crc32(payload) != stored {
        return if end == bytes.len() {
            FrameRead::Torn
        } else {
            FrameRead::Bad("frame checksum mismatch")
        };
    }
    FrameRead::Ok { payload, next: end }
}

#[derive(Debug, Default)]
struct DecodeState {
    header: Option<RunHeader>,
    chunks: Vec<ChunkRecord>,
    accesses: Vec<AccessRecord>,
    last_t: i64,
    ended_at_us: Option<u64>,
}

impl DecodeState {
    /// Decodes the records of one frame whose payload starts at byte `at`; a failure carries
    /// the offset of the record.
    fn records(&mut self, payload: &[u8], at: u64) -> Result<(), (u64, &'static str)> {
        let mut cur = Cursor::new(payload);
        while !cur.is_empty() {
            let offset = at + cur.pos() as u64;
            self.record(&mut cur).map_err(|reason| (offset, reason))?;
        }
        Ok(())
    }

    fn record(&mut self, cur: &mut Cursor<'_>) -> Result<(), &'static str> {
        let tag = cur.u8()?;
        if self.header.is_none() && tag != TAG_RUN {
            return Err("the first record is not the run header");
        }
        if self.ended_at_us.is_some() {
            return Err("record after the end record");
        }
        match tag {
            TAG_RUN if self.header.is_none() => self.header = Some(decode_run(cur)?),
            TAG_RUN => return Err("a second run header"),
            TAG_CHUNK => self.chunk(cur)?,
            TAG_ACCESS => self.access(cur)?,
            TAG_END => self.ended_at_us = Some(cur.varint()?),
            _ => return Err("unknown record type"),
        }
        Ok(())
    }

    fn chunk(&mut self, cur: &mut Cursor<'_>) -> Result<(), &'static str> {
        let mut digest = [0u8; 32];
        digest.copy_from_slice(cur.bytes(32)?);
        let layer = cur.varint_u32()?;
        if let Some(header) = &self.header
            && !header.layers.is_empty()
            && layer as usize >= header.layers.len()
        {
            return Err("chunk names a layer the run does not have");
        }
        if self.chunks.len() >= u32::MAX as usize {
            return Err("too many chunks");
        }
        self.chunks.push(ChunkRecord {
            digest: ChunkId(digest),
            layer,
            size: cur.varint_u32()?,
            file: cur.str()?.to_owned(),
            file_offset: cur.varint()?,
        });
        Ok(())
    }

    fn access(&mut self, cur: &mut Cursor<'_>) -> Result<(), &'static str> {
        let t = self
            .last_t
            .checked_add(cur.signed()?)
            .filter(|t| *t >= 0)
            .ok_or("access time out of range")?;
        let chunk = cur.varint_u32()?;
        if chunk as usize >= self.chunks.len() {
            return Err("access names a chunk not yet defined");
        }
        let offset = cur.varint()?;
        let len = cur.varint_u32()?;
        let source = match cur.u8()? {
            0 => AccessSource::Miss,
            1 => AccessSource::Hit,
            2 => AccessSource::PrefetchHit,
            _ => return Err("unknown access source"),
        };
        self.last_t = t;
        self.accesses.push(AccessRecord {
            t_us: t as u64,
            chunk,
            offset,
            len,
            source,
        });
        Ok(())
    }
}

fn decode_run(cur: &mut Cursor<'_>) -> Result<RunHeader, &'static str> {
    let image = cur.str()?.to_owned();
    let workload = cur.str()?.to_owned();
    let started_unix_ms = cur.varint()?;
    let layer_count = cur.varint()?;
    let mut layers = Vec::new();
    for _ in 0..layer_count {
        layers.push(cur.str()?.to_owned());
    }
    let label_count = cur.varint()?;
    let mut labels = BTreeMap::new();
    for _ in 0..label_count {
        let key = cur.str()?.to_owned();
        labels.insert(key, cur.str()?.to_owned());
    }
    Ok(RunHeader {
        image,
        workload,
        layers,
        started_unix_ms,
        labels,
    })
}
