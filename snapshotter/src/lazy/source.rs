//! Where a lazy layer's compressed bytes come from: the registry in the daemon, a local file in
//! tests. The read path only ever asks for byte ranges, with a deadline.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::registry::Registry;

/// Why a range could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// The deadline passed (the registry is slow or unreachable).
    #[error("no answer from {source_name} within {after:?}")]
    Deadline {
        /// The source asked.
        source_name: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// The source failed.
    #[error("{0}")]
    Failed(String),
}

/// Ranged reads of one layer blob. Implementations are called from FUSE and fetch threads,
/// never from async workers, and may block.
pub trait BlobSource: Send + Sync + 'static {
    /// Exactly `len` bytes at `offset` of the blob, or an error by `deadline`.
    fn read_range(&self, offset: u64, len: u64, deadline: Instant) -> Result<Vec<u8>, FetchError>;
    /// What to call this source in logs ("<reference>@<digest>").
    fn name(&self) -> &str;
}

/// A blob in the registry, read through the async client from blocking threads.
#[derive(Debug)]
pub struct RegistrySource {
    registry: Registry,
    handle: tokio::runtime::Handle,
    image_ref: String,
    digest: String,
    name: String,
}

impl RegistrySource {
    /// `handle` must belong to a runtime that outlives this source.
    pub fn new(
        registry: Registry,
        handle: tokio::runtime::Handle,
        image_ref: &str,
        digest: &str,
    ) -> RegistrySource {
        RegistrySource {
            registry,
            handle,
            image_ref: image_ref.to_owned(),
            digest: digest.to_owned(),
            name: format!("{image_ref}@{digest}"),
        }
    }
}

impl BlobSource for RegistrySource {
    fn read_range(&self, offset: u64, len: u64, deadline: Instant) -> Result<Vec<u8>, FetchError> {
        let after = deadline.saturating_duration_since(Instant::now());
        let read = self
            .registry
            .read_range(&self.image_ref, &self.digest, offset, len);
        match self
            .handle
            .block_on(async { tokio::time::timeout(after, read).await })
        {
            Ok(Ok(bytes)) => Ok(bytes.to_vec()),
            Ok(Err(e)) => Err(FetchError::Failed(format!("{e:#}"))),
            Err(_) => Err(FetchError::Deadline {
                source_name: self.name.clone(),
                after,
            }),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// A blob in a local file (tests, and layers converted on this node).
#[derive(Debug)]
pub struct FileSource {
    file: File,
    name: String,
}

impl FileSource {
    /// Opens `path` for ranged reads.
    pub fn open(path: &Path) -> std::io::Result<FileSource> {
        Ok(FileSource {
            file: File::open(path)?,
            name: path.display().to_string(),
        })
    }
}

impl BlobSource for FileSource {
    fn read_range(&self, offset: u64, len: u64, _deadline: Instant) -> Result<Vec<u8>, FetchError> {
        let len = usize::try_from(len).map_err(|_| FetchError::Failed("range too large".into()))?;
        let mut buf = vec![0; len];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| FetchError::Failed(format!("read {}: {e}", self.name)))?;
        Ok(buf)
    }

    fn name(&self) -> &str {
        &self.name
    }
}
