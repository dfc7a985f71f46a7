//! The families as rendered: names, help text, types, and that recorded values show.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::collect::{encode_cache, encode_layers, encode_model, encode_prefetch};
use super::hot::{HOT, ReadSource};
use super::{Emit, Metrics};
use crate::cache::{CacheStatus, Tier, TierStatus};
use crate::lazy::LayerTotals;

/// The lazy layers' and cache's families, from made-up snapshots (the real ones need mounts;
/// the integration test `lazy_pull::metrics_follow_a_lazy_pull_and_run` scrapes those).
#[derive(Debug)]
struct Fixed;

impl Collector for Fixed {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut out = Emit::new(encoder);
        let tier = |tier, used| TierStatus {
            tier,
            path: None,
            budget_bytes: 1 << 20,
            used_bytes: used,
            chunks: 3,
            hits: 7,
            inserts: 3,
            evictions: 1,
            promotions: 0,
            demotions: 0,
        };
        let status = CacheStatus {
            policy: "lfu".into(),
            ram_threshold: 0.8,
            nvme_threshold: 0.4,
            tiers: vec![tier(Tier::Ram, 4096), tier(Tier::Hdd, 12288)],
            misses: 5,
            corrupt: 2,
            rejected: 0,
            referenced_chunks: 6,
        };
        let totals = LayerTotals {
            snapshots: 2,
            layers: 1,
            data_bytes: 1000,
            fetched_bytes: 300,
            saved_bytes: 700,
        };
        let prefetch = crate::prefetch::PrefetchStats {
            issued_chunks: 4,
            used_chunks: 3,
            wasted_chunks: 1,
            precision: Some(0.75),
            recall: Some(0.5),
            threshold: 0.3,
            ..Default::default()
        };
        encode_layers(&totals, &mut out)?;
        encode_prefetch(&prefetch, &mut out)?;
        let model = augur_predictor::lstm::ModelInfo {
            label: "tools".into(),
            created: "2027-01-01".into(),
            ..Default::default()
        };
        encode_model(Some(&model), &mut out)?;
        let latency = super::inference::InferenceLatency::default();
        latency.observe(
            "tools-v1",
            &[Duration::from_micros(60), Duration::from_micros(80)],
        );
        super::inference::encode(&latency.snapshot(), &mut out)?;
        encode_cache(&status, &mut out)
    }
}

fn rendered() -> String {
    let mut m = Metrics::new();
    m.register(Fixed);
    m.render()
}

/// Family name → (help, type) from `# HELP` / `# TYPE` lines.
fn families(text: &str) -> BTreeMap<String, (String, String)> {
    let mut out: BTreeMap<String, (String, String)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.entry(name.into()).or_default().0 = help.into();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            out.entry(name.into()).or_default().1 = kind.into();
        }
    }
    out
}

#[test]
fn every_family_is_prefixed_typed_and_explained() {
    let text = rendered();
    let fams = families(&text);
    assert!(fams.len() >= 25, "only {} families:\n{text}", fams.len());
    for (name, (help, kind)) in &fams {
        assert!(name.starts_with("augur_"), "{name} lacks the augur_ prefix");
        assert!(
            help.len() >= 20,
            "{name}: help text {help:?} says too little"
        );
        assert!(
            ["counter", "gauge", "histogram"].contains(&kind.as_str()),
            "{name}: type {kind:?}"
        );
        if kind == "counter" {
            assert!(name.ends_with("_total"), "{name}: counters end in _total");
        }
        if name.contains("duration") {
            assert!(
                name.ends_with("_seconds"),
                "{name}: durations are in seconds"
            );
        }
    }
    // Every sample belongs to a described family.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap_or("");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| fams.get(*f).is_some_and(|(_, k)| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(fams.contains_key(family), "sample {line:?} has no family");
    }
}

#[test]
fn every_family_is_documented_in_operations_md() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md");
    let docs = std::fs::read_to_string(&path).expect("read docs/operations.md");
    for name in families(&rendered()).keys() {
        assert!(
            docs.contains(&format!("`{name}`")),
            "{name} is not in the metrics table of docs/operations.md"
        );
    }
}

#[test]
fn recorded_values_show_in_the_exposition() {
    let before = HOT.op_count("commit");
    HOT.snapshot_op("commit", tonic::Code::Ok, Duration::from_millis(2));
    HOT.snapshot_op("no-such-op", tonic::Code::Ok, Duration::from_millis(2));
    assert_eq!(HOT.op_count("commit"), before + 1);
    HOT.lazy_read(ReadSource::Nvme, 4096);
    HOT.registry_error("unreachable");
    let text = rendered();
    let sample = |prefix: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(
        sample("augur_snapshot_operation_duration_seconds_count{op=\"commit\",code=\"OK\"}") >= 1.0
    );
    assert!(sample("augur_lazy_served_bytes_total{source=\"nvme\"}") >= 4096.0);
    assert!(sample("augur_registry_errors_total{kind=\"unreachable\"}") >= 1.0);
    assert_eq!(sample("augur_lazy_saved_bytes"), 700.0);
    assert_eq!(sample("augur_cache_used_bytes{tier=\"hdd\"}"), 12288.0);
    assert_eq!(sample("augur_cache_corrupt_chunks_dropped_total"), 2.0);
    assert_eq!(
        sample("augur_build_info{version="),
        1.0,
        "build info is a constant 1"
    );
}

/// Every `expr` in a Grafana dashboard JSON, wherever it is nested.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v.as_str()) {
                    ("expr", Some(e)) => out.push(e.to_owned()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// The shipped Grafana dashboard queries only series the daemon renders (a renamed family
/// would leave a panel silently empty), and has the panels the operations guide lists.
#[test]
fn the_grafana_dashboard_names_only_rendered_families() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../systemd/augur-grafana.json");
    let text = std::fs::read_to_string(&path).expect("read systemd/augur-grafana.json");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 7, "{} panels", panels.len());
    let mut all = Vec::new();
    exprs(&dash, &mut all);
    assert!(all.len() >= panels.len(), "every panel has a query");
    let fams = families(&rendered());
    for expr in &all {
        let names: Vec<&str> = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("augur_"))
            .collect();
        assert!(!names.is_empty(), "{expr:?} queries no augur_ family");
        for name in names {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| fams.get(*f).is_some_and(|(_, k)| k == "histogram"))
                })
                .unwrap_or(name);
            assert!(
                fams.contains_key(family),
                "{name} (in {expr:?}) is not a family the daemon renders"
            );
        }
    }
    for title in [
        "tier",
        "fetched vs saved",
        "precision",
        "threshold",
        "p99",
        "error",
    ] {
        assert!(
            panels.iter().any(|p| p["title"]
                .as_str()
                .is_some_and(|t| t.to_lowercase().contains(title))),
            "no panel about {title}"
        );
    }
}

#[test]
fn the_served_model_is_a_labelled_gauge() {
    let text = rendered();
    assert!(
        text.contains("augur_predictor_model_info{label=\"tools\",created=\"2027-01-01\"} 1"),
        "{text}"
    );
}

#[test]
fn inference_latency_is_a_histogram_per_model_version() {
    let text = rendered();
    for line in [
        "augur_predictor_inference_seconds_count{model=\"tools-v1\"} 2",
        "augur_predictor_inference_seconds_bucket{model=\"tools-v1\",le=\"5e-05\"} 0",
        "augur_predictor_inference_seconds_bucket{model=\"tools-v1\",le=\"0.0001\"} 2",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
}
