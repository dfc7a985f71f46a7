//! The filesystem a layer shows: node types, attributes, links, whiteouts, names, and
//! containerd's rules for paths that appear twice.

use std::ffi::OsStr;
use std::time::{Duration, UNIX_EPOCH};

use tar::EntryType;

use super::fixtures::{Layer, MTIME, TarBuilder, small_chunks};
use crate::estargz::*;

fn every_type() -> Layer {
    let long_dir = "deep/".repeat(25);
    let tar = TarBuilder::new()
        .dir("./", 0o755)
        .dir("bin/", 0o755)
        .file("bin/busybox", 0o4755, b"#!busybox")
        .symlink("bin/sh", "busybox")
        .hardlink("bin/ln", "bin/busybox", 0o4755)
        .dir("dev/", 0o755)
        .device("dev/null", EntryType::Char, 1, 3)
        .device("dev/sda", EntryType::Block, 8, 0)
        .fifo("run/initctl")
        .xattrs(&[("user.a", b"1")])
        .dir("etc/", 0o750)
        .xattrs(&[("security.capability", b"\x01\x00\x00\x02\xff")])
        .file("etc/passwd", 0o644, b"root:x:0:0")
        .file("etc/empty", 0o600, b"")
        .dir("tmp/", 0o1777)
        .file(".wh.gone", 0o644, b"")
        .file("etc/.wh.shadow", 0o644, b"")
        .dir("var/", 0o755)
        .file("var/.wh..wh..opq", 0o644, b"")
        .file("var/kept", 0o644, b"kept")
        .file("odd/with space", 0o644, b"1")
        .file("odd/ünïcödé", 0o644, b"2")
        .file("odd/new\nline", 0o644, b"3")
        .file("odd/quote\"back\\slash", 0o644, b"4")
        .file(&format!("{long_dir}file"), 0o644, b"5")
        .symlink("odd/long-link", &"../target/".repeat(20))
        .finish();
    Layer::write(&tar, &small_chunks())
}

#[test]
fn every_node_type_is_indexed() {
    let l = every_type();
    assert!(matches!(
        l.node("bin/busybox").kind,
        NodeKind::File { size: 9, .. }
    ));
    assert_eq!(
        l.node("bin/sh").kind,
        NodeKind::Symlink {
            target: "busybox".into()
        }
    );
    assert_eq!(
        l.node("dev/null").kind,
        NodeKind::CharDev { major: 1, minor: 3 }
    );
    assert_eq!(
        l.node("dev/sda").kind,
        NodeKind::BlockDev { major: 8, minor: 0 }
    );
    assert_eq!(l.node("run/initctl").kind, NodeKind::Fifo);
    assert!(matches!(
        l.node("etc/empty").kind,
        NodeKind::File { size: 0, .. }
    ));
    assert!(l.index.file_chunks(l.find("etc/empty").unwrap()).is_empty());
    assert_eq!(l.read_path("etc/passwd"), b"root:x:0:0");
    assert_eq!(l.read_path("bin/busybox"), b"#!busybox");
    assert_eq!(
        l.ls(""),
        [
            "bin", "deep", "dev", "etc", "gone", "odd", "run", "tmp", "var"
        ]
    );
}

#[test]
fn attributes_follow_the_tar_headers() {
    let l = every_type();
    let busybox = l.node("bin/busybox");
    assert_eq!(busybox.mode, 0o4755);
    assert_eq!((busybox.uid, busybox.gid), (1000, 100));
    assert_eq!(busybox.mtime, UNIX_EPOCH + Duration::from_secs(MTIME));
    assert_eq!(l.node("tmp").mode, 0o1777);
    assert_eq!(l.node("etc").mode, 0o750);
    assert_eq!(l.node("bin/sh").mode, 0o777);
    assert_eq!(l.node("dev/null").mode, 0o660);
    assert_eq!(l.node("").mode, 0o755);
    assert_eq!(l.node("etc").xattrs[OsStr::new("user.a")], b"1");
    assert_eq!(
        l.node("etc/passwd").xattrs[OsStr::new("security.capability")],
        b"\x01\x00\x00\x02\xff"
    );
    assert!(l.node("etc/empty").xattrs.is_empty());
}

#[test]
fn missing_parents_are_implicit_root_owned_0755_dirs() {
    let l = every_type();
    for implicit in ["run", "odd", "deep", "deep/deep"] {
        let n = l.node(implicit);
        assert!(matches!(n.kind, NodeKind::Dir { .. }), "{implicit}");
        assert_eq!((n.mode, n.uid, n.gid, n.mtime), (0o755, 0, 0, UNIX_EPOCH));
    }
}

#[test]
fn hard_links_share_one_node() {
    let l = every_type();
    assert_eq!(l.find("bin/ln"), l.find("bin/busybox"));
    assert_eq!(l.node("bin/busybox").nlink, 2);
    assert_eq!(l.node("etc/passwd").nlink, 1);
    // Directories: 2 + child directories.
    assert_eq!(l.node("").nlink, 2 + 8, "9 children, one (gone) a whiteout");
    assert_eq!(l.node("bin").nlink, 2);
    assert_eq!(l.node("deep").nlink, 3);
}

#[test]
fn whiteouts_become_0_0_char_devices_and_opaque_markers_xattrs() {
    let l = every_type();
    for gone in ["gone", "etc/shadow"] {
        let n = l.node(gone);
        assert_eq!(n.kind, NodeKind::CharDev { major: 0, minor: 0 }, "{gone}");
        assert_eq!((n.mode, n.uid, n.gid), (0, 1000, 100));
    }
    assert_eq!(l.ls("var"), ["kept"]);
    assert_eq!(l.node("var").xattrs[OsStr::new(OPAQUE_XATTR)], b"y");
    assert!(!l.node("etc").xattrs.contains_key(OsStr::new(OPAQUE_XATTR)));
    assert!(l.ls("etc").iter().all(|n| !n.starts_with(".wh.")));
}

#[test]
fn xattrs_are_the_ones_containerd_unpacking_sets() {
    let tar = TarBuilder::new()
        .xattrs(&[("trusted.overlay.opaque", b"y"), ("user.d", b"1")])
        .dir("fake-opaque/", 0o755)
        .file("fake-opaque/kept", 0o644, b"k")
        .xattrs(&[("trusted.overlay.redirect", b"/etc"), ("user.f", b"2")])
        .file("f", 0o644, b"f")
        .xattrs(&[("user.l", b"3"), ("security.selinux", b"s")])
        .symlink("l", "f")
        .xattrs(&[("user.p", b"4")])
        .fifo("p")
        .xattrs(&[("trusted.h", b"5"), ("user.h", b"6")])
        .hardlink("h", "f", 0o644)
        .finish();
    let l = Layer::write(&tar, &small_chunks());
    let names = |path: &str| -> Vec<String> {
        let xattrs = &l.node(path).xattrs;
        xattrs.keys().map(|k| k.to_string_lossy().into()).collect()
    };
    // No trusted.* from the archive: a layer cannot make a directory opaque, or redirect one,
    // by xattr; only the `.wh..wh..opq` marker does.
    assert_eq!(names("fake-opaque"), ["user.d"]);
    assert_eq!(names("f"), ["user.f", "user.h"]);
    // user.* only on regular files and directories; other namespaces stay.
    assert_eq!(names("l"), ["security.selinux"]);
    assert!(names("p").is_empty());
}

#[test]
fn landmark_is_hidden_and_says_no_prefetch() {
    let l = every_type();
    assert!(l.find(NO_PREFETCH_LANDMARK).is_none());
    assert_eq!(l.index.prefetch(), Prefetch::Nothing);
    assert_eq!(l.toc.entries[0].name, NO_PREFETCH_LANDMARK);
}

#[test]
fn odd_names_survive() {
    let l = every_type();
    assert_eq!(
        l.ls("odd"),
        [
            "long-link",
            "new\nline",
            "quote\"back\\slash",
            "with space",
            "ünïcödé"
        ]
    );
    assert_eq!(l.read_path("odd/ünïcödé"), b"2");
    let long = format!("{}file", "deep/".repeat(25));
    let id = l.find(&long).unwrap();
    assert_eq!(l.index.path_of(id), std::path::Path::new("/").join(&long));
    assert_eq!(l.read(id).unwrap(), b"5");
    assert_eq!(
        l.node("odd/long-link").kind,
        NodeKind::Symlink {
            target: "../target/".repeat(20).into()
        }
    );
}

#[test]
fn ids_are_dense_and_parents_come_first() {
    let l = every_type();
    assert_eq!(l.index.path_of(ROOT), std::path::Path::new("/"));
    let root = l.index.node(ROOT);
    assert_eq!((root.parent, root.name.as_os_str()), (ROOT, OsStr::new("")));
    for id in 1..l.index.node_count() as NodeId {
        let n = l.index.node(id);
        assert!(n.parent < id, "node {id} has parent {}", n.parent);
        assert_eq!(l.index.lookup(n.parent, &n.name), Some(id));
    }
    // lookup on a non-directory, or of a missing name.
    let passwd = l.find("etc/passwd").unwrap();
    assert_eq!(l.index.lookup(passwd, OsStr::new("x")), None);
    assert_eq!(l.index.lookup(ROOT, OsStr::new("nope")), None);
    assert!(l.index.file_chunks(ROOT).is_empty());
}

#[test]
fn root_entry_is_ignored_like_containerd_unpacking() {
    let tar = TarBuilder::new()
        .xattrs(&[("user.root", b"r")])
        .dir("./", 0o700)
        .file("f", 0o644, b"f")
        .finish();
    let l = Layer::write(&tar, &small_chunks());
    let root = l.node("");
    // containerd skips `./`; the root is the directory the snapshotter made for the layer.
    assert_eq!(
        (root.mode, root.uid, root.gid, root.mtime),
        (0o755, 0, 0, UNIX_EPOCH)
    );
    assert!(root.xattrs.is_empty());
}

#[test]
fn a_later_entry_replaces_an_earlier_one_like_tar_extraction() {
    let tar = TarBuilder::new()
        .file("f", 0o644, b"first")
        .file("f", 0o600, b"second")
        .xattrs(&[("user.one", b"1")])
        .dir("d/", 0o755)
        .file("d/child", 0o644, b"child")
        .xattrs(&[("user.two", b"2")])
        .dir("d/", 0o700)
        .file("gone/a", 0o644, b"subtree")
        .file("gone", 0o644, b"now a file")
        .finish();
    let l = Layer::write(&tar, &small_chunks());
    assert_eq!(l.read_path("f"), b"second");
    assert_eq!(l.node("f").mode, 0o600);
    // Directory over directory: children stay, attributes are the new ones, xattrs merge.
    assert_eq!(l.ls("d"), ["child"]);
    let d = l.node("d");
    assert_eq!(d.mode, 0o700);
    assert_eq!(d.xattrs.len(), 2);
    // File over directory: the subtree goes.
    assert_eq!(l.read_path("gone"), b"now a file");
    assert_eq!(l.index.node_count(), 5, "root, f, d, d/child, gone");
    let sizes: u64 = ["f", "d/child", "gone"]
        .iter()
        .map(|p| l.read_path(p).len() as u64)
        .sum();
    assert_eq!(
        l.index.data_size(),
        sizes,
        "replaced files' chunks are not kept"
    );
}

#[test]
fn whiteouts_never_hide_entries_of_their_own_layer() {
    let tar = TarBuilder::new()
        .file("kept", 0o644, b"k")
        .file(".wh.kept", 0o644, b"")
        .file(".wh.back", 0o644, b"")
        .file("back", 0o644, b"b")
        .file(".wh.dir", 0o644, b"")
        .file("dir/inside", 0o644, b"i")
        .finish();
    let l = Layer::write(&tar, &small_chunks());
    assert_eq!(l.read_path("kept"), b"k");
    assert_eq!(l.read_path("back"), b"b");
    assert!(matches!(l.node("dir").kind, NodeKind::Dir { .. }));
    assert_eq!(l.read_path("dir/inside"), b"i");
}

#[test]
fn a_hard_link_keeps_the_old_file_when_its_target_path_is_replaced() {
    let tar = TarBuilder::new()
        .file("a", 0o644, b"old")
        .hardlink("b", "a", 0o644)
        .file("a", 0o644, b"new")
        .finish();
    let l = Layer::write(&tar, &small_chunks());
    assert_eq!(l.read_path("a"), b"new");
    assert_eq!(l.read_path("b"), b"old");
    assert_eq!((l.node("a").nlink, l.node("b").nlink), (1, 1));
}

#[test]
fn a_hard_link_header_sets_the_shared_nodes_attributes_as_containerd_does() {
    let tar = TarBuilder::new()
        .file("a", 0o644, b"a")
        .xattrs(&[("user.link", b"l")])
        .hardlink("b", "a", 0o600)
        .finish();
    let l = Layer::write(&tar, &small_chunks());
    let a = l.node("a");
    assert_eq!(
        a.mode, 0o600,
        "containerd chmods the link path, i.e. the shared inode"
    );
    assert_eq!(a.xattrs[OsStr::new("user.link")], b"l");
    assert_eq!(l.find("a"), l.find("b"));
}

#[test]
fn owner_names_do_not_change_ids() {
    let tar = TarBuilder::new()
        .owned_file("a", 7, 8, b"a")
        .owned_file("b", 7, 8, b"b")
        .finish();
    let l = Layer::write(&tar, &small_chunks());
    let a = l.toc.entries.iter().find(|e| e.name == "a").unwrap();
    let b = l.toc.entries.iter().find(|e| e.name == "b").unwrap();
    assert_eq!(
        (a.user_name.as_str(), a.group_name.as_str()),
        ("user7", "group8")
    );
    assert_eq!(
        (b.user_name.as_str(), b.group_name.as_str()),
        ("", ""),
        "only when changed"
    );
    assert_eq!((l.node("b").uid, l.node("b").gid), (7, 8));
}

#[test]
fn implicit_dirs_inherit_a_lower_layers_attributes_like_containerd_unpacking() {
    let lower = TarBuilder::new()
        .xattrs(&[("user.keep", b"k"), ("trusted.skip", b"s")])
        .dir("usr/", 0o700)
        .file("opt", 0o644, b"a file below")
        .dir("var/", 0o750)
        .finish();
    let lower = Layer::write(&lower, &small_chunks());
    let upper = TarBuilder::new()
        .file("usr/lib/x", 0o644, b"x")
        .file("opt/y", 0o644, b"y")
        .file("var/.wh..wh..opq", 0o644, b"")
        .file("var/z", 0o644, b"z")
        .dir("etc/", 0o711)
        .file("etc/conf", 0o644, b"c")
        .finish();
    let mut upper = Layer::write(&upper, &small_chunks());
    let implicit: Vec<String> = upper
        .index
        .implicit_dirs()
        .iter()
        .map(|&id| upper.index.path_of(id).display().to_string())
        .collect();
    assert_eq!(implicit, ["/opt", "/usr", "/var", "/usr/lib"]);
    upper.index.inherit_from(&[&lower.index]);
    let usr = upper.node("usr");
    assert_eq!((usr.mode, usr.uid, usr.gid), (0o700, 1000, 100));
    assert_eq!(usr.mtime, UNIX_EPOCH + Duration::from_secs(MTIME));
    assert_eq!(usr.xattrs.keys().collect::<Vec<_>>(), ["user.keep"]);
    // Not in the lower layer, or not a directory there: the defaults stay.
    for path in ["usr/lib", "opt"] {
        let n = upper.node(path);
        assert_eq!((n.mode, n.uid, n.mtime), (0o755, 0, UNIX_EPOCH), "{path}");
    }
    // An opaque implicit directory keeps its marker and takes the rest.
    let var = upper.node("var");
    assert_eq!(var.mode, 0o750);
    assert_eq!(var.xattrs[OsStr::new(OPAQUE_XATTR)], b"y");
    // Described directories are never touched.
    let etc = upper.find("etc").unwrap();
    upper
        .index
        .inherit_dir_attrs(etc, &DirAttrs::from(lower.node("usr")));
    assert_eq!(upper.node("etc").mode, 0o711);
}
