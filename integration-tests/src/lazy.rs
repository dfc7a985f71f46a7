//! Lazy-pull helpers: eStargz test images made with Debian's `ctr-remote` (the reference
//! producer), `ctr-remote` itself against a harness containerd, and [`LazyBed`], the registry +
//! Augur + containerd bed the lazy-pull tests share.

use std::process::{Command, Stdio};

use crate::{Containerd, Daemon, Registry, TestDir, run_ok};

/// The containerd namespace conversions run in (never the one a test pulls into).
const CONVERT_NS: &str = "augur-convert";

/// `ctr-remote --address <socket> args…`.
pub fn ctr_remote(ctd: &Containerd, args: &[&str]) -> Command {
    let mut cmd = Command::new("ctr-remote");
    cmd.arg("--address")
        .arg(ctd.address())
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// Converts `name` (e.g. `busybox:latest`, already in `registry`) to eStargz with
/// `ctr-remote image convert --estargz --oci` and pushes it as `<repo>:esgz`; returns that
/// reference. The conversion namespace is emptied afterwards.
pub fn push_estargz(ctd: &Containerd, registry: &Registry, name: &str) -> String {
    push_estargz_as(ctd, registry, name, "esgz", &[])
}

/// Like [`push_estargz`], pushed as `<repo>:<tag>`, with `extra` conversion flags (e.g.
/// `--estargz-compression-level 1`: other blob bytes, the same chunks).
pub fn push_estargz_as(
    ctd: &Containerd,
    registry: &Registry,
    name: &str,
    tag: &str,
    extra: &[&str],
) -> String {
    let src = registry.image(name);
    let repo = name.split(':').next().unwrap_or(name);
    let dst = registry.image(&format!("{repo}:{tag}"));
    ctd.ctr_ok(&["-n", CONVERT_NS, "image", "pull", "--plain-http", &src]);
    let mut args = vec!["-n", CONVERT_NS, "image", "convert", "--estargz", "--oci"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[&src, &dst]);
    run_ok(&mut ctr_remote(ctd, &args));
    ctd.ctr_ok(&["-n", CONVERT_NS, "image", "push", "--plain-http", &dst]);
    ctd.ctr_ok(&["-n", CONVERT_NS, "image", "rm", "--sync", &src, &dst]);
    dst
}

/// The digests of the layers of `image` in namespace `ns` (from its manifest in the store).
pub fn layer_digests(ctd: &Containerd, ns: &str, image: &str) -> Vec<String> {
    let manifest = manifest_of(ctd, ns, image);
    manifest["layers"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|d| d["digest"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The digests in namespace `ns`'s content store.
pub fn content_digests(ctd: &Containerd, ns: &str) -> Vec<String> {
    ctd.ctr_ok(&["-n", ns, "content", "ls", "-q"])
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The image's manifest (for the host platform) as JSON.
pub fn manifest_of(ctd: &Containerd, ns: &str, image: &str) -> serde_json::Value {
    let listing = ctd.ctr_ok(&["-n", ns, "image", "ls"]);
    let target = listing
        .lines()
        .find(|l| l.split_whitespace().next() == Some(image))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_else(|| panic!("image {image} not in `ctr image ls`:\n{listing}"))
        .to_owned();
    let body = ctd.ctr_ok(&["-n", ns, "content", "get", &target]);
    let doc: serde_json::Value = serde_json::from_str(&body).expect("manifest JSON");
    if doc.get("manifests").is_some() {
        let first = doc["manifests"][0]["digest"]
            .as_str()
            .expect("index entry")
            .to_owned();
        let body = ctd.ctr_ok(&["-n", ns, "content", "get", &first]);
        return serde_json::from_str(&body).expect("manifest JSON");
    }
    doc
}

/// A registry with the test images, Augur, and containerd using it as the proxy snapshotter
/// `augur`: the bed of the lazy-pull tests.
#[derive(Debug)]
pub struct LazyBed {
    /// containerd, with `augur` as a proxy plugin.
    pub containerd: Containerd,
    /// The daemon under test.
    pub daemon: Daemon,
    /// The registry, with `busybox:latest` and `python:latest` pushed.
    pub registry: Registry,
    /// Everything lives below it; unmounted and removed last.
    pub dir: TestDir,
}

impl LazyBed {
    /// A bed named `name` whose daemon has the default config.
    pub fn start(name: &str) -> LazyBed {
        LazyBed::start_with_config(name, "")
    }

    /// A bed whose daemon reads `config` (TOML).
    pub fn start_with_config(name: &str, config: &str) -> LazyBed {
        let dir = TestDir::new(name);
        let registry = Registry::start(&dir.join("registry"));
        registry.push_test_images();
        std::fs::write(
            dir.join("augur.toml"),
            crate::daemon::with_test_cache(config),
        )
        .unwrap();
        let daemon = Daemon::start_with_config(
            &dir.join("augur"),
            &dir.join("augur.sock"),
            &dir.join("augur.log"),
            &dir.join("augur.toml"),
        );
        let containerd = Containerd::start(&dir.join("containerd"), &[("augur", daemon.socket())]);
        LazyBed {
            containerd,
            daemon,
            registry,
            dir,
        }
    }

    /// `ctr-remote image rpull --plain-http --snapshotter augur image` into namespace `ns`.
    pub fn ctr_remote_rpull(&self, ns: &str, image: &str) {
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

    /// `ctr run --rm --snapshotter augur image id cmd…` in namespace `ns`; its stdout.
    pub fn run(&self, ns: &str, image: &str, id: &str, cmd: &[&str]) -> String {
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

    /// The FUSE mounts below the daemon's snapshot directory (where lazy layers are mounted).
    pub fn fuse_mounts(&self) -> Vec<String> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let snapshots = self.daemon.root().join("snapshots");
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
}

/// Declares `struct $name(LazyBed)`, dereferencing to the shared [`LazyBed`], for a test file
/// that adds its own methods (and `Drop`) to the bed: `augur_integration_tests::lazy_bed_newtype!(
/// /// doc
/// Bed);`.
#[macro_export]
macro_rules! lazy_bed_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        struct $name($crate::lazy::LazyBed);

        impl ::std::ops::Deref for $name {
            type Target = $crate::lazy::LazyBed;
            fn deref(&self) -> &$crate::lazy::LazyBed {
                &self.0
            }
        }

        impl ::std::ops::DerefMut for $name {
            fn deref_mut(&mut self) -> &mut $crate::lazy::LazyBed {
                &mut self.0
            }
        }
    };
}
