//! # augur-integration-tests: the test bed
//!
//! Real parts, started and stopped by RAII guards so a failing test still leaves nothing behind:
//!
//! | guard | what it runs |
//! |---|---|
//! | [`Daemon`] | `augur-snapshotter` on a private root and socket |
//! | [`Registry`] | Debian's `docker-registry` on a free 127.0.0.1 port |
//! | [`Containerd`] | Debian's containerd with its own config, root, state and socket, `augur` as a proxy plugin |
//! | [`TestDir`] | a scratch directory; on drop it unmounts anything still mounted below it |
//! | [`MountGuard`] | a bind or overlay mount made from a snapshotter's mount description |
//! | [`netns::NetNs`], [`netns::RateLimit`] | a loopback-only network namespace, HTB rate limits on its `lo` |
//! | [`delay_proxy::DelayProxy`] | a TCP proxy adding one-way latency and counting bytes |
//! | [`prometheus::Prometheus`] | Debian's Prometheus on a free 127.0.0.1 port, scraping given targets |
//! | [`chromium`] | Debian's headless Chromium, one bounded run per DOM dump or screenshot |
//!
//! [`rootfs`] reads a mounted root filesystem into a listing (types, modes, owners, xattrs,
//! content hashes, hard links) and lists the differences between two. [`bench`] holds what the
//! benchmark binaries share (Ctrl-C handling, medians, bootstrap intervals, machine facts), and
//! [`shaped`] the shaped network they measure through (namespace, registry, HTB limits, delay
//! proxies per profile) and their timed children.
//!
//! Slow inputs (Debian packages, the test images, the Go conformance and reference binaries) are
//! prepared once by `integration-tests/scripts/*.sh` and cached under [`cache_dir`]; tests that
//! need them fail with the command to run when they are missing.

pub mod bench;
pub mod chromium;
mod containerd;
pub mod convert;
mod daemon;
pub mod delay_proxy;
pub mod estargz_images;
pub mod lazy;
mod mounts;
pub mod netns;
pub mod prometheus;
mod registry;
pub mod rootfs;
pub mod shaped;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use containerd::Containerd;
pub use daemon::{Daemon, DaemonOptions, TEST_CACHE, TEST_METRICS, connect, list, with_test_cache};
pub use mounts::{MountGuard, TestDir, mounts_under};
pub use registry::{Registry, RegistryAuth, RegistryOptions};

/// The workspace root (this crate's parent directory).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate has a parent")
        .to_path_buf()
}

/// Where slow-to-build test inputs are cached (`$AUGUR_CACHE`, default `/var/cache/augur-tests`).
pub fn cache_dir() -> PathBuf {
    augur_predictor::lstm::runtime::test_cache()
}

/// A script under `integration-tests/scripts/`.
pub fn script(name: &str) -> PathBuf {
    workspace().join("integration-tests/scripts").join(name)
}

/// The `augur-snapshotter` binary under test: `$AUGUR_SNAPSHOTTER_BIN`, else the one cargo built
/// next to this test (same profile).
pub fn snapshotter_bin() -> PathBuf {
    workspace_bin("augur-snapshotter", "AUGUR_SNAPSHOTTER_BIN")
}

/// The `augurctl` binary under test: `$AUGURCTL_BIN`, else the one cargo built next to this test.
pub fn augurctl_bin() -> PathBuf {
    workspace_bin("augurctl", "AUGURCTL_BIN")
}

/// A binary of the workspace: `$<env>` if set, else `target/<profile>/<name>` of this test's
/// profile.
fn workspace_bin(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return p.into();
    }
    let exe = std::env::current_exe().expect("own binary path");
    // target/<profile>/deps/<test> or target/<profile>/<bin> → target/<profile>/<name>
    let mut profile_dir = exe.parent().expect("binary has a directory");
    if profile_dir.ends_with("deps") {
        profile_dir = profile_dir.parent().expect("target/<profile>");
    }
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p augur-snapshotter --bins` (or set {env})",
        bin.display()
    );
    bin
}

/// Spawns `cmd` with no stdin and its stdout and stderr appended to `log`; `what` names the
/// program in the panic message (with the script that installs it).
pub fn spawn_logged(cmd: &mut Command, log: &Path, what: &str) -> Child {
    let file = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().expect("dup log fd"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"))
}

/// Runs `cmd`, panicking with its output if it fails; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `ready` every 50 ms until it is true or `timeout` passes.
pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `ready` every 50 ms for up to `timeout`; true if it became ready. Never panics (for
/// use in `Drop`).
pub fn poll(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if ready() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Drops the kernel's page cache (root), so that every read of a lazily mounted file reaches
/// FUSE again, and every read of a local file its disk.
pub fn drop_page_cache() -> std::io::Result<()> {
    nix::unistd::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3")
}

/// How many access traces the daemon behind `admin_socket` keeps (`augurctl trace list
/// --json`); 0 when it cannot tell.
pub fn traces_kept(admin_socket: &Path) -> usize {
    Command::new(augurctl_bin())
        .args(["trace", "list", "--json", "--admin-socket"])
        .arg(admin_socket)
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v["traces"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Sends `sig` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}
