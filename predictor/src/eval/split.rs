//! Train/test splits that keep the test honest, all seeded and deterministic:
//!
//! - [`by_run`]: held-out runs of workloads the training set also has (the easy case);
//! - [`by_group`] / [`by_workload`]: whole groups of runs held out per image, so the test runs'
//!   group (workload key, or a label such as the arguments) never occurs in training: *same
//!   image, different arguments*. Keys often coincide for different arguments (a program
//!   starts the same way whatever its arguments), so group by a label that names the arguments
//!   when the traces have one;
//! - [`by_arguments`]: argument sets labelled `<program>/<name>` held out within each program
//!   of each image, so every tested program also ran in training with other arguments;
//! - [`by_program`]: whole programs held out (their every argument set): *a program the image
//!   holds but no training run started*;
//! - [`by_image`]: whole images held out: *never seen in training*.

use std::collections::BTreeMap;

use crate::synth::Rng;
use crate::trace::Trace;

/// Training and test traces.
#[derive(Debug, Clone, Default)]
pub struct Split {
    /// What the models learn.
    pub train: Vec<Trace>,
    /// What they are tested on.
    pub test: Vec<Trace>,
}

/// How many of `n` to hold out: `fraction` of them, at least one and at most `n - 1` (none if
/// `n < 2`).
fn holdout_count(n: usize, fraction: f32) -> usize {
    if n < 2 {
        return 0;
    }
    ((n as f32 * fraction.clamp(0.0, 1.0)).round() as usize).clamp(1, n - 1)
}

fn shuffle<T>(items: &mut [T], rng: &mut Rng) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i + 1));
    }
}

/// Within each group of `group_of` (ordered by key), holds out `fraction` of the members
/// chosen by `member_of`; members of a group are whole units (all their runs go one way).
fn hold_out(
    traces: Vec<Trace>,
    group_of: impl Fn(&Trace) -> String,
    member_of: impl Fn(&Trace) -> String,
    fraction: f32,
    seed: u64,
) -> Split {
    let mut rng = Rng::new(seed);
    let mut groups: BTreeMap<String, BTreeMap<String, Vec<Trace>>> = BTreeMap::new();
    for trace in traces {
        groups
            .entry(group_of(&trace))
            .or_default()
            .entry(member_of(&trace))
            .or_default()
            .push(trace);
    }
    let mut split = Split::default();
    for members in groups.into_values() {
        let mut members: Vec<Vec<Trace>> = members.into_values().collect();
        shuffle(&mut members, &mut rng);
        let held = holdout_count(members.len(), fraction);
        for (i, runs) in members.into_iter().enumerate() {
            if i < held {
                &mut split.test
            } else {
                &mut split.train
            }
            .extend(runs);
        }
    }
    split
}

/// Holds out `fraction` of the runs of each (image, workload), keeping at least one for
/// training.
pub fn by_run(traces: Vec<Trace>, fraction: f32, seed: u64) -> Split {
    let mut rng = Rng::new(seed);
    let mut groups: BTreeMap<(String, String), Vec<Trace>> = BTreeMap::new();
    for trace in traces {
        let key = (trace.header.image.clone(), trace.header.workload.clone());
        groups.entry(key).or_default().push(trace);
    }
    let mut split = Split::default();
    for mut runs in groups.into_values() {
        shuffle(&mut runs, &mut rng);
        let held = holdout_count(runs.len(), fraction);
        for (i, trace) in runs.into_iter().enumerate() {
            if i < held {
                &mut split.test
            } else {
                &mut split.train
            }
            .push(trace);
        }
    }
    split
}

/// Holds out, per image, `fraction` of the groups `group_of` names (at least one if the image
/// has two or more), with all their runs.
pub fn by_group(
    traces: Vec<Trace>,
    group_of: impl Fn(&Trace) -> String,
    fraction: f32,
    seed: u64,
) -> Split {
    hold_out(traces, |t| t.header.image.clone(), group_of, fraction, seed)
}

/// The program part of an argument label `<program>/<name>` (`""` if it has no `/`).
pub fn program_of(args: &str) -> &str {
    args.split_once('/').map_or("", |(program, _)| program)
}

/// Holds out, within each program of each image, `fraction` of its argument sets (at least
/// one if the program has two or more; a program with one set stays in training). `args_of`
/// names a run's argument set as `<program>/<name>`; sets without a `/` form one program per
/// image (then this is [`by_group`]).
pub fn by_arguments(
    traces: Vec<Trace>,
    args_of: impl Fn(&Trace) -> String,
    fraction: f32,
    seed: u64,
) -> Split {
    hold_out(
        traces,
        |t| format!("{}\n{}", t.header.image, program_of(&args_of(t))),
        &args_of,
        fraction,
        seed,
    )
}

/// Holds out, per image, `fraction` of its programs (the `<program>` of `args_of`'s
/// `<program>/<name>`), each with all its argument sets and runs.
pub fn by_program(
    traces: Vec<Trace>,
    args_of: impl Fn(&Trace) -> String,
    fraction: f32,
    seed: u64,
) -> Split {
    by_group(
        traces,
        |t| program_of(&args_of(t)).to_owned(),
        fraction,
        seed,
    )
}

/// [`by_group`] by workload key.
pub fn by_workload(traces: Vec<Trace>, fraction: f32, seed: u64) -> Split {
    by_group(traces, |t| t.header.workload.clone(), fraction, seed)
}

/// Holds out `fraction` of the images (at least one if there are two or more), with all
/// their runs.
pub fn by_image(traces: Vec<Trace>, fraction: f32, seed: u64) -> Split {
    hold_out(
        traces,
        |_| String::new(),
        |t| t.header.image.clone(),
        fraction,
        seed,
    )
}
