//! [`Adapter`]: once per `[prefetch] adapt_interval_ms`, measures what the interval did
//! ([`Signals`]) and lets the [`ThresholdController`] move the threshold. Runs on the
//! predictor thread.
//!
//! Where each signal comes from:
//! - used and wasted bytes: the [`super::ledger::Ledger`]'s totals, after sweeping out
//!   prefetched chunks the cache evicted unread (those count as wasted, and as pressure);
//! - demand-miss latency: the mean time of the demand fetches that ended in the interval
//!   ([`crate::lazy::activity::Activity::demand_totals`]);
//! - bandwidth use: bytes prefetched over what the bound allowed in the interval; without a
//!   bound, the workers' busy share of the interval;
//! - cache use: bytes in use over the budgets of the RAM and NVMe tiers (where prefetched
//!   chunks are admitted; the spill tier is for whole layers).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cache::Tier;
use crate::prefetch::scheduler::Shared;
use crate::prefetch::threshold::{Signals, ThresholdController};

/// Counter values at the start of an interval.
#[derive(Debug, Default, Clone, Copy)]
struct Mark {
    used: u64,
    wasted: u64,
    evicted: u64,
    misses: u64,
    miss_time: Duration,
    fetched: u64,
    busy_nanos: u64,
}

/// The threshold's adaptation, interval by interval.
#[derive(Debug)]
pub struct Adapter {
    controller: ThresholdController,
    interval: Duration,
    workers: usize,
    at: Instant,
    mark: Mark,
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl Adapter {
    /// Adapts with `controller` every `interval`, for `workers` workers.
    pub fn new(controller: ThresholdController, interval: Duration, workers: usize) -> Adapter {
        Adapter {
            controller,
            interval,
            workers: workers.max(1),
            at: Instant::now(),
            mark: Mark::default(),
        }
    }

    /// Time until the next adaptation (zero: due).
    pub fn due_in(&self) -> Duration {
        self.interval.saturating_sub(self.at.elapsed())
    }

    fn mark(shared: &Shared) -> Mark {
        let t = &shared.ledger.totals;
        let (misses, miss_time) = shared.activity.demand_totals();
        Mark {
            used: get(&t.used_bytes),
            wasted: get(&t.wasted_bytes),
            evicted: get(&t.evicted_unused),
            misses,
            miss_time,
            fetched: get(&shared.counters.fetched_bytes),
            busy_nanos: get(&shared.counters.busy_nanos),
        }
    }

    /// Measures the interval just ended and moves the threshold.
    pub fn adapt(&mut self, shared: &Shared) {
        shared.ledger.sweep_evicted(&shared.cache);
        let now = Self::mark(shared);
        let was = self.mark;
        let span = self.at.elapsed().max(Duration::from_millis(1));
        let misses = now.misses - was.misses;
        let rate = shared
            .bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rate();
        let bandwidth_use = if rate > 0 {
            (now.fetched - was.fetched) as f64 / (rate as f64 * span.as_secs_f64())
        } else {
            (now.busy_nanos - was.busy_nanos) as f64
                / (self.workers as f64 * span.as_nanos() as f64)
        };
        let signals = Signals {
            used_bytes: now.used - was.used,
            wasted_bytes: now.wasted - was.wasted,
            miss_latency: (misses > 0).then(|| {
                (now.miss_time - was.miss_time) / u32::try_from(misses).unwrap_or(u32::MAX)
            }),
            bandwidth_use: Some(bandwidth_use),
            cache_use: cache_use(shared),
            evicted_unused: now.evicted - was.evicted,
        };
        let before = self.controller.value();
        let votes = self.controller.update(&signals);
        shared.set_threshold(self.controller.value());
        if self.controller.value() != before {
            tracing::debug!(
                from = before,
                to = self.controller.value(),
                up = votes.up,
                down = votes.down,
                ?signals,
                "prefetch threshold moved"
            );
        }
        self.mark = now;
        self.at = Instant::now();
    }
}

/// Share of the RAM and NVMe tiers' budgets in use (`None` if neither is on).
fn cache_use(shared: &Shared) -> Option<f64> {
    let status = shared.cache.status();
    let (used, budget) = status
        .tiers
        .iter()
        .filter(|t| t.tier != Tier::Hdd)
        .fold((0u64, 0u64), |(u, b), t| {
            (u + t.used_bytes, b + t.budget_bytes)
        });
    (budget > 0).then(|| used as f64 / budget as f64)
}
