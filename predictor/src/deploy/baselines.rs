//! The baselines [`DeployModel`](super::DeployModel) must beat: [`NoPrediction`] (the node as it
//! is without warming), [`MostRecent`] (the last distinct images pulled) and [`MostFrequent`]
//! (all-time pull counts). Their probabilities are the plain rule's own: a recent image's
//! share of the recency list, a frequent image's share of all pulls.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{ImagePrediction, PullEvent, PullPredictor, Reason, normalize};

/// Predicts nothing.
#[derive(Debug, Default)]
pub struct NoPrediction;

impl PullPredictor for NoPrediction {
    fn name(&self) -> &str {
        "none"
    }
    fn observe(&mut self, _pull: &PullEvent) {}
    fn predict(&self, _now_ms: u64, _max: usize) -> Vec<ImagePrediction> {
        Vec::new()
    }
}

/// The most recently pulled distinct images, newest first, but the very last one (it is on
/// the node).
#[derive(Debug, Default)]
pub struct MostRecent {
    recent: Vec<String>,
}

/// How many distinct images [`MostRecent`] remembers.
const RECENT_KEPT: usize = 16;

impl PullPredictor for MostRecent {
    fn name(&self) -> &str {
        "most-recent"
    }

    fn observe(&mut self, pull: &PullEvent) {
        let image = normalize(&pull.image);
        self.recent.retain(|i| *i != image);
        self.recent.insert(0, image);
        self.recent.truncate(RECENT_KEPT);
    }

    fn predict(&self, _now_ms: u64, max: usize) -> Vec<ImagePrediction> {
        let n = self.recent.len().saturating_sub(1).min(max);
        self.recent
            .iter()
            .skip(1)
            .take(n)
            .map(|image| ImagePrediction {
                image: image.clone(),
                probability: 1.0 / n as f32,
                expected_in: Duration::ZERO,
                reason: Reason::Baseline,
            })
            .collect()
    }
}

/// The images pulled most often so far, but the very last one.
#[derive(Debug, Default)]
pub struct MostFrequent {
    counts: BTreeMap<String, u64>,
    total: u64,
    last: Option<String>,
}

impl PullPredictor for MostFrequent {
    fn name(&self) -> &str {
        "most-frequent"
    }

    fn observe(&mut self, pull: &PullEvent) {
        let image = normalize(&pull.image);
        *self.counts.entry(image.clone()).or_default() += 1;
        self.total += 1;
        self.last = Some(image);
    }

    fn predict(&self, _now_ms: u64, max: usize) -> Vec<ImagePrediction> {
        let mut ranked: Vec<(&String, &u64)> = self
            .counts
            .iter()
            .filter(|(i, _)| Some(*i) != self.last.as_ref())
            .collect();
        ranked.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        ranked
            .into_iter()
            .take(max)
            .map(|(image, n)| ImagePrediction {
                image: image.clone(),
                probability: *n as f32 / self.total.max(1) as f32,
                expected_in: Duration::ZERO,
                reason: Reason::Baseline,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(p: &mut dyn PullPredictor, images: &[&str]) {
        for (i, image) in images.iter().enumerate() {
            p.observe(&PullEvent {
                t_unix_ms: i as u64,
                image: (*image).into(),
            });
        }
    }

    #[test]
    fn baselines_follow_their_rules() {
        let seq = ["a", "b", "a", "c", "a", "d"];
        let names = |p: Vec<ImagePrediction>| -> Vec<String> {
            p.into_iter()
                .map(|p| p.image.trim_start_matches("docker.io/library/").to_owned())
                .collect()
        };
        let mut recent = MostRecent::default();
        feed(&mut recent, &seq);
        assert_eq!(names(recent.predict(9, 2)), ["a:latest", "c:latest"]);
        let mut frequent = MostFrequent::default();
        feed(&mut frequent, &seq);
        assert_eq!(names(frequent.predict(9, 2)), ["a:latest", "b:latest"]);
        assert!(NoPrediction.predict(9, 3).is_empty());
    }
}
