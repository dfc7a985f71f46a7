//! Who goes first when a tier needs space: the eviction policies and the per-chunk access
//! statistics they read.
//!
//! Every resident chunk has one [`Meta`], shared by whichever tier holds it, so its history
//! survives promotion and demotion. A hit updates it with atomics only (no lock): the access
//! time and the decayed frequency are packed into one `u64` and updated by compare-and-swap.
//!
//! A [`Priority`] orders chunks for eviction, lowest first. Whatever the policy, chunks that no
//! mounted layer references (their images were removed) rank below every referenced chunk, so
//! they are the first to go.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How a tier picks its victims.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    /// Least frequently used, with each access's weight halving every `half_life` (default):
    /// a chunk read 50 times an hour ago ranks below one read 5 times in the last minute.
    LfuDecay {
        /// Time after which an access counts half.
        half_life: Duration,
    },
    /// Least recently used.
    Lru,
    /// Lowest predicted probability of being read (set by the prefetcher), then least recent.
    Score,
}

impl Policy {
    /// The config spelling: `lfu`, `lru` or `score`.
    pub fn name(&self) -> &'static str {
        match self {
            Policy::LfuDecay { .. } => "lfu",
            Policy::Lru => "lru",
            Policy::Score => "score",
        }
    }
}

/// Eviction rank; the lowest is evicted first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Priority {
    referenced: bool,
    primary: f64,
    secondary: f64,
}

impl Eq for Priority {}

impl PartialOrd for Priority {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Priority {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.referenced
            .cmp(&other.referenced)
            .then(self.primary.total_cmp(&other.primary))
            .then(self.secondary.total_cmp(&other.secondary))
    }
}

/// The cache's clock: ticks of 10 ms since the cache opened (fits 497 days in 32 bits).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

/// One tick.
pub const TICK: Duration = Duration::from_millis(10);

impl Clock {
    /// A clock starting now.
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    /// The current tick.
    pub fn now(&self) -> u32 {
        (self.start.elapsed().as_millis() / TICK.as_millis()).min(u128::from(u32::MAX)) as u32
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Access statistics of one chunk.
#[derive(Debug)]
pub struct Meta {
    /// High 32 bits: decayed access count as `f32` bits, as of the tick in the low 32 bits.
    access: AtomicU64,
    /// Predicted probability of being read, `f32` bits (0 when never predicted).
    score: AtomicU32,
    /// Hits since the chunk entered its current tier (promotion counts them).
    tier_hits: AtomicU32,
}

fn pack(freq: f32, tick: u32) -> u64 {
    (u64::from(freq.to_bits()) << 32) | u64::from(tick)
}

fn unpack(v: u64) -> (f32, u32) {
    (f32::from_bits((v >> 32) as u32), v as u32)
}

/// `freq` as it stands `elapsed` ticks after it was last updated.
fn decayed(freq: f32, elapsed: u32, half_life_ticks: f64) -> f64 {
    f64::from(freq) * (-(f64::from(elapsed)) / half_life_ticks).exp2()
}

impl Meta {
    /// A chunk first accessed at `tick`, with predicted probability `score`.
    pub fn new(tick: u32, score: f32) -> Meta {
        Meta {
            access: AtomicU64::new(pack(1.0, tick)),
            score: AtomicU32::new(score.to_bits()),
            tier_hits: AtomicU32::new(0),
        }
    }

    /// Records an access at `tick`; returns the hits in the current tier so far.
    pub fn touch(&self, tick: u32, policy: &Policy) -> u32 {
        let half_life = half_life_ticks(policy);
        let mut cur = self.access.load(Ordering::Relaxed);
        loop {
            let (freq, last) = unpack(cur);
            let freq = decayed(freq, tick.saturating_sub(last), half_life) as f32 + 1.0;
            match self.access.compare_exchange_weak(
                cur,
                pack(freq, tick.max(last)),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(v) => cur = v,
            }
        }
        self.tier_hits.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Raises the predicted probability (a prediction never lowers what an earlier one said
    /// until the chunk is read; the prefetcher resets it through [`Meta::set_score`]).
    pub fn raise_score(&self, score: f32) {
        self.score.fetch_max(score.to_bits(), Ordering::Relaxed);
    }

    /// Sets the predicted probability.
    pub fn set_score(&self, score: f32) {
        self.score.store(score.to_bits(), Ordering::Relaxed);
    }

    /// The predicted probability.
    pub fn score(&self) -> f32 {
        f32::from_bits(self.score.load(Ordering::Relaxed))
    }

    /// Hits since the chunk entered its current tier.
    pub fn tier_hits(&self) -> u32 {
        self.tier_hits.load(Ordering::Relaxed)
    }

    /// Called when the chunk moves to another tier.
    pub fn entered_tier(&self) {
        self.tier_hits.store(0, Ordering::Relaxed);
    }

    /// The chunk's eviction rank at `now`.
    pub fn priority(&self, now: u32, policy: &Policy, referenced: bool) -> Priority {
        let (freq, last) = unpack(self.access.load(Ordering::Relaxed));
        let last_f = f64::from(last);
        let (primary, secondary) = match policy {
            Policy::LfuDecay { .. } => (
                decayed(freq, now.saturating_sub(last), half_life_ticks(policy)),
                last_f,
            ),
            Policy::Lru => (last_f, 0.0),
            Policy::Score => (f64::from(self.score()), last_f),
        };
        Priority {
            referenced,
            primary,
            secondary,
        }
    }
}

fn half_life_ticks(policy: &Policy) -> f64 {
    match policy {
        Policy::LfuDecay { half_life } => (half_life.as_secs_f64() / TICK.as_secs_f64()).max(1.0),
        _ => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LFU: Policy = Policy::LfuDecay {
        half_life: Duration::from_secs(10),
    };

    #[test]
    fn lfu_counts_accesses_and_forgets_old_ones() {
        let busy_long_ago = Meta::new(0, 0.0);
        for _ in 0..49 {
            busy_long_ago.touch(0, &LFU);
        }
        let recent = Meta::new(6000, 0.0);
        for _ in 0..4 {
            recent.touch(6000, &LFU);
        }
        // At tick 6000 (60 s = 6 half-lives), 50 old accesses weigh 50/64 < 5 recent ones.
        assert!(busy_long_ago.priority(6000, &LFU, true) < recent.priority(6000, &LFU, true));
        // At tick 0, the 50 accesses win.
        let fresh = Meta::new(0, 0.0);
        assert!(fresh.priority(0, &LFU, true) < busy_long_ago.priority(0, &LFU, true));
    }

    #[test]
    fn lru_ranks_by_last_access() {
        let a = Meta::new(10, 0.0);
        let b = Meta::new(20, 0.0);
        assert!(a.priority(30, &Policy::Lru, true) < b.priority(30, &Policy::Lru, true));
        a.touch(40, &Policy::Lru);
        assert!(b.priority(50, &Policy::Lru, true) < a.priority(50, &Policy::Lru, true));
    }

    #[test]
    fn score_ranks_by_probability_then_recency() {
        let likely = Meta::new(0, 0.9);
        let unlikely = Meta::new(100, 0.1);
        assert!(
            unlikely.priority(100, &Policy::Score, true)
                < likely.priority(100, &Policy::Score, true)
        );
        unlikely.raise_score(0.95);
        assert!(
            likely.priority(100, &Policy::Score, true)
                < unlikely.priority(100, &Policy::Score, true)
        );
    }

    #[test]
    fn unreferenced_chunks_rank_below_every_referenced_one() {
        let hot = Meta::new(0, 1.0);
        for _ in 0..100 {
            hot.touch(0, &LFU);
        }
        let cold = Meta::new(0, 0.0);
        for policy in [LFU, Policy::Lru, Policy::Score] {
            assert!(hot.priority(0, &policy, false) < cold.priority(0, &policy, true));
        }
    }

    #[test]
    fn touch_counts_hits_in_the_current_tier() {
        let m = Meta::new(0, 0.0);
        assert_eq!(m.touch(1, &LFU), 1);
        assert_eq!(m.touch(2, &LFU), 2);
        m.entered_tier();
        assert_eq!(m.touch(3, &LFU), 1);
    }
}
