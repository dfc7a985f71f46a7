//! The registry client (`augur_snapshotter::registry`) against Debian's real `docker-registry`
//! on 127.0.0.1: resolving the test images and an index with two platforms, exact ranges
//! compared with the blob files on disk, single-flight (requests counted by a proxy), htpasswd
//! and token authentication (with a token refresh forced by a registry that stops trusting the
//! old signing key), a `hosts.toml` mirror with fallback to the origin, verified TLS, and a
//! registry killed mid-test.
//!
//! Needs `docker-registry`, `htpasswd`, `openssl` and `skopeo` (integration-tests/scripts/deps.sh)
//! and, for the first test, the cached test images (`integration-tests/scripts/images.sh build`).

mod registry_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use augur_integration_tests::{
    Registry, RegistryAuth, RegistryOptions, TestDir, cache_dir, free_port,
};
use augur_snapshotter::registry::manifest::{
    IMAGE_CONFIG_MEDIA_TYPE, IMAGE_LAYER_GZIP_MEDIA_TYPE, ImageIndexEntry,
    OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageIndex,
    OciImageManifest, OciManifest,
};
use augur_snapshotter::registry::{Platform, Registry as Client, RegistryConfig, RegistryError};
use futures::StreamExt;
use registry_support::{
    CountingProxy, SigningKey, TOKEN_ISSUER, TOKEN_SERVICE, TokenServer, self_signed,
};
use sha2::Digest as _;

/// Quick retries, so failure paths finish fast.
fn client(cfg: RegistryConfig) -> Client {
    Client::new(RegistryConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(20),
        retries: 2,
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        ..cfg
    })
    .expect("client")
}

fn plain_client() -> Client {
    client(RegistryConfig::default())
}

/// A client whose `config.json` holds `user:password` for `host`.
fn client_with_login(dir: &Path, host: &str, user: &str, password: &str) -> Client {
    std::fs::create_dir_all(dir).expect("mkdir docker config");
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{user}:{password}"),
    );
    let json = format!(r#"{{"auths": {{"{host}": {{"auth": "{auth}"}}}}}}"#);
    std::fs::write(dir.join("config.json"), json).expect("write config.json");
    client(RegistryConfig {
        docker_config: Some(dir.to_path_buf()),
        ..RegistryConfig::default()
    })
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Deterministic pseudo-random bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// What [`push_image`] pushed.
struct Pushed {
    manifest: String,
    layer: String,
    layer_bytes: Vec<u8>,
}

/// Pushes a one-layer linux/`arch` image as `repo:arch` with the client's own push API.
async fn push_image(c: &Client, repo: &str, arch: &str, layer_len: usize) -> Pushed {
    let layer_bytes = noise(layer_len, arch.len() as u64 * 7919 + layer_len as u64);
    let layer = sha256(&layer_bytes);
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer]},
    })
    .to_string()
    .into_bytes();
    let config_digest = sha256(&config);
    let reference = format!("{repo}:{arch}");
    c.push_blob(&reference, config.clone().into(), &config_digest)
        .await
        .expect("push config");
    c.push_blob(&reference, layer_bytes.clone().into(), &layer)
        .await
        .expect("push layer");
    let descriptor = |media_type: &str, digest: &str, size: usize| OciDescriptor {
        media_type: media_type.to_owned(),
        digest: digest.to_owned(),
        size: size as i64,
        ..OciDescriptor::default()
    };
    let manifest = OciImageManifest {
        media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_owned()),
        config: descriptor(IMAGE_CONFIG_MEDIA_TYPE, &config_digest, config.len()),
        layers: vec![descriptor(IMAGE_LAYER_GZIP_MEDIA_TYPE, &layer, layer_len)],
        ..OciImageManifest::default()
    };
    let manifest = c
        .push_manifest(&reference, &OciManifest::Image(manifest))
        .await
        .expect("push manifest");
    Pushed {
        manifest,
        layer,
        layer_bytes,
    }
}

/// A blob of a cached OCI layout built by images.sh.
fn layout_blob(image: &str, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let path = cache_dir()
        .join("images")
        .join(image)
        .join("blobs/sha256")
        .join(hex);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run integration-tests/scripts/images.sh build)",
            path.display()
        )
    })
}

fn layout_manifest_digest(image: &str) -> String {
    let path = cache_dir().join("images").join(image).join("index.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let index: serde_json::Value = serde_json::from_str(&text).expect("index.json parses");
    index["manifests"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolves_test_images_and_reads_exact_ranges() {
    let dir = TestDir::new("regclient-images");
    let registry = Registry::start(&dir.join("registry"));
    registry.push_test_images();
    let c = plain_client();
    for image in ["busybox", "python"] {
        let reference = registry.image(&format!("{image}:latest"));
        let r = c.resolve(&reference, None).await.expect("resolve");
        assert_eq!(r.manifest_digest, layout_manifest_digest(image), "{image}");
        assert_eq!(sha256(&r.manifest_bytes), r.manifest_digest);
        let on_disk: serde_json::Value =
            serde_json::from_slice(&layout_blob(image, &r.manifest_digest))
                .expect("manifest parses");
        assert_eq!(
            r.config.digest,
            on_disk["config"]["digest"].as_str().expect("config")
        );
        let disk_layers: Vec<(&str, u64)> = on_disk["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| {
                (
                    l["digest"].as_str().expect("digest"),
                    l["size"].as_u64().expect("size"),
                )
            })
            .collect();
        let layers: Vec<(&str, u64)> = r
            .layers
            .iter()
            .map(|l| (l.digest.as_str(), l.size))
            .collect();
        assert_eq!(layers, disk_layers, "{image}");
        assert_eq!(layers.len(), if image == "busybox" { 1 } else { 2 });

        for layer in &r.layers {
            let file = layout_blob(image, &layer.digest);
            let size = file.len() as u64;
            assert_eq!(
                c.blob_size(&reference, &layer.digest).await.expect("size"),
                size
            );
            let mid = size / 2;
            for (off, len) in [
                (0, 1),
                (0, 4096),
                (mid, 100_000),
                (size - 10, 10),
                (1, 70_000),
                (0, size.min(2 << 20)),
            ] {
                let got = c
                    .read_range(&reference, &layer.digest, off, len)
                    .await
                    .expect("range");
                assert!(
                    got[..] == file[off as usize..(off + len) as usize],
                    "{image} {off}+{len}"
                );
            }
        }
    }

    // Several nearby ranges in one call, a stream from an offset, a verified full pull.
    let reference = registry.image("python:latest");
    let layer = c.resolve(&reference, None).await.expect("resolve").layers[1].clone();
    let file = layout_blob("python", &layer.digest);
    let ranges = [
        (5_000u64, 10u64),
        (0, 100),
        (50, 100),
        (3_000_000, 4096),
        (0, 0),
    ];
    let got = c
        .read_ranges(&reference, &layer.digest, &ranges)
        .await
        .expect("ranges");
    for ((off, len), data) in ranges.iter().zip(&got) {
        assert!(
            data[..] == file[*off as usize..(*off + *len) as usize],
            "{off}+{len}"
        );
    }
    let offset = file.len() as u64 - 300_000;
    let mut stream = c
        .stream_blob(&reference, &layer.digest, offset)
        .await
        .expect("stream");
    let mut tail = Vec::new();
    while let Some(chunk) = stream.next().await {
        tail.extend_from_slice(&chunk.expect("chunk"));
    }
    assert!(tail[..] == file[offset as usize..], "stream from {offset}");
    let mut pulled = Vec::new();
    c.pull_blob(&reference, &layer.digest, &mut pulled)
        .await
        .expect("pull");
    assert!(pulled == file, "full pull");
    // The end of a blob and its size in one request; a suffix longer than the blob is all of it.
    for len in [1u64, 51, 65_536, file.len() as u64 + 10] {
        let (got, size) = c
            .read_tail(&reference, &layer.digest, len)
            .await
            .expect("tail");
        assert_eq!(size, file.len() as u64, "size with a {len}-byte tail");
        let from = file.len().saturating_sub(len as usize);
        assert!(got[..] == file[from..], "last {len} bytes");
    }

    // Definite failures are not retried into "unreachable".
    let size = file.len() as u64;
    let e = c
        .read_range(&reference, &layer.digest, size - 5, 10)
        .await
        .expect_err("past the end");
    assert!(
        matches!(e, RegistryError::Protocol { .. }) && e.to_string().contains("short read"),
        "{e}"
    );
    let e = c
        .read_range(&reference, &layer.digest, size + 10, 10)
        .await
        .expect_err("beyond the end");
    assert!(e.to_string().contains("416"), "{e}");
    let e = c
        .resolve(&registry.image("python:nope"), None)
        .await
        .expect_err("no tag");
    assert!(
        matches!(e, RegistryError::NotFound { .. }) && e.to_string().contains("manifest nope"),
        "{e}"
    );
    let missing = format!("sha256:{}", "0".repeat(64));
    let e = c
        .read_range(&reference, &missing, 0, 10)
        .await
        .expect_err("no blob");
    assert!(matches!(e, RegistryError::NotFound { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_resolves_to_the_manifest_for_the_platform() {
    let dir = TestDir::new("regclient-index");
    let registry = Registry::start(&dir.join("registry"));
    let c = plain_client();
    let repo = registry.image("multi");
    let amd = push_image(&c, &repo, "amd64", 20_000).await;
    let arm = push_image(&c, &repo, "arm64", 30_000).await;
    let entry = |p: &Pushed, arch: &str, variant: Option<&str>| ImageIndexEntry {
        media_type: OCI_IMAGE_MEDIA_TYPE.to_owned(),
        digest: p.manifest.clone(),
        size: 1,
        platform: Some(augur_snapshotter::registry::manifest::Platform {
            architecture: arch.into(),
            os: "linux".into(),
            os_version: None,
            os_features: None,
            variant: variant.map(str::to_owned),
            features: None,
        }),
        annotations: None,
        artifact_type: None,
    };
    let index = OciImageIndex {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_INDEX_MEDIA_TYPE.to_owned()),
        manifests: vec![entry(&amd, "amd64", None), entry(&arm, "arm64", Some("v8"))],
        artifact_type: None,
        annotations: None,
    };
    let tagged = format!("{repo}:multi");
    let index_digest = c
        .push_manifest(&tagged, &OciManifest::ImageIndex(index))
        .await
        .expect("push index");

    let arm64 = Platform::parse("linux/arm64").expect("platform");
    let r = c
        .resolve(&tagged, Some(&arm64))
        .await
        .expect("resolve arm64");
    assert_eq!(r.manifest_digest, arm.manifest);
    assert_eq!(r.index_digest.as_deref(), Some(index_digest.as_str()));
    assert_eq!(
        r.indexes.len(),
        1,
        "the index as served, for a pull to store"
    );
    assert_eq!(r.indexes[0].digest, index_digest);
    assert_eq!(r.indexes[0].media_type, OCI_IMAGE_INDEX_MEDIA_TYPE);
    assert_eq!(r.indexes[0].chosen.digest, arm.manifest);
    assert_eq!(
        sha2::Sha256::digest(&r.indexes[0].bytes)[..],
        hex::decode(index_digest.trim_start_matches("sha256:")).unwrap()[..]
    );
    assert_eq!(r.layers[0].digest, arm.layer);
    let got = c
        .read_range(&tagged, &r.layers[0].digest, 100, 1000)
        .await
        .expect("range");
    assert!(got[..] == arm.layer_bytes[100..1100]);

    let by_digest = c
        .resolve(&format!("{repo}@{index_digest}"), Some(&arm64))
        .await
        .expect("by digest");
    assert_eq!(by_digest.manifest_digest, arm.manifest);
    if cfg!(target_arch = "x86_64") {
        let host = c
            .resolve(&tagged, None)
            .await
            .expect("resolve host platform");
        assert_eq!(
            host.manifest_digest, amd.manifest,
            "default is linux/amd64 here"
        );
    }
    let s390x = Platform::parse("linux/s390x").expect("platform");
    let e = c
        .resolve(&tagged, Some(&s390x))
        .await
        .expect_err("not offered");
    assert!(matches!(e, RegistryError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("linux/amd64, linux/arm64/v8"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_concurrent_reads_share_one_request() {
    let dir = TestDir::new("regclient-flight");
    let registry = Registry::start(&dir.join("registry"));
    let pushed = push_image(
        &plain_client(),
        &registry.image("flights"),
        "amd64",
        400_000,
    )
    .await;
    let proxy = CountingProxy::start(
        registry.port(),
        &format!("GET /v2/flights/blobs/{}", pushed.layer),
    );
    let via = format!("{}/flights:amd64", proxy.host());
    let c = plain_client();

    // All eight are polled before any response can arrive, so they meet in one flight.
    let reads = (0..8).map(|_| c.read_range(&via, &pushed.layer, 1000, 5000));
    for got in futures::future::join_all(reads).await {
        assert!(got.expect("range")[..] == pushed.layer_bytes[1000..6000]);
    }
    assert_eq!(proxy.count(), 1, "eight identical reads, one request");

    // A finished flight is not reused: the same range again is a new request.
    c.read_range(&via, &pushed.layer, 1000, 5000)
        .await
        .expect("again");
    assert_eq!(proxy.count(), 2);

    // Nearby ranges merge into one request, a far one gets its own.
    let ranges = [(0u64, 100u64), (200, 100), (300_000, 10)];
    let got = c
        .read_ranges(&via, &pushed.layer, &ranges)
        .await
        .expect("ranges");
    for ((off, len), data) in ranges.iter().zip(&got) {
        assert!(data[..] == pushed.layer_bytes[*off as usize..(*off + *len) as usize]);
    }
    assert_eq!(proxy.count(), 4, "two requests for three ranges");

    // The FUSE read path: a thread outside the async workers blocking on the runtime's handle.
    let handle = tokio::runtime::Handle::current();
    let (c2, via2, layer) = (c.clone(), via.clone(), pushed.layer.clone());
    let from_thread =
        tokio::task::spawn_blocking(move || handle.block_on(c2.read_range(&via2, &layer, 9, 90)))
            .await
            .expect("reader thread")
            .expect("range from a blocking thread");
    assert!(from_thread[..] == pushed.layer_bytes[9..99]);
    assert_eq!(proxy.count(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_registry_uses_docker_config_credentials() {
    let dir = TestDir::new("regclient-htpasswd");
    let open = Registry::start(&dir.join("open"));
    let pushed = push_image(&plain_client(), &open.image("secret"), "amd64", 50_000).await;
    let secured = Registry::start_with(
        &dir.join("secured"),
        &RegistryOptions {
            data: Some(dir.join("open/data")),
            auth: Some(RegistryAuth::Htpasswd {
                user: "augur".to_owned(),
                password: "s3cret".to_owned(),
            }),
            ..RegistryOptions::default()
        },
    );
    let reference = secured.image("secret:amd64");

    let nobody = client_with_login(&dir.join("docker-other"), "elsewhere:5000", "x", "y");
    let e = nobody
        .resolve(&reference, None)
        .await
        .expect_err("no credentials");
    let RegistryError::Unauthorized {
        host, credentials, ..
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!(host, &secured.host());
    assert!(
        credentials.contains(&format!("no entry for {}", secured.host())),
        "{e}"
    );
    assert!(credentials.contains("docker-other/config.json"), "{e}");
    assert!(e.to_string().contains("docker login"), "{e}");

    let wrong = client_with_login(&dir.join("docker-wrong"), &secured.host(), "augur", "nope");
    let e = wrong
        .resolve(&reference, None)
        .await
        .expect_err("wrong password");
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
    assert!(
        e.to_string().contains("refused the credentials")
            && e.to_string().contains("user \"augur\""),
        "{e}"
    );

    let right = client_with_login(
        &dir.join("docker-right"),
        &secured.host(),
        "augur",
        "s3cret",
    );
    let r = right
        .resolve(&reference, None)
        .await
        .expect("resolve with login");
    assert_eq!(r.manifest_digest, pushed.manifest);
    let got = right
        .read_range(&reference, &pushed.layer, 7, 77)
        .await
        .expect("range with login");
    assert!(got[..] == pushed.layer_bytes[7..84]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_fetches_and_refreshes_tokens() {
    let dir = TestDir::new("regclient-token");
    let key1 = SigningKey::generate(dir.path(), "key1");
    let cert1 = key1.cert.clone();
    let tokens = TokenServer::start(key1, "augur", "tokpass");
    let port = free_port();
    let options = |root_cert: PathBuf| RegistryOptions {
        port: Some(port),
        data: Some(dir.join("data")),
        auth: Some(RegistryAuth::Token {
            realm: tokens.realm(),
            service: TOKEN_SERVICE.to_owned(),
            issuer: TOKEN_ISSUER.to_owned(),
            root_cert,
        }),
        ..RegistryOptions::default()
    };
    let registry = Registry::start_with(&dir.join("first"), &options(cert1));
    let repo = registry.image("tok");

    let anonymous = client_with_login(&dir.join("docker-none"), "elsewhere", "x", "y");
    let e = anonymous
        .resolve(&format!("{repo}:amd64"), None)
        .await
        .expect_err("token server refuses");
    assert!(
        e.to_string().contains("token server") && e.to_string().contains("401"),
        "{e}"
    );
    assert_eq!(tokens.issued(), 0);

    let c = client_with_login(&dir.join("docker"), &registry.host(), "augur", "tokpass");
    let pushed = push_image(&c, &repo, "amd64", 10_000).await; // pull,push scope
    let r = c
        .resolve(&format!("{repo}:amd64"), None)
        .await
        .expect("resolve"); // pull scope
    assert_eq!(r.manifest_digest, pushed.manifest);
    let issued = tokens.issued();
    assert_eq!(issued, 2, "one token per scope");
    c.read_range(&repo, &pushed.layer, 0, 10)
        .await
        .expect("cached token");
    assert_eq!(tokens.issued(), issued, "the cached token is reused");

    // The registry restarts trusting only a new key: the cached token is refused with 401,
    // and the client fetches a new one (signed with the new key) and succeeds.
    let key2 = SigningKey::generate(dir.path(), "key2");
    let cert2 = key2.cert.clone();
    tokens.rotate(key2);
    drop(registry);
    let _registry = Registry::start_with(&dir.join("second"), &options(cert2));
    let got = c
        .read_range(&repo, &pushed.layer, 100, 200)
        .await
        .expect("after refresh");
    assert!(got[..] == pushed.layer_bytes[100..300]);
    assert_eq!(tokens.issued(), issued + 1, "exactly one refresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_first_then_the_origin() {
    let dir = TestDir::new("regclient-mirror");
    let origin = Registry::start(&dir.join("origin"));
    let mirror = Registry::start(&dir.join("mirror"));
    let pusher = plain_client();
    let only_mirror = push_image(&pusher, &mirror.image("cached"), "amd64", 30_000).await;
    let both = push_image(&pusher, &origin.image("both"), "amd64", 40_000).await;
    push_image(&pusher, &mirror.image("both"), "amd64", 40_000).await;

    let certs = dir.join("certs.d");
    let host_dir = certs.join(origin.host());
    std::fs::create_dir_all(&host_dir).expect("mkdir");
    let toml = format!(
        "[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        mirror.host()
    );
    std::fs::write(host_dir.join("hosts.toml"), toml).expect("write hosts.toml");
    let c = client(RegistryConfig {
        hosts_dir: Some(certs),
        ..RegistryConfig::default()
    });

    // Only the mirror has it, so this proves the mirror is asked (with ?ns=<origin>).
    let cached = origin.image("cached:amd64");
    let r = c
        .resolve(&cached, None)
        .await
        .expect("served by the mirror");
    assert_eq!(r.manifest_digest, only_mirror.manifest);
    let got = c
        .read_range(&cached, &only_mirror.layer, 10, 10)
        .await
        .expect("mirror range");
    assert!(got[..] == only_mirror.layer_bytes[10..20]);

    drop(mirror);
    let reference = origin.image("both:amd64");
    let r = c
        .resolve(&reference, None)
        .await
        .expect("origin after the mirror died");
    assert_eq!(r.manifest_digest, both.manifest);
    let got = c
        .read_range(&reference, &both.layer, 1000, 2000)
        .await
        .expect("origin range");
    assert!(got[..] == both.layer_bytes[1000..3000]);
    let e = c
        .resolve(&cached, None)
        .await
        .expect_err("the origin never had it");
    assert!(
        matches!(e, RegistryError::NotFound { ref host, .. } if host == &origin.host()),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_against_the_configured_ca() {
    let dir = TestDir::new("regclient-tls");
    let (key, cert) = (dir.join("tls.key"), dir.join("tls.pem"));
    self_signed(&key, &cert, "127.0.0.1", Some("IP:127.0.0.1"));
    let registry = Registry::start_with(
        &dir.join("registry"),
        &RegistryOptions {
            tls: Some((cert.clone(), key)),
            ..RegistryOptions::default()
        },
    );
    let hosts = |name: &str, extra: &str| {
        let root = dir.join(name);
        let d = root.join(registry.host());
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::copy(&cert, d.join("ca.pem")).expect("copy CA");
        let toml = format!("server = \"https://{}\"\n{extra}", registry.host());
        std::fs::write(d.join("hosts.toml"), toml).expect("write hosts.toml");
        client(RegistryConfig {
            hosts_dir: Some(root),
            ..RegistryConfig::default()
        })
    };
    let trusting = hosts("with-ca", "ca = \"ca.pem\"\n");
    let pushed = push_image(&trusting, &registry.image("tls"), "amd64", 5_000).await;
    let reference = registry.image("tls:amd64");
    let r = trusting
        .resolve(&reference, None)
        .await
        .expect("TLS with the CA");
    assert_eq!(r.manifest_digest, pushed.manifest);

    let untrusting = hosts("without-ca", "");
    let e = untrusting
        .resolve(&reference, None)
        .await
        .expect_err("unknown CA");
    assert!(matches!(e, RegistryError::Unreachable { .. }), "{e}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_registry_is_unreachable_after_the_retries() {
    let dir = TestDir::new("regclient-killed");
    let registry = Registry::start(&dir.join("registry"));
    let c = plain_client();
    let pushed = push_image(&c, &registry.image("gone"), "amd64", 10_000).await;
    let reference = registry.image("gone:amd64");
    c.read_range(&reference, &pushed.layer, 0, 10)
        .await
        .expect("while it runs");
    let host = registry.host();
    drop(registry);
    let e = c
        .read_range(&reference, &pushed.layer, 10, 10)
        .await
        .expect_err("killed");
    let RegistryError::Unreachable {
        host: h, attempts, ..
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!((h, *attempts), (&host, 3), "first try plus two retries");
    assert!(e.is_transient());
}
