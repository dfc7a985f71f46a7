//! An evaluation that cannot be fooled: models trained on some runs replay held-out runs in
//! simulated time, where at each access a model has seen only the accesses before it.
//!
//! - **Training**: each model learns every training trace, oldest first, then its state is
//!   saved. Every test trace is evaluated against a fresh copy of that state, so one test run
//!   never teaches another (within a run, online models do learn as they go, as they would
//!   live). With [`EvalOptions::learn_test_runs`] the test runs are instead run one after
//!   another on one copy, oldest first, each learned when it ends, as a node learns its runs:
//!   then only the first run of an image never seen is new, and each run's category counts
//!   the test runs before it as known.
//! - **Simulation** ([`sim`]): predictions at or above the threshold become prefetches, queued
//!   by expected time of need and fetched one at a time over a link with a latency and a
//!   bandwidth ([`NetworkProfile`]); demand misses go first. A first access to a chunk is a
//!   timely prefetch hit, a late prefetch (issued but not there yet), or a miss.
//! - **Fetchable chunks** ([`Catalogue`]): a prediction is prefetched only if the chunk is in
//!   one of the test run's layers (as the loaded traces place chunks in layers), as the
//!   daemon can only fetch chunks of the layers mounted for the container.
//! - **Baselines**: `none` (no prefetch) and `oracle` (knows the test run; fetches every chunk
//!   it will read in order of need, over the same link).
//! - **Layout**: a recorded run has no TOC, so continuation (decision 0031) is given the chunks
//!   all loaded runs read of each file, per layer, as the image's multi-chunk files: what the
//!   catalogue does for where chunks live. So it cannot name a chunk no loaded run read, and
//!   may waste less here than on a node; on the project's traces both name the same chunks.
//! - **Categories**: each test run is reported under whether the training set had its image
//!   and its workload key (`seen image, seen workload`; `seen image, new workload`, i.e.
//!   held-out arguments whose first reads differ; `new image`), and under `all`.
//! - **Deterministic**: no clocks, no unseeded randomness, deterministic maps.
//!
//! [`metrics`] defines every number; [`report`] renders Markdown and JSON; [`split`] makes
//! train/test splits by run, workload or image.

pub mod metrics;
pub mod report;
pub mod sim;
pub mod split;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::chunk::{ChunkId, FastMap};
use crate::continuation::Continuation;
use crate::ensemble::{Ensemble, EnsembleConfig};
use crate::error::Error;
use crate::layout::Layout;
use crate::markov::{Markov, MarkovConfig};
use crate::model::Predictor;
use crate::replay::{Replay, ReplayConfig};
use crate::trace::{Trace, dir};
use metrics::Tally;
pub use report::{Group, ModelRow, Report};
use sim::{NoPrefetch, Oracle};

/// The link prefetches and demand fetches share in the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NetworkProfile {
    /// Round trip before a fetch's first byte, µs.
    pub latency_us: u64,
    /// Bytes per second once data flows.
    pub bandwidth_bytes_per_s: u64,
}

impl NetworkProfile {
    /// 0.5 ms, 10 Gbit/s: a registry in the same data centre.
    pub const DATACENTER: NetworkProfile = NetworkProfile {
        latency_us: 500,
        bandwidth_bytes_per_s: 1_250_000_000,
    };
    /// 20 ms, 100 Mbit/s: a registry in another region (the default).
    pub const REGIONAL: NetworkProfile = NetworkProfile {
        latency_us: 20_000,
        bandwidth_bytes_per_s: 12_500_000,
    };
    /// 80 ms, 20 Mbit/s: an edge site on a thin link.
    pub const CONSTRAINED: NetworkProfile = NetworkProfile {
        latency_us: 80_000,
        bandwidth_bytes_per_s: 2_500_000,
    };

    /// A preset name (`datacenter`, `regional`, `constrained`) or `<ms>ms,<mbit>mbit`
    /// (`20ms,100mbit`).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "datacenter" => return Ok(Self::DATACENTER),
            "regional" => return Ok(Self::REGIONAL),
            "constrained" => return Ok(Self::CONSTRAINED),
            _ => {}
        }
        let bad = || {
            format!(
                "network profile {text:?}: use datacenter, regional, constrained or <ms>ms,<mbit>mbit such as 20ms,100mbit"
            )
        };
        let (lat, bw) = text.split_once(',').ok_or_else(bad)?;
        let ms: f64 = lat
            .trim()
            .strip_suffix("ms")
            .ok_or_else(bad)?
            .parse()
            .map_err(|_| bad())?;
        let mbit: f64 = bw
            .trim()
            .strip_suffix("mbit")
            .ok_or_else(bad)?
            .parse()
            .map_err(|_| bad())?;
        if !(ms >= 0.0 && mbit > 0.0 && ms.is_finite() && mbit.is_finite()) {
            return Err(bad());
        }
        Ok(NetworkProfile {
            latency_us: (ms * 1000.0) as u64,
            bandwidth_bytes_per_s: ((mbit * 125_000.0) as u64).max(1),
        })
    }
}

/// What to simulate and how the built-in models are configured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalOptions {
    /// The link.
    pub network: NetworkProfile,
    /// Predictions at or above this probability are prefetched.
    pub threshold: f32,
    /// Predictions asked for after each new chunk.
    pub max_predictions: usize,
    /// Replay's configuration.
    pub replay: ReplayConfig,
    /// Markov's configuration.
    pub markov: MarkovConfig,
    /// The ensemble's configuration.
    pub ensemble: EnsembleConfig,
    /// Learn each test run when it ends, in the order the runs started (see the module map);
    /// off: every test run starts from the trained state.
    pub learn_test_runs: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            network: NetworkProfile::REGIONAL,
            threshold: 0.5,
            max_predictions: 64,
            replay: ReplayConfig::default(),
            markov: MarkovConfig::default(),
            ensemble: EnsembleConfig::default(),
            learn_test_runs: false,
        }
    }
}

/// Builds fresh instances of a model; how extra models (the ONNX LSTM) join an evaluation.
pub trait ModelFactory {
    /// The model's name in the report (must equal the built model's [`Predictor::name`]).
    fn name(&self) -> &str;
    /// A new, untrained instance.
    fn build(&self) -> Result<Box<dyn Predictor>, Error>;
    /// Cross-fitting folds for the instance as an ensemble member
    /// ([`Ensemble::add_folds`]); none by default.
    fn folds(&self) -> Result<Vec<Box<dyn Predictor>>, Error> {
        Ok(Vec::new())
    }
}

struct Builtin<F> {
    name: &'static str,
    make: F,
}

impl<F: Fn() -> Box<dyn Predictor>> ModelFactory for Builtin<F> {
    fn name(&self) -> &str {
        self.name
    }

    fn build(&self) -> Result<Box<dyn Predictor>, Error> {
        Ok((self.make)())
    }
}

struct EnsembleFactory<'a> {
    members: Vec<&'a dyn ModelFactory>,
    config: EnsembleConfig,
}

impl ModelFactory for EnsembleFactory<'_> {
    fn name(&self) -> &str {
        "ensemble"
    }

    fn build(&self) -> Result<Box<dyn Predictor>, Error> {
        let members = self
            .members
            .iter()
            .map(|f| f.build())
            .collect::<Result<_, _>>()?;
        let mut ensemble = Ensemble::new(members, self.config);
        for f in &self.members {
            ensemble.add_folds(f.name(), f.folds()?);
        }
        Ok(Box::new(ensemble))
    }
}

/// Evaluates the built-in models on the traces of two directories.
pub fn run(train_dir: &Path, test_dir: &Path, opts: &EvalOptions) -> Result<Report, Error> {
    run_with(train_dir, test_dir, opts, &[])
}

/// Like [`run`], with extra models, each evaluated alone and as a member of the ensemble.
pub fn run_with(
    train_dir: &Path,
    test_dir: &Path,
    opts: &EvalOptions,
    extra: &[&dyn ModelFactory],
) -> Result<Report, Error> {
    let mut reports = sweep(train_dir, test_dir, opts, extra, &[opts.threshold])?;
    Ok(reports.remove(0))
}

/// Like [`run_with`] at several prefetch thresholds, training each model once: one report per
/// threshold, to compare models at equal wasted bytes rather than at one threshold.
pub fn sweep(
    train_dir: &Path,
    test_dir: &Path,
    opts: &EvalOptions,
    extra: &[&dyn ModelFactory],
    thresholds: &[f32],
) -> Result<Vec<Report>, Error> {
    let train = dir::load_dir(train_dir)?;
    let test = dir::load_dir(test_dir)?;
    let mut notes = Vec::new();
    for (loaded, what) in [(&train, "training"), (&test, "test")] {
        for path in &loaded.torn {
            notes.push(format!(
                "{what} trace {} has a torn tail (used up to it)",
                path.display()
            ));
        }
        for path in &loaded.empty {
            notes.push(format!(
                "{what} trace {} has no run header (skipped)",
                path.display()
            ));
        }
    }
    let train: Vec<Trace> = train.traces.into_iter().map(|(_, t)| t).collect();
    let test: Vec<Trace> = test.traces.into_iter().map(|(_, t)| t).collect();
    let mut reports = sweep_traces(&train, &test, opts, extra, thresholds)?;
    reports.iter_mut().for_each(|r| r.notes.clone_from(&notes));
    Ok(reports)
}

/// Evaluates on traces already in memory (splits, tests, benchmarks) at `opts.threshold`.
pub fn run_traces(
    train: &[Trace],
    test: &[Trace],
    opts: &EvalOptions,
    extra: &[&dyn ModelFactory],
) -> Result<Report, Error> {
    let mut reports = sweep_traces(train, test, opts, extra, &[opts.threshold])?;
    Ok(reports.remove(0))
}

/// [`sweep`] on traces in memory.
pub fn sweep_traces(
    train: &[Trace],
    test: &[Trace],
    opts: &EvalOptions,
    extra: &[&dyn ModelFactory],
    thresholds: &[f32],
) -> Result<Vec<Report>, Error> {
    let (categories, rows) = sweep_rows(train, test, opts, extra, thresholds)?;
    let at = |threshold: f32| EvalOptions { threshold, ..*opts };
    Ok(thresholds
        .iter()
        .zip(rows)
        .map(|(&t, rows)| Report::build(&at(t), train.len(), &categories, rows))
        .collect())
}

/// [`sweep_traces`] over several splits of the same runs, pooled: every split's models are
/// trained on its own training runs and tested on its own test runs, and the reports count
/// all test runs of all splits (a run held out by two splits counts twice). One split's
/// ~20 test runs can be dominated by one argument set; many random splits are the fairer
/// test. The reports' training-run count is the splits' mean, and a note names the splits.
pub fn sweep_pooled(
    splits: &[split::Split],
    opts: &EvalOptions,
    thresholds: &[f32],
) -> Result<Vec<Report>, Error> {
    let mut categories = Vec::new();
    let mut pooled: Vec<Vec<(String, Vec<Tally>)>> = Vec::new();
    for s in splits {
        let (cats, rows) = sweep_rows(&s.train, &s.test, opts, &[], thresholds)?;
        categories.extend(cats);
        if pooled.is_empty() {
            pooled = rows;
            continue;
        }
        for (into, rows) in pooled.iter_mut().zip(rows) {
            for ((_, all), (_, more)) in into.iter_mut().zip(rows) {
                all.extend(more);
            }
        }
    }
    let train = splits.iter().map(|s| s.train.len()).sum::<usize>() / splits.len().max(1);
    let at = |threshold: f32| EvalOptions { threshold, ..*opts };
    Ok(thresholds
        .iter()
        .zip(pooled)
        .map(|(&t, rows)| {
            let mut report = Report::build(&at(t), train, &categories, rows);
            report.notes.push(format!(
                "pooled over {} splits; training runs are their mean",
                splits.len()
            ));
            report
        })
        .collect())
}

/// Per threshold, each model's tallies (one per test run), and the test runs' categories.
type SweepRows = (Vec<Category>, Vec<Vec<(String, Vec<Tally>)>>);

fn sweep_rows(
    train: &[Trace],
    test: &[Trace],
    opts: &EvalOptions,
    extra: &[&dyn ModelFactory],
    thresholds: &[f32],
) -> Result<SweepRows, Error> {
    if train.is_empty() || test.is_empty() || thresholds.is_empty() {
        return Err(Error::NothingToEvaluate(format!(
            "the evaluation needs training traces, test traces and a threshold (got {}, {} and {})",
            train.len(),
            test.len(),
            thresholds.len()
        )));
    }
    let (replay_cfg, markov_cfg) = (opts.replay, opts.markov);
    let replay = Builtin {
        name: "replay",
        make: move || Box::new(Replay::new(replay_cfg)) as Box<dyn Predictor>,
    };
    let markov = Builtin {
        name: "markov",
        make: move || Box::new(Markov::new(markov_cfg)) as Box<dyn Predictor>,
    };
    // The ensemble's replay counts its support (`ReplayConfig::as_member`); the replay row is
    // the baseline as the anchors run it.
    let member_replay = Builtin {
        name: "replay",
        make: move || Box::new(Replay::new(replay_cfg.as_member())) as Box<dyn Predictor>,
    };
    // A recorded run has no TOC: the chunks the runs read of each file stand in for the
    // image's layout, as they do for where chunks live (`Catalogue`).
    let layout = Arc::new(Layout::from_traces(train.iter().chain(test)));
    let continuation = Builtin {
        name: "continuation",
        make: move || {
            Box::new(Continuation::with_layout(Arc::clone(&layout))) as Box<dyn Predictor>
        },
    };
    let mut members: Vec<&dyn ModelFactory> = vec![&replay, &markov, &continuation];
    members.extend_from_slice(extra);
    let mut ensemble_members: Vec<&dyn ModelFactory> = vec![&member_replay, &markov, &continuation];
    ensemble_members.extend_from_slice(extra);
    let ensemble = EnsembleFactory {
        members: ensemble_members,
        config: opts.ensemble,
    };
    let mut learners = members;
    learners.push(&ensemble);

    let mut ordered: Vec<&Trace> = train.iter().collect();
    ordered.sort_by_key(|t| t.header.started_unix_ms);
    let catalogue = Catalogue::new(train.iter().chain(test));
    let mut in_order;
    let test = if opts.learn_test_runs {
        in_order = test.to_vec();
        in_order.sort_by_key(|t| t.header.started_unix_ms);
        &in_order[..]
    } else {
        test
    };
    let categories: Vec<Category> = test
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let learned_before = if opts.learn_test_runs {
                &test[..i]
            } else {
                &[]
            };
            Category::of(t, train.iter().chain(learned_before))
        })
        .collect();
    let at = |threshold: f32| EvalOptions { threshold, ..*opts };

    // rows[threshold] = (model, one tally per test run)
    let mut rows: Vec<Vec<(String, Vec<Tally>)>> = vec![Vec::new(); thresholds.len()];
    for (i, &t) in thresholds.iter().enumerate() {
        let none = baseline(test, &at(t), &catalogue, |_| Box::new(NoPrefetch));
        rows[i].push(("none".into(), none));
    }
    for factory in learners {
        let state = train_state(factory, &ordered)?;
        for (i, &t) in thresholds.iter().enumerate() {
            let tallies = evaluate(factory, &state, test, &at(t), &catalogue)?;
            rows[i].push((factory.name().to_owned(), tallies));
        }
    }
    for (i, &t) in thresholds.iter().enumerate() {
        let oracle = baseline(test, &at(t), &catalogue, |trace| {
            Box::new(Oracle::new(trace))
        });
        rows[i].push(("oracle".into(), oracle));
    }
    Ok((categories, rows))
}

/// Where chunks live: per layer digest, the chunks any loaded trace read from it, with sizes.
#[derive(Debug, Default)]
pub struct Catalogue {
    layers: BTreeMap<String, FastMap<ChunkId, u32>>,
}

impl Catalogue {
    /// The catalogue of every chunk the traces read.
    pub fn new<'a>(traces: impl Iterator<Item = &'a Trace>) -> Self {
        let mut layers: BTreeMap<String, FastMap<ChunkId, u32>> = BTreeMap::new();
        for t in traces {
            for c in &t.chunks {
                if let Some(layer) = t.header.layers.get(c.layer as usize) {
                    layers
                        .entry(layer.clone())
                        .or_default()
                        .insert(c.digest, c.size);
                }
            }
        }
        Catalogue { layers }
    }

    /// The chunks (with sizes) a run of `trace`'s image could fetch: those of its layers.
    pub fn fetchable(&self, trace: &Trace) -> FastMap<ChunkId, u32> {
        let mut out = FastMap::default();
        for layer in &trace.header.layers {
            if let Some(chunks) = self.layers.get(layer) {
                out.extend(chunks.iter().map(|(c, s)| (*c, *s)));
            }
        }
        out
    }
}

/// Trains a fresh model on `train`, oldest first, and returns its saved state.
fn train_state(factory: &dyn ModelFactory, train: &[&Trace]) -> Result<Vec<u8>, Error> {
    let mut model = factory.build()?;
    train.iter().for_each(|t| model.learn(t));
    model.save_state()
}

/// Replays each test trace against a fresh copy of the trained state, or, learning test runs,
/// all of them in order against one copy.
fn evaluate(
    factory: &dyn ModelFactory,
    state: &[u8],
    test: &[Trace],
    opts: &EvalOptions,
    catalogue: &Catalogue,
) -> Result<Vec<Tally>, Error> {
    if opts.learn_test_runs {
        let mut model = factory.build()?;
        model.load_state(state)?;
        let max = opts.max_predictions;
        return Ok(test
            .iter()
            .map(|trace| sim::simulate(model.as_mut(), trace, opts, catalogue, max))
            .collect());
    }
    test.iter()
        .map(|trace| {
            let mut fresh = factory.build()?;
            fresh.load_state(state)?;
            let max = opts.max_predictions;
            Ok(sim::simulate(fresh.as_mut(), trace, opts, catalogue, max))
        })
        .collect()
}

fn baseline(
    test: &[Trace],
    opts: &EvalOptions,
    catalogue: &Catalogue,
    make: impl Fn(&Trace) -> Box<dyn Predictor>,
) -> Vec<Tally> {
    test.iter()
        .map(|trace| sim::simulate(make(trace).as_mut(), trace, opts, catalogue, usize::MAX))
        .collect()
}

/// How a test run relates to the training set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Category {
    /// The training set had runs of this image with this workload key.
    SeenWorkload,
    /// The training set had the image, not the workload key.
    NewWorkload,
    /// The training set never ran this image.
    NewImage,
}

impl Category {
    /// The category of `test` given the runs learned before it.
    pub fn of<'a>(test: &Trace, learned: impl IntoIterator<Item = &'a Trace> + Clone) -> Self {
        let images: BTreeSet<&str> = learned
            .clone()
            .into_iter()
            .map(|t| t.header.image.as_str())
            .collect();
        if !images.contains(test.header.image.as_str()) {
            return Category::NewImage;
        }
        let same = |t: &Trace| {
            t.header.image == test.header.image && t.header.workload == test.header.workload
        };
        if learned.into_iter().any(same) {
            Category::SeenWorkload
        } else {
            Category::NewWorkload
        }
    }

    /// The label used in reports.
    pub fn label(self) -> &'static str {
        match self {
            Category::SeenWorkload => "seen image, seen workload",
            Category::NewWorkload => "seen image, new workload",
            Category::NewImage => "new image",
        }
    }
}
