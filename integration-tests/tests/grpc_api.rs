//! The daemon over its real unix socket, driven by many gRPC clients: error codes and messages
//! for bad input, consistency under concurrent calls, and crash safety under `kill -9`.
//! Needs no containerd and no mounts.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;

use augur_integration_tests::{Daemon, TestDir, connect, list};
use augur_proto::snapshots::{self as pb, snapshots_client::SnapshotsClient};
use tonic::Code;
use tonic::transport::Channel;

type Client = SnapshotsClient<Channel>;

fn start(dir: &TestDir) -> Daemon {
    Daemon::start(
        &dir.join("root"),
        &dir.join("augur.sock"),
        &dir.join("daemon.log"),
    )
}

async fn prepare(
    c: &mut Client,
    key: &str,
    parent: &str,
) -> Result<Vec<augur_proto::Mount>, tonic::Status> {
    let r = pb::PrepareSnapshotRequest {
        key: key.into(),
        parent: parent.into(),
        ..Default::default()
    };
    Ok(c.prepare(r).await?.into_inner().mounts)
}

async fn commit(c: &mut Client, name: &str, key: &str) -> Result<(), tonic::Status> {
    let r = pb::CommitSnapshotRequest {
        name: name.into(),
        key: key.into(),
        ..Default::default()
    };
    c.commit(r).await.map(|_| ())
}

async fn remove(c: &mut Client, key: &str) -> Result<(), tonic::Status> {
    c.remove(pb::RemoveSnapshotRequest {
        key: key.into(),
        ..Default::default()
    })
    .await
    .map(|_| ())
}

fn upper(m: &[augur_proto::Mount]) -> String {
    if m[0].r#type == "bind" {
        return m[0].source.clone();
    }
    m[0].options
        .iter()
        .find_map(|o| o.strip_prefix("upperdir="))
        .expect("upperdir")
        .to_owned()
}

fn numbered_dirs(root: &std::path::Path) -> usize {
    std::fs::read_dir(root.join("snapshots"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .parse::<u64>()
                .is_ok()
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_is_owner_and_group_only() {
    let dir = TestDir::new("grpc-perm");
    let d = start(&dir);
    let mode = std::fs::metadata(d.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode & !0o660,
        0,
        "socket mode {mode:o} grants more than 0660"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_right_codes_and_actionable_messages() {
    let dir = TestDir::new("grpc-errors");
    let d = start(&dir);
    let mut c = connect(d.socket()).await;
    prepare(&mut c, "base-a", "").await.unwrap();
    commit(&mut c, "base", "base-a").await.unwrap();
    prepare(&mut c, "act", "base").await.unwrap();
    c.view(pb::ViewSnapshotRequest {
        key: "vw".into(),
        parent: "base".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    let cases: Vec<(&str, Result<(), tonic::Status>, Code, &str)> = vec![
        (
            "missing parent",
            prepare(&mut c, "x", "nope").await.map(|_| ()),
            Code::NotFound,
            "\"nope\"",
        ),
        (
            "duplicate key",
            prepare(&mut c, "act", "").await.map(|_| ()),
            Code::AlreadyExists,
            "\"act\"",
        ),
        (
            "commit of a view",
            commit(&mut c, "n", "vw").await,
            Code::FailedPrecondition,
            "view",
        ),
        (
            "commit of a committed",
            commit(&mut c, "n", "base").await,
            Code::FailedPrecondition,
            "committed",
        ),
        (
            "commit onto a taken name",
            commit(&mut c, "base", "act").await,
            Code::AlreadyExists,
            "\"base\"",
        ),
        (
            "remove with children",
            remove(&mut c, "base").await,
            Code::FailedPrecondition,
            "remove them first",
        ),
        (
            "remove missing",
            remove(&mut c, "ghost").await,
            Code::NotFound,
            "\"ghost\"",
        ),
        (
            "malformed filter",
            list(&mut c, &["kind=active"]).await.map(|_| ()),
            Code::InvalidArgument,
            "kind=active",
        ),
        (
            "empty key",
            prepare(&mut c, "", "").await.map(|_| ()),
            Code::InvalidArgument,
            "empty",
        ),
        (
            "non-committed parent",
            prepare(&mut c, "y", "act").await.map(|_| ()),
            Code::InvalidArgument,
            "committed",
        ),
    ];
    for (what, got, code, needle) in cases {
        let status = got.expect_err(what);
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(
            status.message().contains(needle),
            "{what}: message {:?} lacks {needle:?}",
            status.message()
        );
    }
    let info = pb::Info {
        name: "base".into(),
        parent: "other".into(),
        ..Default::default()
    };
    let mask = prost_types_mask(&["parent"]);
    let status = c
        .update(pb::UpdateSnapshotRequest {
            info: Some(info),
            update_mask: Some(mask),
            ..Default::default()
        })
        .await
        .expect_err("parent is immutable");
    assert_eq!(status.code(), Code::InvalidArgument);
    // Nothing was half-made by the failures.
    let names: Vec<String> = list(&mut c, &[])
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["act", "base", "vw"]);
}

fn prost_types_mask(paths: &[&str]) -> prost_types::FieldMask {
    prost_types::FieldMask {
        paths: paths.iter().map(|s| s.to_string()).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_update_by_field_path_and_filter_in_list() {
    let dir = TestDir::new("grpc-labels");
    let d = start(&dir);
    let mut c = connect(d.socket()).await;
    let labels: HashMap<String, String> = [("containerd.io/gc.root", "x"), ("l", "1")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    c.prepare(pb::PrepareSnapshotRequest {
        key: "a".into(),
        labels,
        ..Default::default()
    })
    .await
    .unwrap();
    prepare(&mut c, "b", "").await.unwrap();
    let info = pb::Info {
        name: "a".into(),
        labels: [("l".to_string(), "2".to_string())].into(),
        ..Default::default()
    };
    let mask = prost_types_mask(&["labels.l", "labels.gone"]);
    let upd = c
        .update(pb::UpdateSnapshotRequest {
            info: Some(info),
            update_mask: Some(mask),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(upd.labels.get("l").map(String::as_str), Some("2"));
    assert_eq!(
        upd.labels.get("containerd.io/gc.root").map(String::as_str),
        Some("x")
    );
    let hits = list(
        &mut c,
        &[r#"labels."containerd.io/gc.root"==x,labels.l==2"#],
    )
    .await
    .unwrap();
    assert_eq!(
        hits.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    let hits = list(&mut c, &["name==a", "name==b"]).await.unwrap();
    assert_eq!(hits.len(), 2, "filter strings are OR-ed");
}

/// 16 clients on their own connections prepare, commit and remove on shared and private keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_at_once_leave_a_consistent_store() {
    let dir = TestDir::new("grpc-hammer");
    let d = start(&dir);
    let mut c = connect(d.socket()).await;
    prepare(&mut c, "base-a", "").await.unwrap();
    commit(&mut c, "base", "base-a").await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let sock = d.socket().to_path_buf();
        tasks.push(tokio::spawn(async move {
            let mut c = connect(&sock).await;
            let mut ok = 0u32;
            for i in 0..25 {
                let shared = format!("shared-{}", i % 4);
                if prepare(&mut c, &shared, "base").await.is_ok() {
                    ok += 1;
                }
                let _ = commit(&mut c, &format!("committed-{}", i % 3), &shared).await;
                let _ = remove(&mut c, &shared).await;
                let _ = remove(&mut c, &format!("committed-{}", i % 3)).await;
                let mine = format!("c{t}-{i}");
                prepare(&mut c, &mine, "base")
                    .await
                    .expect("private prepare");
                commit(&mut c, &format!("{mine}-done"), &mine)
                    .await
                    .expect("private commit");
                if i % 2 == 0 {
                    remove(&mut c, &format!("{mine}-done"))
                        .await
                        .expect("private remove");
                }
            }
            ok
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = list(&mut c, &[]).await.unwrap();
    for info in &all {
        let st = c
            .stat(pb::StatSnapshotRequest {
                key: info.name.clone(),
                ..Default::default()
            })
            .await;
        assert!(st.is_ok(), "{} listed but not statable", info.name);
    }
    let private_left = all.iter().filter(|i| i.name.ends_with("-done")).count();
    assert_eq!(
        private_left,
        16 * 12,
        "every odd private commit survives, every even one is gone"
    );
    c.cleanup(pb::CleanupRequest::default()).await.unwrap();
    assert_eq!(
        numbered_dirs(d.root()),
        all.len(),
        "one directory per snapshot, no more"
    );
}

/// `kill -9` while clients commit layers; after a restart every committed snapshot is there with
/// its files, and Cleanup leaves exactly one directory per snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_committed_snapshot() {
    let dir = TestDir::new("grpc-crash");
    let mut d = start(&dir);
    let sock = d.socket().to_path_buf();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let sock = sock.clone();
            tokio::spawn(async move {
                let mut c = connect(&sock).await;
                let mut committed = Vec::new();
                for i in 0.. {
                    let key = format!("w{w}-{i}");
                    let Ok(m) = prepare(&mut c, &key, "").await else {
                        break;
                    };
                    let upper = upper(&m);
                    if std::fs::write(format!("{upper}/data"), &key).is_err() {
                        break;
                    }
                    match commit(&mut c, &format!("{key}-c"), &key).await {
                        Ok(()) => committed.push(format!("{key}-c")),
                        Err(_) => break,
                    }
                }
                committed
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    d.kill9();
    let mut acknowledged = Vec::new();
    for w in writers {
        acknowledged.extend(w.await.unwrap());
    }
    assert!(
        acknowledged.len() > 10,
        "load ran ({} commits) before the kill",
        acknowledged.len()
    );
    d.restart();
    let mut c = connect(d.socket()).await;
    let after: HashMap<String, pb::Info> = list(&mut c, &[])
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.name.clone(), i))
        .collect();
    for name in &acknowledged {
        let info = after
            .get(name)
            .unwrap_or_else(|| panic!("acknowledged commit {name} lost"));
        assert_eq!(info.kind, pb::Kind::Committed as i32);
        let key = name.trim_end_matches("-c");
        let m = c
            .view(pb::ViewSnapshotRequest {
                key: format!("{key}-check"),
                parent: name.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .mounts;
        assert_eq!(
            std::fs::read_to_string(format!("{}/data", m[0].source)).unwrap(),
            key,
            "content of {name}"
        );
    }
    c.cleanup(pb::CleanupRequest::default()).await.unwrap();
    assert_eq!(
        numbered_dirs(d.root()),
        list(&mut c, &[]).await.unwrap().len()
    );
    let leftovers = || -> Vec<String> {
        std::fs::read_dir(d.root().join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<u64>().is_err())
            .collect()
    };
    // Trash from before the crash is handed to the reaper at start; it must finish promptly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !leftovers().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        leftovers().is_empty(),
        "temporary dirs left: {:?}",
        leftovers()
    );
}

/// Keys are opaque strings to containerd (`default/4/extract-… sha256:…`); any of them must
/// round-trip through the wire unchanged and never escape the root on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_with_odd_characters_round_trip() {
    let dir = TestDir::new("grpc-keys");
    let d = start(&dir);
    let mut c = connect(d.socket()).await;
    let keys = [
        "default/2/extract-966750942-d3Hf sha256:0123abcd",
        "../../../../etc",
        "line\nbreak\ttab",
        "ünïcødé/ключ/🦀",
        "quote\"and'back\\slash",
        "%2F%00-encoded",
    ];
    for key in keys {
        let m = prepare(&mut c, key, "")
            .await
            .unwrap_or_else(|e| panic!("{key:?}: {e}"));
        assert!(
            m[0].source.starts_with(&d.root().display().to_string()),
            "{key:?} stays under the root"
        );
        let st = c
            .stat(pb::StatSnapshotRequest {
                key: key.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(st.into_inner().info.unwrap().name, key);
    }
    let mut listed: Vec<String> = list(&mut c, &[])
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    let mut want: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    listed.sort();
    want.sort();
    assert_eq!(listed, want);
    for key in keys {
        remove(&mut c, key).await.unwrap();
    }
}

/// A metrics port that cannot be bound stops start-up only when the operator chose it: the
/// default address (127.0.0.1:9464) taken by something else costs the node its metrics, not its
/// containers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_metrics_port_fails_start_only_when_configured() {
    let dir = TestDir::new("grpc-metrics-port");
    // Hold the default port (if something else already holds it, it is taken all the same).
    let _default = std::net::TcpListener::bind("127.0.0.1:9464");
    let config = dir.join("default.toml");
    std::fs::write(&config, augur_integration_tests::TEST_CACHE).unwrap();
    let d = Daemon::start_with_config(
        &dir.join("root-a"),
        &dir.join("a.sock"),
        &dir.join("a.log"),
        &config,
    );
    assert!(
        d.log().contains("no metrics endpoint"),
        "expected a warning about the taken default port:\n{}",
        d.log()
    );
    drop(d);

    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let config = dir.join("explicit.toml");
    let text = format!(
        "{}\n[metrics]\naddress = \"127.0.0.1:{port}\"\n",
        augur_integration_tests::TEST_CACHE
    );
    std::fs::write(&config, text).unwrap();
    let out = std::process::Command::new(augur_integration_tests::snapshotter_bin())
        .arg("--root")
        .arg(dir.join("root-b"))
        .arg("--address")
        .arg(dir.join("b.sock"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a taken port: {stderr}");
    assert!(
        stderr.contains("metrics"),
        "error does not name the key: {stderr}"
    );
    assert!(!dir.join("b.sock").exists(), "socket left behind");
}
