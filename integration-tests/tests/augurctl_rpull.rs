//! `augurctl image rpull` end to end: eStargz images (made by Debian's `ctr-remote`) pulled
//! through a real containerd with Augur as its proxy snapshotter, then run; the same labels and
//! records as `ctr-remote image rpull`; the fallback for plain layers; namespaces, removal and
//! GC; errors a person can act on.
//!
//! Needs root, the cached test images (`integration-tests/scripts/images.sh build`) and
//! `ctr-remote` (`integration-tests/scripts/deps.sh`).

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};

use augur_integration_tests::lazy::{LazyBed, content_digests, layer_digests, push_estargz};
use augur_integration_tests::{TestDir, augurctl_bin};

/// `augurctl --log-level info image rpull --address <bed's containerd> -n ns args… image`.
fn augurctl(bed: &LazyBed, ns: &str, args: &[&str], image: &str) -> Output {
    Command::new(augurctl_bin())
        .args(["--log-level", "info", "image", "rpull", "--address"])
        .arg(bed.containerd.address())
        .args(["--namespace", ns])
        .args(args)
        .arg(image)
        .stdin(Stdio::null())
        .output()
        .expect("run augurctl")
}

/// Runs augurctl, asserting success; returns its stderr (the progress lines).
fn rpull_ok(bed: &LazyBed, ns: &str, image: &str) -> String {
    let out = augurctl(bed, ns, &[], image);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "augurctl image rpull {image} failed:\n{stderr}\n--- augur log ---\n{}",
        bed.daemon.log()
    );
    stderr
}

/// The config digest and top chain ID of `image` in `ns`.
fn config_and_chain(bed: &LazyBed, ns: &str, image: &str) -> (String, String) {
    let manifest = augur_integration_tests::lazy::manifest_of(&bed.containerd, ns, image);
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_owned();
    let config = bed
        .containerd
        .ctr_ok(&["-n", ns, "content", "get", &config_digest]);
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect();
    let chain = augur_snapshotter::rpull::labels::chain_ids(&diff_ids);
    (config_digest, chain.last().unwrap().clone())
}

/// The labels on blob `digest` in `ns` (`ctr content ls`'s last column), sorted.
fn content_labels(bed: &LazyBed, ns: &str, digest: &str) -> Vec<String> {
    let listing = bed.containerd.ctr_ok(&["-n", ns, "content", "ls"]);
    let line = listing
        .lines()
        .find(|l| l.starts_with(digest))
        .unwrap_or_else(|| panic!("{digest} not in namespace {ns}:\n{listing}"));
    let mut labels: Vec<String> = line
        .split_whitespace()
        .last()
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect();
    labels.sort();
    labels
}

/// The snapshot labels `ctr snapshots info` shows for `key` in `ns`.
fn snapshot_labels(bed: &LazyBed, ns: &str, key: &str) -> serde_json::Value {
    let info =
        bed.containerd
            .ctr_ok(&["-n", ns, "snapshots", "--snapshotter", "augur", "info", key]);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    info["Labels"].clone()
}

/// The labels of every Prepare the daemon logged for namespace `ns`, by chain ID.
fn logged_prepare_labels(log: &str, ns: &str) -> BTreeMap<String, String> {
    log.lines()
        .filter(|l| l.contains("prepare requested"))
        .filter_map(|l| {
            let key = l.split("key=\"").nth(1)?.split('"').next()?;
            let (prefix, chain) = key.split_once(' ')?;
            prefix.starts_with(&format!("{ns}/")).then_some(())?;
            let labels = l.split("labels=").nth(1)?;
            Some((chain.to_owned(), labels.trim().to_owned()))
        })
        .collect()
}

/// augurctl pulls busybox and python lazily (no layer blob in containerd, every layer a FUSE
/// mount), the containers run, and everything containerd got — the Prepare labels, the content
/// labels, the image record and the snapshots' labels — is what `ctr-remote image rpull` gives
/// it for the same image.
#[test]
fn rpull_is_lazy_runs_and_matches_ctr_remote() {
    let bed = LazyBed::start("augurctl-rpull");
    let mut lazy_layers = 0;
    for (image, cmd, expect) in [
        (
            "busybox:latest",
            vec!["echo", "hi from augurctl"],
            "hi from augurctl",
        ),
        (
            "python:latest",
            vec![
                "python3",
                "-c",
                "import json; print(json.dumps({'rpull': 1}))",
            ],
            "{\"rpull\": 1}",
        ),
    ] {
        let esgz = push_estargz(&bed.containerd, &bed.registry, image);
        let progress = rpull_ok(&bed, "ours", &esgz);
        let layers = layer_digests(&bed.containerd, "ours", &esgz);
        assert_eq!(
            progress.matches("lazy (remote)").count(),
            layers.len(),
            "every layer is lazy:\n{progress}"
        );
        lazy_layers += layers.len();
        let content = content_digests(&bed.containerd, "ours");
        for l in &layers {
            assert!(
                !content.contains(l),
                "layer {l} of {esgz} entered the content store"
            );
        }
        assert_eq!(
            bed.fuse_mounts().len(),
            lazy_layers,
            "one FUSE mount per layer"
        );
        assert_eq!(bed.run("ours", &esgz, "c", &cmd).trim(), expect, "{esgz}");
    }
    assert_eq!(
        bed.daemon
            .log()
            .matches("remote layer mounted lazily")
            .count(),
        lazy_layers
    );

    // The reference client on the same image, in its own namespace.
    let esgz = bed.registry.image("python:esgz");
    bed.ctr_remote_rpull("ref", &esgz);
    let theirs = logged_prepare_labels(&bed.daemon.log(), "ref");
    assert_eq!(theirs.len(), 2, "ctr-remote prepared python's two layers");
    let chain = assert_stored_like_ctr_remote(&bed, "ours", "ref", &esgz);
    assert_eq!(
        snapshot_labels(&bed, "ours", &chain)["containerd.io/snapshot/remote"],
        "remote snapshot"
    );
}

/// Asserts that `image` in namespace `ours` (pulled by augurctl) was stored exactly as in `theirs`
/// (pulled by ctr-remote): the Prepare labels the daemon logged, the image record, the labels of
/// the target (and of the manifest an index points at) and of the config, the snapshots' labels.
/// Returns the top chain ID.
fn assert_stored_like_ctr_remote(bed: &LazyBed, ours: &str, theirs: &str, image: &str) -> String {
    let log = bed.daemon.log();
    let (sent, reference) = (
        logged_prepare_labels(&log, ours),
        logged_prepare_labels(&log, theirs),
    );
    assert!(
        !reference.is_empty(),
        "no Prepare logged for {theirs}:\n{log}"
    );
    for (chain, labels) in &reference {
        assert_eq!(sent.get(chain), Some(labels), "Prepare labels of {chain}");
    }
    let image_line = |ns: &str| -> String {
        let ls = bed.containerd.ctr_ok(&["-n", ns, "image", "ls"]);
        let line = ls
            .lines()
            .find(|l| l.split_whitespace().next() == Some(image))
            .unwrap_or_else(|| panic!("{image} not in namespace {ns}:\n{ls}"))
            .to_owned();
        // NAME TYPE DIGEST (then size, platforms, labels)
        line.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let record = image_line(ours);
    assert_eq!(record, image_line(theirs), "image records");
    let target = record.split(' ').nth(2).unwrap().to_owned();
    let (config, chain) = config_and_chain(bed, ours, image);
    let mut blobs = vec![target.clone(), config.clone()];
    if let Some(m) = content_labels(bed, ours, &target)
        .iter()
        .find_map(|l| l.strip_prefix("containerd.io/gc.ref.content.m.0="))
    {
        blobs.push(m.to_owned()); // the target is an index
    }
    for digest in &blobs {
        assert_eq!(
            content_labels(bed, ours, digest),
            content_labels(bed, theirs, digest),
            "labels of {digest}"
        );
    }
    assert!(
        content_labels(bed, ours, &config)
            .contains(&format!("containerd.io/gc.ref.snapshot.augur={chain}")),
        "the config holds the snapshot chain"
    );
    assert_eq!(
        snapshot_labels(bed, ours, &chain),
        snapshot_labels(bed, theirs, &chain),
        "labels of {chain}"
    );
    chain
}

/// A plain gzip image falls back exactly like containerd: the blob is fetched into the content
/// store, applied and committed; it runs.
#[test]
fn plain_layers_are_fetched_unpacked_and_run() {
    let bed = LazyBed::start("augurctl-plain");
    let plain = bed.registry.image("busybox:latest");
    let progress = rpull_ok(&bed, "plain", &plain);
    assert!(progress.contains("MiB and unpacked"), "{progress}");
    assert!(!progress.contains("lazy (remote)"), "{progress}");
    let layers = layer_digests(&bed.containerd, "plain", &plain);
    let content = content_digests(&bed.containerd, "plain");
    assert!(layers.iter().all(|l| content.contains(l)), "{content:?}");
    assert!(
        content_labels(&bed, "plain", &layers[0])
            .iter()
            .any(|l| l.starts_with("containerd.io/uncompressed=sha256:")),
        "the layer blob records its verified diff ID"
    );
    assert!(bed.fuse_mounts().is_empty());
    assert_eq!(
        bed.run("plain", &plain, "p", &["echo", "plain"]).trim(),
        "plain"
    );
    // Pulling again finds everything there.
    let again = rpull_ok(&bed, "plain", &plain);
    assert!(again.contains("already present"), "{again}");
    // --json: the result on stdout, each layer's digest and outcome, bottom first.
    let out = augurctl(&bed, "plain", &["--json", "--quiet"], &plain);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "--quiet: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(result["name"], plain.as_str());
    let digests: Vec<&str> = result["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert_eq!(l["outcome"], "present", "{l}");
            l["digest"].as_str().unwrap()
        })
        .collect();
    assert_eq!(digests, layers);
}

/// Two namespaces share the lazy layer; a GC after removing the image from one keeps the other
/// namespace's image whole (its records hold everything), and removing it too unmounts the
/// layer and empties both namespaces.
#[test]
fn namespaces_removal_and_gc() {
    let bed = LazyBed::start("augurctl-gc");
    let esgz = push_estargz(&bed.containerd, &bed.registry, "busybox:latest");
    rpull_ok(&bed, "one", &esgz);
    rpull_ok(&bed, "two", &esgz);
    assert_eq!(
        bed.fuse_mounts().len(),
        1,
        "one mount shared by both namespaces"
    );
    assert_eq!(
        bed.daemon
            .log()
            .matches("remote layer mounted lazily")
            .count(),
        1
    );
    let (_, chain) = config_and_chain(&bed, "two", &esgz);
    // image rm --sync runs a full GC before it returns.
    bed.containerd
        .ctr_ok(&["-n", "one", "image", "rm", "--sync", &esgz]);
    let left = |ns: &str, what: &[&str]| -> String {
        let mut args = vec!["-n", ns];
        args.extend_from_slice(what);
        bed.containerd.ctr_ok(&args)
    };
    assert_eq!(left("one", &["content", "ls", "-q"]).trim(), "");
    let snapshots = ["snapshots", "--snapshotter", "augur", "ls"];
    assert!(!left("one", &snapshots).contains("sha256:"));
    assert!(
        left("two", &snapshots).contains(&chain),
        "namespace two keeps its snapshot"
    );
    assert_eq!(bed.fuse_mounts().len(), 1);
    assert_eq!(bed.run("two", &esgz, "c", &["echo", "two"]).trim(), "two");

    bed.containerd
        .ctr_ok(&["-n", "two", "image", "rm", "--sync", &esgz]);
    assert_eq!(left("two", &["content", "ls", "-q"]).trim(), "");
    assert!(!left("two", &snapshots).contains("sha256:"));
    assert!(
        augur_integration_tests::poll(std::time::Duration::from_secs(10), || bed
            .fuse_mounts()
            .is_empty()),
        "the lazy layer is unmounted once no namespace holds it:\n{}",
        bed.daemon.log()
    );
}

/// Each failure exits non-zero with a message that says what to do.
#[test]
fn errors_say_what_to_do() {
    let dir = TestDir::new("augurctl-errors");
    let out = Command::new(augurctl_bin())
        .args(["image", "rpull", "--address"])
        .arg(dir.join("no-containerd.sock"))
        .arg("127.0.0.1:1/x:y")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("is containerd running?"), "{stderr}");

    let mut bed = LazyBed::start("augurctl-errors-bed");
    expect_failure(
        &bed,
        "e",
        &[],
        "127.0.0.1:5000/Bad/Name",
        "invalid image reference",
    );
    let missing = bed.registry.image("busybox:no-such-tag");
    expect_failure(&bed, "e", &[], &missing, "not found");
    let plain = bed.registry.image("busybox:latest");
    expect_failure(
        &bed,
        "e",
        &["--snapshotter", "nope"],
        &plain,
        "containerd has no snapshotter named \"nope\"",
    );
    bed.daemon.stop();
    expect_failure(&bed, "e", &[], &plain, "is augur-snapshotter running");
}

fn expect_failure(bed: &LazyBed, ns: &str, args: &[&str], image: &str, says: &str) {
    let out = augurctl(bed, ns, args, image);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{image} {args:?} must fail");
    assert!(stderr.contains(says), "expected {says:?} in:\n{stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("augurctl: "),
        "ends with one error line:\n{stderr}"
    );
}

/// A reference that names an index: the index is stored as the image's target, with its GC
/// reference to this platform's manifest, exactly as ctr-remote stores it; the layer is lazy.
#[test]
fn an_index_is_stored_like_ctr_remote_stores_it() {
    use augur_snapshotter::registry::manifest::{
        ImageIndexEntry, OCI_IMAGE_INDEX_MEDIA_TYPE, OciImageIndex, OciManifest, Platform as P,
    };
    use augur_snapshotter::registry::{Platform, Registry, RegistryConfig};
    let bed = LazyBed::start("augurctl-index");
    let esgz = push_estargz(&bed.containerd, &bed.registry, "busybox:latest");
    let tagged = bed.registry.image("busybox:esgz-index");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = Registry::new(RegistryConfig::default()).unwrap();
        let r = c.resolve(&esgz, None).await.unwrap();
        let host = Platform::host();
        let index = OciImageIndex {
            schema_version: 2,
            media_type: Some(OCI_IMAGE_INDEX_MEDIA_TYPE.to_owned()),
            manifests: vec![ImageIndexEntry {
                media_type: r.media_type.clone(),
                digest: r.manifest_digest.clone(),
                size: r.manifest_bytes.len() as i64,
                platform: Some(P {
                    architecture: host.architecture.as_str().into(),
                    os: host.os.as_str().into(),
                    os_version: None,
                    os_features: None,
                    variant: host.variant,
                    features: None,
                }),
                annotations: None,
                artifact_type: None,
            }],
            artifact_type: None,
            annotations: None,
        };
        c.push_manifest(&tagged, &OciManifest::ImageIndex(index))
            .await
            .unwrap();
    });
    let progress = rpull_ok(&bed, "ours", &tagged);
    assert!(progress.contains("lazy (remote)"), "{progress}");
    bed.ctr_remote_rpull("ref", &tagged);
    assert_stored_like_ctr_remote(&bed, "ours", "ref", &tagged);
    let target = bed.containerd.ctr_ok(&["-n", "ours", "image", "ls"]);
    assert!(
        target.contains("application/vnd.oci.image.index.v1+json"),
        "{target}"
    );
    assert_eq!(
        bed.run("ours", &tagged, "i", &["echo", "indexed"]).trim(),
        "indexed"
    );
}
