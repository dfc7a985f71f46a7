//! The RAM tier: verified chunks on the heap, for the hottest and most confidently predicted.
//! Its budget counts chunk bytes (not the few dozen bytes of bookkeeping per chunk).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::key::{ChunkKey, Verified};
use super::policy::{Meta, Priority};
use super::shards::{Shards, VictimPool};
use super::{Ctx, TierCounters};

/// One chunk in RAM.
#[derive(Debug)]
pub struct RamChunk {
    /// Its bytes (verified when they entered the cache).
    pub bytes: Box<[u8]>,
    /// Its access statistics.
    pub meta: Arc<Meta>,
}

/// The RAM tier.
#[derive(Debug)]
pub struct RamTier {
    budget: u64,
    used: AtomicU64,
    map: Shards<Arc<RamChunk>>,
    /// Held while making room and inserting (never on the hit path).
    space: Mutex<VictimPool>,
    /// Counters.
    pub counters: TierCounters,
}

impl RamTier {
    /// An empty tier of `budget` bytes.
    pub fn new(budget: u64) -> RamTier {
        RamTier {
            budget,
            used: AtomicU64::new(0),
            map: Shards::new(),
            space: Mutex::new(VictimPool::default()),
            counters: TierCounters::default(),
        }
    }

    /// The chunk, if here (no side effects: the caller counts and touches).
    pub fn get(&self, key: &ChunkKey) -> Option<Arc<RamChunk>> {
        self.map.get(key)
    }

    /// Whether the chunk is here.
    pub fn contains(&self, key: &ChunkKey) -> bool {
        self.map.contains(key)
    }

    /// Bytes held.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Budget in bytes.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Chunks held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it holds no chunk.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Stores `chunk`, evicting lower-ranked chunks into `victims` if room is needed. With
    /// `incoming` set, only chunks ranked below it may be evicted; false if it was not admitted.
    pub fn insert(
        &self,
        chunk: Verified<'_>,
        meta: &Arc<Meta>,
        incoming: Option<Priority>,
        ctx: &Ctx,
        victims: &mut Vec<(ChunkKey, Arc<RamChunk>)>,
    ) -> bool {
        let len = chunk.bytes().len() as u64;
        if len > self.budget {
            return false;
        }
        let mut pool = self.space.lock().unwrap_or_else(|p| p.into_inner());
        if self.map.contains(&chunk.key()) {
            return true;
        }
        if self.used() + len > self.budget {
            let need = self.used() + len - self.budget;
            let batch = if incoming.is_none() {
                need.max(self.budget / 64)
            } else {
                need
            };
            let mut freed = 0;
            let made_room = pool.evict_until(
                || self.scan(ctx),
                |k| self.map.get(k).map(|c| ctx.rank(k, &c.meta)),
                incoming,
                |k| {
                    if let Some(c) = self.remove(&k) {
                        self.counters.evictions.fetch_add(1, Ordering::Relaxed);
                        freed += c.bytes.len() as u64;
                        victims.push((k, c));
                    }
                    freed >= batch
                },
            );
            if !made_room && self.used() + len > self.budget {
                return false;
            }
        }
        meta.entered_tier();
        let c = Arc::new(RamChunk {
            bytes: chunk.bytes().into(),
            meta: Arc::clone(meta),
        });
        self.used.fetch_add(len, Ordering::Relaxed);
        self.map.insert(chunk.key(), c);
        self.counters.inserts.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Takes the chunk out of the tier.
    pub fn remove(&self, key: &ChunkKey) -> Option<Arc<RamChunk>> {
        let c = self.map.remove_if(key, |_| true)?;
        self.used.fetch_sub(c.bytes.len() as u64, Ordering::Relaxed);
        Some(c)
    }

    /// Removes every chunk `pred` selects (under the space lock); returns them.
    pub fn remove_where(&self, pred: impl Fn(&ChunkKey) -> bool) -> Vec<(ChunkKey, Arc<RamChunk>)> {
        let _pool = self.space.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys = Vec::new();
        self.map.for_each(|k, _| {
            if pred(k) {
                keys.push(*k);
            }
        });
        keys.into_iter()
            .filter_map(|k| self.remove(&k).map(|c| (k, c)))
            .collect()
    }

    fn scan(&self, ctx: &Ctx) -> Vec<(Priority, ChunkKey)> {
        let mut all = Vec::new();
        self.map
            .for_each(|k, c| all.push((ctx.rank(k, &c.meta), *k)));
        all
    }
}
