//! Synthetic workloads where the right answer is known, for tests and the micro-benchmark: a
//! [`Program`] reads a fixed prefix of chunks (start-up: interpreter, libraries), then one of
//! several branches chosen by its argument. Runs add timing jitter, occasional swaps of
//! neighbouring reads and re-reads of earlier chunks. Everything is seeded ([`Rng`]), so a
//! test sees the same traces on every machine.

use std::collections::BTreeMap;

use crate::chunk::{ChunkId, fnv1a64};
use crate::trace::{AccessSource, ChunkRecord, RunHeader, Trace, TraceBuilder};
use crate::workload::WorkloadKey;

/// SplitMix64: a tiny, good-enough, seeded generator (no `rand` dependency).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// A deterministic fake digest: the `n`-th chunk of `namespace`.
pub fn chunk_id(namespace: &str, n: u64) -> ChunkId {
    let mut rng = Rng::new(fnv1a64(namespace.as_bytes()) ^ n.wrapping_mul(0x9e37_79b9));
    let mut bytes = [0u8; 32];
    bytes
        .chunks_mut(8)
        .for_each(|w| w.copy_from_slice(&rng.next_u64().to_le_bytes()));
    ChunkId(bytes)
}

fn arg_label(segments: &[usize]) -> String {
    let names: Vec<String> = segments.iter().map(usize::to_string).collect();
    names.join("+")
}

/// How runs of a program vary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunStyle {
    /// Mean time between two new chunks, µs.
    pub gap_us: u64,
    /// Relative jitter of that gap (0.5 = ±50 %).
    pub jitter: f32,
    /// Chance that a read swaps places with the next one.
    pub swap: f32,
    /// Chance that a read is followed by a re-read of an earlier chunk.
    pub reread: f32,
}

impl Default for RunStyle {
    fn default() -> Self {
        RunStyle {
            gap_us: 2_000,
            jitter: 0.5,
            swap: 0.05,
            reread: 0.2,
        }
    }
}

/// A program: a prefix every run reads, then one branch per argument.
#[derive(Debug, Clone)]
pub struct Program {
    /// The image it runs in.
    pub image: String,
    /// Chunks every run reads first.
    pub prefix: Vec<ChunkRecord>,
    /// Chunks read after the prefix, one list per argument.
    pub branches: Vec<Vec<ChunkRecord>>,
    /// The layers: the prefix's (shared with the programs made by [`Program::sharing_prefix`]),
    /// then the branches' (this image's own).
    pub layers: [String; 2],
}

/// A layer digest named after `name` (deterministic, like [`chunk_id`]).
pub fn layer_digest(name: &str) -> String {
    let id = chunk_id(name, u64::MAX);
    let hex: String = id.0.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn chunks(
    namespace: &str,
    file: &str,
    layer: u32,
    count: usize,
    rng: &mut Rng,
) -> Vec<ChunkRecord> {
    const SIZES: [u32; 4] = [16 << 10, 64 << 10, 64 << 10, 256 << 10];
    (0..count)
        .map(|i| ChunkRecord {
            digest: chunk_id(namespace, i as u64),
            layer,
            size: SIZES[rng.below(SIZES.len())],
            file: format!("{file}/{:03}", i / 4),
            file_offset: (i % 4) as u64 * (256 << 10),
        })
        .collect()
}

impl Program {
    /// A program in `image` with `prefix` start-up chunks and one branch per entry of
    /// `branches` (its length in chunks).
    pub fn new(image: &str, prefix: usize, branches: &[usize], seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let prefix = chunks(
            &format!("{image}/prefix"),
            "usr/lib/base",
            0,
            prefix,
            &mut rng,
        );
        let base = layer_digest(&format!("{image}/prefix"));
        Self::with_prefix(image, prefix, base, branches, &mut rng)
    }

    /// A program in another image that starts like `base` (same chunks: a shared base layer or
    /// the same interpreter) and then has branches of its own.
    pub fn sharing_prefix(image: &str, base: &Program, branches: &[usize], seed: u64) -> Self {
        let layer = base.layers[0].clone();
        Self::with_prefix(
            image,
            base.prefix.clone(),
            layer,
            branches,
            &mut Rng::new(seed),
        )
    }

    fn with_prefix(
        image: &str,
        prefix: Vec<ChunkRecord>,
        base_layer: String,
        lens: &[usize],
        rng: &mut Rng,
    ) -> Self {
        let branches = lens
            .iter()
            .enumerate()
            .map(|(b, &len)| {
                chunks(
                    &format!("{image}/branch{b}"),
                    &format!("app/arg{b}"),
                    1,
                    len,
                    rng,
                )
            })
            .collect();
        Program {
            image: image.to_owned(),
            prefix,
            branches,
            layers: [base_layer, layer_digest(&format!("{image}/app"))],
        }
    }

    /// The chunks a run with argument `branch` reads, in program order.
    pub fn plan(&self, branch: usize) -> Vec<ChunkRecord> {
        self.plan_segments(&[branch])
    }

    /// The prefix, then the given branches one after another (a program whose arguments
    /// choose several things in turn).
    pub fn plan_segments(&self, segments: &[usize]) -> Vec<ChunkRecord> {
        let tails = segments
            .iter()
            .filter_map(|&b| self.branches.get(b))
            .flatten();
        self.prefix.iter().chain(tails).cloned().collect()
    }

    /// One run with argument `branch`, varied as `style` says, seeded by `seed`.
    pub fn run(&self, branch: usize, style: &RunStyle, seed: u64) -> Trace {
        self.run_segments(&[branch], style, seed)
    }

    /// One run through the prefix and then `segments`; its `arg` label names them (`0+3`).
    pub fn run_segments(&self, segments: &[usize], style: &RunStyle, seed: u64) -> Trace {
        let mut rng = Rng::new(seed);
        let mut order = self.plan_segments(segments);
        for i in 0..order.len().saturating_sub(1) {
            if rng.unit() < style.swap {
                order.swap(i, i + 1);
            }
        }
        let first: Vec<ChunkId> = order.iter().map(|c| c.digest).collect();
        let header = RunHeader {
            image: self.image.clone(),
            workload: WorkloadKey::new(&self.image, None, &first).signature,
            layers: self.layers.to_vec(),
            started_unix_ms: 1_764_000_000_000 + seed % 1_000_000,
            labels: BTreeMap::from([("arg".to_owned(), arg_label(segments))]),
        };
        let mut builder = TraceBuilder::new(header);
        let mut t = 1_000u64;
        for (i, chunk) in order.iter().enumerate() {
            let spread = 1.0 + style.jitter * (2.0 * rng.unit() - 1.0);
            t += (style.gap_us as f32 * spread.max(0.0)) as u64;
            builder.access(chunk, t, chunk.file_offset, 4096, AccessSource::Miss);
            if i > 0 && rng.unit() < style.reread {
                let earlier = &order[rng.below(i)];
                t += 50;
                builder.access(earlier, t, earlier.file_offset, 4096, AccessSource::Hit);
            }
        }
        builder.finish()
    }
}
