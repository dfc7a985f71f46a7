//! The containerd client's one error type.
//!
//! containerd answers with gRPC codes that mean what its `errdefs` say (`NotFound`,
//! `AlreadyExists`, `Unavailable` for a proxy snapshotter that does not answer, …). Callers branch
//! on [`ContainerdError::code`]; the messages keep containerd's own text and say what was asked.

use std::path::PathBuf;

/// Everything a call to containerd can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    /// The socket does not exist or nothing accepts connections on it.
    #[error(
        "cannot connect to containerd at {}: {reason}; is containerd running? (pass its socket \
         with --address)",
        address.display()
    )]
    Connect {
        /// The socket that was dialled.
        address: PathBuf,
        /// What the connection attempt said.
        reason: String,
    },
    /// containerd answered a call with an error.
    #[error("containerd: {what}: {} ({:?})", status.message(), status.code())]
    Call {
        /// What was asked, e.g. `prepare snapshot "extract-… sha256:…" on augur`.
        what: String,
        /// containerd's answer.
        status: tonic::Status,
    },
    /// containerd's answer lacked a field it always sets.
    #[error("containerd: {what}: the answer has no {field}")]
    Incomplete {
        /// What was asked.
        what: String,
        /// The missing field.
        field: &'static str,
    },
    /// A blob written to the content store came out with another size or digest.
    #[error("containerd: content {expected} was committed as {got}: the data is corrupt or wrong")]
    Mismatch {
        /// The digest and size that were announced.
        expected: String,
        /// What containerd computed.
        got: String,
    },
}

impl ContainerdError {
    /// The gRPC code of a [`ContainerdError::Call`]; `Unavailable` for a failed connection.
    pub fn code(&self) -> tonic::Code {
        match self {
            ContainerdError::Call { status, .. } => status.code(),
            ContainerdError::Connect { .. } => tonic::Code::Unavailable,
            ContainerdError::Incomplete { .. } | ContainerdError::Mismatch { .. } => {
                tonic::Code::Internal
            }
        }
    }

    /// containerd's own message for a failed call (empty otherwise).
    pub fn message(&self) -> &str {
        match self {
            ContainerdError::Call { status, .. } => status.message(),
            _ => "",
        }
    }

    pub(crate) fn call(what: impl Into<String>) -> impl FnOnce(tonic::Status) -> ContainerdError {
        let what = what.into();
        move |status| ContainerdError::Call { what, status }
    }
}
