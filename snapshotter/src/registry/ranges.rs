//! Request coalescing at the registry layer.
//!
//! - [`SingleFlight`]: concurrent identical requests (same blob, same range) share one HTTP
//!   request; every waiter gets a clone of the one result.
//! - [`merge`]: a batch of ranges becomes fewer, larger requests by joining ranges that overlap
//!   or lie at most a small gap apart (a gap is cheaper to download than a round trip), bounded
//!   in size so one request never grows without limit.
//!
//! The FUSE layer above also coalesces per chunk; this layer stays small and exact.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::{BoxFuture, FutureExt, Shared};

/// Ranges at most this far apart are fetched in one request.
pub(crate) const MERGE_GAP: u64 = 64 * 1024;
/// A merged request is not grown beyond this many bytes.
pub(crate) const MAX_SPAN: u64 = 16 * 1024 * 1024;

/// One request covering some of the caller's ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Span {
    /// Offset of the request in the blob.
    pub offset: u64,
    /// Bytes requested.
    pub len: u64,
    /// Indices into the caller's range list that this span serves.
    pub members: Vec<usize>,
}

/// Groups `ranges` (`(offset, len)`, any order, empty ones skipped) into spans: sorted by offset,
/// a range joins the current span if it starts at most `gap` bytes after the span's end and the
/// span stays within `max_span` bytes (a single larger range is its own span).
pub(crate) fn merge(ranges: &[(u64, u64)], gap: u64, max_span: u64) -> Vec<Span> {
    let mut order: Vec<usize> = (0..ranges.len()).filter(|&i| ranges[i].1 > 0).collect();
    order.sort_by_key(|&i| ranges[i]);
    let mut spans: Vec<Span> = Vec::new();
    for i in order {
        let (off, len) = ranges[i];
        let end = off.saturating_add(len);
        if let Some(s) = spans.last_mut() {
            let s_end = s.offset + s.len;
            let new_end = s_end.max(end);
            if off <= s_end.saturating_add(gap) && new_end - s.offset <= max_span {
                s.len = new_end - s.offset;
                s.members.push(i);
                continue;
            }
        }
        spans.push(Span {
            offset: off,
            len: end - off,
            members: vec![i],
        });
    }
    spans
}

type Flight<V> = Shared<BoxFuture<'static, V>>;
type FlightMap<K, V> = Mutex<HashMap<K, Flight<V>>>;

/// Runs at most one future per key at a time; later callers with the same key wait for it.
///
/// The entry is removed by the future itself when it completes, so a result is never served to a
/// caller that arrives afterwards. If every waiter goes away the future is paused, not lost: the
/// next caller with that key resumes it.
pub(crate) struct SingleFlight<K, V: Clone> {
    flights: Arc<FlightMap<K, V>>,
}

impl<K, V> SingleFlight<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn new() -> Self {
        SingleFlight {
            flights: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The result of the flight for `key`, starting it with `start` if none is in the air.
    pub(crate) async fn run(&self, key: K, start: impl FnOnce() -> BoxFuture<'static, V>) -> V {
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            match flights.get(&key) {
                Some(f) => f.clone(),
                None => {
                    let f = self.launch(key.clone(), start());
                    flights.insert(key, f.clone());
                    f
                }
            }
        };
        flight.await
    }

    fn launch(&self, key: K, work: BoxFuture<'static, V>) -> Flight<V> {
        // Weak: the map holds the future, so the future must not keep the map alive.
        let flights = Arc::downgrade(&self.flights);
        async move {
            let v = work.await;
            if let Some(flights) = flights.upgrade() {
                flights
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&key);
            }
            v
        }
        .boxed()
        .shared()
    }

    /// Flights in the air (for tests).
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn spans(ranges: &[(u64, u64)], gap: u64, max: u64) -> Vec<(u64, u64, Vec<usize>)> {
        merge(ranges, gap, max)
            .into_iter()
            .map(|s| (s.offset, s.len, s.members))
            .collect()
    }

    #[test]
    fn merges_overlapping_adjacent_and_near_ranges() {
        // 0..10 and 5..20 overlap; 20..30 is adjacent; 35..40 is 5 past the end (gap 8).
        let got = spans(&[(20, 10), (0, 10), (5, 15), (35, 5)], 8, 1 << 20);
        assert_eq!(got, vec![(0, 40, vec![1, 2, 0, 3])]);
    }

    #[test]
    fn keeps_far_ranges_apart_and_skips_empty_ones() {
        let got = spans(&[(0, 10), (100, 10), (50, 0)], 8, 1 << 20);
        assert_eq!(got, vec![(0, 10, vec![0]), (100, 10, vec![1])]);
    }

    #[test]
    fn contained_range_does_not_shrink_span() {
        let got = spans(&[(0, 100), (10, 5)], 0, 1 << 20);
        assert_eq!(got, vec![(0, 100, vec![0, 1])]);
    }

    #[test]
    fn spans_are_bounded() {
        let got = spans(&[(0, 60), (60, 60), (120, 60)], 0, 128);
        assert_eq!(got, vec![(0, 120, vec![0, 1]), (120, 60, vec![2])]);
        // A single range larger than the bound is still served, alone.
        let got = spans(&[(0, 500), (500, 10)], 0, 128);
        assert_eq!(got, vec![(0, 500, vec![0]), (500, 10, vec![1])]);
    }

    #[tokio::test]
    async fn identical_concurrent_calls_share_one_run() {
        let sf: SingleFlight<u32, u64> = SingleFlight::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let call = |key: u32| {
            let runs = runs.clone();
            let gate = gate.clone();
            sf.run(key, move || {
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    u64::from(key) * 10
                }
                .boxed()
            })
        };
        let all = futures::future::join_all([call(1), call(1), call(1), call(2)]);
        let opener = async {
            // Let join_all poll every call once (they all register), then open the gate.
            tokio::task::yield_now().await;
            gate.notify_waiters();
        };
        let (results, ()) = tokio::join!(all, opener);
        assert_eq!(results, vec![10, 10, 10, 20]);
        assert_eq!(runs.load(Ordering::SeqCst), 2, "one run per distinct key");
        assert_eq!(sf.in_flight(), 0, "finished flights are forgotten");
        // A later call runs again rather than reusing the old result.
        gate.notify_one();
        assert_eq!(call(1).await, 10);
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }
}
