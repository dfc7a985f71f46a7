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
//!    sure of. In a run of an image never seen, where a pattern has little evidence the
//!    answer leans on the pooled calibration or, if higher, on the calibrated vote of a member
//!    whose forecasts owe nothing to history ([`Predictor::history_free`]: continuation,
//!    decision 0031).
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
//! and a member fitted offline on the recorded run ([`Predictor::trained_on`]: the LSTM, by
//! the runs or images its training names) is not asked at all in it, only taught, since it
//! was (or may have been) trained on that very run (calibrated there, the LSTM came out nearly always right
//! and wasted hundreds of MiB on an image it never saw; decision 0028). Unless the member has
//! cross-fitting folds ([`Ensemble::add_folds`]): models fitted like it on part of its
//! training runs. Then a fold that did not see the recorded run answers in the member's stead,
//! so the member's calibration is learned out of sample before the node runs it (decision 0029).
//! Per-run memory is bounded by `max_pending` chunks per member.
//!
//! A member may also say nothing about a whole run (the LSTM on an image it was not trained
//! on); such runs are answered from a second set of combination calibrators, the view
//! without the members that may abstain, which learns alongside in every run ([`view`]).

mod agreement;
pub mod novelty;
mod state;
mod view;

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
use agreement::Pattern;
use novelty::{Calibrators, KnownKeys, Novelty, RunNovelty};
use view::{Absent, Answer, Noted, View};

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
    /// Cross-fitting folds: models fitted like `model` on part of its training runs, asked in
    /// its stead in a recorded run it was fitted on and they were not.
    folds: Vec<Box<dyn Predictor>>,
}

/// Who answers for a member in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// The member itself (every live run).
    Member,
    /// A recorded run the member was fitted on: this fold, which was not.
    Fold(usize),
    /// A recorded run the member and all its folds were fitted on: nobody (only taught).
    Nobody,
}

/// The bins a chunk was forecast in during a run, each with its run's novelty class then
/// ([`Novelty::code`]).
type Forecasts = Vec<u8>;

#[derive(Debug)]
struct LiveRun {
    /// Per member: chunk → the bins it was forecast in.
    members: Vec<FastMap<ChunkId, Forecasts>>,
    /// The ensemble's answers not scored yet.
    answers: Noted,
    seen: FastSet<ChunkId>,
    novelty: RunNovelty,
    /// Per member, who answers for it in this run.
    asked: Vec<Asked>,
    /// The members that say nothing about this run's image ([`Predictor::abstains_on`]).
    absent: Absent,
    /// What the view without the members that may abstain answered, not scored yet.
    without: Noted,
}

/// Models combined, with calibrated confidence.
#[derive(Debug)]
pub struct Ensemble {
    config: EnsembleConfig,
    members: Vec<Member>,
    stacker: Stacker,
    /// The combination of every member: calibrators of the combined score per novelty class
    /// and agreement pattern.
    full: View,
    /// The combination without the members that may abstain ([`view`]).
    without: View,
    known: KnownKeys,
    runs: FastMap<RunId, LiveRun>,
}

/// What the members said about one chunk in one call.
struct Merge {
    /// Per member, its calibrated probability.
    votes: Vec<Option<f32>>,
    /// Per member, its raw probability.
    raws: Vec<Option<f32>>,
    /// Per member, when it expects the chunk to be needed, µs.
    leads: Vec<f64>,
}

impl Ensemble {
    /// Combines `members` (at least one for useful output; with none it predicts nothing).
    pub fn new(members: Vec<Box<dyn Predictor>>, config: EnsembleConfig) -> Self {
        let stacker = Stacker::new(members.len());
        let mut ensemble = Ensemble {
            config,
            members: members
                .into_iter()
                .map(|model| Member {
                    model,
                    calibrators: Calibrators::default(),
                    folds: Vec::new(),
                })
                .collect(),
            stacker,
            full: View::default(),
            without: View::default(),
            known: KnownKeys::default(),
            runs: FastMap::default(),
        };
        ensemble.without = View::without(ensemble.abstainers());
        ensemble
    }

    /// The members that may abstain from whole runs ([`Predictor::may_abstain`]).
    fn abstainers(&self) -> Absent {
        self.members_where(|m| m.may_abstain())
    }

    /// The members that abstain from runs of `image` ([`Predictor::abstains_on`]).
    fn abstaining_on(&self, image: &str) -> Absent {
        self.members_where(|m| m.may_abstain() && m.abstains_on(image))
    }

    fn members_where(&self, holds: impl Fn(&dyn Predictor) -> bool) -> Absent {
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| holds(m.model.as_ref()))
            .fold(0, |mask, (i, _)| mask | view::bit(i))
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
            folds: Vec::new(),
        });
        for live in self.runs.values_mut() {
            live.members.push(FastMap::default());
            live.asked.push(Asked::Member);
        }
        self.stacker = Stacker::new(self.members.len());
        if self.abstainers() != self.without.absent {
            self.without = View::without(self.abstainers());
        }
    }

    /// Gives the member named `member` cross-fitting folds: models fitted as it was, each on
    /// part of its training runs (`onnx-models/train.py --folds`). While a recorded run is
    /// learned that the member was fitted on, the first fold that was not answers in its
    /// stead, and its forecasts calibrate the member. Folds are only asked while learning;
    /// they are not saved with the state. Returns false if there is no such member.
    pub fn add_folds(&mut self, member: &str, folds: Vec<Box<dyn Predictor>>) -> bool {
        match self.members.iter_mut().find(|m| m.model.name() == member) {
            Some(m) => {
                m.folds.extend(folds);
                true
            }
            None => false,
        }
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
        let asked = self.asked_for(&trace.header);
        image.clone_into(&mut trace.header.image);
        self.learn_asking(&trace, asked);
    }

    /// Per member, who answers for it in a recorded run like `header`'s: itself unless it
    /// was fitted offline on it, else its first fold that was not.
    fn asked_for(&self, header: &RunHeader) -> Vec<Asked> {
        self.members
            .iter()
            .map(|m| {
                if !m.model.trained_on(header) {
                    return Asked::Member;
                }
                m.folds
                    .iter()
                    .position(|f| !f.trained_on(header))
                    .map_or(Asked::Nobody, Asked::Fold)
            })
            .collect()
    }

    /// Replays a recorded run, asking for predictions as it goes, with each member answered
    /// for as `asked` says (every member is taught the run).
    fn learn_asking(&mut self, trace: &Trace, asked: Vec<Asked>) {
        let max = self.config.learn_max;
        let ctx = RunContext::from_header(&trace.header);
        self.start_run(LEARN_RUN, &ctx);
        for (member, who) in self.members.iter_mut().zip(&asked) {
            if let Some(fold) = fold_of(member, *who) {
                fold.start_run(LEARN_RUN, &ctx);
            }
        }
        if let Some(live) = self.runs.get_mut(&LEARN_RUN) {
            live.asked = asked;
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
        {
            let Some(model) = answering(member, live.asked[i]) else {
                continue;
            };
            for p in model.predict(run, ask) {
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
                    raws: vec![None; count],
                    leads: vec![0.0; count],
                });
                merge.votes[i] = Some(q);
                merge.raws[i] = Some(p.probability);
                merge.leads[i] = p.expected_in.as_micros() as f64;
            }
        }
        (merged, active)
    }

    /// The combination's answers as `view` sees it (its absent members left out), calibrated
    /// by it, ranked, at most `max`; and why each was given.
    fn answer(
        &self,
        view: &View,
        merged: &BTreeMap<ChunkId, Merge>,
        active: &[bool],
        class: Novelty,
        max: usize,
    ) -> (Vec<Prediction>, FastMap<ChunkId, Answer>) {
        let absent = view.absent;
        let mut out = Vec::with_capacity(merged.len());
        let mut why: FastMap<ChunkId, Answer> = FastMap::default();
        for (&chunk, merge) in merged {
            let present = |i: usize| absent & view::bit(i) == 0;
            let votes: Vec<Option<f32>> = (0..merge.votes.len())
                .map(|i| merge.votes[i].filter(|_| present(i)))
                .collect();
            if votes.iter().all(Option::is_none) {
                continue;
            }
            let mut pattern = Pattern::default();
            let (mut lead_us, mut weight) = (0.0, 0.0);
            for (i, vote) in votes.iter().enumerate() {
                if !active[i] || !present(i) {
                    pattern.silent(i);
                } else if let (Some(q), Some(raw)) = (vote, merge.raws[i]) {
                    pattern.vote(i, raw);
                    lead_us += f64::from(*q) * merge.leads[i];
                    weight += f64::from(*q);
                }
            }
            let inputs: Vec<Vote> = votes
                .iter()
                .enumerate()
                .map(|(i, &probability)| Vote {
                    probability,
                    active: active[i] && present(i),
                })
                .collect();
            let features = Stacker::features(&inputs);
            let score = self.combine(&votes, &features);
            let lead_us = if weight > 0.0 { lead_us / weight } else { 0.0 };
            let floor = if class == Novelty::NewImage {
                self.history_free_floor(&votes)
            } else {
                0.0
            };
            out.push(Prediction {
                chunk,
                probability: view
                    .agreement
                    .calibrate(&view.combined, class, pattern, score, floor),
                expected_in: Duration::from_micros(lead_us as u64),
            });
            let code = class.code(Calibrator::bin(score));
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
        (out, why)
    }

    /// The highest calibrated vote of a member whose forecasts owe nothing to history
    /// ([`Predictor::history_free`]); 0 if none voted. Asked in runs of an image never seen
    /// only: where their agreement pattern has little evidence in that class (after training
    /// on one image it has seen almost nothing), the answer leans on the pooled calibration
    /// of the combined score, learned from scores built from other images' history; such a
    /// member's own calibration is the better reference there, so it is the least the answer
    /// leans on. In a run of a known image the other members' silence about the chunk is
    /// evidence (replay knows which chunks of a file this workload reads), and the patterns
    /// learn it (decision 0031).
    fn history_free_floor(&self, votes: &[Option<f32>]) -> f32 {
        self.members
            .iter()
            .zip(votes)
            .filter(|(m, _)| m.model.history_free())
            .filter_map(|(_, v)| *v)
            .fold(0.0, f32::max)
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
        let answers = live.answers.take(chunk);
        self.full.record(&answers, hit);
        answers
            .iter()
            .for_each(|a| self.stacker.learn(&a.features, hit));
        self.without.record(&live.without.take(chunk), hit);
    }
}

/// The model that answers for `member` as `who` says: itself, a fold, or none.
fn answering(member: &mut Member, who: Asked) -> Option<&mut Box<dyn Predictor>> {
    match who {
        Asked::Member => Some(&mut member.model),
        Asked::Fold(f) => member.folds.get_mut(f),
        Asked::Nobody => None,
    }
}

/// The fold that answers for `member` when `who` says one does.
fn fold_of(member: &mut Member, who: Asked) -> Option<&mut Box<dyn Predictor>> {
    match who {
        Asked::Fold(f) => member.folds.get_mut(f),
        Asked::Member | Asked::Nobody => None,
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
            answers: Noted::default(),
            seen: FastSet::default(),
            novelty: RunNovelty::start(ctx, &self.known),
            asked: vec![Asked::Member; self.members.len()],
            absent: self.abstaining_on(&ctx.image),
            without: Noted::default(),
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
        for (member, who) in self.members.iter_mut().zip(&live.asked) {
            member.model.observe(run, access);
            if let Some(fold) = fold_of(member, *who) {
                fold.observe(run, access);
            }
        }
        self.runs.insert(run, live);
    }

    fn predict(&mut self, run: RunId, max: usize) -> Vec<Prediction> {
        let Some(mut live) = self.runs.remove(&run) else {
            return Vec::new();
        };
        let ask = max.saturating_mul(self.config.fan_out).max(max);
        let (merged, active) = self.gather(run, &mut live, ask);
        let class = live.novelty.class();
        let (out, why) = self.answer(&self.full, &merged, &active, class, max);
        live.answers.keep(&out, why, self.config.max_pending);
        let mut answered = out;
        if self.without.absent != 0 {
            let (out, why) = self.answer(&self.without, &merged, &active, class, max);
            live.without.keep(&out, why, self.config.max_pending);
            // Those members abstain from this run: the view learned without them answers.
            if live.absent == self.without.absent {
                answered = out;
            }
        }
        self.runs.insert(run, live);
        answered
    }

    fn finish_run(&mut self, run: RunId, trace: Option<&Trace>) {
        let mut asked = Vec::new();
        if let Some(mut live) = self.runs.remove(&run) {
            self.resolve(&mut live, None, false);
            let (image, key) = live.novelty.key();
            self.known.remember(image, key);
            asked = live.asked;
        }
        for (i, member) in self.members.iter_mut().enumerate() {
            member.model.finish_run(run, trace);
            if let Some(fold) = fold_of(member, asked.get(i).copied().unwrap_or(Asked::Member)) {
                fold.finish_run(run, trace);
            }
        }
    }

    fn learn(&mut self, trace: &Trace) {
        let asked = self.asked_for(&trace.header);
        self.learn_asking(trace, asked);
    }

    fn save_state(&self) -> Result<Vec<u8>, Error> {
        state::save(self)
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<(), Error> {
        state::load(self, bytes)
    }
}
