//! Continuation: once a run reads a chunk of a file stored in several chunks, it predicts the
//! file's other chunks, the ones after it first, in file order (decision 0031).
//!
//! It learns nothing from past runs: what it knows is the run's [`Layout`], the image's
//! multi-chunk files. So it speaks for an image no run has shown yet, where replay and Markov
//! know only what other images share with it: a compiler's `cc1` and `as`, an interpreter's
//! binary, a big shared library. Its raw score is one constant; the ensemble calibrates it
//! like any member's, from how often the rest of a file was read.
//!
//! A run's layout comes with its [`RunContext`] (the daemon builds it from the TOCs). A
//! recorded run's context has none, so the model falls back on the layout it was built with
//! ([`Continuation::with_layout`], from the recorded runs' chunk records).

use std::sync::Arc;
use std::time::Duration;

use crate::chunk::{ChunkId, FastMap, FastSet};
use crate::error::Error;
use crate::layout::Layout;
use crate::model::{Access, Prediction, Predictor, RunContext, RunId, decode_state, encode_state};
use crate::trace::Trace;

const STATE_VERSION: u32 = 1;

/// The raw score of every prediction: "the rest of a file begun is read".
pub const RAW_PROBABILITY: f32 = 0.95;

/// How far apart the expected times of a file's successive chunks are: a page-faulting reader
/// goes through a chunk in about this long once it is local.
pub const CHUNK_STEP: Duration = Duration::from_millis(20);

/// The model (see the module map).
#[derive(Debug, Default)]
pub struct Continuation {
    /// Used for runs whose context brings no layout (recorded runs).
    fallback: Arc<Layout>,
    runs: FastMap<RunId, Live>,
}

#[derive(Debug)]
struct Live {
    layout: Arc<Layout>,
    /// Chunks of the layout's files read so far.
    read: FastSet<ChunkId>,
    /// Files begun, by index in the layout.
    begun: FastSet<usize>,
    /// Chunks predicted, in the order they were added.
    ahead: Vec<ChunkId>,
}

impl Continuation {
    /// A model with no layout of its own: it speaks only in runs whose context has one.
    pub fn new() -> Self {
        Continuation::default()
    }

    /// A model that uses `layout` for runs whose context has none.
    pub fn with_layout(layout: Arc<Layout>) -> Self {
        Continuation {
            fallback: layout,
            runs: FastMap::default(),
        }
    }
}

impl Live {
    /// Notes a read of `chunk`; the first read of a multi-chunk file queues its other chunks:
    /// those after it, then those before. Only chunks of such files are kept (what a run
    /// keeps is bounded by its layout, not by how long it runs).
    fn read(&mut self, chunk: ChunkId) {
        let Some((f, k)) = self.layout.locate(chunk) else {
            return;
        };
        self.read.insert(chunk);
        if !self.begun.insert(f) {
            return;
        }
        let file = &self.layout.files()[f];
        let (before, after) = file.split_at(k);
        let rest = after.iter().skip(1).chain(before);
        self.ahead.extend(rest.map(|(c, _)| *c));
    }
}

impl Predictor for Continuation {
    fn name(&self) -> &str {
        "continuation"
    }

    fn history_free(&self) -> bool {
        true
    }

    fn start_run(&mut self, run: RunId, ctx: &RunContext) {
        let layout = if ctx.layout.is_empty() {
            Arc::clone(&self.fallback)
        } else {
            Arc::clone(&ctx.layout)
        };
        let live = Live {
            layout,
            read: FastSet::default(),
            begun: FastSet::default(),
            ahead: Vec::new(),
        };
        self.runs.insert(run, live);
    }

    fn observe(&mut self, run: RunId, access: &Access) {
        if let Some(live) = self.runs.get_mut(&run) {
            live.read(access.chunk);
        }
    }

    fn predict(&mut self, run: RunId, max: usize) -> Vec<Prediction> {
        let Some(live) = self.runs.get_mut(&run) else {
            return Vec::new();
        };
        // Chunks read since they were queued are dropped for good.
        let read = &live.read;
        live.ahead.retain(|c| !read.contains(c));
        let mut seen = FastSet::default();
        live.ahead
            .iter()
            .filter(|c| seen.insert(**c))
            .take(max)
            .zip(1u32..)
            .map(|(&chunk, n)| Prediction {
                chunk,
                probability: RAW_PROBABILITY,
                expected_in: CHUNK_STEP * n,
            })
            .collect()
    }

    fn finish_run(&mut self, run: RunId, _trace: Option<&Trace>) {
        self.runs.remove(&run);
    }

    fn save_state(&self) -> Result<Vec<u8>, Error> {
        encode_state(self.name(), STATE_VERSION, &())
    }

    fn load_state(&mut self, state: &[u8]) -> Result<(), Error> {
        decode_state::<()>("continuation", STATE_VERSION, state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::AccessSource;

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    fn read(model: &mut Continuation, run: RunId, n: u8) {
        let access = Access {
            chunk: id(n),
            at: Duration::ZERO,
            size: 10,
            source: AccessSource::Miss,
        };
        model.observe(run, &access);
    }

    fn predicted(model: &mut Continuation, run: RunId, max: usize) -> Vec<ChunkId> {
        model.predict(run, max).iter().map(|p| p.chunk).collect()
    }

    fn cc1() -> Layout {
        Layout::new([(1..=4).map(|n| (id(n), 10)).collect()])
    }

    #[test]
    fn a_file_begun_predicts_its_other_chunks_after_it_first_and_never_one_read() {
        let ctx = RunContext {
            layout: Arc::new(cc1()),
            ..RunContext::default()
        };
        let (mut model, run) = (Continuation::new(), RunId(1));
        model.start_run(run, &ctx);
        assert!(model.predict(run, 8).is_empty());
        read(&mut model, run, 9); // not in a multi-chunk file
        assert!(model.predict(run, 8).is_empty());
        read(&mut model, run, 2);
        assert_eq!(predicted(&mut model, run, 8), vec![id(3), id(4), id(1)]);
        assert_eq!(predicted(&mut model, run, 1), vec![id(3)]);
        read(&mut model, run, 3);
        let left = model.predict(run, 8);
        assert_eq!(
            left.iter().map(|p| p.chunk).collect::<Vec<_>>(),
            vec![id(4), id(1)]
        );
        assert!(left[0].expected_in < left[1].expected_in);
        assert!(left.iter().all(|p| p.probability == RAW_PROBABILITY));
    }

    #[test]
    fn a_recorded_run_uses_the_fallback_layout_and_finished_runs_are_forgotten() {
        let (mut model, run) = (Continuation::with_layout(Arc::new(cc1())), RunId(2));
        model.start_run(run, &RunContext::default());
        read(&mut model, run, 1);
        assert_eq!(predicted(&mut model, run, 8), vec![id(2), id(3), id(4)]);
        model.finish_run(run, None);
        assert!(model.predict(run, 8).is_empty());
        let state = model.save_state().expect("save");
        model.load_state(&state).expect("load");
        assert!(model.load_state(b"{}").is_err());
    }
}
