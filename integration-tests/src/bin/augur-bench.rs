//! `augur-bench`: Augur against containerd's own overlayfs snapshotter, side by side in one run.
//!
//! Both snapshotters are separate processes served over the same proxy gRPC path (Snapshots v1
//! on a unix socket) with their roots under one scratch directory (same disk):
//!
//! - **Augur**: the release daemon, `$AUGUR_SNAPSHOTTER_BIN` or `target/release/augur-snapshotter`.
//! - **reference**: `augur-refsnap` (containerd 1.6's `snapshots/overlay` behind
//!   `contrib/snapshotservice`), `$AUGUR_REFSNAP_BIN` or `$AUGUR_CACHE/go/bin/augur-refsnap`.
//!
//! Two parts:
//!
//! 1. **gRPC micro-benchmark**, through the same tonic client code for both. One iteration is
//!    Prepare (on a committed one-layer base) → Mounts → Stat → write 4 KiB into the upper dir →
//!    Commit → Remove, then the same Prepare → Commit → Remove on a four-layer chain, then an
//!    untimed Cleanup (as containerd's GC does after removals). Iterations alternate between the
//!    two snapshotters, and which one goes first alternates too, so drift and noise (page cache,
//!    journal commits, other load) hit both alike.
//! 2. **Pull + unpack**: a local registry; each round starts fresh snapshotters (their roots
//!    swapping between two parent directories, so neither keeps a luckier place on the disk)
//!    and a private containerd with both as proxy plugins (`augur`, `ref`), then each pulls
//!    `python:latest` into a fresh containerd namespace (`content_sharing_policy = "isolated"`:
//!    everything is downloaded and unpacked), in alternating order (ABBA); the image is removed
//!    (synchronous GC) after each pull.
//!
//! Progress goes to stderr; the Markdown report (table + machine facts) to stdout. With
//! `--strict` the exit code is 1 if any median ratio augur/reference is above 1.0.
//!
//! Usage: `augur-bench [--iterations N] [--warmup N] [--rounds N] [--skip-pull] [--strict]`
//! (root, the test images and both binaries needed: see `integration-tests/scripts/bench.sh`).
//!
//! Everything started here is owned by an RAII guard ([`Server`], [`Registry`], [`Containerd`],
//! [`TestDir`]), so an error, a panic or Ctrl-C (checked between steps) still stops every process
//! and unmounts and deletes the scratch directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use augur_integration_tests::bench::{
    check_interrupted, fmt_duration, machine_facts, median, percentile, ratio_interval, secs,
    watch_signals,
};
use augur_integration_tests::{
    Containerd, Registry, TestDir, cache_dir, connect, poll, signal, workspace,
};
use augur_proto::snapshots::{self as pb, snapshots_client::SnapshotsClient};
use nix::sys::signal::Signal;
use tonic::transport::Channel;

type Client = SnapshotsClient<Channel>;

/// Bytes written into the upper dir before each Commit (so it has something to measure).
const PAYLOAD_BYTES: usize = 4096;
/// Layers below the second Prepare/Commit/Remove series (the `OPS` labels say it too).
const CHAIN_DEPTH: usize = 4;
/// The image the pull benchmark pulls.
const PULL_IMAGE: &str = "python:latest";

#[derive(Debug, Clone)]
struct Opts {
    iterations: usize,
    warmup: usize,
    rounds: usize,
    skip_pull: bool,
    strict: bool,
}

impl Opts {
    fn parse() -> Result<Opts> {
        let mut o = Opts {
            iterations: 300,
            warmup: 30,
            rounds: 8,
            skip_pull: false,
            strict: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut num = |name: &str| -> Result<usize> {
                let v = args
                    .next()
                    .with_context(|| format!("{name} needs a number"))?;
                v.parse()
                    .with_context(|| format!("{name} {v:?} is not a number"))
            };
            match a.as_str() {
                "--iterations" => o.iterations = num("--iterations")?,
                "--warmup" => o.warmup = num("--warmup")?,
                "--rounds" => o.rounds = num("--rounds")?,
                "--skip-pull" => o.skip_pull = true,
                "--strict" => o.strict = true,
                "-h" | "--help" => {
                    println!(
                        "usage: augur-bench [--iterations N (300)] [--warmup N (30)] [--rounds N (8)] \
                         [--skip-pull] [--strict]"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?} (try --help)"),
            }
        }
        ensure!(o.iterations > 0, "--iterations must be at least 1");
        ensure!(o.skip_pull || o.rounds > 0, "--rounds must be at least 1");
        if !o.skip_pull && o.rounds % 2 == 1 {
            eprintln!(
                "augur-bench: note: with an odd --rounds one snapshotter pulls first, and from \
                 the same place on the disk, more often than the other"
            );
        }
        Ok(o)
    }
}

fn main() -> ExitCode {
    let opts = match Opts::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("augur-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    watch_signals("augur-bench");
    let started = Instant::now();
    match run(&opts) {
        Ok(report) => {
            println!("{}", report.markdown(&opts, started.elapsed()));
            let slower = report.slower();
            if !slower.is_empty() {
                eprintln!(
                    "augur-bench: Augur is slower than the reference at the median on: {}",
                    slower.join(", ")
                );
                if opts.strict {
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("augur-bench: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn progress(msg: impl std::fmt::Display) {
    eprintln!("augur-bench: {msg}");
}

// ---------------------------------------------------------------------------------------------
// The two snapshotters
// ---------------------------------------------------------------------------------------------

/// A snapshotter process; dropping it sends SIGTERM and waits (SIGKILL after 10 s).
#[derive(Debug)]
struct Server {
    name: &'static str,
    child: Option<Child>,
    root: PathBuf,
    socket: PathBuf,
}

impl Server {
    /// Starts `bin --root <root> --address <socket> args…`, logging to `log_path`, and waits for
    /// the socket.
    fn start(
        name: &'static str,
        bin: &Path,
        extra_args: &[&str],
        root: PathBuf,
        socket: PathBuf,
        log_path: &Path,
    ) -> Result<Server> {
        ensure!(
            bin.exists(),
            "{name}: {} is missing (run integration-tests/scripts/bench.sh)",
            bin.display()
        );
        let log = std::fs::File::create(log_path)?;
        let child = Command::new(bin)
            .arg("--root")
            .arg(&root)
            .arg("--address")
            .arg(&socket)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let mut server = Server {
            name,
            child: Some(child),
            root,
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&server.socket).is_err() {
            let exited = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                let log = std::fs::read_to_string(log_path).unwrap_or_default();
                bail!("{name} exited at start-up ({status}):\n{log}");
            }
            ensure!(Instant::now() < deadline, "{name}: no socket after 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        progress(format!(
            "{name}: pid {} serving on {}",
            server.pid(),
            server.socket.display()
        ));
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// CPU time (user + system, all threads) the process has used so far.
    fn cpu_time(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let ticks: u64 = after
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|f| f.parse::<u64>().ok())
            .sum();
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100);
        Duration::from_secs_f64(ticks as f64 / hz.max(1) as f64)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        signal(c.id(), Signal::SIGTERM);
        if !poll(Duration::from_secs(10), || {
            matches!(c.try_wait(), Ok(Some(_)))
        }) {
            eprintln!(
                "augur-bench: {} did not stop on SIGTERM; killing it",
                self.name
            );
            let _ = c.kill();
        }
        let _ = c.wait();
    }
}

fn augur_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("AUGUR_SNAPSHOTTER_BIN") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace().join("target"), PathBuf::from);
    target.join("release/augur-snapshotter")
}

fn refsnap_bin() -> PathBuf {
    std::env::var_os("AUGUR_REFSNAP_BIN")
        .map_or_else(|| cache_dir().join("go/bin/augur-refsnap"), PathBuf::from)
}

/// Starts both snapshotters in the same way (info-level logs to a file): Augur on `roots[0]`, the
/// reference on `roots[1]`, sockets and logs in `dir` named with `tag`.
fn start_servers(dir: &Path, tag: &str, roots: [PathBuf; 2]) -> Result<[Server; 2]> {
    let [augur_root, ref_root] = roots;
    let augur = Server::start(
        "augur",
        &augur_bin(),
        &["--log-level", "info", "--config", "/dev/null"],
        augur_root,
        dir.join(format!("augur{tag}.sock")),
        &dir.join(format!("augur{tag}.log")),
    )?;
    let reference = Server::start(
        "ref",
        &refsnap_bin(),
        &[],
        ref_root,
        dir.join(format!("ref{tag}.sock")),
        &dir.join(format!("ref{tag}.log")),
    )?;
    Ok([augur, reference])
}

// ---------------------------------------------------------------------------------------------
// Samples and the report
// ---------------------------------------------------------------------------------------------

/// One measured operation, Augur's and the reference's samples side by side.
#[derive(Debug, Clone)]
struct Row {
    op: String,
    samples: [Vec<Duration>; 2],
}

impl Row {
    fn new(op: &str) -> Row {
        Row {
            op: op.into(),
            samples: [Vec::new(), Vec::new()],
        }
    }

    fn ratio(&self) -> f64 {
        let (a, r) = (median(&self.samples[0]), median(&self.samples[1]));
        a.as_secs_f64() / r.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// 95% bootstrap interval of the ratio of medians: if it contains 1.00, the two medians are
    /// not told apart by this run.
    fn ratio_interval(&self) -> (f64, f64) {
        let [a, r] = &self.samples;
        ratio_interval(&secs(a), &secs(r))
    }
}

#[derive(Debug, Default)]
struct Report {
    /// Latencies: the table the target is about.
    rows: Vec<Row>,
    /// CPU time the snapshotter processes used (context for the latencies).
    cpu_rows: Vec<Row>,
}

impl Report {
    /// Operations where Augur's median is above the reference's.
    fn slower(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter(|r| r.ratio() > 1.0)
            .map(|r| r.op.clone())
            .collect()
    }

    fn table(rows: &[Row], head: &str) -> String {
        let mut s = format!(
            "| {head} | augur median | reference median | ratio | augur p90 | reference p90 | ratio 95% CI |\n"
        );
        s.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
        for r in rows {
            let [a, b] = &r.samples;
            let (lo, hi) = r.ratio_interval();
            s.push_str(&format!(
                "| {} | {} | {} | {:.2} | {} | {} | {lo:.2}–{hi:.2} |\n",
                r.op,
                fmt_duration(median(a)),
                fmt_duration(median(b)),
                r.ratio(),
                fmt_duration(percentile(a, 90.0)),
                fmt_duration(percentile(b, 90.0)),
            ));
        }
        s
    }

    fn markdown(&self, opts: &Opts, wall: Duration) -> String {
        let mut s = Self::table(&self.rows, "operation");
        s.push_str(&format!(
            "\nratio = augur median / reference median (≤ 1.00: Augur as fast or faster); ratio 95% CI: \
             bootstrap interval (an interval containing 1.00 means no measurable difference). gRPC rows: \
             {} iterations per snapshotter after {} warm-up, interleaved; pull rows: {} rounds per \
             snapshotter after one warm-up round, alternating order.\n\n",
            opts.iterations,
            opts.warmup,
            if opts.skip_pull { 0 } else { opts.rounds },
        ));
        if !self.cpu_rows.is_empty() {
            s.push_str("CPU time used by the snapshotter process itself (user + system, all threads; 10 ms ticks):\n\n");
            s.push_str(&Self::table(&self.cpu_rows, "snapshotter CPU"));
            s.push('\n');
        }
        s.push_str(&machine_facts_with_binaries());
        s.push_str(&format!(
            "- benchmark wall time: {:.0} s\n",
            wall.as_secs_f64()
        ));
        s
    }
}

fn machine_facts_with_binaries() -> String {
    format!(
        "{}- augur: {}\n- reference: {}\n",
        machine_facts(),
        augur_bin().display(),
        refsnap_bin().display(),
    )
}

// ---------------------------------------------------------------------------------------------
// Part 1: gRPC micro-benchmark
// ---------------------------------------------------------------------------------------------

/// Rows of the micro-benchmark, in table order.
const OPS: [&str; 9] = [
    "Prepare (parent: 1 layer)",
    "Mounts",
    "Stat",
    "Commit (4 KiB upper)",
    "Remove (committed)",
    "Prepare (parent: 4-layer chain)",
    "Commit (on 4-layer chain)",
    "Remove (on 4-layer chain)",
    "one iteration, all of the above",
];

async fn prepare(c: &mut Client, key: &str, parent: &str) -> Result<Vec<augur_proto::Mount>> {
    let r = pb::PrepareSnapshotRequest {
        key: key.into(),
        parent: parent.into(),
        ..Default::default()
    };
    Ok(c.prepare(r)
        .await
        .with_context(|| format!("prepare {key}"))?
        .into_inner()
        .mounts)
}

async fn commit(c: &mut Client, name: &str, key: &str) -> Result<()> {
    let r = pb::CommitSnapshotRequest {
        name: name.into(),
        key: key.into(),
        ..Default::default()
    };
    c.commit(r)
        .await
        .with_context(|| format!("commit {key} as {name}"))?;
    Ok(())
}

async fn mounts(c: &mut Client, key: &str) -> Result<()> {
    let r = pb::MountsRequest {
        key: key.into(),
        ..Default::default()
    };
    c.mounts(r).await.with_context(|| format!("mounts {key}"))?;
    Ok(())
}

async fn stat(c: &mut Client, key: &str) -> Result<()> {
    let r = pb::StatSnapshotRequest {
        key: key.into(),
        ..Default::default()
    };
    c.stat(r).await.with_context(|| format!("stat {key}"))?;
    Ok(())
}

async fn remove(c: &mut Client, key: &str) -> Result<()> {
    let r = pb::RemoveSnapshotRequest {
        key: key.into(),
        ..Default::default()
    };
    c.remove(r).await.with_context(|| format!("remove {key}"))?;
    Ok(())
}

/// The directory a writer of this active snapshot writes into (bind source or overlay upper).
fn upper_dir(mounts: &[augur_proto::Mount]) -> Result<PathBuf> {
    let m = mounts.first().context("no mounts returned")?;
    if m.r#type == "bind" {
        return Ok(PathBuf::from(&m.source));
    }
    let upper = m.options.iter().find_map(|o| o.strip_prefix("upperdir="));
    Ok(PathBuf::from(upper.with_context(|| {
        format!("no upperdir in {:?}", m.options)
    })?))
}

fn write_payload(mounts: &[augur_proto::Mount], name: &str) -> Result<()> {
    let dir = upper_dir(mounts)?;
    std::fs::write(dir.join(name), vec![0x5a; PAYLOAD_BYTES])
        .with_context(|| format!("write into {}", dir.display()))
}

/// Times one call.
async fn timed<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<(T, Duration)> {
    let start = Instant::now();
    let v = f.await?;
    Ok((v, start.elapsed()))
}

/// Commits a one-layer `base` and on it `chain-2` … `chain-<CHAIN_DEPTH>` (`chain-k` is the top
/// of a k-layer stack).
async fn setup_parents(c: &mut Client) -> Result<()> {
    let mut parent = String::new();
    for i in 1..=CHAIN_DEPTH {
        let name = if i == 1 {
            "base".to_owned()
        } else {
            format!("chain-{i}")
        };
        let key = format!("{name}-active");
        let mounts = prepare(c, &key, &parent).await?;
        write_payload(&mounts, &format!("layer-{i}"))?;
        commit(c, &name, &key).await?;
        parent = name;
    }
    Ok(())
}

/// One iteration on one snapshotter; returns the durations in [`OPS`] order.
async fn iteration(c: &mut Client, i: usize) -> Result<[Duration; OPS.len()]> {
    let (key, name) = (format!("it-{i}"), format!("it-{i}-committed"));
    let (upper_mounts, prep) = timed(prepare(c, &key, "base")).await?;
    let (_, mnt) = timed(mounts(c, &key)).await?;
    let (_, stat) = timed(stat(c, &key)).await?;
    write_payload(&upper_mounts, "payload")?;
    let (_, com) = timed(commit(c, &name, &key)).await?;
    let (_, rm) = timed(remove(c, &name)).await?;

    let top = format!("chain-{CHAIN_DEPTH}");
    let (ckey, cname) = (format!("ch-{i}"), format!("ch-{i}-committed"));
    let (chain_mounts, cprep) = timed(prepare(c, &ckey, &top)).await?;
    write_payload(&chain_mounts, "payload")?;
    let (_, ccom) = timed(commit(c, &cname, &ckey)).await?;
    let (_, crm) = timed(remove(c, &cname)).await?;
    // Untimed, as containerd's GC does after removing snapshots: deletes whatever a snapshotter
    // left for later (and keeps disk use bounded whichever way a snapshotter removes).
    c.cleanup(pb::CleanupRequest::default())
        .await
        .context("cleanup")?;
    let all = prep + mnt + stat + com + rm + cprep + ccom + crm;
    Ok([prep, mnt, stat, com, rm, cprep, ccom, crm, all])
}

async fn grpc_bench(servers: &[Server; 2], opts: &Opts, report: &mut Report) -> Result<()> {
    let mut clients = [
        connect(&servers[0].socket).await,
        connect(&servers[1].socket).await,
    ];
    for c in &mut clients {
        setup_parents(c).await?;
    }
    let mut rows: Vec<Row> = OPS.iter().map(|op| Row::new(op)).collect();
    let mut cpu = Row::new("per gRPC iteration (mean)");
    let mut cpu_at_start = [Duration::ZERO; 2];
    let total = opts.warmup + opts.iterations;
    for i in 0..total {
        check_interrupted()?;
        if i == opts.warmup {
            cpu_at_start = [servers[0].cpu_time(), servers[1].cpu_time()];
        }
        // Alternate which snapshotter goes first.
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for s in order {
            let d = iteration(&mut clients[s], i)
                .await
                .with_context(|| format!("{} iteration {i}", servers[s].name))?;
            if i >= opts.warmup {
                for (row, d) in rows.iter_mut().zip(d) {
                    row.samples[s].push(d);
                }
            }
        }
        if (i + 1) % 100 == 0 || i + 1 == total {
            progress(format!(
                "gRPC: {}/{total} iterations (first {} are warm-up)",
                i + 1,
                opts.warmup
            ));
        }
    }
    let n = u32::try_from(opts.iterations).unwrap_or(u32::MAX);
    for s in 0..2 {
        cpu.samples[s].push(servers[s].cpu_time().saturating_sub(cpu_at_start[s]) / n);
    }
    report.rows.extend(rows);
    report.cpu_rows.push(cpu);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Part 2: ctr image pull + unpack
// ---------------------------------------------------------------------------------------------

/// Pulls `image` with snapshotter `sn` into the new namespace `ns`; returns the wall time.
fn pull(ctd: &Containerd, ns: &str, sn: &str, image: &str) -> Result<Duration> {
    let start = Instant::now();
    let out = ctd.ctr(&[
        "-n",
        ns,
        "image",
        "pull",
        "--plain-http",
        "--snapshotter",
        sn,
        image,
    ]);
    let took = start.elapsed();
    ensure!(
        out.status.success(),
        "ctr -n {ns} image pull --snapshotter {sn} {image} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(took)
}

/// Removes the image (GC deletes its content and snapshots before returning), then the
/// namespace; waits until Augur's background deletions are done and dirty pages are written,
/// so nothing of this round is still running when the next one is timed.
fn unpull(ctd: &Containerd, ns: &str, image: &str, augur_root: &Path) -> Result<()> {
    let rm = ctd.ctr(&["-n", ns, "image", "rm", "--sync", image]);
    ensure!(
        rm.status.success(),
        "ctr image rm: {}",
        String::from_utf8_lossy(&rm.stderr)
    );
    let nsrm = ctd.ctr(&["namespaces", "rm", ns]);
    if !nsrm.status.success() {
        progress(format!(
            "note: namespace {ns} not removed: {}",
            String::from_utf8_lossy(&nsrm.stderr).trim()
        ));
    }
    let snapshots = augur_root.join("snapshots");
    let trash_left = || {
        std::fs::read_dir(&snapshots)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("trash-"))
            })
            .unwrap_or(false)
    };
    if !poll(Duration::from_secs(60), || !trash_left()) {
        progress("note: Augur still deleting removed snapshots after 60 s");
    }
    nix::unistd::sync();
    Ok(())
}

fn pull_bench(dir: &TestDir, opts: &Opts, report: &mut Report) -> Result<()> {
    progress("pull: starting a registry and pushing the test images");
    let registry = Registry::start(&dir.join("registry"));
    registry.push_test_images();
    let image = registry.image(PULL_IMAGE);
    let names = ["augur", "ref"];
    let parents = [dir.join("pull-1"), dir.join("pull-2")];
    for p in &parents {
        std::fs::create_dir_all(p)?;
    }
    let mut row = Row::new(&format!("`ctr image pull` {PULL_IMAGE} + unpack"));
    let mut cpu_pull = Row::new(&format!("per pull of {PULL_IMAGE}"));
    let mut cpu_rm = Row::new(&format!("per removal of {PULL_IMAGE} (GC, until deleted)"));
    for round in 0..=opts.rounds {
        check_interrupted()?;
        // Fresh snapshotters every round, their roots swapping between two parent directories:
        // neither keeps a luckier place on the disk (ext4 block group, host-side allocation of
        // the VM image) for a whole run. containerd restarts with them (new sockets).
        let swap = round % 2;
        let roots = [
            parents[swap].join(format!("augur-{round}")),
            parents[1 - swap].join(format!("ref-{round}")),
        ];
        let servers = start_servers(dir.path(), &format!("-{round}"), roots.clone())?;
        let ctd = Containerd::start(
            &dir.join("containerd"),
            &[("augur", &servers[0].socket), ("ref", &servers[1].socket)],
        );
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for s in order {
            check_interrupted()?;
            let ns = format!("bench-{}-{round}", names[s]);
            let cpu0 = servers[s].cpu_time();
            let took = pull(&ctd, &ns, names[s], &image)?;
            let cpu1 = servers[s].cpu_time();
            unpull(&ctd, &ns, &image, &servers[0].root)?;
            let cpu2 = servers[s].cpu_time();
            let what = if round == 0 { "warm-up" } else { "round" };
            progress(format!(
                "pull: {what} {round}/{}: {:<5} {:.2} s (snapshotter CPU {:.2} s)",
                opts.rounds,
                names[s],
                took.as_secs_f64(),
                cpu1.saturating_sub(cpu0).as_secs_f64()
            ));
            if round > 0 {
                row.samples[s].push(took);
                cpu_pull.samples[s].push(cpu1.saturating_sub(cpu0));
                cpu_rm.samples[s].push(cpu2.saturating_sub(cpu1));
            }
        }
        drop(ctd);
        drop(servers);
        for r in &roots {
            let _ = std::fs::remove_dir_all(r);
        }
    }
    report.rows.push(row);
    report.cpu_rows.extend([cpu_pull, cpu_rm]);
    Ok(())
}

fn run(opts: &Opts) -> Result<Report> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "must run as root (containerd, overlay upper dirs)"
    );
    let dir = TestDir::new("bench");
    progress(format!("scratch dir {}", dir.path().display()));
    let roots = [dir.join("augur-root"), dir.join("ref-root")];
    let servers = start_servers(dir.path(), "", roots)?;
    let mut report = Report::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    progress(format!(
        "gRPC: {} warm-up + {} measured iterations per snapshotter",
        opts.warmup, opts.iterations
    ));
    rt.block_on(grpc_bench(&servers, opts, &mut report))?;
    drop(rt);
    drop(servers);
    if !opts.skip_pull {
        pull_bench(&dir, opts, &mut report)?;
    }
    // Guards drop in reverse order (containerd, snapshotters, registry), the scratch dir last,
    // unmounting anything left below it.
    Ok(report)
}
