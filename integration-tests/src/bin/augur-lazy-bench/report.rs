//! The samples of a run, their medians and spread, the ratios and the targets, as Markdown.
//!
//! Targets (issue 3): on the shaped profiles, Augur reaches the python workload's first output
//! at least [`SPEEDUP_TARGET`]× sooner than the overlayfs full pull (ratio of medians); and for
//! the python image it has fetched under [`BYTES_TARGET`] of the eStargz image's layer bytes by
//! then (median), on every profile.

use std::time::Duration;

use augur_integration_tests::bench::{
    fmt_mib, load_average, machine_facts, median, median_f64, ratio_interval, secs,
};

use crate::bed::Bed;
use crate::measure::{Mode, Sample};
use crate::opts::Opts;
use crate::{PROFILES, WORKLOADS};

/// Augur's time to first output must be at most 1/this of the full pull's (shaped profiles).
pub const SPEEDUP_TARGET: f64 = 3.0;
/// Augur must fetch less than this share of the image before the first output.
pub const BYTES_TARGET: f64 = 0.25;
/// The workload the targets are about (`python`).
const TARGET_WORKLOAD: usize = 0;

/// Samples per profile × workload × mode.
#[derive(Debug)]
pub struct Report {
    /// `[profile][workload][mode index]`.
    cells: Vec<Vec<Vec<Vec<Sample>>>>,
    profiles: Vec<usize>,
    workloads: Vec<usize>,
    modes: Vec<(Mode, String)>,
    /// Image sizes per workload: (original, eStargz) layer bytes.
    image_bytes: Vec<(u64, u64)>,
    calibration: Vec<String>,
    load_at_start: String,
    load_at_end: String,
}

impl Report {
    /// An empty report for the run `opts` describes on `bed`.
    pub fn new(bed: &Bed, opts: &Opts) -> Report {
        Report {
            cells: vec![
                vec![vec![Vec::new(); opts.all_modes().len()]; WORKLOADS.len()];
                PROFILES.len()
            ],
            profiles: opts.profiles.clone(),
            workloads: opts.workloads.clone(),
            modes: opts
                .all_modes()
                .into_iter()
                .filter(|m| opts.modes().contains(m))
                .map(|m| (m, opts.mode_name(m)))
                .collect(),
            image_bytes: bed
                .images
                .iter()
                .map(|f| f.as_ref().map_or((0, 0), |f| (f.plain_bytes, f.esgz_bytes)))
                .collect(),
            calibration: Vec::new(),
            load_at_start: load_average(),
            load_at_end: String::new(),
        }
    }

    /// Records one run.
    pub fn add(&mut self, profile: usize, workload: usize, mode: Mode, s: Sample) {
        self.cells[profile][workload][mode.index()].push(s);
    }

    /// Notes what is only known at the end (load, calibration).
    pub fn finish(&mut self, bed: &Bed) {
        self.load_at_end = load_average();
        for &p in &self.profiles {
            if let Some(c) = bed.calibration(p) {
                self.calibration.push(format!(
                    "| {} | {} | {} | {:.0} ms | {:.2} MB/s |",
                    PROFILES[p].name,
                    PROFILES[p]
                        .mbit
                        .map_or("none".to_owned(), |m| format!("{m} Mbit/s")),
                    fmt_ms(PROFILES[p].one_way),
                    c.first_byte_secs * 1e3,
                    c.mb_per_sec
                ));
            }
        }
    }

    fn samples(&self, p: usize, w: usize, mode: Mode) -> &[Sample] {
        &self.cells[p][w][mode.index()]
    }

    /// Median time to first output, overlayfs / `mode`, with its 95 % bootstrap interval.
    fn speedup(&self, p: usize, w: usize, mode: Mode) -> (f64, (f64, f64)) {
        let first = |m| {
            secs(
                &self
                    .samples(p, w, m)
                    .iter()
                    .map(|s| s.first_output)
                    .collect::<Vec<_>>(),
            )
        };
        let (o, a) = (first(Mode::Overlayfs), first(mode));
        (
            median_f64(&o) / median_f64(&a).max(f64::MIN_POSITIVE),
            ratio_interval(&o, &a),
        )
    }

    /// `mode`'s median bytes before first output, as a share of the eStargz image.
    fn augur_share(&self, p: usize, w: usize, mode: Mode) -> f64 {
        let bytes: Vec<f64> = self
            .samples(p, w, mode)
            .iter()
            .map(|s| s.bytes_first as f64)
            .collect();
        median_f64(&bytes) / (self.image_bytes[w].1.max(1) as f64)
    }

    /// Each target missed, in words (empty: all met, or none applies to this run).
    pub fn missed_targets(&self) -> Vec<String> {
        let mut missed = Vec::new();
        let measured = |m| self.modes.iter().any(|(x, _)| *x == m);
        if !self.workloads.contains(&TARGET_WORKLOAD) || !measured(Mode::Augur(0)) {
            return missed;
        }
        let augur = Mode::Augur(0);
        let w = TARGET_WORKLOAD;
        for &p in &self.profiles {
            let name = PROFILES[p].name;
            if PROFILES[p].mbit.is_some() && measured(Mode::Overlayfs) {
                let (x, _) = self.speedup(p, w, augur);
                if x < SPEEDUP_TARGET {
                    missed.push(format!(
                        "{name} {}: Augur {x:.2}× faster to first output (target ≥ {SPEEDUP_TARGET}×)",
                        WORKLOADS[w].image
                    ));
                }
            }
            let share = self.augur_share(p, w, augur);
            if share >= BYTES_TARGET {
                missed.push(format!(
                    "{name} {}: Augur fetched {:.1} % of the image before first output (target < {:.0} %)",
                    WORKLOADS[w].image,
                    share * 100.0,
                    BYTES_TARGET * 100.0
                ));
            }
        }
        missed
    }

    /// The whole report.
    pub fn markdown(&self, opts: &Opts, wall: Duration) -> String {
        let mut s = String::new();
        s.push_str(&self.main_table());
        s.push('\n');
        s.push_str(&self.ratio_table());
        s.push_str(&format!(
            "\nMedians of {} runs per row, (min–max) in brackets. Times from the start of the pull; \
             bytes as delivered by the profile's delay proxy to the pulling clients (HTTP headers \
             included), so both modes are counted the same way. overlayfs: `ctr image pull` of the \
             original image, then `ctr run`; augur: `ctr-remote image rpull --snapshotter augur` of \
             the eStargz copy, then `ctr run --snapshotter augur`. Requests: Augur's range \
             requests for chunks in the layers' `stats.json` when it stopped (background fetch \
             included, footer and TOC reads not).\n\n{}\n",
            opts.rounds,
            daemons(opts),
        ));
        s.push_str(&self.image_table());
        s.push('\n');
        if !self.calibration.is_empty() {
            s.push_str("Profiles as measured at start (one 4 MiB range GET with curl on a new connection):\n\n");
            s.push_str("| profile | rate limit | delay (one way) | first byte | throughput |\n|---|---|---|---:|---:|\n");
            for line in &self.calibration {
                s.push_str(line);
                s.push('\n');
            }
            s.push('\n');
        }
        let missed = self.missed_targets();
        if missed.is_empty() {
            s.push_str("Targets: all met.\n\n");
        } else {
            s.push_str("Targets missed:\n\n");
            for m in missed {
                s.push_str(&format!("- {m}\n"));
            }
            s.push('\n');
        }
        s.push_str(&machine_facts());
        s.push_str(&format!(
            "- load average at the start (1/5/15 min): {}\n- benchmark wall time: {:.0} s\n",
            self.load_at_start,
            wall.as_secs_f64()
        ));
        s
    }

    fn main_table(&self) -> String {
        let mut s = String::from(
            "| profile | image | mode | pull | first output | run exits | fetched before first output | fetched by exit | connections | requests |\n\
             |---|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for &p in &self.profiles {
            for &w in &self.workloads {
                for (mode, name) in &self.modes {
                    s.push_str(&self.row(p, w, *mode, name));
                }
            }
        }
        s
    }

    fn row(&self, p: usize, w: usize, mode: Mode, name: &str) -> String {
        let v = self.samples(p, w, mode);
        let time = |f: fn(&Sample) -> Duration| {
            let d: Vec<Duration> = v.iter().map(f).collect();
            let (lo, hi) = (d.iter().min().copied(), d.iter().max().copied());
            format!(
                "{:.2} s ({:.2}–{:.2})",
                median(&d).as_secs_f64(),
                lo.unwrap_or_default().as_secs_f64(),
                hi.unwrap_or_default().as_secs_f64()
            )
        };
        let image = match mode {
            Mode::Overlayfs => self.image_bytes[w].0,
            Mode::Augur(_) => self.image_bytes[w].1,
        };
        let bytes = |f: fn(&Sample) -> u64| {
            let b: Vec<f64> = v.iter().map(|s| f(s) as f64).collect();
            let m = median_f64(&b);
            format!(
                "{} ({:.1} %)",
                fmt_mib(m as u64),
                m * 100.0 / image.max(1) as f64
            )
        };
        let count = |f: fn(&Sample) -> Option<u64>| {
            let c: Vec<f64> = v.iter().filter_map(|s| f(s).map(|x| x as f64)).collect();
            if c.is_empty() {
                "–".to_owned()
            } else {
                format!("{:.0}", median_f64(&c))
            }
        };
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            PROFILES[p].name,
            WORKLOADS[w].image,
            name,
            time(|s| s.pull),
            time(|s| s.first_output),
            time(|s| s.total),
            bytes(|s| s.bytes_first),
            bytes(|s| s.bytes_total),
            count(|s| Some(s.connections)),
            count(|s| s.augur_requests),
        )
    }

    fn ratio_table(&self) -> String {
        let mut s = String::from(
            "| profile | image | mode | first output: overlayfs / mode | 95 % CI | fetched before first output |\n\
             |---|---|---|---:|---:|---:|\n",
        );
        let with_overlayfs = self.modes.iter().any(|(m, _)| *m == Mode::Overlayfs);
        for &p in &self.profiles {
            for &w in &self.workloads {
                for (mode, name) in self.modes.iter().filter(|(m, _)| *m != Mode::Overlayfs) {
                    let (x, (lo, hi)) = self.speedup(p, w, *mode);
                    let (ratio, ci) = if with_overlayfs {
                        (format!("**{x:.2}×**"), format!("{lo:.2}–{hi:.2}"))
                    } else {
                        ("–".to_owned(), "–".to_owned())
                    };
                    s.push_str(&format!(
                        "| {} | {} | {name} | {ratio} | {ci} | {:.1} % of the eStargz image |\n",
                        PROFILES[p].name,
                        WORKLOADS[w].image,
                        self.augur_share(p, w, *mode) * 100.0
                    ));
                }
            }
        }
        s
    }

    fn image_table(&self) -> String {
        let mut s =
            String::from("| image | original layers (gzip) | eStargz layers |\n|---|---:|---:|\n");
        for &w in &self.workloads {
            let (plain, esgz) = self.image_bytes[w];
            s.push_str(&format!(
                "| {} | {} ({plain} B) | {} ({esgz} B) |\n",
                WORKLOADS[w].image,
                fmt_mib(plain),
                fmt_mib(esgz)
            ));
        }
        s
    }
}

/// Which binary and config each Augur mode ran.
fn daemons(opts: &Opts) -> String {
    let mut s = String::from("| mode | daemon | config |\n|---|---|---|\n");
    for (i, v) in opts.variants.iter().enumerate() {
        s.push_str(&format!(
            "| {} | `{}` | {} |\n",
            opts.mode_name(Mode::Augur(i)),
            v.bin.display(),
            v.config
                .as_ref()
                .map_or("defaults".to_owned(), |c| format!("`{}`", c.display()))
        ));
    }
    s
}

fn fmt_ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}
