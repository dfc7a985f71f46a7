//! The evaluation report: one group per category of test run (and `all`), one row per model,
//! rendered as Markdown for people and JSON for scripts (the field names are stable).

use std::fmt::Write as _;

use serde::Serialize;

use super::metrics::{Percentiles, Tally};
use super::{Category, EvalOptions, NetworkProfile};

/// The header's words for test runs learned in turn ([`EvalOptions::learn_test_runs`]).
const LEARNED: &str = "Test runs are learned when they end, oldest first, as a node learns: only \
                       the first run of an image never seen is new.";
/// The header's words for test runs that each start from the trained state.
const FRESH: &str = "Each test run starts from the trained state and is not learned: a run of an \
                     image never seen is its first.";

/// The whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The link simulated.
    pub network: NetworkProfile,
    /// Prefetch threshold.
    pub threshold: f32,
    /// Predictions asked for per call.
    pub max_predictions: usize,
    /// Training runs.
    pub train_runs: usize,
    /// Test runs.
    pub test_runs: usize,
    /// Whether each test run was learned when it ended ([`EvalOptions::learn_test_runs`]).
    pub learn_test_runs: bool,
    /// `all` first, then each category that has runs.
    pub groups: Vec<Group>,
    /// Torn or skipped trace files.
    pub notes: Vec<String>,
}

/// The test runs of one category.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// `all` or a [`Category::label`].
    pub category: String,
    /// Test runs in it.
    pub runs: u64,
    /// One row per model, in evaluation order (`none` first, `oracle` last).
    pub models: Vec<ModelRow>,
}

/// One model's numbers over a group (see [`super::metrics`] for definitions).
#[derive(Debug, Clone, Serialize)]
pub struct ModelRow {
    /// Model name.
    pub model: String,
    /// `null` when nothing was prefetched.
    pub precision: Option<f64>,
    /// Timely chunks / accessed chunks.
    pub recall: f64,
    /// Timely bytes / accessed bytes.
    pub byte_hit_ratio: f64,
    /// Bytes prefetched and never read.
    pub wasted_bytes: u64,
    /// Prefetch transfers started.
    pub prefetched: u64,
    /// Distinct chunks read.
    pub accessed: u64,
    /// Timely prefetch hits.
    pub timely: u64,
    /// Late prefetches.
    pub late: u64,
    /// Misses.
    pub missed: u64,
    /// Queued prefetches that never started.
    pub cancelled: u64,
    /// Lead time of timely hits, ms; `null` without any.
    pub lead_ms: Option<Percentiles>,
    /// Mean reader wait per run, ms.
    pub stall_ms_per_run: f64,
    /// Expected calibration error of prefetched probabilities; `null` without prefetches.
    pub calibration_error: Option<f64>,
}

impl ModelRow {
    fn new(model: &str, t: &Tally) -> Self {
        ModelRow {
            model: model.to_owned(),
            precision: t.precision(),
            recall: t.recall(),
            byte_hit_ratio: t.byte_hit_ratio(),
            wasted_bytes: t.wasted_bytes,
            prefetched: t.prefetched,
            accessed: t.accessed,
            timely: t.timely,
            late: t.late,
            missed: t.missed,
            cancelled: t.cancelled,
            lead_ms: t.lead_ms(),
            stall_ms_per_run: t.stall_ms_per_run(),
            calibration_error: t.calibration_error(),
        }
    }
}

impl Report {
    /// Groups per-run tallies (`rows`: model name, one tally per test run in order) by the
    /// test runs' categories.
    pub(super) fn build(
        opts: &EvalOptions,
        train_runs: usize,
        categories: &[Category],
        rows: Vec<(String, Vec<Tally>)>,
    ) -> Self {
        let mut wanted: Vec<Option<Category>> = vec![None];
        let mut present: Vec<Category> = categories.to_vec();
        present.sort();
        present.dedup();
        wanted.extend(present.into_iter().map(Some));
        let groups = wanted
            .into_iter()
            .map(|category| {
                let pick = |i: &usize| category.is_none_or(|c| categories[*i] == c);
                let models = rows
                    .iter()
                    .map(|(name, tallies)| {
                        let mut sum = Tally::default();
                        (0..tallies.len())
                            .filter(pick)
                            .for_each(|i| sum.add(&tallies[i]));
                        ModelRow::new(name, &sum)
                    })
                    .collect();
                Group {
                    category: category.map_or("all", Category::label).to_owned(),
                    runs: (0..categories.len()).filter(pick).count() as u64,
                    models,
                }
            })
            .collect();
        Report {
            network: opts.network,
            threshold: opts.threshold,
            max_predictions: opts.max_predictions,
            train_runs,
            test_runs: categories.len(),
            learn_test_runs: opts.learn_test_runs,
            groups,
            notes: Vec::new(),
        }
    }

    /// The row of `model` in the group `category` (`all` or a category label).
    pub fn row(&self, category: &str, model: &str) -> Option<&ModelRow> {
        let group = self.groups.iter().find(|g| g.category == category)?;
        group.models.iter().find(|m| m.model == model)
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Markdown: a heading and a table per group, then notes.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let n = &self.network;
        let learning = if self.learn_test_runs { LEARNED } else { FRESH };
        let _ = writeln!(
            out,
            "# Predictor evaluation\n\n{} training runs, {} test runs; link {} ms, {:.1} Mbit/s; \
             prefetch threshold {}, {} predictions per call. {learning}\n",
            self.train_runs,
            self.test_runs,
            n.latency_us as f64 / 1000.0,
            n.bandwidth_bytes_per_s as f64 / 125_000.0,
            self.threshold,
            self.max_predictions,
        );
        for group in &self.groups {
            let _ = writeln!(out, "## {} ({} runs)\n", group.category, group.runs);
            out.push_str(
                "| model | precision | recall | byte hit ratio | wasted | late | lead p10/p50/p90 ms | stall ms/run | calibration error |\n\
                 |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            );
            group
                .models
                .iter()
                .for_each(|row| markdown_row(&mut out, row));
            out.push('\n');
        }
        if !self.notes.is_empty() {
            out.push_str("Notes:\n\n");
            self.notes.iter().for_each(|note| {
                let _ = writeln!(out, "- {note}");
            });
        }
        out
    }
}

fn markdown_row(out: &mut String, row: &ModelRow) {
    let opt =
        |v: Option<f64>, digits: usize| v.map_or("–".to_owned(), |v| format!("{v:.digits$}"));
    let lead = row.lead_ms.map_or("–".to_owned(), |p| {
        format!("{:.0} / {:.0} / {:.0}", p.p10, p.p50, p.p90)
    });
    let _ = writeln!(
        out,
        "| {} | {} | {:.3} | {:.3} | {} | {} | {} | {:.0} | {} |",
        row.model,
        opt(row.precision, 3),
        row.recall,
        row.byte_hit_ratio,
        human_bytes(row.wasted_bytes),
        row.late,
        lead,
        row.stall_ms_per_run,
        opt(row.calibration_error, 3),
    );
}

fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30)),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}
