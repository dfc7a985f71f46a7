use super::*;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("m.db")).unwrap();
    (dir, store)
}

#[test]
fn an_uncommitted_transaction_leaves_no_trace() {
    let (_d, store) = open();
    {
        let mut tx = store.write().unwrap();
        tx.create(Kind::Active, "a", "", Labels::new()).unwrap();
        // dropped without commit, as when the process dies mid-change
    }
    assert!(matches!(
        store.read().unwrap().get_info("a"),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn commit_moves_the_record_and_its_child_link() {
    let (_d, store) = open();
    let mut tx = store.write().unwrap();
    tx.create(Kind::Active, "p0", "", Labels::new()).unwrap();
    tx.commit_active("p0", "p", Some(Usage::default()), Labels::new())
        .unwrap();
    let child = tx.create(Kind::Active, "c0", "p", Labels::new()).unwrap();
    tx.commit_active("c0", "c", Some(Usage { size: 5, inodes: 1 }), Labels::new())
        .unwrap();
    tx.commit().unwrap();
    let r = store.read().unwrap();
    let (pid, _, _) = r.get_info("p").unwrap();
    assert_eq!(child.parent_ids, vec![pid]);
    assert_eq!(r.child_count(pid).unwrap(), 1);
    let (_, info, usage) = r.get_info("c").unwrap();
    assert_eq!((info.parent.as_str(), usage.size), ("p", 5));
    assert!(matches!(r.get_info("c0"), Err(Error::NotFound { .. })));
}

#[test]
fn a_record_from_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    drop(Store::open(&path).unwrap());
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(META).unwrap().insert(SCHEMA, 99).unwrap();
        tx.commit().unwrap();
    }
    let err = Store::open(&path).unwrap_err();
    assert!(err.to_string().contains("99"), "{err}");
}

#[test]
fn a_second_opener_is_told_who_holds_the_store() {
    let (d, _store) = open();
    let err = Store::open(&d.path().join("m.db")).unwrap_err();
    assert!(
        err.to_string().contains("another augur-snapshotter"),
        "{err}"
    );
}
