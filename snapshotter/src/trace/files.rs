//! Trace files under `<root>/traces/`: one `<start ms>-<run>.augtrace` per finished run, in the
//! predictor's binary encoding, written atomically (temporary file, fsync, rename, fsync of the
//! directory) and kept within the retention bound; listed and exported (JSON Lines) for the
//! admin API. Blocking: called on the recorder thread or the blocking pool.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TraceError;
use crate::predictor::Trace;
use crate::predictor::trace::{binary, dir, jsonl};

/// Writes `trace` as `dir/<name>.augtrace` atomically and durably; returns the file's path.
pub fn write_trace(dir: &Path, name: &str, trace: &Trace) -> Result<PathBuf, TraceError> {
    let bytes = binary::encode(trace)?;
    std::fs::create_dir_all(dir).map_err(TraceError::io("create", dir))?;
    let path = dir.join(format!("{name}.{}", binary::EXTENSION));
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(TraceError::io("write trace", &path)(e));
    }
    Ok(path)
}

/// Deletes the oldest traces until at most `max_bytes` and `max_runs` remain; returns how many
/// went.
pub fn enforce_retention(dir: &Path, max_bytes: u64, max_runs: u64) -> Result<usize, TraceError> {
    let limits = dir::Retention {
        max_bytes,
        max_runs: usize::try_from(max_runs).unwrap_or(usize::MAX),
    };
    Ok(dir::enforce_retention(dir, limits, &[])?.len())
}

/// One kept trace, as `GET /traces` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceSummary {
    /// The run's name (its file name without the extension).
    pub run: String,
    /// The image reference.
    pub image: String,
    /// The workload signature (`label:<value>` or `firstN:<hash>`).
    pub workload: String,
    /// When the run began, Unix milliseconds.
    pub started_unix_ms: u64,
    /// Accesses recorded.
    pub accesses: u64,
    /// Bytes those accesses read.
    pub bytes: u64,
    /// Distinct chunks read.
    pub chunks: u64,
    /// Size of the trace file.
    pub file_bytes: u64,
}

/// The binary trace files under `dir`, oldest name first (a missing directory has none).
pub fn trace_files(dir: &Path) -> Result<Vec<PathBuf>, TraceError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut files = dir::trace_files(dir)?;
    files.retain(|p| p.extension().is_some_and(|e| e == binary::EXTENSION));
    Ok(files)
}

/// A summary of every kept trace. A file that cannot be decoded is skipped with a warning (it
/// may have been removed by retention while being read).
pub fn list(dir: &Path) -> Result<Vec<TraceSummary>, TraceError> {
    let mut out = Vec::new();
    for path in trace_files(dir)? {
        match binary::read_file(&path) {
            Ok(decoded) => out.push(summary(&path, &decoded.trace)),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "unreadable trace skipped")
            }
        }
    }
    Ok(out)
}

fn summary(path: &Path, trace: &Trace) -> TraceSummary {
    let h = &trace.header;
    TraceSummary {
        run: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        image: h.image.clone(),
        workload: h.workload.clone(),
        started_unix_ms: h.started_unix_ms,
        accesses: trace.accesses.len() as u64,
        bytes: trace.accesses.iter().map(|a| u64::from(a.len)).sum(),
        chunks: trace.chunks.len() as u64,
        file_bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
    }
}

/// Writes every kept trace in `files` to `out` as JSON Lines, one run after another; a trace
/// that cannot be decoded is skipped with a warning. Returns how many runs were written.
pub fn export(files: &[PathBuf], out: &mut impl Write) -> Result<usize, TraceError> {
    let mut written = 0;
    for path in files {
        let trace = match binary::read_file(path) {
            Ok(decoded) => decoded.trace,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "unreadable trace not exported");
                continue;
            }
        };
        jsonl::write_trace(&trace, out, Path::new("the export stream"))?;
        written += 1;
    }
    Ok(written)
}
