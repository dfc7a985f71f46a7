//! Cold-start times per image, for the dashboard.
//!
//! A cold start here is what the daemon can time honestly: from a run's start (containerd's
//! Prepare of the container's rootfs snapshot on lazily mounted layers) to the first read of that
//! run that reaches a lazy layer (the first access the trace recorder attributes to it). The
//! recorder's own [`predictor::Access::at`] is that interval, so nothing is timed twice. Reads
//! the kernel's page cache answers never reach FUSE and are not seen.
//!
//! [`ColdStarts`] is an [`AccessObserver`] on the recorder's thread: a map lookup per access
//! until the run's first one, nothing after. It keeps the last [`PER_IMAGE`] runs of at most
//! [`IMAGES`] images (the least recently started image goes first).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::predictor::{Access, RunContext, RunId, Trace};
use serde::Serialize;

use crate::trace::AccessObserver;

/// Runs kept per image.
pub const PER_IMAGE: usize = 20;
/// Images kept.
pub const IMAGES: usize = 50;

/// One run's cold start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ColdStart {
    /// When the run started (its rootfs Prepare), Unix milliseconds.
    pub started_unix_ms: u64,
    /// Seconds from the run's start to its first read on a lazy layer.
    pub seconds: f64,
    /// Whether this was the image's first run the daemon saw since it started (or since the
    /// image was last dropped from the bounded table).
    pub first_for_image: bool,
}

/// The last cold starts of one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageColdStarts {
    /// The image reference.
    pub image: String,
    /// Oldest first, at most [`PER_IMAGE`].
    pub runs: Vec<ColdStart>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Runs started whose first read has not come yet: image and start time.
    pending: HashMap<RunId, (String, u64)>,
    /// Per image: its runs and the sequence number of its latest start (for eviction).
    images: HashMap<String, (VecDeque<ColdStart>, u64)>,
    seq: u64,
}

/// The bounded table of cold starts, fed by the trace recorder.
#[derive(Debug, Default)]
pub struct ColdStarts {
    inner: Mutex<Inner>,
}

impl ColdStarts {
    /// An empty table.
    pub fn new() -> Arc<ColdStarts> {
        Arc::new(ColdStarts::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every image's runs, the most recently started image first.
    pub fn snapshot(&self) -> Vec<ImageColdStarts> {
        let inner = self.lock();
        let mut out: Vec<_> = inner
            .images
            .iter()
            .map(|(image, (runs, seq))| (*seq, image.clone(), runs.iter().copied().collect()))
            .collect();
        out.sort_by_key(|e| std::cmp::Reverse(e.0));
        out.into_iter()
            .map(|(_, image, runs)| ImageColdStarts { image, runs })
            .collect()
    }

    /// Records the first read of a run, `seconds` after its start.
    fn record(inner: &mut Inner, image: String, started_unix_ms: u64, seconds: f64) {
        inner.seq += 1;
        let seq = inner.seq;
        if !inner.images.contains_key(&image) && inner.images.len() >= IMAGES {
            let oldest = inner
                .images
                .iter()
                .min_by_key(|(_, (_, s))| *s)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                inner.images.remove(&k);
            }
        }
        let (runs, last) = inner.images.entry(image).or_default();
        let first_for_image = runs.is_empty();
        *last = seq;
        if runs.len() == PER_IMAGE {
            runs.pop_front();
        }
        runs.push_back(ColdStart {
            started_unix_ms,
            seconds,
            first_for_image,
        });
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl AccessObserver for ColdStarts {
    fn run_started(&self, run: RunId, ctx: &RunContext) {
        self.lock()
            .pending
            .insert(run, (ctx.image.clone(), unix_ms()));
    }

    fn access(&self, run: RunId, access: &Access) {
        let mut inner = self.lock();
        if let Some((image, started)) = inner.pending.remove(&run) {
            ColdStarts::record(&mut inner, image, started, access.at.as_secs_f64());
        }
    }

    fn run_finished(&self, run: RunId, _trace: Option<&Arc<Trace>>) {
        // A run that read nothing on a lazy layer has no cold start to show.
        self.lock().pending.remove(&run);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::predictor::{AccessSource, ChunkId};

    use super::*;

    fn ctx(image: &str) -> RunContext {
        RunContext {
            image: image.into(),
            label: None,
            layers: vec![],
            layout: Default::default(),
        }
    }

    fn access(ms: u64) -> Access {
        Access {
            chunk: ChunkId([0; 32]),
            at: Duration::from_millis(ms),
            size: 1,
            source: AccessSource::Miss,
        }
    }

    #[test]
    fn the_first_read_of_each_run_is_its_cold_start_and_the_table_is_bounded() {
        let c = ColdStarts::new();
        c.run_started(RunId(1), &ctx("a"));
        c.access(RunId(1), &access(250));
        c.access(RunId(1), &access(900)); // later reads change nothing
        c.run_started(RunId(2), &ctx("a"));
        c.access(RunId(2), &access(40));
        c.run_started(RunId(3), &ctx("b"));
        c.run_finished(RunId(3), None); // read nothing: no entry
        let snap = c.snapshot();
        assert_eq!(snap.len(), 1, "{snap:?}");
        let runs = &snap[0].runs;
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].seconds, 0.25);
        assert!(runs[0].first_for_image && !runs[1].first_for_image);
        assert_eq!(runs[1].seconds, 0.04);

        for i in 0..(PER_IMAGE as u64 + 5) {
            c.run_started(RunId(10 + i), &ctx("a"));
            c.access(RunId(10 + i), &access(i));
        }
        for i in 0..(IMAGES as u64 + 3) {
            c.run_started(RunId(1000 + i), &ctx(&format!("img{i}")));
            c.access(RunId(1000 + i), &access(1));
        }
        let snap = c.snapshot();
        assert_eq!(snap.len(), IMAGES, "images are bounded");
        assert!(snap.iter().all(|i| i.image != "a"), "the oldest image went");
        assert_eq!(snap[0].image, format!("img{}", IMAGES + 2), "newest first");
        assert!(snap.iter().all(|i| i.runs.len() <= PER_IMAGE));
    }
}
