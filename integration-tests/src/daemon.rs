//! `augur-snapshotter` under test, and a gRPC client for it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use augur_proto::snapshots::snapshots_client::SnapshotsClient;
use hyper_util::rt::TokioIo;
use nix::sys::signal::Signal;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{signal, snapshotter_bin, spawn_logged, wait_until};

/// A running daemon. Dropping it sends SIGTERM and waits (SIGKILL after 10 s).
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    root: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    opts: DaemonOptions,
}

/// How [`Daemon::start_with`] runs the daemon. The default has no config file, i.e. the
/// production defaults (a 2 GiB NVMe cache file, unlike [`Daemon::start`]'s [`TEST_CACHE`]).
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The config file (TOML); `/dev/null` gives the defaults.
    pub config: PathBuf,
    /// `--log-level` (`debug` by default, for assertion messages; benchmarks use `info`).
    pub log_level: String,
    /// Run in this network namespace (`/run/netns/NAME`, through `nsenter --net`), so that its
    /// registry requests go where the namespace's clients' go.
    pub netns: Option<PathBuf>,
    /// The binary; `None`: [`snapshotter_bin`].
    pub bin: Option<PathBuf>,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            config: PathBuf::from("/dev/null"),
            log_level: "debug".to_owned(),
            netns: None,
            bin: None,
        }
    }
}

/// The chunk cache a test daemon gets unless its config has a `[cache]` table: the production
/// defaults would preallocate a 2 GiB NVMe file per daemon. The spill tier still holds the test
/// images' layers whole.
pub const TEST_CACHE: &str = "\n[cache]\nram_mib = 64\nnvme_mib = 128\nhdd_mib = 1024\n";

/// The metrics endpoint of a test daemon unless its config has a `[metrics]` table: off, since
/// the default port (127.0.0.1:9464) is one per machine and tests run daemons in parallel. A test
/// of the endpoint sets `[metrics] address` to a [`crate::free_port`].
pub const TEST_METRICS: &str = "\n[metrics]\naddress = \"\"\n";

/// `config` (TOML) with [`TEST_CACHE`] and [`TEST_METRICS`] appended for the tables it does not
/// configure itself.
pub fn with_test_cache(config: &str) -> String {
    let has = |table: &str| config.lines().any(|l| l.trim() == table);
    let mut out = config.to_owned();
    if !has("[cache]") {
        out.push_str(TEST_CACHE);
    }
    if !has("[metrics]") {
        out.push_str(TEST_METRICS);
    }
    out
}

impl Daemon {
    /// Starts the daemon with `root`, `socket`, debug logs to `log`, and waits until the socket
    /// accepts connections. Its config is the defaults but for [`TEST_CACHE`] (written next to
    /// `root` as `<root>.toml`).
    pub fn start(root: &Path, socket: &Path, log: &Path) -> Daemon {
        let config = root.with_extension("toml");
        if let Some(dir) = config.parent() {
            std::fs::create_dir_all(dir).expect("create the daemon's parent directory");
        }
        std::fs::write(&config, with_test_cache("")).expect("write the test daemon's config");
        Daemon::start_with_config(root, socket, log, &config)
    }

    /// Like [`Daemon::start`], reading `config` (a TOML file) instead of an empty one.
    pub fn start_with_config(root: &Path, socket: &Path, log: &Path, config: &Path) -> Daemon {
        let opts = DaemonOptions {
            config: config.to_path_buf(),
            ..DaemonOptions::default()
        };
        Daemon::start_with(root, socket, log, opts)
    }

    /// Like [`Daemon::start`], as `opts` says.
    pub fn start_with(root: &Path, socket: &Path, log: &Path, opts: DaemonOptions) -> Daemon {
        let mut d = Daemon {
            child: None,
            root: root.to_path_buf(),
            socket: socket.to_path_buf(),
            log: log.to_path_buf(),
            opts,
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let bin = self.opts.bin.clone().unwrap_or_else(snapshotter_bin);
        let mut cmd = match &self.opts.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--address")
            .arg(&self.socket)
            .args(["--log-level", &self.opts.log_level, "--config"])
            .arg(&self.opts.config);
        let child = spawn_logged(&mut cmd, &self.log, "augur-snapshotter");
        self.child = Some(child);
        let socket = self.socket.clone();
        wait_until("augur-snapshotter socket", Duration::from_secs(20), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The admin API's socket: `admin.sock` beside the gRPC socket, the daemon's default
    /// (`augurctl --admin-socket`).
    pub fn admin_socket(&self) -> PathBuf {
        self.socket.with_file_name("admin.sock")
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), Signal::SIGKILL);
            let _ = c.wait();
        }
    }

    /// Stops with SIGTERM and returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        signal(c.id(), Signal::SIGTERM);
        for _ in 0..200 {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    /// Starts the daemon again on the same root and socket (after [`Daemon::kill9`] or stop).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running daemon");
        self.spawn();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A gRPC client for the Snapshots service on `socket`.
pub async fn connect(socket: &Path) -> SnapshotsClient<Channel> {
    let path = socket.to_path_buf();
    let channel = Endpoint::try_from("http://[::1]:0")
        .expect("static uri")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .expect("connect to augur-snapshotter");
    SnapshotsClient::new(channel)
}

/// Every snapshot matching any of `filters` (none = all), drained from the List stream.
pub async fn list(
    c: &mut SnapshotsClient<Channel>,
    filters: &[&str],
) -> Result<Vec<augur_proto::snapshots::Info>, tonic::Status> {
    let req = augur_proto::snapshots::ListSnapshotsRequest {
        filters: filters.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let mut stream = c.list(req).await?.into_inner();
    let mut out = Vec::new();
    while let Some(batch) = stream.message().await? {
        out.extend(batch.info);
    }
    Ok(out)
}
