//! `augur-cache-bench`: read throughput and latency of a lazy layer served from each tier of the
//! chunk cache, through FUSE and OverlayFS as a container reads it, side by side with the same
//! file on a plain overlayfs mount on local disk; and the cost of a RAM-tier lookup alone.
//!
//! Setup (all under one `/var/tmp/augur-cache-bench-*` directory, removed with everything
//! mounted below it, also after a panic or Ctrl-C):
//! - a file of `--size-mib` random bytes, as an eStargz layer (4 MiB chunks) in a local blob;
//! - `native`: the file in a directory, under an overlay mount (lower = that directory);
//! - `ram`, `nvme`, `hdd`: the layer mounted over FUSE with a cache whose only tier is that one,
//!   warmed by reading the file once, under an overlay mount (lower = the FUSE mount).
//!
//! Each round, for every target in turn (order rotating per round), the kernel's page cache is
//! dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) and then: the whole file is read in
//! 1 MiB reads (throughput), and 2000 4 KiB reads at random aligned offsets are timed one by one
//! (latency). Dropping the page cache is what makes every read reach the tier (the RAM tier is
//! the daemon's own memory, which the drop does not touch; NVMe and spill pages come from disk
//! again) and makes `native` read its disk. A `native (warm)` row, without the drop, shows the
//! page cache's speed for reference.
//!
//! Usage: `augur-cache-bench [--rounds N] [--size-mib N] [--strict]` (root). Targets: a RAM or
//! NVMe hit through FUSE at ≥ 0.5× native sequential throughput, and a RAM-tier lookup under
//! 5 µs at p99; `--strict` exits 1 if either is missed.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use augur_integration_tests::{MountGuard, TestDir};
use augur_snapshotter::cache::{CacheSettings, ChunkCache, ChunkKey, Policy};
use augur_snapshotter::estargz::{self, LayerIndex, WriterOptions};
use augur_snapshotter::lazy::activity::Activity;
use augur_snapshotter::lazy::data::LayerData;
use augur_snapshotter::lazy::mount;
use augur_snapshotter::lazy::source::FileSource;

const MIB: u64 = 1 << 20;
const RANDOM_READS: usize = 2000;
const LOOKUPS: usize = 200_000;

struct Options {
    rounds: usize,
    size: u64,
    strict: bool,
}

fn options() -> Result<Options> {
    let mut o = Options {
        rounds: 5,
        size: 256 * MIB,
        strict: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> Result<u64> {
            args.next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name} takes a whole number"))
        };
        match a.as_str() {
            "--rounds" => o.rounds = num("--rounds")?.max(1) as usize,
            "--size-mib" => o.size = num("--size-mib")?.max(8) * MIB,
            "--strict" => o.strict = true,
            "-h" | "--help" => {
                println!("usage: augur-cache-bench [--rounds N] [--size-mib N] [--strict]");
                std::process::exit(0);
            }
            other => bail!("unknown option {other:?} (see --help)"),
        }
    }
    Ok(o)
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("augur-cache-bench: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// One thing read: its mount point (the overlay) and whether the page cache is dropped first.
struct Target {
    name: &'static str,
    file: PathBuf,
    cold: bool,
    samples: Samples,
}

#[derive(Default)]
struct Samples {
    seq_mib_s: Vec<f64>,
    rand_us: Vec<f64>,
}

/// A lazy layer mounted over FUSE, with its cache and an overlay on top.
struct LazyMount {
    cache: Arc<ChunkCache>,
    _overlay: MountGuard,
    _session: fuser::BackgroundSession,
}

fn run() -> Result<bool> {
    let opts = options()?;
    augur_integration_tests::bench::watch_signals("augur-cache-bench");
    let dir = TestDir::new("cache-bench");
    eprintln!(
        "augur-cache-bench: {} MiB file, {} rounds, in {}",
        opts.size / MIB,
        opts.rounds,
        dir.path().display()
    );
    let content = noise(opts.size as usize, 7);
    let (blob, index) = layer_blob(&dir, &content)?;
    let native = native_mount(&dir, &content)?;
    let mut targets = vec![Target {
        name: "native overlay, local disk",
        file: native.path().join("data.bin"),
        cold: true,
        samples: Samples::default(),
    }];
    let mut lazies = Vec::new();
    for (name, tier) in [
        ("RAM tier, FUSE + overlay", "ram"),
        ("NVMe tier, FUSE + overlay", "nvme"),
        ("spill tier, FUSE + overlay", "hdd"),
    ] {
        augur_integration_tests::bench::check_interrupted()?;
        let m = lazy_mount(&dir, tier, &blob, &index, opts.size)?;
        let file = dir.join(&format!("{tier}-ovl")).join("data.bin");
        eprintln!("augur-cache-bench: warming the {tier} tier");
        let warm = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
        if warm != content {
            bail!("{tier}: the lazy file differs from the original");
        }
        targets.push(Target {
            name,
            file,
            cold: true,
            samples: Samples::default(),
        });
        lazies.push(m);
    }
    targets.push(Target {
        name: "native overlay, page cache (warm)",
        file: native.path().join("data.bin"),
        cold: false,
        samples: Samples::default(),
    });
    for round in 0..opts.rounds {
        for k in 0..targets.len() {
            augur_integration_tests::bench::check_interrupted()?;
            let n = targets.len();
            let t = &mut targets[(k + round) % n];
            measure(t, opts.size, round as u64)?;
        }
        eprintln!(
            "augur-cache-bench: round {}/{} done",
            round + 1,
            opts.rounds
        );
    }
    let lookup = ram_lookups(&lazies[0].cache, &index);
    Ok(report(&targets, &lookup, &opts))
}

/// `len` deterministic pseudo-random bytes (incompressible, like most binaries).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The eStargz blob of a one-file layer (`data.bin`), written to `dir/layer.blob`, and its index.
fn layer_blob(dir: &TestDir, content: &[u8]) -> Result<(PathBuf, LayerIndex)> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    tar.append_data(&mut h, "data.bin", content)?;
    let tar = tar.into_inner()?;
    let opts = WriterOptions {
        compression_level: 1,
        ..WriterOptions::default()
    };
    let mut blob = Vec::new();
    let summary = estargz::write_estargz(tar.as_slice(), &mut blob, &opts)?;
    let footer = estargz::parse_footer(&blob[blob.len() - estargz::FOOTER_SIZE as usize..])?;
    let range = footer.toc_range(blob.len() as u64)?;
    let (toc, _) = estargz::decode_toc(
        &blob[range.start as usize..range.end as usize],
        Some(&summary.toc_digest),
    )?;
    let index = LayerIndex::from_toc(&toc, footer.toc_offset)?;
    let path = dir.join("layer.blob");
    std::fs::write(&path, &blob)?;
    Ok((path, index))
}

fn overlay(lower: &Path, dir: &TestDir, name: &str) -> Result<MountGuard> {
    let (upper, work) = (
        dir.join(&format!("{name}-upper")),
        dir.join(&format!("{name}-work")),
    );
    std::fs::create_dir_all(&upper)?;
    std::fs::create_dir_all(&work)?;
    let desc = serde_json::json!([{
        "Type": "overlay",
        "Source": "overlay",
        "Options": [
            format!("lowerdir={}", lower.display()),
            format!("upperdir={}", upper.display()),
            format!("workdir={}", work.display()),
        ],
    }]);
    Ok(MountGuard::mount_described(
        &desc,
        &dir.join(&format!("{name}-ovl")),
    ))
}

fn native_mount(dir: &TestDir, content: &[u8]) -> Result<MountGuard> {
    let lower = dir.join("native-lower");
    std::fs::create_dir_all(&lower)?;
    std::fs::write(lower.join("data.bin"), content)?;
    overlay(&lower, dir, "native")
}

fn lazy_mount(
    dir: &TestDir,
    tier: &str,
    blob: &Path,
    index: &LayerIndex,
    size: u64,
) -> Result<LazyMount> {
    let budget = size + 64 * MIB;
    let only = |t: &str| if t == tier { budget } else { 0 };
    let cache = Arc::new(ChunkCache::open(&CacheSettings {
        ram_bytes: only("ram"),
        nvme_path: dir.join(&format!("{tier}-cache/chunks.nvme")),
        nvme_bytes: only("nvme"),
        hdd_path: dir.join(&format!("{tier}-cache/spill")),
        hdd_bytes: only("hdd"),
        policy: Policy::LfuDecay {
            half_life: Duration::from_secs(600),
        },
        ram_threshold: 0.8,
        nvme_threshold: 0.4,
        promote_after_hits: 2,
    })?);
    let data = Arc::new(LayerData::open(
        &dir.join(&format!("{tier}-layer")),
        Arc::new(index.clone()),
        Arc::new(FileSource::open(blob)?),
        Arc::clone(&cache),
        Duration::from_secs(30),
        Arc::new(Activity::default()),
    )?);
    let fuse = dir.join(&format!("{tier}-fuse"));
    std::fs::create_dir_all(&fuse)?;
    let session = mount::mount(data, &fuse, 4)?;
    let overlay = overlay(&fuse, dir, tier)?;
    Ok(LazyMount {
        cache,
        _overlay: overlay,
        _session: session,
    })
}

fn drop_page_cache() -> Result<()> {
    augur_integration_tests::drop_page_cache().context("drop the page cache (needs root)")
}

fn measure(t: &mut Target, size: u64, round: u64) -> Result<()> {
    if t.cold {
        drop_page_cache()?;
    } else {
        // Another target's drop just emptied the page cache: fill it again, unmeasured.
        std::io::copy(&mut std::fs::File::open(&t.file)?, &mut std::io::sink())?;
    }
    let mut f = std::fs::File::open(&t.file)?;
    let mut buf = vec![0u8; MIB as usize];
    let start = Instant::now();
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    if total != size {
        bail!("{}: read {total} of {size} bytes", t.name);
    }
    t.samples.seq_mib_s.push(total as f64 / MIB as f64 / secs);
    if t.cold {
        drop_page_cache()?;
    }
    let f = std::fs::File::open(&t.file)?;
    let mut small = [0u8; 4096];
    let pages = size / 4096;
    let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ round;
    for _ in 0..RANDOM_READS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = (x % pages) * 4096;
        let start = Instant::now();
        f.read_exact_at(&mut small, at)?;
        t.samples.rand_us.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok(())
}

/// Latencies (µs) of `cache.get` for chunks in the RAM tier, with a 4 KiB copy out of each.
fn ram_lookups(cache: &ChunkCache, index: &LayerIndex) -> Vec<f64> {
    let keys: Vec<ChunkKey> = index.chunks().iter().map(|c| ChunkKey(c.digest)).collect();
    let mut out = Vec::with_capacity(LOOKUPS);
    let mut buf = [0u8; 4096];
    for i in 0..LOOKUPS {
        let key = &keys[i % keys.len()];
        let start = Instant::now();
        let hit = cache.get(key).map(|c| c.read_at(0, &mut buf));
        out.push(start.elapsed().as_secs_f64() * 1e6);
        assert!(hit.is_some(), "chunk {key} left the RAM tier");
    }
    out
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    augur_integration_tests::bench::middle(&s)
}

fn report(targets: &[Target], lookup: &[f64], opts: &Options) -> bool {
    let native = &targets[0].samples;
    let (n_seq, n_p50) = (median(&native.seq_mib_s), pct(&native.rand_us, 50.0));
    println!("{}", augur_integration_tests::bench::machine_facts());
    println!(
        "\n{} MiB file, {} rounds; sequential: whole file in 1 MiB reads, median of rounds; random: {} 4 KiB reads per round, all rounds pooled.\n",
        opts.size / MIB,
        opts.rounds,
        RANDOM_READS
    );
    println!("| target | sequential MiB/s | vs native | 4 KiB p50 | 4 KiB p99 | p50 vs native |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut best_hit = 0.0f64;
    for (i, t) in targets.iter().enumerate() {
        let s = &t.samples;
        let seq = median(&s.seq_mib_s);
        let ratio = seq / n_seq;
        if (1..=2).contains(&i) {
            best_hit = best_hit.max(ratio);
        }
        println!(
            "| {} | {:.0} | {:.2} | {:.0} µs | {:.0} µs | {:.2} |",
            t.name,
            seq,
            ratio,
            pct(&s.rand_us, 50.0),
            pct(&s.rand_us, 99.0),
            pct(&s.rand_us, 50.0) / n_p50
        );
    }
    let (l50, l99) = (pct(lookup, 50.0), pct(lookup, 99.0));
    println!(
        "\nRAM-tier lookup (`ChunkCache::get` + 4 KiB copy, no FUSE), {LOOKUPS} calls: p50 {l50:.2} µs, p99 {l99:.2} µs"
    );
    let seq_ok = best_hit >= 0.5;
    let lookup_ok = l99 < 5.0;
    println!(
        "\ntargets: RAM or NVMe hit ≥ 0.5× native sequential: {} ({best_hit:.2}); lookup p99 < 5 µs: {} ({l99:.2} µs)",
        if seq_ok { "met" } else { "MISSED" },
        if lookup_ok { "met" } else { "MISSED" }
    );
    !opts.strict || (seq_ok && lookup_ok)
}
