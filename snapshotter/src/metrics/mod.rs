//! # Prometheus metrics
//!
//! The daemon's metrics, all named `augur_…`, served as the Prometheus text format on
//! `GET /metrics` of `[metrics] address` (loopback by default; see `docs/operations.md#metrics`
//! for every family and example queries, and decision 0015 for the design).
//!
//! | module | role |
//! |---|---|
//! | [`histogram`] | a lock-free, `static`-friendly latency histogram |
//! | [`hot`] | process-wide instruments of hot paths (snapshot ops, lazy reads, registry requests) |
//! | [`collect`] | collectors that read a subsystem's own counters at scrape time (cache, lazy layers, build) |
//! | [`inference`] | the LSTM's step latency per model version, fed by its inference thread |
//! | [`coldstart`] | per-image cold-start times, a bounded table fed by the trace recorder |
//! | [`dashboard`] | the live dashboard page and the JSON it polls, read from the same counters |
//! | [`server`] | the HTTP endpoint (axum on a TCP listener) |
//!
//! ## Scrape-time collectors
//! A subsystem that keeps counters for its own use does not count twice: it gets a
//! [`Collector`] that turns a snapshot of its counters into families when Prometheus scrapes,
//! registered once at start-up with [`Metrics::register`]. Only what nobody counted (latency
//! distributions, reads by source) is recorded on the hot path, in [`hot::HOT`]. A new
//! subsystem plugs in with a few lines: implement [`Collector`] (writing with [`Emit`]) and
//! register it in `daemon::run`.
//!
//! ## Threads
//! Recording happens on whatever thread does the work (relaxed atomics, no lock). A scrape runs
//! the collectors on tokio's blocking pool (the cache's status takes its tiers' locks briefly).

pub mod coldstart;
pub mod collect;
pub mod dashboard;
pub mod histogram;
pub mod hot;
pub mod inference;
pub mod server;

#[cfg(test)]
mod tests;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

pub use histogram::HistogramSnapshot;
pub use server::{MetricsError, serve};

/// The `Content-Type` of `GET /metrics` (the Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Labels of one series: (name, value) pairs.
pub type Labels<'a> = Vec<(&'a str, &'a str)>;

/// The registry the endpoint renders: the hot-path instruments, build info, and whatever
/// collectors the daemon registers.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    dashboard: dashboard::Sources,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// The daemon's own families: hot paths and build info.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(hot::HotPaths));
        registry.register_collector(Box::new(collect::BuildInfo));
        Metrics {
            registry,
            dashboard: dashboard::Sources::default(),
        }
    }

    /// Sets what the dashboard reads (the subsystems the daemon runs).
    pub fn set_dashboard(&mut self, sources: dashboard::Sources) {
        self.dashboard = sources;
    }

    /// The dashboard's values now (blocking, like [`Metrics::render`]).
    pub fn dashboard_data(&self) -> dashboard::DashboardData {
        dashboard::data(&self.dashboard)
    }

    /// Adds a collector, run at every scrape.
    pub fn register(&mut self, collector: impl Collector) {
        self.registry.register_collector(Box::new(collector));
    }

    /// The text exposition of every family now (blocking: collectors may take locks).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 << 10);
        // Writing to a String cannot fail; a collector's error would be a bug in its encoding.
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!(error = %e, "could not encode metrics");
        }
        out
    }
}

/// Writes families from a collector: each call is one family, its help text and all its
/// series. Counter names are given without `_total` (the encoder adds it).
#[derive(Debug)]
pub struct Emit<'a> {
    enc: DescriptorEncoder<'a>,
}

impl<'a> Emit<'a> {
    /// Wraps the encoder a [`Collector::encode`] is given.
    pub fn new(enc: DescriptorEncoder<'a>) -> Emit<'a> {
        Emit { enc }
    }

    fn family<'s>(
        &'s mut self,
        name: &'s str,
        help: &str,
        kind: MetricType,
    ) -> Result<MetricEncoder<'s>, std::fmt::Error> {
        self.enc.encode_descriptor(name, help, None, kind)
    }

    /// A counter family with one series per label set.
    pub fn counter(
        &mut self,
        name: &str,
        help: &str,
        series: &[(Labels<'_>, u64)],
    ) -> std::fmt::Result {
        let mut m = self.family(name, help, MetricType::Counter)?;
        for (labels, v) in series {
            let labels = labels.as_slice();
            m.encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(v, None)?;
        }
        Ok(())
    }

    /// A counter without labels.
    pub fn counter_value(&mut self, name: &str, help: &str, v: u64) -> std::fmt::Result {
        self.family(name, help, MetricType::Counter)?
            .encode_counter::<NoLabelSet, _, u64>(&v, None)
    }

    /// A gauge family with one series per label set.
    pub fn gauge<V: EncodeGaugeValue>(
        &mut self,
        name: &str,
        help: &str,
        series: &[(Labels<'_>, V)],
    ) -> std::fmt::Result {
        let mut m = self.family(name, help, MetricType::Gauge)?;
        for (labels, v) in series {
            let labels = labels.as_slice();
            m.encode_family(&labels)?.encode_gauge(v)?;
        }
        Ok(())
    }

    /// A gauge without labels.
    pub fn gauge_value<V: EncodeGaugeValue>(
        &mut self,
        name: &str,
        help: &str,
        v: V,
    ) -> std::fmt::Result {
        self.family(name, help, MetricType::Gauge)?.encode_gauge(&v)
    }

    /// A histogram family with one series per label set.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        series: &[(Labels<'_>, HistogramSnapshot)],
    ) -> std::fmt::Result {
        let mut m = self.family(name, help, MetricType::Histogram)?;
        for (labels, h) in series {
            let labels = labels.as_slice();
            m.encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
        }
        Ok(())
    }
}
