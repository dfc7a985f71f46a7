//! A lock-free latency histogram for hot paths: fixed bucket bounds, one atomic per bucket, a
//! nanosecond sum. Observing is a linear scan of at most a dozen bounds and two relaxed atomic
//! adds: no allocation, no lock, callable from FUSE threads and tokio workers alike. Only a
//! scrape ([`Histogram::snapshot`]) allocates.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Most buckets a histogram may have (the `+Inf` bucket not counted).
pub const MAX_BUCKETS: usize = 14;

/// Upper bounds, in seconds, for operations that usually take micro- to milliseconds (snapshot
/// operations, cache-served reads).
pub const FAST_SECONDS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    5.0,
];

/// Upper bounds, in seconds, for operations that wait on the network (registry requests, reads
/// that blocked on a fetch).
pub const NETWORK_SECONDS: &[f64] = &[
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A histogram with the bounds it was made with; `const`-constructible so it can live in a
/// `static`.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// `counts[i]` counts observations in `(bounds[i-1], bounds[i]]`; the last, those above
    /// every bound.
    counts: [AtomicU64; MAX_BUCKETS + 1],
    sum_nanos: AtomicU64,
}

/// A histogram's values at one instant, as the exposition format wants them.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Sum of observations, seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
    /// (upper bound, observations in that bucket alone), the last bound `+Inf`.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending, at most [`MAX_BUCKETS`]; checked in tests).
    pub const fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: [const { AtomicU64::new(0) }; MAX_BUCKETS + 1],
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far (relaxed: a scrape may miss one being recorded).
    pub fn count(&self) -> u64 {
        self.counts[..=self.bounds.len()]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// The values now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(&b, c)| (b, c.load(Ordering::Relaxed)))
            .collect();
        let above = self.counts[self.bounds.len()].load(Ordering::Relaxed);
        buckets.push((f64::INFINITY, above));
        HistogramSnapshot {
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_sets_are_ascending_and_fit() {
        for bounds in [FAST_SECONDS, NETWORK_SECONDS] {
            assert!(bounds.len() <= MAX_BUCKETS);
            assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
        }
    }

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        static H: Histogram = Histogram::new(&[0.001, 0.01]);
        H.observe(Duration::from_micros(1000)); // on the bound: le="0.001"
        H.observe(Duration::from_millis(5));
        H.observe(Duration::from_secs(3));
        let s = H.snapshot();
        assert_eq!(s.buckets, vec![(0.001, 1), (0.01, 1), (f64::INFINITY, 1)]);
        assert_eq!(s.count, 3);
        assert_eq!(H.count(), 3);
        assert!((s.sum - 3.006).abs() < 1e-9, "{}", s.sum);
    }
}
