//! The cache as a whole, on real files: admission, demotion, promotion, policies, budgets,
//! persistence across reopen and `kill -9`, corruption, garbage, and concurrent use.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;

const KIB: u64 = 1024;

fn settings(dir: &Path, ram: u64, nvme: u64, hdd: u64) -> CacheSettings {
    CacheSettings {
        ram_bytes: ram,
        nvme_path: dir.join("nvme.cache"),
        nvme_bytes: nvme,
        hdd_path: dir.join("spill"),
        hdd_bytes: hdd,
        policy: Policy::LfuDecay {
            half_life: Duration::from_secs(600),
        },
        ram_threshold: 0.8,
        nvme_threshold: 0.4,
        promote_after_hits: 2,
    }
}

/// Deterministic chunk `n` of `len` bytes.
fn bytes(n: u32, len: usize) -> Vec<u8> {
    let mut x = n.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn put(c: &ChunkCache, b: &[u8], a: Admission) -> (ChunkKey, Option<Tier>) {
    let k = ChunkKey::of(b);
    (k, c.insert(Verified::check(k, b).unwrap(), a))
}

fn read_all(chunk: &Chunk) -> Vec<u8> {
    let mut v = vec![0; chunk.len() as usize];
    assert_eq!(chunk.read_at(0, &mut v), v.len());
    v
}

fn tier_status(c: &ChunkCache, t: Tier) -> TierStatus {
    c.status().tiers.into_iter().find(|s| s.tier == t).unwrap()
}

fn assert_within_budgets(c: &ChunkCache) {
    for t in c.status().tiers {
        assert!(
            t.used_bytes <= t.budget_bytes,
            "{:?} uses {} of {}",
            t.tier,
            t.used_bytes,
            t.budget_bytes
        );
    }
}

#[test]
fn a_demand_chunk_is_served_from_ram_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let c = ChunkCache::open(&settings(dir.path(), 1 << 20, 1 << 20, 1 << 20)).unwrap();
    let b = bytes(1, 10_000);
    let (k, tier) = put(&c, &b, Admission::Demand);
    assert_eq!(tier, Some(Tier::Ram));
    let got = c.get(&k).unwrap();
    assert_eq!(got.tier(), Tier::Ram);
    assert_eq!(read_all(&got), b);
    let mut tail = [0u8; 100];
    assert_eq!(got.read_at(9_950, &mut tail), 50, "short read at the end");
    assert_eq!(&tail[..50], &b[9_950..]);
    assert!(c.get(&ChunkKey::of(b"absent")).is_none());
    assert_eq!(c.status().misses, 1);
}

#[test]
fn prefetches_land_in_the_tier_their_probability_earns() {
    let dir = tempfile::tempdir().unwrap();
    let c = ChunkCache::open(&settings(dir.path(), 1 << 20, 1 << 20, 1 << 20)).unwrap();
    let p = |probability| Admission::Prefetch { probability };
    assert_eq!(put(&c, &bytes(1, 100), p(0.9)).1, Some(Tier::Ram));
    assert_eq!(put(&c, &bytes(2, 100), p(0.5)).1, Some(Tier::Nvme));
    assert_eq!(put(&c, &bytes(3, 100), p(0.1)).1, Some(Tier::Hdd));
    assert_eq!(
        put(&c, &bytes(4, 100), Admission::Background).1,
        Some(Tier::Hdd)
    );
    c.set_thresholds(0.95, 0.05).unwrap();
    assert_eq!(put(&c, &bytes(5, 100), p(0.9)).1, Some(Tier::Nvme));
    assert_eq!(put(&c, &bytes(6, 100), p(0.1)).1, Some(Tier::Nvme));
    assert!(c.set_thresholds(0.3, 0.5).is_err(), "nvme above ram");
    assert!(c.set_thresholds(1.5, 0.5).is_err());
    assert_eq!(c.thresholds(), (0.95, 0.05));
}

#[test]
fn a_disabled_tier_sends_chunks_to_the_nearest_enabled_one() {
    let dir = tempfile::tempdir().unwrap();
    let c = ChunkCache::open(&settings(dir.path(), 0, 1 << 20, 0)).unwrap();
    assert_eq!(
        put(&c, &bytes(1, 100), Admission::Demand).1,
        Some(Tier::Nvme)
    );
    assert_eq!(
        put(&c, &bytes(2, 100), Admission::Background).1,
        Some(Tier::Nvme)
    );
    assert_eq!(c.status().tiers.len(), 1);
}

#[test]
fn eviction_demotes_ram_to_nvme_to_hdd_and_then_drops() {
    let dir = tempfile::tempdir().unwrap();
    // RAM holds 4 chunks, NVMe 4, HDD 4.
    let c = ChunkCache::open(&settings(dir.path(), 16 * KIB, 16 * KIB, 16 * KIB)).unwrap();
    let keys: Vec<ChunkKey> = (0..16)
        .map(|n| put(&c, &bytes(n, 4096), Admission::Demand).0)
        .collect();
    assert_within_budgets(&c);
    let s = c.status();
    let chunks: Vec<u64> = s.tiers.iter().map(|t| t.chunks).collect();
    assert_eq!(chunks, vec![4, 4, 4], "each tier full");
    // The newest are in RAM, the oldest gone.
    assert!(keys[..4].iter().all(|k| !c.contains(k)));
    assert!(tier_status(&c, Tier::Nvme).demotions >= 4);
    assert!(tier_status(&c, Tier::Hdd).demotions >= 4);
    for (n, k) in keys.iter().enumerate().skip(4) {
        assert_eq!(read_all(&c.get(k).unwrap()), bytes(n as u32, 4096));
    }
}

#[test]
fn hits_promote_a_chunk_up_the_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let c = ChunkCache::open(&settings(dir.path(), 1 << 20, 1 << 20, 1 << 20)).unwrap();
    let (k, tier) = put(&c, &bytes(1, 5000), Admission::Background);
    assert_eq!(tier, Some(Tier::Hdd));
    assert_eq!(
        c.get(&k).unwrap().tier(),
        Tier::Hdd,
        "served from where it was"
    );
    assert_eq!(c.tier_of(&k), Some(Tier::Nvme), "and moved up");
    assert_eq!(c.get(&k).unwrap().tier(), Tier::Nvme);
    // The second hit in NVMe promotes it to RAM.
    assert_eq!(c.get(&k).unwrap().tier(), Tier::Ram);
    assert_eq!(read_all(&c.get(&k).unwrap()), bytes(1, 5000));
    assert_eq!(tier_status(&c, Tier::Hdd).promotions, 1);
    assert_eq!(tier_status(&c, Tier::Nvme).promotions, 1);
    assert_eq!(
        tier_status(&c, Tier::Hdd).chunks,
        0,
        "a chunk lives in one tier"
    );
    assert_eq!(tier_status(&c, Tier::Nvme).chunks, 0);
}

fn policy_cache(dir: &Path, policy: Policy) -> ChunkCache {
    let mut s = settings(dir, 3 * 4096, 0, 0);
    s.policy = policy;
    ChunkCache::open(&s).unwrap()
}

#[test]
fn lru_evicts_the_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let c = policy_cache(dir.path(), Policy::Lru);
    let a = put(&c, &bytes(1, 4096), Admission::Demand).0;
    std::thread::sleep(policy::TICK * 2);
    let b = put(&c, &bytes(2, 4096), Admission::Demand).0;
    std::thread::sleep(policy::TICK * 2);
    let cc = put(&c, &bytes(3, 4096), Admission::Demand).0;
    std::thread::sleep(policy::TICK * 2);
    c.get(&a);
    std::thread::sleep(policy::TICK * 2);
    put(&c, &bytes(4, 4096), Admission::Demand);
    assert!(
        c.contains(&a) && c.contains(&cc),
        "a was used last, c after b"
    );
    assert!(!c.contains(&b), "b is the least recently used");
}

#[test]
fn lfu_keeps_the_frequently_used() {
    let dir = tempfile::tempdir().unwrap();
    let c = policy_cache(
        dir.path(),
        Policy::LfuDecay {
            half_life: Duration::from_secs(600),
        },
    );
    let keys: Vec<_> = (0..3)
        .map(|n| put(&c, &bytes(n, 4096), Admission::Demand).0)
        .collect();
    for _ in 0..5 {
        c.get(&keys[0]);
        c.get(&keys[2]);
    }
    put(&c, &bytes(9, 4096), Admission::Demand);
    assert!(!c.contains(&keys[1]), "the one read least often goes");
    assert!(c.contains(&keys[0]) && c.contains(&keys[2]));
}

#[test]
fn score_keeps_the_likely_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), 0, 3 * 4096, 0);
    s.policy = Policy::Score;
    let c = ChunkCache::open(&s).unwrap();
    let p = |probability| Admission::Prefetch { probability };
    let likely = put(&c, &bytes(1, 4096), p(0.7)).0;
    let unlikely = put(&c, &bytes(2, 4096), p(0.41)).0;
    let middling = put(&c, &bytes(3, 4096), p(0.6)).0;
    put(&c, &bytes(4, 4096), p(0.5));
    assert!(!c.contains(&unlikely));
    assert!(c.contains(&likely) && c.contains(&middling));
}

#[test]
fn unreferenced_chunks_go_first_and_can_be_dropped_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = ChunkCache::open(&settings(dir.path(), 0, 4 * 4096, 0)).unwrap();
    let keys: Vec<_> = (0..4)
        .map(|n| put(&c, &bytes(n, 4096), Admission::Demand).0)
        .collect();
    for _ in 0..10 {
        c.get(&keys[3]); // hot, but about to become garbage
    }
    c.reference(&keys[..3]);
    c.reference(&keys[..1]); // a second layer shares chunk 0
    put(&c, &bytes(9, 4096), Admission::Demand);
    assert!(
        !c.contains(&keys[3]),
        "the garbage chunk went first despite its hits"
    );
    c.release(&keys[..3]);
    assert_eq!(
        c.status().referenced_chunks,
        1,
        "chunk 0 is still used by the other layer"
    );
    assert_eq!(c.evict_unreferenced().chunks, 3, "chunks 1, 2 and 9");
    assert!(c.contains(&keys[0]));
    assert_eq!(tier_status(&c, Tier::Nvme).chunks, 1);
}

#[test]
fn no_budget_is_ever_exceeded_far_past_every_budget() {
    let dir = tempfile::tempdir().unwrap();
    let c = ChunkCache::open(&settings(dir.path(), 64 * KIB, 256 * KIB, 512 * KIB)).unwrap();
    let kinds = [
        Admission::Demand,
        Admission::Prefetch { probability: 0.9 },
        Admission::Prefetch { probability: 0.5 },
        Admission::Prefetch { probability: 0.1 },
        Admission::Background,
    ];
    let mut written = 0u64;
    for n in 0..2000u32 {
        let len = 1 + (n as usize * 7919) % (48 * 1024);
        written += len as u64;
        let (k, _) = put(&c, &bytes(n, len), kinds[n as usize % kinds.len()]);
        if n % 3 == 0 {
            c.get(&k);
        }
        assert_within_budgets(&c);
    }
    assert!(
        written > 40 * (832 * KIB),
        "wrote {written} bytes, far past the budgets"
    );
    // On disk too: the NVMe file is its budget, the spill directory within its own.
    assert_eq!(
        std::fs::metadata(dir.path().join("nvme.cache"))
            .unwrap()
            .len(),
        256 * KIB
    );
    let spilled: u64 = walk(&dir.path().join("spill"))
        .iter()
        .map(|len| len.div_ceil(4096) * 4096)
        .sum();
    assert!(spilled <= 512 * KIB, "spill dir holds {spilled}");
    assert_eq!(spilled, tier_status(&c, Tier::Hdd).used_bytes);
}

fn walk(dir: &Path) -> Vec<u64> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        if m.is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(m.len());
        }
    }
    out
}

#[test]
fn a_fragmented_nvme_tier_still_admits_a_large_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let c = ChunkCache::open(&settings(dir.path(), 0, 64 * KIB, 0)).unwrap();
    // 16 one-block chunks fill it; every other one is then read often, leaving 4 KiB holes
    // between hot chunks once the cold ones go.
    let keys: Vec<_> = (0..16)
        .map(|n| put(&c, &bytes(n, 4000), Admission::Demand).0)
        .collect();
    for k in keys.iter().step_by(2) {
        for _ in 0..3 {
            c.get(k);
        }
    }
    let (big, tier) = put(&c, &bytes(99, 20_000), Admission::Demand);
    assert_eq!(
        tier,
        Some(Tier::Nvme),
        "evicting enough neighbours makes a 5-block hole"
    );
    assert_eq!(read_all(&c.get(&big).unwrap()), bytes(99, 20_000));
    assert_within_budgets(&c);
}

#[test]
fn nvme_and_hdd_tiers_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 20, 1 << 20, 1 << 20);
    let c = ChunkCache::open(&s).unwrap();
    let n = put(
        &c,
        &bytes(1, 9000),
        Admission::Prefetch { probability: 0.5 },
    )
    .0;
    let h = put(&c, &bytes(2, 9000), Admission::Background).0;
    let r = put(&c, &bytes(3, 9000), Admission::Demand).0;
    drop(c);
    let c = ChunkCache::open(&s).unwrap();
    assert_eq!(c.tier_of(&n), Some(Tier::Nvme));
    assert_eq!(c.tier_of(&h), Some(Tier::Hdd));
    assert!(!c.contains(&r), "RAM is not persistent");
    assert_eq!(read_all(&c.get(&n).unwrap()), bytes(1, 9000));
    assert_eq!(read_all(&c.get(&h).unwrap()), bytes(2, 9000));
    assert_eq!(c.status().corrupt, 0);
}

#[test]
fn corrupted_bytes_on_disk_are_dropped_counted_and_refetchable() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 0, 1 << 20, 1 << 20);
    let c = ChunkCache::open(&s).unwrap();
    let n = put(&c, &bytes(1, 9000), Admission::Demand).0;
    let h = put(&c, &bytes(2, 9000), Admission::Background).0;
    drop(c);
    // Flip bytes inside the NVMe chunk (the first extent) and the spilled file.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("nvme.cache"))
        .unwrap();
    f.write_all_at(b"XXXX", 100).unwrap();
    let spilled = dir.path().join("spill").join(&h.hex()[..2]).join(h.hex());
    let mut b = std::fs::read(&spilled).unwrap();
    b[5] ^= 0xff;
    std::fs::write(&spilled, b).unwrap();

    let c = ChunkCache::open(&s).unwrap();
    assert!(c.get(&n).is_none(), "wrong bytes are never served");
    assert!(c.get(&h).is_none());
    assert_eq!(c.status().corrupt, 2);
    assert!(!c.contains(&n) && !c.contains(&h), "dropped");
    // The caller fetches again and the cache takes the good bytes.
    put(&c, &bytes(1, 9000), Admission::Demand);
    assert_eq!(read_all(&c.get(&n).unwrap()), bytes(1, 9000));
}

#[test]
fn parallel_readers_and_writers_see_right_bytes_within_budgets() {
    let dir = tempfile::tempdir().unwrap();
    let c = Arc::new(
        ChunkCache::open(&settings(dir.path(), 128 * KIB, 512 * KIB, 1024 * KIB)).unwrap(),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let monitor = {
        let (c, stop) = (Arc::clone(&c), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert_within_budgets(&c);
            }
        })
    };
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let c = Arc::clone(&c);
            std::thread::spawn(move || {
                let mut served = 0;
                for i in 0..1500u32 {
                    // A shared working set of 300 chunks, sizes 1-20 KiB.
                    let n = (i * 31 + t * 7) % 300;
                    let len = 1024 + (n as usize * 977) % (19 * 1024);
                    let want = bytes(n, len);
                    let k = ChunkKey::of(&want);
                    match c.get(&k) {
                        Some(chunk) => {
                            assert_eq!(read_all(&chunk), want, "chunk {n}");
                            served += 1;
                        }
                        None => {
                            let a = if n % 2 == 0 {
                                Admission::Demand
                            } else {
                                Admission::Prefetch {
                                    probability: (n % 10) as f32 / 10.0,
                                }
                            };
                            c.insert(Verified::check(k, &want).unwrap(), a);
                        }
                    }
                }
                served
            })
        })
        .collect();
    let served: u32 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    monitor.join().unwrap();
    assert!(served > 1000, "the cache served {served} reads");
    assert_within_budgets(&c);
    assert_eq!(c.status().corrupt, 0);
}

/// Child side of `kill_9_during_heavy_writes_leaves_index_and_data_agreeing`: writes chunks
/// forever into the cache under `AUGUR_CACHE_CHILD_DIR` (run only as that test's child).
#[test]
#[ignore = "run by kill_9_during_heavy_writes_leaves_index_and_data_agreeing"]
fn heavy_writer_child() {
    let Some(dir) = std::env::var_os("AUGUR_CACHE_CHILD_DIR") else {
        return;
    };
    let c = ChunkCache::open(&settings(Path::new(&dir), 0, 512 * KIB, 1024 * KIB)).unwrap();
    std::fs::write(Path::new(&dir).join("started"), b"").unwrap();
    for n in 0.. {
        let len = 512 + (n as usize * 7919) % (40 * 1024);
        let a = if n % 3 == 0 {
            Admission::Background
        } else {
            Admission::Demand
        };
        put(&c, &bytes(n, len), a);
    }
}

#[test]
fn kill_9_during_heavy_writes_leaves_index_and_data_agreeing() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "cache::tests::heavy_writer_child",
                "--ignored",
                "--nocapture",
            ])
            .env("AUGUR_CACHE_CHILD_DIR", dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = dir.path().join("started");
        while !started.exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(300 + 100 * round));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        std::fs::remove_file(&started).unwrap();

        let c = ChunkCache::open(&settings(dir.path(), 0, 512 * KIB, 1024 * KIB)).unwrap();
        let s = c.status();
        let held: u64 = s.tiers.iter().map(|t| t.chunks).sum();
        assert!(
            held > 10,
            "round {round}: the child wrote chunks before the kill ({held})"
        );
        // Every indexed chunk reads back and verifies (read straight from each tier, so that
        // no promotion moves chunks while they are checked).
        let (nvme, hdd) = (c.nvme.as_ref().unwrap(), c.hdd().unwrap());
        let mut keys = Vec::new();
        nvme.for_each_key(|k| keys.push(*k));
        for k in &keys {
            let slot = nvme.get(k).unwrap();
            assert!(
                nvme.verify(k, &slot),
                "round {round}: NVMe chunk {k} does not match"
            );
        }
        keys.clear();
        hdd.for_each_key(|k| keys.push(*k));
        for k in &keys {
            assert!(
                matches!(hdd.read(k, |_| true), hdd::HddRead::Whole(..)),
                "round {round}: spilled chunk {k} does not match"
            );
        }
        assert_eq!(c.status().corrupt, 0, "round {round}: index and data agree");
        assert_within_budgets(&c);
    }
}
