//! `augur_predictor_inference_seconds`: how long one step of the LSTM (one ONNX Runtime run)
//! takes, per model version. The engine measures every step on its `augur-lstm` thread and hands
//! the durations to the [`augur_predictor::lstm::StepObserver`] made here, which records them in
//! a fixed-bucket [`Histogram`] per model (the engine's own log-bucket histogram has no fixed
//! bounds, which Prometheus needs). A reload to a new version starts a new series; the last
//! [`MAX_MODELS`] versions are kept, so the label's cardinality stays bounded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use augur_predictor::lstm::StepObserver;

use super::histogram::{Histogram, HistogramSnapshot};
use super::{Emit, Labels};

/// Upper bounds, in seconds, of a model step: about 60 µs on an idle core, milliseconds when
/// the node is busy.
pub const STEP_SECONDS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.1, 1.0,
];

/// Model versions with a series at most (the oldest is dropped first).
pub const MAX_MODELS: usize = 4;

/// Per-model step latency; shared by the engine's observer and the scrape.
#[derive(Debug, Default)]
pub struct InferenceLatency {
    models: Mutex<Vec<(String, Arc<Histogram>)>>,
}

impl InferenceLatency {
    /// An observer for [`augur_predictor::lstm::Engine::set_step_observer`].
    pub fn observer(self: &Arc<Self>) -> StepObserver {
        let me = Arc::clone(self);
        Arc::new(move |model: &str, steps: &[Duration]| me.observe(model, steps))
    }

    /// Records `steps` of `model`.
    pub fn observe(&self, model: &str, steps: &[Duration]) {
        if steps.is_empty() {
            return;
        }
        let histogram = {
            let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
            match models.iter().find(|(m, _)| m == model) {
                Some((_, h)) => Arc::clone(h),
                None => {
                    if models.len() == MAX_MODELS {
                        models.remove(0);
                    }
                    let h = Arc::new(Histogram::new(STEP_SECONDS));
                    models.push((model.to_owned(), Arc::clone(&h)));
                    h
                }
            }
        };
        steps.iter().for_each(|d| histogram.observe(*d));
    }

    /// Each model's histogram now, oldest model first.
    pub fn snapshot(&self) -> Vec<(String, HistogramSnapshot)> {
        let models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        models
            .iter()
            .map(|(m, h)| (m.clone(), h.snapshot()))
            .collect()
    }
}

/// The family from one snapshot (no series before the LSTM's first step).
pub fn encode(models: &[(String, HistogramSnapshot)], out: &mut Emit<'_>) -> std::fmt::Result {
    let series: Vec<(Labels<'_>, HistogramSnapshot)> = models
        .iter()
        .map(|(m, h)| (vec![("model", m.as_str())], h.clone()))
        .collect();
    out.histogram(
        "augur_predictor_inference_seconds",
        "Time of one LSTM step (one ONNX Runtime run; a prediction takes up to 8), per model version (its directory's name)",
        &series,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_land_in_their_models_series_and_old_models_age_out() {
        let l = InferenceLatency::default();
        l.observe("a", &[Duration::from_micros(40), Duration::from_micros(70)]);
        l.observe("a", &[]);
        l.observe("b", &[Duration::from_millis(3)]);
        let s = l.snapshot();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].0.as_str(), s[0].1.count), ("a", 2));
        assert_eq!((s[1].0.as_str(), s[1].1.count), ("b", 1));
        for m in ["c", "d", "e"] {
            l.observe(m, &[Duration::from_micros(1)]);
        }
        let names: Vec<String> = l.snapshot().into_iter().map(|(m, _)| m).collect();
        assert_eq!(names, ["b", "c", "d", "e"]);
    }

    #[test]
    fn the_bounds_fit_a_histogram() {
        assert!(STEP_SECONDS.len() <= super::super::histogram::MAX_BUCKETS);
        assert!(STEP_SECONDS.windows(2).all(|w| w[0] < w[1]));
    }
}
