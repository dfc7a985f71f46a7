//! What the benchmark binaries (`augur-bench`, `augur-lazy-bench`) share: Ctrl-C handling that
//! lets RAII guards clean up, medians and bootstrap intervals, duration and size formatting, and
//! the machine facts printed under every report.
//!
//! Statistics are kept simple and dependency-free: the median is the middle sample (the mean of
//! the middle two for an even count), percentiles are nearest-rank, and intervals come from a
//! bootstrap of the ratio of medians with a fixed-seed PRNG, so a report is reproducible from
//! its samples.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set by SIGINT/SIGTERM once [`watch_signals`] runs; benchmarks check it between steps so
/// their guards get to stop processes and unmount.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether SIGINT or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// An error if SIGINT or SIGTERM arrived (`?` it between steps).
pub fn check_interrupted() -> anyhow::Result<()> {
    if interrupted() {
        anyhow::bail!("interrupted");
    }
    Ok(())
}

/// Turns SIGINT/SIGTERM into [`interrupted`] (a thread with its own tiny runtime), instead of
/// the default of dying on the spot with every process and mount left behind. `prog` prefixes
/// the messages.
pub fn watch_signals(prog: &'static str) {
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    return;
                };
                loop {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    eprintln!("{prog}: signal received, stopping after the current step");
                    INTERRUPTED.store(true, Ordering::Relaxed);
                }
            });
        });
    if let Err(e) = spawned {
        eprintln!("{prog}: cannot watch signals ({e}); Ctrl-C will skip clean-up");
    }
}

/// The indices in `names` of a comma-separated command-line list (`--profiles a,b`), or an
/// error naming the unknown item and the choices.
pub fn pick(list: &str, names: &[&str]) -> anyhow::Result<Vec<usize>> {
    use anyhow::Context;
    list.split(',')
        .map(|item| {
            names
                .iter()
                .position(|n| *n == item.trim())
                .with_context(|| format!("unknown {item:?}; choose from {}", names.join(", ")))
        })
        .collect()
}

/// The median: the middle sample, or the mean of the middle two for an even count (a
/// nearest-rank "median" of an even sample is its lower middle value, biased low).
pub fn median(samples: &[Duration]) -> Duration {
    let mut s: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
    s.sort_unstable_by(f64::total_cmp);
    Duration::from_secs_f64(middle(&s))
}

/// [`median`] of plain numbers.
pub fn median_f64(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_unstable_by(f64::total_cmp);
    middle(&s)
}

/// Median of sorted values (0 for none).
pub fn middle(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile (`p` in 0..=100) of `samples`.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut s = samples.to_vec();
    s.sort_unstable();
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// 95 % bootstrap interval of `median(a) / median(b)` (2000 resamples of both sample sets,
/// fixed seed). With fewer than two samples on a side it is the ratio itself.
pub fn ratio_interval(a: &[f64], b: &[f64]) -> (f64, f64) {
    let ratio = |x: f64, y: f64| x / y.max(f64::MIN_POSITIVE);
    if a.len() < 2 || b.len() < 2 {
        let r = ratio(median_f64(a), median_f64(b));
        return (r, r);
    }
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut ratios: Vec<f64> = (0..2000)
        .map(|_| ratio(rng.resample_median(a), rng.resample_median(b)))
        .collect();
    ratios.sort_unstable_by(f64::total_cmp);
    (ratios[49], ratios[1949])
}

/// A small deterministic PRNG for the bootstrap (no dependency needed for this).
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Median of a resample with replacement of `samples`.
    fn resample_median(&mut self, samples: &[f64]) -> f64 {
        let n = samples.len();
        let mut v: Vec<f64> = (0..n)
            .map(|_| samples[(self.next() % n as u64) as usize])
            .collect();
        v.sort_unstable_by(f64::total_cmp);
        middle(&v)
    }
}

/// Seconds of each duration, for [`ratio_interval`] and [`median_f64`].
pub fn secs(samples: &[Duration]) -> Vec<f64> {
    samples.iter().map(Duration::as_secs_f64).collect()
}

/// `812 µs`, `12.3 ms`, `4.56 s`.
pub fn fmt_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// `12.3 MiB`.
pub fn fmt_mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1024.0 / 1024.0)
}

/// Runs `sh -c cmd` and returns its trimmed stdout ("" if it fails): for report facts only.
pub fn sh(cmd: &str) -> String {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    sh("cut -d' ' -f1-3 /proc/loadavg")
}

/// Markdown list items describing this machine and run (date, CPUs, kernel, disk, containerd,
/// load average now).
pub fn machine_facts() -> String {
    let cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-");
    let fs = sh("df -T /var/tmp | awk 'NR==2 {print $2\" on \"$1}'");
    format!(
        "- date: {}\n- nproc: {}; CPU: {}\n- kernel: {}\n- scratch dir: /var/tmp ({fs})\n- containerd: {}\n\
         - load average at the end (1/5/15 min): {}\n",
        sh("date -u '+%Y-%m-%d %H:%M:%S UTC'"),
        sh("nproc"),
        cpu.trim(),
        sh("uname -r"),
        sh("containerd --version"),
        load_average(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_pair() {
        let d = |ms: u64| Duration::from_millis(ms);
        assert_eq!(
            median(&[d(4), d(1), d(3), d(2)]),
            Duration::from_micros(2500)
        );
        assert_eq!(median(&[d(5), d(1), d(3)]), d(3));
        assert_eq!(median(&[]), Duration::ZERO);
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let s: Vec<Duration> = (1..=10).map(Duration::from_secs).collect();
        assert_eq!(percentile(&s, 90.0), Duration::from_secs(9));
        assert_eq!(percentile(&s, 100.0), Duration::from_secs(10));
        assert_eq!(percentile(&s, 0.0), Duration::from_secs(1));
    }

    #[test]
    fn ratio_interval_brackets_the_ratio_of_medians() {
        let a = [2.0, 2.1, 1.9, 2.2, 1.8];
        let b = [1.0, 1.05, 0.95, 1.1, 0.9];
        let (lo, hi) = ratio_interval(&a, &b);
        assert!(lo <= 2.0 && 2.0 <= hi, "{lo}..{hi}");
        assert!(lo > 1.5 && hi < 2.5, "{lo}..{hi}");
        assert_eq!(ratio_interval(&[3.0], &[1.5]), (2.0, 2.0));
    }
}
