//! Replay and Markov on synthetic programs where the right answer is known: what each predicts
//! at the start, at a branch and after it, across images, within its memory bound, and after a
//! save and load.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use augur_predictor::synth::{Program, RunStyle};
use augur_predictor::{
    Access, AccessSource, Markov, MarkovConfig, Predictor, Replay, ReplayConfig, RunContext, RunId,
};
use common::{check_contract, drive, probability_of};

const IMAGE: &str = "127.0.0.1:5000/python:esgz";

fn program() -> Program {
    Program::new(IMAGE, 40, &[30, 30, 30], 1)
}

fn steady() -> RunStyle {
    RunStyle {
        swap: 0.0,
        ..RunStyle::default()
    }
}

fn trained<M: Predictor>(mut model: M, prog: &Program, branches: &[usize]) -> M {
    for (i, &b) in branches.iter().enumerate() {
        model.learn(&prog.run(b, &steady(), 100 + i as u64));
    }
    model
}

/// Feeds the first `n` chunks of `plan` (as new accesses 2 ms apart).
fn feed(model: &mut dyn Predictor, run: RunId, chunks: &[augur_predictor::trace::ChunkRecord]) {
    for (i, c) in chunks.iter().enumerate() {
        let access = Access {
            chunk: c.digest,
            at: Duration::from_millis(2 * (i as u64 + 1)),
            size: c.size,
            source: AccessSource::Miss,
        };
        model.observe(run, &access);
    }
}

fn start(model: &mut dyn Predictor, run: RunId, image: &str) {
    let ctx = RunContext {
        image: image.into(),
        ..RunContext::default()
    };
    model.start_run(run, &ctx);
}

#[test]
fn replay_predicts_a_past_run_from_its_start_and_follows_it() {
    let prog = program();
    let mut replay = trained(Replay::new(ReplayConfig::default()), &prog, &[0, 0, 0]);
    let plan = prog.plan(0);
    let run = RunId(1);
    start(&mut replay, run, IMAGE);
    let preds = replay.predict(run, 16);
    assert_eq!(preds.len(), 16);
    assert!(preds.iter().all(|p| p.probability == 1.0));
    let want: HashSet<_> = plan[..16].iter().map(|c| c.digest).collect();
    assert!(preds.iter().all(|p| want.contains(&p.chunk)));
    // Sooner first among equals, and times from the past runs (about 2 ms per chunk).
    assert!(
        preds
            .windows(2)
            .all(|w| w[0].expected_in <= w[1].expected_in)
    );
    assert!(preds[15].expected_in > Duration::from_millis(20));

    feed(&mut replay, run, &plan[..50]);
    let preds = replay.predict(run, 8);
    let next: Vec<_> = plan[50..58].iter().map(|c| c.digest).collect();
    assert_eq!(preds.iter().map(|p| p.chunk).collect::<Vec<_>>(), next);
    assert!(
        preds[0].expected_in < Duration::from_millis(5),
        "{:?}",
        preds[0].expected_in
    );
}

#[test]
fn replay_gives_the_share_of_runs_and_knows_nothing_of_new_images() {
    let prog = program();
    let mut replay = trained(Replay::new(ReplayConfig::default()), &prog, &[0, 1, 0, 1]);
    let run = RunId(7);
    start(&mut replay, run, IMAGE);
    feed(&mut replay, run, &prog.plan(0)[..38]);
    let preds = replay.predict(run, 64);
    assert_eq!(probability_of(&preds, prog.prefix[39].digest), 1.0);
    assert_eq!(probability_of(&preds, prog.branches[0][0].digest), 0.5);
    assert_eq!(probability_of(&preds, prog.branches[1][0].digest), 0.5);
    assert_eq!(probability_of(&preds, prog.branches[2][0].digest), 0.0);

    start(&mut replay, RunId(8), "127.0.0.1:5000/other:1");
    assert!(replay.predict(RunId(8), 64).is_empty());
    assert!(replay.predict(RunId(999), 64).is_empty(), "unknown run");
}

#[test]
fn replay_as_a_member_says_how_many_runs_agree() {
    let prog = program();
    let share = |runs: usize| {
        let config = ReplayConfig::default().as_member();
        let mut replay = trained(Replay::new(config), &prog, &vec![0; runs]);
        start(&mut replay, RunId(3), IMAGE);
        feed(&mut replay, RunId(3), &prog.plan(0)[..38]);
        probability_of(&replay.predict(RunId(3), 64), prog.prefix[39].digest)
    };
    // Every past run read the chunk next: the baseline says 1.0 whatever their number, the
    // member shrinks the share by two runs that did not read it.
    let prior = augur_predictor::replay::MEMBER_PRIOR_RUNS as f32;
    assert_eq!(share(1), 1.0 / (1.0 + prior));
    assert_eq!(share(38), 38.0 / (38.0 + prior));
    assert!(share(38) >= 0.95 && share(1) < 0.5);
}

#[test]
fn replay_uses_only_runs_with_the_same_labelled_workload() {
    let prog = program();
    let mut replay = Replay::new(ReplayConfig::default());
    for (b, label) in [(0, "etl"), (1, "report"), (0, "etl"), (1, "report")] {
        let mut trace = prog.run(b, &steady(), b as u64);
        trace.header.workload = format!("label:{label}");
        replay.learn(&trace);
    }
    let ctx = RunContext {
        image: IMAGE.into(),
        label: Some("report".into()),
        layers: vec![],
        layout: Default::default(),
    };
    replay.start_run(RunId(1), &ctx);
    feed(&mut replay, RunId(1), &prog.prefix);
    let preds = replay.predict(RunId(1), 64);
    assert_eq!(probability_of(&preds, prog.branches[1][0].digest), 1.0);
    assert_eq!(probability_of(&preds, prog.branches[0][0].digest), 0.0);
}

#[test]
fn replay_memory_is_bounded() {
    let prog = program();
    let config = ReplayConfig {
        max_runs_per_image: 3,
        max_total_steps: 150,
        ..ReplayConfig::default()
    };
    let mut replay = trained(Replay::new(config), &prog, &[0, 1, 2, 0, 1, 2]);
    // 70 steps per run: the step bound keeps two.
    assert_eq!(replay.past_runs(), 2);
    // 140 + 15 steps: the oldest run of any image goes, the new image's run stays.
    let other = Program::new("other", 10, &[5], 2);
    replay.learn(&other.run(0, &steady(), 1));
    assert_eq!(replay.past_runs(), 2);
    for image in [IMAGE, "other"] {
        start(&mut replay, RunId(1), image);
        assert!(!replay.predict(RunId(1), 4).is_empty(), "{image}");
    }
}

#[test]
fn replay_as_a_member_starts_an_image_it_never_saw_from_the_layers_it_shares() {
    let prog = program();
    let sibling = Program::sharing_prefix("127.0.0.1:5000/django:esgz", &prog, &[20], 9);
    let ctx = |layers: Vec<String>| RunContext {
        image: sibling.image.clone(),
        label: None,
        layers,
        layout: Default::default(),
    };
    let (run, shared) = (RunId(4), ctx(sibling.layers.to_vec()));
    let mut baseline = trained(Replay::new(ReplayConfig::default()), &prog, &[0, 1]);
    baseline.start_run(run, &shared);
    assert!(
        baseline.predict(run, 64).is_empty(),
        "the baseline replays per image"
    );

    let config = ReplayConfig::default().as_member();
    let mut member = trained(Replay::new(config), &prog, &[0, 1]);
    let prefix: HashSet<_> = sibling.prefix.iter().map(|c| c.digest).collect();
    member.start_run(run, &shared);
    let before = member.predict(run, 64);
    assert_eq!(
        before[0].chunk, sibling.prefix[0].digest,
        "before the first read"
    );
    // Both past runs went on into their own image's layer, which this image does not have.
    assert_eq!(before.len(), prefix.len());
    assert!(before.iter().all(|p| prefix.contains(&p.chunk)));
    let start_up = augur_predictor::workload::SIGNATURE_CHUNKS;
    feed(&mut member, run, &sibling.prefix[..start_up - 1]);
    assert_eq!(
        member.predict(run, 64)[0].chunk,
        sibling.prefix[start_up - 1].digest
    );
    feed(&mut member, run, &sibling.prefix[..start_up]);
    assert!(member.predict(run, 64).is_empty(), "only in its start-up");

    // A base rebuilt with other timestamps has another digest: the same bytes read tell.
    member.start_run(RunId(5), &ctx(vec!["sha256:rebuilt".into()]));
    assert!(
        member.predict(RunId(5), 64).is_empty(),
        "nothing in common yet"
    );
    feed(&mut member, RunId(5), &sibling.prefix[..2]);
    let after = member.predict(RunId(5), 64);
    assert_eq!(after[0].chunk, sibling.prefix[2].digest);
    assert!(after.iter().all(|p| prefix.contains(&p.chunk)));

    // Once the image has runs of its own, only they are replayed, its own layer included.
    member.learn(&sibling.run(0, &steady(), 7));
    member.start_run(RunId(6), &shared);
    feed(&mut member, RunId(6), &sibling.prefix);
    let own = member.predict(RunId(6), 64);
    assert_eq!(own[0].chunk, sibling.branches[0][0].digest);
}

#[test]
fn replay_state_saved_before_layers_were_kept_loads_and_stays_per_image() {
    let prog = program();
    let sibling = Program::sharing_prefix("127.0.0.1:5000/django:esgz", &prog, &[20], 9);
    let config = ReplayConfig::default().as_member();
    let member = trained(Replay::new(config), &prog, &[0, 1]);
    // The state as a build before this one wrote it: steps and runs without layers.
    let mut state: serde_json::Value =
        serde_json::from_slice(&member.save_state().unwrap()).unwrap();
    let runs = state["state"]["images"][IMAGE].as_array_mut().unwrap();
    assert_eq!(runs.len(), 2);
    for run in runs {
        let run = run.as_object_mut().unwrap();
        assert!(run.remove("layers").is_some());
        for step in run["steps"].as_array_mut().unwrap() {
            assert!(step.as_object_mut().unwrap().remove("layer").is_some());
        }
    }
    let mut loaded = Replay::new(config);
    loaded
        .load_state(&serde_json::to_vec(&state).unwrap())
        .unwrap();
    let ctx = RunContext {
        image: sibling.image.clone(),
        label: None,
        layers: sibling.layers.to_vec(),
        layout: Default::default(),
    };
    loaded.start_run(RunId(1), &ctx);
    assert!(loaded.predict(RunId(1), 64).is_empty(), "no layers known");
    start(&mut loaded, RunId(2), IMAGE);
    assert_eq!(loaded.predict(RunId(2), 64)[0].chunk, prog.prefix[0].digest);
}

#[test]
fn markov_learns_a_chain_online_with_its_timing() {
    let prog = program();
    let mut markov = trained(Markov::new(MarkovConfig::default()), &prog, &[0, 0]);
    let plan = prog.plan(0);
    let run = RunId(3);
    start(&mut markov, run, IMAGE);
    let preds = markov.predict(run, 10);
    assert_eq!(
        preds[0].chunk, plan[0].digest,
        "the first chunk follows the start token"
    );
    assert!(preds[0].probability > 0.9);
    feed(&mut markov, run, &plan[..20]);
    let preds = markov.predict(run, 10);
    let chunks: Vec<_> = preds.iter().map(|p| p.chunk).collect();
    let next: Vec<_> = plan[20..30].iter().map(|c| c.digest).collect();
    assert_eq!(chunks, next);
    // Farther is later: about 2 ms per step (the synthetic gap), never decreasing.
    assert!(
        preds
            .windows(2)
            .all(|w| w[0].expected_in <= w[1].expected_in)
    );
    let tenth = preds[9].expected_in.as_secs_f64() * 1000.0;
    assert!((10.0..30.0).contains(&tenth), "{tenth} ms");
}

#[test]
fn markov_follows_the_branch_a_run_has_entered() {
    let prog = program();
    let mut markov = trained(Markov::new(MarkovConfig::default()), &prog, &[0, 1, 0, 1]);
    let run = RunId(4);
    start(&mut markov, run, IMAGE);
    feed(&mut markov, run, &prog.prefix);
    let at_branch = markov.predict(run, 64);
    let a0 = probability_of(&at_branch, prog.branches[0][0].digest);
    assert!((0.4..0.6).contains(&a0), "{a0}");
    feed(&mut markov, run, &prog.branches[0][..2]);
    let inside = markov.predict(run, 64);
    assert!(probability_of(&inside, prog.branches[0][5].digest) > 0.8);
    assert_eq!(probability_of(&inside, prog.branches[1][5].digest), 0.0);
}

#[test]
fn markov_carries_shared_chunks_to_an_image_it_never_saw() {
    let prog = program();
    let sibling = Program::sharing_prefix("127.0.0.1:5000/django:esgz", &prog, &[20], 9);
    let mut markov = trained(Markov::new(MarkovConfig::default()), &prog, &[0, 1]);
    let run = RunId(5);
    start(&mut markov, run, &sibling.image);
    assert!(
        markov.predict(run, 8).is_empty(),
        "nothing before the first shared chunk"
    );
    feed(&mut markov, run, &sibling.prefix[..3]);
    let preds = markov.predict(run, 8);
    assert_eq!(preds[0].chunk, sibling.prefix[3].digest);
}

#[test]
fn markov_memory_is_bounded() {
    let config = MarkovConfig {
        max_contexts: 64,
        max_successors: 2,
        ..MarkovConfig::default()
    };
    let big = Program::new("big", 500, &[300, 300], 4);
    let mut markov = Markov::new(config);
    for seed in 0..4 {
        markov.learn(&big.run((seed % 2) as usize, &RunStyle::default(), seed));
        let (first, second) = markov.contexts();
        assert!(first <= 64 && second <= 64, "{first} {second}");
    }
}

#[test]
fn every_model_keeps_the_contract_on_noisy_runs() {
    let prog = program();
    let noisy = RunStyle {
        swap: 0.3,
        reread: 0.5,
        ..RunStyle::default()
    };
    let mut models: Vec<Box<dyn Predictor>> = vec![
        Box::new(Replay::new(ReplayConfig::default())),
        Box::new(Markov::new(MarkovConfig::default())),
        Box::new(augur_predictor::Ensemble::standard()),
    ];
    for model in &mut models {
        for seed in 0..6 {
            let trace = prog.run((seed % 3) as usize, &noisy, seed);
            drive(model.as_mut(), RunId(seed), &trace, 12);
        }
        check_contract(&model.predict(RunId(0), 5), 5, &HashSet::new());
    }
}

#[test]
fn saved_state_predicts_the_same_and_rejects_another_models_state() {
    let prog = program();
    let replay = trained(Replay::new(ReplayConfig::default()), &prog, &[0, 1, 2]);
    let markov = trained(Markov::new(MarkovConfig::default()), &prog, &[0, 1, 2]);
    let mut ensemble = augur_predictor::Ensemble::standard();
    (0..3).for_each(|b| ensemble.learn(&prog.run(b, &steady(), b as u64)));
    let originals: Vec<Box<dyn Predictor>> =
        vec![Box::new(replay), Box::new(markov), Box::new(ensemble)];
    let fresh: Vec<Box<dyn Predictor>> = vec![
        Box::new(Replay::new(ReplayConfig::default())),
        Box::new(Markov::new(MarkovConfig::default())),
        Box::new(augur_predictor::Ensemble::standard()),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (mut original, mut copy) in originals.into_iter().zip(fresh) {
        let path = dir.path().join(format!("{}.state", original.name()));
        augur_predictor::model::save_to_file(original.as_ref(), &path).unwrap();
        augur_predictor::model::load_from_file(copy.as_mut(), &path).unwrap();
        for model in [&mut original, &mut copy] {
            start(model.as_mut(), RunId(1), IMAGE);
            feed(model.as_mut(), RunId(1), &prog.plan(1)[..45]);
        }
        assert_eq!(
            original.predict(RunId(1), 20),
            copy.predict(RunId(1), 20),
            "{}",
            copy.name()
        );
    }
    let mut replay = Replay::new(ReplayConfig::default());
    let markov_state = Markov::new(MarkovConfig::default()).save_state().unwrap();
    let err = replay.load_state(&markov_state).unwrap_err().to_string();
    assert!(err.contains("\"markov\""), "{err}");
    assert!(replay.load_state(b"\x00garbage").is_err());
    let mut ensemble = augur_predictor::Ensemble::standard();
    assert!(
        ensemble
            .load_state(&[1, 0, 0, 0, 0, 0, 0, 0, b'{'])
            .is_err()
    );
}

#[test]
fn models_can_move_to_the_predictor_thread() {
    // The daemon owns its predictors on a thread of their own.
    fn send<T: Send + 'static>() {}
    send::<Replay>();
    send::<Markov>();
    send::<augur_predictor::Ensemble>();
    send::<augur_predictor::Lstm>();
    send::<Box<dyn Predictor>>();
}
