//! # Registry client
//!
//! Everything Augur reads from or writes to an OCI registry goes through [`Registry`]: manifests
//! and indexes (one manifest chosen per platform), blob sizes, exact byte ranges of blobs for the
//! FUSE read path, whole-blob streams for background fetches, verified full pulls, and the pushes
//! of `augurctl image convert`.
//!
//! ## Layers
//!
//! | module | role |
//! |---|---|
//! | [`hosts`] | containerd's `hosts.toml` (`config_path`) and the plain-HTTP rule |
//! | [`endpoint`] | per registry, the hosts to try in order, each with its TLS client, headers and health |
//! | [`auth`] | credentials from Docker's `config.json`; Basic and Bearer challenges; token cache |
//! | [`transport`] | one request over the endpoints: retries with backoff, re-auth on 401, status → error |
//! | [`ranges`] | single-flight of identical range reads; merging of nearby ranges |
//! | `blobs`, `resolve`, `push` | the operations of [`Registry`] |
//! | [`platform`], [`digest`], [`error`] | platform choice, digest checks, [`RegistryError`] |
//!
//! ## Why `oci-client` supplies the types but not the HTTP
//! [`oci_client::Reference`] parses references and [`manifest`] (re-exported `oci_client`
//! types) describes manifests and indexes. `oci_client::Client` cannot carry what `hosts.toml`
//! configures per host (extra headers, a non-`/v2` API root, client certificates, the `ns` query
//! containerd sends to mirrors), has no whole-request timeout, and keeps a token until it expires
//! by the clock even when the registry refuses it. Requests are therefore made with `reqwest`,
//! the HTTP client `oci-client` is built on (same version, nothing more compiled).
//!
//! ## Threads and sharing
//! [`Registry`] is `Clone + Send + Sync`; a clone is one `Arc` increment and shares connections,
//! tokens, endpoint health and in-flight reads. Methods are async and need a tokio runtime: the
//! snapshot layer awaits them, FUSE threads call `handle.block_on(registry.read_range(..))`.
//! File reads (hosts.toml, certificates, config.json, credential helpers) run on the blocking pool.

mod auth;
mod blobs;
mod digest;
mod endpoint;
mod error;
mod hosts;
mod platform;
mod push;
mod ranges;
mod resolve;
mod transport;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use error::RegistryError;
/// Manifest and index types (from `oci-client`), for [`Registry::push_manifest`] and [`Resolved`].
pub use oci_client::manifest;
pub use platform::{Platform, offered, select};
pub use transport::SendProgress;

/// `(registry, repository)` of a reference as the client names them (`docker.io`,
/// `library/busybox`), for labels that record where content came from.
pub fn registry_and_repository(reference: &str) -> Result<(String, String), RegistryError> {
    let r = parse_reference(reference)?;
    Ok((r.registry, r.repository))
}

use endpoint::{Cap, Endpoint, Endpoints};
use transport::{Backoff, Transport};

/// How the client finds and talks to registries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// containerd's `config_path` (e.g. `/etc/containerd/certs.d`): `<dir>/<host[:port]>/hosts.toml`
    /// or `<dir>/_default/hosts.toml` configure mirrors, TLS and headers. `None`: no mirrors.
    pub hosts_dir: Option<PathBuf>,
    /// Directory holding Docker's `config.json`; `None`: `$DOCKER_CONFIG`, else `~/.docker`.
    pub docker_config: Option<PathBuf>,
    /// `host[:port]` (or bare `host`, any port) that may be spoken to over plain HTTP. Loopback
    /// (127.0.0.0/8, ::1, localhost) always may; every other host gets verified TLS.
    pub insecure_hosts: Vec<String>,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Limit for a whole request (manifest, range read), and for each read of a stream.
    pub request_timeout: Duration,
    /// Extra rounds over the endpoints after the first fails transiently.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff_initial: Duration,
    /// Upper bound of the wait between retries.
    pub backoff_max: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            hosts_dir: None,
            docker_config: None,
            insecure_hosts: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            retries: 4,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// A content descriptor from a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// e.g. `application/vnd.oci.image.layer.v1.tar+gzip`.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// The descriptor's annotations (eStargz puts its TOC digest here).
    pub annotations: BTreeMap<String, String>,
}

/// An image reference resolved to one image manifest.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Digest of the image manifest (for the chosen platform).
    pub manifest_digest: String,
    /// Digest of the index the manifest was chosen from, if the reference named one.
    pub index_digest: Option<String>,
    /// The indexes followed to reach the manifest, outermost first (empty when the reference
    /// named a manifest), exactly as served: a pull stores them as containerd does.
    pub indexes: Vec<IndexBlob>,
    /// The manifest's media type (OCI or Docker schema 2).
    pub media_type: String,
    /// The manifest, parsed.
    pub manifest: manifest::OciImageManifest,
    /// The manifest exactly as served (its digest is `manifest_digest`).
    pub manifest_bytes: Bytes,
    /// The image config.
    pub config: Descriptor,
    /// The layers, bottom first.
    pub layers: Vec<Descriptor>,
}

/// An index (or Docker manifest list) as served, with the child chosen from it.
#[derive(Debug, Clone)]
pub struct IndexBlob {
    /// Its digest.
    pub digest: String,
    /// Its media type (from the document, else the `Content-Type`).
    pub media_type: String,
    /// The bytes as served.
    pub bytes: Bytes,
    /// The entry chosen for the platform (a manifest, or a nested index).
    pub chosen: Descriptor,
}

/// A manifest or index as the registry served it, not followed ([`Registry::manifest`]).
#[derive(Debug, Clone)]
pub struct RawManifest {
    /// The `mediaType` the document declares, else the `Content-Type` it was served with.
    pub media_type: String,
    /// True for an OCI index or a Docker manifest list.
    pub index: bool,
    /// Its digest (`sha256:<hex>`; verified when it was asked for by digest).
    pub digest: String,
    /// The bytes as served.
    pub bytes: Bytes,
}

/// `registry/repository` of `reference` (`127.0.0.1:5000/python:3` → `127.0.0.1:5000/python`,
/// `busybox` → `docker.io/library/busybox`): append `@digest` to name something else in it.
pub fn repository_of(reference: &str) -> Result<String, RegistryError> {
    parse_reference(reference).map(|r| r.display)
}

/// The registry client. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Registry {
    net: Arc<Net>,
    flights: Arc<ranges::SingleFlight<RangeKey, Result<Bytes, RegistryError>>>,
}

/// What requests need; kept apart from the in-flight table so that a read in flight (held by
/// the table) never keeps the table alive through a reference cycle.
#[derive(Debug)]
struct Net {
    endpoints: Endpoints,
    transport: Transport,
}

/// `(registry, repository, digest, offset, len)`.
type RangeKey = (String, String, String, u64, u64);

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// A client with `cfg`. Reads no files yet: `hosts.toml` is read per registry on first
    /// use, credentials when a registry first asks for them.
    pub fn new(cfg: RegistryConfig) -> Result<Self, RegistryError> {
        let docker_dir = auth::docker_config_dir(
            cfg.docker_config.as_deref(),
            std::env::var_os("DOCKER_CONFIG"),
            std::env::var_os("HOME"),
        );
        let transport = Transport {
            auth: auth::Auth::new(docker_dir, cfg.insecure_hosts.clone(), cfg.request_timeout),
            backoff: Backoff {
                initial: cfg.backoff_initial,
                max: cfg.backoff_max.max(cfg.backoff_initial),
            },
            retries: cfg.retries,
            request_timeout: cfg.request_timeout,
        };
        let endpoints = Endpoints::new(Arc::new(cfg))?;
        Ok(Registry {
            net: Arc::new(Net {
                endpoints,
                transport,
            }),
            flights: Arc::new(ranges::SingleFlight::new()),
        })
    }
}

impl Net {
    /// The endpoints of `repo`'s registry that can do `cap`, in the order to try them.
    async fn endpoints(&self, repo: &Repo, cap: Cap) -> Result<Vec<Arc<Endpoint>>, RegistryError> {
        let all = self.endpoints.get(&repo.registry).await?;
        let usable = endpoint::usable(&all, cap);
        if usable.is_empty() {
            return Err(RegistryError::config(
                "hosts.toml",
                "capabilities",
                format!(
                    "no host configured for {} may {cap:?}; add the capability to one",
                    repo.registry
                ),
            ));
        }
        Ok(usable)
    }
}

/// A parsed reference: where the repository is and what in it is named.
#[derive(Debug, Clone)]
struct Repo {
    /// As in references: `docker.io`, `127.0.0.1:5000`.
    registry: String,
    /// e.g. `library/busybox`.
    repository: String,
    /// The digest if the reference has one, else the tag (default `latest`).
    reference: String,
    is_digest: bool,
    /// `registry/repository`, for messages.
    display: String,
}

fn parse_reference(reference: &str) -> Result<Repo, RegistryError> {
    let parsed = oci_client::Reference::try_from(reference).map_err(|e| {
        RegistryError::InvalidReference {
            reference: reference.to_owned(),
            reason: e.to_string(),
        }
    })?;
    let registry = match parsed.registry() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        other => other.to_owned(),
    };
    let repository = parsed.repository().to_owned();
    if !valid_repository(&repository) {
        return Err(RegistryError::InvalidReference {
            reference: reference.to_owned(),
            reason: "repository names are lower-case letters, digits and . _ - separated by /"
                .to_owned(),
        });
    }
    let (reference, is_digest) = match (parsed.digest(), parsed.tag()) {
        (Some(d), _) => (digest::Digest::parse(d)?.to_string(), true),
        (None, Some(t)) => (t.to_owned(), false),
        (None, None) => ("latest".to_owned(), false),
    };
    Ok(Repo {
        display: format!("{registry}/{repository}"),
        registry,
        repository,
        reference,
        is_digest,
    })
}

/// The distribution spec's repository grammar: `/`-separated components of lower-case letters
/// and digits, joined inside a component by `.`, `_`, `__` or runs of `-`. (It also keeps the
/// name safe to put in a URL path.)
fn valid_repository(name: &str) -> bool {
    name.split('/').all(|component| {
        let bytes = component.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
            return false;
        };
        alnum(first)
            && alnum(last)
            && bytes
                .iter()
                .all(|b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
            && !component.contains("..")
            && !component.contains("___")
            && !component.contains("._")
            && !component.contains("_.")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_like_containerd_names_them() {
        let r = parse_reference("127.0.0.1:5000/python:latest").expect("parses");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("127.0.0.1:5000", "python")
        );
        assert_eq!((r.reference.as_str(), r.is_digest), ("latest", false));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = parse_reference(&format!("docker.io/library/x:1@{d}")).expect("parses");
        assert_eq!(
            (r.display.as_str(), r.reference.as_str(), r.is_digest),
            ("docker.io/library/x", d.as_str(), true)
        );
        let r = parse_reference("busybox").expect("short name");
        assert_eq!(
            (r.display.as_str(), r.reference.as_str()),
            ("docker.io/library/busybox", "latest")
        );
        let r = parse_reference("index.docker.io/library/busybox").expect("hub alias");
        assert_eq!(r.registry, "docker.io");
        for bad in [
            "",
            "UPPER/case",
            "host:5000/x@sha256:short",
            "a b",
            "h:1/a//b",
            "h:1/a/../b",
            "h:1/-a",
            "h:1/a:..",
        ] {
            let e = parse_reference(bad).expect_err(bad);
            assert!(
                matches!(e, RegistryError::InvalidReference { .. }),
                "{bad}: {e}"
            );
        }
    }

    /// The FUSE threads and the snapshot layer share one client and spawn its futures.
    #[test]
    fn client_and_its_futures_can_cross_threads() {
        fn shared<T: Clone + Send + Sync + 'static>(_: &T) {}
        fn spawnable<F: std::future::Future + Send + 'static>(_: F) {}
        let c = Registry::new(RegistryConfig::default()).expect("client");
        shared(&c);
        let (a, b, d) = (c.clone(), c.clone(), c.clone());
        spawnable(async move { a.read_range("h:1/x", "sha256:x", 0, 1).await });
        spawnable(async move { b.resolve("h:1/x", None).await });
        spawnable(async move { d.stream_blob("h:1/x", "sha256:x", 0).await.map(|_| ()) });
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = RegistryConfig::default();
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.request_timeout, Duration::from_secs(60));
        assert_eq!(c.retries, 4);
        assert_eq!(
            (c.backoff_initial, c.backoff_max),
            (Duration::from_millis(100), Duration::from_secs(5))
        );
    }
}
