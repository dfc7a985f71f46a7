//! Debian's `docker-registry` (distribution 2.8) on a free loopback port; optionally with
//! htpasswd or token authentication, TLS, a chosen port or another registry's storage
//! ([`Registry::start_with`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crate::{free_port, run_ok, script, spawn_logged, wait_until};

/// A running registry; dropping it stops it.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    port: u16,
    log: PathBuf,
}

/// How a registry started by [`Registry::start_with`] authenticates clients.
#[derive(Debug, Clone)]
pub enum RegistryAuth {
    /// HTTP Basic against an htpasswd file (bcrypt, made with `htpasswd -B`) holding one user.
    Htpasswd {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// Bearer tokens: clients fetch a JWT from `realm`; tokens whose `x5c` chain ends in
    /// `root_cert` and whose `iss`/`aud` match are accepted.
    Token {
        /// Token endpoint URL announced in the challenge.
        realm: String,
        /// `service` (the tokens' audience).
        service: String,
        /// Accepted `iss`.
        issuer: String,
        /// PEM bundle of trusted signing certificates.
        root_cert: PathBuf,
    },
}

/// Options for [`Registry::start_with`]; the default is what [`Registry::start`] runs.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Listen on this port (e.g. to restart a registry in place) instead of a free one.
    pub port: Option<u16>,
    /// Serve this storage directory (e.g. another registry's `data`) instead of `dir/data`.
    pub data: Option<PathBuf>,
    /// Require authentication.
    pub auth: Option<RegistryAuth>,
    /// Serve HTTPS with this PEM certificate and key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Run in this network namespace (`/run/netns/NAME`); then `port` should be given (the
    /// free-port probe looks at this process's namespace).
    pub netns: Option<PathBuf>,
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
        let reg = Registry {
            child,
            port,
            log: dir.join("registry.log"),
        };
        wait_until("registry /v2/", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        reg
    }

    /// Starts a registry configured by `opts`, its config and log under `dir`.
    pub fn start_with(dir: &Path, opts: &RegistryOptions) -> Registry {
        let port = opts.port.unwrap_or_else(free_port);
        std::fs::create_dir_all(dir).expect("registry dir");
        let data = opts.data.clone().unwrap_or_else(|| dir.join("data"));
        std::fs::create_dir_all(&data).expect("registry data dir");
        let mut yaml = config_yaml(&data, port);
        if let Some((cert, key)) = &opts.tls {
            yaml.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        match &opts.auth {
            None => {}
            Some(RegistryAuth::Htpasswd { user, password }) => {
                let file = dir.join("htpasswd");
                let line = run_ok(Command::new("htpasswd").args(["-Bbn", user, password]));
                std::fs::write(&file, line).expect("write htpasswd");
                yaml.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: augur-tests\n    path: {}\n",
                    file.display()
                ));
            }
            Some(RegistryAuth::Token {
                realm,
                service,
                issuer,
                root_cert,
            }) => yaml.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    \
                 issuer: {issuer}\n    rootcertbundle: {}\n",
                root_cert.display()
            )),
        }
        let config = dir.join("registry.yml");
        std::fs::write(&config, yaml).expect("write registry config");
        let mut cmd = match &opts.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display()))
                    .arg("docker-registry");
                c
            }
            None => Command::new("docker-registry"),
        };
        let child = spawn_logged(
            cmd.arg("serve").arg(&config),
            &dir.join("registry.log"),
            "docker-registry (run integration-tests/scripts/deps.sh)",
        );
        let reg = Registry {
            child,
            port,
            log: dir.join("registry.log"),
        };
        let listening = || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        wait_until("registry port", Duration::from_secs(20), || {
            match &opts.netns {
                Some(ns) => crate::netns::in_netns(ns, listening).unwrap_or(false),
                None => listening(),
            }
        });
        reg
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes the cached test images (`busybox`, `python`, `edgecases`, tag `latest`) built by
    /// `images.sh`.
    pub fn push_test_images(&self) {
        self.push_images(&[]);
    }

    /// Pushes the named images built by `images.sh` (`busybox`, `python`, `edgecases`,
    /// `python-big`; none: the first three), building them first if needed.
    pub fn push_images(&self, names: &[&str]) {
        run_ok(
            Command::new("bash")
                .arg(script("images.sh"))
                .arg("push")
                .arg(self.host())
                .args(names),
        );
    }

    /// The requests served so far, from the registry's access log, each as
    /// `"METHOD /path"` (e.g. `"GET /v2/busybox/blobs/sha256:…"`), oldest first.
    pub fn requests(&self) -> Vec<String> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter_map(|l| {
                // Apache combined format: … "GET /v2/… HTTP/1.1" 200 …
                let (_, rest) = l.split_once(" \"")?;
                let (request, _) = rest.split_once(" HTTP/")?;
                request
                    .starts_with(['G', 'H', 'P', 'D'])
                    .then(|| request.to_owned())
            })
            .collect()
    }

    /// The image reference `host/name`.
    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.host())
    }
}

impl Registry {
    /// Stops the registry now (a registry outage); dropping it later is harmless.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config_yaml(data: &Path, port: u16) -> String {
    format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: augur-tests-not-secret\n",
        data.display()
    )
}
