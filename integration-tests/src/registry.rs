//! Debian's `docker-registry` (distribution 2.8) on a free loopback port.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use crate::{free_port, run_ok, script, spawn_logged, wait_until};

/// A running registry; dropping it stops it.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    port: u16,
}

impl Registry {
    /// Starts a registry storing blobs under `dir`.
    pub fn start(dir: &Path) -> Registry {
        let port = free_port();
        let config = dir.join("registry.yml");
        std::fs::create_dir_all(dir.join("data")).expect("registry data dir");
        std::fs::write(&config, config_yaml(&dir.join("data"), port))
            .expect("write registry config");
        let child = spawn_logged(
            Command::new("docker-registry").arg("serve").arg(&config),
            &dir.join("registry.log"),
            "docker-registry (run integration-tests/scripts/deps.sh)",
        );
        let reg = Registry { child, port };
        wait_until("registry /v2/", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        reg
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes the cached test images (`busybox:latest`, `python:latest`) built by `images.sh`.
    pub fn push_test_images(&self) {
        run_ok(
            Command::new("bash")
                .arg(script("images.sh"))
                .arg("push")
                .arg(self.host()),
        );
    }

    /// The image reference `host/name`.
    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.host())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_yaml(data: &Path, port: u16) -> String {
    format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: augur-tests-not-secret\n",
        data.display()
    )
}
