//! One order of the Markov model: contexts (a chunk, or a pair) to their weighted successors,
//! with lazy exponential decay and the bounds that keep memory fixed.

use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::MarkovConfig;
use crate::chunk::{ChunkId, FastMap};

/// Successors below this weight are forgotten when their context decays.
const MIN_EDGE_WEIGHT: f32 = 0.01;

/// A successor of a context.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) struct Edge {
    pub(super) next: ChunkId,
    pub(super) weight: f32,
    pub(super) mean_dt_us: f32,
}

/// The successors of one context, their weights decayed up to `stamp`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Context {
    stamp: u64,
    pub(super) edges: Vec<Edge>,
}

fn decay_factor(clock: u64, stamp: u64, half_life: u64) -> f32 {
    let age = clock.saturating_sub(stamp) as f32 / half_life.max(1) as f32;
    0.5f32.powf(age)
}

impl Context {
    /// Sum of weights as of `stamp` (ratios between edges do not change with decay).
    pub(super) fn total(&self) -> f32 {
        self.edges.iter().map(|e| e.weight).sum()
    }

    /// Sum of weights decayed to `clock`.
    pub(super) fn decayed_total(&self, clock: u64, half_life: u64) -> f32 {
        self.total() * decay_factor(clock, self.stamp, half_life)
    }

    fn decay_to(&mut self, clock: u64, half_life: u64) {
        let factor = decay_factor(clock, self.stamp, half_life);
        self.stamp = clock;
        if factor < 1.0 {
            self.edges.iter_mut().for_each(|e| e.weight *= factor);
            self.edges.retain(|e| e.weight >= MIN_EDGE_WEIGHT);
        }
    }

    fn add(&mut self, next: ChunkId, dt_us: f32, max_successors: usize) {
        if let Some(edge) = self.edges.iter_mut().find(|e| e.next == next) {
            edge.weight += 1.0;
            // A running mean over the first eight, then an exponential average.
            let alpha = (1.0 / edge.weight).max(0.125);
            edge.mean_dt_us += (dt_us - edge.mean_dt_us) * alpha;
            return;
        }
        if self.edges.len() >= max_successors.max(1) {
            let weakest = self
                .edges
                .iter()
                .enumerate()
                .min_by(|(_, a), (_, b)| a.weight.total_cmp(&b.weight).then(a.next.cmp(&b.next)))
                .map(|(i, _)| i);
            if let Some(i) = weakest {
                self.edges.swap_remove(i);
            }
        }
        self.edges.push(Edge {
            next,
            weight: 1.0,
            mean_dt_us: dt_us,
        });
    }
}

/// Contexts of one order.
#[derive(Debug)]
pub(super) struct Table<K> {
    map: FastMap<K, Context>,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Table {
            map: FastMap::default(),
        }
    }
}

impl<K: Copy + Eq + Hash + Ord> Table<K> {
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn get(&self, key: &K) -> Option<&Context> {
        self.map.get(key)
    }

    /// Counts the transition `key → next` at time `clock`.
    pub(super) fn update(
        &mut self,
        key: K,
        next: ChunkId,
        dt_us: f32,
        clock: u64,
        cfg: &MarkovConfig,
    ) {
        let ctx = self.map.entry(key).or_insert_with(|| Context {
            stamp: clock,
            edges: Vec::new(),
        });
        ctx.decay_to(clock, cfg.half_life);
        ctx.add(next, dt_us, cfg.max_successors);
        self.prune_if_full(clock, cfg);
    }

    /// Applies the bounds to a loaded state (saved, perhaps, with larger ones).
    pub(super) fn enforce(&mut self, clock: u64, cfg: &MarkovConfig) {
        self.prune_if_full(clock, cfg);
        for ctx in self.map.values_mut() {
            if ctx.edges.len() > cfg.max_successors {
                ctx.edges
                    .sort_by(|a, b| b.weight.total_cmp(&a.weight).then(a.next.cmp(&b.next)));
                ctx.edges.truncate(cfg.max_successors);
            }
        }
    }

    /// Drops the weakest eighth of the contexts (by decayed weight) once there are too many,
    /// so pruning costs O(log n) per update amortised.
    fn prune_if_full(&mut self, clock: u64, cfg: &MarkovConfig) {
        if self.map.len() > cfg.max_contexts {
            let keep = cfg.max_contexts - cfg.max_contexts / 8;
            let mut ranked: Vec<(f32, K)> = self
                .map
                .iter()
                .map(|(k, c)| (c.decayed_total(clock, cfg.half_life), *k))
                .collect();
            ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let drop = ranked.len().saturating_sub(keep);
            ranked[..drop].iter().for_each(|(_, k)| {
                self.map.remove(k);
            });
        }
    }
}

impl<K: Serialize + Ord + Copy> Serialize for Table<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // JSON maps need string keys, and a sorted list is deterministic.
        let mut entries: Vec<(&K, &Context)> = self.map.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        entries.serialize(serializer)
    }
}

impl<'de, K: DeserializeOwned + Eq + Hash> Deserialize<'de> for Table<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries: Vec<(K, Context)> = Vec::deserialize(deserializer)?;
        Ok(Table {
            map: entries.into_iter().collect(),
        })
    }
}
