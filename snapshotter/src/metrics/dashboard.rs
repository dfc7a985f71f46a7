//! The live dashboard on the metrics listener: `GET /dashboard` is one self-contained HTML page
//! (`dashboard.html`, embedded; plain JS and inline SVG, nothing fetched from elsewhere), which
//! polls `GET /dashboard/data` every 2 s and draws the history it has seen since it was opened.
//!
//! [`data`] reads the same counters the Prometheus collectors read ([`HOT`], the lazy layers'
//! totals, the prefetcher's stats) plus the [`ColdStarts`] table, into a small JSON document
//! ([`DashboardData`]); the page derives ratios and rates from successive polls. Cumulative
//! values only: the server keeps no history.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::coldstart::{ColdStarts, ImageColdStarts};
use super::hot::HOT;
use crate::lazy::LazyLayers;
use crate::prefetch::Prefetcher;

/// The page, served as is.
pub const PAGE: &str = include_str!("dashboard.html");

/// What the dashboard reads; each part is absent when its subsystem is off.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// The lazily mounted layers (remote.enable).
    pub lazy: Option<Arc<LazyLayers>>,
    /// The prefetcher (prefetch.enabled).
    pub prefetch: Option<Prefetcher>,
    /// Cold starts (trace.enabled: they come from the trace recorder).
    pub cold_starts: Option<Arc<ColdStarts>>,
}

/// Bytes by where they came from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BySource {
    /// The RAM tier.
    pub ram: u64,
    /// The NVMe tier.
    pub nvme: u64,
    /// The spill tier.
    pub hdd: u64,
    /// Fetched from the registry while the reader waited.
    pub network: u64,
}

/// The prefetcher's view.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PrefetchView {
    /// Used / (used + wasted) prefetched bytes; absent until a prefetch was resolved.
    pub precision: Option<f64>,
    /// Estimated used / (used + waited-for) bytes; absent until runs read.
    pub recall: Option<f64>,
    /// The adaptive threshold.
    pub threshold: f64,
    /// Bytes of prefetched chunks runs then read.
    pub used_bytes: u64,
    /// Bytes of prefetched chunks evicted or abandoned unread.
    pub wasted_bytes: u64,
}

/// `GET /dashboard/data`: the current cumulative values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DashboardData {
    /// When the values were read, Unix milliseconds.
    pub unix_ms: u64,
    /// Bytes served to readers of lazy layers since start, by source.
    pub served_bytes: BySource,
    /// Compressed bytes fetched from registries since start.
    pub fetched_bytes: u64,
    /// Compressed bytes of the mounted lazy layers (what full pulls would download).
    pub layer_bytes: u64,
    /// Bytes of the mounted lazy layers never fetched (layer bytes less fetched, per layer).
    pub saved_bytes: u64,
    /// Registry requests that failed for good since start.
    pub registry_errors: u64,
    /// The prefetcher, if it runs.
    pub prefetch: Option<PrefetchView>,
    /// Cold starts per image, the most recently started image first (empty without traces).
    pub cold_starts: Vec<ImageColdStarts>,
}

/// Reads every source now (blocking: the lazy layers' totals take locks briefly).
pub fn data(sources: &Sources) -> DashboardData {
    let [ram, nvme, hdd, network] = HOT.served_bytes();
    let totals = sources
        .lazy
        .as_ref()
        .map(|l| l.totals())
        .unwrap_or_default();
    let prefetch = sources.prefetch.as_ref().map(|p| {
        let s = p.stats();
        PrefetchView {
            precision: s.precision,
            recall: s.recall,
            threshold: f64::from(s.threshold),
            used_bytes: s.used_bytes,
            wasted_bytes: s.wasted_bytes,
        }
    });
    DashboardData {
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        served_bytes: BySource {
            ram,
            nvme,
            hdd,
            network,
        },
        fetched_bytes: HOT.registry_fetched_bytes(),
        layer_bytes: totals.data_bytes,
        saved_bytes: totals.saved_bytes,
        registry_errors: HOT.registry_errors(),
        prefetch,
        cold_starts: sources
            .cold_starts
            .as_ref()
            .map(|c| c.snapshot())
            .unwrap_or_default(),
    }
}
