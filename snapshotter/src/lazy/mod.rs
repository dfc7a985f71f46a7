//! Lazy pulling: remote eStargz layers mounted over FUSE as OverlayFS lower directories, their
//! bytes fetched by range from the registry when read, and in the background.
//!
//! | module | role |
//! |---|---|
//! | [`labels`] | which Prepare asks for a remote layer (stargz and CRI label families) |
//! | [`manager`] | [`LazyLayers`]: resolve (footer + verified TOC), mount, unmount, share data |
//! | [`fs`] | the FUSE filesystem: the TOC's tree, as an unpacked layer would look |
//! | [`data`] | a layer's chunks in the node's [`crate::cache`], single-flight member fetches, digest checks |
//! | [`background`] | the low-priority whole-layer fetch, in spans sized to the link |
//! | [`activity`] | demand fetches (and prefetches) in flight across all layers: when the background and the prefetcher may run |
//! | [`progress`] | a mounted layer's whole-fetch progress, and fetching one now (admin API) |
//! | [`saved`] | what a resolved layer keeps on disk (its TOC, inherited directory attributes), for mounts after a restart |
//! | [`locator`] | chunk digest → a mounted layer's data and chunk index, for the prefetcher |
//! | [`source`] | ranged reads: registry (daemon) or file (tests) |
//! | [`warmed`] | TOCs the warmer (`crate::warm`) fetched ahead of a pull; resolve looks there first |
//! | [`mount`] | mount/unmount, and finding stale FUSE mounts after a crash |
//!
//! Threads: each mounted layer has its FUSE session threads (`fuser-N`, blocking; they wait on
//! registry requests through a tokio handle) and one `augur-bgfetch` thread. The snapshot
//! layer calls [`LazyLayers::resolve`] from async code and mounts on the blocking pool.

pub mod activity;
pub mod background;
pub mod data;
pub mod fs;
pub mod labels;
pub mod locator;
pub mod manager;
pub mod mount;
pub mod progress;
pub mod saved;
pub mod source;
pub mod warmed;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use manager::{LayerTotals, LazyConfig, LazyLayers, MountedLayer, Resolved};
pub use saved::InheritedDir;

use crate::estargz::FormatError;
use crate::registry::RegistryError;

/// Why a layer could not be mounted lazily. Every variant makes Prepare fall back to the normal
/// path (containerd downloads and unpacks the layer), so an image always works.
#[derive(Debug, thiserror::Error)]
pub enum LazyError {
    /// The layer cannot be read lazily (not eStargz, no TOC digest, ...): expected, not a fault.
    #[error("{0}")]
    NotLazy(String),
    /// The registry failed.
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
    /// The layer's format is broken (bad TOC, digest mismatch).
    #[error("eStargz: {0}")]
    Format(#[from] FormatError),
    /// A local file or mount operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The chunk cache could not be opened.
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    /// No mounted lazy layer has this digest (admin API: fetch a layer now).
    #[error(
        "no mounted lazy layer has digest {0}: give the digest of a layer of an image pulled \
         with the remote-snapshot labels and still in use (augurctl status counts them)"
    )]
    NotMounted(String),
    /// The layer is larger than the cache tier that keeps whole layers.
    #[error(
        "layer {digest} holds {size} bytes of data, more than the {budget} bytes of the cache \
         tier that keeps whole layers: it would evict itself (raise cache.hdd_mib)"
    )]
    TooLarge {
        /// The layer.
        digest: String,
        /// Its data bytes (uncompressed chunks).
        size: u64,
        /// The tier's budget.
        budget: u64,
    },
    /// A bug or a panic in a helper task.
    #[error("internal error: {0}")]
    Internal(String),
}

impl LazyError {
    /// A closure for `map_err` that wraps an I/O error with what was done to which path.
    pub fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LazyError {
        let path = path.to_path_buf();
        move |source| LazyError::Io { what, path, source }
    }
}

/// At most one read-error log line per this interval (a container can drive reads in a loop).
const READ_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
static LAST_READ_ERROR_LOG: Mutex<Option<Instant>> = Mutex::new(None);

/// Logs a failed read (the reader got EIO), rate-limited across all layers; the count of
/// failures is in the layer's stats either way.
pub(crate) fn log_read_error(data: &data::LayerData, path: &Path, e: &data::ReadError) {
    let mut last = LAST_READ_ERROR_LOG
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if last.is_some_and(|t| t.elapsed() < READ_ERROR_LOG_INTERVAL) {
        return;
    }
    *last = Some(Instant::now());
    tracing::error!(
        layer = data.source_name(),
        path = %path.display(),
        error = %e,
        failed_reads = data.stats.read_errors.load(std::sync::atomic::Ordering::Relaxed),
        "read of a lazy layer failed; the reader got EIO (further errors muted for 10 s)"
    );
}

#[cfg(test)]
pub(crate) mod tests;
