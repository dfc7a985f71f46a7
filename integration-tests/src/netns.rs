//! A private network namespace with only `lo`, and rate limits on it, for benchmarks that need a
//! "remote" registry on this machine (env.md §7).
//!
//! - [`NetNs`]: `ip netns add`, `lo` up; processes are started in it with
//!   `nsenter --net=/run/netns/NAME` ([`NetNs::command`]), threads of this process enter it with
//!   `setns(2)` ([`in_netns`], [`enter`]). Never `ip netns exec`: it also unshares the mount
//!   namespace and remounts `/sys`, so runc finds no cgroups and FUSE mounts made inside are
//!   invisible to containerd.
//! - [`RateLimit`]: an HTB qdisc on the namespace's `lo` that limits only traffic *from* given
//!   ports (the delay proxies' listening ports, i.e. what clients download), so a proxy's hop to
//!   the registry, which crosses the same `lo`, is not shaped a second time.
//!
//! Everything stays on 127.0.0.1 inside a namespace this process made: no veth, no address
//! outside 127.0.0.0/8. Both guards undo themselves on drop (also while unwinding from a panic);
//! a namespace left by a killed run (its name carries the dead pid) is removed by the next
//! [`NetNs::create`] with the same prefix, after its processes are asked to stop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::run_ok;

/// A network namespace named `<prefix>-<pid>`, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates the namespace `<prefix>-<our pid>` with `lo` up, after removing namespaces
    /// `<prefix>-<pid>` whose process is gone (left by a killed run).
    pub fn create(prefix: &str) -> NetNs {
        sweep_stale(prefix);
        let name = format!("{prefix}-{}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = NetNs { name };
        run_ok(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]));
        ns
    }

    /// Its name (for `ip -n`, `tc -n`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `nsenter --net=<path> <program>`: `program` runs in this namespace, in every other
    /// respect (mounts, cgroups, pid namespace) like a child of ours.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path().display()))
            .arg(program)
            .stdin(Stdio::null());
        cmd
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Removing the name is enough: the namespace (and every qdisc on its lo) goes away
        // when the last process in it has exited.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Deletes namespaces `<prefix>-<pid>` whose pid no longer runs, after asking the processes
/// still in them (a registry or daemon the killed run started) to stop.
fn sweep_stale(prefix: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let listing = String::from_utf8_lossy(&out.stdout);
    for name in listing.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let left = Command::new("ip")
                .args(["netns", "pids", name])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for pid in left.lines().filter_map(|p| p.trim().parse::<u32>().ok()) {
                crate::signal(pid, nix::sys::signal::Signal::SIGTERM);
            }
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Moves the calling thread into the namespace at `path` (only this thread: network namespaces
/// are per thread). Sockets the thread creates from then on belong to that namespace, and keep
/// belonging to it wherever they are used.
pub fn enter(path: &Path) -> std::io::Result<()> {
    let file = File::open(path)?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// Runs `f` on a new thread inside the namespace at `path` and returns its result (e.g. to
/// probe a port that only exists in there).
pub fn in_netns<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(path)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// One shaped port: traffic whose source port is `port` is limited to `mbit` Mbit/s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PortRate {
    /// Source port of the limited traffic.
    pub port: u16,
    /// Rate in Mbit/s.
    pub mbit: u32,
}

/// An HTB qdisc on a namespace's `lo` limiting traffic from some ports; removed on drop.
///
/// HTB, not TBF: with TBF on `lo` (MTU 65536, GSO) any `burst` below the packet size drops
/// everything (3 KB/s seen with `burst 64kb`); HTB lends tokens and never drops for size. One
/// class per port, `ceil` = `rate` (no borrowing), everything else in an unlimited default class.
#[derive(Debug)]
pub struct RateLimit {
    netns: String,
}

impl RateLimit {
    /// Installs the limits on `ns`'s `lo`.
    pub fn install(ns: &NetNs, limits: &[PortRate]) -> RateLimit {
        let tc = |args: &[&str]| {
            run_ok(Command::new("tc").args(["-n", ns.name()]).args(args));
        };
        tc(&[
            "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "1", "r2q",
            "1000",
        ]);
        let guard = RateLimit {
            netns: ns.name().to_owned(),
        };
        tc(&[
            "class", "add", "dev", "lo", "parent", "1:", "classid", "1:1", "htb", "rate", "100gbit",
        ]);
        for (i, limit) in limits.iter().enumerate() {
            let class = format!("1:{}", 10 + i);
            let rate = format!("{}mbit", limit.mbit);
            tc(&[
                "class", "add", "dev", "lo", "parent", "1:", "classid", &class, "htb", "rate",
                &rate, "ceil", &rate,
            ]);
            tc(&[
                "filter",
                "add",
                "dev",
                "lo",
                "parent",
                "1:",
                "protocol",
                "ip",
                "u32",
                "match",
                "ip",
                "sport",
                &limit.port.to_string(),
                "0xffff",
                "flowid",
                &class,
            ]);
        }
        guard
    }

    /// `tc -s class show` of the namespace's `lo` (for reports and failure messages).
    pub fn stats(&self) -> String {
        Command::new("tc")
            .args(["-n", &self.netns, "-s", "class", "show", "dev", "lo"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for RateLimit {
    fn drop(&mut self) {
        let _ = Command::new("tc")
            .args(["-n", &self.netns, "qdisc", "del", "dev", "lo", "root"])
            .stderr(Stdio::null())
            .status();
    }
}
