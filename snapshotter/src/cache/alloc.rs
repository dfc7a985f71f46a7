//! Space in the NVMe tier's file: a best-fit extent allocator over 4 KiB blocks.
//!
//! Chunks vary in size (a few bytes to the eStargz chunk size, 4 MiB by default), so the file is
//! carved into extents of whole blocks. Free space is kept twice: by start (to merge a freed
//! extent with its free neighbours, so fragmentation heals as chunks leave) and by length (to
//! find the smallest extent that fits, which keeps large holes for large chunks). When no single
//! hole fits although enough space is free in total, the tier evicts more chunks; their extents
//! coalesce until one does (see `nvme.rs`). Pure logic, no I/O.

use std::collections::{BTreeMap, BTreeSet};

/// Allocation unit, in bytes.
pub const BLOCK: u64 = 4096;

/// A run of whole blocks: `start` and `len` in blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Extent {
    /// First block.
    pub start: u64,
    /// Number of blocks.
    pub len: u64,
}

impl Extent {
    /// Byte offset in the file.
    pub fn offset(&self) -> u64 {
        self.start * BLOCK
    }

    /// Blocks needed for `bytes` (at least one, so every chunk has a distinct place).
    pub fn blocks_for(bytes: u64) -> u64 {
        bytes.div_ceil(BLOCK).max(1)
    }

    fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// Free space of a file of `total` blocks.
#[derive(Debug)]
pub struct ExtentAllocator {
    total: u64,
    free_blocks: u64,
    by_start: BTreeMap<u64, u64>,
    by_len: BTreeSet<(u64, u64)>,
}

impl ExtentAllocator {
    /// All of `total` blocks free.
    pub fn new(total: u64) -> ExtentAllocator {
        let mut a = ExtentAllocator {
            total,
            free_blocks: 0,
            by_start: BTreeMap::new(),
            by_len: BTreeSet::new(),
        };
        if total > 0 {
            a.insert_free(Extent {
                start: 0,
                len: total,
            });
        }
        a
    }

    /// Blocks in the file.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Blocks free, in all holes together.
    pub fn free_blocks(&self) -> u64 {
        self.free_blocks
    }

    /// The largest hole, in blocks.
    pub fn largest_hole(&self) -> u64 {
        self.by_len.last().map_or(0, |&(len, _)| len)
    }

    /// The smallest hole of at least `len` blocks, split off at its start.
    pub fn allocate(&mut self, len: u64) -> Option<Extent> {
        let &(hole_len, start) = self.by_len.range((len, 0)..).next()?;
        self.remove_free(Extent {
            start,
            len: hole_len,
        });
        if hole_len > len {
            self.insert_free(Extent {
                start: start + len,
                len: hole_len - len,
            });
        }
        Some(Extent { start, len })
    }

    /// Claims a specific extent (rebuilding the map from the journal). False if any of it is
    /// not free: the caller then drops that record.
    pub fn claim(&mut self, e: Extent) -> bool {
        if e.len == 0 || e.end() > self.total {
            return false;
        }
        let Some((&hs, &hl)) = self.by_start.range(..=e.start).next_back() else {
            return false;
        };
        let hole = Extent { start: hs, len: hl };
        if hole.end() < e.end() {
            return false;
        }
        self.remove_free(hole);
        if hole.start < e.start {
            self.insert_free(Extent {
                start: hole.start,
                len: e.start - hole.start,
            });
        }
        if e.end() < hole.end() {
            self.insert_free(Extent {
                start: e.end(),
                len: hole.end() - e.end(),
            });
        }
        true
    }

    /// Returns `e` to the free space, merged with free neighbours.
    pub fn free(&mut self, e: Extent) {
        debug_assert!(e.end() <= self.total);
        let mut merged = e;
        if let Some((&ps, &pl)) = self.by_start.range(..e.start).next_back()
            && ps + pl == e.start
        {
            self.remove_free(Extent { start: ps, len: pl });
            merged = Extent {
                start: ps,
                len: pl + merged.len,
            };
        }
        if let Some(&nl) = self.by_start.get(&e.end()) {
            self.remove_free(Extent {
                start: e.end(),
                len: nl,
            });
            merged.len += nl;
        }
        self.insert_free(merged);
    }

    fn insert_free(&mut self, e: Extent) {
        self.by_start.insert(e.start, e.len);
        self.by_len.insert((e.len, e.start));
        self.free_blocks += e.len;
    }

    fn remove_free(&mut self, e: Extent) {
        self.by_start.remove(&e.start);
        self.by_len.remove(&(e.len, e.start));
        self.free_blocks -= e.len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_fit_keeps_the_big_hole() {
        let mut a = ExtentAllocator::new(100);
        let x = a.allocate(10).unwrap();
        let y = a.allocate(5).unwrap();
        let _z = a.allocate(10).unwrap();
        a.free(y); // a 5-block hole between x and z, and a 75-block tail
        let w = a.allocate(4).unwrap();
        assert_eq!(
            w.start, y.start,
            "the small hole is used for the small chunk"
        );
        assert_eq!(a.largest_hole(), 75);
        assert_eq!(x.start, 0);
    }

    #[test]
    fn freed_neighbours_coalesce() {
        let mut a = ExtentAllocator::new(30);
        let xs: Vec<_> = (0..3).map(|_| a.allocate(10).unwrap()).collect();
        assert_eq!(a.allocate(1), None, "full");
        a.free(xs[0]);
        a.free(xs[2]);
        assert_eq!(a.largest_hole(), 10, "two separate holes");
        assert_eq!(a.allocate(20), None);
        a.free(xs[1]);
        assert_eq!(a.largest_hole(), 30, "all three merged");
        assert_eq!(a.free_blocks(), 30);
        assert_eq!(a.allocate(30).map(|e| e.start), Some(0));
    }

    #[test]
    fn claim_takes_exactly_what_is_free() {
        let mut a = ExtentAllocator::new(20);
        assert!(a.claim(Extent { start: 5, len: 5 }));
        assert!(
            !a.claim(Extent { start: 8, len: 4 }),
            "overlaps a claimed extent"
        );
        assert!(!a.claim(Extent { start: 18, len: 5 }), "past the end");
        assert!(a.claim(Extent { start: 10, len: 10 }));
        assert_eq!(a.free_blocks(), 5);
        assert_eq!(a.allocate(5).map(|e| e.start), Some(0));
    }

    #[test]
    fn random_churn_never_loses_or_double_counts_a_block() {
        let mut a = ExtentAllocator::new(1000);
        let mut live: Vec<Extent> = Vec::new();
        let mut seed = 0x2545_f491_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            if next() % 3 == 0 && !live.is_empty() {
                let i = (next() as usize) % live.len();
                a.free(live.swap_remove(i));
            } else if let Some(e) = a.allocate(1 + next() % 40) {
                live.push(e);
            }
            let used: u64 = live.iter().map(|e| e.len).sum();
            assert_eq!(used + a.free_blocks(), 1000);
        }
        let mut sorted = live.clone();
        sorted.sort();
        for w in sorted.windows(2) {
            assert!(w[0].end() <= w[1].start, "overlap: {w:?}");
        }
        for e in live {
            a.free(e);
        }
        assert_eq!(a.largest_hole(), 1000, "everything coalesces back");
    }
}
