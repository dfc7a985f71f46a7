//! # augur-snapshotter
//!
//! The Augur daemon as a library: containerd's Snapshots API served over a unix socket, backed by
//! an embedded transactional metadata store and plain directories stacked with OverlayFS; and the
//! library side of the `augurctl` CLI (`src/bin/augurctl/`: [`rpull`], [`convert`]).
//!
//! ## Layers (each depends only on the ones below it)
//!
//! | module | role |
//! |---|---|
//! | [`daemon`] | start-up, socket binding, systemd notification, graceful shutdown |
//! | [`admin`] | the admin API (JSON over a root-only unix socket, optionally TCP with a bearer token) that `augurctl` uses |
//! | [`metrics`] | Prometheus metrics on `GET /metrics` (loopback TCP): hot-path instruments and scrape-time collectors |
//! | [`grpc`] | protobuf ⇄ domain types; runs every disk-touching operation on the blocking pool |
//! | [`snapshotter`] | containerd's snapshot semantics over the store and the directories |
//! | [`warm`] | the node's image pulls recorded and learned; predicted images warmed (manifest, TOCs) while the network is idle |
//! | [`lazy`] | remote eStargz layers mounted over FUSE, fetched by range (see its map) |
//! | [`prefetch`] | the predictor thread, the prefetch queue and workers, the adaptive threshold (see its map) |
//! | [`cache`] | the tiered chunk cache of lazy layers: RAM, an mmap'd NVMe file, a spill directory |
//! | [`trace`] | access traces: every lazy read attributed to its container's run, written at the run's end under `traces/` |
//! | [`mounts`] | the bind/overlay mounts containerd receives, built as overlayfs builds them |
//! | [`convert`] | `augurctl image convert`: an image (registry or OCI layout) rewritten as eStargz |
//! | [`registry`] | OCI registry client: manifests, ranged blob reads, pushes, auth, `hosts.toml` mirrors |
//! | [`estargz`] | the eStargz layer format: footer, TOC, layer index, chunk checks, writer (pure, no I/O) |
//! | [`store`] | redb metadata: one write transaction per multi-key change |
//! | [`filter`] | containerd's filter language for List |
//! | [`config`] | TOML → validated [`config::Config`] |
//! | [`error`] | the snapshot layer's error type and its gRPC codes |
//!
//! Used by the `augurctl` binary only (the daemon never calls containerd):
//!
//! | module | role |
//! |---|---|
//! | [`rpull`] | `augurctl image rpull`: an image pulled through containerd with the remote-snapshot labels, as `ctr-remote image rpull` pulls it |
//! | [`containerd`] | a client for containerd's own gRPC API (content, images, leases, snapshots, diff) |
//!
//! ## Threads
//!
//! | thread | runs |
//! |---|---|
//! | `augur-grpc` (tokio workers) | tonic, request decoding, Stat and Mounts (one in-memory redb read each); never blocks on disk |
//! | tokio blocking pool | every other snapshot operation (fsync, directory walks, renames) |
//! | `augur-reaper` | moves removed snapshots' directories aside and deletes them in the background |
//! | `augur-usage` | measures committed snapshots' disk usage after Commit answered |
//! | `fuser-N` (per lazy layer) | FUSE requests of one mounted remote layer; may block on a fetch |
//! | `augur-bgfetch` (per lazy layer) | the low-priority whole-layer fetch |
//! | `augur-warm` | learns from image pulls; warms predicted images while the network is idle |
//! | `augur-trace` | access traces: attributes read events (sent by FUSE threads with a non-blocking `try_send`) to runs, calls observers, writes trace files |
//! | `augur-predict` | the predictor models (replay, Markov, the LSTM's client): accesses in, prefetch queue entries out; threshold adaptation |
//! | `augur-lstm` | ONNX Runtime inference of the LSTM, when its model loads |
//! | `augur-prefetch-N` | prefetch workers: wait for demand fetches to end, take bandwidth, fetch predicted chunks |
//! | `augurctl` (its own process) | `image convert`: network I/O on tokio workers, gunzip, eStargz writing and hashing on the blocking pool |
//!
//! ## Core types
//! [`snapshotter::Snapshotter`] (the operations), [`store::Store`] with its
//! [`store::ReadTxn`]/[`store::WriteTxn`], [`mounts::Layout`] and [`error::Error`].

pub mod admin;
pub mod cache;
pub mod config;
pub mod containerd;
pub mod convert;
pub mod daemon;
pub mod error;
pub mod estargz;
pub mod filter;
pub mod fsutil;
pub mod grpc;
pub mod lazy;
pub mod metrics;
pub mod mounts;
pub mod notify;
pub mod prefetch;
pub mod reaper;
pub mod registry;
pub mod rpull;
pub mod snapshotter;
pub mod store;
pub mod trace;
pub mod usage_meter;
pub mod warm;

/// The predictor crate (trace formats, workload keys, the run/access vocabulary), as the daemon
/// and `augurctl` use it.
pub use augur_predictor as predictor;
