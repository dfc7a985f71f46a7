//! The snapshot layer's one error type, and its deliberate mapping to gRPC status codes.
//!
//! containerd decides what to do from the code alone (`errdefs.FromGRPC`): `NotFound` and
//! `AlreadyExists` drive its unpack and remote-snapshot logic, so each variant maps to exactly the
//! code containerd's own snapshotters return for the same condition. Messages are written for the
//! person reading `ctr`'s output: they name the key and say what to do.

use std::path::PathBuf;

use crate::filter::FilterError;
use crate::store::StoreError;

/// Result of a snapshot operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a snapshot operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The snapshot (or a parent it names) does not exist.
    #[error("snapshot {key:?} does not exist")]
    NotFound {
        /// The key that was looked up.
        key: String,
    },
    /// The parent named by Prepare/View does not exist.
    #[error("parent snapshot {parent:?} does not exist; commit it first or check the name")]
    ParentNotFound {
        /// The parent key.
        parent: String,
    },
    /// A snapshot with this key or name already exists.
    #[error("snapshot {key:?} already exists")]
    AlreadyExists {
        /// The key (or commit name) that is taken.
        key: String,
    },
    /// The parent of a new snapshot must be committed.
    #[error("parent {parent:?} is a {kind} snapshot; only committed snapshots can be parents")]
    ParentNotCommitted {
        /// The parent key.
        parent: String,
        /// Its kind.
        kind: &'static str,
    },
    /// Commit was called on a snapshot that is not active.
    #[error("snapshot {key:?} is a {kind} snapshot; only active snapshots can be committed")]
    NotActive {
        /// The key given to Commit.
        key: String,
        /// The snapshot's kind.
        kind: &'static str,
    },
    /// Mounts was called on a committed snapshot.
    #[error(
        "snapshot {key:?} is committed and has no mounts; create a view or an active child of it"
    )]
    NoMounts {
        /// The key given to Mounts.
        key: String,
    },
    /// Remove was called on a snapshot that other snapshots depend on.
    #[error("snapshot {key:?} has {children} child snapshot(s); remove them first")]
    HasChildren {
        /// The key given to Remove.
        key: String,
        /// How many children it has.
        children: usize,
    },
    /// An argument is malformed (empty key, oversize label, immutable field path, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// A List filter does not parse.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// The metadata store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A filesystem operation on the snapshot directories failed.
    #[error("cannot {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A remote layer could not be mounted (Prepare then falls back to the normal path).
    #[error("lazy layer: {0}")]
    Lazy(String),
}

impl Error {
    /// Wraps an I/O error with the operation and path it concerns.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    /// The gRPC code containerd expects for this condition.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Error::NotFound { .. } | Error::ParentNotFound { .. } => Code::NotFound,
            Error::AlreadyExists { .. } => Code::AlreadyExists,
            // containerd's storage returns InvalidArgument for a non-committed parent.
            Error::ParentNotCommitted { .. } | Error::InvalidArgument(_) | Error::Filter(_) => {
                Code::InvalidArgument
            }
            Error::NotActive { .. } | Error::NoMounts { .. } | Error::HasChildren { .. } => {
                Code::FailedPrecondition
            }
            Error::Store(StoreError::AlreadyOpen { .. }) => Code::Unavailable,
            Error::Store(_) | Error::Io { .. } | Error::Lazy(_) => Code::Internal,
        }
    }
}

impl From<Error> for tonic::Status {
    /// The message carries the whole cause chain (`cannot create /x: No space left on device`),
    /// since the person reading it sees only this string.
    fn from(err: Error) -> Self {
        tonic::Status::new(err.code(), chain(&err))
    }
}

/// `err` and its sources joined with `: `.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
