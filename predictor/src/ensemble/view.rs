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

use super::agreement::Agreement;
use super::novelty::Calibrators;

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
}
