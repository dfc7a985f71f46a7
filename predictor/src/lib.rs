//! # augur-predictor
//!
//! Access events in, ranked chunk predictions out. This crate has no dependency on the
//! snapshotter. Its models (record-and-replay, online Markov, the ONNX LSTM and their ensemble)
//! arrive with the predictive-prefetch work; today it holds only the event vocabulary that the
//! snapshotter will record, so the dependency direction is fixed from the start.

/// Where a read was served from, as the predictor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessSource {
    /// Served from a local cache tier.
    Hit,
    /// Had to go to the registry while the reader waited.
    Miss,
}
