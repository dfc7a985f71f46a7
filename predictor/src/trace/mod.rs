//! Access traces: what one container run read, chunk by chunk, and when.
//!
//! A [`Trace`] is a run header ([`RunHeader`]: image, workload key, layers, start time, labels),
//! a chunk table ([`ChunkRecord`]: digest, layer, size, file, offset in the file) and access
//! events ([`AccessRecord`]: time since the run began, chunk table index, the read's offset and
//! length in the file, and whether it was a hit, a miss or a hit on a prefetched chunk). The
//! daemon writes traces, the trainer and the evaluator read them, so the format lives here.
//!
//! | module | holds |
//! |---|---|
//! | this one | the in-memory types, the chunk-table interner, validation |
//! | [`binary`] | the compact on-disk encoding: CRC'd frames of varint records, append-only, a reader that stops at a torn tail |
//! | [`jsonl`] | the documented export (JSON Lines) that `augurctl trace export` writes and the Python trainer reads |
//! | [`dir`] | loading a directory of traces (either encoding) and the retention bound |
//!
//! The formats are documented for users in `docs/traces.md`.

pub mod binary;
mod codec;
pub mod dir;
pub mod jsonl;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::chunk::{ChunkId, FastMap, FastSet};
use crate::error::Error;
use crate::model::Access;

/// The version of both encodings that this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Where a read was served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessSource {
    /// Had to go to the registry while the reader waited.
    Miss,
    /// Served from a local cache tier, fetched earlier on demand or by the background fetch.
    Hit,
    /// Served from a local cache tier, and the chunk was there because it was prefetched.
    PrefetchHit,
}

/// What identifies one container run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunHeader {
    /// Image reference, as containerd named it (`127.0.0.1:5000/python:esgz`).
    pub image: String,
    /// The workload signature ([`crate::workload::WorkloadKey::signature`]).
    pub workload: String,
    /// Layer digests, lowest first; [`ChunkRecord::layer`] indexes this list.
    pub layers: Vec<String>,
    /// When the run began (its rootfs was mounted), Unix milliseconds.
    pub started_unix_ms: u64,
    /// Free-form labels (the snapshot's labels the daemon chose to keep, or the user's).
    pub labels: BTreeMap<String, String>,
}

/// One chunk a run touched, as the chunk table holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChunkRecord {
    /// Content digest of the chunk's uncompressed bytes.
    pub digest: ChunkId,
    /// Index into [`RunHeader::layers`].
    pub layer: u32,
    /// Uncompressed size of the chunk in bytes.
    pub size: u32,
    /// Path of the file the chunk belongs to, relative to the layer root, without a leading `/`.
    pub file: String,
    /// Offset of the chunk's first byte in that file.
    pub file_offset: u64,
}

/// One read, or the part of a read that fell into one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessRecord {
    /// Microseconds since the run began.
    pub t_us: u64,
    /// Index into [`Trace::chunks`].
    pub chunk: u32,
    /// Offset of the read within the file.
    pub offset: u64,
    /// Length of the read in bytes.
    pub len: u32,
    /// Where it was served from.
    pub source: AccessSource,
}

impl AccessRecord {
    /// This access to `chunk` as a model sees it.
    fn as_seen(&self, chunk: &ChunkRecord) -> Access {
        Access {
            chunk: chunk.digest,
            at: Duration::from_micros(self.t_us),
            size: chunk.size,
            source: self.source,
        }
    }
}

/// One container run's accesses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// Who ran.
    pub header: RunHeader,
    /// Chunks in order of first use; an access's `chunk` indexes this.
    pub chunks: Vec<ChunkRecord>,
    /// Accesses in the order they were recorded.
    pub accesses: Vec<AccessRecord>,
}

impl Trace {
    /// An empty trace of a run.
    pub fn new(header: RunHeader) -> Self {
        Trace {
            header,
            chunks: Vec::new(),
            accesses: Vec::new(),
        }
    }

    /// Checks that every access names a chunk in the table and that every chunk's layer is
    /// in the header.
    pub fn validate(&self) -> Result<(), Error> {
        let layers = self.header.layers.len();
        if let Some((i, c)) = self
            .chunks
            .iter()
            .enumerate()
            .find(|(_, c)| c.layer as usize >= layers && layers > 0)
        {
            return Err(Error::InvalidTrace(format!(
                "chunk {i} is in layer {} but the run has {layers} layers",
                c.layer
            )));
        }
        match self
            .accesses
            .iter()
            .position(|a| a.chunk as usize >= self.chunks.len())
        {
            Some(i) => Err(Error::InvalidTrace(format!(
                "access {i} names chunk {} but the table has {} chunks",
                self.accesses[i].chunk,
                self.chunks.len()
            ))),
            None => Ok(()),
        }
    }

    /// The accesses as a model sees them (chunk digest, time, size, source).
    pub fn model_accesses(&self) -> impl Iterator<Item = Access> + '_ {
        self.reads().map(|(a, c)| a.as_seen(c))
    }

    /// Each distinct chunk digest once, at its first access, in order.
    pub fn first_accesses(&self) -> Vec<Access> {
        self.first_reads().map(|(a, c)| a.as_seen(c)).collect()
    }

    /// Each distinct chunk digest once, at its first access, in order, with its chunk record
    /// (its layer, file and offset, which [`Access`] leaves out).
    pub fn first_reads(&self) -> impl Iterator<Item = (&AccessRecord, &ChunkRecord)> + '_ {
        let mut seen = FastSet::default();
        self.reads().filter(move |(_, c)| seen.insert(c.digest))
    }

    /// Each access with the chunk it names (accesses naming none are skipped).
    fn reads(&self) -> impl Iterator<Item = (&AccessRecord, &ChunkRecord)> + '_ {
        self.accesses
            .iter()
            .filter_map(|a| Some((a, self.chunks.get(a.chunk as usize)?)))
    }

    /// Microseconds from the run's start to its last access.
    pub fn duration_us(&self) -> u64 {
        self.accesses.iter().map(|a| a.t_us).max().unwrap_or(0)
    }
}

/// Interns chunk records so each gets one table index; shared by the in-memory builder and
/// the binary writer.
#[derive(Debug, Default, Clone)]
pub struct ChunkTable {
    records: Vec<ChunkRecord>,
    index: FastMap<ChunkRecord, u32>,
}

impl ChunkTable {
    /// The record's index, and whether it was new.
    pub fn intern(&mut self, record: &ChunkRecord) -> (u32, bool) {
        if let Some(&i) = self.index.get(record) {
            return (i, false);
        }
        let i = u32::try_from(self.records.len()).unwrap_or(u32::MAX);
        self.index.insert(record.clone(), i);
        self.records.push(record.clone());
        (i, true)
    }

    /// The records in index order.
    pub fn into_records(self) -> Vec<ChunkRecord> {
        self.records
    }

    /// How many records there are.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// Builds a [`Trace`] in memory access by access (tests, the synthetic workloads, the JSON
/// reader).
#[derive(Debug, Clone)]
pub struct TraceBuilder {
    header: RunHeader,
    table: ChunkTable,
    accesses: Vec<AccessRecord>,
}

impl TraceBuilder {
    /// Starts a trace of the run `header` describes.
    pub fn new(header: RunHeader) -> Self {
        TraceBuilder {
            header,
            table: ChunkTable::default(),
            accesses: Vec::new(),
        }
    }

    /// Records a read of `len` bytes at `offset` in `chunk`'s file, `t_us` after the start.
    pub fn access(
        &mut self,
        chunk: &ChunkRecord,
        t_us: u64,
        offset: u64,
        len: u32,
        source: AccessSource,
    ) {
        let (index, _) = self.table.intern(chunk);
        self.accesses.push(AccessRecord {
            t_us,
            chunk: index,
            offset,
            len,
            source,
        });
    }

    /// The header, to fill in the workload once it is known.
    pub fn header_mut(&mut self) -> &mut RunHeader {
        &mut self.header
    }

    /// The finished trace.
    pub fn finish(self) -> Trace {
        Trace {
            header: self.header,
            chunks: self.table.into_records(),
            accesses: self.accesses,
        }
    }
}
