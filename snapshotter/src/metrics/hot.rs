//! The process-wide instruments of hot paths: snapshot-operation latency, lazy reads by source,
//! reads that blocked on the network, registry requests. Each is a `static` of atomics (no
//! `Arc` to thread through the layers, no allocation, no lock): recording is a relaxed
//! `fetch_add` or a [`Histogram::observe`]. [`HotPaths`] reads them at scrape time.
//!
//! Everything else (cache tiers, mounted layers) is not counted here: those subsystems keep
//! their own counters and a collector reads them at scrape time (see [`super::collect`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::Emit;
use super::histogram::{FAST_SECONDS, Histogram, NETWORK_SECONDS};

/// The gRPC methods of containerd's Snapshots service, as the `op` label spells them.
pub const OPS: [&str; 10] = [
    "prepare", "view", "mounts", "commit", "remove", "stat", "update", "list", "usage", "cleanup",
];

/// gRPC status codes by number, spelled as grpc-go's `codes.Code.String()` (the `code` label).
const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// Where the bytes of a lazy read came from (the `source` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadSource {
    /// The RAM tier.
    Ram,
    /// The NVMe tier.
    Nvme,
    /// The spill tier.
    Hdd,
    /// A fetch from the registry (the reader waited for it).
    Network,
}

const SOURCES: [&str; 4] = ["ram", "nvme", "hdd", "network"];

/// Kinds of registry failure (the `kind` label of `augur_registry_errors_total`).
pub const REGISTRY_ERROR_KINDS: [&str; 8] = [
    "not_found",
    "unauthorized",
    "unreachable",
    "protocol",
    "invalid_reference",
    "config",
    "local_file",
    "write",
];

/// The instruments. One `static` of it exists: [`HOT`].
#[derive(Debug)]
pub struct Instruments {
    ops: [[Histogram; CODES.len()]; OPS.len()],
    read_chunks: [AtomicU64; 4],
    read_bytes: [AtomicU64; 4],
    read_errors: AtomicU64,
    blocked_reads: Histogram,
    registry_bytes: AtomicU64,
    registry_requests: Histogram,
    registry_retries: AtomicU64,
    registry_errors: [AtomicU64; REGISTRY_ERROR_KINDS.len()],
}

/// The process's instruments.
pub static HOT: Instruments = Instruments::new();

impl Instruments {
    const fn new() -> Instruments {
        Instruments {
            ops: [const { [const { Histogram::new(FAST_SECONDS) }; CODES.len()] }; OPS.len()],
            read_chunks: [const { AtomicU64::new(0) }; 4],
            read_bytes: [const { AtomicU64::new(0) }; 4],
            read_errors: AtomicU64::new(0),
            blocked_reads: Histogram::new(NETWORK_SECONDS),
            registry_bytes: AtomicU64::new(0),
            registry_requests: Histogram::new(NETWORK_SECONDS),
            registry_retries: AtomicU64::new(0),
            registry_errors: [const { AtomicU64::new(0) }; REGISTRY_ERROR_KINDS.len()],
        }
    }

    /// A snapshot operation (`op`, one of [`OPS`]) answered with gRPC `code` after `elapsed`.
    /// An unknown op is a bug and is not recorded.
    pub fn snapshot_op(&self, op: &str, code: tonic::Code, elapsed: Duration) {
        let (Some(o), Some(h)) = (
            OPS.iter().position(|&n| n == op),
            usize::try_from(code as i32).ok(),
        ) else {
            return;
        };
        if let Some(h) = self.ops[o].get(h) {
            h.observe(elapsed);
        }
    }

    /// `bytes` of a lazy read served from `source`.
    pub fn lazy_read(&self, source: ReadSource, bytes: u64) {
        let i = source as usize;
        self.read_chunks[i].fetch_add(1, Ordering::Relaxed);
        self.read_bytes[i].fetch_add(bytes, Ordering::Relaxed);
    }

    /// A lazy read answered with EIO.
    pub fn lazy_read_error(&self) {
        self.read_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A lazy read that waited on a registry fetch took `elapsed` in all.
    pub fn blocked_read(&self, elapsed: Duration) {
        self.blocked_reads.observe(elapsed);
    }

    /// `bytes` of layer data (footers, TOCs, chunks) fetched from a registry.
    pub fn registry_fetched(&self, bytes: u64) {
        self.registry_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// One registry request finished (however it ended) after `elapsed`, retries included.
    pub fn registry_request(&self, elapsed: Duration) {
        self.registry_requests.observe(elapsed);
    }

    /// A registry request starts another round over its endpoints.
    pub fn registry_retry(&self) {
        self.registry_retries.fetch_add(1, Ordering::Relaxed);
    }

    /// A registry request failed for good; `kind` is one of [`REGISTRY_ERROR_KINDS`].
    pub fn registry_error(&self, kind: &str) {
        if let Some(i) = REGISTRY_ERROR_KINDS.iter().position(|&k| k == kind) {
            self.registry_errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Bytes served to readers of lazy layers so far, by source (ram, nvme, hdd, network).
    pub fn served_bytes(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.read_bytes[i].load(Ordering::Relaxed))
    }

    /// Compressed bytes fetched from registries so far.
    pub fn registry_fetched_bytes(&self) -> u64 {
        self.registry_bytes.load(Ordering::Relaxed)
    }

    /// Registry requests that failed for good so far, all kinds.
    pub fn registry_errors(&self) -> u64 {
        self.registry_errors
            .iter()
            .map(|e| e.load(Ordering::Relaxed))
            .sum()
    }

    /// Recorded operations of `op` (tests).
    pub fn op_count(&self, op: &str) -> u64 {
        OPS.iter()
            .position(|&n| n == op)
            .map_or(0, |o| self.ops[o].iter().map(Histogram::count).sum())
    }
}

/// Encodes [`HOT`] at scrape time.
#[derive(Debug)]
pub struct HotPaths;

impl Collector for HotPaths {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut out = Emit::new(encoder);
        let h = &HOT;
        let mut ops = Vec::new();
        for (o, row) in h.ops.iter().enumerate() {
            for (c, hist) in row.iter().enumerate() {
                if hist.count() > 0 {
                    ops.push((vec![("op", OPS[o]), ("code", CODES[c])], hist.snapshot()));
                }
            }
        }
        out.histogram(
            "augur_snapshot_operation_duration_seconds",
            "Latency of containerd's snapshot calls, by gRPC method and status code (a lazily mounted layer answers Prepare with AlreadyExists)",
            &ops,
        )?;
        let by_source = |a: &[AtomicU64; 4]| -> Vec<(Vec<(&str, &str)>, u64)> {
            SOURCES
                .iter()
                .zip(a)
                .map(|(s, v)| (vec![("source", *s)], v.load(Ordering::Relaxed)))
                .collect()
        };
        out.counter(
            "augur_lazy_chunk_reads",
            "Chunk pieces of reads on lazy layers, by where the bytes came from (ram, nvme, hdd: cache tiers; network: fetched while the reader waited)",
            &by_source(&h.read_chunks),
        )?;
        out.counter(
            "augur_lazy_served_bytes",
            "Bytes served to readers of lazy layers, by where they came from",
            &by_source(&h.read_bytes),
        )?;
        out.counter_value(
            "augur_lazy_read_errors",
            "Reads of lazy layers answered with EIO (fetch failed or timed out, or bytes did not verify)",
            h.read_errors.load(Ordering::Relaxed),
        )?;
        out.histogram(
            "augur_lazy_blocked_read_duration_seconds",
            "Duration of reads of lazy layers that waited on a registry fetch",
            &[(vec![], h.blocked_reads.snapshot())],
        )?;
        out.counter_value(
            "augur_registry_fetched_bytes",
            "Compressed layer bytes fetched from registries (footers, TOCs, demand and background chunk fetches)",
            h.registry_bytes.load(Ordering::Relaxed),
        )?;
        out.histogram(
            "augur_registry_request_duration_seconds",
            "Duration of registry requests, retries and backoff included, however they ended",
            &[(vec![], h.registry_requests.snapshot())],
        )?;
        out.counter_value(
            "augur_registry_retries",
            "Extra rounds over a registry's endpoints after a transient failure (connection error, timeout, 408, 429, 5xx)",
            h.registry_retries.load(Ordering::Relaxed),
        )?;
        let errors: Vec<_> = REGISTRY_ERROR_KINDS
            .iter()
            .zip(&h.registry_errors)
            .map(|(k, v)| (vec![("kind", *k)], v.load(Ordering::Relaxed)))
            .collect();
        out.counter(
            "augur_registry_errors",
            "Registry requests that failed for good, by kind (unreachable: every retry failed)",
            &errors,
        )
    }
}
