//! eStargz against the reference implementation (Debian's stargz-snapshotter `ctr-remote`) and
//! against what containerd itself unpacks:
//!
//! - blobs `ctr-remote image convert --estargz` makes are opened with our footer/TOC/index code,
//!   every file is read through our chunk API (each chunk digest-checked) and the whole tree is
//!   compared with the directory containerd's overlayfs snapshotter unpacked the same layer into;
//! - blobs our writer makes are parsed by `ctr-remote image get-toc-digest`, pulled and unpacked
//!   by containerd (which checks the diff ID), compared with our index the same way, and
//!   re-converted by `ctr-remote` into the same TOC as the original layer.
//!
//! Needs root, `ctr-remote` (integration-tests/scripts/deps.sh) and the cached test images
//! (integration-tests/scripts/images.sh build).

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::UNIX_EPOCH;

use augur_integration_tests::estargz_images::{
    LAYER_GZIP, OciLayout, assert_same_shape, manifest, read_blob, read_json, read_toc,
    reference_toc, unpacked_layer_dirs,
};
use augur_integration_tests::{Containerd, Registry, TestDir, estargz_images};
use augur_snapshotter::estargz::*;
use serde_json::{Value, json};

/// A registry with the test images and a private containerd (overlayfs, no proxy plugins).
struct Bed {
    containerd: Containerd,
    registry: Registry,
    dir: TestDir,
}

impl Bed {
    fn start(name: &str) -> Bed {
        let dir = TestDir::new(name);
        let registry = Registry::start(&dir.join("registry"));
        registry.push_test_images();
        let containerd = Containerd::start(&dir.join("containerd"), &[]);
        Bed {
            containerd,
            registry,
            dir,
        }
    }

    /// Pulls (and so unpacks with overlayfs) `name` from the test registry; returns its reference.
    fn pull(&self, name: &str) -> String {
        let reference = self.registry.image(name);
        self.containerd
            .ctr_ok(&["images", "pull", "--plain-http", &reference]);
        reference
    }

    fn config(&self, manifest: &Value) -> Value {
        read_json(&self.containerd, digest_of(&manifest["config"]))
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.containerd.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- containerd log (last lines first) ---\n{}",
                tail.join("\n")
            );
        }
    }
}

fn digest_of(desc: &Value) -> &str {
    desc["digest"].as_str().expect("descriptor digest")
}

fn layers(manifest: &Value) -> &Vec<Value> {
    manifest["layers"].as_array().expect("manifest layers")
}

/// One eStargz blob opened the way the lazy-pull path opens it.
struct Opened {
    blob: Vec<u8>,
    toc: Toc,
    toc_digest: String,
    index: LayerIndex,
}

fn open(blob: Vec<u8>, expected_toc_digest: Option<&str>) -> Opened {
    let (toc, toc_digest) = read_toc(&blob, expected_toc_digest);
    let tail = &blob[blob.len().saturating_sub(FOOTER_SIZE as usize)..];
    let footer = parse_footer(tail).expect("eStargz footer");
    let index = LayerIndex::from_toc(&toc, footer.toc_offset).expect("layer index");
    Opened {
        blob,
        toc,
        toc_digest,
        index,
    }
}

impl Opened {
    /// A file's bytes through `inflate_member` + `chunk_bytes`, inflating each member once.
    fn read(&self, id: NodeId, inflated: &mut HashMap<u32, Vec<u8>>) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in self.index.file_chunks(id) {
            let m = self.index.members()[chunk.member as usize];
            let member = inflated.entry(chunk.member).or_insert_with(|| {
                inflate_member(&self.blob[m.offset as usize..m.end as usize]).expect("inflate")
            });
            assert_eq!(chunk.file_offset, out.len() as u64);
            out.extend_from_slice(chunk_bytes(member, chunk).expect("chunk verifies"));
        }
        out
    }

    fn find(&self, path: &str) -> Option<NodeId> {
        path.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .try_fold(ROOT, |dir, name| self.index.lookup(dir, name.as_ref()))
    }

    /// Every regular file the TOC lists (landmarks and whiteouts aside) reads back through the
    /// chunk API with the TOC's whole-file digest. Returns how many files were read.
    fn check_file_digests(&self) -> usize {
        let mut inflated = HashMap::new();
        let mut files = 0;
        for e in self.toc.entries.iter().filter(|e| e.kind == "reg") {
            let base = e.name.rsplit('/').next().unwrap_or_default();
            let at_root = e.name.trim_start_matches("./").trim_start_matches('/');
            let landmark = [PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK].contains(&at_root);
            if base.starts_with(".wh.") || landmark {
                continue;
            }
            let id = self
                .find(&e.name)
                .unwrap_or_else(|| panic!("{} missing", e.name));
            let bytes = self.read(id, &mut inflated);
            assert_eq!(bytes.len() as u64, e.size, "{}", e.name);
            assert_eq!(format_digest(&sha256(&bytes)), e.digest, "{}", e.name);
            files += 1;
        }
        files
    }
}

/// Compares the tree of `dir` (a layer as containerd unpacked it) with `opened`'s index: names,
/// types, modes, owners, mtimes, link counts, link targets, device numbers and file bytes (read
/// through the chunk API). `extra_at_root` are names only the unpacked copy has. Returns the
/// number of entries compared.
fn compare_with_unpacked(opened: &Opened, dir: &Path, extra_at_root: &[&str]) -> usize {
    let mut inflated = HashMap::new();
    let mut compared = 0;
    let mut stack = vec![(dir.to_path_buf(), ROOT)];
    while let Some((path, dir_id)) = stack.pop() {
        let NodeKind::Dir { children } = &opened.index.node(dir_id).kind else {
            panic!("{} is a directory on disk only", path.display());
        };
        let mut on_disk = BTreeSet::new();
        for entry in std::fs::read_dir(&path).expect("read_dir") {
            let name = entry.expect("dir entry").file_name();
            if dir_id == ROOT && extra_at_root.iter().any(|x| name == **x) {
                continue;
            }
            on_disk.insert(name);
        }
        let in_index: BTreeSet<OsString> = children.keys().cloned().collect();
        assert_eq!(on_disk, in_index, "entries of {}", path.display());
        for (name, &id) in children {
            let p = path.join(name);
            compare_node(opened, id, &p, &mut inflated);
            compared += 1;
            if matches!(opened.index.node(id).kind, NodeKind::Dir { .. }) {
                stack.push((p, id));
            }
        }
    }
    compared
}

fn compare_node(opened: &Opened, id: NodeId, p: &Path, inflated: &mut HashMap<u32, Vec<u8>>) {
    let node = opened.index.node(id);
    let md = std::fs::symlink_metadata(p).expect("lstat");
    let what = p.display();
    let ft = md.file_type();
    let whiteout = node.kind == NodeKind::CharDev { major: 0, minor: 0 } && node.mode == 0;
    assert_eq!(md.mode() & 0o7777, node.mode, "mode of {what}");
    assert_eq!(
        (md.uid(), md.gid()),
        (node.uid, node.gid),
        "owner of {what}"
    );
    assert_eq!(u64::from(node.nlink), md.nlink(), "nlink of {what}");
    let implicit = opened.index.implicit_dirs().contains(&id);
    if !whiteout && !implicit {
        // containerd's mknod of a whiteout sets no time, and an implicit directory's mtime is
        // when its last entry was unpacked.
        let mtime = node
            .mtime
            .duration_since(UNIX_EPOCH)
            .expect("mtime")
            .as_secs();
        assert_eq!(md.mtime(), mtime as i64, "mtime of {what}");
    }
    match &node.kind {
        NodeKind::Dir { .. } => assert!(ft.is_dir(), "{what} is a directory in the index"),
        NodeKind::File { size, .. } => {
            assert!(ft.is_file(), "{what} is a file in the index");
            assert_eq!(md.len(), *size, "size of {what}");
            let bytes = opened.read(id, inflated);
            assert!(
                bytes == std::fs::read(p).expect("read"),
                "content of {what}"
            );
        }
        NodeKind::Symlink { target } => {
            assert!(ft.is_symlink(), "{what} is a symlink in the index");
            assert_eq!(
                &std::fs::read_link(p).expect("readlink").into_os_string(),
                target
            );
        }
        NodeKind::CharDev { major, minor } | NodeKind::BlockDev { major, minor } => {
            let is_char = matches!(node.kind, NodeKind::CharDev { .. });
            assert!(if is_char {
                ft.is_char_device()
            } else {
                ft.is_block_device()
            });
            let dev = md.rdev();
            let (maj, min) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
            assert_eq!((maj, min), (u64::from(*major), u64::from(*minor)), "{what}");
        }
        NodeKind::Fifo => assert!(ft.is_fifo(), "{what} is a fifo in the index"),
    }
}

/// The TOC digest annotation of a converted layer.
fn toc_annotation(layer: &Value) -> &str {
    layer["annotations"][TOC_DIGEST_ANNOTATION]
        .as_str()
        .expect("converted layer has the toc.digest annotation")
}

#[test]
fn reference_estargz_layers_read_back_as_containerd_unpacks_them() {
    let bed = Bed::start("estargz-reference");
    let c = &bed.containerd;
    let cases = [
        ("busybox:latest", "esgz/busybox:latest", &[][..]),
        (
            "busybox:latest",
            "esgz/busybox:64k",
            &["--estargz-chunk-size", "65536"][..],
        ),
        ("python:latest", "esgz/python:latest", &[][..]),
    ];
    for (src, dst, extra) in cases {
        let src = bed.pull(src);
        estargz_images::convert_estargz(c, &src, dst, extra);
        let unpacked = unpacked_layer_dirs(c, &bed.config(&manifest(c, &src)));
        let converted = manifest(c, dst);
        assert_eq!(layers(&converted).len(), unpacked.len());
        let mut max_chunks = 0;
        let mut below: Vec<Opened> = Vec::new();
        for (layer, dir) in layers(&converted).iter().zip(&unpacked) {
            assert_eq!(layer["mediaType"], LAYER_GZIP);
            let annotation = toc_annotation(layer);
            let mut opened = open(read_blob(c, digest_of(layer)), Some(annotation));
            let lowers: Vec<&LayerIndex> = below.iter().rev().map(|o| &o.index).collect();
            opened.index.inherit_from(&lowers);
            assert_eq!(opened.toc_digest, annotation);
            assert_eq!(opened.index.prefetch(), Prefetch::Nothing, "{dst}");
            let files = opened.check_file_digests();
            let entries = compare_with_unpacked(&opened, dir, &[]);
            eprintln!(
                "{dst}: {files} files verified, {entries} entries match {}",
                dir.display()
            );
            assert!(files > 0 && entries > files);
            let per_file = (0..opened.index.node_count() as NodeId)
                .map(|id| opened.index.file_chunks(id).len());
            max_chunks = max_chunks.max(per_file.max().unwrap_or(0));
            below.push(opened);
        }
        if dst.ends_with("64k") {
            assert!(
                max_chunks > 10,
                "busybox is cut into 64 KiB chunks ({max_chunks})"
            );
        }
    }
}

#[test]
fn our_estargz_blobs_pass_the_reference_tools() {
    let bed = Bed::start("estargz-ours");
    let c = &bed.containerd;
    let src = bed.pull("busybox:latest");
    estargz_images::convert_estargz(c, &src, "esgz/busybox:latest", &[]);
    let original = manifest(c, &src);
    let reference = manifest(c, "esgz/busybox:latest");
    let reference_layer = &layers(&reference)[0];
    let reference_entries = open(
        read_blob(c, digest_of(reference_layer)),
        Some(toc_annotation(reference_layer)),
    )
    .toc;

    // Our writer on the original (gzip) layer's tar.
    let tar = inflate_member(&read_blob(c, digest_of(&layers(&original)[0]))).expect("gunzip");
    let mut blob = Vec::new();
    let summary = write_estargz(tar.as_slice(), &mut blob, &WriterOptions::default()).unwrap();
    let ours = open(blob.clone(), Some(&summary.toc_digest));
    assert_same_shape(&ours.toc, &reference_entries);
    assert!(ours.check_file_digests() > 0);

    // Publish it as an image: containerd pulls and unpacks it, checking the diff ID.
    let mut config = bed.config(&original);
    config["rootfs"]["diff_ids"] = json!([summary.diff_id]);
    let annotations = json!({
        TOC_DIGEST_ANNOTATION: summary.toc_digest,
        "io.containers.estargz.uncompressed-size": tar.len().to_string(),
    });
    let layout = OciLayout::write(
        &bed.dir.join("ours-layout"),
        &blob,
        LAYER_GZIP,
        annotations,
        &config,
    );
    let ours_ref = bed.registry.image("ours/busybox:latest");
    layout.push(&ours_ref);
    bed.pull("ours/busybox:latest");
    let pulled = manifest(c, &ours_ref);
    assert_eq!(digest_of(&layers(&pulled)[0]), summary.blob_digest);
    let dirs = unpacked_layer_dirs(c, &bed.config(&pulled));
    let extra = [NO_PREFETCH_LANDMARK, TOC_TAR_NAME];
    let entries = compare_with_unpacked(&ours, &dirs[0], &extra);
    assert!(entries > 100, "{entries} entries compared");

    // The reference TOC parser reads our footer and TOC, to the same digest and entries.
    let digest = reference_toc(c, &summary.blob_digest, &[]);
    assert_eq!(digest.trim(), summary.toc_digest);
    let dumped: Toc =
        serde_json::from_str(&reference_toc(c, &summary.blob_digest, &["--dump-toc"]))
            .expect("dumped TOC parses");
    assert_eq!(dumped, ours.toc);

    // And the reference converter, reading our blob as a plain gzip layer, makes the TOC it
    // makes from the original.
    estargz_images::convert_estargz(c, &ours_ref, "esgz/ours:latest", &[]);
    let reconverted = manifest(c, "esgz/ours:latest");
    let layer = &layers(&reconverted)[0];
    let again = open(read_blob(c, digest_of(layer)), Some(toc_annotation(layer)));
    assert_same_shape(&again.toc, &reference_entries);
}
