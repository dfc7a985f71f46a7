//! Calibration: turning a model's score into a probability that means what it says. Among all
//! the chunks given 0.7, about 70 % should be read.
//!
//! A [`Calibrator`] keeps reliability bins: for each of [`BINS`] equal-width bins of the raw
//! score, how many predictions fell in it and how many came true. The calibrated value of a bin
//! is its hit rate, smoothed toward the bin's centre by a prior worth [`PRIOR_WEIGHT`]
//! predictions (so a model is trusted as it is until evidence says otherwise), then made
//! non-decreasing by pool-adjacent-violators (isotonic regression), then interpolated between
//! bin centres. Counts are halved when a bin passes [`MAX_TRIALS`], so the map keeps adapting
//! to a changing workload. Its size is fixed (two numbers per bin).

use serde::{Deserialize, Serialize};

/// Bins of the raw score.
pub const BINS: usize = 20;
/// Pseudo-observations at the bin centre in each bin.
pub const PRIOR_WEIGHT: f64 = 4.0;
/// Trials per bin above which a bin's counts are halved.
pub const MAX_TRIALS: f64 = 20_000.0;

/// Reliability bins with an isotonic map.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Calibrator {
    hits: Vec<f64>,
    trials: Vec<f64>,
    #[serde(skip)]
    table: [f32; BINS],
}

impl Default for Calibrator {
    fn default() -> Self {
        let mut calibrator = Calibrator {
            hits: vec![0.0; BINS],
            trials: vec![0.0; BINS],
            table: [0.0; BINS],
        };
        calibrator.refresh();
        calibrator
    }
}

impl Calibrator {
    /// The bin of a raw score (NaN and out-of-range scores are clamped).
    pub fn bin(score: f32) -> usize {
        if score.is_nan() {
            return 0;
        }
        ((score.clamp(0.0, 1.0) * BINS as f32) as usize).min(BINS - 1)
    }

    /// Records whether a prediction whose raw score fell in `bin` came true.
    pub fn record(&mut self, bin: usize, hit: bool) {
        self.record_many(bin, hit, 1.0);
    }

    /// Records `count` predictions in `bin` with the same outcome.
    pub fn record_many(&mut self, bin: usize, hit: bool, count: f64) {
        let bin = bin.min(BINS - 1);
        let count = if count.is_finite() {
            count.max(0.0)
        } else {
            0.0
        };
        self.trials[bin] += count;
        if hit {
            self.hits[bin] += count;
        }
        while self.trials[bin] > MAX_TRIALS {
            self.trials[bin] /= 2.0;
            self.hits[bin] /= 2.0;
        }
        self.refresh();
    }

    /// Predictions recorded (after halving).
    pub fn trials(&self) -> f64 {
        self.trials.iter().sum()
    }

    /// One calibrator holding the outcomes of all of `parts`.
    pub fn sum(parts: &[Calibrator]) -> Calibrator {
        let mut sum = Calibrator::default();
        for part in parts {
            for bin in 0..BINS {
                sum.hits[bin] += part.hits.get(bin).copied().unwrap_or(0.0);
                sum.trials[bin] += part.trials.get(bin).copied().unwrap_or(0.0);
            }
        }
        sum.refresh();
        sum
    }

    /// Predictions recorded in one bin (after halving; 0 for a bin out of range).
    pub fn trials_at(&self, bin: usize) -> f64 {
        self.trials.get(bin).copied().unwrap_or(0.0)
    }

    /// The calibrated probability of a raw score.
    pub fn calibrate(&self, score: f32) -> f32 {
        if self.table[BINS - 1] == 0.0 {
            // Deserialised and not refreshed yet (a fitted table is never 0 at the top).
            return score.clamp(0.0, 1.0);
        }
        let x = (score.clamp(0.0, 1.0) * BINS as f32 - 0.5).clamp(0.0, (BINS - 1) as f32);
        let lo = x.floor() as usize;
        let hi = (lo + 1).min(BINS - 1);
        let frac = x - lo as f32;
        self.table[lo] * (1.0 - frac) + self.table[hi] * frac
    }

    /// Rebuilds the isotonic table (also after loading, where it is not saved).
    pub fn refresh(&mut self) {
        if self.hits.len() != BINS || self.trials.len() != BINS {
            // A damaged saved state: start over rather than index out of range.
            self.hits = vec![0.0; BINS];
            self.trials = vec![0.0; BINS];
        }
        let mut points = [(0.0f64, 0.0f64); BINS];
        for (i, point) in points.iter_mut().enumerate() {
            let centre = (i as f64 + 0.5) / BINS as f64;
            let trials = self.trials[i].max(0.0);
            let hits = self.hits[i].clamp(0.0, trials);
            let weight = trials + PRIOR_WEIGHT;
            *point = ((hits + PRIOR_WEIGHT * centre) / weight, weight);
        }
        let fitted = isotonic(points);
        for (cell, value) in self.table.iter_mut().zip(fitted) {
            *cell = value as f32;
        }
    }
}

/// Pool-adjacent-violators: the non-decreasing sequence closest (weighted least squares) to
/// the given `(value, weight)` pairs.
fn isotonic(points: [(f64, f64); BINS]) -> [f64; BINS] {
    // Blocks of pooled points (mean, weight, how many points), on the stack: this runs on
    // every recorded outcome.
    let mut blocks = [(0.0f64, 0.0f64, 0usize); BINS];
    let mut len = 0;
    for (value, weight) in points {
        blocks[len] = (value, weight, 1);
        len += 1;
        while len > 1 && blocks[len - 2].0 > blocks[len - 1].0 {
            let (v2, w2, n2) = blocks[len - 1];
            let (v1, w1, n1) = blocks[len - 2];
            let weight = w1 + w2;
            blocks[len - 2] = ((v1 * w1 + v2 * w2) / weight, weight, n1 + n2);
            len -= 1;
        }
    }
    let mut out = [0.0; BINS];
    let mut at = 0;
    for &(value, _, n) in &blocks[..len] {
        out[at..at + n].fill(value);
        at += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::Rng;

    /// Expected calibration error of `(probability, outcome)` pairs over ten bins.
    fn ece(pairs: &[(f32, bool)]) -> f64 {
        let mut bins = [(0.0f64, 0.0f64, 0.0f64); 10];
        for &(p, hit) in pairs {
            let b = ((p * 10.0) as usize).min(9);
            bins[b].0 += f64::from(p);
            bins[b].1 += f64::from(u8::from(hit));
            bins[b].2 += 1.0;
        }
        let n = pairs.len() as f64;
        bins.iter()
            .filter(|b| b.2 > 0.0)
            .map(|(p, h, c)| (p - h).abs() / c * (c / n))
            .sum()
    }

    #[test]
    fn an_overconfident_score_becomes_calibrated() {
        // The truth: a raw score s comes true with probability s² (the model is overconfident).
        let mut rng = Rng::new(7);
        let mut calibrator = Calibrator::default();
        for _ in 0..40_000 {
            let s = rng.unit();
            calibrator.record(Calibrator::bin(s), rng.unit() < s * s);
        }
        let (mut raw, mut calibrated) = (Vec::new(), Vec::new());
        for _ in 0..40_000 {
            let s = rng.unit();
            let hit = rng.unit() < s * s;
            raw.push((s, hit));
            calibrated.push((calibrator.calibrate(s), hit));
        }
        let (raw_ece, cal_ece) = (ece(&raw), ece(&calibrated));
        assert!(raw_ece > 0.12, "the raw score is miscalibrated: {raw_ece}");
        assert!(cal_ece < 0.02, "calibrated ECE {cal_ece}");
        // And the map is close to the truth where it has data.
        for s in [0.3f32, 0.5, 0.8] {
            assert!((calibrator.calibrate(s) - s * s).abs() < 0.05, "{s}");
        }
    }

    #[test]
    fn the_map_is_monotone_and_the_prior_trusts_a_new_model() {
        let fresh = Calibrator::default();
        assert!((fresh.calibrate(0.62) - 0.62).abs() < 1e-3);
        let mut calibrator = Calibrator::default();
        // Contradictory evidence: low scores come true more often than high ones.
        (0..500).for_each(|_| calibrator.record(Calibrator::bin(0.1), true));
        (0..500).for_each(|_| calibrator.record(Calibrator::bin(0.9), false));
        let values: Vec<f32> = (0..=100)
            .map(|i| calibrator.calibrate(i as f32 / 100.0))
            .collect();
        assert!(values.windows(2).all(|w| w[0] <= w[1] + 1e-6), "{values:?}");
        assert_eq!(Calibrator::bin(f32::NAN), 0);
        assert_eq!(Calibrator::bin(7.0), BINS - 1);
    }

    #[test]
    fn damaged_saved_bins_reset_instead_of_panicking() {
        let mut calibrator: Calibrator =
            serde_json::from_str(r#"{"hits":[1.0],"trials":[2.0,3.0]}"#).unwrap();
        calibrator.refresh();
        assert!((calibrator.calibrate(0.5) - 0.5).abs() < 0.05);
    }
}
