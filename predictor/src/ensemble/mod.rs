//! The ensemble: any set of models behind one [`Predictor`], with calibrated probabilities.
//!
//! 1. Each member predicts (`fan_out × max` candidates); its raw probabilities go through the
//!    member's own [`Calibrator`].
//! 2. Per chunk, the calibrated member probabilities are combined ([`Combine`]): by default
//!    as independent evidence, `s = 1 − Π(1 − qᵢ)`; optionally by a learned logistic stacker
//!    ([`Stacker`]) that weighs members and reads a member's silence as "no" (better on
//!    workloads like those it trained on, worse on new ones; see the decision record). The
//!    expected time is the `q`-weighted mean of the members'.
//! 3. The combined score goes through the ensemble's own calibrator, so what it answers is
//!    calibrated whatever the combination did: per novelty class, blended with one per
//!    [`agreement`] pattern (which members were certain of the chunk, which were silent), so
//!    that what one member is reliably sure of is not pooled with what another is wrongly
//!    sure of.
//!
//! Calibration is kept per novelty class ([`novelty`]): a run of a workload seen before, a new
//! one, or one whose key is not fixed yet; the same score means less in a run nobody has seen.
//!
//! Calibration learns online, per forecast: every prediction a member (or the ensemble) makes
//! for a run is pending, in the bin of its score, until the run reads the chunk (a hit for each
//! bin it was forecast in) or ends (a miss for each). A chunk counts once per bin and run
//! however often it is asked about, so how often the daemon calls `predict` does not weigh
//! in. "0.7" then means: of the chunks forecast at 0.7 in a run, 70 % were read afterwards.
//! The ensemble's own forecasts are the predictions it returned. [`Predictor::learn`] replays
//! a recorded run the same way, asking for predictions as it goes, so training traces
//! calibrate too, and always out of sample: a member learns a run only after it was predicted,
//! and a member fitted offline on runs of the recorded run's image
//! ([`Predictor::trained_on`]: the LSTM) is not asked at all in it, only taught, since it may
//! have been trained on that very run (calibrated there, the LSTM came out nearly always right
//! and wasted hundreds of MiB on an image it never saw; decision 0028).
//! Per-run memory is bounded by `max_pending` chunks per member.

mod agreement;
pub mod novelty;
mod state;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::calibration::Calibrator;
use crate::chunk::{ChunkId, FastMap, FastSet};
use crate::error::Error;
use crate::markov::{Markov, MarkovConfig};
use crate::model::{Access, LEARN_RUN, Prediction, Predictor, RunContext, RunId, rank};
use crate::replay::{Replay, ReplayConfig};
use crate::stacking::{Stacker, Vote};
use crate::trace::{RunHeader, Trace};
use agreement::{Agreement, Pattern};
use novelty::{Calibrators, KnownKeys, Novelty, RunNovelty};

/// How the ensemble asks its members and learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnsembleConfig {
    /// Members are asked for `fan_out × max` predictions.
    pub fan_out: usize,
    /// Pending predictions kept per member and run for calibration.
    pub max_pending: usize,
    /// Predictions asked for at each new chunk while learning a recorded run.
    pub learn_max: usize,
    /// How calibrated member probabilities are combined before the final calibration.
    pub combine: Combine,
}

impl Default for EnsembleConfig {
    fn default() -> Self {
        EnsembleConfig {
            fan_out: 2,
            max_pending: 65_536,
            learn_max: 64,
            combine: Combine::NoisyOr,
        }
    }
}

/// How the ensemble combines its members' calibrated probabilities of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// `1 − Π(1 − qᵢ)` over the members that predicted it: any member's confidence counts; a
    /// member's silence is no evidence against (the final calibration corrects for members
    /// agreeing more often than independent evidence would).
    NoisyOr,
    /// The learned logistic stacker (see [`crate::stacking`]).
    Stacked,
}

#[derive(Debug)]
struct Member {
    model: Box<dyn Predictor>,
    calibrators: Calibrators,
}

/// The bins a chunk was forecast in during a run, each with its run's novelty class then
/// ([`Novelty::code`]).
type Forecasts = Vec<u8>;

#[derive(Debug)]
struct LiveRun {
    /// Per member: chunk → the bins it was forecast in.
    members: Vec<FastMap<ChunkId, Forecasts>>,
    /// The ensemble's answers: chunk → one per code of the combined score.
    answers: FastMap<ChunkId, Vec<Answer>>,
    seen: FastSet<ChunkId>,
    novelty: RunNovelty,
    /// Per member, whether it is not asked in this run: a recorded run it was fitted on.
    muted: Vec<bool>,
}

/// One answer the ensemble gave for a chunk: the code of its combined score
/// ([`Novelty::code`]), which members were certain or silent, and the stacker's features.
#[derive(Debug)]
struct Answer {
    code: u8,
    pattern: Pattern,
    features: Vec<f32>,
}

/// Models combined, with calibrated confidence.
#[derive(Debug)]
pub struct Ensemble {
    config: EnsembleConfig,
    members: Vec<Member>,
    stacker: Stacker,
    combined: Calibrators,
    agreement: Agreement,
    known: KnownKeys,
    runs: FastMap<RunId, LiveRun>,
}

/// What the members said about one chunk in one call.
struct Merge {
    /// Per member, its calibrated probability.
    votes: Vec<Option<f32>>,
    /// Which members were certain (raw) or silent.
    pattern: Pattern,
    lead_us: f64,
    weight: f64,
}

impl Ensemble {
    /// Combines `members` (at least one for useful output; with none it predicts nothing).
    pub fn new(members: Vec<Box<dyn Predictor>>, config: EnsembleConfig) -> Self {
        let stacker = Stacker::new(members.len());
        Ensemble {
            config,
            members: members
                .into_iter()
                .map(|model| Member {
                    model,
                    calibrators: Calibrators::default(),
                })
                .collect(),
            stacker,
            combined: Calibrators::default(),
            agreement: Agreement::default(),
            known: KnownKeys::default(),
            runs: FastMap::default(),
        }
    }

    /// Replay and Markov with their defaults: what the daemon runs without the LSTM.
    pub fn standard() -> Self {
        Self::new(
            vec![
                Box::new(Replay::new(ReplayConfig::default().as_member())),
                Box::new(Markov::new(MarkovConfig::default())),
            ],
            EnsembleConfig::default(),
        )
    }

    /// Adds `model` as a member at run time (the daemon loading the LSTM after it started).
    /// It starts with a fresh calibrator and predicts for runs started after this; runs
    /// already going keep being served by the others. The stacker, trained on the old set of
    /// members, starts over.
    pub fn add_member(&mut self, model: Box<dyn Predictor>) {
        self.members.push(Member {
            model,
            calibrators: Calibrators::default(),
        });
        for live in self.runs.values_mut() {
            live.members.push(FastMap::default());
            live.muted.push(false);
        }
        self.stacker = Stacker::new(self.members.len());
    }

    /// The members' names, in order.
    pub fn member_names(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| m.model.name().to_owned())
            .collect()
    }

    /// The calibrated probability a member's raw score stands for in runs of the given
    /// novelty (`None`: no such member).
    pub fn member_calibration(&self, member: &str, novelty: Novelty, score: f32) -> Option<f32> {
        let m = self.members.iter().find(|m| m.model.name() == member)?;
        Some(m.calibrators.calibrate(novelty, score))
    }

    /// The novelty class of a live run (`None`: not running).
    pub fn novelty(&self, run: RunId) -> Option<Novelty> {
        self.runs.get(&run).map(|live| live.novelty.class())
    }

    /// Learns a recorded run as a run of `image` (a node seeded from another node's traces,
    /// `augurctl predictor train-state --image`). Which members are not asked is decided by
    /// the image the run was recorded under, the one a member's training knew it by.
    pub fn learn_as(&mut self, mut trace: Trace, image: &str) {
        let muted = self.fitted_on(&trace.header);
        image.clone_into(&mut trace.header.image);
        self.learn_muted(&trace, muted);
    }

    /// Per member, whether it was fitted offline on runs like `header`'s.
    fn fitted_on(&self, header: &RunHeader) -> Vec<bool> {
        self.members
            .iter()
            .map(|m| m.model.trained_on(header))
            .collect()
    }

    /// Replays a recorded run, asking for predictions as it goes, with `muted` members not
    /// asked (only taught).
    fn learn_muted(&mut self, trace: &Trace, muted: Vec<bool>) {
        let max = self.config.learn_max;
        self.start_run(LEARN_RUN, &RunContext::from_header(&trace.header));
        if let Some(live) = self.runs.get_mut(&LEARN_RUN) {
            live.muted = muted;
        }
        let mut seen = FastSet::default();
        self.predict(LEARN_RUN, max);
        for access in trace.model_accesses() {
            self.observe(LEARN_RUN, &access);
            if seen.insert(access.chunk) {
                self.predict(LEARN_RUN, max);
            }
        }
        self.finish_run(LEARN_RUN, Some(trace));
    }

    /// Asks every member, notes their forecasts, and merges them per chunk.
    fn gather(
        &mut self,
        run: RunId,
        live: &mut LiveRun,
        ask: usize,
    ) -> (BTreeMap<ChunkId, Merge>, Vec<bool>) {
        let count = self.members.len();
        let class = live.novelty.class();
        let mut merged: BTreeMap<ChunkId, Merge> = BTreeMap::new();
        let mut active = vec![false; count];
        for (i, (member, pending)) in self
            .members
            .iter_mut()
            .zip(live.members.iter_mut())
            .enumerate()
            .filter(|(i, _)| !live.muted[*i])
        {
            for p in member.model.predict(run, ask) {
                if live.seen.contains(&p.chunk) {
                    continue;
                }
                active[i] = true;
                note(
                    pending,
                    p.chunk,
                    class.code(Calibrator::bin(p.probability)),
                    self.config.max_pending,
                );
                let q = member.calibrators.calibrate(class, p.probability);
                let merge = merged.entry(p.chunk).or_insert_with(|| Merge {
                    votes: vec![None; count],
                    pattern: Pattern::default(),
                    lead_us: 0.0,
                    weight: 0.0,
                });
                merge.votes[i] = Some(q);
                merge.pattern.vote(i, p.probability);
                merge.lead_us += f64::from(q) * p.expected_in.as_micros() as f64;
                merge.weight += f64::from(q);
            }
        }
        (merged, active)
    }

    fn combine(&self, votes: &[Option<f32>], features: &[f32]) -> f32 {
        match self.config.combine {
            Combine::NoisyOr => 1.0 - votes.iter().flatten().map(|q| 1.0 - q).product::<f32>(),
            Combine::Stacked => self.stacker.score(features),
        }
    }

    /// Records the outcome of every pending forecast of `chunk` (or of all, at the end).
    fn resolve(&mut self, live: &mut LiveRun, chunk: Option<ChunkId>, hit: bool) {
        for (member, pending) in self.members.iter_mut().zip(live.members.iter_mut()) {
            let bins: Vec<u8> = match chunk {
                Some(c) => pending.remove(&c).unwrap_or_default(),
                None => std::mem::take(pending).into_values().flatten().collect(),
            };
            member.calibrators.record_codes(&bins, hit);
        }
        let answers: Vec<Answer> = match chunk {
            Some(c) => live.answers.remove(&c).unwrap_or_default(),
            None => {
                let mut all: Vec<_> = std::mem::take(&mut live.answers).into_iter().collect();
                all.sort_by_key(|(c, _)| *c);
                all.into_iter().flat_map(|(_, a)| a).collect()
            }
        };
        let codes: Vec<u8> = answers.iter().map(|a| a.code).collect();
        self.combined.record_codes(&codes, hit);
        self.agreement
            .record(answers.iter().map(|a| (a.pattern, a.code)), hit);
        answers
            .iter()
            .for_each(|a| self.stacker.learn(&a.features, hit));
    }
}

fn note(pending: &mut FastMap<ChunkId, Forecasts>, chunk: ChunkId, bin: u8, cap: usize) {
    if pending.len() >= cap && !pending.contains_key(&chunk) {
        return;
    }
    let forecasts = pending.entry(chunk).or_default();
    if !forecasts.contains(&bin) {
        forecasts.push(bin);
    }
}

impl Predictor for Ensemble {
    fn name(&self) -> &str {
        "ensemble"
    }

    fn start_run(&mut self, run: RunId, ctx: &RunContext) {
        let live = LiveRun {
            members: vec![FastMap::default(); self.members.len()],
            answers: FastMap::default(),
            seen: FastSet::default(),
            novelty: RunNovelty::start(ctx, &self.known),
            muted: vec![false; self.members.len()],
        };
        self.runs.insert(run, live);
        self.members
            .iter_mut()
            .for_each(|m| m.model.start_run(run, ctx));
    }

    fn observe(&mut self, run: RunId, access: &Access) {
        let Some(mut live) = self.runs.remove(&run) else {
            return;
        };
        if live.seen.insert(access.chunk) {
            self.resolve(&mut live, Some(access.chunk), true);
            live.novelty.observe(access.chunk, &self.known);
        }
        self.runs.insert(run, live);
        self.members
            .iter_mut()
            .for_each(|m| m.model.observe(run, access));
    }

    fn predict(&mut self, run: RunId, max: usize) -> Vec<Prediction> {
        let Some(mut live) = self.runs.remove(&run) else {
            return Vec::new();
        };
        let ask = max.saturating_mul(self.config.fan_out).max(max);
        let (merged, active) = self.gather(run, &mut live, ask);
        let class = live.novelty.class();
        let mut out = Vec::with_capacity(merged.len());
        let mut why: FastMap<ChunkId, Answer> = FastMap::default();
        for (chunk, mut merge) in merged {
            active
                .iter()
                .enumerate()
                .filter(|(_, a)| !**a)
                .for_each(|(i, _)| merge.pattern.silent(i));
            let votes: Vec<Vote> = merge
                .votes
                .iter()
                .zip(&active)
                .map(|(&probability, &active)| Vote {
                    probability,
                    active,
                })
                .collect();
            let features = Stacker::features(&votes);
            let score = self.combine(&merge.votes, &features);
            let lead_us = if merge.weight > 0.0 {
                merge.lead_us / merge.weight
            } else {
                0.0
            };
            out.push(Prediction {
                chunk,
                probability: self
                    .agreement
                    .calibrate(&self.combined, class, merge.pattern, score),
                expected_in: Duration::from_micros(lead_us as u64),
            });
            let code = class.code(Calibrator::bin(score));
            let pattern = merge.pattern;
            why.insert(
                chunk,
                Answer {
                    code,
                    pattern,
                    features,
                },
            );
        }
        rank(&mut out, max);
        for p in &out {
            let Some(answer) = why.remove(&p.chunk) else {
                continue;
            };
            if live.answers.len() >= self.config.max_pending && !live.answers.contains_key(&p.chunk)
            {
                continue;
            }
            let answers = live.answers.entry(p.chunk).or_default();
            if !answers.iter().any(|a| a.code == answer.code) {
                answers.push(answer);
            }
        }
        self.runs.insert(run, live);
        out
    }

    fn finish_run(&mut self, run: RunId, trace: Option<&Trace>) {
        if let Some(mut live) = self.runs.remove(&run) {
            self.resolve(&mut live, None, false);
            let (image, key) = live.novelty.key();
            self.known.remember(image, key);
        }
        self.members
            .iter_mut()
            .for_each(|m| m.model.finish_run(run, trace));
    }

    fn learn(&mut self, trace: &Trace) {
        let muted = self.fitted_on(&trace.header);
        self.learn_muted(trace, muted);
    }

    fn save_state(&self) -> Result<Vec<u8>, Error> {
        state::save(self)
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<(), Error> {
        state::load(self, bytes)
    }
}
