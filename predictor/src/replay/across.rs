//! Replay across images: which past runs a live run is compared with, and which of their
//! steps count.
//!
//! A run of an image with no past runs of its own borrows, during its start-up (its first
//! [`SIGNATURE_CHUNKS`] distinct chunks), the past runs of other images that share a layer
//! with it, and only their steps in the shared layers: what a program reads from a Debian base
//! layer as it starts (the loader, libc, the locale) is what any image built on that layer
//! reads first, while what it reads from its own layers says nothing about another image's.
//! A layer counts as shared when its digest is one of the live run's layers, or when the live
//! run has read a chunk that the past run read in it: a base image rebuilt elsewhere has
//! another digest for the same files. Past its start-up the live run has read enough for the
//! Markov model to carry what is shared chunk by chunk, and the other images' runs are other
//! programs as often as not: with replay across images at any point of a run the ensemble
//! wasted 99.9 MiB on the image never seen, against 41.9 without it (simulated,
//! docs/decisions/0030-replay-across-images-in-start-up.md).

use std::collections::BTreeMap;

use super::{LiveRun, PastRun, Step};
use crate::workload::SIGNATURE_CHUNKS;

/// A past run a live run is compared with, and the steps of it that count.
pub(super) struct Candidate<'a> {
    pub(super) run: &'a PastRun,
    /// Per layer of `run`, whether its steps count; `None`: all of them (a run of the same
    /// image).
    shared: Option<Vec<bool>>,
}

impl<'a> Candidate<'a> {
    /// A past run of the live run's own image: every step counts.
    pub(super) fn own(run: &'a PastRun) -> Self {
        Candidate { run, shared: None }
    }

    /// Whether `step` of the past run counts.
    pub(super) fn covers(&self, step: &Step) -> bool {
        self.shared
            .as_ref()
            .is_none_or(|shared| shared.get(step.layer as usize) == Some(&true))
    }
}

/// The past runs of other images that share a layer with `live`, while `live` is in its
/// start-up; none after it.
pub(super) fn candidates<'a>(
    images: &'a BTreeMap<String, Vec<PastRun>>,
    live: &LiveRun,
) -> Vec<Candidate<'a>> {
    if live.seen.len() >= SIGNATURE_CHUNKS {
        return Vec::new();
    }
    images
        .iter()
        .filter(|(image, _)| **image != live.image)
        .flat_map(|(_, runs)| runs)
        .filter_map(|run| {
            let shared = shared_layers(run, live)?;
            Some(Candidate {
                run,
                shared: Some(shared),
            })
        })
        .collect()
}

/// Per layer of `past`, whether `live` shares it (by digest, or by a chunk both read there);
/// `None` if it shares none.
fn shared_layers(past: &PastRun, live: &LiveRun) -> Option<Vec<bool>> {
    let mut shared: Vec<bool> = past
        .layers
        .iter()
        .map(|digest| live.layers.contains(digest))
        .collect();
    for chunk in &live.seen {
        let Some(&i) = past.index.get(chunk) else {
            continue;
        };
        let layer = past.steps[i as usize].layer as usize;
        if let Some(flag) = shared.get_mut(layer) {
            *flag = true;
        }
    }
    shared.contains(&true).then_some(shared)
}
