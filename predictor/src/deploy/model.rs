//! [`DeployModel`]: three small, explainable estimates of which image the node pulls next,
//! combined by noisy-or.
//!
//! - **Transitions** (first order): image B was pulled within `transition_window` after A, so
//!   after A it is likely again. Share of A's decayed successor counts, shrunk toward zero
//!   while evidence is thin; expected in: the edge's mean delay minus the time since A.
//! - **Periodicity**: the median of an image's last inter-arrival times and their median
//!   absolute deviation. Regular images (cron jobs, daily batches) are predicted when due
//!   within the horizon; an image long overdue is not (the job was stopped).
//! - **Popularity**: each image's share of exponentially decayed pull counts, a weak prior.
//!
//! All counts decay with one half-life, lazily (each value is stored with the time it was
//! last brought up to date). State is bounded: at most `max_images` images (the least popular
//! goes) and `max_successors` edges per image.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ImagePrediction, PullEvent, PullPredictor, Reason, normalize};
use crate::error::Error;
use crate::model::{decode_state, encode_state, read_state_file, write_state_file};

/// The saved state's format version.
const STATE_VERSION: u32 = 1;
/// The model's name in saved state.
const NAME: &str = "deploy";
/// Inter-arrival times kept per image.
const GAPS_KEPT: usize = 8;
/// Gaps needed before an image counts as periodic.
const MIN_GAPS: usize = 3;
/// Weight of the popularity prior in the noisy-or.
const POPULARITY_WEIGHT: f64 = 0.5;
/// Pseudo-count that shrinks a transition's share while its source has little evidence.
const TRANSITION_SHRINK: f64 = 1.0;

/// The model's knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployConfig {
    /// Half-life of every count.
    pub half_life: Duration,
    /// B counts as following A only if pulled within this time after A.
    pub transition_window: Duration,
    /// How far ahead predictions look (periodic images due later are not predicted).
    pub horizon: Duration,
    /// A pull of the same image within this time of its last pull is the same pull.
    pub min_gap: Duration,
    /// Images tracked at most.
    pub max_images: usize,
    /// Successors kept per image.
    pub max_successors: usize,
}

impl Default for DeployConfig {
    fn default() -> Self {
        DeployConfig {
            half_life: Duration::from_secs(24 * 3600),
            transition_window: Duration::from_secs(30 * 60),
            horizon: Duration::from_secs(15 * 60),
            min_gap: Duration::from_secs(60),
            max_images: 4096,
            max_successors: 16,
        }
    }
}

/// A count that decays with the model's half-life.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Decayed {
    value: f64,
    at_ms: u64,
}

impl Decayed {
    fn at(&self, now_ms: u64, half_life_ms: f64) -> f64 {
        let dt = now_ms.saturating_sub(self.at_ms) as f64;
        self.value * (-dt / half_life_ms).exp2()
    }

    fn add(&mut self, now_ms: u64, half_life_ms: f64, amount: f64) {
        self.value = self.at(now_ms, half_life_ms) + amount;
        self.at_ms = now_ms.max(self.at_ms);
    }
}

/// What the model knows of one image.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ImageStats {
    pulls: Decayed,
    last_ms: u64,
    /// The latest inter-arrival times, oldest first.
    gaps_ms: Vec<u64>,
    /// Successor → (decayed count, mean delay in ms).
    next: BTreeMap<String, (Decayed, f64)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    images: BTreeMap<String, ImageStats>,
    last: Option<(String, u64)>,
}

/// The online model of the node's pull sequence (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct DeployModel {
    cfg: DeployConfig,
    state: State,
}

impl DeployModel {
    /// An empty model.
    pub fn new(cfg: DeployConfig) -> Self {
        DeployModel {
            cfg,
            state: State::default(),
        }
    }

    /// Images it knows.
    pub fn images(&self) -> usize {
        self.state.images.len()
    }

    /// The learned state, versioned (see [`crate::model::encode_state`]).
    pub fn save_state(&self) -> Result<Vec<u8>, Error> {
        encode_state(NAME, STATE_VERSION, &self.state)
    }

    /// Replaces the learned state with saved state.
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.state = decode_state(NAME, STATE_VERSION, bytes)?;
        Ok(())
    }

    /// Saves the state to `path` (gzip, atomic).
    pub fn save_to_file(&self, path: &Path) -> Result<(), Error> {
        write_state_file(&self.save_state()?, path)
    }

    /// Loads state saved by [`DeployModel::save_to_file`].
    pub fn load_from_file(&mut self, path: &Path) -> Result<(), Error> {
        self.load_state(&read_state_file(path)?)
    }

    fn half_life_ms(&self) -> f64 {
        (self.cfg.half_life.as_millis() as f64).max(1.0)
    }

    fn learn_transition(&mut self, image: &str, now: u64) {
        let Some((prev, prev_t)) = self.state.last.clone() else {
            return;
        };
        let delay = now.saturating_sub(prev_t);
        if prev == image || delay > self.cfg.transition_window.as_millis() as u64 {
            return;
        }
        let (hl, max) = (self.half_life_ms(), self.cfg.max_successors);
        let Some(stats) = self.state.images.get_mut(&prev) else {
            return;
        };
        let edge = stats.next.entry(image.to_owned()).or_default();
        let n = edge.0.at(now, hl);
        edge.1 = if n <= 0.0 {
            delay as f64
        } else {
            (edge.1 * n + delay as f64) / (n + 1.0)
        };
        edge.0.add(now, hl, 1.0);
        if stats.next.len() > max {
            let weakest = stats
                .next
                .iter()
                .min_by(|a, b| a.1.0.at(now, hl).total_cmp(&b.1.0.at(now, hl)))
                .map(|(k, _)| k.clone());
            if let Some(k) = weakest {
                stats.next.remove(&k);
            }
        }
    }

    fn evict(&mut self, now: u64) {
        let hl = self.half_life_ms();
        while self.state.images.len() > self.cfg.max_images {
            let last = self.state.last.as_ref().map(|l| l.0.clone());
            let weakest = self
                .state
                .images
                .iter()
                .filter(|(k, _)| Some(*k) != last.as_ref())
                .min_by(|a, b| a.1.pulls.at(now, hl).total_cmp(&b.1.pulls.at(now, hl)))
                .map(|(k, _)| k.clone());
            match weakest {
                Some(k) => {
                    self.state.images.remove(&k);
                }
                None => break,
            }
        }
    }

    /// The probability and expected time of the periodic component for `s` at `now`.
    fn periodic(&self, s: &ImageStats, now: u64) -> Option<(f64, u64)> {
        if s.gaps_ms.len() < MIN_GAPS {
            return None;
        }
        let median = median(&s.gaps_ms);
        let deviations: Vec<u64> = s.gaps_ms.iter().map(|g| g.abs_diff(median)).collect();
        let mad = median_f(&deviations);
        let regular = (1.0 - 2.0 * mad / median as f64).clamp(0.0, 1.0);
        let n = s.gaps_ms.len() as f64;
        let due = s.last_ms + median;
        let tolerance = (3.0 * mad).max(0.05 * median as f64).max(60_000.0) as u64;
        let horizon = self.cfg.horizon.as_millis() as u64;
        if now > due + 2 * tolerance {
            return None; // Missed: the job stopped or moved.
        }
        let due_in = due.saturating_sub(now);
        if due_in > horizon.max(tolerance) {
            return None;
        }
        let far = due_in.saturating_sub(tolerance) as f64 / horizon.max(1) as f64;
        let closeness = 1.0 - 0.7 * far.clamp(0.0, 1.0);
        Some((regular * n / (n + 1.0) * closeness, due_in))
    }

    /// The transition component: successors of the last pull, with their expected delays.
    fn transitions(&self, now: u64) -> BTreeMap<&str, (f64, u64)> {
        let mut out = BTreeMap::new();
        let Some((last, last_t)) = &self.state.last else {
            return out;
        };
        let Some(stats) = self.state.images.get(last) else {
            return out;
        };
        let (hl, window) = (
            self.half_life_ms(),
            self.cfg.transition_window.as_millis() as f64,
        );
        let elapsed = now.saturating_sub(*last_t) as f64;
        let total: f64 = stats.next.values().map(|e| e.0.at(now, hl)).sum();
        for (image, (count, delay)) in &stats.next {
            // Full weight until well past the usual delay, then fading out by the window's end.
            let start = (2.0 * delay + 60_000.0).min(window);
            let fade = if elapsed <= start {
                1.0
            } else {
                (1.0 - (elapsed - start) / (window - start).max(1.0)).max(0.0)
            };
            let p = count.at(now, hl) / (total + TRANSITION_SHRINK) * fade;
            let expected = (delay - elapsed).max(0.0) as u64;
            out.insert(image.as_str(), (p, expected));
        }
        out
    }
}

impl PullPredictor for DeployModel {
    fn name(&self) -> &str {
        "deploy-model"
    }

    fn observe(&mut self, pull: &PullEvent) {
        let image = normalize(&pull.image);
        let now = pull.t_unix_ms;
        let min_gap = self.cfg.min_gap.as_millis() as u64;
        if let Some(s) = self.state.images.get(&image)
            && now.saturating_sub(s.last_ms) < min_gap
            && s.pulls.value > 0.0
        {
            return; // The same pull, seen again.
        }
        self.learn_transition(&image, now);
        let hl = self.half_life_ms();
        let stats = self.state.images.entry(image.clone()).or_default();
        if stats.pulls.value > 0.0 {
            stats.gaps_ms.push(now.saturating_sub(stats.last_ms));
            if stats.gaps_ms.len() > GAPS_KEPT {
                stats.gaps_ms.remove(0);
            }
        }
        stats.pulls.add(now, hl, 1.0);
        stats.last_ms = now;
        self.state.last = Some((image, now));
        self.evict(now);
    }

    fn predict(&self, now: u64, max: usize) -> Vec<ImagePrediction> {
        let hl = self.half_life_ms();
        let total: f64 = self
            .state
            .images
            .values()
            .map(|s| s.pulls.at(now, hl))
            .sum();
        let transitions = self.transitions(now);
        let last = self.state.last.as_ref().map(|l| l.0.as_str());
        let horizon = self.cfg.horizon.as_millis() as u64;
        let mut out: Vec<ImagePrediction> = Vec::new();
        for (image, s) in &self.state.images {
            if Some(image.as_str()) == last {
                continue; // Just pulled: it is on the node.
            }
            let popular = POPULARITY_WEIGHT * s.pulls.at(now, hl) / total.max(1e-9);
            let typical = if s.gaps_ms.is_empty() {
                horizon
            } else {
                median(&s.gaps_ms)
            };
            let mut parts = vec![(popular, typical, Reason::Popular)];
            if let Some((p, due_in)) = self.periodic(s, now) {
                parts.push((p, due_in, Reason::Periodic));
            }
            if let Some((p, expected)) = transitions.get(image.as_str()) {
                parts.push((*p, *expected, Reason::Follows));
            }
            let miss: f64 = parts.iter().map(|(p, _, _)| 1.0 - p).product();
            let (_, expected, reason) = parts
                .iter()
                .copied()
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .unwrap_or((0.0, horizon, Reason::Popular));
            out.push(ImagePrediction {
                image: image.clone(),
                probability: (1.0 - miss) as f32,
                expected_in: Duration::from_millis(expected),
                reason,
            });
        }
        out.sort_by(|a, b| {
            b.probability
                .total_cmp(&a.probability)
                .then(a.expected_in.cmp(&b.expected_in))
                .then_with(|| a.image.cmp(&b.image))
        });
        out.truncate(max);
        out
    }
}

fn median(values: &[u64]) -> u64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    v[v.len() / 2]
}

fn median_f(values: &[u64]) -> f64 {
    median(values) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn pull(model: &mut DeployModel, t: u64, image: &str) {
        model.observe(&PullEvent {
            t_unix_ms: t,
            image: image.into(),
        });
    }

    fn top(model: &DeployModel, t: u64) -> ImagePrediction {
        model.predict(t, 1).pop().expect("a prediction")
    }

    #[test]
    fn a_pipeline_predicts_its_next_step_with_its_usual_delay() {
        let mut m = DeployModel::new(DeployConfig::default());
        for round in 0..5 {
            let t = round * 120 * MIN;
            pull(&mut m, t, "reg.example/a:1");
            pull(&mut m, t + 2 * MIN, "reg.example/b:1");
            pull(&mut m, t + 5 * MIN, "reg.example/c:1");
        }
        let t = 5 * 120 * MIN;
        pull(&mut m, t, "reg.example/a:1");
        let p = top(&m, t + 1000);
        assert_eq!(p.image, "reg.example/b:1");
        assert_eq!(p.reason, Reason::Follows);
        assert!(p.probability > 0.7, "{p:?}");
        let expected = p.expected_in.as_millis() as u64;
        assert!((MIN..=2 * MIN).contains(&expected), "{p:?}");
        pull(&mut m, t + 2 * MIN, "reg.example/b:1");
        assert_eq!(top(&m, t + 2 * MIN + 1000).image, "reg.example/c:1");
    }

    #[test]
    fn b_after_a_is_learned_from_pulls_seconds_apart() {
        let cfg = DeployConfig {
            min_gap: Duration::ZERO,
            ..DeployConfig::default()
        };
        let mut m = DeployModel::new(cfg);
        for (i, image) in ["a", "b", "a", "b", "a", "b", "a"].iter().enumerate() {
            pull(&mut m, 1_000_000 + i as u64 * 400, image);
        }
        let p = top(&m, 1_000_000 + 7 * 400);
        assert_eq!(p.image, "docker.io/library/b:latest");
        assert!(p.probability >= 0.7, "{p:?}");
    }

    #[test]
    fn an_hourly_job_is_predicted_when_due_and_forgotten_when_it_stops() {
        let cfg = DeployConfig::default();
        let mut m = DeployModel::new(cfg.clone());
        for h in 0..6 {
            pull(&mut m, h * 60 * MIN + (h % 2) * 1000, "reg.example/cron:1");
            pull(&mut m, h * 60 * MIN + 17 * MIN, "noise/x:1");
        }
        // 55 minutes after the last run: due in 5 minutes, within the horizon.
        let t = 5 * 60 * MIN + 55 * MIN;
        let p = top(&m, t);
        assert_eq!(
            (p.image.as_str(), p.reason),
            ("reg.example/cron:1", Reason::Periodic)
        );
        assert!(p.probability > 0.5, "{p:?}");
        let due = p.expected_in.as_millis() as u64;
        assert!((4 * MIN..=6 * MIN).contains(&due), "{p:?}");
        // Right after a run, the next one is an hour away: not predicted as periodic.
        let p = m.predict(5 * 60 * MIN + 20 * MIN, 5);
        let job = p.iter().find(|p| p.image == "reg.example/cron:1").unwrap();
        assert_eq!(job.reason, Reason::Popular);
        // Three hours late: the job stopped.
        let late = m.predict(5 * 60 * MIN + 4 * 60 * MIN, 5);
        let job = late
            .iter()
            .find(|p| p.image == "reg.example/cron:1")
            .unwrap();
        assert_ne!(job.reason, Reason::Periodic);
    }

    #[test]
    fn popularity_decays_so_recent_favourites_win() {
        let cfg = DeployConfig {
            half_life: Duration::from_secs(3600),
            ..DeployConfig::default()
        };
        let mut m = DeployModel::new(cfg);
        // `old` pulled often long ago (irregularly), `new` a few times lately.
        for i in 0..10u64 {
            pull(&mut m, i * i * 7 * MIN, "reg.example/old:1");
        }
        let t = 100 * 60 * MIN;
        for i in 0..3u64 {
            pull(&mut m, t + i * i * 11 * MIN, "reg.example/new:1");
        }
        pull(&mut m, t + 60 * MIN, "other/z:1");
        let p = m.predict(t + 61 * MIN, 2);
        assert_eq!(p[0].image, "reg.example/new:1", "{p:?}");
    }

    #[test]
    fn a_repeated_pull_is_one_pull_and_the_last_pull_is_not_predicted() {
        let mut m = DeployModel::new(DeployConfig::default());
        pull(&mut m, 0, "a");
        pull(&mut m, 1000, "a");
        pull(&mut m, 2000, "b");
        let s = &m.state.images["docker.io/library/a:latest"];
        assert!(s.gaps_ms.is_empty());
        let p = m.predict(3000, 5);
        assert!(p.iter().all(|p| p.image != "docker.io/library/b:latest"));
    }

    #[test]
    fn state_is_bounded_and_survives_a_save() {
        let cfg = DeployConfig {
            max_images: 3,
            max_successors: 2,
            ..DeployConfig::default()
        };
        let mut m = DeployModel::new(cfg.clone());
        for (i, img) in ["a", "b", "c", "d", "e", "a", "b"].iter().enumerate() {
            pull(&mut m, i as u64 * MIN, img);
        }
        assert!(m.images() <= 3);
        assert!(m.state.images.values().all(|s| s.next.len() <= 2));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deploy.state");
        m.save_to_file(&path).unwrap();
        let mut back = DeployModel::new(cfg);
        back.load_from_file(&path).unwrap();
        assert_eq!(back.predict(8 * MIN, 3), m.predict(8 * MIN, 3));
        let wrong = encode_state("markov", STATE_VERSION, &0u8).unwrap();
        let e = back.load_state(&wrong).unwrap_err().to_string();
        assert!(e.contains("markov"), "{e}");
    }
}
