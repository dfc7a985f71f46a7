//! Stacking: how much to trust each member, learned from outcomes. A logistic regression over,
//! per member, two features of a chunk's forecast:
//!
//! - `logit(q)` of the member's calibrated probability, clipped to [0.01, 0.99]; a member that
//!   predicted other chunks but not this one says `q = 0.01` (its silence is a "no"), and a
//!   member that predicted nothing at all in this call says nothing (0: replay on an image it
//!   never saw must not veto the Markov model);
//! - `active`: 1 if the member predicted anything in this call;
//!
//! plus a bias. It starts as the mean of the members' logits and learns by online gradient
//! steps (with a little weight decay) on each resolved forecast, so it learns whom to trust. A
//! member's 0.5 stays neutral whatever it learned about that member's 0.99, which keeps it
//! sensible in situations training did not show. Its size is fixed (`2 × members + 1`
//! weights).

use serde::{Deserialize, Serialize};

/// Features per member.
const PER_MEMBER: usize = 2;
const LEARNING_RATE: f32 = 0.02;
const WEIGHT_DECAY: f32 = 1e-4;

/// A logistic combiner of member forecasts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stacker {
    weights: Vec<f32>,
}

/// One member's view of a chunk in one prediction call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Vote {
    /// Its calibrated probability, if it predicted the chunk.
    pub probability: Option<f32>,
    /// Whether it predicted anything in this call.
    pub active: bool,
}

fn logit(p: f32) -> f32 {
    let p = p.clamp(0.01, 0.99);
    (p / (1.0 - p)).ln()
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

impl Stacker {
    /// A combiner of `members` members that starts as the mean of their logits.
    pub fn new(members: usize) -> Self {
        let mut weights = vec![0.0; PER_MEMBER * members + 1];
        for m in 0..members {
            weights[PER_MEMBER * m] = 1.0 / members as f32;
        }
        Stacker { weights }
    }

    /// Whether it was made for `members` members (a saved state may not be).
    pub fn fits(&self, members: usize) -> bool {
        self.weights.len() == PER_MEMBER * members + 1 && self.weights.iter().all(|w| w.is_finite())
    }

    /// The features of one chunk's votes (one per member, in order).
    pub fn features(votes: &[Vote]) -> Vec<f32> {
        let mut x = Vec::with_capacity(PER_MEMBER * votes.len() + 1);
        for vote in votes {
            let said = match (vote.active, vote.probability) {
                (_, Some(q)) => logit(q),
                (true, None) => logit(0.0),
                (false, None) => 0.0,
            };
            x.push(said);
            x.push(if vote.active { 1.0 } else { 0.0 });
        }
        x.push(1.0);
        x
    }

    /// The combined probability of a chunk with features `x`.
    pub fn score(&self, x: &[f32]) -> f32 {
        let z: f32 = self.weights.iter().zip(x).map(|(w, x)| w * x).sum();
        sigmoid(z.clamp(-30.0, 30.0))
    }

    /// One gradient step toward the outcome of a forecast with features `x`.
    pub fn learn(&mut self, x: &[f32], hit: bool) {
        let error = f32::from(u8::from(hit)) - self.score(x);
        for (w, x) in self.weights.iter_mut().zip(x) {
            *w += LEARNING_RATE * (error * x - WEIGHT_DECAY * *w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::Rng;

    #[test]
    fn it_starts_as_the_mean_logit_and_learns_whose_silence_matters() {
        let stacker = Stacker::new(2);
        let both = Stacker::features(&[
            Vote {
                probability: Some(0.8),
                active: true,
            },
            Vote {
                probability: Some(0.8),
                active: true,
            },
        ]);
        assert!((stacker.score(&both) - 0.8).abs() < 1e-3);

        // Truth: a chunk is read iff member A predicts it; B's forecasts are noise.
        let mut stacker = Stacker::new(2);
        let mut rng = Rng::new(3);
        let sample = |rng: &mut Rng| {
            let a = rng.unit() < 0.5;
            let b = rng.unit() < 0.5;
            let votes = [
                Vote {
                    probability: a.then_some(0.7),
                    active: true,
                },
                Vote {
                    probability: b.then_some(0.7),
                    active: true,
                },
            ];
            (Stacker::features(&votes), a)
        };
        for _ in 0..20_000 {
            let (x, hit) = sample(&mut rng);
            stacker.learn(&x, hit);
        }
        let only_b = Stacker::features(&[
            Vote {
                probability: None,
                active: true,
            },
            Vote {
                probability: Some(0.7),
                active: true,
            },
        ]);
        let only_a = Stacker::features(&[
            Vote {
                probability: Some(0.7),
                active: true,
            },
            Vote {
                probability: None,
                active: true,
            },
        ]);
        assert!(stacker.score(&only_b) < 0.1, "{}", stacker.score(&only_b));
        assert!(stacker.score(&only_a) > 0.9, "{}", stacker.score(&only_a));
        assert!(stacker.fits(2) && !stacker.fits(3));
    }
}
