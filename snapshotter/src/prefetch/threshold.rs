//! [`ThresholdController`]: the probability above which a predicted chunk is prefetched, moved
//! once per interval from what the last interval measured ([`Signals`]), within configured
//! bounds. Pure: the scheduler gathers the signals, this decides. The rule and why are in
//! `docs/decisions/0018-prefetch-scheduler.md`.
//!
//! Each signal is a vote, up (prefetch less) or down (prefetch more):
//!
//! | signal | up when | down when |
//! |---|---|---|
//! | precision (used / (used + wasted) bytes resolved in the interval) | below [`LOW_PRECISION`] | above [`HIGH_PRECISION`] |
//! | cache pressure (prefetch tiers' use, unused prefetched chunks evicted) | use ≥ [`HIGH_PRESSURE`] or any such eviction | |
//! | demand-miss latency (mean of the interval) | | ≥ [`EXPENSIVE_MISS`] |
//! | prefetch bandwidth use (of the bound, or of the link as measured) | ≥ [`BUSY_LINK`] | ≤ [`SPARE_LINK`] |
//!
//! The step is `step × (up − down)`, except that waste vetoes: while precision is low or the
//! cache is under pressure, down votes do not count (their benefit is speculative, the bytes
//! wasted are not). A signal with nothing measured (no bytes resolved, no miss) does not vote.

use std::time::Duration;

/// Precision below this raises the threshold.
pub const LOW_PRECISION: f64 = 0.5;
/// Precision above this lowers it.
pub const HIGH_PRECISION: f64 = 0.8;
/// Use of the prefetch tiers' budgets at or above this raises it.
pub const HIGH_PRESSURE: f64 = 0.9;
/// A mean demand miss this slow lowers it: a registry round trip, not a local read.
pub const EXPENSIVE_MISS: Duration = Duration::from_millis(20);
/// Prefetch using at least this share of its bandwidth raises it.
pub const BUSY_LINK: f64 = 0.9;
/// Prefetch using at most this share of its bandwidth lowers it.
pub const SPARE_LINK: f64 = 0.5;
/// Resolved bytes below this make the interval's precision noise: it does not vote.
pub const MIN_RESOLVED_BYTES: u64 = 256 << 10;
/// Default change per vote.
pub const DEFAULT_STEP: f32 = 0.02;

/// What one interval measured; `None`: nothing to measure.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Signals {
    /// Prefetched bytes later read, in the interval.
    pub used_bytes: u64,
    /// Prefetched bytes evicted unread or whose run ended unread, in the interval.
    pub wasted_bytes: u64,
    /// Mean latency of the interval's demand misses.
    pub miss_latency: Option<Duration>,
    /// Share of the prefetch bandwidth used (bytes fetched / what the bound or the link allowed).
    pub bandwidth_use: Option<f64>,
    /// Share of the RAM and NVMe tiers' budgets in use.
    pub cache_use: Option<f64>,
    /// Prefetched chunks evicted before anyone read them, in the interval.
    pub evicted_unused: u64,
}

impl Signals {
    /// Precision of the interval, if enough bytes were resolved to tell.
    pub fn precision(&self) -> Option<f64> {
        let resolved = self.used_bytes + self.wasted_bytes;
        (resolved >= MIN_RESOLVED_BYTES).then(|| self.used_bytes as f64 / resolved as f64)
    }
}

/// The adaptive threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdController {
    value: f32,
    min: f32,
    max: f32,
    step: f32,
}

/// How the last update voted (for logs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Votes {
    /// Votes to raise.
    pub up: u32,
    /// Votes to lower that counted.
    pub down: u32,
}

impl ThresholdController {
    /// Starts at `start`, clamped into `min..=max`.
    pub fn new(start: f32, min: f32, max: f32, step: f32) -> ThresholdController {
        ThresholdController {
            value: start.clamp(min, max),
            min,
            max,
            step,
        }
    }

    /// The current threshold.
    pub fn value(&self) -> f32 {
        self.value
    }

    /// Moves the threshold by what `s` says; returns the votes.
    pub fn update(&mut self, s: &Signals) -> Votes {
        let precision = s.precision();
        let low_precision = precision.is_some_and(|p| p < LOW_PRECISION);
        let pressure = s.cache_use.is_some_and(|u| u >= HIGH_PRESSURE) || s.evicted_unused > 0;
        let busy = s.bandwidth_use.is_some_and(|u| u >= BUSY_LINK);
        let up = u32::from(low_precision) + u32::from(pressure) + u32::from(busy);
        let down = if low_precision || pressure {
            0
        } else {
            u32::from(precision.is_some_and(|p| p > HIGH_PRECISION))
                + u32::from(s.miss_latency.is_some_and(|l| l >= EXPENSIVE_MISS))
                + u32::from(s.bandwidth_use.is_some_and(|u| u <= SPARE_LINK))
        };
        let delta = self.step * (up as f32 - down as f32);
        self.value = (self.value + delta).clamp(self.min, self.max);
        Votes { up, down }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: f32 = 0.05;

    fn controller() -> ThresholdController {
        ThresholdController::new(0.5, 0.2, 0.9, STEP)
    }

    fn near(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn nothing_measured_changes_nothing() {
        let mut c = controller();
        assert_eq!(c.update(&Signals::default()), Votes::default());
        assert!(near(c.value(), 0.5));
    }

    #[test]
    fn wasted_bytes_raise_and_good_precision_lowers() {
        let mut c = controller();
        let wasteful = Signals {
            used_bytes: 100 << 10,
            wasted_bytes: 900 << 10,
            ..Signals::default()
        };
        c.update(&wasteful);
        assert!(near(c.value(), 0.55), "{}", c.value());
        let precise = Signals {
            used_bytes: 900 << 10,
            wasted_bytes: 100 << 10,
            ..Signals::default()
        };
        c.update(&precise);
        c.update(&precise);
        assert!(near(c.value(), 0.45), "{}", c.value());
    }

    #[test]
    fn too_few_resolved_bytes_do_not_vote() {
        let mut c = controller();
        c.update(&Signals {
            wasted_bytes: 1 << 10,
            ..Signals::default()
        });
        assert!(near(c.value(), 0.5));
    }

    #[test]
    fn expensive_misses_and_a_spare_link_lower_it_together() {
        let mut c = controller();
        let votes = c.update(&Signals {
            miss_latency: Some(Duration::from_millis(80)),
            bandwidth_use: Some(0.1),
            ..Signals::default()
        });
        assert_eq!(votes, Votes { up: 0, down: 2 });
        assert!(near(c.value(), 0.4), "{}", c.value());
        // Cheap misses and a busy link: up.
        c.update(&Signals {
            miss_latency: Some(Duration::from_millis(1)),
            bandwidth_use: Some(0.95),
            ..Signals::default()
        });
        assert!(near(c.value(), 0.45), "{}", c.value());
    }

    #[test]
    fn waste_vetoes_the_reasons_to_lower() {
        let mut c = controller();
        let votes = c.update(&Signals {
            miss_latency: Some(Duration::from_millis(500)),
            bandwidth_use: Some(0.0),
            cache_use: Some(0.95),
            ..Signals::default()
        });
        assert_eq!(votes, Votes { up: 1, down: 0 });
        assert!(near(c.value(), 0.55), "{}", c.value());
        let votes = c.update(&Signals {
            miss_latency: Some(Duration::from_millis(500)),
            evicted_unused: 3,
            ..Signals::default()
        });
        assert_eq!(votes, Votes { up: 1, down: 0 });
    }

    #[test]
    fn it_stays_within_its_bounds() {
        let mut c = controller();
        let bad = Signals {
            used_bytes: 0,
            wasted_bytes: 1 << 20,
            cache_use: Some(1.0),
            bandwidth_use: Some(1.0),
            ..Signals::default()
        };
        for _ in 0..100 {
            c.update(&bad);
        }
        assert!(near(c.value(), 0.9));
        let good = Signals {
            used_bytes: 1 << 20,
            miss_latency: Some(Duration::from_secs(1)),
            bandwidth_use: Some(0.0),
            ..Signals::default()
        };
        for _ in 0..100 {
            c.update(&good);
        }
        assert!(near(c.value(), 0.2));
        assert!(near(
            ThresholdController::new(0.95, 0.2, 0.9, STEP).value(),
            0.9
        ));
    }
}
