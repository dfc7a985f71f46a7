//! Agreement: which members were certain of a chunk, so that the combination is calibrated
//! on chunks like it.
//!
//! The combined score of two members is one number: replay certain alone and Markov certain
//! alone can both come out at 0.95, yet on held-out arguments the first is read 96 % of the
//! time and the second about half (Markov learned "make runs gcc" from the one make argument
//! set it saw). One calibrator per novelty class pools them, and what replay is sure of ends
//! up below a high threshold. So the combination also keeps calibrators per **pattern**: for
//! each member, whether its raw score was at least [`CERTAIN`], lower, or whether it predicted
//! nothing at all in that call (replay on an image it never saw: then Markov's certainty is all
//! there is). Two bits per member, the first four members.
//!
//! A pattern's calibration is blended with its class's pooled one by how many forecasts its
//! bin has seen (half each at [`PATTERN_PRIOR`]), so a pattern rarely seen says what the pool
//! says (docs/decisions/0026-replay-support-and-agreement-calibration.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::novelty::{self, Calibrators, Novelty};
use crate::calibration::Calibrator;

/// A member's raw score at or above which it counts as certain of a chunk.
pub const CERTAIN: f32 = 0.9;
/// Forecasts in a bin at which a pattern's own calibration weighs as much as the pool's.
pub const PATTERN_PRIOR: f32 = 50.0;
/// Members whose agreement is told apart (two bits each in a [`Pattern`]).
const MEMBERS_COUNTED: usize = 4;

/// What each member said of a chunk in one call: certain, or silent (members after the
/// fourth are not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(super) struct Pattern(u8);

impl Pattern {
    /// Notes member `i`'s raw score.
    pub(super) fn vote(&mut self, i: usize, raw: f32) {
        if i < MEMBERS_COUNTED && raw >= CERTAIN {
            self.0 |= 1 << (2 * i);
        }
    }

    /// Notes that member `i` predicted nothing in this call.
    pub(super) fn silent(&mut self, i: usize) {
        if i < MEMBERS_COUNTED {
            self.0 |= 2 << (2 * i);
        }
    }
}

/// The combination's calibrators per agreement pattern.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Agreement {
    patterns: BTreeMap<Pattern, Calibrators>,
}

impl Agreement {
    /// The calibrated probability of a combined `score` in `class` and `pattern`, given the
    /// `pooled` calibrators of all patterns; a pattern with little evidence leans on the pooled
    /// calibration or on `floor` if higher (a history-free member's own calibrated vote,
    /// decision 0031; 0 for none).
    pub(super) fn calibrate(
        &self,
        pooled: &Calibrators,
        class: Novelty,
        pattern: Pattern,
        score: f32,
        floor: f32,
    ) -> f32 {
        let pool = pooled.calibrate(class, score).max(floor);
        let Some(own) = self.patterns.get(&pattern) else {
            return pool;
        };
        let seen = own.trials_at(class, Calibrator::bin(score));
        novelty::lean(own.calibrate_own(class, score), pool, seen, PATTERN_PRIOR)
    }

    /// Records outcomes: `(pattern, code)` pairs ([`Novelty::code`]) that all came out `hit`.
    pub(super) fn record(&mut self, answers: impl IntoIterator<Item = (Pattern, u8)>, hit: bool) {
        let mut codes: BTreeMap<Pattern, Vec<u8>> = BTreeMap::new();
        for (pattern, code) in answers {
            codes.entry(pattern).or_default().push(code);
        }
        for (pattern, codes) in codes {
            self.patterns
                .entry(pattern)
                .or_default()
                .record_codes(&codes, hit);
        }
    }

    /// Rebuilds the maps after loading (they are not saved).
    pub(super) fn refresh(&mut self) {
        self.patterns.values_mut().for_each(Calibrators::refresh);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `hits` of 100 forecasts at `score` in `class` and `pattern` were read, recorded in the
    /// pattern's calibrators and the pool.
    fn record(
        agreement: &mut Agreement,
        pooled: &mut Calibrators,
        (class, pattern, score, hits): (Novelty, Pattern, f32, u32),
    ) {
        let code = class.code(Calibrator::bin(score));
        agreement.record((0..hits).map(|_| (pattern, code)), true);
        agreement.record((hits..100).map(|_| (pattern, code)), false);
        let bin = Calibrator::bin(score);
        pooled.record_many(class as usize, bin, true, f64::from(hits));
        pooled.record_many(class as usize, bin, false, f64::from(100 - hits));
    }

    #[test]
    fn a_pattern_learns_its_own_rate_and_a_rare_one_follows_the_pool() {
        let (mut pooled, mut agreement) = (Calibrators::default(), Agreement::default());
        let class = Novelty::New;
        let (mut sure, mut unsure) = (Pattern::default(), Pattern::default());
        sure.vote(0, 0.95);
        unsure.vote(1, 0.99);
        unsure.vote(0, 0.5);
        assert_ne!(sure, unsure);
        // At 0.97 the first member alone is right 96 times in 100, the second alone 50.
        for (pattern, hits) in [(sure, 96), (unsure, 50)] {
            record(&mut agreement, &mut pooled, (class, pattern, 0.97, hits));
        }
        let pool = pooled.calibrate(class, 0.97);
        let sure_p = agreement.calibrate(&pooled, class, sure, 0.97, 0.0);
        let unsure_p = agreement.calibrate(&pooled, class, unsure, 0.97, 0.0);
        assert!(sure_p > 0.85 && sure_p > pool, "{sure_p} vs pool {pool}");
        assert!(
            unsure_p < 0.65 && unsure_p < pool,
            "{unsure_p} vs pool {pool}"
        );
        // A pattern never seen is the pool's answer; silence is a pattern of its own.
        let mut both = sure;
        both.vote(1, 0.9);
        assert_eq!(agreement.calibrate(&pooled, class, both, 0.97, 0.0), pool);
        let mut alone = Pattern::default();
        alone.vote(1, 0.99);
        alone.silent(0);
        assert_ne!(alone, unsure);
        assert_eq!(agreement.calibrate(&pooled, class, alone, 0.97, 0.0), pool);
    }

    #[test]
    fn a_pattern_seen_in_one_class_says_nothing_in_another() {
        let (mut pooled, mut agreement) = (Calibrators::default(), Agreement::default());
        let mut sure = Pattern::default();
        sure.vote(0, 1.0);
        record(&mut agreement, &mut pooled, (Novelty::New, sure, 0.97, 96));
        record(
            &mut agreement,
            &mut pooled,
            (Novelty::Known, Pattern::default(), 0.97, 40),
        );
        // The Known bin has seen none of `sure`'s forecasts: the pool answers.
        assert_eq!(
            agreement.calibrate(&pooled, Novelty::Known, sure, 0.97, 0.0),
            pooled.calibrate(Novelty::Known, 0.97)
        );
    }
}
