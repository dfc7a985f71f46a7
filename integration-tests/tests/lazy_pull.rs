//! Lazy pulling end to end: eStargz images made by Debian's `ctr-remote`, pulled with
//! `ctr-remote image rpull --snapshotter augur` through a real containerd from a real registry,
//! then run. The layer blobs must never enter containerd's content store.
//!
//! Needs root, the cached test images (`integration-tests/scripts/images.sh build`) and
//! `ctr-remote` (`integration-tests/scripts/deps.sh`).

use augur_integration_tests::lazy::{content_digests, ctr_remote, layer_digests, push_estargz};
use augur_integration_tests::{Containerd, Daemon, Registry, TestDir, run_ok};

/// Registry with eStargz copies of the test images, Augur, and containerd using it as `augur`.
struct Bed {
    containerd: Containerd,
    daemon: Daemon,
    registry: Registry,
    _dir: TestDir,
}

impl Bed {
    fn start(name: &str) -> Bed {
        let dir = TestDir::new(name);
        let registry = Registry::start(&dir.join("registry"));
        registry.push_test_images();
        let daemon = Daemon::start(
            &dir.join("augur"),
            &dir.join("augur.sock"),
            &dir.join("augur.log"),
        );
        let containerd = Containerd::start(&dir.join("containerd"), &[("augur", daemon.socket())]);
        Bed {
            containerd,
            daemon,
            registry,
            _dir: dir,
        }
    }

    fn rpull(&self, ns: &str, image: &str) {
        run_ok(&mut ctr_remote(
            &self.containerd,
            &[
                "-n",
                ns,
                "image",
                "rpull",
                "--plain-http",
                "--snapshotter",
                "augur",
                image,
            ],
        ));
    }

    fn run(&self, ns: &str, image: &str, id: &str, cmd: &[&str]) -> String {
        let mut args = vec!["-n", ns, "run", "--rm", "--snapshotter", "augur", image, id];
        args.extend_from_slice(cmd);
        let out = self.containerd.ctr(&args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}\n--- augur log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.daemon.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
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

/// FUSE mounts below the daemon's snapshot directory (where lazy layers are mounted).
fn fuse_mounts(bed: &Bed) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let snapshots = bed.daemon.root().join("snapshots");
    let prefix = snapshots.to_string_lossy().into_owned();
    info.lines()
        .filter(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|r| r.starts_with("fuse "))
        })
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
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
