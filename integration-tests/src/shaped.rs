//! The shaped network the lazy-pull and predictor benchmarks measure through (decision 0012):
//!
//! - [`PROFILES`]: unshaped, ~100 Mbit/s with 20 ms, ~25 Mbit/s with 50 ms one way;
//! - [`ShapedNet`]: a loopback-only namespace `augur-<name>-<pid>` with a registry on
//!   127.0.0.1:5000 serving a given storage directory, one [`DelayProxy`] per profile
//!   (127.0.0.1:5001…5003 → 5000) and HTB limiting what each shaped proxy's port sends; a
//!   [`Calibration`] of each profile (one ranged GET with curl);
//! - [`WatchedChild`]: a benchmark's child run to the end (Ctrl-C and a timeout kill it), its
//!   first output byte timed; [`remove_run_dir`], [`keep_logs`] for per-run scratch directories;
//! - [`layers`]: an image's layers as the registry serves them.
//!
//! Clients of the registry (`ctr`, `ctr-remote`, the Augur daemon) run in the namespace;
//! containerd itself and the containers stay outside. Every part is an RAII guard: dropping the
//! [`ShapedNet`] stops the proxies, removes the qdiscs, stops the registry and deletes the
//! namespace.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use nix::mount::{MntFlags, umount2};

use crate::bench::interrupted;
use crate::delay_proxy::{self, DelayProxy, ProxyCounters};
use crate::netns::{NetNs, PortRate, RateLimit};
use crate::{Registry, RegistryOptions, mounts_under, run_ok};

/// The registry's port inside the namespace (the proxies forward to it).
pub const REGISTRY_PORT: u16 = 5000;
/// Bytes fetched by each calibration request.
pub const CALIBRATION_BYTES: u64 = 4 << 20;

/// A network profile: what clients of the registry see.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// Short name (options, progress).
    pub name: &'static str,
    /// Rate limit of what clients download, Mbit/s (`None`: loopback speed).
    pub mbit: Option<u32>,
    /// Latency added per direction.
    pub one_way: Duration,
    /// The delay proxy's port in the namespace.
    pub port: u16,
}

/// The profiles: unshaped, ~100 Mbit/s with 20 ms, ~25 Mbit/s with 50 ms (one way each, so
/// round trips of 40 and 100 ms).
pub const PROFILES: [Profile; 3] = [
    Profile {
        name: "unshaped",
        mbit: None,
        one_way: Duration::ZERO,
        port: 5001,
    },
    Profile {
        name: "100mbit-20ms",
        mbit: Some(100),
        one_way: Duration::from_millis(20),
        port: 5002,
    },
    Profile {
        name: "25mbit-50ms",
        mbit: Some(25),
        one_way: Duration::from_millis(50),
        port: 5003,
    },
];

/// What a profile measured at start-up.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// Time to the first byte of a range request on a new connection.
    pub first_byte_secs: f64,
    /// Download rate of [`CALIBRATION_BYTES`] after the first byte, MB/s.
    pub mb_per_sec: f64,
}

/// The namespace, its registry, limits and proxies; fields drop in order (proxies, limits,
/// registry, namespace).
#[derive(Debug)]
pub struct ShapedNet {
    proxies: Vec<DelayProxy>,
    rate_limit: RateLimit,
    _registry: Registry,
    netns: NetNs,
    /// Per profile (index of [`PROFILES`]), for those calibrated.
    pub calibration: Vec<Option<Calibration>>,
}

impl ShapedNet {
    /// Starts namespace `augur-<name>` with a registry serving `data` (kept under `dir`), limits
    /// and proxies for every profile, and calibrates `profiles` by reading
    /// [`CALIBRATION_BYTES`] of blob `digest` of repository `repo`.
    pub fn start(
        name: &str,
        dir: &Path,
        data: PathBuf,
        profiles: &[usize],
        (repo, digest): (&str, &str),
        progress: impl Fn(String),
    ) -> Result<ShapedNet> {
        let netns = NetNs::create(&format!("augur-{name}"));
        progress(format!(
            "network namespace {} (loopback only); registry on 127.0.0.1:{REGISTRY_PORT} inside",
            netns.name()
        ));
        let registry = Registry::start_with(
            &dir.join("registry-netns"),
            &RegistryOptions {
                port: Some(REGISTRY_PORT),
                data: Some(data),
                netns: Some(netns.path()),
                ..RegistryOptions::default()
            },
        );
        let limits: Vec<PortRate> = PROFILES
            .iter()
            .filter_map(|p| p.mbit.map(|mbit| PortRate { port: p.port, mbit }))
            .collect();
        let rate_limit = RateLimit::install(&netns, &limits);
        let mut proxies = Vec::new();
        for p in &PROFILES {
            let cfg = delay_proxy::in_netns(&netns.path(), p.port, REGISTRY_PORT, p.one_way);
            proxies
                .push(DelayProxy::start(cfg).with_context(|| format!("delay proxy {}", p.name))?);
        }
        let mut net = ShapedNet {
            proxies,
            rate_limit,
            _registry: registry,
            netns,
            calibration: vec![None; PROFILES.len()],
        };
        for &p in profiles {
            let cal = net.calibrate(p, repo, digest)?;
            progress(format!(
                "profile {}: first byte on a new connection after {:.0} ms, {:.1} MB/s",
                PROFILES[p].name,
                cal.first_byte_secs * 1e3,
                cal.mb_per_sec
            ));
            net.calibration[p] = Some(cal);
        }
        Ok(net)
    }

    /// The namespace clients run in.
    pub fn netns(&self) -> &NetNs {
        &self.netns
    }

    /// Profile `p`'s proxy.
    pub fn proxy(&self, p: usize) -> &DelayProxy {
        &self.proxies[p]
    }

    /// `tc -s class show` of the namespace (how much each class sent and held back).
    pub fn tc_stats(&self) -> String {
        self.rate_limit.stats()
    }

    /// One range request for [`CALIBRATION_BYTES`] of a blob through profile `p`'s proxy, on a
    /// new connection.
    fn calibrate(&self, p: usize, repo: &str, digest: &str) -> Result<Calibration> {
        let url = format!("http://{}/v2/{repo}/blobs/{digest}", self.proxies[p].host());
        let out = run_ok(self.netns.command("curl").args([
            "-sf",
            "-o",
            "/dev/null",
            "-r",
            &format!("0-{}", CALIBRATION_BYTES - 1),
            "-w",
            "%{time_starttransfer} %{time_total} %{size_download}",
            &url,
        ]));
        let f: Vec<f64> = out
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        ensure!(f.len() == 3, "curl printed {out:?}");
        Ok(Calibration {
            first_byte_secs: f[0],
            mb_per_sec: f[2] / 1e6 / (f[1] - f[0]).max(1e-6),
        })
    }
}

/// `(digest, size)` of each layer of `host/name:tag` (the first manifest of an index).
pub fn layers(host: &str, name: &str, tag: &str) -> Result<Vec<(String, u64)>> {
    let mut doc = manifest(host, name, tag)?;
    if let Some(first) = doc["manifests"][0]["digest"].as_str() {
        doc = manifest(host, name, first)?;
    }
    let layers = doc["layers"]
        .as_array()
        .with_context(|| format!("{name}:{tag}: no layers in {doc}"))?;
    Ok(layers
        .iter()
        .filter_map(|l| Some((l["digest"].as_str()?.to_owned(), l["size"].as_u64()?)))
        .collect())
}

fn manifest(host: &str, name: &str, reference: &str) -> Result<serde_json::Value> {
    let accept = "Accept: application/vnd.oci.image.manifest.v1+json, \
                  application/vnd.oci.image.index.v1+json, \
                  application/vnd.docker.distribution.manifest.v2+json, \
                  application/vnd.docker.distribution.manifest.list.v2+json";
    let body = run_ok(Command::new("curl").args([
        "-sf",
        "-H",
        accept,
        &format!("http://{host}/v2/{name}/manifests/{reference}"),
    ]));
    serde_json::from_str(&body).with_context(|| format!("manifest of {name}:{reference}"))
}

/// What a child printed, and when its first output byte came.
#[derive(Debug)]
pub struct WatchedChild {
    /// How it ended.
    pub status: std::process::ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// (time since the clock started, proxy bytes delivered then).
    pub first: Option<(Duration, u64)>,
}

impl WatchedChild {
    /// An error naming `what` and the child's output if it failed.
    pub fn check(&self, what: &str) -> Result<()> {
        ensure!(
            self.status.success(),
            "{what} failed ({}): {}{}",
            self.status,
            self.stderr.trim(),
            self.stdout.trim()
        );
        Ok(())
    }

    /// Runs `cmd` to the end, killing it on Ctrl-C or after `timeout`; with `first`, notes
    /// when its first output byte arrives and the proxy's bytes then.
    pub fn run(
        cmd: &mut Command,
        what: &str,
        timeout: Duration,
        first: Option<FirstOutput>,
    ) -> Result<WatchedChild> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {cmd:?}"))?;
        let stdout = child.stdout.take().context("stdout")?;
        let stderr = child.stderr.take().context("stderr")?;
        let seen = Arc::new(Mutex::new(None));
        let err_first = first.clone().filter(|f| f.stderr_too);
        let out_reader = reader(stdout, first, Arc::clone(&seen));
        let err_reader = reader(stderr, err_first, Arc::clone(&seen));
        let status = wait(&mut child, what, timeout)?;
        let stdout = out_reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        let first = *seen.lock().unwrap_or_else(|p| p.into_inner());
        Ok(WatchedChild {
            status,
            stdout,
            stderr,
            first,
        })
    }
}

/// When the clock started and whose bytes to note at a child's first output byte.
#[derive(Debug, Clone)]
pub struct FirstOutput {
    /// The clock's start.
    pub start: Instant,
    /// The proxy whose delivered bytes are noted then.
    pub counters: Arc<ProxyCounters>,
    /// Whether a byte on stderr counts too (programs that only log there).
    pub stderr_too: bool,
}

/// A thread reading `stream` to its end; with `first`, it sets `seen` at the first byte if no
/// other reader did.
fn reader(
    mut stream: impl Read + Send + 'static,
    first: Option<FirstOutput>,
    seen: Arc<Mutex<Option<(Duration, u64)>>>,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stream.read(&mut chunk) {
            if n == 0 {
                break;
            }
            if let Some(f) = &first {
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                if seen.is_none() {
                    *seen = Some((f.start.elapsed(), f.counters.down()));
                }
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn wait(child: &mut Child, what: &str, timeout: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if interrupted() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            if interrupted() {
                bail!("interrupted during {what}");
            }
            bail!("{what} took longer than {timeout:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Seconds since the epoch (to line runs up with the daemon's log timestamps).
pub fn epoch_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Copies a run's logs and timeline to `to` (a new directory).
pub fn keep_logs(dir: &Path, to: &Path) {
    let _ = std::fs::create_dir_all(to);
    for name in ["augur.log", "containerd/containerd.log", "timeline.json"] {
        let from = dir.join(name);
        if from.exists() {
            let file = name.rsplit('/').next().unwrap_or(name);
            let _ = std::fs::copy(&from, to.join(file));
        }
    }
}

/// Unmounts anything left below `dir` (deepest first) and deletes it; an error to report if it
/// could not be deleted.
pub fn remove_run_dir(dir: &Path) -> std::io::Result<()> {
    for m in mounts_under(dir).into_iter().rev() {
        let _ = umount2(&m, MntFlags::MNT_DETACH);
    }
    std::fs::remove_dir_all(dir)
}
