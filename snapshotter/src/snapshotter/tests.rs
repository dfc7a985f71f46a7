use std::collections::HashSet;
use std::sync::Arc;

use super::*;

fn open() -> (tempfile::TempDir, Snapshotter) {
    let dir = tempfile::tempdir().unwrap();
    let sn = Snapshotter::open(dir.path()).unwrap();
    (dir, sn)
}

fn code<T: std::fmt::Debug>(r: Result<T>) -> tonic::Code {
    r.expect_err("operation should fail").code()
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Prepares `key` on `parent`, writes `file`, commits as `name`.
fn layer(sn: &Snapshotter, name: &str, parent: &str, file: &str) {
    let key = format!("{name}-active");
    let m = sn.prepare(&key, parent, Labels::new()).unwrap();
    let upper = if m[0].kind == "bind" {
        m[0].source.clone()
    } else {
        m[0].options
            .iter()
            .find_map(|o| o.strip_prefix("upperdir="))
            .unwrap()
            .to_owned()
    };
    fs::write(Path::new(&upper).join(file), name).unwrap();
    sn.commit(name, &key, Labels::new()).unwrap();
}

#[test]
fn prepare_commit_view_remove_round_trip() {
    let (_d, sn) = open();
    layer(&sn, "base", "", "a");
    layer(&sn, "top", "base", "b");
    let m = sn.view("v", "top", Labels::new()).unwrap();
    assert_eq!(m[0].kind, "overlay");
    assert!(m[0].options.iter().all(|o| !o.starts_with("upperdir")));
    let info = sn.stat("top").unwrap();
    assert_eq!((info.kind, info.parent.as_str()), (Kind::Committed, "base"));
    assert!(sn.usage("top").unwrap().inodes >= 2, "fs dir and file b");
    sn.remove("v").unwrap();
    sn.remove("top").unwrap();
    sn.remove("base").unwrap();
    assert!(sn.list(&[]).unwrap().is_empty());
}

#[test]
fn errors_carry_the_codes_containerd_expects() {
    use tonic::Code;
    let (_d, sn) = open();
    layer(&sn, "base", "", "a");
    sn.prepare("act", "base", Labels::new()).unwrap();
    sn.view("vw", "base", Labels::new()).unwrap();
    assert_eq!(
        code(sn.prepare("x", "missing", Labels::new())),
        Code::NotFound
    );
    assert_eq!(code(sn.stat("missing")), Code::NotFound);
    assert_eq!(code(sn.remove("missing")), Code::NotFound);
    assert_eq!(code(sn.mounts("missing")), Code::NotFound);
    assert_eq!(
        code(sn.commit("n", "missing", Labels::new())),
        Code::NotFound
    );
    assert_eq!(
        code(sn.prepare("act", "", Labels::new())),
        Code::AlreadyExists
    );
    assert_eq!(
        code(sn.prepare("base", "", Labels::new())),
        Code::AlreadyExists
    );
    assert_eq!(
        code(sn.commit("base", "act", Labels::new())),
        Code::AlreadyExists
    );
    assert_eq!(
        code(sn.commit("n", "vw", Labels::new())),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(sn.commit("n", "base", Labels::new())),
        Code::FailedPrecondition
    );
    assert_eq!(code(sn.mounts("base")), Code::FailedPrecondition);
    assert_eq!(code(sn.remove("base")), Code::FailedPrecondition);
    assert_eq!(
        code(sn.prepare("y", "act", Labels::new())),
        Code::InvalidArgument
    );
    assert_eq!(
        code(sn.prepare("", "", Labels::new())),
        Code::InvalidArgument
    );
    assert_eq!(
        code(sn.list(&["kind=active".to_owned()])),
        Code::InvalidArgument
    );
    let big = labels(&[("k", &"v".repeat(MAX_LABEL_BYTES))]);
    assert_eq!(code(sn.prepare("z", "", big)), Code::InvalidArgument);
    assert_eq!(
        code(sn.update("base", &Labels::new(), &["parent".into()])),
        Code::InvalidArgument
    );
    // Nothing failed half-way: exactly the three snapshots made above exist.
    let names: Vec<String> = sn.list(&[]).unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["act", "base", "vw"]);
}

#[test]
fn messages_name_the_snapshot_and_say_what_to_do() {
    let (_d, sn) = open();
    layer(&sn, "base", "", "a");
    sn.prepare("child", "base", Labels::new()).unwrap();
    let msg = sn.remove("base").unwrap_err().to_string();
    assert!(
        msg.contains("\"base\"") && msg.contains("remove them first"),
        "{msg}"
    );
    let msg = sn
        .prepare("x", "nope", Labels::new())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("\"nope\""), "{msg}");
}

#[test]
fn keys_with_odd_characters_are_plain_names() {
    let (_d, sn) = open();
    let odd = [
        "default/2/extract-123 sha256:abc",
        "../../etc/passwd",
        "with\nnewline",
        "ключ/ünïcødé/🦀",
        "tab\there",
        "a\"quote'",
    ];
    for key in odd {
        sn.prepare(key, "", Labels::new()).unwrap();
        assert_eq!(sn.stat(key).unwrap().name, key);
        let m = sn.mounts(key).unwrap();
        assert!(
            m[0].source
                .starts_with(&sn.snapshots_dir.display().to_string()),
            "{key:?} stays inside the root"
        );
    }
    let listed: HashSet<String> = sn.list(&[]).unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(listed, odd.iter().map(|s| s.to_string()).collect());
    for key in odd {
        sn.remove(key).unwrap();
    }
}

#[test]
fn update_follows_containerd_field_paths() {
    let (_d, sn) = open();
    sn.prepare("a", "", labels(&[("l1", "v1"), ("l2", "v2")]))
        .unwrap();
    let created = sn.stat("a").unwrap().created;
    let upd = labels(&[("l1", "new"), ("l3", "v3")]);
    let i = sn
        .update("a", &upd, &["labels.l1".into(), "labels.l2".into()])
        .unwrap();
    assert_eq!(
        i.labels,
        labels(&[("l1", "new")]),
        "l2 deleted, l3 not named"
    );
    assert_eq!(i.created, created);
    assert!(i.updated >= created);
    let i = sn.update("a", &upd, &[]).unwrap();
    assert_eq!(i.labels, upd, "empty field paths replace all labels");
}

#[test]
fn ids_are_never_reused_and_state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let sn = Snapshotter::open(dir.path()).unwrap();
        layer(&sn, "base", "", "a");
        sn.prepare("gone", "", Labels::new()).unwrap();
        sn.remove("gone").unwrap();
    }
    let sn = Snapshotter::open(dir.path()).unwrap();
    let (base_id, info, _) = sn.store.read().unwrap().get_info("base").unwrap();
    assert_eq!(info.kind, Kind::Committed);
    assert_eq!(
        fs::read_to_string(sn.layout.fs(base_id).join("a")).unwrap(),
        "base"
    );
    sn.prepare("new", "", Labels::new()).unwrap();
    let (new_id, _, _) = sn.store.read().unwrap().get_info("new").unwrap();
    assert!(
        new_id > base_id + 1,
        "the removed snapshot's id is not reused"
    );
}

#[test]
fn cleanup_removes_only_unreferenced_directories() {
    let (_d, sn) = open();
    layer(&sn, "base", "", "a");
    fs::create_dir_all(sn.snapshots_dir.join("999/fs")).unwrap();
    fs::create_dir_all(sn.snapshots_dir.join("new-1-1/fs")).unwrap();
    fs::create_dir_all(sn.snapshots_dir.join("stray")).unwrap();
    assert_eq!(sn.cleanup().unwrap().removed_dirs, 3);
    let (id, _, _) = sn.store.read().unwrap().get_info("base").unwrap();
    let left: Vec<String> = fs::read_dir(&sn.snapshots_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, [id.to_string()]);
    assert_eq!(sn.cleanup().unwrap().removed_dirs, 0);
}

#[test]
fn open_sweeps_interrupted_prepares_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    drop(Snapshotter::open(dir.path()).unwrap());
    fs::create_dir_all(dir.path().join("snapshots/new-42-0/fs")).unwrap();
    fs::create_dir_all(dir.path().join("snapshots/trash-7/fs")).unwrap();
    let sn = Snapshotter::open(dir.path()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fs::read_dir(&sn.snapshots_dir).unwrap().count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the reaper deletes the leftovers"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A crash between Prepare's rename and its commit leaves `snapshots/<id>` for an id that was
/// never committed; the next Prepare gets the same id and must still succeed.
#[test]
fn a_leftover_of_an_uncommitted_id_does_not_block_prepare() {
    let (_d, sn) = open();
    sn.prepare("first", "", Labels::new()).unwrap();
    let (id, _, _) = sn.store.read().unwrap().get_info("first").unwrap();
    fs::create_dir_all(sn.layout.fs(id + 1)).unwrap();
    fs::write(sn.layout.fs(id + 1).join("debris"), "x").unwrap();
    sn.prepare("second", "", Labels::new()).unwrap();
    let (id2, _, _) = sn.store.read().unwrap().get_info("second").unwrap();
    assert_eq!(id2, id + 1);
    assert!(
        !sn.layout.fs(id2).join("debris").exists(),
        "the new snapshot starts empty"
    );
}

/// Many threads prepare, commit and remove on shared and private keys at once; afterwards the
/// store and the directories agree exactly.
#[test]
fn concurrent_operations_leave_store_and_disk_consistent() {
    let (_d, sn) = open();
    let sn = Arc::new(sn);
    layer(&sn, "base", "", "a");
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let sn = Arc::clone(&sn);
            std::thread::spawn(move || {
                for i in 0..40 {
                    let shared = format!("shared-{}", i % 5);
                    let _ = sn.prepare(&shared, "base", Labels::new());
                    let _ = sn.commit(&format!("c-{}", i % 3), &shared, Labels::new());
                    let _ = sn.remove(&shared);
                    let mine = format!("t{t}-{i}");
                    sn.prepare(&mine, "base", Labels::new()).unwrap();
                    if i % 2 == 0 {
                        sn.commit(&format!("{mine}-c"), &mine, Labels::new())
                            .unwrap();
                        sn.remove(&format!("{mine}-c")).unwrap();
                    } else {
                        sn.remove(&mine).unwrap();
                    }
                    let _ = sn.remove(&format!("c-{}", i % 3));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    sn.cleanup().unwrap();
    let ids = sn.store.read().unwrap().id_map().unwrap();
    let dirs: HashSet<u64> = fs::read_dir(&sn.snapshots_dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_string_lossy().parse().ok())
        .collect();
    let (base_id, _, _) = sn.store.read().unwrap().get_info("base").unwrap();
    assert_eq!(
        dirs,
        ids.keys().copied().collect(),
        "every record has a dir and every dir a record"
    );
    let kids = sn.store.read().unwrap().child_count(base_id).unwrap();
    assert_eq!(
        kids,
        ids.len() - 1,
        "the children index counts exactly the live children of base"
    );
}

#[test]
fn implicit_dirs_copy_up_every_xattr_but_trusted_ones() {
    let dir = tempfile::tempdir().unwrap();
    xattr::set(dir.path(), "user.tag", b"\x00kept").unwrap();
    // Only root may set trusted.* (and a filesystem may not take user.*): test what we can.
    let root = xattr::set(dir.path(), "trusted.skip", b"s").is_ok();
    let copied = copied_up_xattrs(dir.path());
    assert_eq!(
        copied.get("user.tag").map(Vec::as_slice),
        Some(&b"\x00kept"[..])
    );
    assert_eq!(copied.len(), 1, "{copied:?} (trusted.* set: {root})");
}

/// A large commit answers before it is measured; the usage is right whenever it is asked for,
/// and the `augur-usage` thread records it shortly after. A small one is measured inline.
#[test]
fn usage_of_a_fresh_commit_is_right_before_and_after_it_is_recorded() {
    let (_d, sn) = open();
    let m = sn.prepare("big-active", "", Labels::new()).unwrap();
    for i in 0..50 {
        fs::write(
            Path::new(&m[0].source).join(format!("f{i}")),
            vec![7u8; 5000],
        )
        .unwrap();
    }
    sn.commit("big", "big-active", Labels::new()).unwrap();
    let now = sn.usage("big").unwrap();
    assert_eq!(now.inodes, 51, "the directory and its 50 files");
    assert!(now.size >= 50 * 5000);
    let recorded = (0..500).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        !sn.store.read().unwrap().usage_pending("big").unwrap()
    });
    assert!(recorded, "the usage thread records it");
    assert_eq!(sn.store.read().unwrap().get_info("big").unwrap().2, now);
    assert_eq!(sn.usage("big").unwrap(), now);
    layer(&sn, "small", "", "a");
    assert!(
        !sn.store.read().unwrap().usage_pending("small").unwrap(),
        "measured inside Commit"
    );
}

/// A commit whose usage was still pending when the daemon stopped is measured at the next start.
#[test]
fn usage_left_pending_by_a_crash_is_measured_at_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let sn = Snapshotter::open(dir.path()).unwrap();
        layer(&sn, "base", "", "a");
        let measured = (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            !sn.store.read().unwrap().usage_pending("base").unwrap()
        });
        assert!(measured);
        // What a kill between the commit and the measurement leaves.
        let mut tx = sn.store.write().unwrap();
        tx.mark_usage_pending_for_test("base").unwrap();
        tx.commit().unwrap();
    }
    let sn = Snapshotter::open(dir.path()).unwrap();
    let recorded = (0..500).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        !sn.store.read().unwrap().usage_pending("base").unwrap()
    });
    assert!(recorded, "measured after the restart");
    assert_eq!(
        sn.store.read().unwrap().get_info("base").unwrap().2.inodes,
        2
    );
}
