//! Latency histograms of the inference thread: one per model step (one ONNX Runtime run) and
//! one per request (waiting in the queue plus every step of a rollout). Buckets grow by a
//! quarter octave (19 % wide) from 1 µs to about 70 s, so percentiles are read to within 19 %
//! with 104 counters, and recording costs an add.

use std::time::Duration;

const BUCKETS: usize = 104;

/// Counts of durations in logarithmic buckets.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: [u64; BUCKETS],
    total: u64,
    sum_us: u64,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: [0; BUCKETS],
            total: 0,
            sum_us: 0,
            max_us: 0,
        }
    }
}

/// A histogram's summary, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Percentiles {
    /// Durations recorded.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median (upper edge of its bucket).
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest.
    pub max_us: u64,
}

fn bucket(us: u64) -> usize {
    // Index = floor(4 * log2(us)), from the position of the top bit and the next two bits.
    if us < 2 {
        return 0;
    }
    let log = 63 - us.leading_zeros() as usize;
    let frac = if log >= 2 {
        (us >> (log - 2)) & 3
    } else {
        (us << (2 - log)) & 3
    } as usize;
    (4 * log + frac).min(BUCKETS - 1)
}

fn upper_edge(index: usize) -> u64 {
    let (log, frac) = (index / 4, (index % 4) as u64);
    let base = 1u64 << log;
    base + (base * (frac + 1)).div_ceil(4)
}

impl Histogram {
    /// Counts one duration.
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket(us)] += 1;
        self.total += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.max_us = self.max_us.max(us);
    }

    /// Count, mean and percentiles.
    pub fn percentiles(&self) -> Percentiles {
        if self.total == 0 {
            return Percentiles::default();
        }
        let at = |q: f64| {
            let rank = ((self.total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, &c) in self.counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return upper_edge(i).min(self.max_us);
                }
            }
            self.max_us
        };
        Percentiles {
            count: self.total,
            mean_us: self.sum_us as f64 / self.total as f64,
            p50_us: at(0.5),
            p90_us: at(0.9),
            p99_us: at(0.99),
            max_us: self.max_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_a_bucket_of_the_truth() {
        let mut h = Histogram::default();
        assert_eq!(h.percentiles(), Percentiles::default());
        (1..=1000u64).for_each(|us| h.record(Duration::from_micros(us)));
        let p = h.percentiles();
        assert_eq!((p.count, p.max_us), (1000, 1000));
        assert!((p.mean_us - 500.5).abs() < 1e-9);
        for (got, truth) in [(p.p50_us, 500.0), (p.p90_us, 900.0), (p.p99_us, 990.0)] {
            assert!(
                got as f64 >= truth && got as f64 <= truth * 1.19 + 1.0,
                "{got} vs {truth}"
            );
        }
    }

    #[test]
    fn buckets_cover_every_duration_in_order() {
        let mut last = 0;
        for us in (0..100_000u64).chain([u64::MAX / 2, u64::MAX]) {
            let b = bucket(us);
            assert!(b >= last && b < BUCKETS, "{us} -> {b}");
            assert!(
                b == BUCKETS - 1 || upper_edge(b) > us,
                "{us} above bucket {b}'s edge"
            );
            last = b;
        }
    }
}
