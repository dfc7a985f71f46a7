//! Lazy-pull helpers: eStargz test images made with Debian's `ctr-remote` (the reference
//! producer), and `ctr-remote` itself against a harness containerd.

use std::process::{Command, Stdio};

use crate::{Containerd, Registry, run_ok};

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
    let src = registry.image(name);
    let repo = name.split(':').next().unwrap_or(name);
    let dst = registry.image(&format!("{repo}:esgz"));
    ctd.ctr_ok(&["-n", CONVERT_NS, "image", "pull", "--plain-http", &src]);
    run_ok(&mut ctr_remote(
        ctd,
        &[
            "-n",
            CONVERT_NS,
            "image",
            "convert",
            "--estargz",
            "--oci",
            &src,
            &dst,
        ],
    ));
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
