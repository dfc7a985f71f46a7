//! A directory of traces: loading every run in it (binary `*.augtrace` files and `*.jsonl`
//! exports, in file-name order, so results are the same on every machine) and the retention
//! bound the daemon applies to its trace directory (oldest files go first).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{Trace, binary, jsonl};
use crate::error::Error;

/// What a directory held.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every run, with the file it came from, in file-name order.
    pub traces: Vec<(PathBuf, Trace)>,
    /// Binary traces whose last frame was torn (their runs are included up to the tear).
    pub torn: Vec<PathBuf>,
    /// Binary traces with no run header (the run stopped within its first accesses).
    pub empty: Vec<PathBuf>,
}

/// Loads every trace under `dir` (not recursive). Other files are ignored; a corrupt trace is
/// an error naming the file and offset.
pub fn load_dir(dir: &Path) -> Result<Loaded, Error> {
    let mut loaded = Loaded::default();
    for path in trace_files(dir)? {
        if has_extension(&path, jsonl::EXTENSION) {
            let traces = jsonl::read_file(&path)?;
            loaded
                .traces
                .extend(traces.into_iter().map(|t| (path.clone(), t)));
            continue;
        }
        match binary::read_file(&path) {
            Ok(decoded) => {
                if decoded.torn_at.is_some() {
                    loaded.torn.push(path.clone());
                }
                loaded.traces.push((path, decoded.trace));
            }
            Err(Error::NoHeader { .. }) => loaded.empty.push(path),
            Err(e) => return Err(e),
        }
    }
    Ok(loaded)
}

/// The trace files directly under `dir`, sorted by name.
pub fn trace_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io("list", dir, e))?.path();
        if path.is_file()
            && (has_extension(&path, binary::EXTENSION) || has_extension(&path, jsonl::EXTENSION))
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn has_extension(path: &Path, ext: &str) -> bool {
    path.extension().is_some_and(|e| e == ext)
}

/// How much a trace directory may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Total bytes of `*.augtrace` files.
    pub max_bytes: u64,
    /// Number of `*.augtrace` files.
    pub max_runs: usize,
}

/// Deletes the oldest binary traces in `dir` (by modification time, then name) until both
/// bounds hold, never touching `active` (traces still being written). Returns what it removed.
pub fn enforce_retention(
    dir: &Path,
    limits: Retention,
    active: &[PathBuf],
) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    for path in trace_files(dir)? {
        if !has_extension(&path, binary::EXTENSION) {
            continue;
        }
        let meta = std::fs::metadata(&path).map_err(|e| Error::io("stat", &path, e))?;
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        files.push((modified, path, meta.len()));
    }
    files.sort();
    let mut bytes: u64 = files.iter().map(|(_, _, len)| len).sum();
    let mut count = files.len();
    let mut removed = Vec::new();
    for (_, path, len) in files {
        if bytes <= limits.max_bytes && count <= limits.max_runs {
            break;
        }
        if active.contains(&path) {
            continue;
        }
        std::fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
        bytes -= len;
        count -= 1;
        removed.push(path);
    }
    Ok(removed)
}
