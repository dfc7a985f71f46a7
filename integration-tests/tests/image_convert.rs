//! `augurctl image convert` against real parts: Debian's `docker-registry`, containerd, Augur,
//! and the reference eStargz tools (`ctr-remote`).
//!
//! - registry → registry and OCI layout → registry conversions of the test images (and a Docker
//!   media-type copy, an uncompressed-tar layout, a layout as DST) are pulled with
//!   `ctr-remote image rpull --snapshotter augur`: every layer is mounted lazily, no layer blob
//!   enters containerd's content store, and `ctr run` prints what the image should print;
//! - the result agrees with `ctr-remote image convert --estargz --oci` on the same image: TOC
//!   shapes (chunks, digests, metadata), media types, annotations, config; containerd unpacks it
//!   (so the diff IDs are right) and `ctr-remote image get-toc-digest` reads its TOCs;
//! - multi-platform indexes, bad sources and Ctrl-C fail clearly and leave no temporary file.
//!
//! Needs root, `ctr-remote` and `skopeo` (integration-tests/scripts/deps.sh) and the cached
//! test images (integration-tests/scripts/images.sh build).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use augur_integration_tests::convert::{self, convert_ok, entries};
use augur_integration_tests::estargz_images::{
    LAYER_GZIP, OciLayout, assert_same_shape, manifest, read_blob, read_json, read_toc,
    reference_toc,
};
use augur_integration_tests::lazy::{
    LazyBed, content_digests, ctr_remote, layer_digests, manifest_of,
};
use augur_integration_tests::{Registry, TestDir, cache_dir, poll, run_ok, wait_until};
use augur_snapshotter::estargz::{
    TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION, format_digest, inflate_member, sha256,
};
use serde_json::{Value, json};

augur_integration_tests::lazy_bed_newtype!(
    /// A registry with the test images, Augur, and containerd using it as `augur`.
    Bed
);

impl Bed {
    fn start(name: &str) -> Bed {
        Bed(LazyBed::start(name))
    }

    /// A fresh, empty temporary directory for augurctl.
    fn tmp(&self, name: &str) -> PathBuf {
        let tmp = self.dir.join(name);
        std::fs::create_dir_all(&tmp).unwrap();
        tmp
    }

    /// `ctr-remote image rpull --snapshotter augur`, then checks that no layer blob was
    /// downloaded into containerd, then `ctr run` with `cmd`; returns its output.
    fn rpull_and_run(&self, ns: &str, image: &str, cmd: &[&str]) -> String {
        let args = [
            "-n",
            ns,
            "image",
            "rpull",
            "--plain-http",
            "--snapshotter",
            "augur",
        ];
        run_ok(&mut ctr_remote(
            &self.containerd,
            &[&args[..], &[image]].concat(),
        ));
        let layers = layer_digests(&self.containerd, ns, image);
        assert!(!layers.is_empty(), "{image} has no layers");
        let content = content_digests(&self.containerd, ns);
        for l in &layers {
            assert!(
                !content.contains(l),
                "layer {l} of {image} was downloaded into containerd's content store\n{}",
                self.daemon.log()
            );
        }
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let id = format!("run-{}", RUNS.fetch_add(1, Ordering::Relaxed));
        let mut args = vec![
            "-n",
            ns,
            "run",
            "--rm",
            "--snapshotter",
            "augur",
            image,
            &id,
        ];
        args.extend_from_slice(cmd);
        let out = self.containerd.ctr(&args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}\n--- augur log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.daemon.log()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn lazy_mounts(&self) -> usize {
        self.daemon
            .log()
            .matches("remote layer mounted lazily")
            .count()
    }
}

/// Every layer of `manifest` is an OCI gzip layer with the eStargz annotations.
#[track_caller]
fn assert_estargz_manifest(manifest: &Value) {
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    for l in manifest["layers"].as_array().expect("layers") {
        assert_eq!(l["mediaType"], LAYER_GZIP, "{l}");
        assert!(l["annotations"][TOC_DIGEST_ANNOTATION].is_string(), "{l}");
        assert!(
            l["annotations"][UNCOMPRESSED_SIZE_ANNOTATION].is_string(),
            "{l}"
        );
    }
}

const PYTHON_CMD: [&str; 3] = [
    "python3",
    "-c",
    "import json; print(json.dumps({'lazy': 1}))",
];
const PYTHON_OUT: &str = "{\"lazy\": 1}";

#[test]
fn registry_images_convert_and_pull_lazily() {
    let bed = Bed::start("convert-registry");
    let tmp = bed.tmp("tmp");
    // The same busybox with Docker media types (schema 2), as `docker push` makes them.
    let mut skopeo = Command::new("skopeo");
    skopeo.args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
    ]);
    skopeo.args(["--dest-tls-verify=false", "--format", "v2s2"]);
    skopeo.arg(format!("docker://{}", bed.registry.image("busybox:latest")));
    skopeo.arg(format!(
        "docker://{}",
        bed.registry.image("dockerbox:latest")
    ));
    run_ok(&mut skopeo);

    for (src, cmd, expect) in [
        (
            "busybox",
            &["echo", "converted busybox"][..],
            "converted busybox",
        ),
        ("python", &PYTHON_CMD[..], PYTHON_OUT),
        (
            "dockerbox",
            &["echo", "from docker types"][..],
            "from docker types",
        ),
    ] {
        let dst = bed.registry.image(&format!("{src}:augur"));
        convert_ok(
            &bed.registry.image(&format!("{src}:latest")),
            &dst,
            &tmp,
            &[],
        );
        assert!(
            entries(&tmp).is_empty(),
            "temporary files left: {:?}",
            entries(&tmp)
        );
        assert_eq!(bed.rpull_and_run("conv", &dst, cmd), expect, "{dst}");
        assert_estargz_manifest(&manifest_of(&bed.containerd, "conv", &dst));
    }
    // busybox 1 + python 2; dockerbox's layer converts to the very same blob as busybox's.
    assert!(bed.lazy_mounts() >= 3, "{}", bed.daemon.log());
}

/// The OCI layout `images.sh` built for `name`: (manifest, config, layer blobs' paths).
fn cached_layout(name: &str) -> (Value, Value, Vec<PathBuf>) {
    let dir = cache_dir().join("images").join(name);
    let blob = |d: &str| dir.join("blobs/sha256").join(&d[7..]);
    let read =
        |d: &str| -> Value { serde_json::from_slice(&std::fs::read(blob(d)).unwrap()).unwrap() };
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    let config = read(manifest["config"]["digest"].as_str().unwrap());
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| blob(l["digest"].as_str().unwrap()))
        .collect();
    (manifest, config, layers)
}

#[test]
fn oci_layouts_convert_and_pull_lazily() {
    let bed = Bed::start("convert-layout");
    let tmp = bed.tmp("tmp");
    let images = cache_dir().join("images");
    for (name, cmd, expect) in [
        ("busybox", &["echo", "from a layout"][..], "from a layout"),
        ("python", &PYTHON_CMD[..], PYTHON_OUT),
    ] {
        let src = format!("oci:{}:latest", images.join(name).display());
        let dst = bed.registry.image(&format!("{name}:from-layout"));
        convert_ok(&src, &dst, &tmp, &[]);
        assert!(
            entries(&tmp).is_empty(),
            "temporary files left: {:?}",
            entries(&tmp)
        );
        assert_eq!(bed.rpull_and_run("layout", &dst, cmd), expect, "{dst}");
    }

    // A layout whose layer is an uncompressed tar.
    let (_, config, layers) = cached_layout("busybox");
    let tar = inflate_member(&std::fs::read(&layers[0]).unwrap()).unwrap();
    let plain = OciLayout::write(
        &bed.dir.join("tar-layout"),
        &tar,
        "application/vnd.oci.image.layer.v1.tar",
        json!({}),
        &config,
    );
    let dst = bed.registry.image("tarbox:augur");
    convert_ok(
        &format!("oci:{}:latest", plain.dir().display()),
        &dst,
        &tmp,
        &[],
    );
    assert_eq!(bed.rpull_and_run("layout", &dst, &["echo", "tar"]), "tar");

    // Registry → layout, then that layout → registry: the layers are eStargz already and are
    // copied as they are.
    let out_dir = bed.dir.join("out-layout");
    let in_layout = format!("oci:{}:bb", out_dir.display());
    convert_ok(&bed.registry.image("busybox:latest"), &in_layout, &tmp, &[]);
    let index: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "bb"
    );
    let dst = bed.registry.image("copied:augur");
    let out = convert::run(&in_layout, &dst, &tmp, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("0 layer(s) converted, 1 already eStargz"),
        "{stdout}"
    );
    assert_eq!(
        bed.rpull_and_run("layout", &dst, &["echo", "copied"]),
        "copied"
    );
    assert!(
        entries(&tmp).is_empty(),
        "temporary files left: {:?}",
        entries(&tmp)
    ); // busybox 1 + python 2; the other busybox copies convert to the same blob (same chain ID).
    assert!(bed.lazy_mounts() >= 3, "{}", bed.daemon.log());
}

#[test]
fn reference_tools_agree_with_our_conversion() {
    let bed = Bed::start("convert-reference");
    let c = &bed.containerd;
    let tmp = bed.tmp("tmp");
    for name in ["busybox", "python"] {
        let src = bed.registry.image(&format!("{name}:latest"));
        let ours = bed.registry.image(&format!("{name}:augur"));
        convert_ok(&src, &ours, &tmp, &[]);
        c.ctr_ok(&["images", "pull", "--plain-http", &src]);
        let reference_name = format!("esgz/{name}:ref");
        augur_integration_tests::estargz_images::convert_estargz(c, &src, &reference_name, &[]);
        // A normal pull unpacks every layer and checks it against the config's diff IDs.
        c.ctr_ok(&["images", "pull", "--plain-http", &ours]);
        let (mine, reference) = (manifest(c, &ours), manifest(c, &reference_name));
        assert_estargz_manifest(&mine);
        let layers = |m: &Value| m["layers"].as_array().unwrap().clone();
        assert_eq!(layers(&mine).len(), layers(&reference).len());
        let config = read_json(c, mine["config"]["digest"].as_str().unwrap());
        for (i, (l, r)) in layers(&mine).iter().zip(&layers(&reference)).enumerate() {
            let keys = |d: &Value| {
                d["annotations"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
            };
            assert_eq!(keys(l), keys(r), "annotation keys of layer {i}");
            assert_eq!(l["mediaType"], r["mediaType"]);
            let toc_digest = l["annotations"][TOC_DIGEST_ANNOTATION].as_str().unwrap();
            let digest = l["digest"].as_str().unwrap();
            let blob = read_blob(c, digest);
            let tar = inflate_member(&blob).unwrap();
            assert_eq!(
                l["annotations"][UNCOMPRESSED_SIZE_ANNOTATION],
                tar.len().to_string(),
                "uncompressed size of layer {i}"
            );
            assert_eq!(
                config["rootfs"]["diff_ids"][i],
                format_digest(&sha256(&tar))
            );
            let (toc, _) = read_toc(&blob, Some(toc_digest));
            let r_blob = read_blob(c, r["digest"].as_str().unwrap());
            let (r_toc, _) = read_toc(&r_blob, r["annotations"][TOC_DIGEST_ANNOTATION].as_str());
            assert_same_shape(&toc, &r_toc);
            assert_eq!(
                reference_toc(c, digest, &[]).trim(),
                toc_digest,
                "get-toc-digest"
            );
            eprintln!(
                "{name} layer {i}: {} TOC entries as ctr-remote's",
                toc.entries.len()
            );
        }
        // The config is the reference's but for the diff IDs (they cover the TOC, whose offsets
        // depend on the gzip implementation).
        let without_diff_ids = |mut v: Value| {
            v["rootfs"]["diff_ids"] = json!(null);
            v
        };
        let r_config = read_json(c, reference["config"]["digest"].as_str().unwrap());
        assert_eq!(
            without_diff_ids(config),
            without_diff_ids(r_config),
            "{name} config"
        );
    }
}

/// Pushes `host:port/multi:latest`: an index of busybox for this host's architecture, busybox
/// relabelled for another one (its config says so, and its env tells them apart), and an
/// attestation-like entry that must be skipped. Returns the other architecture.
fn push_index(registry: &Registry) -> String {
    use augur_snapshotter::registry::{Platform, Registry as Client, RegistryConfig};
    let client = Client::new(RegistryConfig::default()).unwrap();
    let host = Platform::host().architecture;
    let other = if host == "arm64" { "s390x" } else { "arm64" }.to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let busybox = registry.image("busybox:latest");
        let m = client.manifest(&busybox, None).await.unwrap();
        let mut manifest: Value = serde_json::from_slice(&m.bytes).unwrap();
        let mut config = Vec::new();
        let config_digest = manifest["config"]["digest"].as_str().unwrap().to_owned();
        client
            .pull_blob(&busybox, &config_digest, &mut config)
            .await
            .unwrap();
        let mut config: Value = serde_json::from_slice(&config).unwrap();
        config["architecture"] = json!(other);
        config["config"]["Env"] = json!(["PATH=/bin", format!("ARCH={other}")]);
        let config = serde_json::to_vec(&config).unwrap();
        let config_digest = format_digest(&sha256(&config));
        let multi = registry.image("multi:latest");
        // The new repository needs busybox's blobs too.
        let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
        let old_config = manifest["config"]["digest"].as_str().unwrap().to_owned();
        for digest in [&old_config, &layer_digest] {
            let mut blob = Vec::new();
            client.pull_blob(&busybox, digest, &mut blob).await.unwrap();
            client.push_blob(&multi, blob.into(), digest).await.unwrap();
        }
        client
            .push_blob(&multi, config.clone().into(), &config_digest)
            .await
            .unwrap();
        manifest["config"]["digest"] = json!(config_digest);
        manifest["config"]["size"] = json!(config.len());
        manifest["mediaType"] = json!("application/vnd.oci.image.manifest.v1+json");
        let other_bytes = serde_json::to_vec(&manifest).unwrap();
        let other_digest = format_digest(&sha256(&other_bytes));
        let at = |d: &str| format!("{}@{d}", registry.image("multi"));
        let oci = "application/vnd.oci.image.manifest.v1+json";
        client
            .push_manifest_bytes(&at(&other_digest), oci, other_bytes.clone().into())
            .await
            .unwrap();
        client
            .push_manifest_bytes(&at(&m.digest), oci, m.bytes.clone())
            .await
            .unwrap();
        let entry = |digest: &str, size: usize, arch: &str| {
            json!({"mediaType": oci, "digest": digest, "size": size,
                   "platform": {"os": "linux", "architecture": arch}})
        };
        let mut attestation = entry(&m.digest, m.bytes.len(), "unknown");
        attestation["platform"]["os"] = json!("unknown");
        attestation["annotations"] = json!({"vnd.docker.reference.type": "attestation-manifest"});
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                entry(&m.digest, m.bytes.len(), &host),
                entry(&other_digest, other_bytes.len(), &other),
                attestation,
            ],
        });
        let index = serde_json::to_vec(&index).unwrap();
        client
            .push_manifest_bytes(
                &multi,
                "application/vnd.oci.image.index.v1+json",
                index.into(),
            )
            .await
            .unwrap();
    });
    other
}

/// The manifest `reference` names and its config, from the registry.
fn fetch_image(registry_ref: &str) -> (Value, Value) {
    use augur_snapshotter::registry::{Registry as Client, RegistryConfig};
    let client = Client::new(RegistryConfig::default()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let m = client.manifest(registry_ref, None).await.unwrap();
        let manifest: Value = serde_json::from_slice(&m.bytes).unwrap();
        if manifest.get("manifests").is_some() {
            return (manifest, Value::Null);
        }
        let mut config = Vec::new();
        let digest = manifest["config"]["digest"].as_str().unwrap();
        client
            .pull_blob(registry_ref, digest, &mut config)
            .await
            .unwrap();
        (manifest, serde_json::from_slice(&config).unwrap())
    })
}

#[test]
fn multi_platform_indexes_convert_one_platform_or_all() {
    let bed = Bed::start("convert-index");
    let tmp = bed.tmp("tmp");
    let other = push_index(&bed.registry);
    let src = bed.registry.image("multi:latest");

    // Default: this host's platform, as a single image.
    let host = bed.registry.image("multi:host");
    convert_ok(&src, &host, &tmp, &[]);
    let (m, config) = fetch_image(&host);
    assert_estargz_manifest(&m);
    assert_ne!(config["architecture"], json!(other));

    // --platform picks another one.
    let picked = bed.registry.image("multi:other");
    convert_ok(
        &src,
        &picked,
        &tmp,
        &["--platform", &format!("linux/{other}")],
    );
    let (m, config) = fetch_image(&picked);
    assert_estargz_manifest(&m);
    assert_eq!(config["architecture"], json!(other));

    // A platform the index lacks is an error that lists what it has.
    let out = convert::run(
        &src,
        &bed.registry.image("multi:none"),
        &tmp,
        &["--platform", "linux/mips64le"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no manifest for platform linux/mips64le") && stderr.contains(&other),
        "{stderr}"
    );

    // --all-platforms: an index of both platform images; the attestation is left out.
    let all = bed.registry.image("multi:all");
    convert_ok(&src, &all, &tmp, &["--all-platforms"]);
    let (index, _) = fetch_image(&all);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let members = index["manifests"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{index}");
    for e in members {
        let member = format!(
            "{}@{}",
            bed.registry.image("multi"),
            e["digest"].as_str().unwrap()
        );
        let (m, config) = fetch_image(&member);
        assert_estargz_manifest(&m);
        assert_eq!(config["architecture"], e["platform"]["architecture"]);
    }
    assert!(
        entries(&tmp).is_empty(),
        "temporary files left: {:?}",
        entries(&tmp)
    );
    // --json: the summary as JSON, one entry per platform image; DST had every layer already.
    let out = convert::run(&src, &all, &tmp, &["--all-platforms", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(summary["reference"], all.as_str(), "{summary}");
    assert_eq!(summary["media_type"], index["mediaType"], "{summary}");
    let images = summary["images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "{summary}");
    assert!(images.iter().all(|i| i["converted"].as_u64().unwrap() > 0 && i["bytes_after"].as_u64().unwrap() > 0), "{summary}");
    // containerd picks this host's image from the new index and runs it lazily.
    assert_eq!(
        bed.rpull_and_run("multi", &all, &["echo", "from an index"]),
        "from an index"
    );
    assert_eq!(bed.lazy_mounts(), 1, "{}", bed.daemon.log());
}

/// A one-layer layout whose layer has `media_type` and the bytes `layer`.
fn bad_layout(dir: &Path, layer: &[u8], media_type: &str) -> String {
    let config = json!({"architecture": "amd64", "os": "linux",
                        "rootfs": {"type": "layers", "diff_ids": [format_digest(&sha256(b"x"))]}});
    let layout = OciLayout::write(dir, layer, media_type, json!({}), &config);
    format!("oci:{}:latest", layout.dir().display())
}

#[test]
fn bad_sources_fail_clearly_and_leave_nothing_behind() {
    let dir = TestDir::new("convert-bad");
    let registry = Registry::start(&dir.join("registry"));
    registry.push_test_images();
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let dst = registry.image("never:tagged");
    let (_, _, busybox_layers) = cached_layout("busybox");
    let busybox_layer = std::fs::read(&busybox_layers[0]).unwrap();

    // A layout whose layer blob was swapped for another valid one after the manifest was made:
    // the same tar with 512 more zero bytes, gzipped again.
    let swapped = bad_layout(&dir.join("swapped"), &busybox_layer, LAYER_GZIP);
    let swapped_blob = dir
        .join("swapped/blobs/sha256")
        .join(&format_digest(&sha256(&busybox_layer))[7..]);
    let mut tar = inflate_member(&busybox_layer).unwrap();
    tar.extend_from_slice(&[0; 512]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    std::fs::write(&swapped_blob, gz.finish().unwrap()).unwrap();

    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        (
            registry.image("busybox:nope"),
            vec![],
            "manifest nope not found",
        ),
        (
            format!(
                "127.0.0.1:{}/busybox:latest",
                augur_integration_tests::free_port()
            ),
            vec!["--log-level", "error"],
            "unreachable",
        ),
        ("oci:".to_owned(), vec![], "oci:DIR[:TAG]"),
        (
            bad_layout(&dir.join("notgzip"), &[7u8; 4096], LAYER_GZIP),
            vec![],
            "does not read as a gzip-compressed tar",
        ),
        (
            bad_layout(
                &dir.join("zstd"),
                b"zstd?",
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
            vec![],
            "media type application/vnd.oci.image.layer.v1.tar+zstd: this build of augurctl has no zstd decoder",
        ),
        (
            swapped,
            vec![],
            "the source is corrupt or changed while it was read",
        ),
    ];
    for (src, extra, expect) in cases {
        let out = convert::run(&src, &dst, &tmp, &extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{src}: {stderr}");
        assert!(
            stderr.contains(expect),
            "{src}: expected {expect:?} in:\n{stderr}"
        );
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("augurctl: "),
            "{src}: one error line at the end:\n{stderr}"
        );
        assert!(entries(&tmp).is_empty(), "{src} left {:?}", entries(&tmp));
    }
    // Nothing was tagged.
    let out = convert::run(&dst, &registry.image("x:y"), &tmp, &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("manifest tagged not found"));
}

#[test]
fn an_interrupt_removes_the_temporary_files_and_tags_nothing() {
    let dir = TestDir::new("convert-interrupt");
    let registry = Registry::start(&dir.join("registry"));
    registry.push_test_images();
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let dst = registry.image("python:interrupted");
    let mut child = convert::command(&registry.image("python:latest"), &dst, &tmp, &["-q"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once a layer is being written.
    wait_until("a temporary eStargz file", Duration::from_secs(120), || {
        entries(&tmp)
            .iter()
            .any(|scratch| !entries(&tmp.join(scratch)).is_empty())
    });
    augur_integration_tests::signal(child.id(), nix::sys::signal::Signal::SIGINT);
    let exited = poll(Duration::from_secs(60), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(exited, "augurctl did not stop after SIGINT");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted; temporary files removed"),
        "{stderr}"
    );
    assert!(entries(&tmp).is_empty(), "left {:?}", entries(&tmp));
    let again = convert::run(&dst, &registry.image("x:y"), &tmp, &[]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("manifest interrupted not found"),
        "{stderr}"
    );
}

/// A `config.json` under `dir` holding `user:password` for `host`.
fn docker_config(dir: &Path, host: &str, user: &str, password: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{user}:{password}"),
    );
    let json = json!({"auths": {host: {"auth": auth}}});
    std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
    dir.display().to_string()
}

#[test]
fn destinations_are_checked_before_anything_is_converted() {
    let dir = TestDir::new("convert-dst");
    let open = Registry::start(&dir.join("open"));
    open.push_test_images();
    let secured = Registry::start_with(
        &dir.join("secured"),
        &augur_integration_tests::RegistryOptions {
            auth: Some(augur_integration_tests::RegistryAuth::Htpasswd {
                user: "augur".to_owned(),
                password: "s3cret".to_owned(),
            }),
            ..Default::default()
        },
    );
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let src = open.image("busybox:latest");
    let gone = format!("127.0.0.1:{}/x:y", augur_integration_tests::free_port());
    let no_login = docker_config(&dir.join("nobody"), "elsewhere:5000", "x", "y");
    let login = docker_config(&dir.join("augur"), &secured.host(), "augur", "s3cret");
    let dst = secured.image("busybox:esgz");
    for (dst, extra, expect) in [
        (gone.as_str(), vec!["--log-level", "error"], "reaching DST"),
        (
            dst.as_str(),
            vec!["--docker-config", &no_login],
            "docker login",
        ),
    ] {
        let out = convert::run(&src, dst, &tmp, &extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(expect),
            "{dst}: expected {expect:?} in\n{stderr}"
        );
        assert!(
            !stderr.contains("eStargz sha256:"),
            "converted before failing:\n{stderr}"
        );
        assert!(entries(&tmp).is_empty(), "left {:?}", entries(&tmp));
    }
    // With credentials the same conversion goes through.
    convert_ok(&src, &dst, &tmp, &["--docker-config", &login]);
}
