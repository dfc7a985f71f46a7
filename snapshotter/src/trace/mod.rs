//! Access traces of lazily mounted containers: every read a container makes on a lazy layer,
//! attributed to its *run* (an active snapshot on lazily mounted layers, from Prepare to Remove),
//! written at the run's end in the predictor's binary encoding under `<root>/traces/`, and kept
//! within a retention bound. `augurctl trace list|export` reads them through the admin API.
//!
//! | module | holds |
//! |---|---|
//! | this one | [`TraceSettings`] (`[trace]`), [`TraceError`], the [`AccessObserver`] and [`PrefetchedChunks`] seams |
//! | [`recorder`] | [`Recorder`]: the `augur-trace` thread, the bounded event channel, the [`TraceTap`] a layer's reads go through |
//! | [`runs`] | the registry of active runs and attribution of a read to one of them |
//! | [`attribution`] | pure parsing of `/proc/<pid>/cgroup` into container ids, and the bounded pid cache |
//! | [`files`] | trace files: atomic writes, retention, listing, the JSON Lines export |
//! | [`settings`] | the `[trace]` config table |
//!
//! Threads: FUSE threads (`fuser-N`) only `try_send` a small [`recorder::ReadEvent`] (a full
//! channel drops it and counts the drop, never blocks the reader); the snapshot layer sends run
//! starts and ends (blocking pool); everything else — path lookup, attribution, trace building,
//! observers, file writes — runs on `augur-trace`. See `docs/traces.md` and decision 0017.

pub mod attribution;
pub mod files;
pub mod recorder;
pub mod runs;
pub mod settings;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;

use crate::predictor;

pub use recorder::{Recorder, RecorderStats, TraceTap};
pub use settings::{RawTrace, TraceSettings};

/// Told about every lazily mounted container run, on the recorder's own thread (never a FUSE or tokio thread).
pub trait AccessObserver: Send + Sync {
    /// A run began: its snapshot was prepared on lazily mounted layers.
    fn run_started(&self, run: predictor::RunId, ctx: &predictor::RunContext);
    /// One access of the run (a read, or the part of it in one chunk), in order.
    fn access(&self, run: predictor::RunId, access: &predictor::Access);
    /// The run ended (its snapshot was removed); its trace, if one was kept.
    fn run_finished(&self, run: predictor::RunId, trace: Option<&std::sync::Arc<predictor::Trace>>);
}

/// Says which cached chunks are there because the prefetcher brought them in, so that a hit on
/// one is recorded as [`predictor::AccessSource::PrefetchHit`]. Asked on the recorder's thread
/// for every hit; the default (none set) says no.
pub trait PrefetchedChunks: Send + Sync {
    /// Whether `chunk` is in the cache because it was prefetched (and not yet read on demand).
    fn was_prefetched(&self, chunk: &predictor::ChunkId) -> bool;
}

/// The observers and the classification seam, as the recorder thread holds them.
pub(crate) type Observers = Vec<Arc<dyn AccessObserver>>;

/// Why trace files could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// A file or directory operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A trace could not be encoded or decoded (the predictor's message names the file).
    #[error(transparent)]
    Format(#[from] predictor::Error),
    /// The recorder thread could not be started.
    #[error("cannot start the augur-trace thread: {0}")]
    Thread(std::io::Error),
}

impl TraceError {
    /// A closure for `map_err` that wraps an I/O error with what was done to which path.
    pub fn io(what: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| TraceError::Io { what, path, source }
    }
}
