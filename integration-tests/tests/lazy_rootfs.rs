//! The lazily mounted rootfs is the rootfs containerd unpacks: for busybox, python and the
//! edge-case image (whiteouts, opaque directories, hard links within and across layers,
//! devices, xattrs, odd modes and owners, long names, chunked files), the same eStargz image
//!
//! - pulled lazily through Augur (`ctr-remote image rpull --snapshotter augur`), and
//! - pulled normally with containerd's `overlayfs` snapshotter, as is the original gzip image,
//!
//! is viewed read-only (`ctr snapshots view` of the top chain ID, mounted as the snapshotter
//! describes it: FUSE layers under OverlayFS for Augur), walked and compared path by path: type,
//! mode, owner, size, device numbers, mtime, link count, xattrs, symlink target, content hash,
//! and which paths share an inode (`augur_integration_tests::rootfs` says what is not compared
//! and why). Every regular file is read whole through the lazy mount, with Augur's background
//! fetch off, so the whole image goes through the FUSE read path.
//!
//! The one expected difference: the overlayfs pull of the eStargz image also shows the
//! format's own files, `/stargz.index.json` and `/.no.prefetch.landmark`, which are tar
//! entries of the eStargz blob but not part of the image; the lazy view hides them, as
//! stargz-snapshotter does, and matches the original image (decision 0006).
//!
//! Needs root, `ctr-remote` (`integration-tests/scripts/deps.sh`) and the cached test images
//! (`integration-tests/scripts/images.sh build`).

use std::path::{Path, PathBuf};

use augur_integration_tests::estargz_images::{blob_path, chain_ids};
use augur_integration_tests::lazy::LazyBed;
use augur_integration_tests::lazy::{content_digests, ctr_remote, manifest_of, push_estargz};
use augur_integration_tests::rootfs::{self, Expected, Tree};
use augur_integration_tests::{MountGuard, run_ok};
use serde_json::Value;

/// At most this many differences are printed.
const MAX_REPORTED: usize = 80;

/// The eStargz format's own tar entries, which only an unpacked eStargz layer shows.
const ESTARGZ_METADATA: [&str; 2] = ["/stargz.index.json", "/.no.prefetch.landmark"];

augur_integration_tests::lazy_bed_newtype!(
    /// A registry with the test images, Augur (background fetch off: every byte a test reads goes
    /// through a demand fetch) and a containerd with Augur as `augur`.
    Bed
);

impl Bed {
    fn start(name: &str) -> Bed {
        Bed(LazyBed::start_with_config(
            name,
            "[remote]\nbackground_fetch = false\n",
        ))
    }

    /// Pulls `image` into namespace `ns`: lazily through Augur, or normally (overlayfs).
    fn pull(&self, ns: &str, image: &str, lazy: bool) {
        if lazy {
            let args = ["-n", ns, "image", "rpull", "--plain-http"];
            let args = [&args[..], &["--snapshotter", "augur", image]].concat();
            run_ok(&mut ctr_remote(&self.containerd, &args));
        } else {
            let args = ["-n", ns, "image", "pull", "--plain-http", image];
            self.containerd.ctr_ok(&args);
        }
    }

    /// The config of `image` in namespace `ns`.
    fn config(&self, ns: &str, image: &str) -> Value {
        let manifest = manifest_of(&self.containerd, ns, image);
        let digest = manifest["config"]["digest"]
            .as_str()
            .expect("config digest");
        let body = self
            .containerd
            .ctr_ok(&["-n", ns, "content", "get", digest]);
        serde_json::from_str(&body).expect("config JSON")
    }

    /// A read-only view of `image`'s top snapshot in `ns`, made by `snapshotter` and mounted
    /// under the test dir.
    fn view(&self, ns: &str, snapshotter: &str, image: &str) -> MountGuard {
        let chain = chain_ids(&self.config(ns, image));
        let top = chain.last().expect("image has layers");
        let key = format!("rootfs-view-{ns}");
        let args = ["-n", ns, "snapshots", "--snapshotter", snapshotter];
        let args = [&args[..], &["view", "--mounts", &key, top]].concat();
        let mounts: Value = serde_json::from_str(&self.containerd.ctr_ok(&args))
            .unwrap_or_else(|e| panic!("ctr {args:?}: mounts JSON: {e}"));
        MountGuard::mount_described(&mounts, &self.dir.join(&format!("view-{ns}")))
    }

    /// The content-store paths of `image`'s layer blobs (in `ns`, which pulled them), bottom
    /// first.
    fn layer_blobs(&self, ns: &str, image: &str) -> Vec<PathBuf> {
        let manifest = manifest_of(&self.containerd, ns, image);
        manifest["layers"]
            .as_array()
            .expect("manifest layers")
            .iter()
            .map(|l| blob_path(&self.containerd, l["digest"].as_str().expect("digest")))
            .collect()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.daemon.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- augur log (last lines first) ---\n{}", tail.join("\n"));
        }
    }
}

/// Walks a mounted view, saying how long it took and how much it read.
fn walk(name: &str, view: &Path) -> Tree {
    let start = std::time::Instant::now();
    let tree = rootfs::walk(view);
    eprintln!(
        "{name}: {} paths, {} files read whole ({} bytes) in {:.1?}",
        tree.entries.len(),
        tree.files_read,
        tree.bytes_read,
        start.elapsed()
    );
    tree
}

/// Panics with every difference (capped at [`MAX_REPORTED`]) if there are any.
fn assert_no_differences(what: &str, diffs: &[String]) {
    if diffs.is_empty() {
        return;
    }
    let shown: Vec<&str> = diffs
        .iter()
        .take(MAX_REPORTED)
        .map(String::as_str)
        .collect();
    let more = diffs.len().saturating_sub(MAX_REPORTED);
    panic!(
        "{what}: {} differences\n  {}{}",
        diffs.len(),
        shown.join("\n  "),
        if more > 0 {
            format!("\n  … and {more} more")
        } else {
            String::new()
        }
    );
}

/// The comparison for one test image (`name:latest` in the test registry).
fn lazy_rootfs_is_the_unpacked_rootfs(name: &str) {
    let start = std::time::Instant::now();
    let bed = Bed::start(&format!("rootfs-{name}"));
    let original = bed.registry.image(&format!("{name}:latest"));
    let esgz = push_estargz(&bed.containerd, &bed.registry, &format!("{name}:latest"));
    eprintln!("{name}: bed up, eStargz made: {:.1?}", start.elapsed());
    bed.pull("lazy", &esgz, true);
    assert_every_layer_lazy(&bed, &esgz);
    bed.pull("plain", &esgz, false);
    bed.pull("original", &original, false);
    eprintln!("{name}: pulled 3 ways: {:.1?}", start.elapsed());

    let lazy_view = bed.view("lazy", "augur", &esgz);
    let plain_view = bed.view("plain", "overlayfs", &esgz);
    let original_view = bed.view("original", "overlayfs", &original);
    let lazy = walk("lazy (augur)", lazy_view.path());
    let plain = walk("eStargz (overlayfs)", plain_view.path());
    let orig = walk("original (overlayfs)", original_view.path());
    assert!(lazy.files_read > 0, "nothing read through the lazy mount");

    let unpack_time = |ns: &str, image: &str| {
        rootfs::unpack_time_dirs(&bed.layer_blobs(ns, image)).expect("read layer tars")
    };
    let vs_plain = Expected {
        only_in_b: ESTARGZ_METADATA.iter().map(PathBuf::from).collect(),
        unpack_time_dirs: unpack_time("plain", &esgz),
    };
    let vs_original = Expected {
        only_in_b: Vec::new(),
        unpack_time_dirs: unpack_time("original", &original),
    };
    let mut diffs = rootfs::diff(&lazy, &plain, ("lazy", "overlayfs"), &vs_plain);
    let names = ("lazy", "original image");
    diffs.extend(rootfs::diff(&lazy, &orig, names, &vs_original));
    assert_no_differences(&format!("{name}: lazy rootfs vs unpacked"), &diffs);
    eprintln!(
        "{name}: identical ({} paths, {} hard-link groups; mtime of {} unpack-time dirs not \
         compared); {:.1?} in all",
        lazy.entries.len(),
        lazy.hard_links.len(),
        vs_plain.unpack_time_dirs.len(),
        start.elapsed()
    );
    if name == "edgecases" {
        assert_edge_cases_present(&lazy);
    }
}

/// None of `esgz`'s layer blobs entered the content store of namespace `lazy`: every layer was
/// mounted lazily, so the comparison is of FUSE layers and not of a fallback pull.
fn assert_every_layer_lazy(bed: &Bed, esgz: &str) {
    let in_store = content_digests(&bed.containerd, "lazy");
    let manifest = manifest_of(&bed.containerd, "lazy", esgz);
    for layer in manifest["layers"].as_array().expect("layers") {
        let digest = layer["digest"].as_str().expect("digest");
        assert!(
            !in_store.iter().any(|d| d == digest),
            "layer {digest} of {esgz} was pulled normally, not lazily:\n{}",
            bed.daemon.log()
        );
    }
}

/// The edge cases `images.sh` put into the image are really in the rootfs (identical views
/// would also pass if the image had lost them).
fn assert_edge_cases_present(t: &Tree) {
    let get = |p: &str| {
        t.entries
            .get(Path::new(p))
            .unwrap_or_else(|| panic!("{p} missing from the edgecases rootfs"))
    };
    let absent = |p: &str| assert!(!t.entries.contains_key(Path::new(p)), "{p} present");
    let group = |paths: &[&str]| {
        let g: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
        assert!(t.hard_links.contains(&g), "{g:?} not one inode");
    };
    // Whiteouts (file, directory, a file recreated later), opaque directories.
    for gone in [
        "/data/gone",
        "/data/gonedir",
        "/links/partial2",
        "/opq/old1",
        "/opq/l2",
    ] {
        absent(gone);
    }
    absent("/opq2/a");
    assert_eq!(get("/data/phoenix").size, Some(10));
    for kept in ["/opq/fresh", "/opq/sub/new3", "/opq2/c"] {
        get(kept);
    }
    assert_eq!((get("/opq").mode, get("/opq").uid), (0o750, 7));
    assert_eq!(
        get("/opq2").xattrs.len(),
        1,
        "user.tag, copied up from layer 1"
    );
    assert_eq!(get("/data/dir2file").kind, rootfs::Kind::File);
    assert_eq!(get("/data/file2dir").kind, rootfs::Kind::Dir);
    // Hard links within a layer, and to a file of an earlier layer.
    group(&["/links/hl1", "/links/orig", "/links/sub/hl2"]);
    group(&["/links/base", "/links/cross"]);
    assert_eq!(
        get("/links/partial").nlink,
        1,
        "layer 2 re-emits it once partial2 is gone"
    );
    // Devices, modes, owners, xattrs, chunked files.
    assert_eq!(get("/dev/bignum").rdev, Some((511, 65536)));
    assert_eq!(get("/dev/fifo").kind, rootfs::Kind::Fifo);
    assert_eq!(get("/modes/all").mode, 0o7777);
    assert_eq!(get("/modes/sticky").mode, 0o1777);
    assert_eq!(
        (get("/own/big").uid, get("/own/big").gid),
        (100_000, 200_000)
    );
    assert!(
        get("/x/cap")
            .xattrs
            .contains_key(std::ffi::OsStr::new("security.capability"))
    );
    assert_eq!(get("/big/blob").size, Some(9_449_529), "three 4 MiB chunks");
    assert_eq!(
        get("/sym/dangling").target,
        Some(PathBuf::from("/no/such/target"))
    );
    assert_eq!(get("/").mode, 0o755, "`./` entries are skipped");
}

#[test]
fn busybox_lazy_rootfs_is_the_unpacked_rootfs() {
    lazy_rootfs_is_the_unpacked_rootfs("busybox");
}

#[test]
fn python_lazy_rootfs_is_the_unpacked_rootfs() {
    lazy_rootfs_is_the_unpacked_rootfs("python");
}

#[test]
fn edge_case_lazy_rootfs_is_the_unpacked_rootfs() {
    lazy_rootfs_is_the_unpacked_rootfs("edgecases");
}
