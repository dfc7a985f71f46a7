//! The export format: JSON Lines, one object per line, documented field by field in
//! `docs/traces.md`. The Python trainer reads it, so the names below are a contract.
//!
//! ```text
//! {"type":"run","version":1,"image":"…","workload":"…","started_unix_ms":…,"layers":["sha256:…"],"labels":{}}
//! {"type":"chunk","id":0,"digest":"sha256:…","layer":0,"size":65536,"file":"usr/bin/python3.11","file_offset":0}
//! {"type":"access","t_us":1234,"chunk":0,"offset":0,"len":4096,"source":"miss"}
//! ```
//!
//! A file may hold several runs; each begins with its run line and numbers its chunks from 0 in
//! order, each chunk line before the first access that names it. Readers ignore fields they do
//! not know (so fields can be added without a version change) and reject a `version` they do
//! not know.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{AccessRecord, AccessSource, ChunkRecord, FORMAT_VERSION, RunHeader, Trace};
use crate::chunk::ChunkId;
use crate::error::Error;

/// The file extension of exports.
pub const EXTENSION: &str = "jsonl";

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum LineOut<'a> {
    Run {
        version: u32,
        image: &'a str,
        workload: &'a str,
        started_unix_ms: u64,
        layers: &'a [String],
        labels: &'a BTreeMap<String, String>,
    },
    Chunk {
        id: u32,
        digest: ChunkId,
        layer: u32,
        size: u32,
        file: &'a str,
        file_offset: u64,
    },
    Access {
        t_us: u64,
        chunk: u32,
        offset: u64,
        len: u32,
        source: AccessSource,
    },
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum LineIn {
    Run {
        version: u32,
        image: String,
        workload: String,
        started_unix_ms: u64,
        #[serde(default)]
        layers: Vec<String>,
        #[serde(default)]
        labels: BTreeMap<String, String>,
    },
    Chunk {
        id: u32,
        digest: ChunkId,
        layer: u32,
        size: u32,
        file: String,
        file_offset: u64,
    },
    Access {
        t_us: u64,
        chunk: u32,
        offset: u64,
        len: u32,
        source: AccessSource,
    },
}

/// Writes one run as JSON Lines; `path` only names the destination in errors.
pub fn write_trace(trace: &Trace, out: &mut impl Write, path: &Path) -> Result<(), Error> {
    trace.validate()?;
    let h = &trace.header;
    let mut line = |value: &LineOut<'_>| -> Result<(), Error> {
        serde_json::to_writer(&mut *out, value).map_err(|e| Error::io("write", path, e.into()))?;
        out.write_all(b"\n")
            .map_err(|e| Error::io("write", path, e))
    };
    line(&LineOut::Run {
        version: FORMAT_VERSION,
        image: &h.image,
        workload: &h.workload,
        started_unix_ms: h.started_unix_ms,
        layers: &h.layers,
        labels: &h.labels,
    })?;
    let chunk_line = |id: usize| {
        let c = &trace.chunks[id];
        LineOut::Chunk {
            id: id as u32,
            digest: c.digest,
            layer: c.layer,
            size: c.size,
            file: &c.file,
            file_offset: c.file_offset,
        }
    };
    let mut defined = 0usize;
    for a in &trace.accesses {
        while defined <= a.chunk as usize {
            line(&chunk_line(defined))?;
            defined += 1;
        }
        line(&LineOut::Access {
            t_us: a.t_us,
            chunk: a.chunk,
            offset: a.offset,
            len: a.len,
            source: a.source,
        })?;
    }
    (defined..trace.chunks.len()).try_for_each(|id| line(&chunk_line(id)))
}

/// Reads every run of an export file.
pub fn read_file(path: &Path) -> Result<Vec<Trace>, Error> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    read_traces(BufReader::new(file), path)
}

/// Reads every run from a JSON Lines stream; `path` only names it in errors.
pub fn read_traces(input: impl BufRead, path: &Path) -> Result<Vec<Trace>, Error> {
    let mut traces = Vec::new();
    let mut current: Option<Trace> = None;
    for (n, text) in input.lines().enumerate() {
        let line = n as u64 + 1;
        let text = text.map_err(|e| Error::io("read", path, e))?;
        if text.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| Error::BadExport {
            path: path.to_owned(),
            line,
            reason,
        };
        let parsed: LineIn = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if let LineIn::Run { .. } = parsed {
            traces.extend(current.take());
        }
        apply(&mut current, parsed).map_err(bad)?;
    }
    traces.extend(current);
    Ok(traces)
}

fn apply(current: &mut Option<Trace>, line: LineIn) -> Result<(), String> {
    match line {
        LineIn::Run {
            version,
            image,
            workload,
            started_unix_ms,
            layers,
            labels,
        } => {
            if version != FORMAT_VERSION {
                return Err(format!(
                    "trace version {version}; this build reads version {FORMAT_VERSION}"
                ));
            }
            *current = Some(Trace::new(RunHeader {
                image,
                workload,
                layers,
                started_unix_ms,
                labels,
            }));
            Ok(())
        }
        LineIn::Chunk {
            id,
            digest,
            layer,
            size,
            file,
            file_offset,
        } => {
            let trace = current.as_mut().ok_or("a chunk line before any run line")?;
            if id as usize != trace.chunks.len() {
                return Err(format!("chunk id {id}, expected {}", trace.chunks.len()));
            }
            let layers = trace.header.layers.len();
            if layers > 0 && layer as usize >= layers {
                return Err(format!(
                    "chunk in layer {layer} but the run has {layers} layers"
                ));
            }
            trace.chunks.push(ChunkRecord {
                digest,
                layer,
                size,
                file,
                file_offset,
            });
            Ok(())
        }
        LineIn::Access {
            t_us,
            chunk,
            offset,
            len,
            source,
        } => {
            let trace = current
                .as_mut()
                .ok_or("an access line before any run line")?;
            if chunk as usize >= trace.chunks.len() {
                return Err(format!("access names chunk {chunk} before its chunk line"));
            }
            trace.accesses.push(AccessRecord {
                t_us,
                chunk,
                offset,
                len,
                source,
            });
            Ok(())
        }
    }
}
