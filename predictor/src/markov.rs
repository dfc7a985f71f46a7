//! The online Markov model: first- and second-order transition counts between the chunks runs
//! read for the first time, updated on every access, over chunk digests (so what one image
//! teaches applies to any image that shares the chunks).
//!
//! - **State**: the live run's last two new chunks (the first one follows a per-image start
//!   token, [`ChunkId::run_start`]). Repeated reads of a chunk the run already read are not
//!   transitions.
//! - **Next-chunk distribution**: the second-order estimate blended with the first-order one,
//!   `λ·p₂ + (1−λ)·p₁` with `λ = n₂ / (n₂ + backoff)` (`n₂` = the decayed count of the
//!   second-order context), so a context seen often trusts its history and a new one backs off.
//! - **Prediction**: a best-first walk over chains of likely next chunks; a chunk's probability
//!   is that of the likeliest chain reaching it (a lower bound of "read later"; the ensemble
//!   calibrates it), its expected time the sum of mean inter-arrival times along that chain.
//! - **Forgetting and memory bound**: counts halve every `half_life` transitions (lazily, per
//!   context); each context keeps at most `max_successors` successors (a new one replaces the
//!   weakest); each order keeps at most `max_contexts` contexts (the weakest eighth is pruned
//!   when full). About `max_contexts × (max_successors × 40 + 100)` bytes per order: 14 MB
//!   each, 28 MB in all, with the defaults.

mod table;

use std::collections::BinaryHeap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::chunk::{ChunkId, FastMap, FastSet};
use crate::error::Error;
use crate::model::{
    Access, Prediction, Predictor, RunContext, RunId, decode_state, encode_state, rank,
};
use table::{Context, Table};

const STATE_VERSION: u32 = 1;

/// Bounds and search limits of [`Markov`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MarkovConfig {
    /// Contexts kept per order.
    pub max_contexts: usize,
    /// Successors kept per context.
    pub max_successors: usize,
    /// Transitions after which a count has halved.
    pub half_life: u64,
    /// Chains less likely than this are not followed.
    pub min_probability: f32,
    /// Contexts expanded per prediction (bounds its cost).
    pub max_expansions: usize,
    /// Second-order evidence needed to outweigh the first order (the `backoff` in λ).
    pub backoff: f32,
}

impl Default for MarkovConfig {
    fn default() -> Self {
        MarkovConfig {
            max_contexts: 32_768,
            max_successors: 8,
            half_life: 1 << 20,
            min_probability: 0.01,
            max_expansions: 256,
            backoff: 2.0,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Learned {
    clock: u64,
    first: Table<ChunkId>,
    second: Table<(ChunkId, ChunkId)>,
}

#[derive(Debug)]
struct LiveRun {
    prev2: Option<ChunkId>,
    prev: ChunkId,
    last_at_us: u64,
    seen: FastSet<ChunkId>,
}

/// The online first/second-order Markov model.
#[derive(Debug)]
pub struct Markov {
    config: MarkovConfig,
    learned: Learned,
    runs: FastMap<RunId, LiveRun>,
}

/// One step of the best-first walk.
#[derive(Debug, PartialEq)]
struct Node {
    probability: f32,
    lead_us: f32,
    prev2: Option<ChunkId>,
    prev: ChunkId,
}

impl Eq for Node {}

impl Ord for Node {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.probability
            .total_cmp(&other.probability)
            .then(other.lead_us.total_cmp(&self.lead_us))
            .then(other.prev.cmp(&self.prev))
    }
}

impl PartialOrd for Node {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Markov {
    /// A model with no transitions yet.
    pub fn new(config: MarkovConfig) -> Self {
        Markov {
            config,
            learned: Learned::default(),
            runs: FastMap::default(),
        }
    }

    /// Contexts held (first order, second order).
    pub fn contexts(&self) -> (usize, usize) {
        (self.learned.first.len(), self.learned.second.len())
    }

    /// The blended distribution of the chunk after `prev` (preceded by `prev2`): chunk,
    /// probability, mean inter-arrival in µs.
    fn next(&self, prev2: Option<ChunkId>, prev: ChunkId) -> Vec<(ChunkId, f32, f32)> {
        let clock = self.learned.clock;
        let half_life = self.config.half_life;
        let first = self.learned.first.get(&prev);
        let second = prev2.and_then(|p2| self.learned.second.get(&(p2, prev)));
        let n2 = second.map_or(0.0, |c| c.decayed_total(clock, half_life));
        let lambda = n2 / (n2 + self.config.backoff);
        let mut out: Vec<(ChunkId, f32, f32)> = Vec::new();
        let mut add = |ctx: &Context, weight: f32| {
            let total = ctx.total();
            if total <= 0.0 || weight <= 0.0 {
                return;
            }
            for edge in &ctx.edges {
                let p = weight * edge.weight / total;
                match out.iter_mut().find(|(c, _, _)| *c == edge.next) {
                    Some(entry) => entry.1 += p,
                    None => out.push((edge.next, p, edge.mean_dt_us)),
                }
            }
        };
        if let Some(ctx) = second {
            add(ctx, lambda);
        }
        if let Some(ctx) = first {
            add(ctx, 1.0 - lambda);
        }
        out
    }

    fn walk(&self, live: &LiveRun, max: usize) -> FastMap<ChunkId, (f32, f32)> {
        let mut reached: FastMap<ChunkId, (f32, f32)> = FastMap::default();
        let mut frontier = BinaryHeap::new();
        frontier.push(Node {
            probability: 1.0,
            lead_us: 0.0,
            prev2: live.prev2,
            prev: live.prev,
        });
        let mut expansions = 0;
        while let Some(node) = frontier.pop() {
            if expansions >= self.config.max_expansions || reached.len() >= 4 * max {
                break;
            }
            expansions += 1;
            for (chunk, p, dt) in self.next(node.prev2, node.prev) {
                let probability = node.probability * p;
                if probability < self.config.min_probability || live.seen.contains(&chunk) {
                    continue;
                }
                if reached
                    .get(&chunk)
                    .is_some_and(|(best, _)| *best >= probability)
                {
                    continue;
                }
                let lead_us = node.lead_us + dt;
                reached.insert(chunk, (probability, lead_us));
                frontier.push(Node {
                    probability,
                    lead_us,
                    prev2: Some(node.prev),
                    prev: chunk,
                });
            }
        }
        reached
    }
}

impl Predictor for Markov {
    fn name(&self) -> &str {
        "markov"
    }

    fn start_run(&mut self, run: RunId, ctx: &RunContext) {
        self.runs.insert(
            run,
            LiveRun {
                prev2: None,
                prev: ChunkId::run_start(&ctx.image),
                last_at_us: 0,
                seen: FastSet::default(),
            },
        );
    }

    fn observe(&mut self, run: RunId, access: &Access) {
        let Some(live) = self.runs.get_mut(&run) else {
            return;
        };
        if !live.seen.insert(access.chunk) {
            return;
        }
        let at_us = access.at.as_micros() as u64;
        let dt_us = at_us.saturating_sub(live.last_at_us) as f32;
        let learned = &mut self.learned;
        learned.clock += 1;
        let config = &self.config;
        learned
            .first
            .update(live.prev, access.chunk, dt_us, learned.clock, config);
        if let Some(prev2) = live.prev2 {
            learned.second.update(
                (prev2, live.prev),
                access.chunk,
                dt_us,
                learned.clock,
                config,
            );
        }
        live.prev2 = Some(live.prev);
        live.prev = access.chunk;
        live.last_at_us = at_us;
    }

    fn predict(&mut self, run: RunId, max: usize) -> Vec<Prediction> {
        let Some(live) = self.runs.get(&run) else {
            return Vec::new();
        };
        if max == 0 {
            return Vec::new();
        }
        let mut predictions: Vec<Prediction> = self
            .walk(live, max)
            .into_iter()
            .map(|(chunk, (probability, lead_us))| Prediction {
                chunk,
                probability,
                expected_in: Duration::from_micros(lead_us.max(0.0) as u64),
            })
            .collect();
        rank(&mut predictions, max);
        predictions
    }

    fn finish_run(&mut self, run: RunId, _trace: Option<&crate::trace::Trace>) {
        // Every transition was learned online in `observe`.
        self.runs.remove(&run);
    }

    fn save_state(&self) -> Result<Vec<u8>, Error> {
        encode_state(self.name(), STATE_VERSION, &self.learned)
    }

    fn load_state(&mut self, state: &[u8]) -> Result<(), Error> {
        self.learned = decode_state("markov", STATE_VERSION, state)?;
        self.learned.first.enforce(self.learned.clock, &self.config);
        self.learned
            .second
            .enforce(self.learned.clock, &self.config);
        Ok(())
    }
}
