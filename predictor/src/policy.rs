//! When a predicted chunk is worth fetching: the rule the daemon's prefetcher and the
//! evaluation's simulator share.
//!
//! A probability threshold alone treats a 4 KiB chunk and a 4 MiB one alike, yet a wrong guess
//! on the second wastes a thousand times the bytes (and holds the link as long). So the
//! threshold `θ` is read as a bound on the *expected* bytes a prefetch wastes: a chunk of `s`
//! bytes predicted with probability `p` is fetched when `p ≥ θ` and
//! `(1 − p)·s ≤ (1 − θ)·`[`WASTE_REFERENCE_BYTES`]. Chunks up to the reference size need only
//! `p ≥ θ`; a 4 MiB chunk at `θ = 0.7` needs `p ≥ 0.925`. Every model is held to the same rule
//! (see docs/decisions/0021-novelty-calibration-and-size-aware-prefetch.md).

/// The chunk size up to which the threshold alone decides.
pub const WASTE_REFERENCE_BYTES: u32 = 1 << 20;

/// Whether a chunk of `size` bytes predicted with `probability` is worth prefetching at
/// `threshold`.
pub fn worth_prefetching(probability: f32, size: u64, threshold: f32) -> bool {
    // NaN compares false, so an unknown probability is never worth a fetch.
    if probability.is_nan() || probability < threshold {
        return false;
    }
    let allowed = f64::from(1.0 - threshold.clamp(0.0, 1.0)) * f64::from(WASTE_REFERENCE_BYTES);
    f64::from(1.0 - probability.clamp(0.0, 1.0)) * size as f64 <= allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_chunks_need_the_threshold_big_ones_more() {
        assert!(worth_prefetching(0.7, 4096, 0.7));
        assert!(!worth_prefetching(0.69, 4096, 0.7));
        assert!(worth_prefetching(
            0.7,
            u64::from(WASTE_REFERENCE_BYTES),
            0.7
        ));
        assert!(!worth_prefetching(0.9, 4 << 20, 0.7));
        assert!(worth_prefetching(0.93, 4 << 20, 0.7));
        assert!(worth_prefetching(1.0, u64::MAX, 0.99));
        assert!(!worth_prefetching(f32::NAN, 1, 0.0));
    }
}
