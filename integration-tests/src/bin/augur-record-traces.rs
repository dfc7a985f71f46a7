//! `augur-record-traces`: records the access traces of real programs in a real image, the
//! training data of the model shipped in `onnx-models/`. Run through
//! `onnx-models/record-traces.sh`, which builds what it needs.
//!
//! What it does, all on this machine and stopped at the end (also on failure):
//! 1. a registry on 127.0.0.1 with the workload file's image (built from Debian packages by
//!    `images.sh`), converted to eStargz with `augurctl image convert`;
//! 2. `augur-snapshotter` (background fetch off: every read a program makes reaches the
//!    registry or the chunk cache through FUSE, not a whole-layer download) and a private
//!    containerd; the image pulled lazily with `augurctl image rpull`;
//! 3. every workload of the file, `repeat` times, each in a fresh container (`ctr run --rm`)
//!    after dropping the kernel's page cache (otherwise a file read by an earlier run is served
//!    by the kernel and never reaches FUSE, and the trace misses it). Each container's snapshot
//!    carries the label `containerd.io/snapshot/augur.args = <group>/<name>`, which the daemon
//!    keeps in the trace, so the evaluator can hold out whole argument sets;
//! 4. `augurctl trace export` of every run, written to `--out` (JSON Lines, `docs/traces.md`).
//!
//! Usage: `augur-record-traces --workloads FILE --out FILE` (root).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use augur_integration_tests::{
    Containerd, Daemon, Registry, TestDir, augurctl_bin, drop_page_cache, run_ok, traces_kept,
};
use serde::Deserialize;

const NS: &str = "record";
const ARGS_LABEL: &str = "containerd.io/snapshot/augur.args";
const CONFIG: &str = "[remote]\nbackground_fetch = false\n";

#[derive(Debug, Deserialize)]
struct WorkloadFile {
    image: String,
    repeat: usize,
    workloads: Vec<Workload>,
}

#[derive(Debug, Deserialize)]
struct Workload {
    group: String,
    name: String,
    argv: Vec<String>,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("augur-record-traces: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let (workloads_path, out) = parse_args()?;
    if !nix::unistd::Uid::effective().is_root() {
        bail!("run as root (it starts containerd, mounts snapshots and drops the page cache)");
    }
    let text = std::fs::read_to_string(&workloads_path)
        .with_context(|| format!("read {}", workloads_path.display()))?;
    let file: WorkloadFile = serde_json::from_str(&text)
        .with_context(|| format!("parse {}", workloads_path.display()))?;
    if file.workloads.is_empty() || file.repeat == 0 {
        bail!("{}: no workloads or repeat = 0", workloads_path.display());
    }
    record(&file, &out)
}

fn parse_args() -> Result<(PathBuf, PathBuf)> {
    let mut args = std::env::args().skip(1);
    let (mut workloads, mut out) = (None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--workloads" => workloads = args.next().map(PathBuf::from),
            "--out" => out = args.next().map(PathBuf::from),
            other => bail!("unknown argument {other:?} (usage: --workloads FILE --out FILE)"),
        }
    }
    match (workloads, out) {
        (Some(w), Some(o)) => Ok((w, o)),
        _ => bail!("usage: augur-record-traces --workloads FILE --out FILE"),
    }
}

fn record(file: &WorkloadFile, out: &Path) -> Result<()> {
    let dir = TestDir::new("record-traces");
    say(&format!(
        "registry on 127.0.0.1 with the {} image",
        file.image
    ));
    let registry = Registry::start(&dir.join("registry"));
    registry.push_images(&[file.image.as_str()]);
    std::fs::write(dir.join("augur.toml"), CONFIG)?;
    let daemon = Daemon::start_with_config(
        &dir.join("augur"),
        &dir.join("augur.sock"),
        &dir.join("augur.log"),
        &dir.join("augur.toml"),
    );
    let containerd = Containerd::start(&dir.join("containerd"), &[("augur", daemon.socket())]);
    let plain = registry.image(&format!("{}:latest", file.image));
    let esgz = registry.image(&format!("{}:esgz", file.image));
    say(&format!("augurctl image convert {plain} {esgz}"));
    run_ok(Command::new(augurctl_bin()).args(["image", "convert", "--quiet", &plain, &esgz]));
    say(&format!("augurctl image rpull {esgz}"));
    run_ok(
        Command::new(augurctl_bin())
            .args(["image", "rpull", "--quiet", "-n", NS, "--address"])
            .arg(containerd.address())
            .arg(&esgz),
    );

    let total = file.repeat * file.workloads.len();
    let mut n = 0;
    for rep in 0..file.repeat {
        for w in &file.workloads {
            n += 1;
            let took = run_workload(&containerd, &esgz, w, n)?;
            say(&format!(
                "[{n}/{total}] round {} {}/{}: {took:.2} s",
                rep + 1,
                w.group,
                w.name
            ));
        }
    }

    // containerd removes a finished container's snapshot in its garbage collection, a moment
    // after `ctr run --rm` returns; the run's trace is written then.
    let admin = daemon.admin_socket();
    let kept = || traces_kept(&admin);
    if !augur_integration_tests::poll(std::time::Duration::from_secs(120), || kept() >= total) {
        bail!("only {} of {total} runs left a trace", kept());
    }
    say(&format!("augurctl trace export --out {}", out.display()));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    run_ok(
        Command::new(augurctl_bin())
            .args(["trace", "export", "--admin-socket"])
            .arg(&admin)
            .arg("--out")
            .arg(out),
    );
    let runs = std::fs::read_to_string(out)?.lines().count();
    say(&format!("{} written ({runs} lines)", out.display()));
    Ok(())
}

/// Runs one workload in a fresh container on a cold page cache; returns its wall time.
fn run_workload(containerd: &Containerd, image: &str, w: &Workload, n: usize) -> Result<f64> {
    drop_page_cache().context("drop the page cache")?;
    let id = format!("rec-{n}");
    let label = format!("{ARGS_LABEL}={}/{}", w.group, w.name);
    let mut args = vec![
        "-n",
        NS,
        "run",
        "--rm",
        "--snapshotter",
        "augur",
        "--snapshotter-label",
        &label,
        image,
        &id,
    ];
    args.extend(w.argv.iter().map(String::as_str));
    let start = Instant::now();
    let out = containerd.ctr(&args);
    if !out.status.success() {
        bail!(
            "{}/{} failed ({}): {}",
            w.group,
            w.name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(start.elapsed().as_secs_f64())
}

fn say(msg: &str) {
    eprintln!("==> {msg}");
}
