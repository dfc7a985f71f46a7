//! [`Activity`]: what containers are asking of the registry right now, across every lazy layer
//! of the daemon, so that the background fetch keeps off the network while they wait.
//!
//! All layers share one link to the registry, so a background span of layer A slows a demand
//! fetch of layer B as much as one of A. The background fetch therefore starts a span only when
//! no demand fetch is in flight anywhere and none has ended (and no layer was resolved or
//! mounted) for a while ([`Activity::quiet_for`]). Measured under shaping
//! (`docs/benchmarks.md`, lazy pull), the per-layer check it replaces let a span of one layer
//! hold up a container's reads on the others for seconds.
//!
//! The prefetcher (`crate::prefetch`) sits between the two: its workers wait while any demand
//! fetch is in flight ([`Activity::demand_in_flight`]), and the background fetch waits for its
//! prefetches as for demand ones. It also reads the demand fetches' mean duration (the cost of
//! a miss) from [`Activity::demand_totals`].
//!
//! Lock-free: counters of fetches in flight, of demand fetches ended and their time, and the
//! time of the last event; read by the `augur-bgfetch` and `augur-prefetch-N` threads, updated
//! by FUSE threads, prefetch workers and the snapshot layer.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Demand-side registry activity of one daemon.
#[derive(Debug)]
pub struct Activity {
    /// Demand fetches waiting on the registry now.
    in_flight: AtomicUsize,
    /// Prefetches on the registry now (the background fetch yields to them too).
    prefetching: AtomicUsize,
    /// Demand fetches ended, and their total time in nanoseconds (the prefetcher's miss cost).
    demand_ended: AtomicU64,
    demand_nanos: AtomicU64,
    /// Nanoseconds after `epoch` of the last event (a fetch ended, a layer resolved or mounted).
    last: AtomicU64,
    epoch: Instant,
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

impl Activity {
    /// No activity yet; counts as having just happened (a new daemon is busy mounting).
    pub fn new() -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            prefetching: AtomicUsize::new(0),
            demand_ended: AtomicU64::new(0),
            demand_nanos: AtomicU64::new(0),
            last: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Marks a demand fetch as in flight until the guard drops (which also [`Activity::touch`]es).
    pub fn fetching(&self) -> Fetching<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Fetching {
            activity: self,
            since: Instant::now(),
        }
    }

    /// Marks a prefetch as in flight until the guard drops (which also [`Activity::touch`]es):
    /// not demand, but the background fetch yields to it.
    pub fn prefetching(&self) -> Prefetching<'_> {
        self.prefetching.fetch_add(1, Ordering::AcqRel);
        Prefetching { activity: self }
    }

    /// Demand fetches in flight now (prefetch workers wait while there are any).
    pub fn demand_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Demand fetches ended so far and their total duration.
    pub fn demand_totals(&self) -> (u64, Duration) {
        (
            self.demand_ended.load(Ordering::Acquire),
            Duration::from_nanos(self.demand_nanos.load(Ordering::Acquire)),
        )
    }

    /// Records that the registry was just used on a container's behalf (resolve, mount).
    pub fn touch(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.fetch_max(now, Ordering::AcqRel);
    }

    /// How long nothing has happened: `None` while a demand fetch or a prefetch is in flight.
    pub fn quiet_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0
            || self.prefetching.load(Ordering::Acquire) > 0
        {
            return None;
        }
        let last = Duration::from_nanos(self.last.load(Ordering::Acquire));
        Some(self.epoch.elapsed().saturating_sub(last))
    }
}

/// A demand fetch in flight (see [`Activity::fetching`]).
#[derive(Debug)]
pub struct Fetching<'a> {
    activity: &'a Activity,
    since: Instant,
}

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        let took = u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.activity.demand_nanos.fetch_add(took, Ordering::AcqRel);
        self.activity.demand_ended.fetch_add(1, Ordering::AcqRel);
        self.activity.touch();
        self.activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A prefetch in flight (see [`Activity::prefetching`]).
#[derive(Debug)]
pub struct Prefetching<'a> {
    activity: &'a Activity,
}

impl Drop for Prefetching<'_> {
    fn drop(&mut self) {
        self.activity.touch();
        self.activity.prefetching.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long enough that the two reads compared below (back to back) cannot be that far apart.
    const GAP: Duration = Duration::from_millis(200);

    #[test]
    fn a_fetch_in_flight_is_never_quiet_and_its_end_restarts_the_clock() {
        let a = Activity::new();
        std::thread::sleep(GAP);
        let before = a.quiet_for().expect("nothing in flight");
        assert!(before >= GAP, "{before:?}");
        let f = a.fetching();
        let g = a.fetching();
        assert_eq!(a.quiet_for(), None);
        drop(f);
        assert_eq!(a.quiet_for(), None, "one fetch still in flight");
        drop(g);
        let after = a.quiet_for().expect("all fetches ended");
        assert!(after < before, "the clock restarts when a fetch ends");
    }

    #[test]
    fn touch_restarts_the_clock() {
        let a = Activity::new();
        std::thread::sleep(GAP);
        let before = a.quiet_for().expect("nothing in flight");
        a.touch();
        let after = a.quiet_for().expect("nothing in flight");
        assert!(after < before, "{after:?} after touch, {before:?} before");
    }
}
