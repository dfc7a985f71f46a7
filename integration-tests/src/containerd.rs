//! A private containerd (Debian's 1.6) with its own config, root, state and socket; never the
//! system's. Snapshotters under test are wired in as `proxy_plugins`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::{poll, run_ok, signal, spawn_logged, wait_until};

/// A running containerd. Dropping it kills every task it runs (so no shim outlives it), stops
/// it, and removes the cgroup directories its containers left.
#[derive(Debug)]
pub struct Containerd {
    child: Option<Child>,
    dir: PathBuf,
}

impl Containerd {
    /// Starts containerd under `dir` with a proxy snapshot plugin per `(name, socket)`.
    pub fn start(dir: &Path, snapshotters: &[(&str, &Path)]) -> Containerd {
        std::fs::create_dir_all(dir).expect("containerd dir");
        let config = dir.join("config.toml");
        std::fs::write(&config, config_toml(dir, snapshotters)).expect("write containerd config");
        let child = spawn_logged(
            Command::new("containerd").arg("--config").arg(&config),
            &dir.join("containerd.log"),
            "containerd (run integration-tests/scripts/deps.sh)",
        );
        let c = Containerd {
            child: Some(child),
            dir: dir.to_path_buf(),
        };
        wait_until("containerd", Duration::from_secs(30), || {
            c.ctr(&["version"]).status.success()
        });
        c
    }

    /// The containerd socket.
    pub fn address(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// `ctr --address <socket> args…`, ready to run or spawn.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.address())
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs ctr and returns its output, whatever the exit status.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run ctr")
    }

    /// Runs ctr, panicking with its output on failure; returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        run_ok(&mut self.command(args))
    }

    /// Waits until containerd reaches proxy snapshotter `name` again after it restarted (its gRPC
    /// client reconnects on its own within a few seconds; calls before that fail with
    /// "connection refused"). Probes with a prepare + rm of a throwaway snapshot.
    pub fn wait_reconnected(&self, name: &str) {
        wait_until(
            &format!("containerd to reach {name} again"),
            Duration::from_secs(30),
            || {
                let sn = ["-n", "reconnect-probe", "snapshots", "--snapshotter", name];
                let ok = self
                    .ctr(&[&sn[..], &["prepare", "reconnect-probe"]].concat())
                    .status
                    .success();
                if ok {
                    self.ctr_ok(&[&sn[..], &["rm", "reconnect-probe"]].concat());
                }
                ok
            },
        );
    }

    /// The containerd log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    fn kill_tasks(&self) -> Vec<String> {
        let namespaces =
            String::from_utf8_lossy(&self.ctr(&["namespaces", "ls", "-q"]).stdout).into_owned();
        let namespaces: Vec<String> = namespaces.lines().map(str::to_owned).collect();
        for ns in &namespaces {
            let tasks = String::from_utf8_lossy(&self.ctr(&["-n", ns, "tasks", "ls", "-q"]).stdout)
                .into_owned();
            for task in tasks.lines() {
                let _ = self.ctr(&["-n", ns, "tasks", "kill", "-s", "SIGKILL", task]);
                // Runs in Drop: never panic, just give the shim up to 10 s to reap the task.
                poll(Duration::from_secs(10), || {
                    self.ctr(&["-n", ns, "tasks", "delete", task])
                        .status
                        .success()
                });
            }
        }
        namespaces
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let namespaces = self.kill_tasks();
        if let Some(mut c) = self.child.take() {
            signal(c.id(), Signal::SIGTERM);
            for _ in 0..100 {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        remove_namespace_cgroups(&namespaces);
    }
}

/// runc leaves empty `/sys/fs/cgroup/<controller>/<namespace>` directories behind.
fn remove_namespace_cgroups(namespaces: &[String]) {
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for c in controllers.flatten() {
        for ns in namespaces {
            let _ = std::fs::remove_dir(c.path().join(ns));
        }
    }
}

fn config_toml(dir: &Path, snapshotters: &[(&str, &Path)]) -> String {
    let d = dir.display();
    let mut s = format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]
[grpc]
  address = "{d}/containerd.sock"
[debug]
  level = "info"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.metadata.v1.bolt"]
  content_sharing_policy = "isolated"
[proxy_plugins]
"#
    );
    for (name, socket) in snapshotters {
        s.push_str(&format!(
            "  [proxy_plugins.{name}]\n    type = \"snapshot\"\n    address = \"{}\"\n",
            socket.display()
        ));
    }
    s
}
