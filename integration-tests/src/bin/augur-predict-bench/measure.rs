//! One measured run: a fresh Augur daemon (in the bench namespace) whose root starts with the
//! variant's state in `<root>/predictor/`, a fresh containerd, then `ctr-remote image rpull
//! --snapshotter augur` of the eStargz image through the profile's proxy and `ctr run
//! --snapshotter augur` of the argument set's command, its snapshot labelled with the set (as
//! the recorder labelled it).
//!
//! The clock starts when the pull starts. Recorded: time to the first output byte (stdout or
//! stderr: `python3/logging` only logs) and to exit,
//! bytes the proxy delivered in all, and the prefetcher's counters from the daemon's
//! `GET /status` once the run is over. Afterwards everything is stopped and deleted, and dirty
//! pages are written (`sync`), so nothing of one run is cached for or charged to the next.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use augur_integration_tests::shaped::{self, FirstOutput, WatchedChild, keep_logs};
use augur_integration_tests::{Containerd, Daemon, DaemonOptions, snapshotter_bin};

use crate::opts::{Opts, Variant};
use crate::prepare::{ARGS_LABEL, Prepared};

/// No single pull or run may take longer.
const CHILD_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// What one run measured.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Pull start → first byte of the workload's output.
    pub first_output: Duration,
    /// Pull start → `ctr run` exited.
    pub total: Duration,
    /// Bytes delivered by the proxy until `ctr run` exited.
    pub bytes: u64,
    /// Chunks the prefetcher fetched.
    pub issued: u64,
    /// … of which the run read.
    pub used: u64,
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "first output {:.2} s, exit {:.2} s, {:.1} MiB fetched, prefetched {} chunks, {} used",
            self.first_output.as_secs_f64(),
            self.total.as_secs_f64(),
            self.bytes as f64 / 1048576.0,
            self.issued,
            self.used
        )
    }
}

/// Runs argument set `w` once with variant `v` through profile `p`; `seq` makes names unique.
pub fn run_once(
    prep: &Prepared,
    opts: &Opts,
    p: usize,
    w: usize,
    v: Variant,
    seq: usize,
) -> Result<Sample> {
    let dir = prep.dir.join(&format!("run-{seq}"));
    std::fs::create_dir_all(&dir)?;
    let result = measure(prep, opts, p, w, v, &dir);
    if let Some(keep) = &opts.keep_logs {
        let label = prep.sets[w].label.replace('/', "-");
        let name = format!("{seq:03}-{}-{label}-{}", shaped::PROFILES[p].name, v.name());
        keep_logs(&dir, &keep.join(name));
    }
    if let Err(e) = shaped::remove_run_dir(&dir) {
        crate::progress(format!("note: could not remove {}: {e}", dir.display()));
    }
    nix::unistd::sync();
    result
}

fn measure(
    prep: &Prepared,
    opts: &Opts,
    p: usize,
    w: usize,
    v: Variant,
    dir: &Path,
) -> Result<Sample> {
    let root = dir.join("augur");
    if v.models().is_some() {
        copy_dir(&prep.state_dir(v, p, w), &root.join("predictor"))?;
    }
    let socket = dir.join("augur.sock");
    let mut daemon = Daemon::start_with(
        &root,
        &socket,
        &dir.join("augur.log"),
        DaemonOptions {
            config: prep.config(v),
            log_level: opts.augur_log_level.clone(),
            netns: Some(prep.net.netns().path()),
            bin: Some(snapshotter_bin()),
        },
    );
    let containerd = Containerd::start(&dir.join("containerd"), &[("augur", socket.as_path())]);
    let proxy = prep.net.proxy(p);
    let image = prep.image(p);
    let counters = proxy.counters();
    let bytes0 = counters.down();

    let start = Instant::now();
    let mut pull = prep.net.netns().command("ctr-remote");
    pull.arg("--address").arg(containerd.address());
    pull.args([
        "-n",
        "bench",
        "image",
        "rpull",
        "--plain-http",
        "--snapshotter",
        "augur",
    ]);
    pull.arg(&image);
    WatchedChild::run(&mut pull, "pull", CHILD_TIMEOUT, None)?.check("pull")?;

    let set = &prep.sets[w];
    let label = format!("{ARGS_LABEL}={}", set.label);
    let mut run = containerd.command(&["-n", "bench", "run", "--rm", "--snapshotter", "augur"]);
    run.args(["--snapshotter-label", &label, &image, "predictbench"]);
    run.args(&set.argv);
    let first = FirstOutput {
        start,
        counters: Arc::clone(&counters),
        stderr_too: true,
    };
    let out = WatchedChild::run(&mut run, "run", CHILD_TIMEOUT, Some(first))?;
    let total = start.elapsed();
    out.check("run")?;
    let (first_output, _) = out.first.context("the workload printed nothing")?;
    let bytes = counters.down() - bytes0;
    let status = status(&daemon.admin_socket());
    drop(containerd);
    daemon.stop();
    let counter = |name: &str| status["prefetch"][name].as_u64().unwrap_or(0);
    Ok(Sample {
        first_output,
        total,
        bytes,
        issued: counter("issued_chunks"),
        used: counter("used_chunks"),
    })
}

/// The daemon's `GET /status` (`null` if it did not answer).
fn status(admin: &Path) -> serde_json::Value {
    let out = std::process::Command::new("curl")
        .args(["-sf", "--max-time", "10", "--unix-socket"])
        .arg(admin)
        .arg("http://augur/status")
        .output();
    out.ok()
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Copies the files of `from` into `to` (created).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("{}", from.display()))? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}
