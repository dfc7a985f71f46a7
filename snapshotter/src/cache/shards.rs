//! What every tier shares: a sharded map (the hit path takes one shard's read lock, never a
//! tier-wide lock) and the victim pool that makes eviction cheap.
//!
//! Choosing a victim exactly would mean ranking every chunk of the tier on every eviction. The
//! pool instead ranks the whole tier once and keeps the [`POOL`] lowest; evictions consume it
//! until it runs dry (then it is refilled by another scan). A pooled chunk that was hit since the
//! scan and now ranks above the pool's ceiling is skipped, so a chunk that became hot is not
//! evicted on stale information. For tiers with fewer chunks than [`POOL`] this is exact.

use std::collections::HashMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::key::ChunkKey;
use super::policy::Priority;

/// Shards per tier map.
pub const SHARDS: usize = 64;
/// Chunks ranked per scan.
pub const POOL: usize = 256;

/// A map from chunk to `V`, split into [`SHARDS`] independently locked parts.
#[derive(Debug)]
pub struct Shards<V> {
    shards: Box<[RwLock<HashMap<ChunkKey, V>>]>,
}

impl<V: Clone> Shards<V> {
    /// Empty.
    pub fn new() -> Shards<V> {
        Shards {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
        }
    }

    fn read(&self, key: &ChunkKey) -> RwLockReadGuard<'_, HashMap<ChunkKey, V>> {
        self.shards[key.shard(SHARDS)]
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, key: &ChunkKey) -> RwLockWriteGuard<'_, HashMap<ChunkKey, V>> {
        self.shards[key.shard(SHARDS)]
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// A clone of the value for `key`.
    pub fn get(&self, key: &ChunkKey) -> Option<V> {
        self.read(key).get(key).cloned()
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &ChunkKey) -> bool {
        self.read(key).contains_key(key)
    }

    /// Inserts, returning the value it replaced.
    pub fn insert(&self, key: ChunkKey, v: V) -> Option<V> {
        self.write(&key).insert(key, v)
    }

    /// Removes `key` if `pred` holds for its value.
    pub fn remove_if(&self, key: &ChunkKey, pred: impl FnOnce(&V) -> bool) -> Option<V> {
        let mut shard = self.write(key);
        if shard.get(key).is_some_and(pred) {
            shard.remove(key)
        } else {
            None
        }
    }

    /// Calls `f` on every entry, one shard (read-locked) at a time.
    pub fn for_each(&self, mut f: impl FnMut(&ChunkKey, &V)) {
        for shard in self.shards.iter() {
            for (k, v) in shard.read().unwrap_or_else(|p| p.into_inner()).iter() {
                f(k, v);
            }
        }
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

impl<V: Clone> Default for Shards<V> {
    fn default() -> Self {
        Shards::new()
    }
}

/// The lowest-ranked chunks of a tier as of the last scan, lowest last (so `pop` is cheap).
#[derive(Debug, Default)]
pub struct VictimPool {
    ranked: Vec<(Priority, ChunkKey)>,
    ceiling: Option<Priority>,
}

impl VictimPool {
    /// Replaces the pool with the [`POOL`] lowest of `all`.
    pub fn refill(&mut self, mut all: Vec<(Priority, ChunkKey)>) {
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        all.truncate(POOL);
        self.ceiling = all.last().map(|(p, _)| *p);
        all.reverse();
        self.ranked = all;
    }

    /// The next candidate, lowest first; `rank_now` re-ranks it (None: it left the tier).
    /// Candidates that rose above the pool's ceiling since the scan are skipped.
    pub fn next(
        &mut self,
        rank_now: impl Fn(&ChunkKey) -> Option<Priority>,
    ) -> Option<(Priority, ChunkKey)> {
        while let Some((_, key)) = self.ranked.pop() {
            let Some(p) = rank_now(&key) else { continue };
            if self.ceiling.is_some_and(|c| p > c) {
                continue;
            }
            return Some((p, key));
        }
        None
    }

    /// Puts back a candidate that was looked at but not taken.
    pub fn put_back(&mut self, p: Priority, key: ChunkKey) {
        self.ranked.push((p, key));
    }
}

impl VictimPool {
    /// Evicts candidates, lowest first, until `evict` reports that enough room is made (true).
    /// With `incoming` set, stops (false) rather than evict a chunk ranked above it: a demoted
    /// or promoted chunk does not displace better ones (on a tie it does, so equally ranked
    /// chunks flow down the tiers oldest first). False also when the tier has
    /// nothing left to evict. `scan` ranks the whole tier (at most once per call).
    pub fn evict_until(
        &mut self,
        scan: impl FnOnce() -> Vec<(Priority, ChunkKey)>,
        rank: impl Fn(&ChunkKey) -> Option<Priority>,
        incoming: Option<Priority>,
        mut evict: impl FnMut(ChunkKey) -> bool,
    ) -> bool {
        let mut scan = Some(scan);
        loop {
            let Some((p, key)) = self.next(&rank) else {
                match scan.take() {
                    Some(s) => {
                        self.refill(s());
                        continue;
                    }
                    None => return false,
                }
            };
            if incoming.is_some_and(|inc| p > inc) {
                self.put_back(p, key);
                return false;
            }
            if evict(key) {
                return true;
            }
        }
    }
}
