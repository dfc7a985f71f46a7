//! The pull's one error type. Each variant says what to do about it: start containerd, configure
//! the snapshotter in containerd, fix the reference, or read the registry's or containerd's own
//! message.

use crate::containerd::ContainerdError;
use crate::registry::RegistryError;

/// Everything `augurctl image rpull` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RpullError {
    /// The registry side: bad reference, not found, refused, unreachable.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// containerd refused or failed a call.
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
    /// containerd has no snapshotter by that name.
    #[error(
        "containerd has no snapshotter named {snapshotter:?} ({detail}); add \
         [proxy_plugins.{snapshotter}] with type = \"snapshot\" and the daemon's socket as \
         address to containerd's config and restart containerd (`ctr plugins ls` lists the \
         snapshotters it loaded)"
    )]
    SnapshotterNotConfigured {
        /// The name given with `--snapshotter`.
        snapshotter: String,
        /// containerd's message.
        detail: String,
    },
    /// containerd knows the snapshotter but cannot reach it.
    #[error(
        "containerd cannot reach snapshotter {snapshotter:?} ({detail}); is augur-snapshotter \
         running and listening on the address in containerd's [proxy_plugins.{snapshotter}]?"
    )]
    SnapshotterUnreachable {
        /// The name given with `--snapshotter`.
        snapshotter: String,
        /// containerd's message.
        detail: String,
    },
    /// The image's manifest and config do not describe a runnable image.
    #[error("image {reference}: {detail}")]
    BadImage {
        /// The reference pulled.
        reference: String,
        /// What is wrong.
        detail: String,
    },
    /// Applying a layer produced another diff ID than the config names.
    #[error(
        "layer {layer} unpacked to {got}, but the image config says {expected}: the blob or the \
         config is corrupt"
    )]
    WrongDiffId {
        /// The layer blob.
        layer: String,
        /// The diff ID from the config.
        expected: String,
        /// What containerd's differ computed.
        got: String,
    },
}

impl RpullError {
    /// Reads containerd's answer to a snapshot call: an unknown or unreachable snapshotter gets
    /// its own actionable error.
    pub(crate) fn from_snapshot_call(snapshotter: &str, e: ContainerdError) -> RpullError {
        let detail = e.message().to_owned();
        match e.code() {
            tonic::Code::InvalidArgument if detail.contains("snapshotter not loaded") => {
                RpullError::SnapshotterNotConfigured {
                    snapshotter: snapshotter.to_owned(),
                    detail,
                }
            }
            tonic::Code::Unavailable if !matches!(e, ContainerdError::Connect { .. }) => {
                RpullError::SnapshotterUnreachable {
                    snapshotter: snapshotter.to_owned(),
                    detail,
                }
            }
            _ => RpullError::Containerd(e),
        }
    }
}
