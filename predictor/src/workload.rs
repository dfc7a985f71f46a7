//! Workload identity: an image plus a signature. The signature is the user's
//! `containerd.io/snapshot/augur.workload` label when the snapshot has one (`label:<value>`),
//! and otherwise a hash of the first [`SIGNATURE_CHUNKS`] distinct chunks the run read
//! (`first8:<16 hex digits>`; `firstN:` with N < 8 if the run read fewer chunks in all).
//!
//! The same program with different arguments usually starts the same way, so its key is often
//! the same; a program whose first reads differ (another entry point, another script) gets
//! another key. The daemon calls [`SignatureBuilder`] as accesses arrive (the trace writer and
//! the replay model do the same), so the key is fixed within the first eight new chunks.

use std::fmt;

use crate::chunk::{ChunkId, fnv1a64};

/// The snapshot label a user sets to name a workload explicitly.
pub const WORKLOAD_LABEL: &str = "containerd.io/snapshot/augur.workload";

/// How many distinct first chunks make the signature when there is no label.
pub const SIGNATURE_CHUNKS: usize = 8;

/// A workload: an image and a signature.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadKey {
    /// The image reference.
    pub image: String,
    /// `label:<value>` or `firstN:<hash>`.
    pub signature: String,
}

impl WorkloadKey {
    /// The key of a run of `image`: from its label if it has one, else from its first chunks
    /// (the first [`SIGNATURE_CHUNKS`] distinct ones are used, the rest ignored).
    pub fn new(image: &str, label: Option<&str>, first_chunks: &[ChunkId]) -> Self {
        let mut builder = SignatureBuilder::new(label);
        first_chunks.iter().for_each(|&c| builder.observe(c));
        WorkloadKey {
            image: image.to_owned(),
            signature: builder.signature(),
        }
    }
}

impl fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.image, self.signature)
    }
}

/// Accumulates a run's first distinct chunks until the signature is fixed.
#[derive(Debug, Clone)]
pub struct SignatureBuilder {
    label: Option<String>,
    first: Vec<ChunkId>,
}

impl SignatureBuilder {
    /// A builder for a run with the given workload label (if any).
    pub fn new(label: Option<&str>) -> Self {
        SignatureBuilder {
            label: label.filter(|l| !l.is_empty()).map(str::to_owned),
            first: Vec::with_capacity(SIGNATURE_CHUNKS),
        }
    }

    /// Notes an accessed chunk; cheap once the signature is complete.
    pub fn observe(&mut self, chunk: ChunkId) {
        if !self.is_complete() && !self.first.contains(&chunk) {
            self.first.push(chunk);
        }
    }

    /// Whether more accesses can no longer change the signature.
    pub fn is_complete(&self) -> bool {
        self.label.is_some() || self.first.len() >= SIGNATURE_CHUNKS
    }

    /// The signature as it stands (final once [`Self::is_complete`]).
    pub fn signature(&self) -> String {
        if let Some(label) = &self.label {
            return format!("label:{label}");
        }
        let mut bytes = Vec::with_capacity(32 * self.first.len());
        self.first
            .iter()
            .for_each(|c| bytes.extend_from_slice(&c.0));
        format!("first{}:{:016x}", self.first.len(), fnv1a64(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    #[test]
    fn label_wins_and_first_chunks_fix_the_signature() {
        let labelled = WorkloadKey::new("img", Some("etl-nightly"), &[id(1)]);
        assert_eq!(labelled.signature, "label:etl-nightly");

        let reads: Vec<_> = [1, 1, 2, 3, 2, 4, 5, 6, 7, 8, 9].map(id).to_vec();
        let key = WorkloadKey::new("img", None, &reads);
        assert!(key.signature.starts_with("first8:"), "{key}");
        // Chunks after the eighth distinct one do not matter; the order of the first ones does.
        let mut other = reads.clone();
        other[10] = id(42);
        assert_eq!(WorkloadKey::new("img", None, &other), key);
        other.swap(2, 3);
        assert_ne!(
            WorkloadKey::new("img", None, &other).signature,
            key.signature
        );
        // An empty label is no label.
        assert_eq!(WorkloadKey::new("img", Some(""), &reads), key);
    }

    #[test]
    fn short_runs_say_how_many_chunks_they_had() {
        let key = WorkloadKey::new("img", None, &[id(1), id(2)]);
        assert!(key.signature.starts_with("first2:"));
        let mut builder = SignatureBuilder::new(None);
        assert!(!builder.is_complete());
        (0..8).for_each(|n| builder.observe(id(n)));
        assert!(builder.is_complete());
    }
}
