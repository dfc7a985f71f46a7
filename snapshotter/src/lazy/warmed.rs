//! [`WarmedTocs`]: verified TOCs of layers not pulled yet, fetched ahead by the warmer
//! (`crate::warm`) while the network was idle, so that the Prepare of such a layer makes no
//! registry request at all ([`super::LazyLayers::resolve`] looks here first).
//!
//! Keyed by layer digest (content-addressed, so any image holding the layer may use it). A
//! resolve *takes* its entry: once installed, the layer's TOC is on disk and the memory is
//! better spent on the next prediction.
//! Bounded by the bytes of the TOCs it holds (their size as fetched, gzip-compressed, times an
//! allowance for the decoded form); the oldest warm-up goes first. In memory
//! only: a warm-up is worth something for the next minutes, not across restarts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::estargz::Toc;

/// Decoded TOCs take about this many times their compressed size in memory.
const DECODED_FACTOR: u64 = 8;

/// A layer's TOC, fetched and verified ahead of its Prepare.
#[derive(Debug, Clone)]
pub struct WarmedToc {
    /// The verified TOC.
    pub toc: Arc<Toc>,
    /// Its digest (verified against the manifest's annotation).
    pub toc_digest: String,
    /// Where the TOC starts in the blob.
    pub toc_offset: u64,
    /// Bytes read from the registry to fetch it.
    pub fetched_bytes: u64,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, (WarmedToc, u64)>,
    bytes: u64,
    clock: u64,
}

/// The warmed TOCs of one daemon (see the module docs).
#[derive(Debug)]
pub struct WarmedTocs {
    inner: Mutex<Inner>,
    budget: u64,
    hits: AtomicU64,
}

impl WarmedTocs {
    /// An empty cache holding at most `budget` bytes (0: holds nothing).
    pub fn new(budget: u64) -> Self {
        WarmedTocs {
            inner: Mutex::new(Inner::default()),
            budget,
            hits: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `layer_digest`'s TOC is held.
    pub fn contains(&self, layer_digest: &str) -> bool {
        self.lock().entries.contains_key(layer_digest)
    }

    /// The TOCs held and their accounted bytes.
    pub fn usage(&self) -> (usize, u64) {
        let inner = self.lock();
        (inner.entries.len(), inner.bytes)
    }

    /// Resolves served from here (no registry request).
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Keeps `toc` for `layer_digest`, evicting the oldest beyond the budget.
    /// A TOC larger than the whole budget is not kept.
    pub fn insert(&self, layer_digest: &str, toc: WarmedToc) {
        if cost(&toc) > self.budget {
            return;
        }
        let mut inner = self.lock();
        inner.clock += 1;
        let stamp = inner.clock;
        inner.bytes += cost(&toc);
        if let Some((old, _)) = inner.entries.insert(layer_digest.to_owned(), (toc, stamp)) {
            inner.bytes -= cost(&old);
        }
        while inner.bytes > self.budget {
            let oldest = inner
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            let Some((t, _)) = oldest.and_then(|k| inner.entries.remove(&k)) else {
                break;
            };
            inner.bytes -= cost(&t);
        }
    }

    /// Takes the TOC of `layer_digest` if held and, when the caller knows the TOC digest, it
    /// matches (a mismatching entry is dropped: the resolve fetches and verifies afresh).
    pub fn take(&self, layer_digest: &str, toc_digest: Option<&str>) -> Option<WarmedToc> {
        let mut inner = self.lock();
        let (entry, _) = inner.entries.remove(layer_digest)?;
        inner.bytes -= cost(&entry);
        if toc_digest.is_some_and(|d| d != entry.toc_digest) {
            return None;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(entry)
    }
}

/// The bytes a held TOC is accounted for.
fn cost(toc: &WarmedToc) -> u64 {
    toc.fetched_bytes.max(1) * DECODED_FACTOR
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toc(digest: &str, bytes: u64) -> WarmedToc {
        WarmedToc {
            toc: Arc::new(Toc {
                version: 1,
                entries: Vec::new(),
            }),
            toc_digest: digest.into(),
            toc_offset: 0,
            fetched_bytes: bytes,
        }
    }

    #[test]
    fn the_oldest_goes_first_a_taken_entry_is_gone_and_a_wrong_digest_is_not_served() {
        let cache = WarmedTocs::new(3 * 100 * DECODED_FACTOR);
        cache.insert("l1", toc("t1", 100));
        cache.insert("l2", toc("t2", 100));
        cache.insert("l3", toc("t3", 100));
        cache.insert("l4", toc("t4", 100));
        assert!(!cache.contains("l1"), "l1 was the oldest");
        assert_eq!(cache.usage(), (3, 300 * DECODED_FACTOR));
        assert!(cache.take("l2", Some("t2")).is_some());
        assert!(!cache.contains("l2"), "taken");
        assert!(cache.take("l3", Some("other")).is_none());
        assert!(!cache.contains("l3"), "a mismatching entry is dropped");
        assert_eq!(cache.usage(), (1, 100 * DECODED_FACTOR));
        assert_eq!(cache.hits(), 1);
        cache.insert("huge", toc("t", 1000));
        assert!(!cache.contains("huge"), "larger than the budget");
    }
}
