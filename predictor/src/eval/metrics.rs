//! What the evaluator counts, and the numbers derived from the counts. Every chunk counts once
//! per run, at its first access (later reads hit the cache whatever the model did).
//!
//! | metric | definition |
//! |---|---|
//! | precision | prefetches the run then read / prefetches transferred (a transfer that started counts, a queued request that never started does not) |
//! | recall | chunks whose prefetch had *completed* before their first access / chunks accessed |
//! | byte hit ratio | bytes of those timely chunks / bytes of all chunks accessed |
//! | wasted bytes | bytes of transferred prefetches the run never read |
//! | late | accesses whose chunk was prefetched or queued but not there yet (the reader waited) |
//! | lead time | for timely hits, how long the chunk was there before it was read (p10, p50, p90) |
//! | stall | total time readers waited for misses and late prefetches, per run |
//! | calibration error | expected calibration error (10 bins) of the probabilities of transferred prefetches against whether they were read |
//!
//! Sums are over all test runs of a group (micro-averages), so long runs weigh more.

use serde::Serialize;

/// Counts from one or more simulated runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Runs.
    pub runs: u64,
    /// Distinct chunks read.
    pub accessed: u64,
    /// Their bytes.
    pub accessed_bytes: u64,
    /// Read after their prefetch completed.
    pub timely: u64,
    /// Their bytes.
    pub timely_bytes: u64,
    /// Read while their prefetch was in flight or still queued.
    pub late: u64,
    /// Read with no prefetch issued.
    pub missed: u64,
    /// Prefetch transfers started.
    pub prefetched: u64,
    /// Their bytes.
    pub prefetched_bytes: u64,
    /// Started prefetches that the run read.
    pub used: u64,
    /// Bytes of started prefetches the run never read.
    pub wasted_bytes: u64,
    /// Queued prefetches that never started.
    pub cancelled: u64,
    /// Lead times of timely hits, µs.
    pub lead_us: Vec<u64>,
    /// Total reader wait, µs.
    pub stall_us: u64,
    /// Probability and outcome of every started prefetch.
    pub outcomes: Vec<(f32, bool)>,
}

impl Tally {
    /// Adds another run's counts.
    pub fn add(&mut self, other: &Tally) {
        self.runs += other.runs;
        self.accessed += other.accessed;
        self.accessed_bytes += other.accessed_bytes;
        self.timely += other.timely;
        self.timely_bytes += other.timely_bytes;
        self.late += other.late;
        self.missed += other.missed;
        self.prefetched += other.prefetched;
        self.prefetched_bytes += other.prefetched_bytes;
        self.used += other.used;
        self.wasted_bytes += other.wasted_bytes;
        self.cancelled += other.cancelled;
        self.lead_us.extend_from_slice(&other.lead_us);
        self.stall_us += other.stall_us;
        self.outcomes.extend_from_slice(&other.outcomes);
    }

    /// Prefetches read / prefetches transferred; `None` when nothing was prefetched.
    pub fn precision(&self) -> Option<f64> {
        ratio(self.used, self.prefetched)
    }

    /// Timely chunks / accessed chunks.
    pub fn recall(&self) -> f64 {
        ratio(self.timely, self.accessed).unwrap_or(0.0)
    }

    /// Timely bytes / accessed bytes.
    pub fn byte_hit_ratio(&self) -> f64 {
        ratio(self.timely_bytes, self.accessed_bytes).unwrap_or(0.0)
    }

    /// p10, p50 and p90 of the lead times, in ms.
    pub fn lead_ms(&self) -> Option<Percentiles> {
        let mut sorted = self.lead_us.clone();
        sorted.sort_unstable();
        let at = |q: f64| {
            let i = ((sorted.len() - 1) as f64 * q).round() as usize;
            sorted[i] as f64 / 1000.0
        };
        (!sorted.is_empty()).then(|| Percentiles {
            p10: at(0.1),
            p50: at(0.5),
            p90: at(0.9),
        })
    }

    /// Mean reader wait per run, ms.
    pub fn stall_ms_per_run(&self) -> f64 {
        self.stall_us as f64 / 1000.0 / self.runs.max(1) as f64
    }

    /// Expected calibration error of started prefetches (10 bins); `None` without any.
    pub fn calibration_error(&self) -> Option<f64> {
        expected_calibration_error(&self.outcomes)
    }
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// Lead-time percentiles, ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// 10th percentile.
    pub p10: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
}

/// Expected calibration error over ten equal-width bins: the weighted mean gap between the
/// mean predicted probability and the observed frequency.
pub fn expected_calibration_error(pairs: &[(f32, bool)]) -> Option<f64> {
    if pairs.is_empty() {
        return None;
    }
    let mut bins = [(0.0f64, 0.0f64, 0u64); 10];
    for &(p, hit) in pairs {
        let b = ((p.clamp(0.0, 1.0) * 10.0) as usize).min(9);
        bins[b].0 += f64::from(p);
        bins[b].1 += f64::from(u8::from(hit));
        bins[b].2 += 1;
    }
    let n = pairs.len() as f64;
    Some(
        bins.iter()
            .filter(|b| b.2 > 0)
            .map(|&(p, h, _)| (p - h).abs() / n)
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_percentiles_and_calibration_error() {
        let tally = Tally {
            runs: 2,
            accessed: 10,
            accessed_bytes: 1000,
            timely: 4,
            timely_bytes: 250,
            prefetched: 5,
            used: 4,
            lead_us: vec![1000, 2000, 3000, 4000, 5000],
            stall_us: 3000,
            outcomes: vec![(0.9, true), (0.9, false)],
            ..Tally::default()
        };
        assert_eq!(tally.precision(), Some(0.8));
        assert_eq!(tally.recall(), 0.4);
        assert_eq!(tally.byte_hit_ratio(), 0.25);
        assert_eq!(tally.stall_ms_per_run(), 1.5);
        let lead = tally.lead_ms().unwrap();
        assert_eq!((lead.p10, lead.p50, lead.p90), (1.0, 3.0, 5.0));
        // Two predictions at 0.9, one came true: the gap is 0.4.
        assert!((tally.calibration_error().unwrap() - 0.4).abs() < 1e-6);
        assert_eq!(Tally::default().precision(), None);
        assert_eq!(Tally::default().lead_ms(), None);
    }
}
