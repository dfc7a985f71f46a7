//! One measured run: a fresh containerd (and, for Augur, a fresh daemon on a fresh root, in the
//! bench namespace), a fresh containerd namespace, then
//!
//! - overlayfs: `ctr image pull` of the original image, then `ctr run` of the workload;
//! - augur: `ctr-remote image rpull --snapshotter augur` of the eStargz copy, then
//!   `ctr run --snapshotter augur`.
//!
//! The clock starts when the pull starts. Recorded: when the pull returned, when the workload's
//! first output byte arrived, when `ctr run` exited, and the bytes the profile's proxy delivered
//! up to each of those moments. Afterwards everything is stopped and deleted, and dirty pages are
//! written (`sync`), so nothing of one run is cached for or charged to the next.

use std::fmt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use augur_integration_tests::delay_proxy::ProxyCounters;
use augur_integration_tests::shaped::{self, FirstOutput, WatchedChild, epoch_secs, keep_logs};
use augur_integration_tests::{Containerd, Daemon, DaemonOptions};

use crate::bed::Bed;
use crate::{Opts, Profile, Workload};

/// No single pull or run may take longer (the slowest, python-big at 25 Mbit/s, takes ~2 min).
const CHILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// How the image is pulled and run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// containerd's overlayfs snapshotter, full pull of the original image.
    Overlayfs,
    /// Augur (daemon variant `i` of the options; 0 is the one under test), lazy pull of the
    /// eStargz copy.
    Augur(usize),
}

impl Mode {
    /// Index in per-mode arrays: overlayfs, then the daemon variants.
    pub fn index(self) -> usize {
        match self {
            Mode::Overlayfs => 0,
            Mode::Augur(i) => 1 + i,
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Pull start → pull command returned.
    pub pull: Duration,
    /// Pull start → first byte of the workload's output.
    pub first_output: Duration,
    /// Pull start → `ctr run` exited.
    pub total: Duration,
    /// Bytes delivered by the proxy between pull start and first output.
    pub bytes_first: u64,
    /// … and until `ctr run` exited.
    pub bytes_total: u64,
    /// Connections opened through the proxy until `ctr run` exited.
    pub connections: u64,
    /// Augur only: range requests and bytes in its layers' `stats.json` when it stopped
    /// (footer and TOC reads count bytes, not requests; background fetch included).
    pub augur_requests: Option<u64>,
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pull {:.2} s, first output {:.2} s, total {:.2} s, {:.1} MiB before first output, \
             {:.1} MiB in all, {} connections",
            self.pull.as_secs_f64(),
            self.first_output.as_secs_f64(),
            self.total.as_secs_f64(),
            mib(self.bytes_first),
            mib(self.bytes_total),
            self.connections
        )?;
        if let Some(r) = self.augur_requests {
            write!(f, ", {r} range requests")?;
        }
        Ok(())
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / 1024.0 / 1024.0
}

/// Runs `workload` once in `mode` through `profile`; `seq` makes names unique.
pub fn run_once(
    bed: &Bed,
    opts: &Opts,
    profile: &Profile,
    workload: &Workload,
    mode: Mode,
    seq: usize,
) -> Result<Sample> {
    let dir = bed.dir().join(&format!("run-{seq}"));
    std::fs::create_dir_all(&dir)?;
    let result = measure(bed, opts, profile, workload, mode, &dir);
    if let Some(keep) = &opts.keep_logs {
        let mode_name = opts.mode_name(mode).replace(':', "-");
        let name = format!("{seq:03}-{}-{}-{mode_name}", profile.name, workload.image);
        keep_logs(&dir, &keep.join(name));
    }
    remove_run_dir(&dir);
    nix::unistd::sync();
    result
}

fn measure(
    bed: &Bed,
    opts: &Opts,
    profile: &Profile,
    workload: &Workload,
    mode: Mode,
    dir: &Path,
) -> Result<Sample> {
    let socket = dir.join("augur.sock");
    let mut daemon = match mode {
        Mode::Overlayfs => None,
        Mode::Augur(i) => {
            let v = &opts.variants[i];
            Some(Daemon::start_with(
                &dir.join("augur"),
                &socket,
                &dir.join("augur.log"),
                DaemonOptions {
                    config: v.config.clone().unwrap_or_else(|| "/dev/null".into()),
                    log_level: opts.augur_log_level.clone(),
                    netns: Some(bed.netns().path()),
                    bin: Some(v.bin.clone()),
                },
            ))
        }
    };
    let augur = daemon.is_some();
    let containerd = Containerd::start(&dir.join("containerd"), &[("augur", socket.as_path())]);
    let p = crate::PROFILES
        .iter()
        .position(|x| x.name == profile.name)
        .context("profile")?;
    let proxy = bed.proxy(p);
    let tag = if augur { "esgz" } else { "latest" };
    let image = format!("{}/{}:{tag}", proxy.host(), workload.image);
    let counters = proxy.counters();
    let (bytes0, conns0) = (counters.down(), counters.connections());

    let start = Instant::now();
    let wall_start = epoch_secs();
    let mut pull = bed
        .netns()
        .command(if augur { "ctr-remote" } else { "ctr" });
    pull.arg("--address").arg(containerd.address());
    pull.args(["-n", "bench", "image"]);
    if augur {
        pull.args(["rpull", "--plain-http", "--snapshotter", "augur", &image]);
    } else {
        pull.args(["pull", "--plain-http", &image]);
    }
    watch(&mut pull, "pull", None).and_then(|o| o.check("pull"))?;
    let pulled = start.elapsed();

    let mut run = containerd.command(&["-n", "bench", "run", "--rm"]);
    if augur {
        run.args(["--snapshotter", "augur"]);
    }
    run.arg(&image).arg("lazybench").args(workload.cmd);
    let out = watch(&mut run, "run", Some((start, Arc::clone(&counters))))?;
    let total = start.elapsed();
    out.check("run")?;
    ensure!(
        out.stdout.contains(workload.expect),
        "the workload printed {:?}, not {:?}",
        out.stdout,
        workload.expect
    );
    let (first_output, bytes_at_first) = out.first.context("no output")?;
    let timeline = serde_json::json!({
        "pull_start": wall_start,
        "pull_end": wall_start + pulled.as_secs_f64(),
        "first_output": wall_start + first_output.as_secs_f64(),
        "run_exit": wall_start + total.as_secs_f64(),
    });
    std::fs::write(dir.join("timeline.json"), timeline.to_string())?;
    let sample = Sample {
        pull: pulled,
        first_output,
        total,
        bytes_first: bytes_at_first - bytes0,
        bytes_total: counters.down() - bytes0,
        connections: counters.connections() - conns0,
        augur_requests: None,
    };
    drop(containerd);
    let requests = daemon.as_mut().map(|d| {
        d.stop();
        augur_requests(&dir.join("augur/layers"))
    });
    Ok(Sample {
        augur_requests: requests,
        ..sample
    })
}

/// Range requests in every layer's `stats.json` under `layers`.
fn augur_requests(layers: &Path) -> u64 {
    let Ok(dirs) = std::fs::read_dir(layers) else {
        return 0;
    };
    dirs.flatten()
        .filter_map(|d| std::fs::read(d.path().join("stats.json")).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .map(|v| v["fetches"].as_u64().unwrap_or(0))
        .sum()
}

/// Unmounts anything left below `dir` and deletes it: runs leave ~70–300 MB.
fn remove_run_dir(dir: &Path) {
    if let Err(e) = shaped::remove_run_dir(dir) {
        crate::progress(format!("note: could not remove {}: {e}", dir.display()));
    }
}

/// [`WatchedChild::run`] with [`CHILD_TIMEOUT`].
fn watch(
    cmd: &mut Command,
    what: &str,
    first: Option<(Instant, Arc<ProxyCounters>)>,
) -> Result<WatchedChild> {
    let first = first.map(|(start, counters)| FirstOutput {
        start,
        counters,
        stderr_too: false,
    });
    WatchedChild::run(cmd, what, CHILD_TIMEOUT, first)
}
