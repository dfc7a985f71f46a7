//! The ensemble's output is calibrated: checked on synthetic runs where the truth is known
//! (a member whose scores come true with probability score², and one that is pure noise),
//! and on programs where replay and Markov know different things; and a member fitted offline
//! on a recorded run is taught it but not calibrated on it.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use augur_predictor::ensemble::novelty::Novelty;
use augur_predictor::eval::metrics::expected_calibration_error;
use augur_predictor::synth::{Program, Rng, RunStyle, chunk_id};
use augur_predictor::{
    Access, AccessSource, ChunkId, Ensemble, EnsembleConfig, Error, Prediction, Predictor,
    RunContext, RunId, Trace,
};
use common::probability_of;

const CANDIDATES: u64 = 120;

/// The candidates of a synthetic run: chunk, the member's raw score, and whether the run reads
/// it (with probability score²: the member is overconfident).
fn universe(run: RunId) -> Vec<(ChunkId, f32, bool)> {
    let mut rng = Rng::new(run.0 * 7919 + 1);
    (0..CANDIDATES)
        .map(|i| {
            let score = rng.unit();
            (
                chunk_id("calibration", run.0 * 1000 + i),
                score,
                rng.unit() < score * score,
            )
        })
        .collect()
}

/// A run the scorer follows: its candidates with their scores, and what it read.
type ScoredRun = (RunId, Vec<(ChunkId, f32)>, HashSet<ChunkId>);

/// A member that scores each run's candidates as [`universe`] says (or at random, if noisy).
#[derive(Debug)]
struct Scorer {
    name: &'static str,
    noisy: bool,
    runs: Vec<ScoredRun>,
}

impl Predictor for Scorer {
    fn name(&self) -> &str {
        self.name
    }
    fn start_run(&mut self, run: RunId, _: &RunContext) {
        let mut rng = Rng::new(run.0 ^ 0xabcdef);
        let scores = universe(run)
            .into_iter()
            .map(|(c, s, _)| (c, if self.noisy { rng.unit() } else { s }))
            .collect();
        self.runs.push((run, scores, HashSet::new()));
    }
    fn observe(&mut self, run: RunId, access: &Access) {
        if let Some(r) = self.runs.iter_mut().find(|r| r.0 == run) {
            r.2.insert(access.chunk);
        }
    }
    fn predict(&mut self, run: RunId, max: usize) -> Vec<Prediction> {
        let Some((_, scores, seen)) = self.runs.iter().find(|r| r.0 == run) else {
            return Vec::new();
        };
        let mut out: Vec<Prediction> = scores
            .iter()
            .filter(|(c, _)| !seen.contains(c))
            .map(|&(chunk, probability)| Prediction {
                chunk,
                probability,
                expected_in: Duration::from_millis(5),
            })
            .collect();
        augur_predictor::model::rank(&mut out, max);
        out
    }
    fn finish_run(&mut self, run: RunId, _: Option<&Trace>) {
        self.runs.retain(|r| r.0 != run);
    }
    fn save_state(&self) -> Result<Vec<u8>, Error> {
        Ok(Vec::new())
    }
    fn load_state(&mut self, _: &[u8]) -> Result<(), Error> {
        Ok(())
    }
}

/// One synthetic run: a prediction at the start and after each read, then the end. Returns
/// every forecast made with its outcome (was the chunk read later in the run?).
fn synthetic_run(model: &mut dyn Predictor, run: RunId) -> Vec<(f32, bool)> {
    model.start_run(run, &RunContext::default());
    let truth = universe(run);
    let read: HashSet<_> = truth.iter().filter(|t| t.2).map(|t| t.0).collect();
    let mut forecasts = model.predict(run, CANDIDATES as usize);
    for (i, (chunk, _, _)) in truth.iter().filter(|t| t.2).enumerate() {
        let access = Access {
            chunk: *chunk,
            at: Duration::from_millis(i as u64),
            size: 4096,
            source: AccessSource::Miss,
        };
        model.observe(run, &access);
        forecasts.extend(model.predict(run, 16));
    }
    model.finish_run(run, None);
    // A chunk counts once per level it was forecast at (as the ensemble counts); predictions
    // never name a chunk already read, so "read at all" is "read later".
    let mut levels = HashSet::new();
    forecasts
        .iter()
        .filter(|p| levels.insert((p.chunk, (p.probability * 20.0) as u32)))
        .map(|p| (p.probability, read.contains(&p.chunk)))
        .collect()
}

fn scorer(name: &'static str, noisy: bool) -> Box<dyn Predictor> {
    Box::new(Scorer {
        name,
        noisy,
        runs: Vec::new(),
    })
}

#[test]
fn the_ensemble_output_is_calibrated_where_its_members_are_not() {
    // Of the chunks forecast at p in a run, a share p are read later.
    let members = vec![scorer("overconfident", false), scorer("noise", true)];
    let mut ensemble = Ensemble::new(members, EnsembleConfig::default());
    let mut raw = Scorer {
        name: "raw",
        noisy: false,
        runs: Vec::new(),
    };
    for run in 0..250 {
        synthetic_run(&mut ensemble, RunId(run));
    }
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for run in 1000..1150 {
        ours.extend(synthetic_run(&mut ensemble, RunId(run)));
        theirs.extend(synthetic_run(&mut raw, RunId(run)));
    }
    let ours_ece = expected_calibration_error(&ours).unwrap();
    let raw_ece = expected_calibration_error(&theirs).unwrap();
    eprintln!("ECE: ensemble {ours_ece:.4}, overconfident member alone {raw_ece:.4}");
    assert!(raw_ece > 0.12, "the member is miscalibrated: {raw_ece}");
    assert!(
        ours_ece < 0.04,
        "ensemble ECE {ours_ece} (member {raw_ece})"
    );
    // Calibration did not flatten the ranking: what it rates high is read far more often.
    let rate = |lo: f32, hi: f32| {
        let sel: Vec<_> = ours.iter().filter(|(p, _)| (lo..hi).contains(p)).collect();
        sel.iter().filter(|(_, hit)| *hit).count() as f64 / sel.len().max(1) as f64
    };
    assert!(
        rate(0.6, 1.01) > 3.0 * rate(0.0, 0.2),
        "{} vs {}",
        rate(0.6, 1.01),
        rate(0.0, 0.2)
    );
    // The member's own map learned that it is overconfident.
    let learned = ensemble
        .member_calibration("overconfident", Novelty::New, 0.9)
        .unwrap();
    assert!(learned < 0.85, "{learned}");
}

#[test]
fn replay_and_markov_together_know_the_prefix_and_the_branch() {
    let prog = Program::new("127.0.0.1:5000/python:esgz", 40, &[30, 30], 1);
    let style = RunStyle::default();
    let mut ensemble = Ensemble::standard();
    for seed in 0..8 {
        ensemble.learn(&prog.run((seed % 2) as usize, &style, seed));
    }
    let run = RunId(1);
    let ctx = RunContext {
        image: prog.image.clone(),
        ..RunContext::default()
    };
    ensemble.start_run(run, &ctx);
    let at_start = ensemble.predict(run, 64);
    assert!(probability_of(&at_start, prog.prefix[5].digest) > 0.8);
    let plan = prog.plan(1);
    for (i, c) in plan[..43].iter().enumerate() {
        let access = Access {
            chunk: c.digest,
            at: Duration::from_millis(2 * i as u64),
            size: c.size,
            source: AccessSource::Miss,
        };
        ensemble.observe(run, &access);
    }
    let inside = ensemble.predict(run, 64);
    let ours = probability_of(&inside, prog.branches[1][6].digest);
    let other = probability_of(&inside, prog.branches[0][6].digest);
    // Markov knows the run took branch 1; replay still gives each branch half the past runs.
    // (Eight training runs, calibrated per novelty class: the seven runs of a known workload
    // teach the class this run is in.)
    assert!(
        ours > 0.6 && ours > other + 0.1,
        "branch taken {ours}, other {other}"
    );
}

#[test]
fn a_member_added_while_runs_go_on_joins_without_upsetting_them() {
    use augur_predictor::{
        Access, AccessSource, ChunkId, Ensemble, EnsembleConfig, Markov, MarkovConfig, Predictor,
        Replay, ReplayConfig, RunContext, RunId,
    };
    let mut e = Ensemble::new(
        vec![Box::new(Markov::new(MarkovConfig::default()))],
        EnsembleConfig::default(),
    );
    let ctx = RunContext {
        image: "img".into(),
        ..Default::default()
    };
    let access = |n: u8, ms: u64| Access {
        chunk: ChunkId([n; 32]),
        at: std::time::Duration::from_millis(ms),
        size: 4096,
        source: AccessSource::Miss,
    };
    e.start_run(RunId(1), &ctx);
    e.observe(RunId(1), &access(1, 0));
    e.add_member(Box::new(Replay::new(ReplayConfig::default())));
    assert_eq!(e.member_names(), ["markov", "replay"]);
    // The run started before the member joined goes on; a later one is served by both.
    e.observe(RunId(1), &access(2, 1));
    let _ = e.predict(RunId(1), 8);
    e.finish_run(RunId(1), None);
    e.start_run(RunId(2), &ctx);
    e.observe(RunId(2), &access(1, 0));
    let p = e.predict(RunId(2), 8);
    assert!(
        p.iter().any(|p| p.chunk == ChunkId([2; 32])),
        "markov learned 1 → 2 across the add: {p:?}"
    );
}

/// A member fitted offline on a program's runs: it names every chunk of branch 0 at 0.95 (in
/// sample, always right) and counts how often it is asked and taught.
#[derive(Debug)]
struct Fitted {
    image: String,
    plan: Vec<ChunkId>,
    claims: Claims,
    seen: HashSet<ChunkId>,
    counts: Arc<Counts>,
}

/// Which recorded runs a [`Fitted`] member says it was trained on.
#[derive(Debug, Clone, Copy)]
enum Claims {
    /// None.
    Nothing,
    /// Every run of its image.
    Image,
    /// The runs of its image started at an even (`Even(true)`) or odd millisecond: a
    /// cross-fitting fold.
    Even(bool),
}

/// How often a [`Fitted`] member was asked (`predict`) and taught (`finish_run`).
#[derive(Debug, Default)]
struct Counts {
    asked: AtomicUsize,
    taught: AtomicUsize,
}

impl Counts {
    fn get(&self) -> (usize, usize) {
        (
            self.asked.load(Ordering::Relaxed),
            self.taught.load(Ordering::Relaxed),
        )
    }
}

impl Fitted {
    /// A member of `prog`'s image; `claims_fitted`: whether it says it was trained on it.
    fn member(prog: &Program, claims_fitted: bool) -> (Box<dyn Predictor>, Arc<Counts>) {
        let claims = if claims_fitted {
            Claims::Image
        } else {
            Claims::Nothing
        };
        Self::claiming(prog, claims)
    }

    fn claiming(prog: &Program, claims: Claims) -> (Box<dyn Predictor>, Arc<Counts>) {
        let counts = Arc::new(Counts::default());
        let member = Fitted {
            image: prog.image.clone(),
            plan: prog.plan(0).iter().map(|c| c.digest).collect(),
            claims,
            seen: HashSet::new(),
            counts: Arc::clone(&counts),
        };
        (Box::new(member), counts)
    }
}

impl Predictor for Fitted {
    fn name(&self) -> &str {
        "fitted"
    }
    fn start_run(&mut self, _: RunId, _: &RunContext) {
        self.seen.clear();
    }
    fn observe(&mut self, _: RunId, access: &Access) {
        self.seen.insert(access.chunk);
    }
    fn predict(&mut self, _: RunId, max: usize) -> Vec<Prediction> {
        self.counts.asked.fetch_add(1, Ordering::Relaxed);
        let mut out: Vec<Prediction> = self
            .plan
            .iter()
            .filter(|c| !self.seen.contains(c))
            .map(|&chunk| Prediction {
                chunk,
                probability: 0.95,
                expected_in: Duration::from_millis(5),
            })
            .collect();
        augur_predictor::model::rank(&mut out, max);
        out
    }
    fn finish_run(&mut self, _: RunId, _: Option<&Trace>) {
        self.counts.taught.fetch_add(1, Ordering::Relaxed);
    }
    fn trained_on(&self, header: &augur_predictor::trace::RunHeader) -> bool {
        header.image == self.image
            && match self.claims {
                Claims::Nothing => false,
                Claims::Image => true,
                Claims::Even(even) => header.started_unix_ms.is_multiple_of(2) == even,
            }
    }
    fn save_state(&self) -> Result<Vec<u8>, Error> {
        Ok(Vec::new())
    }
    fn load_state(&mut self, _: &[u8]) -> Result<(), Error> {
        Ok(())
    }
}

#[test]
fn a_member_fitted_on_a_recorded_run_is_taught_it_but_not_calibrated_on_it() {
    let prog = Program::new("127.0.0.1:5000/python:esgz", 40, &[30, 30], 1);
    let learn_eight = |claims_fitted: bool| {
        let (member, counts) = Fitted::member(&prog, claims_fitted);
        let mut ensemble = Ensemble::new(vec![member], EnsembleConfig::default());
        let before = ensemble.member_calibration("fitted", Novelty::Known, 0.95);
        for seed in 0..8 {
            ensemble.learn(&prog.run(0, &RunStyle::default(), seed));
        }
        let after = ensemble.member_calibration("fitted", Novelty::Known, 0.95);
        (before.unwrap(), after.unwrap(), counts.get())
    };
    // Not fitted on these runs: its in-sample certainty is learned as "always right".
    let (before, after, _) = learn_eight(false);
    assert!(after > before + 0.01, "learned {before} → {after}");
    // Fitted on them: never asked, so its calibration stays what it was; still taught.
    let (before, after, (asked, taught)) = learn_eight(true);
    assert_eq!(after, before);
    assert_eq!((asked, taught), (0, 8));
}

#[test]
fn a_run_learned_under_another_reference_is_muted_by_the_one_it_was_recorded_under() {
    let prog = Program::new("127.0.0.1:5000/python:esgz", 40, &[30, 30], 1);
    let (member, counts) = Fitted::member(&prog, true);
    let mut ensemble = Ensemble::new(vec![member], EnsembleConfig::default());
    for seed in 0..4 {
        ensemble.learn_as(
            prog.run(0, &RunStyle::default(), seed),
            "registry.example.com/python:v2",
        );
    }
    assert_eq!(counts.get(), (0, 4));
    // Re-keyed first, it would have been asked: the reference is not the one it trained on.
    let mut rekeyed = prog.run(0, &RunStyle::default(), 9);
    rekeyed.header.image = "registry.example.com/python:v2".into();
    ensemble.learn(&rekeyed);
    assert!(counts.get().0 > 0);
}

#[test]
fn a_fold_that_did_not_see_a_recorded_run_answers_for_the_member_that_did() {
    let prog = Program::new("127.0.0.1:5000/python:esgz", 40, &[30, 30], 1);
    let (member, counts) = Fitted::member(&prog, true);
    let (even, even_counts) = Fitted::claiming(&prog, Claims::Even(true));
    let (odd, odd_counts) = Fitted::claiming(&prog, Claims::Even(false));
    let mut ensemble = Ensemble::new(vec![member], EnsembleConfig::default());
    assert!(!ensemble.add_folds("markov", Vec::new()), "no such member");
    assert!(ensemble.add_folds("fitted", vec![even, odd]));
    let before = ensemble.member_calibration("fitted", Novelty::Known, 0.95);
    // Seeds 0..8 start at even and odd milliseconds in turn: each fold answers for the four
    // runs it did not see; the member is never asked, and all three are taught each run they
    // followed.
    for seed in 0..8 {
        ensemble.learn(&prog.run(0, &RunStyle::default(), seed));
    }
    let after = ensemble.member_calibration("fitted", Novelty::Known, 0.95);
    assert_eq!(counts.get().0, 0);
    assert_eq!(counts.get().1, 8);
    let (even_asked, even_taught) = even_counts.get();
    let (odd_asked, odd_taught) = odd_counts.get();
    assert!(even_asked > 0 && odd_asked > 0);
    assert_eq!((even_taught, odd_taught), (4, 4));
    // The folds' forecasts calibrated the member.
    assert!(
        after.unwrap() > before.unwrap() + 0.01,
        "{before:?} → {after:?}"
    );
    // Live runs are the member's own.
    ensemble.start_run(
        RunId(1),
        &RunContext::from_header(&prog.run(0, &RunStyle::default(), 20).header),
    );
    ensemble.predict(RunId(1), 8);
    assert!(counts.get().0 > 0);
    assert_eq!(even_counts.get().0, even_asked);
    assert_eq!(odd_counts.get().0, odd_asked);
}

/// A member that names a fixed list of chunks at 0.95, in runs of `image` only (any run if
/// it is empty).
#[derive(Debug)]
struct Lists {
    name: &'static str,
    image: String,
    chunks: Vec<ChunkId>,
    /// Whether it declares that it may abstain from whole runs (of other images).
    declares: bool,
    speaking: bool,
    seen: HashSet<ChunkId>,
}

impl Lists {
    fn member(
        name: &'static str,
        image: &str,
        chunks: Vec<ChunkId>,
        declares: bool,
    ) -> Box<dyn Predictor> {
        Box::new(Lists {
            name,
            image: image.to_owned(),
            chunks,
            declares,
            speaking: false,
            seen: HashSet::new(),
        })
    }
}

impl Predictor for Lists {
    fn name(&self) -> &str {
        self.name
    }
    fn start_run(&mut self, _: RunId, ctx: &RunContext) {
        self.seen.clear();
        self.speaking = self.image.is_empty() || ctx.image == self.image;
    }
    fn observe(&mut self, _: RunId, access: &Access) {
        self.seen.insert(access.chunk);
    }
    fn predict(&mut self, _: RunId, max: usize) -> Vec<Prediction> {
        let mut out: Vec<Prediction> = self
            .chunks
            .iter()
            .filter(|c| self.speaking && !self.seen.contains(c))
            .map(|&chunk| Prediction {
                chunk,
                probability: 0.95,
                expected_in: Duration::from_millis(5),
            })
            .collect();
        augur_predictor::model::rank(&mut out, max);
        out
    }
    fn finish_run(&mut self, _: RunId, _: Option<&Trace>) {}
    fn may_abstain(&self) -> bool {
        self.declares
    }
    fn abstains_on(&self, image: &str) -> bool {
        !self.image.is_empty() && image != self.image
    }
    fn save_state(&self) -> Result<Vec<u8>, Error> {
        Ok(Vec::new())
    }
    fn load_state(&mut self, _: &[u8]) -> Result<(), Error> {
        Ok(())
    }
}

#[test]
fn a_run_a_member_abstains_from_is_answered_as_learned_without_it() {
    // `broad` names what branch-0 runs read and branch 1's chunks besides (right about 70 of
    // 100); `sharp` names only what they read, but only in runs of its own image.
    let prog = Program::new("127.0.0.1:5000/python:esgz", 40, &[30, 30], 1);
    let read: Vec<ChunkId> = prog.plan(0).iter().map(|c| c.digest).collect();
    let mut broad = read.clone();
    broad.extend(prog.plan(1).iter().skip(40).map(|c| c.digest));
    let on_another_image = |declares: bool| {
        let members = vec![
            Lists::member("broad", "", broad.clone(), false),
            Lists::member("sharp", &prog.image, read.clone(), declares),
        ];
        let mut ensemble = Ensemble::new(members, EnsembleConfig::default());
        for seed in 0..8 {
            ensemble.learn(&prog.run(0, &RunStyle::default(), seed));
        }
        // The saved state carries the view.
        let state = ensemble.save_state().unwrap();
        ensemble.load_state(&state).unwrap();
        assert_eq!(ensemble.save_state().unwrap(), state);
        // The same program under another reference: `sharp` says nothing.
        let run = prog.run(0, &RunStyle::default(), 20);
        let mut ctx = RunContext::from_header(&run.header);
        ctx.image = "127.0.0.1:5000/python:v2".into();
        ensemble.start_run(RunId(1), &ctx);
        let first = run.first_accesses();
        for a in &first[..2] {
            ensemble.observe(RunId(1), a);
        }
        let p = ensemble.predict(RunId(1), 128);
        probability_of(&p, first[10].chunk)
    };
    // Learned with `sharp` speaking, what `broad` alone named was always wrong (the right
    // chunks had both); without `sharp`, 70 % of it is right, and that view answers.
    let declared = on_another_image(true);
    let undeclared = on_another_image(false);
    assert!(declared > 0.4, "with the view: {declared}");
    assert!(
        undeclared < declared - 0.2,
        "without: {undeclared}, with: {declared}"
    );
}

#[test]
fn on_an_image_never_seen_the_rest_of_a_begun_file_is_answered_as_continuation_learned_it() {
    use augur_predictor::policy::worth_prefetching;
    use augur_predictor::{Continuation, Layout, Markov, MarkovConfig, Replay, ReplayConfig};

    // Training: one image; four runs read all of it, then four stop early, at a file's end,
    // so that much of what replay and Markov are sure of is not read, while every file begun
    // is read whole.
    let known = Program::new("127.0.0.1:5000/python:esgz", 24, &[24], 3);
    let steady = RunStyle {
        swap: 0.0,
        reread: 0.0,
        ..RunStyle::default()
    };
    let training: Vec<Trace> = (0..8u64)
        .map(|seed| {
            let mut run = known.run(0, &steady, seed);
            if seed >= 4 {
                let cut = 4 * (seed as usize - 2);
                run.chunks.truncate(cut);
                run.accesses.retain(|a| (a.chunk as usize) < cut);
            }
            run
        })
        .collect();
    let layout = Arc::new(Layout::from_traces(&training));
    let members: Vec<Box<dyn Predictor>> = vec![
        Box::new(Replay::new(ReplayConfig::default().as_member())),
        Box::new(Markov::new(MarkovConfig::default())),
        Box::new(Continuation::with_layout(layout)),
    ];
    let mut ensemble = Ensemble::new(members, EnsembleConfig::default());
    training.iter().for_each(|t| ensemble.learn(t));

    // A run of another image, whose TOC says its first file is four chunks of 4 MiB.
    let new = Program::new("127.0.0.1:5000/tools:esgz", 8, &[8], 9);
    let plan = new.plan(0);
    let big: Vec<(ChunkId, u32)> = plan[..4].iter().map(|c| (c.digest, 4 << 20)).collect();
    let ctx = RunContext {
        image: new.image.clone(),
        layers: new.layers.to_vec(),
        layout: Arc::new(Layout::new([big])),
        ..RunContext::default()
    };
    let run = RunId(7);
    ensemble.start_run(run, &ctx);
    assert_eq!(ensemble.novelty(run), Some(Novelty::NewImage));
    let access = Access {
        chunk: plan[0].digest,
        at: Duration::from_millis(1),
        size: 4 << 20,
        source: AccessSource::Miss,
    };
    ensemble.observe(run, &access);
    let answers = ensemble.predict(run, 64);
    // Continuation was right in every training run; the combination's pool at such scores
    // learned mostly replay's and Markov's misses, and alone it keeps a 4 MiB chunk out at 0.5.
    for c in &plan[1..4] {
        let p = probability_of(&answers, c.digest);
        assert!(worth_prefetching(p, 4 << 20, 0.5), "{p}");
    }
}
