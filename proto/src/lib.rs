//! # augur-proto: generated gRPC types
//!
//! Code generated at build time from the protos vendored under `proto/vendor/` (containerd
//! 1.6.20, see `vendor/VERSION`). The module tree mirrors the proto packages so the generated
//! cross-package paths (`super::super::super::types::Mount`) resolve without fix-ups.
//!
//! - [`containerd::services::snapshots::v1`]: the `Snapshots` service that containerd's
//!   `proxy_plugins` call (server, used by the daemon; client, used by tests and `augurctl`).
//! - [`containerd::types`]: the `Mount` message returned by Prepare, View and Mounts.

/// Protos of the containerd project.
pub mod containerd {
    /// `containerd.types`: shared message types.
    pub mod types {
        #![allow(missing_docs, missing_debug_implementations, clippy::all)]
        tonic::include_proto!("containerd.types");
    }
    /// `containerd.services.*`: gRPC services.
    pub mod services {
        /// `containerd.services.snapshots`.
        pub mod snapshots {
            /// `containerd.services.snapshots.v1`: the snapshotter API.
            pub mod v1 {
                #![allow(missing_docs, missing_debug_implementations, clippy::all)]
                tonic::include_proto!("containerd.services.snapshots.v1");
            }
        }
    }
}

pub use containerd::services::snapshots::v1 as snapshots;
pub use containerd::types::Mount;
