//! Replays a pull log against a [`PullPredictor`] in simulated time, as the daemon's warmer
//! would use it.
//!
//! Before each pull is revealed, the model is asked for its ranking: the pull is a top-1 or
//! top-3 hit if its image is there. Between pulls the model is also asked every `tick` (the
//! warmer runs while the network is idle); the *warm set* is its top `warm_k` predictions at
//! or above `min_probability`. An image entering the warm set is a *warm-up*; it is useful if
//! the image is pulled within `horizon`, else *wasted*. The *lead time* of a pull whose image
//! was warm is how long it had been in the warm set without a break. A model sees each pull
//! only after it was scored, so nothing is learned from the future.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::baselines::{MostFrequent, MostRecent, NoPrediction};
use super::{DeployConfig, DeployModel, PullEvent, PullPredictor, normalize};

/// How the replay asks and counts.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalConfig {
    /// Time between two questions while no pull happens.
    pub tick: Duration,
    /// Images warmed at most at once.
    pub warm_k: usize,
    /// Predictions below this probability are not warmed.
    pub min_probability: f32,
    /// A warm-up not followed by a pull of its image within this time is wasted.
    pub horizon: Duration,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            tick: Duration::from_secs(60),
            warm_k: 3,
            min_probability: 0.0,
            horizon: Duration::from_secs(15 * 60),
        }
    }
}

/// What one model achieved on one log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalRow {
    /// The model's name.
    pub model: String,
    /// Pulls scored.
    pub pulls: u64,
    /// Share of pulls whose image was the top prediction.
    pub top1: f64,
    /// Share of pulls whose image was among the top 3.
    pub top3: f64,
    /// Share of pulls whose image was in the warm set.
    pub warm_hits: f64,
    /// Mean lead time of warm hits, seconds.
    pub mean_lead_secs: f64,
    /// Warm-ups made.
    pub warmups: u64,
    /// Warm-ups whose image was not pulled within the horizon.
    pub wasted: u64,
}

/// The model under test and the baselines, on one log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// Pulls in the log.
    pub pulls: u64,
    /// Distinct images (normalised).
    pub images: u64,
    /// One row per model, the model under test first.
    pub rows: Vec<EvalRow>,
}

/// Replays `log` against [`DeployModel`] (with `model_cfg`) and every baseline.
pub fn evaluate_all(log: &[PullEvent], model_cfg: &DeployConfig, cfg: &EvalConfig) -> EvalReport {
    let mut models: Vec<Box<dyn PullPredictor>> = vec![
        Box::new(DeployModel::new(model_cfg.clone())),
        Box::new(MostRecent::default()),
        Box::new(MostFrequent::default()),
        Box::new(NoPrediction),
    ];
    let rows = models
        .iter_mut()
        .map(|m| evaluate(m.as_mut(), log, cfg))
        .collect();
    let mut images: Vec<String> = log.iter().map(|e| normalize(&e.image)).collect();
    images.sort();
    images.dedup();
    EvalReport {
        pulls: log.len() as u64,
        images: images.len() as u64,
        rows,
    }
}

/// The warm set's bookkeeping during a replay.
#[derive(Debug, Default)]
struct Warm {
    /// Image → when it entered the warm set (unbroken presence).
    since: BTreeMap<String, u64>,
    /// Image → when its pending warm-up was made.
    pending: BTreeMap<String, u64>,
    warmups: u64,
    wasted: u64,
}

impl Warm {
    fn update(&mut self, now: u64, set: &[String], horizon: u64) {
        let before = self.pending.len();
        self.pending.retain(|_, w| now <= *w + horizon);
        self.wasted += (before - self.pending.len()) as u64;
        self.since.retain(|image, _| set.contains(image));
        for image in set {
            self.since.entry(image.clone()).or_insert(now);
            if !self.pending.contains_key(image) {
                self.pending.insert(image.clone(), now);
                self.warmups += 1;
            }
        }
    }

    /// A pull of `image` at `now`: its lead time if it was warm.
    fn pulled(&mut self, image: &str, now: u64) -> Option<u64> {
        self.pending.remove(image);
        self.since.remove(image).map(|s| now - s)
    }
}

/// Replays `log` against `model` (see the module docs).
pub fn evaluate(model: &mut dyn PullPredictor, log: &[PullEvent], cfg: &EvalConfig) -> EvalRow {
    let tick = (cfg.tick.as_millis() as u64).max(1);
    let horizon = cfg.horizon.as_millis() as u64;
    let k = cfg.warm_k.max(3);
    let mut warm = Warm::default();
    let (mut top1, mut top3, mut warm_hits, mut lead_sum) = (0u64, 0u64, 0u64, 0u64);
    let mut clock = log.first().map_or(0, |e| e.t_unix_ms);
    let warm_set = |model: &dyn PullPredictor, now: u64| -> Vec<String> {
        model
            .predict(now, cfg.warm_k)
            .into_iter()
            .filter(|p| p.probability >= cfg.min_probability && p.probability > 0.0)
            .map(|p| p.image)
            .collect()
    };
    for event in log {
        while clock + tick < event.t_unix_ms {
            clock += tick;
            warm.update(clock, &warm_set(model, clock), horizon);
        }
        let now = event.t_unix_ms;
        let image = normalize(&event.image);
        let ranked = model.predict(now, k);
        top1 += u64::from(ranked.first().is_some_and(|p| p.image == image));
        top3 += u64::from(ranked.iter().take(3).any(|p| p.image == image));
        warm.update(now, &warm_set(model, now), horizon);
        if let Some(lead) = warm.pulled(&image, now) {
            warm_hits += 1;
            lead_sum += lead;
        }
        model.observe(event);
        clock = now;
    }
    let wasted = warm.wasted + warm.pending.len() as u64;
    let n = log.len().max(1) as f64;
    EvalRow {
        model: model.name().to_owned(),
        pulls: log.len() as u64,
        top1: top1 as f64 / n,
        top3: top3 as f64 / n,
        warm_hits: warm_hits as f64 / n,
        mean_lead_secs: if warm_hits == 0 {
            0.0
        } else {
            lead_sum as f64 / warm_hits as f64 / 1000.0
        },
        warmups: warm.warmups,
        wasted,
    }
}

impl EvalReport {
    /// A plain-text table.
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "{} pulls of {} images\n{:<14} {:>6} {:>6} {:>9} {:>9} {:>8} {:>7}\n",
            self.pulls,
            self.images,
            "model",
            "top-1",
            "top-3",
            "warm-hit",
            "lead (s)",
            "warm-ups",
            "wasted"
        );
        for r in &self.rows {
            out.push_str(&format!(
                "{:<14} {:>6.3} {:>6.3} {:>9.3} {:>9.0} {:>8} {:>7}\n",
                r.model, r.top1, r.top3, r.warm_hits, r.mean_lead_secs, r.warmups, r.wasted
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::synth::{SynthConfig, pull_log};
    use super::*;

    #[test]
    fn the_model_beats_every_baseline_on_a_seeded_synthetic_log() {
        for seed in [1, 2, 3] {
            let log = pull_log(&SynthConfig {
                seed,
                ..SynthConfig::default()
            });
            let report = evaluate_all(&log, &DeployConfig::default(), &EvalConfig::default());
            let model = &report.rows[0];
            assert_eq!(model.model, "deploy-model");
            for baseline in &report.rows[1..] {
                assert!(
                    model.top3 > baseline.top3 && model.top1 > baseline.top1,
                    "seed {seed}:\n{}",
                    report.to_table()
                );
            }
            let none = report.rows.last().unwrap();
            assert_eq!((none.top3, none.warmups), (0.0, 0));
        }
    }

    #[test]
    fn a_warm_up_never_pulled_is_wasted_and_a_pulled_one_has_its_lead_time() {
        let mut warm = Warm::default();
        warm.update(0, &["a".into(), "b".into()], 100);
        warm.update(50, &["a".into()], 100);
        assert_eq!(warm.pulled("a", 80), Some(80));
        warm.update(200, &[], 100);
        assert_eq!((warm.warmups, warm.wasted), (2, 1), "b expired unpulled");
    }
}
