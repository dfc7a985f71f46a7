//! Collectors that read a subsystem's own counters at scrape time, so nothing is counted twice
//! and hot paths pay nothing for metrics: the mounted lazy layers ([`LayerTotals`]) with their
//! chunk cache ([`CacheStatus`]), and the build.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::{Emit, Labels};
use crate::cache::CacheStatus;
use crate::lazy::{LayerTotals, LazyLayers};

/// `augur_build_info{version}`.
#[derive(Debug)]
pub struct BuildInfo;

impl Collector for BuildInfo {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        Emit::new(encoder).gauge(
            "augur_build_info",
            "Always 1; the running daemon's version in the version label",
            &[(vec![("version", env!("CARGO_PKG_VERSION"))], 1u64)],
        )
    }
}

/// The cache's families from one status snapshot.
pub fn encode_cache(s: &CacheStatus, out: &mut Emit<'_>) -> std::fmt::Result {
    let per_tier = |f: fn(&crate::cache::TierStatus) -> u64| -> Vec<(Labels<'static>, u64)> {
        s.tiers
            .iter()
            .map(|t| (vec![("tier", t.tier.name())], f(t)))
            .collect()
    };
    out.counter(
        "augur_cache_hits",
        "Chunk lookups answered by a cache tier",
        &per_tier(|t| t.hits),
    )?;
    out.counter_value(
        "augur_cache_misses",
        "Chunk lookups no tier could answer (the chunk was then fetched)",
        s.misses,
    )?;
    out.gauge(
        "augur_cache_used_bytes",
        "Bytes of chunks held per cache tier",
        &per_tier(|t| t.used_bytes),
    )?;
    out.gauge(
        "augur_cache_budget_bytes",
        "Configured byte budget per cache tier (cache.ram_mib, nvme_mib, hdd_mib)",
        &per_tier(|t| t.budget_bytes),
    )?;
    out.gauge(
        "augur_cache_chunks",
        "Chunks held per cache tier",
        &per_tier(|t| t.chunks),
    )?;
    out.counter(
        "augur_cache_inserts",
        "Chunks stored in a tier (admitted, promoted into it or demoted into it)",
        &per_tier(|t| t.inserts),
    )?;
    out.counter(
        "augur_cache_evictions",
        "Chunks a tier evicted to make room",
        &per_tier(|t| t.evictions),
    )?;
    out.counter(
        "augur_cache_promotions",
        "Chunks moved up out of a tier",
        &per_tier(|t| t.promotions),
    )?;
    out.counter_value(
        "augur_cache_corrupt_chunks_dropped",
        "Cached chunks dropped because their bytes failed verification (fetched again from the registry)",
        s.corrupt,
    )?;
    out.counter_value(
        "augur_cache_rejected_chunks",
        "Chunks no tier would take (all budgets full of higher-ranked chunks)",
        s.rejected,
    )?;
    out.gauge_value(
        "augur_cache_referenced_chunks",
        "Chunks referenced by at least one mounted lazy layer",
        s.referenced_chunks,
    )
}

/// The mounted lazy layers and their cache, from [`LazyLayers::totals`].
#[derive(Debug)]
pub struct LazyCollector(pub Arc<LazyLayers>);

impl Collector for LazyCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut out = Emit::new(encoder);
        encode_layers(&self.0.totals(), &mut out)?;
        encode_cache(&self.0.cache_status(), &mut out)
    }
}

/// The lazy layers' families from one snapshot.
pub fn encode_layers(t: &LayerTotals, out: &mut Emit<'_>) -> std::fmt::Result {
    out.gauge_value(
        "augur_lazy_mounted_snapshots",
        "Snapshots whose layer is mounted lazily (over FUSE)",
        t.snapshots,
    )?;
    out.gauge_value(
        "augur_lazy_mounted_layers",
        "Distinct remote layers mounted lazily",
        t.layers,
    )?;
    out.gauge_value(
        "augur_lazy_layer_bytes",
        "Compressed data bytes (before the TOC) of the mounted lazy layers: what a full pull would download, at least",
        t.data_bytes,
    )?;
    out.gauge_value(
        "augur_lazy_layer_fetched_bytes",
        "Bytes fetched so far for the mounted lazy layers, over each layer's life on this node (from its stats.json)",
        t.fetched_bytes,
    )?;
    out.gauge_value(
        "augur_lazy_saved_bytes",
        "Bytes of the mounted lazy layers never fetched, against a full pull: per layer, data bytes less fetched bytes (never below 0)",
        t.saved_bytes,
    )
}

/// The prefetcher's counters, read at scrape time.
#[derive(Debug)]
pub struct PrefetchCollector(pub crate::prefetch::Prefetcher);

impl Collector for PrefetchCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut out = Emit::new(encoder);
        encode_prefetch(&self.0.stats(), &mut out)?;
        super::inference::encode(&self.0.inference_latency(), &mut out)?;
        encode_model(self.0.model().as_ref(), &mut out)
    }
}

/// `augur_predictor_model_info`: 1 with the served LSTM model's label and version (absent
/// without an LSTM), so a reload shows on dashboards.
pub fn encode_model(
    model: Option<&augur_predictor::lstm::ModelInfo>,
    out: &mut Emit<'_>,
) -> std::fmt::Result {
    let series: Vec<(crate::metrics::Labels<'_>, u64)> = model
        .map(|m| {
            vec![(
                vec![("label", m.label.as_str()), ("created", m.created.as_str())],
                1,
            )]
        })
        .unwrap_or_default();
    out.gauge(
        "augur_predictor_model_info",
        "Always 1; the LSTM model served, in the label and created (its version) labels; absent without an LSTM",
        &series,
    )
}

/// The prefetch families from one snapshot of the prefetcher's counters.
pub fn encode_prefetch(s: &crate::prefetch::PrefetchStats, out: &mut Emit<'_>) -> std::fmt::Result {
    let pairs = [
        (
            "augur_prefetch_issued_chunks",
            "Chunks prefetched on a prediction",
            s.issued_chunks,
        ),
        (
            "augur_prefetch_issued_bytes",
            "Uncompressed bytes of the chunks prefetched on a prediction",
            s.issued_bytes,
        ),
        (
            "augur_prefetch_fetched_bytes",
            "Compressed bytes the prefetch workers fetched from registries",
            s.fetched_bytes,
        ),
        (
            "augur_prefetch_used_chunks",
            "Prefetched chunks a run then read",
            s.used_chunks,
        ),
        (
            "augur_prefetch_used_bytes",
            "Bytes of the prefetched chunks a run then read",
            s.used_bytes,
        ),
        (
            "augur_prefetch_wasted_chunks",
            "Prefetched chunks evicted unread, or whose run ended without reading them",
            s.wasted_chunks,
        ),
        (
            "augur_prefetch_wasted_bytes",
            "Bytes of the wasted prefetched chunks",
            s.wasted_bytes,
        ),
        (
            "augur_prefetch_cancelled",
            "Queued prefetches dropped because their run ended",
            s.cancelled,
        ),
        (
            "augur_prefetch_retracted",
            "Queued prefetches dropped because their run's newer predictions no longer admitted them",
            s.retracted,
        ),
        (
            "augur_prefetch_errors",
            "Prefetches that failed (the chunk is then read on demand)",
            s.fetch_errors,
        ),
        (
            "augur_predictor_dropped_accesses",
            "Accesses the predictor thread could not take in time (dropped, never waited for)",
            s.events_dropped,
        ),
    ];
    for (name, help, v) in pairs {
        out.counter_value(name, help, v)?;
    }
    out.gauge_value(
        "augur_prefetch_queue_length",
        "Prefetches waiting in the queue",
        s.queue_len as i64,
    )?;
    out.gauge_value(
        "augur_prefetch_in_flight",
        "Prefetch fetches in flight",
        s.in_flight as i64,
    )?;
    out.gauge_value(
        "augur_prefetch_threshold",
        "The adaptive probability above which a predicted chunk is prefetched",
        f64::from(s.threshold),
    )?;
    let ratio = |v: Option<f64>| v.map(|v| vec![(Labels::default(), v)]).unwrap_or_default();
    out.gauge(
        "augur_prefetch_precision_ratio",
        "Used / (used + wasted) prefetched bytes since start (absent until a prefetch was resolved)",
        &ratio(s.precision),
    )?;
    out.gauge(
        "augur_prefetch_recall_ratio",
        "Estimated: used prefetched bytes / (used + bytes runs had to wait for) since start (absent until runs read)",
        &ratio(s.recall),
    )?;
    out.gauge_value(
        "augur_predictor_lstm_loaded",
        "1 if the ONNX LSTM is among the prediction models, 0 if the daemon runs on the online models only",
        i64::from(s.lstm),
    )
}
