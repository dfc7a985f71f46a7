//! Seeded synthetic pull logs shaped like a busy node's: deployment pipelines that roll their
//! stages in order (A, then B a few minutes later, then C, sometimes stopping early), cron jobs
//! pulling their image every 15 minutes to every day with a little jitter (and the odd skipped
//! run), and noise: ad-hoc pulls of a pool of images with Zipf-like popularity, some spelled
//! with a pinned digest. The same seed gives the same log on every machine.

use super::PullEvent;
use crate::synth::Rng;

/// The shape of a synthetic log.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// The generator's seed.
    pub seed: u64,
    /// Length of the log.
    pub hours: f64,
    /// Deployment pipelines (each 3 or 4 images rolled in order).
    pub pipelines: usize,
    /// Mean hours between two runs of one pipeline.
    pub pipeline_every_hours: f64,
    /// Cron jobs (each one image on a fixed period).
    pub cron_jobs: usize,
    /// Images pulled ad hoc.
    pub noise_images: usize,
    /// Ad-hoc pulls per hour.
    pub noise_per_hour: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 1,
            hours: 72.0,
            pipelines: 4,
            pipeline_every_hours: 2.0,
            cron_jobs: 4,
            noise_images: 30,
            noise_per_hour: 3.0,
        }
    }
}

/// Cron periods, in minutes, the jobs cycle through.
const CRON_PERIODS_MIN: [u64; 5] = [60, 15, 360, 60, 1440];
/// A fixed start, so logs look like real times (2026-01-05 00:00 UTC).
const EPOCH_MS: u64 = 1_767_571_200_000;
const MIN_MS: f64 = 60_000.0;

/// A pull log of `cfg`'s shape, in time order.
pub fn pull_log(cfg: &SynthConfig) -> Vec<PullEvent> {
    let mut rng = Rng::new(cfg.seed);
    let end = (cfg.hours * 60.0 * MIN_MS) as u64;
    let mut events = Vec::new();
    for p in 0..cfg.pipelines {
        pipeline(&mut rng, cfg, p, end, &mut events);
    }
    for j in 0..cfg.cron_jobs {
        cron(&mut rng, j, end, &mut events);
    }
    noise(&mut rng, cfg, end, &mut events);
    events.sort_by(|a, b| a.t_unix_ms.cmp(&b.t_unix_ms).then(a.image.cmp(&b.image)));
    events
}

fn exponential(rng: &mut Rng, mean: f64) -> f64 {
    -(1.0 - f64::from(rng.unit())).max(1e-9).ln() * mean
}

fn push(events: &mut Vec<PullEvent>, t: f64, image: String) {
    events.push(PullEvent {
        t_unix_ms: EPOCH_MS + t as u64,
        image,
    });
}

fn pipeline(rng: &mut Rng, cfg: &SynthConfig, p: usize, end: u64, events: &mut Vec<PullEvent>) {
    let stages = 3 + rng.below(2);
    let images: Vec<String> = (0..stages)
        .map(|s| format!("registry.example/team{p}/stage{s}:v1"))
        .collect();
    let delays: Vec<f64> = (0..stages)
        .map(|_| (1.0 + 4.0 * f64::from(rng.unit())) * MIN_MS)
        .collect();
    let mean = cfg.pipeline_every_hours * 60.0 * MIN_MS;
    let mut t = exponential(rng, mean);
    while (t as u64) < end {
        let mut at = t;
        for (image, delay) in images.iter().zip(&delays) {
            push(events, at, image.clone());
            if rng.unit() < 0.08 {
                break; // The rollout stopped (failed check, manual hold).
            }
            at += delay * (0.7 + 0.6 * f64::from(rng.unit()));
        }
        t += exponential(rng, mean).max(10.0 * MIN_MS);
    }
}

fn cron(rng: &mut Rng, j: usize, end: u64, events: &mut Vec<PullEvent>) {
    let period = CRON_PERIODS_MIN[j % CRON_PERIODS_MIN.len()] as f64 * MIN_MS;
    let image = format!("registry.example/cron/job{j}:stable");
    let mut t = f64::from(rng.unit()) * period;
    while (t as u64) < end {
        if rng.unit() >= 0.05 {
            let jitter = (f64::from(rng.unit()) - 0.5) * MIN_MS;
            push(events, (t + jitter).max(0.0), image.clone());
        }
        t += period;
    }
}

fn noise(rng: &mut Rng, cfg: &SynthConfig, end: u64, events: &mut Vec<PullEvent>) {
    if cfg.noise_images == 0 || cfg.noise_per_hour <= 0.0 {
        return;
    }
    let weights: Vec<f64> = (1..=cfg.noise_images).map(|r| 1.0 / r as f64).collect();
    let total: f64 = weights.iter().sum();
    let mean = 60.0 * MIN_MS / cfg.noise_per_hour;
    let mut t = exponential(rng, mean);
    while (t as u64) < end {
        let mut u = f64::from(rng.unit()) * total;
        let pick = weights
            .iter()
            .position(|w| {
                u -= w;
                u < 0.0
            })
            .unwrap_or(0);
        let mut image = format!("docker.io/library/tool{pick}:latest");
        if rng.unit() < 0.2 {
            // Short name, tag and pinned digest: the same image to the model.
            image = format!("tool{pick}:latest@sha256:{pick:064x}");
        }
        push(events, t, image);
        t += exponential(rng, mean);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_log_and_pipelines_roll_in_order() {
        let cfg = SynthConfig::default();
        let log = pull_log(&cfg);
        assert_eq!(log, pull_log(&cfg));
        assert_ne!(log, pull_log(&SynthConfig { seed: 2, ..cfg }));
        assert!(log.windows(2).all(|w| w[0].t_unix_ms <= w[1].t_unix_ms));
        let first0 = log
            .iter()
            .position(|e| e.image.ends_with("team0/stage0:v1"));
        let first1 = log
            .iter()
            .position(|e| e.image.ends_with("team0/stage1:v1"));
        assert!(first0 < first1, "stage 0 rolls first");
        assert!(log.len() > 200, "{} pulls", log.len());
    }
}
