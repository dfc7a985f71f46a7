//! Helpers shared by the predictor's tests: the contract every model must keep, and driving a
//! model through a recorded run as the daemon would.

#![allow(dead_code)]

use std::collections::HashSet;

use augur_predictor::{Prediction, Predictor, RunContext, RunId, Trace};

/// Checks the [`Predictor::predict`] contract on one answer.
pub fn check_contract(preds: &[Prediction], max: usize, seen: &HashSet<augur_predictor::ChunkId>) {
    assert!(preds.len() <= max, "{} > {max}", preds.len());
    let unique: HashSet<_> = preds.iter().map(|p| p.chunk).collect();
    assert_eq!(unique.len(), preds.len(), "a chunk predicted twice");
    for p in preds {
        assert!(!seen.contains(&p.chunk), "predicted a chunk already read");
        assert!(
            p.probability.is_finite() && (0.0..=1.0).contains(&p.probability),
            "{}",
            p.probability
        );
    }
    for w in preds.windows(2) {
        assert!(w[0].probability >= w[1].probability, "not ranked");
    }
}

/// Runs `trace` through `model` live (start, observe + predict at every new chunk, finish),
/// checking the contract at every step; returns the predictions made before each new chunk.
pub fn drive(
    model: &mut dyn Predictor,
    run: RunId,
    trace: &Trace,
    max: usize,
) -> Vec<Vec<Prediction>> {
    model.start_run(run, &RunContext::from_header(&trace.header));
    let mut seen = HashSet::new();
    let mut answers = Vec::new();
    for access in trace.model_accesses() {
        if !seen.contains(&access.chunk) {
            let preds = model.predict(run, max);
            check_contract(&preds, max, &seen);
            answers.push(preds);
        }
        seen.insert(access.chunk);
        model.observe(run, &access);
    }
    model.finish_run(run, Some(trace));
    answers
}

/// The probability `preds` gives `chunk` (0 if absent).
pub fn probability_of(preds: &[Prediction], chunk: augur_predictor::ChunkId) -> f32 {
    preds
        .iter()
        .find(|p| p.chunk == chunk)
        .map_or(0.0, |p| p.probability)
}
