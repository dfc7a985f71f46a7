//! [`ChunkCache`]'s operations: lookups with promotion, admission with demotion, references,
//! eviction on request and status.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::hdd::{HddRead, HddTier};
use super::key::{ChunkKey, Verified};
use super::nvme::{NvmeTier, NvmeVictim, Slot};
use super::policy::{Clock, Meta};
use super::ram::{RamChunk, RamTier};
use super::shards::Shards;
use super::{
    Admission, CacheError, CacheSettings, CacheStatus, Chunk, ChunkCache, Ctx, Evicted, Tier,
    TierCounters, TierStatus,
};

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl ChunkCache {
    /// Opens the tiers `settings` enables (budget above 0), loading what the NVMe and spill
    /// tiers hold from earlier runs.
    pub fn open(settings: &CacheSettings) -> Result<ChunkCache, CacheError> {
        check_thresholds(settings.ram_threshold, settings.nvme_threshold)?;
        let ctx = Ctx {
            clock: Clock::new(),
            policy: settings.policy,
            refs: Shards::new(),
        };
        let now = ctx.clock.now();
        let nvme = match settings.nvme_bytes {
            0 => None,
            b => Some(NvmeTier::open(&settings.nvme_path, b, now)?),
        };
        let hdd = match settings.hdd_bytes {
            0 => None,
            b => Some((
                HddTier::open(&settings.hdd_path, b, now, &ctx)?,
                settings.hdd_path.clone(),
            )),
        };
        Ok(ChunkCache {
            ram: (settings.ram_bytes > 0).then(|| RamTier::new(settings.ram_bytes)),
            nvme,
            hdd,
            ctx,
            ram_threshold: AtomicU32::new(settings.ram_threshold.to_bits()),
            nvme_threshold: AtomicU32::new(settings.nvme_threshold.to_bits()),
            promote_after: settings.promote_after_hits.max(1),
            misses: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        })
    }

    pub(super) fn hdd(&self) -> Option<&HddTier> {
        self.hdd.as_ref().map(|(t, _)| t)
    }

    /// The chunk, from whichever tier holds it; `None` on a miss (also when a stored copy
    /// failed verification: it is dropped, and the caller fetches the chunk again).
    pub fn get(&self, key: &ChunkKey) -> Option<Chunk> {
        let now = self.ctx.clock.now();
        let policy = &self.ctx.policy;
        if let Some(ram) = &self.ram
            && let Some(c) = ram.get(key)
        {
            c.meta.touch(now, policy);
            bump(&ram.counters.hits);
            return Some(Chunk::Ram(c));
        }
        if let Some(nvme) = &self.nvme
            && let Some(slot) = nvme.get(key)
        {
            if !nvme.verify(key, &slot) {
                bump(&self.corrupt);
                bump(&self.misses);
                return None;
            }
            let hits = slot.meta.touch(now, policy);
            bump(&nvme.counters.hits);
            if hits % self.promote_after == 0
                && let Some(c) = self.promote_from_nvme(key, &slot)
            {
                return Some(Chunk::Ram(c));
            }
            return Some(Chunk::Nvme(slot));
        }
        if let Some(hdd) = self.hdd() {
            let can_promote = self.ram.is_some() || self.nvme.is_some();
            let every = self.promote_after;
            // The first hit in the tier, and every `every`-th after, reads the chunk whole and
            // tries to move it up; other hits read just the range.
            let promote_now = |m: &Meta| {
                can_promote && (m.tier_hits() == 0 || (m.tier_hits() + 1).is_multiple_of(every))
            };
            match hdd.read(key, promote_now) {
                HddRead::Whole(bytes, meta) => {
                    meta.touch(now, policy);
                    bump(&hdd.counters.hits);
                    if can_promote {
                        self.promote_from_hdd(key, &bytes, &meta);
                    }
                    return Some(Chunk::Spill(bytes.into()));
                }
                HddRead::Open(file, meta) => {
                    meta.touch(now, policy);
                    bump(&hdd.counters.hits);
                    return Some(Chunk::SpillFile(file));
                }
                HddRead::Corrupt => bump(&self.corrupt),
                HddRead::Miss => {}
            }
        }
        bump(&self.misses);
        None
    }

    /// Whether any tier holds the chunk (no side effects).
    pub fn contains(&self, key: &ChunkKey) -> bool {
        self.ram.as_ref().is_some_and(|t| t.contains(key))
            || self.nvme.as_ref().is_some_and(|t| t.contains(key))
            || self.hdd().is_some_and(|t| t.contains(key))
    }

    /// Stores a verified chunk where `admission` says; returns the tier that took it (`None`
    /// if none could: too big for every tier). A chunk already cached stays where it is (a
    /// prefetch only raises its predicted probability).
    pub fn insert(&self, chunk: Verified<'_>, admission: Admission) -> Option<Tier> {
        let score = match admission {
            Admission::Demand => 1.0,
            Admission::Prefetch { probability } => probability.clamp(0.0, 1.0),
            Admission::Background => 0.0,
        };
        if let Some(tier) = self.tier_of(&chunk.key()) {
            if let Some(meta) = self.meta_of(&chunk.key()) {
                meta.raise_score(score);
            }
            return Some(tier);
        }
        let meta = Arc::new(Meta::new(self.ctx.clock.now(), score));
        let preferred = match admission {
            Admission::Demand => Tier::Ram,
            Admission::Prefetch { probability } if probability >= self.thresholds().0 => Tier::Ram,
            Admission::Prefetch { probability } if probability >= self.thresholds().1 => Tier::Nvme,
            Admission::Prefetch { .. } | Admission::Background => Tier::Hdd,
        };
        for tier in self.fallbacks(preferred) {
            if self.store(tier, chunk, &meta, false) {
                return Some(tier);
            }
        }
        bump(&self.rejected);
        None
    }

    /// The budget of the tier chunks admitted as `admission` land in (0 if no tier is on): a
    /// caller can tell whether a whole layer would fit before streaming it in.
    pub fn admission_budget(&self, admission: Admission) -> u64 {
        let budget = |t: Tier| match t {
            Tier::Ram => self.ram.as_ref().map_or(0, RamTier::budget),
            Tier::Nvme => self.nvme.as_ref().map_or(0, NvmeTier::budget),
            Tier::Hdd => self.hdd().map_or(0, HddTier::budget),
        };
        self.fallbacks(self.preferred_tier(admission))
            .first()
            .map_or(0, |&t| budget(t))
    }

    /// The tier `admission` asks for (before disabled tiers are skipped).
    fn preferred_tier(&self, admission: Admission) -> Tier {
        let (ram, nvme) = self.thresholds();
        match admission {
            Admission::Demand => Tier::Ram,
            Admission::Prefetch { probability } if probability >= ram => Tier::Ram,
            Admission::Prefetch { probability } if probability >= nvme => Tier::Nvme,
            Admission::Prefetch { .. } | Admission::Background => Tier::Hdd,
        }
    }

    /// `preferred`, then the enabled tiers below it, then those above it (nearest first).
    fn fallbacks(&self, preferred: Tier) -> Vec<Tier> {
        let enabled = |t: &Tier| match t {
            Tier::Ram => self.ram.is_some(),
            Tier::Nvme => self.nvme.is_some(),
            Tier::Hdd => self.hdd.is_some(),
        };
        let all = [Tier::Ram, Tier::Nvme, Tier::Hdd];
        let below = all.iter().filter(|t| **t >= preferred);
        let above = all.iter().rev().filter(|t| **t < preferred);
        below.chain(above).copied().filter(enabled).collect()
    }

    /// Puts `chunk` in `tier` and settles the chunks it displaces. `conditional`: only if it
    /// outranks every chunk it would displace (promotion and demotion); otherwise forced.
    fn store(&self, tier: Tier, chunk: Verified<'_>, meta: &Arc<Meta>, conditional: bool) -> bool {
        let incoming = conditional.then(|| self.ctx.rank(&chunk.key(), meta));
        match tier {
            Tier::Ram => {
                let Some(ram) = &self.ram else { return false };
                let mut victims = Vec::new();
                let ok = ram.insert(chunk, meta, incoming, &self.ctx, &mut victims);
                for (k, c) in victims {
                    self.demote(Tier::Ram, Verified::trusted(k, &c.bytes), &c.meta);
                }
                ok
            }
            Tier::Nvme => {
                let Some(nvme) = &self.nvme else { return false };
                let mut victims: Vec<NvmeVictim> = Vec::new();
                let ok = nvme.insert(chunk, meta, incoming, &self.ctx, &mut victims);
                for (k, bytes, m) in victims {
                    self.demote(Tier::Nvme, Verified::trusted(k, &bytes), &m);
                }
                ok
            }
            Tier::Hdd => self
                .hdd()
                .is_some_and(|h| h.insert(chunk, meta, incoming, &self.ctx)),
        }
    }

    /// Moves an evicted chunk down to the first enabled tier below `from` that takes it.
    fn demote(&self, from: Tier, chunk: Verified<'_>, meta: &Arc<Meta>) {
        let below: &[Tier] = match from {
            Tier::Ram => &[Tier::Nvme, Tier::Hdd],
            Tier::Nvme => &[Tier::Hdd],
            Tier::Hdd => &[],
        };
        for &t in below {
            if self.store(t, chunk, meta, true) {
                if let Some(c) = self.counters(t) {
                    bump(&c.demotions);
                }
                return;
            }
        }
    }

    /// Moves a chunk hit in NVMe up to RAM if it outranks what it would displace there. It
    /// leaves NVMe first, so the move never needs room in both tiers at once (which would push
    /// an innocent chunk down or out); if RAM refuses it, it goes back.
    fn promote_from_nvme(&self, key: &ChunkKey, slot: &Arc<Slot>) -> Option<Arc<RamChunk>> {
        let ram = self.ram.as_ref()?;
        let nvme = self.nvme.as_ref()?;
        nvme.remove(key, Some(slot))?;
        let bytes = slot.to_vec();
        let chunk = Verified::trusted(*key, &bytes);
        if self.store(Tier::Ram, chunk, &slot.meta, true) {
            bump(&nvme.counters.promotions);
            return ram.get(key);
        }
        self.store(Tier::Nvme, chunk, &slot.meta, false);
        None
    }

    /// Moves a chunk hit in the spill tier up to NVMe (or RAM), on the same terms.
    fn promote_from_hdd(&self, key: &ChunkKey, bytes: &[u8], meta: &Arc<Meta>) {
        let Some(hdd) = self.hdd() else { return };
        if !hdd.remove(key) {
            return;
        }
        let chunk = Verified::trusted(*key, bytes);
        if [Tier::Nvme, Tier::Ram]
            .iter()
            .any(|&t| self.store(t, chunk, meta, true))
        {
            bump(&hdd.counters.promotions);
        } else {
            self.store(Tier::Hdd, chunk, meta, false);
        }
    }

    /// The tier holding the chunk, if any (no side effects).
    pub fn tier_of(&self, key: &ChunkKey) -> Option<Tier> {
        if self.ram.as_ref().is_some_and(|t| t.contains(key)) {
            Some(Tier::Ram)
        } else if self.nvme.as_ref().is_some_and(|t| t.contains(key)) {
            Some(Tier::Nvme)
        } else if self.hdd().is_some_and(|t| t.contains(key)) {
            Some(Tier::Hdd)
        } else {
            None
        }
    }

    fn meta_of(&self, key: &ChunkKey) -> Option<Arc<Meta>> {
        if let Some(c) = self.ram.as_ref().and_then(|t| t.get(key)) {
            return Some(Arc::clone(&c.meta));
        }
        self.nvme
            .as_ref()
            .and_then(|t| t.get(key))
            .map(|s| Arc::clone(&s.meta))
    }

    fn counters(&self, tier: Tier) -> Option<&TierCounters> {
        match tier {
            Tier::Ram => self.ram.as_ref().map(|t| &t.counters),
            Tier::Nvme => self.nvme.as_ref().map(|t| &t.counters),
            Tier::Hdd => self.hdd().map(|t| &t.counters),
        }
    }

    /// A mounted layer uses these chunks: they rank above unreferenced ones until released.
    pub fn reference(&self, keys: &[ChunkKey]) {
        for k in keys {
            let n = self.ctx.refs.get(k).unwrap_or(0);
            self.ctx.refs.insert(*k, n + 1);
        }
    }

    /// A layer using these chunks went away; chunks no other layer uses become garbage (the
    /// first to be evicted).
    pub fn release(&self, keys: &[ChunkKey]) {
        for k in keys {
            match self.ctx.refs.get(k) {
                Some(n) if n > 1 => {
                    self.ctx.refs.insert(*k, n - 1);
                }
                Some(_) => {
                    self.ctx.refs.remove_if(k, |_| true);
                }
                None => {}
            }
        }
    }

    /// Drops every chunk no mounted layer references, from every tier.
    pub fn evict_unreferenced(&self) -> Evicted {
        let garbage = |k: &ChunkKey| self.ctx.refs.get(k).is_none_or(|n| n == 0);
        let mut chunks = 0;
        if let Some(ram) = &self.ram {
            chunks += ram.remove_where(garbage).len() as u64;
        }
        if let Some(nvme) = &self.nvme {
            chunks += nvme.remove_where(garbage) as u64;
        }
        if let Some(hdd) = self.hdd() {
            chunks += hdd.remove_where(garbage) as u64;
        }
        Evicted { chunks }
    }

    /// Drops every chunk from every tier (referenced chunks are fetched again when read).
    pub fn evict_all(&self) -> Evicted {
        let mut chunks = 0;
        if let Some(ram) = &self.ram {
            chunks += ram.remove_where(|_| true).len() as u64;
        }
        if let Some(nvme) = &self.nvme {
            chunks += nvme.remove_where(|_| true) as u64;
        }
        if let Some(hdd) = self.hdd() {
            chunks += hdd.remove_where(|_| true) as u64;
        }
        Evicted { chunks }
    }

    /// Current (RAM, NVMe) admission thresholds.
    pub fn thresholds(&self) -> (f32, f32) {
        (
            f32::from_bits(self.ram_threshold.load(Ordering::Relaxed)),
            f32::from_bits(self.nvme_threshold.load(Ordering::Relaxed)),
        )
    }

    /// Changes the admission thresholds at run time.
    pub fn set_thresholds(&self, ram: f32, nvme: f32) -> Result<(), CacheError> {
        check_thresholds(ram, nvme)?;
        self.ram_threshold.store(ram.to_bits(), Ordering::Relaxed);
        self.nvme_threshold.store(nvme.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// Budgets, use and counters of every enabled tier.
    pub fn status(&self) -> CacheStatus {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let tier = |tier: Tier, path, budget, used, chunks, c: &TierCounters| TierStatus {
            tier,
            path,
            budget_bytes: budget,
            used_bytes: used,
            chunks,
            hits: load(&c.hits),
            inserts: load(&c.inserts),
            evictions: load(&c.evictions),
            promotions: load(&c.promotions),
            demotions: load(&c.demotions),
        };
        let mut tiers = Vec::new();
        if let Some(t) = &self.ram {
            tiers.push(tier(
                Tier::Ram,
                None,
                t.budget(),
                t.used(),
                t.len() as u64,
                &t.counters,
            ));
        }
        if let Some(t) = &self.nvme {
            tiers.push(tier(
                Tier::Nvme,
                Some(t.path().to_path_buf()),
                t.budget(),
                t.used(),
                t.len() as u64,
                &t.counters,
            ));
        }
        if let Some((t, p)) = &self.hdd {
            tiers.push(tier(
                Tier::Hdd,
                Some(p.clone()),
                t.budget(),
                t.used(),
                t.len() as u64,
                &t.counters,
            ));
        }
        let (ram_threshold, nvme_threshold) = self.thresholds();
        CacheStatus {
            policy: self.ctx.policy.name().to_owned(),
            ram_threshold,
            nvme_threshold,
            tiers,
            misses: load(&self.misses),
            corrupt: load(&self.corrupt),
            rejected: load(&self.rejected),
            referenced_chunks: self.ctx.refs.len() as u64,
        }
    }
}

fn check_thresholds(ram: f32, nvme: f32) -> Result<(), CacheError> {
    if (0.0..=1.0).contains(&nvme) && (nvme..=1.0).contains(&ram) {
        Ok(())
    } else {
        Err(CacheError::Thresholds { ram, nvme })
    }
}
