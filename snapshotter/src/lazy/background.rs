//! The background fetch: once a lazy layer is mounted, its whole blob is fetched in large spans
//! at low priority, so that later reads never wait on the network and a registry outage after
//! the fetch no longer matters.
//!
//! Low priority means: it waits while any demand read of the layer is in progress, skips members
//! a demand read is already fetching, and asks for at most one span at a time. One thread per
//! layer (`augur-bgfetch`), stopped when the layer is unmounted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cache::Admission;
use crate::lazy::data::LayerData;

/// How long one span request may take before it is retried.
const SPAN_DEADLINE: Duration = Duration::from_secs(120);
/// Longest pause between attempts after errors.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Passes over the layer before giving up on members that keep failing verification.
const MAX_PASSES: u32 = 3;

/// A running background fetch; stopping it does not wait for an in-flight request.
#[derive(Debug)]
pub struct BackgroundFetch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BackgroundFetch {
    /// Starts fetching `data` in spans of up to `span` compressed bytes.
    pub fn start(data: Arc<LayerData>, span: u64) -> std::io::Result<BackgroundFetch> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("augur-bgfetch".into())
            .spawn(move || run(&data, &flag, span.max(1)))?;
        Ok(BackgroundFetch {
            stop,
            thread: Some(thread),
        })
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

fn run(data: &LayerData, stop: &AtomicBool, span: u64) {
    let started = Instant::now();
    for _ in 0..MAX_PASSES {
        if stop.load(Ordering::Acquire) || data.is_complete() {
            break;
        }
        fetch_pass(data, stop, span);
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
fn fetch_pass(data: &LayerData, stop: &AtomicBool, span: u64) {
    let members = data.index().members();
    let mut backoff = Duration::from_millis(500);
    let mut m = 0;
    while m < members.len() {
        if !wait_for_quiet(data, stop) {
            return;
        }
        if data.member_present(m as u32) || data.member_in_flight(m as u32) {
            m += 1;
            continue;
        }
        let start = members[m].offset;
        let mut k = m + 1;
        while k < members.len()
            && members[k].offset == members[k - 1].end
            && members[k].end - start <= span
            && !data.member_present(k as u32)
        {
            k += 1;
        }
        let len = members[k - 1].end - start;
        match data.read_source(start, len, Instant::now() + SPAN_DEADLINE) {
            Ok(bytes) => {
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

/// Waits until no demand read is running; false if stopped meanwhile.
fn wait_for_quiet(data: &LayerData, stop: &AtomicBool) -> bool {
    while data.demand_reads() > 0 {
        if !sleep_unless_stopped(stop, Duration::from_millis(10)) {
            return false;
        }
    }
    !stop.load(Ordering::Acquire)
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
