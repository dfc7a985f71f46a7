//! Views: the combination as it would answer with some members absent.
//!
//! A member may say nothing at all about a whole run: the LSTM about an image it was not
//! trained on ([`crate::Predictor::abstains_on`]). The combination's calibrators (per novelty
//! class and agreement pattern) learned from runs in which it spoke are then the wrong
//! reference: its voice raised the combined scores they learned, and on a run without it the
//! same score means less. Measured: with the LSTM calibrated by its folds on one image and
//! silent on another, the ensemble wasted 97 MiB where replay and Markov alone wasted 42.
//!
//! So the ensemble keeps a second set of combination calibrators, the view **without** the
//! members that may abstain ([`crate::Predictor::may_abstain`]): in every run, besides its own
//! answers, it works out what it would have answered without them (their votes dropped, their
//! place in the agreement pattern silent), ranks and notes those answers the same way, and
//! scores them against what the run read. A run in which those members abstain is answered
//! from that view. In runs where every member speaks nothing changes.

use serde::{Deserialize, Serialize};

use super::agreement::{Agreement, Pattern};
use super::novelty::Calibrators;
use crate::chunk::{ChunkId, FastMap};
use crate::model::Prediction;

/// Members a [`View`] leaves out, one bit per member (the first eight).
pub(super) type Absent = u8;

/// The bit of member `i` (none beyond the eighth).
pub(super) fn bit(i: usize) -> Absent {
    if i < 8 { 1 << i } else { 0 }
}

/// The combination's calibrators for one set of absent members (none: the full combination,
/// which answers every run its abstainers speak in).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct View {
    /// The members it leaves out.
    pub absent: Absent,
    /// Calibrators of the combined score, per novelty class.
    pub combined: Calibrators,
    /// Per agreement pattern.
    pub agreement: Agreement,
}

impl View {
    /// A view without `absent`, nothing learned.
    pub(super) fn without(absent: Absent) -> Self {
        View {
            absent,
            ..View::default()
        }
    }

    /// Rebuilds the calibrators' maps after loading (they are not saved).
    pub(super) fn refresh(&mut self) {
        self.combined.refresh();
        self.agreement.refresh();
    }

    /// Scores answers of this view that all came out `hit`.
    pub(super) fn record(&mut self, answers: &[Answer], hit: bool) {
        let codes: Vec<u8> = answers.iter().map(|a| a.code).collect();
        self.combined.record_codes(&codes, hit);
        self.agreement
            .record(answers.iter().map(|a| (a.pattern, a.code)), hit);
    }
}

/// One answer a view gave for a chunk: the code of its combined score
/// ([`super::novelty::Novelty::code`]), which members were certain or silent, and the
/// stacker's features.
#[derive(Debug)]
pub(super) struct Answer {
    pub code: u8,
    pub pattern: Pattern,
    pub features: Vec<f32>,
}

/// A run's answers of one view that its reads have not scored yet: chunk → one per code.
#[derive(Debug, Default)]
pub(super) struct Noted(FastMap<ChunkId, Vec<Answer>>);

impl Noted {
    /// Notes the answers behind `out` (the ones returned or, for a view not answering, that
    /// would have been); at most `cap` chunks per run.
    pub(super) fn keep(
        &mut self,
        out: &[Prediction],
        mut why: FastMap<ChunkId, Answer>,
        cap: usize,
    ) {
        for p in out {
            let Some(answer) = why.remove(&p.chunk) else {
                continue;
            };
            if self.0.len() >= cap && !self.0.contains_key(&p.chunk) {
                continue;
            }
            let kept = self.0.entry(p.chunk).or_default();
            if !kept.iter().any(|a| a.code == answer.code) {
                kept.push(answer);
            }
        }
    }

    /// The answers of `chunk` (of every chunk, in chunk order, at the end), taken out.
    pub(super) fn take(&mut self, chunk: Option<ChunkId>) -> Vec<Answer> {
        match chunk {
            Some(c) => self.0.remove(&c).unwrap_or_default(),
            None => {
                let mut all: Vec<_> = std::mem::take(&mut self.0).into_iter().collect();
                all.sort_by_key(|(c, _)| *c);
                all.into_iter().flat_map(|(_, a)| a).collect()
            }
        }
    }
}
