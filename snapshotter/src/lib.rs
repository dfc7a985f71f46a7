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
//! | [`admin`] | the admin API (JSON over a root-only unix socket) that `augurctl` uses |
//! | [`grpc`] | protobuf ⇄ domain types; runs every disk-touching operation on the blocking pool |
//! | [`snapshotter`] | containerd's snapshot semantics over the store and the directories |
//! | [`lazy`] | remote eStargz layers mounted over FUSE, fetched by range (see its map) |
//! | [`prefetch`] | the predictor thread, the prefetch queue and workers, the adaptive threshold (see its map) |
//! | [`cache`] | the tiered chunk cache of lazy layers: RAM, an mmap'd NVMe file, a spill directory |
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
pub mod mounts;
pub mod notify;
pub mod prefetch;
pub mod reaper;
pub mod registry;
pub mod rpull;
pub mod snapshotter;
pub mod store;
pub mod usage_meter;
