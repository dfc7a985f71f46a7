//! Endpoints: for one registry, the hosts that serve it in the order they are tried (mirrors from
//! `hosts.toml` first, the registry itself or its `server` last), each with its HTTP client (TLS
//! settings), extra headers, API root and health.
//!
//! Built once per registry on first use (reading `hosts.toml` and certificates on the blocking
//! pool) and kept for the life of the [`super::Registry`]; a configuration error is not cached,
//! so fixing the file takes effect on the next request.
//!
//! Health: an endpoint that could not be connected to is tried after the healthy ones for
//! [`DOWN_FOR`], so a dead mirror costs one failed connection, not one per read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::hosts::{self, Caps, HostSpec, plain_http_allowed};
use super::{RegistryConfig, RegistryError};

/// How long an unreachable endpoint is tried last.
pub(crate) const DOWN_FOR: Duration = Duration::from_secs(30);

/// What a request needs an endpoint to be able to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cap {
    /// Fetch blobs and manifests by digest.
    Pull,
    /// Resolve a tag to a manifest.
    Resolve,
    /// Upload.
    Push,
}

/// One host serving a registry.
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// `host[:port]`: for credentials, tokens and messages.
    pub host: String,
    /// `scheme://host[:port]` plus the API root, no trailing slash.
    pub base: String,
    pub caps: Caps,
    /// The registry's own name when this host is a mirror of it (sent as `?ns=`, like containerd).
    pub ns: Option<String>,
    /// The last endpoint configured (the registry itself or `server`): its definite answers
    /// are final.
    pub fallback: bool,
    pub headers: HeaderMap,
    pub client: reqwest::Client,
    down_until: Mutex<Option<Instant>>,
    /// Set once this host has been seen ignoring `Range` (logged once).
    pub ignored_range: AtomicBool,
}

impl Endpoint {
    /// The URL of `tail` (e.g. `blobs/sha256:…`) in `repository`, with `?ns=` for a mirror
    /// (not on uploads, as containerd).
    pub(crate) fn url(&self, repository: &str, tail: &str, cap: Cap) -> String {
        let mut url = format!("{}/{repository}/{tail}", self.base);
        if let (Some(ns), false) = (&self.ns, cap == Cap::Push) {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str("ns=");
            url.push_str(ns);
        }
        url
    }

    fn can(&self, cap: Cap) -> bool {
        match cap {
            Cap::Pull => self.caps.pull,
            Cap::Resolve => self.caps.resolve,
            Cap::Push => self.caps.push,
        }
    }

    fn is_down(&self) -> bool {
        let until = self
            .down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        until.is_some_and(|t| Instant::now() < t)
    }

    /// Records a connection failure: try the others first for a while.
    pub(crate) fn mark_down(&self) {
        *self
            .down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + DOWN_FOR);
    }

    /// Records a success.
    pub(crate) fn mark_up(&self) {
        *self
            .down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// The endpoints of `all` that can do `cap`: healthy ones in configured order, then the ones
/// marked down (still tried, last).
pub(crate) fn usable(all: &[Arc<Endpoint>], cap: Cap) -> Vec<Arc<Endpoint>> {
    let (mut up, down): (Vec<_>, Vec<_>) = all
        .iter()
        .filter(|e| e.can(cap))
        .cloned()
        .partition(|e| !e.is_down());
    up.extend(down);
    up
}

/// The endpoint lists of every registry used so far.
#[derive(Debug)]
pub(crate) struct Endpoints {
    cfg: Arc<RegistryConfig>,
    default_client: reqwest::Client,
    by_registry: Mutex<HashMap<String, Arc<[Arc<Endpoint>]>>>,
}

impl Endpoints {
    pub(crate) fn new(cfg: Arc<RegistryConfig>) -> Result<Endpoints, RegistryError> {
        let default_client = client_builder(&cfg).build().map_err(|e| {
            RegistryError::config("(built-in)", "http client", format!("cannot build: {e}"))
        })?;
        Ok(Endpoints {
            cfg,
            default_client,
            by_registry: Mutex::new(HashMap::new()),
        })
    }

    /// The endpoints for `registry` (as written in references: `docker.io`, `host:port`).
    pub(crate) async fn get(&self, registry: &str) -> Result<Arc<[Arc<Endpoint>]>, RegistryError> {
        if let Some(eps) = self.cached(registry) {
            return Ok(eps);
        }
        let cfg = self.cfg.clone();
        let default_client = self.default_client.clone();
        let name = registry.to_owned();
        let built = tokio::task::spawn_blocking(move || build(&cfg, &default_client, &name))
            .await
            .map_err(|e| {
                RegistryError::config("(built-in)", "hosts", format!("loader failed: {e}"))
            })??;
        let eps: Arc<[Arc<Endpoint>]> = built.into();
        let mut map = self
            .by_registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(map.entry(registry.to_owned()).or_insert(eps).clone())
    }

    fn cached(&self, registry: &str) -> Option<Arc<[Arc<Endpoint>]>> {
        let map = self
            .by_registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(registry).cloned()
    }
}

fn client_builder(cfg: &RegistryConfig) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(cfg.connect_timeout)
        .read_timeout(cfg.request_timeout)
        .user_agent(concat!("augur/", env!("CARGO_PKG_VERSION")))
}

/// Builds the endpoint list for `registry` (blocking: reads hosts.toml and certificates).
fn build(
    cfg: &RegistryConfig,
    default_client: &reqwest::Client,
    registry: &str,
) -> Result<Vec<Arc<Endpoint>>, RegistryError> {
    let specs = match &cfg.hosts_dir {
        Some(root) => hosts::load(root, registry)?,
        None => None,
    };
    let specs = specs.unwrap_or_else(|| vec![HostSpec::origin(PathBuf::from("(default)"))]);
    let n = specs.len();
    specs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| endpoint(cfg, default_client, registry, spec, i + 1 == n).map(Arc::new))
        .collect()
}

fn endpoint(
    cfg: &RegistryConfig,
    default_client: &reqwest::Client,
    registry: &str,
    mut spec: HostSpec,
    fallback: bool,
) -> Result<Endpoint, RegistryError> {
    if spec.host.is_empty() {
        // The registry itself, as containerd fills it in: Docker Hub's API host, plain HTTP
        // where allowed, all capabilities.
        spec.host = match registry {
            "docker.io" => "registry-1.docker.io".to_owned(),
            other => other.to_owned(),
        };
        let plain = registry != "docker.io" && plain_http_allowed(registry, &cfg.insecure_hosts);
        spec.scheme = if plain { "http" } else { "https" }.to_owned();
        spec.caps = Caps::ALL;
    } else if spec.scheme == "http" && !plain_http_allowed(&spec.host, &cfg.insecure_hosts) {
        return Err(RegistryError::config(
            &spec.source,
            if spec.key.is_empty() {
                "server".to_owned()
            } else {
                spec.key.clone()
            },
            format!(
                "plain HTTP to {} is not allowed; add {:?} to insecure_hosts or use https",
                spec.host, spec.host
            ),
        ));
    }
    let is_self =
        spec.host == registry || (registry == "docker.io" && spec.host == "registry-1.docker.io");
    Ok(Endpoint {
        base: format!("{}://{}{}", spec.scheme, spec.host, spec.path),
        caps: spec.caps,
        ns: (!is_self).then(|| registry.to_owned()),
        fallback,
        headers: headers(&spec)?,
        client: client(cfg, default_client, &spec)?,
        host: spec.host,
        down_until: Mutex::new(None),
        ignored_range: AtomicBool::new(false),
    })
}

fn headers(spec: &HostSpec) -> Result<HeaderMap, RegistryError> {
    let mut map = HeaderMap::new();
    for (name, value) in &spec.headers {
        let bad = |what: &str| {
            RegistryError::config(
                &spec.source,
                spec.key_of("header"),
                format!("{name}: invalid header {what}"),
            )
        };
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("name"))?;
        let v = HeaderValue::from_str(value).map_err(|_| bad("value"))?;
        map.append(n, v);
    }
    Ok(map)
}

/// The shared client, or one with this host's CA, client certificate or `skip_verify`.
fn client(
    cfg: &RegistryConfig,
    default_client: &reqwest::Client,
    spec: &HostSpec,
) -> Result<reqwest::Client, RegistryError> {
    if spec.ca.is_empty() && spec.client.is_empty() && !spec.skip_verify {
        return Ok(default_client.clone());
    }
    let read = |path: &Path, key: &str| {
        std::fs::read(path).map_err(|e| {
            RegistryError::config(
                &spec.source,
                spec.key_of(key),
                format!("cannot read {}: {e}", path.display()),
            )
        })
    };
    let mut builder = client_builder(cfg);
    for path in &spec.ca {
        let certs = reqwest::Certificate::from_pem_bundle(&read(path, "ca")?).map_err(|e| {
            RegistryError::config(
                &spec.source,
                spec.key_of("ca"),
                format!("{} is not a PEM CA bundle: {e}", path.display()),
            )
        })?;
        builder = builder.tls_certs_merge(certs);
    }
    match spec.client.as_slice() {
        [] => {}
        [(cert, key)] => {
            let mut pem = read(cert, "client")?;
            if let Some(key) = key {
                pem.push(b'\n');
                pem.extend(read(key, "client")?);
            }
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                RegistryError::config(
                    &spec.source,
                    spec.key_of("client"),
                    format!("{} is not a PEM certificate and key: {e}", cert.display()),
                )
            })?;
            builder = builder.identity(identity);
        }
        _ => {
            return Err(RegistryError::config(
                &spec.source,
                spec.key_of("client"),
                "only one client certificate per host is supported; keep the one this registry accepts",
            ));
        }
    }
    if spec.skip_verify {
        tracing::warn!(host = %spec.host, file = %spec.source.display(), "skip_verify: TLS certificates of this host are not checked");
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| {
        RegistryError::config(
            &spec.source,
            spec.key_of("ca"),
            format!("cannot set up TLS for {}: {e}", spec.host),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: Option<&Path>) -> RegistryConfig {
        RegistryConfig {
            hosts_dir: dir.map(Path::to_path_buf),
            ..RegistryConfig::default()
        }
    }

    fn built(cfg: &RegistryConfig, registry: &str) -> Result<Vec<Arc<Endpoint>>, RegistryError> {
        let client = client_builder(cfg).build().expect("client");
        build(cfg, &client, registry)
    }

    #[test]
    fn default_endpoints_follow_the_plain_http_rule() {
        let c = cfg(None);
        let eps = built(&c, "127.0.0.1:5000").expect("loopback");
        assert_eq!(eps[0].base, "http://127.0.0.1:5000/v2");
        assert_eq!(eps[0].ns, None);
        let eps = built(&c, "registry.example:5000").expect("remote");
        assert_eq!(eps[0].base, "https://registry.example:5000/v2");
        let eps = built(&c, "docker.io").expect("hub");
        assert_eq!(eps[0].base, "https://registry-1.docker.io/v2");
        assert_eq!(eps[0].ns, None, "the Hub's API host is not a mirror of it");
    }

    #[test]
    fn mirrors_first_with_ns_and_plain_http_only_where_allowed() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("docker.io");
        std::fs::create_dir(&dir).expect("mkdir");
        let toml = "[host.\"http://127.0.0.1:6000/cache\"]\ncapabilities = [\"pull\"]\n\
                    [host.\"http://10.1.1.1:5000\"]\n";
        std::fs::write(dir.join("hosts.toml"), toml).expect("write");
        let c = cfg(Some(root.path()));
        let e = built(&c, "docker.io").expect_err("10.1.1.1 is not insecure");
        assert!(
            e.to_string()
                .contains("add \"10.1.1.1:5000\" to insecure_hosts"),
            "{e}"
        );

        let c = RegistryConfig {
            insecure_hosts: vec!["10.1.1.1:5000".to_owned()],
            ..c
        };
        let eps = built(&c, "docker.io").expect("allowed now");
        let bases: Vec<&str> = eps.iter().map(|e| e.base.as_str()).collect();
        assert_eq!(
            bases,
            [
                "http://127.0.0.1:6000/cache/v2",
                "http://10.1.1.1:5000/v2",
                "https://registry-1.docker.io/v2"
            ]
        );
        let fallback: Vec<bool> = eps.iter().map(|e| e.fallback).collect();
        assert_eq!(fallback, [false, false, true]);
        assert_eq!(
            eps[0].url("library/busybox", "blobs/sha256:x", Cap::Pull),
            "http://127.0.0.1:6000/cache/v2/library/busybox/blobs/sha256:x?ns=docker.io"
        );
        assert_eq!(
            eps[0].url("library/busybox", "blobs/uploads/", Cap::Push),
            "http://127.0.0.1:6000/cache/v2/library/busybox/blobs/uploads/"
        );
        let pull: Vec<String> = usable(&eps, Cap::Pull)
            .iter()
            .map(|e| e.host.clone())
            .collect();
        assert_eq!(
            pull,
            ["127.0.0.1:6000", "10.1.1.1:5000", "registry-1.docker.io"]
        );
        let resolve: Vec<String> = usable(&eps, Cap::Resolve)
            .iter()
            .map(|e| e.host.clone())
            .collect();
        assert_eq!(
            resolve,
            ["10.1.1.1:5000", "registry-1.docker.io"],
            "pull-only mirror skipped"
        );
        eps[0].mark_down();
        let pull: Vec<String> = usable(&eps, Cap::Pull)
            .iter()
            .map(|e| e.host.clone())
            .collect();
        assert_eq!(
            pull,
            ["10.1.1.1:5000", "registry-1.docker.io", "127.0.0.1:6000"]
        );
        eps[0].mark_up();
        assert_eq!(usable(&eps, Cap::Pull)[0].host, "127.0.0.1:6000");
    }

    #[test]
    fn headers_and_certificate_errors_name_the_key() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("_default");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(
            dir.join("hosts.toml"),
            "[host.\"https://m\".header]\nx-token = \"abc\"\n",
        )
        .expect("write");
        let c = cfg(Some(root.path()));
        let eps = built(&c, "any.example").expect("builds");
        assert_eq!(
            eps[0].headers.get("x-token").map(|v| v.as_bytes()),
            Some(&b"abc"[..])
        );

        std::fs::write(
            dir.join("hosts.toml"),
            "[host.\"https://m\"]\nca = \"missing.pem\"\n",
        )
        .expect("write");
        let e = built(&c, "any.example").expect_err("missing CA");
        let msg = e.to_string();
        assert!(msg.contains("host.\"https://m\".ca: cannot read"), "{msg}");
        assert!(msg.contains("missing.pem"), "{msg}");

        std::fs::write(dir.join("garbage.pem"), "not a cert").expect("write");
        std::fs::write(
            dir.join("hosts.toml"),
            "[host.\"https://m\"]\nclient = \"garbage.pem\"\n",
        )
        .expect("write");
        let e = built(&c, "any.example").expect_err("bad client cert");
        assert!(e.to_string().contains("client: "), "{e}");
    }
}
