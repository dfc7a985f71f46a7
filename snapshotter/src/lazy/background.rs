//! The background fetch: once a lazy layer is mounted, its whole blob is fetched in spans at low
//! priority, so that later reads never wait on the network and a registry outage after the fetch
//! no longer matters.
//!
//! Low priority means it keeps off the link containers are waiting on:
//!
//! - a span starts only when the daemon's demand side ([`Activity`], shared by every layer) has
//!   been quiet for [`BackgroundPolicy::idle`]: no demand fetch in flight, none ended, no layer
//!   resolved or mounted. A pull and the start of its container are one burst of such activity,
//!   so the layers are streamed once the container has what it needs to start;
//! - spans are sized to take about [`SPAN_TARGET`] on the wire ([`SpanSizer`], from the rate the
//!   previous spans achieved, up to [`BackgroundPolicy::max_span`]), so a demand read that
//!   arrives while one is in flight shares the link for that long at most;
//! - it skips members a demand read is already fetching, and asks for one span at a time.
//!
//! Before this (measured with `augur-lazy-bench`, docs/benchmarks.md) spans of 4 MiB started at
//! mount and only waited for reads *of the same layer*: on a 25 Mbit/s link each took ~1.5 s,
//! the container's first 2 MB read took 4.3 s instead of ~0.8 s, and 30 MiB of the python image
//! had been fetched before `import json` printed, against 6.4 MiB needed.
//!
//! An operator can hurry a fetch (`POST /prefetch/layer/{digest}` on the admin API,
//! [`BackgroundFetch::hurry`]): it then starts spans without waiting for quiet, but still never
//! while a demand fetch is in flight.
//!
//! One thread per layer (`augur-bgfetch`), stopped when the layer is unmounted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cache::Admission;
use crate::lazy::activity::Activity;
use crate::lazy::data::LayerData;

/// How long one span request may take before it is retried.
const SPAN_DEADLINE: Duration = Duration::from_secs(120);
/// Longest pause between attempts after errors.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Passes over the layer before giving up on members that keep failing verification.
const MAX_PASSES: u32 = 3;
/// Time on the wire a span is sized for.
pub const SPAN_TARGET: Duration = Duration::from_millis(250);
/// Smallest span (and the first one, before any rate is known).
pub const MIN_SPAN: u64 = 256 << 10;
/// How often a waiting fetch looks at the demand side again.
const QUIET_POLL: Duration = Duration::from_millis(20);

/// When and how much the background fetch asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackgroundPolicy {
    /// Largest span, in compressed bytes (`remote.fetch_span_mib`).
    pub max_span: u64,
    /// Quiet time on the demand side before a span starts (`remote.background_idle_ms`).
    pub idle: Duration,
}

/// A running background fetch; stopping it does not wait for an in-flight request.
#[derive(Debug)]
pub struct BackgroundFetch {
    stop: Arc<AtomicBool>,
    hurried: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BackgroundFetch {
    /// Starts fetching `data` as `policy` says, yielding to `activity`.
    pub fn start(
        data: Arc<LayerData>,
        activity: Arc<Activity>,
        policy: BackgroundPolicy,
    ) -> std::io::Result<BackgroundFetch> {
        let stop = Arc::new(AtomicBool::new(false));
        let hurried = Arc::new(AtomicBool::new(false));
        let flags = Flags {
            stop: Arc::clone(&stop),
            hurried: Arc::clone(&hurried),
        };
        let thread = std::thread::Builder::new()
            .name("augur-bgfetch".into())
            .spawn(move || run(&data, &activity, &flags, policy))?;
        Ok(BackgroundFetch {
            stop,
            hurried,
            thread: Some(thread),
        })
    }

    /// From now on, spans start as soon as no demand fetch is in flight (no quiet time).
    pub fn hurry(&self) {
        self.hurried.store(true, Ordering::Release);
    }

    /// Whether [`BackgroundFetch::hurry`] was called.
    pub fn is_hurried(&self) -> bool {
        self.hurried.load(Ordering::Acquire)
    }

    /// Whether the fetch thread has finished (the layer is complete or it gave up).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for BackgroundFetch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Not joined: the thread notices the flag between spans and exits on its own.
        self.thread.take();
    }
}

/// Sizes spans so that each takes about [`SPAN_TARGET`]: the rate the last span achieved (its
/// round trip included) times the target, at least [`MIN_SPAN`], at most the policy's maximum,
/// and at most twice the previous size (one fast span on a quiet link is not a trend).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanSizer {
    max: u64,
    next: u64,
}

impl SpanSizer {
    /// Starts at [`MIN_SPAN`] (or `max`, if smaller).
    pub fn new(max: u64) -> SpanSizer {
        let max = max.max(1);
        SpanSizer {
            max,
            next: MIN_SPAN.min(max),
        }
    }

    /// Bytes to ask for next.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Learns from a span of `bytes` that took `took`.
    pub fn record(&mut self, bytes: u64, took: Duration) {
        let rate = bytes as f64 / took.as_secs_f64().max(1e-6);
        let want = (rate * SPAN_TARGET.as_secs_f64()) as u64;
        self.next = want
            .min(self.next.saturating_mul(2))
            .clamp(MIN_SPAN.min(self.max), self.max);
    }
}

/// What the fetch thread watches: stop, and hurry.
struct Flags {
    stop: Arc<AtomicBool>,
    hurried: Arc<AtomicBool>,
}

impl Flags {
    /// The quiet time to wait for before a span: none once hurried.
    fn idle(&self, policy: BackgroundPolicy) -> Duration {
        if self.hurried.load(Ordering::Acquire) {
            Duration::ZERO
        } else {
            policy.idle
        }
    }
}

fn run(data: &LayerData, activity: &Activity, flags: &Flags, policy: BackgroundPolicy) {
    let stop = &*flags.stop;
    let started = Instant::now();
    let mut sizer = SpanSizer::new(policy.max_span);
    for _ in 0..MAX_PASSES {
        if stop.load(Ordering::Acquire) || data.is_complete() {
            break;
        }
        fetch_pass(data, activity, flags, policy, &mut sizer);
        match data.mark_progress() {
            Ok(true) => {
                tracing::info!(
                    layer = data.source_name(),
                    secs = started.elapsed().as_secs_f64(),
                    "layer fully fetched; reads are local from now on"
                );
                return;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(layer = data.source_name(), error = %e, "could not save fetch progress")
            }
        }
    }
    if !stop.load(Ordering::Acquire) && !data.is_complete() {
        tracing::warn!(
            layer = data.source_name(),
            "background fetch gave up; missing chunks will be fetched when read"
        );
    }
}

/// One pass over the members that are not here yet.
fn fetch_pass(
    data: &LayerData,
    activity: &Activity,
    flags: &Flags,
    policy: BackgroundPolicy,
    sizer: &mut SpanSizer,
) {
    let stop = &*flags.stop;
    let members = data.index().members();
    let mut backoff = Duration::from_millis(500);
    let mut m = 0;
    while m < members.len() {
        if !wait_for_quiet(activity, flags, policy) {
            return;
        }
        if data.member_present(m as u32) || data.member_in_flight(m as u32) {
            m += 1;
            continue;
        }
        let start = members[m].offset;
        let span = sizer.next();
        let mut k = m + 1;
        while k < members.len()
            && members[k].offset == members[k - 1].end
            && members[k].end - start <= span
            && !data.member_present(k as u32)
        {
            k += 1;
        }
        let len = members[k - 1].end - start;
        let asked = Instant::now();
        match data.read_source(start, len, asked + SPAN_DEADLINE) {
            Ok(bytes) => {
                let took = asked.elapsed();
                sizer.record(bytes.len() as u64, took);
                tracing::debug!(
                    layer = data.source_name(),
                    offset = start,
                    bytes = bytes.len(),
                    ms = took.as_secs_f64() * 1e3,
                    next_span = sizer.next(),
                    "background span"
                );
                for (j, member) in members.iter().enumerate().take(k).skip(m) {
                    let slice =
                        &bytes[(member.offset - start) as usize..(member.end - start) as usize];
                    if let Err(e) = data.store_member(j as u32, slice, Admission::Background) {
                        tracing::warn!(layer = data.source_name(), error = %e, "background fetch: bad member");
                    }
                }
                backoff = Duration::from_millis(500);
                m = k;
            }
            Err(e) => {
                tracing::warn!(
                    layer = data.source_name(),
                    error = %e,
                    retry_in = ?backoff,
                    "background fetch failed; retrying"
                );
                if !sleep_unless_stopped(stop, backoff) {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Waits until the demand side has been quiet for the policy's idle time (none once hurried);
/// false if stopped meanwhile.
fn wait_for_quiet(activity: &Activity, flags: &Flags, policy: BackgroundPolicy) -> bool {
    let stop = &*flags.stop;
    loop {
        if stop.load(Ordering::Acquire) {
            return false;
        }
        let idle = flags.idle(policy);
        let wait = match activity.quiet_for() {
            Some(quiet) if quiet >= idle => return true,
            Some(quiet) => (idle - quiet).min(QUIET_POLL),
            None => QUIET_POLL,
        };
        if !sleep_unless_stopped(stop, wait.max(Duration::from_millis(1))) {
            return false;
        }
    }
}

fn sleep_unless_stopped(stop: &AtomicBool, d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::Acquire) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
    }
    !stop.load(Ordering::Acquire)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn spans_grow_on_a_fast_link_up_to_the_maximum() {
        let mut s = SpanSizer::new(4 * MIB);
        assert_eq!(s.next(), MIN_SPAN);
        // 1 GB/s: the rate allows far more than 4 MiB per 250 ms, but growth is at most 2x.
        s.record(s.next(), Duration::from_micros(250));
        assert_eq!(s.next(), 2 * MIN_SPAN);
        for _ in 0..10 {
            s.record(s.next(), Duration::from_millis(1));
        }
        assert_eq!(s.next(), 4 * MIB);
    }

    #[test]
    fn spans_shrink_to_what_a_slow_link_carries_in_the_target_time() {
        let mut s = SpanSizer::new(4 * MIB);
        for _ in 0..5 {
            s.record(s.next(), Duration::from_millis(1));
        }
        assert_eq!(s.next(), 4 * MIB);
        // 25 Mbit/s with a 100 ms round trip: 4 MiB took 1.44 s.
        s.record(4 * MIB, Duration::from_millis(1442));
        let want = (4.0 * MIB as f64 / 1.442 * 0.25) as u64;
        assert_eq!(s.next(), want);
        assert!(s.next() < MIB, "{}", s.next());
        // A crawling link never goes below the minimum.
        s.record(1000, Duration::from_secs(10));
        assert_eq!(s.next(), MIN_SPAN);
    }

    #[test]
    fn a_maximum_below_the_minimum_wins() {
        let mut s = SpanSizer::new(64 << 10);
        assert_eq!(s.next(), 64 << 10);
        s.record(64 << 10, Duration::from_micros(10));
        assert_eq!(s.next(), 64 << 10);
    }
}
