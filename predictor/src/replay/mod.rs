//! Record-and-replay: the baseline. For each image it keeps the order in which past runs first
//! read each chunk, with times. A live run is aligned to each past run (at the past position of
//! the most recent chunk both read) and the chunks that followed there are predicted.
//!
//! - **Probability** of a chunk = the share of candidate past runs that read it next (within a
//!   look-ahead window after their aligned position). As the ensemble's member
//!   ([`ReplayConfig::as_member`]) the share counts [`MEMBER_PRIOR_RUNS`] more runs that did not
//!   read it: "every past run read it" then says how many runs that was (1 of 1 is 0.33, 40 of
//!   40 is 0.95), which the ensemble's calibration can tell apart. The baseline keeps the plain
//!   share, as the anchors replay (docs/decisions/0026-replay-support-and-agreement-calibration.md).
//! - **Expected time** = the mean, over those runs, of how long after the aligned chunk they
//!   read it.
//! - **Candidates**: past runs of the same image with the same workload key once the key is
//!   known (the label from the start, else after eight distinct chunks); if no past run has
//!   that key (same image, different arguments whose first reads differ) or the key is not
//!   known yet, every past run of the image ("same image, any workload"). A never-seen image
//!   gets no predictions from the baseline: it does not generalise across images (the Markov
//!   model does, through shared chunk digests). As the ensemble's member, replay predicts a
//!   never-seen image's start-up from other images' runs, on the layers they share with it
//!   ([`across`]).
//! - **Memory bound**: at most `max_runs_per_image` runs per image and `max_total_steps`
//!   steps in all (oldest runs are dropped first); about 100 bytes per step, so the default
//!   of 500,000 steps is about 50 MB. 64 runs per image (8 until the evaluation on real
//!   programs): an image that serves several programs (a tools image, a CI runner) needs a
//!   few runs of each remembered, or replay forgets all but the last few programs; on the
//!   tools traces 8 kept replay's held-out recall at 0.10–0.21, 64 gives 0.30–0.46.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::chunk::{ChunkId, FastMap, FastSet};
use crate::error::Error;
use crate::model::{
    Access, Prediction, Predictor, RunContext, RunId, decode_state, encode_state, rank,
};
use crate::trace::Trace;
use crate::workload::SignatureBuilder;
use across::Candidate;

mod across;

const STATE_VERSION: u32 = 1;

/// Limits and look-ahead of [`Replay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayConfig {
    /// Past runs kept per image (the most recent).
    pub max_runs_per_image: usize,
    /// Steps (first accesses) kept over all images.
    pub max_total_steps: usize,
    /// Steps kept per run (its first ones).
    pub max_steps_per_run: usize,
    /// Steps of each past run looked at after the aligned position (at least `2 * max`).
    pub window: usize,
    /// Recent chunks of the live run tried, newest first, to align it to a past run.
    pub align_depth: usize,
    /// Runs that read nothing, added to the candidates when a chunk's share is taken: 0 for
    /// the baseline, [`MEMBER_PRIOR_RUNS`] as the ensemble's member.
    pub prior_runs: u32,
    /// Whether a run of an image with no past runs borrows other images' runs during its
    /// start-up, on shared layers ([`across`]): off for the baseline, on as the member.
    pub across_images: bool,
}

/// Runs that read nothing, added to the candidates of replay as an ensemble member (see the
/// module map).
pub const MEMBER_PRIOR_RUNS: u32 = 2;

impl ReplayConfig {
    /// This configuration as the ensemble's member: shares shrunk by [`MEMBER_PRIOR_RUNS`],
    /// a new image's start-up predicted across images.
    pub fn as_member(self) -> Self {
        ReplayConfig {
            prior_runs: MEMBER_PRIOR_RUNS,
            across_images: true,
            ..self
        }
    }
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            max_runs_per_image: 64,
            max_total_steps: 500_000,
            max_steps_per_run: 65_536,
            window: 128,
            align_depth: 16,
            prior_runs: 0,
            across_images: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Step {
    chunk: ChunkId,
    t_us: u64,
    /// Index into [`PastRun::layers`] (states saved before it was kept: 0, with no layers).
    #[serde(default)]
    layer: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PastRun {
    workload: String,
    learned_seq: u64,
    steps: Vec<Step>,
    /// The run's layer digests, lowest first (empty in states saved before they were kept:
    /// such a run serves only its own image).
    #[serde(default)]
    layers: Vec<String>,
    #[serde(skip)]
    index: FastMap<ChunkId, u32>,
}

impl PastRun {
    fn reindex(&mut self) {
        self.index = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.chunk, i as u32))
            .collect();
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Learned {
    images: BTreeMap<String, Vec<PastRun>>,
    next_seq: u64,
}

#[derive(Debug)]
struct LiveRun {
    image: String,
    layers: Vec<String>,
    signature: SignatureBuilder,
    seen: FastSet<ChunkId>,
    recent: VecDeque<ChunkId>,
}

/// The record-and-replay model.
#[derive(Debug)]
pub struct Replay {
    config: ReplayConfig,
    learned: Learned,
    total_steps: usize,
    runs: FastMap<RunId, LiveRun>,
}

impl Replay {
    /// A model that knows no runs yet.
    pub fn new(config: ReplayConfig) -> Self {
        Replay {
            config,
            learned: Learned::default(),
            total_steps: 0,
            runs: FastMap::default(),
        }
    }

    /// How many past runs it keeps, over all images.
    pub fn past_runs(&self) -> usize {
        self.learned.images.values().map(Vec::len).sum()
    }

    fn remember(&mut self, trace: &Trace) {
        let steps: Vec<Step> = trace
            .first_reads()
            .take(self.config.max_steps_per_run)
            .map(|(a, c)| Step {
                chunk: c.digest,
                t_us: a.t_us,
                layer: c.layer,
            })
            .collect();
        if steps.is_empty() {
            return;
        }
        self.total_steps += steps.len();
        let mut run = PastRun {
            workload: trace.header.workload.clone(),
            learned_seq: self.learned.next_seq,
            steps,
            layers: trace.header.layers.clone(),
            index: FastMap::default(),
        };
        run.reindex();
        self.learned.next_seq += 1;
        let runs = self
            .learned
            .images
            .entry(trace.header.image.clone())
            .or_default();
        runs.push(run);
        if runs.len() > self.config.max_runs_per_image {
            let dropped = runs.remove(0);
            self.total_steps -= dropped.steps.len();
        }
        self.enforce_step_bound();
    }

    /// Drops the oldest runs of any image until the step bound holds.
    fn enforce_step_bound(&mut self) {
        while self.total_steps > self.config.max_total_steps {
            let oldest = self
                .learned
                .images
                .iter()
                .filter_map(|(image, runs)| Some((runs.first()?.learned_seq, image.clone())))
                .min();
            let Some((_, image)) = oldest else { return };
            let Some(runs) = self.learned.images.get_mut(&image) else {
                return;
            };
            let dropped = runs.remove(0);
            self.total_steps -= dropped.steps.len();
            if runs.is_empty() {
                self.learned.images.remove(&image);
            }
        }
    }

    fn candidates<'a>(&'a self, live: &LiveRun) -> Vec<Candidate<'a>> {
        let Some(runs) = self.learned.images.get(&live.image) else {
            return match self.config.across_images {
                true => across::candidates(&self.learned.images, live),
                false => Vec::new(),
            };
        };
        let mut chosen: Vec<&PastRun> = Vec::new();
        if live.signature.is_complete() {
            let key = live.signature.signature();
            chosen = runs.iter().filter(|r| r.workload == key).collect();
        }
        if chosen.is_empty() {
            chosen = runs.iter().collect();
        }
        chosen.into_iter().map(Candidate::own).collect()
    }
}

/// Where a live run stands in a past run: the position after which to look and the past
/// time of that position.
fn align(past: &PastRun, live: &LiveRun, depth: usize) -> (usize, u64) {
    live.recent
        .iter()
        .rev()
        .take(depth)
        .find_map(|c| past.index.get(c))
        .map_or((0, 0), |&i| (i as usize + 1, past.steps[i as usize].t_us))
}

#[derive(Default)]
struct Vote {
    runs: u32,
    lead_us_sum: u64,
}

impl Predictor for Replay {
    fn name(&self) -> &str {
        "replay"
    }

    fn start_run(&mut self, run: RunId, ctx: &RunContext) {
        self.runs.insert(
            run,
            LiveRun {
                image: ctx.image.clone(),
                layers: ctx.layers.clone(),
                signature: SignatureBuilder::new(ctx.label.as_deref()),
                seen: FastSet::default(),
                recent: VecDeque::new(),
            },
        );
    }

    fn observe(&mut self, run: RunId, access: &Access) {
        let depth = self.config.align_depth;
        let Some(live) = self.runs.get_mut(&run) else {
            return;
        };
        if live.seen.insert(access.chunk) {
            live.signature.observe(access.chunk);
            live.recent.push_back(access.chunk);
            if live.recent.len() > depth {
                live.recent.pop_front();
            }
        }
    }

    fn predict(&mut self, run: RunId, max: usize) -> Vec<Prediction> {
        let Some(live) = self.runs.get(&run) else {
            return Vec::new();
        };
        let candidates = self.candidates(live);
        if candidates.is_empty() || max == 0 {
            return Vec::new();
        }
        let window = self.config.window.max(2 * max);
        let mut votes: FastMap<ChunkId, Vote> = FastMap::default();
        for candidate in &candidates {
            let past = candidate.run;
            let (from, anchor_us) = align(past, live, self.config.align_depth);
            let upcoming = past.steps.get(from..).unwrap_or_default();
            for step in upcoming
                .iter()
                .filter(|s| candidate.covers(s) && !live.seen.contains(&s.chunk))
                .take(window)
            {
                let vote = votes.entry(step.chunk).or_default();
                vote.runs += 1;
                vote.lead_us_sum += step.t_us.saturating_sub(anchor_us);
            }
        }
        let total = candidates.len() as f32 + self.config.prior_runs as f32;
        let mut predictions: Vec<Prediction> = votes
            .into_iter()
            .map(|(chunk, vote)| Prediction {
                chunk,
                probability: vote.runs as f32 / total,
                expected_in: Duration::from_micros(vote.lead_us_sum / u64::from(vote.runs)),
            })
            .collect();
        rank(&mut predictions, max);
        predictions
    }

    fn finish_run(&mut self, run: RunId, trace: Option<&Trace>) {
        self.runs.remove(&run);
        if let Some(trace) = trace {
            self.remember(trace);
        }
    }

    fn learn(&mut self, trace: &Trace) {
        self.remember(trace);
    }

    fn save_state(&self) -> Result<Vec<u8>, Error> {
        encode_state(self.name(), STATE_VERSION, &self.learned)
    }

    fn load_state(&mut self, state: &[u8]) -> Result<(), Error> {
        let mut learned: Learned = decode_state("replay", STATE_VERSION, state)?;
        learned
            .images
            .values_mut()
            .flatten()
            .for_each(PastRun::reindex);
        self.total_steps = learned
            .images
            .values()
            .flatten()
            .map(|r| r.steps.len())
            .sum();
        self.learned = learned;
        self.enforce_step_bound();
        Ok(())
    }
}
