//! Lazy pulling end to end: eStargz images made by Debian's `ctr-remote`, pulled with
//! `ctr-remote image rpull --snapshotter augur` through a real containerd from a real registry,
//! then run. The layer blobs must never enter containerd's content store.
//!
//! Needs root, the cached test images (`integration-tests/scripts/images.sh build`) and
//! `ctr-remote` (`integration-tests/scripts/deps.sh`).

use augur_integration_tests::lazy::{LazyBed, content_digests, layer_digests, push_estargz};

augur_integration_tests::lazy_bed_newtype!(
    /// The shared bed, with `rpull` through `ctr-remote`.
    Bed
);

impl Bed {
    fn start(name: &str) -> Bed {
        Bed(LazyBed::start(name))
    }

    fn start_with_config(name: &str, config: &str) -> Bed {
        Bed(LazyBed::start_with_config(name, config))
    }

    fn rpull(&self, ns: &str, image: &str) {
        self.ctr_remote_rpull(ns, image);
    }
}

/// After `rpull`, no layer blob is in containerd's content store, every layer was mounted
/// lazily, and the containers run.
#[test]
fn rpull_mounts_estargz_layers_lazily_and_runs() {
    let bed = Bed::start("lazy-rpull");
    for (image, cmd, expect) in [
        (
            "busybox:latest",
            vec!["echo", "hi from a lazy busybox"],
            "hi from a lazy busybox",
        ),
        (
            "python:latest",
            vec![
                "python3",
                "-c",
                "import json; print(json.dumps({'lazy': True}))",
            ],
            "{\"lazy\": true}",
        ),
    ] {
        let esgz = push_estargz(&bed.containerd, &bed.registry, image);
        bed.rpull("lazy", &esgz);
        let layers = layer_digests(&bed.containerd, "lazy", &esgz);
        assert!(!layers.is_empty(), "{esgz} has no layers");
        let content = content_digests(&bed.containerd, "lazy");
        for l in &layers {
            assert!(
                !content.contains(l),
                "layer {l} of {esgz} was downloaded into containerd's content store: {content:?}\n{}",
                bed.daemon.log()
            );
        }
        let out = bed.run("lazy", &esgz, "lazy-run", &cmd);
        assert_eq!(out.trim(), expect, "{esgz}");
    }
    let log = bed.daemon.log();
    assert!(
        log.matches("remote layer mounted lazily").count() >= 3,
        "busybox (1 layer) + python (2 layers) should all be lazy:\n{log}"
    );
}

/// The same image pulled in a second containerd namespace finds the layers already mounted
/// ("already exists" from another namespace is success) and runs.
#[test]
fn second_namespace_reuses_the_lazy_layers() {
    let bed = Bed::start("lazy-second-ns");
    let esgz = push_estargz(&bed.containerd, &bed.registry, "busybox:latest");
    bed.rpull("one", &esgz);
    bed.rpull("two", &esgz);
    let content = content_digests(&bed.containerd, "two");
    for l in layer_digests(&bed.containerd, "two", &esgz) {
        assert!(
            !content.contains(&l),
            "layer {l} downloaded in namespace two"
        );
    }
    assert_eq!(bed.run("two", &esgz, "c2", &["echo", "two"]).trim(), "two");
    assert_eq!(
        bed.daemon
            .log()
            .matches("remote layer mounted lazily")
            .count(),
        1,
        "the second namespace must reuse the mounted layer"
    );
}

/// A plain gzip image pulled with rpull falls back to the normal path and still runs.
#[test]
fn non_estargz_layers_fall_back_to_a_normal_pull() {
    let bed = Bed::start("lazy-fallback");
    let plain = bed.registry.image("busybox:latest");
    bed.rpull("plain", &plain);
    assert_eq!(
        bed.run("plain", &plain, "p", &["echo", "plain"]).trim(),
        "plain"
    );
    let log = bed.daemon.log();
    assert!(log.contains("not lazy; pulling normally"), "{log}");
    assert!(!log.contains("remote layer mounted lazily"), "{log}");
}

fn fuse_mounts(bed: &Bed) -> Vec<String> {
    bed.0.fuse_mounts()
}

/// After `kill -9` and after a clean stop, the daemon mounts every remote layer again from its
/// metadata before it accepts calls, and new containers from the image start.
#[test]
fn remote_layers_are_mounted_again_after_a_crash_and_a_restart() {
    let mut bed = Bed::start("lazy-restart");
    let esgz = push_estargz(&bed.containerd, &bed.registry, "python:latest");
    bed.rpull("r", &esgz);
    assert_eq!(fuse_mounts(&bed).len(), 2, "python has two lazy layers");

    bed.daemon.kill9();
    bed.daemon.restart();
    // Daemon::restart returns once the socket accepts calls: the layers must be there already,
    // each mounted once (the dead mounts of the killed daemon detached, not stacked).
    let mounts = fuse_mounts(&bed);
    assert_eq!(
        mounts.len(),
        2,
        "after kill -9: {mounts:?}\n{}",
        bed.daemon.log()
    );
    bed.containerd.wait_reconnected("augur");
    let out = bed.run(
        "r",
        &esgz,
        "after-crash",
        &["python3", "-c", "import json; print(json.dumps([1]))"],
    );
    assert_eq!(out.trim(), "[1]");

    assert!(bed.daemon.stop().is_some_and(|s| s.success()));
    assert!(
        fuse_mounts(&bed).is_empty(),
        "a clean stop unmounts its layers"
    );
    bed.daemon.restart();
    assert_eq!(fuse_mounts(&bed).len(), 2);
    bed.containerd.wait_reconnected("augur");
    let out = bed.run("r", &esgz, "after-stop", &["python3", "-c", "print(6 * 7)"]);
    assert_eq!(out.trim(), "42");
}

/// Removing the image removes its lazy snapshots: their FUSE mounts go away and Cleanup
/// deletes the layers' local data.
#[test]
fn image_removal_unmounts_and_cleans_up_lazy_layers() {
    let bed = Bed::start("lazy-remove");
    let esgz = push_estargz(&bed.containerd, &bed.registry, "busybox:latest");
    bed.rpull("rm", &esgz);
    assert_eq!(fuse_mounts(&bed).len(), 1);
    bed.containerd
        .ctr_ok(&["-n", "rm", "image", "rm", "--sync", &esgz]);
    assert!(fuse_mounts(&bed).is_empty(), "{}", bed.daemon.log());
    let layers = bed.daemon.root().join("layers");
    let left: Vec<_> = std::fs::read_dir(&layers)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        augur_integration_tests::poll(std::time::Duration::from_secs(10), || {
            std::fs::read_dir(&layers).unwrap().next().is_none()
        }),
        "layer data left after image removal + GC cleanup: {left:?}"
    );
}

/// The CRI plugin's label family (`containerd.io/snapshot/cri.*`), sent straight to the daemon
/// as containerd's CRI plugin would send it: the layer is mounted lazily, committed under the
/// chain ID with the remote label, and a view of it shows the image's files.
#[test]
fn cri_labels_mount_a_layer_lazily() {
    use augur_proto::snapshots as pb;
    let bed = Bed::start("lazy-cri");
    let esgz = push_estargz(&bed.containerd, &bed.registry, "busybox:latest");
    // The manifest and config, as the CRI plugin has them when it prepares the layer.
    bed.containerd.ctr_ok(&[
        "-n",
        "meta",
        "image",
        "pull",
        "--plain-http",
        "--snapshotter",
        "native",
        &esgz,
    ]);
    let manifest = augur_integration_tests::lazy::manifest_of(&bed.containerd, "meta", &esgz);
    let layer = &manifest["layers"][0];
    let digest = layer["digest"].as_str().unwrap().to_owned();
    let toc = layer["annotations"]["containerd.io/snapshot/stargz/toc.digest"]
        .as_str()
        .expect("eStargz layer has a TOC digest annotation")
        .to_owned();
    let config = bed.containerd.ctr_ok(&[
        "-n",
        "meta",
        "content",
        "get",
        manifest["config"]["digest"].as_str().unwrap(),
    ]);
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    let chain = config["rootfs"]["diff_ids"][0].as_str().unwrap().to_owned();
    let labels: std::collections::HashMap<String, String> = [
        ("containerd.io/snapshot.ref", chain.as_str()),
        ("containerd.io/snapshot/cri.image-ref", esgz.as_str()),
        ("containerd.io/snapshot/cri.layer-digest", digest.as_str()),
        (
            "containerd.io/snapshot/cri.manifest-digest",
            "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ),
        ("containerd.io/snapshot/cri.image-layers", digest.as_str()),
        ("containerd.io/snapshot/stargz/toc.digest", toc.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = augur_integration_tests::connect(bed.daemon.socket()).await;
        let err = c
            .prepare(pb::PrepareSnapshotRequest {
                snapshotter: String::new(),
                key: format!("k8s.io/1/extract-1 {chain}"),
                parent: String::new(),
                labels: labels.clone(),
            })
            .await
            .expect_err("a lazily mounted layer answers ALREADY_EXISTS");
        assert_eq!(
            err.code(),
            tonic::Code::AlreadyExists,
            "{err:?}\n{}",
            bed.daemon.log()
        );
        let info = c
            .stat(pb::StatSnapshotRequest {
                snapshotter: String::new(),
                key: chain.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .info
            .unwrap();
        assert_eq!(info.kind, pb::Kind::Committed as i32);
        assert_eq!(
            info.labels
                .get("containerd.io/snapshot/remote")
                .map(String::as_str),
            Some("remote snapshot")
        );
        let view = c
            .view(pb::ViewSnapshotRequest {
                snapshotter: String::new(),
                key: "k8s.io/2/view".into(),
                parent: chain.clone(),
                labels: Default::default(),
            })
            .await
            .unwrap()
            .into_inner()
            .mounts;
        // A view of one layer is a read-only bind of its directory: the FUSE mount.
        let source = std::path::PathBuf::from(&view[0].source);
        let busybox = std::fs::read(source.join("bin/busybox")).unwrap();
        assert!(
            busybox.len() > 100_000,
            "bin/busybox read through the lazy layer"
        );
        assert_eq!(&busybox[..4], b"\x7fELF");
    });
}

/// With the registry gone, a read of a file nobody fetched yet fails with EIO once
/// `remote.read_timeout_secs` passes (it does not hang), and the daemon logs it; files already
/// read keep working from local data.
#[test]
fn an_unreachable_registry_gives_the_reader_eio_not_a_hang() {
    let mut bed = Bed::start_with_config(
        "lazy-outage",
        "[remote]\nbackground_fetch = false\nread_timeout_secs = 3\n\n[registry]\nretries = 1\n",
    );
    let esgz = push_estargz(&bed.containerd, &bed.registry, "python:latest");
    bed.rpull("o", &esgz);
    let warm = bed.run("o", &esgz, "warm", &["python3", "-c", "print('warm')"]);
    assert_eq!(warm.trim(), "warm");
    bed.registry.stop();
    // python3 and its startup files are local now; alarm(60) turns a hang into a failure.
    let out = bed.containerd.ctr(&[
        "-n",
        "o",
        "run",
        "--rm",
        "--snapshotter",
        "augur",
        &esgz,
        "cold",
        "python3",
        "-c",
        "import signal; signal.alarm(60); open('/usr/lib/python3.11/turtle.py', 'rb').read()",
    ]);
    let stderr =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "the read cannot succeed without the registry"
    );
    assert!(
        stderr.to_lowercase().contains("input/output error"),
        "expected EIO, got: {stderr}\n{}",
        bed.daemon.log()
    );
    assert!(
        bed.daemon.log().contains("read of a lazy layer failed"),
        "{}",
        bed.daemon.log()
    );
    // What python already read is local.
    let again = bed.run(
        "o",
        &esgz,
        "warm-again",
        &["python3", "-c", "print('still warm')"],
    );
    assert_eq!(again.trim(), "still warm");
}

/// A second daemon started on the same root refuses to start and leaves the first one's lazy
/// mounts alone.
#[test]
fn a_second_daemon_on_the_root_does_not_touch_live_mounts() {
    let bed = Bed::start("lazy-second-daemon");
    let esgz = push_estargz(&bed.containerd, &bed.registry, "busybox:latest");
    bed.rpull("s", &esgz);
    assert_eq!(fuse_mounts(&bed).len(), 1);
    let out = std::process::Command::new(augur_integration_tests::snapshotter_bin())
        .arg("--root")
        .arg(bed.daemon.root())
        .arg("--address")
        .arg(bed.daemon.root().with_file_name("second.sock"))
        .args(["--config", "/dev/null"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a second daemon on one root must refuse"
    );
    assert_eq!(fuse_mounts(&bed).len(), 1, "the live mount must stay");
    assert_eq!(
        bed.run("s", &esgz, "still", &["echo", "still here"]).trim(),
        "still here"
    );
}
