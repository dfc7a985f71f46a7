//! Images in a test containerd's content store, for the eStargz tests: reading manifests and
//! blobs, converting with Debian's `ctr-remote`, finding the directories containerd unpacked a
//! layer into, and publishing a hand-made OCI image (our own eStargz layer) through the registry.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use augur_snapshotter::estargz::{
    FOOTER_SIZE, Toc, decode_toc, format_digest, parse_footer, sha256,
};
use serde_json::{Value, json};

use crate::{Containerd, run_ok};

/// OCI media types used here.
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// An OCI config blob.
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// A gzip layer (eStargz is one).
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The blob `digest` (`sha256:<hex>`) in containerd's content store.
pub fn blob_path(containerd: &Containerd, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    containerd
        .address()
        .parent()
        .expect("containerd dir")
        .join("root/io.containerd.content.v1.content/blobs/sha256")
        .join(hex)
}

/// The bytes of blob `digest`.
pub fn read_blob(containerd: &Containerd, digest: &str) -> Vec<u8> {
    let path = blob_path(containerd, digest);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Blob `digest` parsed as JSON.
pub fn read_json(containerd: &Containerd, digest: &str) -> Value {
    serde_json::from_slice(&read_blob(containerd, digest)).expect("blob is JSON")
}

/// The manifest of image `reference` (which must point at a manifest, not an index).
pub fn manifest(containerd: &Containerd, reference: &str) -> Value {
    let list = containerd.ctr_ok(&["images", "ls"]);
    let line = list
        .lines()
        .find(|l| l.split_whitespace().next() == Some(reference))
        .unwrap_or_else(|| panic!("image {reference} not in:\n{list}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[1], MANIFEST, "{reference} is not a single manifest");
    read_json(containerd, cols[2])
}

/// `ctr-remote image convert --estargz --oci [extra…] src dst`: the reference eStargz producer.
pub fn convert_estargz(containerd: &Containerd, src: &str, dst: &str, extra: &[&str]) {
    let mut cmd = Command::new("ctr-remote");
    cmd.arg("--address")
        .arg(containerd.address())
        .args(["images", "convert", "--estargz", "--oci"])
        .args(extra)
        .args([src, dst]);
    run_ok(&mut cmd);
}

/// `ctr-remote image get-toc-digest [extra…] digest`: the reference TOC parser on a blob in the
/// content store.
pub fn reference_toc(containerd: &Containerd, layer_digest: &str, extra: &[&str]) -> String {
    let mut cmd = Command::new("ctr-remote");
    cmd.arg("--address")
        .arg(containerd.address())
        .args(["images", "get-toc-digest"])
        .args(extra)
        .arg(layer_digest);
    run_ok(&mut cmd)
}

/// The chain IDs of a config's layers (`rootfs.diff_ids`), bottom first.
pub fn chain_ids(config: &Value) -> Vec<String> {
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .expect("config has rootfs.diff_ids");
    let mut chain: Vec<String> = Vec::new();
    for d in diff_ids {
        let d = d.as_str().expect("diff id is a string");
        let id = match chain.last() {
            None => d.to_owned(),
            Some(parent) => format_digest(&sha256(format!("{parent} {d}").as_bytes())),
        };
        chain.push(id);
    }
    chain
}

/// The directories containerd's overlayfs snapshotter unpacked each layer of an image with this
/// config into, bottom first (the image must have been pulled, i.e. unpacked).
pub fn unpacked_layer_dirs(containerd: &Containerd, config: &Value) -> Vec<PathBuf> {
    chain_ids(config)
        .iter()
        .enumerate()
        .map(|(i, chain)| {
            static VIEWS: AtomicUsize = AtomicUsize::new(0);
            let n = VIEWS.fetch_add(1, Ordering::Relaxed);
            let view = format!("estargz-view-{n}-{i}-{}", &chain[7..19]);
            let out = containerd.ctr_ok(&["snapshots", "view", "--mounts", &view, chain]);
            // Only metadata; containerd's GC may have collected it already (no lease holds it).
            let _ = containerd.ctr(&["snapshots", "rm", &view]);
            top_layer_dir(&serde_json::from_str(&out).expect("mounts JSON"))
        })
        .collect()
}

/// The top layer's directory in a view's mounts: a bind source, or the first overlay lowerdir.
fn top_layer_dir(mounts: &Value) -> PathBuf {
    let m = &mounts[0];
    if m["Type"] == "bind" {
        return PathBuf::from(m["Source"].as_str().expect("bind source"));
    }
    let lower = m["Options"]
        .as_array()
        .expect("mount options")
        .iter()
        .filter_map(Value::as_str)
        .find_map(|o| o.strip_prefix("lowerdir="))
        .expect("overlay has a lowerdir");
    PathBuf::from(lower.split(':').next().expect("one lowerdir"))
}

/// The TOC of the eStargz `blob`, checked against `expected_digest` if given, and its digest.
pub fn read_toc(blob: &[u8], expected_digest: Option<&str>) -> (Toc, String) {
    let tail = &blob[blob.len().saturating_sub(FOOTER_SIZE as usize)..];
    let footer = parse_footer(tail).expect("eStargz footer");
    assert_eq!(footer.footer_size, FOOTER_SIZE, "not the legacy footer");
    let range = footer.toc_range(blob.len() as u64).expect("TOC range");
    decode_toc(
        &blob[range.start as usize..range.end as usize],
        expected_digest,
    )
    .expect("TOC")
}

/// The parts of a TOC that do not depend on compression (offsets do), one line per entry.
pub fn toc_shape(toc: &Toc) -> Vec<String> {
    let clean = |n: &str| {
        n.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect::<Vec<_>>()
            .join("/")
    };
    let mut last_name = String::new();
    toc.entries
        .iter()
        .map(|e| {
            if e.kind != "chunk" {
                last_name = clean(&e.name);
            }
            let link = if e.kind == "hardlink" {
                clean(&e.link_name)
            } else {
                e.link_name.clone()
            };
            format!(
                "{} {} size={} mode={:o} own={}:{} names={}/{} mtime={} link={} dev={},{} \
                 xattrs={:?} digest={} chunk={}+{} {}",
                last_name,
                e.kind,
                e.size,
                e.mode,
                e.uid,
                e.gid,
                e.user_name,
                e.group_name,
                e.modtime,
                link,
                e.dev_major,
                e.dev_minor,
                e.xattrs,
                e.digest,
                e.chunk_offset,
                e.chunk_size,
                e.chunk_digest
            )
        })
        .collect()
}

/// Panics at the first entry where the two TOCs' shapes ([`toc_shape`]) differ.
#[track_caller]
pub fn assert_same_shape(ours: &Toc, reference: &Toc) {
    let (a, b) = (toc_shape(ours), toc_shape(reference));
    if let Some(i) = (0..a.len().min(b.len())).find(|&i| a[i] != b[i]) {
        panic!(
            "TOC entry #{i} differs:\n  ours:      {}\n  reference: {}",
            a[i], b[i]
        );
    }
    assert_eq!(a.len(), b.len(), "number of TOC entries");
}

/// A one-layer OCI image written as an OCI layout directory, ready for `skopeo copy`.
#[derive(Debug)]
pub struct OciLayout {
    dir: PathBuf,
}

impl OciLayout {
    /// Writes `layer` (of `media_type`, with `annotations`) and `config` under `dir`, tagged
    /// `latest`.
    pub fn write(
        dir: &Path,
        layer: &[u8],
        media_type: &str,
        annotations: Value,
        config: &Value,
    ) -> OciLayout {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("layout blobs dir");
        let put = |bytes: &[u8]| {
            let digest = format_digest(&sha256(bytes));
            std::fs::write(blobs.join(&digest[7..]), bytes).expect("write blob");
            json!({"digest": digest, "size": bytes.len()})
        };
        let layer_desc = put(layer);
        let config_desc = put(&serde_json::to_vec(config).expect("config JSON"));
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": config_desc["digest"], "size": config_desc["size"]},
            "layers": [{
                "mediaType": media_type,
                "digest": layer_desc["digest"],
                "size": layer_desc["size"],
                "annotations": annotations,
            }],
        });
        let manifest_desc = put(&serde_json::to_vec(&manifest).expect("manifest JSON"));
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": MANIFEST,
                "digest": manifest_desc["digest"],
                "size": manifest_desc["size"],
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }],
        });
        std::fs::write(dir.join("index.json"), index.to_string()).expect("index.json");
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        OciLayout {
            dir: dir.to_path_buf(),
        }
    }

    /// The layout directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Pushes it to `reference` (`host:port/name:tag`, plain HTTP) with skopeo, blobs unchanged.
    pub fn push(&self, reference: &str) {
        let mut cmd = Command::new("skopeo");
        if !Path::new("/etc/containers/policy.json").exists() {
            cmd.arg("--insecure-policy");
        }
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:latest", self.dir.display()))
            .arg(format!("docker://{reference}"));
        run_ok(&mut cmd);
    }
}
