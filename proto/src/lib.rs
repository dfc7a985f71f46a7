//! # augur-proto: generated gRPC types
//!
//! Code generated at build time from the protos vendored under `proto/vendor/` (containerd
//! 1.6.20, see `vendor/VERSION`). The module tree mirrors the proto packages so the generated
//! cross-package paths (`super::super::super::types::Mount`) resolve without fix-ups.
//!
//! - [`containerd::services::snapshots::v1`]: the `Snapshots` service that containerd's
//!   `proxy_plugins` call (server, used by the daemon; client, used by tests and by `augurctl`,
//!   which reaches snapshotters through containerd's own Snapshots service).
//! - [`containerd::services::content::v1`], [`containerd::services::images::v1`],
//!   [`containerd::services::leases::v1`], [`containerd::services::diff::v1`]: the containerd
//!   services `augurctl image rpull` calls to store an image as containerd's client does.
//! - [`containerd::types`]: the `Mount` and `Descriptor` messages shared by those services.

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
        /// `containerd.services.content`.
        pub mod content {
            /// `containerd.services.content.v1`: containerd's content store.
            pub mod v1 {
                #![allow(missing_docs, missing_debug_implementations, clippy::all)]
                tonic::include_proto!("containerd.services.content.v1");
            }
        }
        /// `containerd.services.images`.
        pub mod images {
            /// `containerd.services.images.v1`: image records (name → target descriptor).
            pub mod v1 {
                #![allow(missing_docs, missing_debug_implementations, clippy::all)]
                tonic::include_proto!("containerd.services.images.v1");
            }
        }
        /// `containerd.services.leases`.
        pub mod leases {
            /// `containerd.services.leases.v1`: leases that keep content and snapshots from GC.
            pub mod v1 {
                #![allow(missing_docs, missing_debug_implementations, clippy::all)]
                tonic::include_proto!("containerd.services.leases.v1");
            }
        }
        /// `containerd.services.diff`.
        pub mod diff {
            /// `containerd.services.diff.v1`: applying a layer onto mounts.
            pub mod v1 {
                #![allow(missing_docs, missing_debug_implementations, clippy::all)]
                tonic::include_proto!("containerd.services.diff.v1");
            }
        }
    }
}

pub use containerd::services::content::v1 as content;
pub use containerd::services::diff::v1 as diff;
pub use containerd::services::images::v1 as images;
pub use containerd::services::leases::v1 as leases;
pub use containerd::services::snapshots::v1 as snapshots;
pub use containerd::types::{Descriptor, Mount};
