//! End to end with Debian's containerd and runc, a real registry and images built from Debian
//! packages: pull and run through Augur, every `ctr snapshots` subcommand, and `kill -9` of the
//! daemon in the middle of a pull and of a running container's writes.
//!
//! Needs root and the cached test images (`integration-tests/scripts/images.sh build`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use augur_integration_tests::lazy::LazyBed;
use augur_integration_tests::{connect, list, mounts_under, poll, wait_until};
use augur_proto::snapshots as pb;

augur_integration_tests::lazy_bed_newtype!(
    /// Registry with the test images, Augur, and containerd using Augur as proxy plugin `augur`.
    Bed
);

impl Bed {
    fn start(name: &str) -> Bed {
        Bed(LazyBed::start(name))
    }

    fn ctr(&self, args: &[&str]) -> String {
        self.containerd.ctr_ok(args)
    }

    fn pull(&self, image: &str) {
        let r = self.registry.image(image);
        self.ctr(&[
            "image",
            "pull",
            "--plain-http",
            "--snapshotter",
            "augur",
            &r,
        ]);
    }

    fn run(&self, image: &str, id: &str, cmd: &[&str]) -> String {
        let r = self.registry.image(image);
        let mut args = vec!["run", "--rm", "--snapshotter", "augur", &r, id];
        args.extend_from_slice(cmd);
        self.ctr(&args)
    }

    /// Mounts what `ctr snapshots mounts` prints for `key` on `target`.
    fn mount(&self, key: &str, target: &Path) {
        std::fs::create_dir_all(target).unwrap();
        let cmd = self.ctr(&[
            "snapshots",
            "--snapshotter",
            "augur",
            "mounts",
            &target.display().to_string(),
            key,
        ]);
        let out = Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits until containerd's connection to the restarted daemon works again (its gRPC client
    /// reconnects with backoff): a Prepare+Remove must reach the daemon.
    fn wait_reconnected(&self) {
        self.containerd.wait_reconnected("augur");
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- augur log ---\n{}", tail(&self.daemon.log()));
            eprintln!("--- containerd log ---\n{}", tail(&self.containerd.log()));
        }
    }
}

fn tail(s: &str) -> String {
    s.lines()
        .rev()
        .take(60)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n")
}

fn umount(target: &Path) {
    nix::mount::umount2(target, nix::mount::MntFlags::empty()).expect("umount");
}

#[test]
fn pull_and_run_busybox_and_python_through_augur() {
    let bed = Bed::start("e2e-run");
    bed.pull("busybox:latest");
    assert_eq!(
        bed.run("busybox:latest", "bb", &["echo", "hi from busybox"])
            .trim(),
        "hi from busybox"
    );
    bed.pull("python:latest");
    let out = bed.run(
        "python:latest",
        "py",
        &[
            "python3",
            "-c",
            "import json,sys; print(json.dumps({'py': sys.version_info[0]}))",
        ],
    );
    assert_eq!(out.trim(), r#"{"py": 3}"#);
    // The layers live in Augur: three committed snapshots (busybox 1 layer, python 2).
    let ls = bed.ctr(&["snapshots", "--snapshotter", "augur", "ls"]);
    assert_eq!(
        ls.lines().filter(|l| l.contains("Committed")).count(),
        3,
        "{ls}"
    );
    assert!(
        mounts_under(bed.daemon.root()).is_empty(),
        "containers gone, nothing mounted"
    );
}

/// Lets containerd's first garbage collection pass: its GC scheduler runs once 100 ms after
/// start (`startup_delay`; later runs wait for 100 mutations, more than a test makes), and
/// `ctr snapshots prepare|view` give their snapshots no GC root, so one made before that run
/// can be collected under the test (seen once in CI: `view v`, then `mounts v`: "snapshot v
/// does not exist"). A run with nothing to collect leaves no trace to wait for, hence a sleep.
fn let_the_startup_gc_pass() {
    std::thread::sleep(Duration::from_millis(500));
}

#[test]
fn every_ctr_snapshots_subcommand_works() {
    let bed = Bed::start("e2e-ctr");
    let_the_startup_gc_pass();
    let sn = |args: &[&str]| {
        let mut a = vec!["snapshots", "--snapshotter", "augur"];
        a.extend_from_slice(args);
        bed.ctr(&a)
    };
    let mnt = bed.dir.join("mnt");
    let printed = sn(&["prepare", "--mounts", "base-active"]);
    assert!(
        printed.contains("rbind"),
        "prepare --mounts prints the bind mount: {printed}"
    );
    bed.mount("base-active", &mnt);
    std::fs::write(mnt.join("hello"), "from base").unwrap();
    umount(&mnt);
    sn(&["commit", "base", "base-active"]);
    sn(&["prepare", "child-active", "base"]);
    bed.mount("child-active", &mnt);
    assert_eq!(
        std::fs::read_to_string(mnt.join("hello")).unwrap(),
        "from base",
        "lower visible in overlay"
    );
    std::fs::write(mnt.join("second"), "from child").unwrap();
    umount(&mnt);
    sn(&["commit", "child", "child-active"]);
    sn(&["view", "v", "child"]);
    bed.mount("v", &mnt);
    assert_eq!(
        std::fs::read_to_string(mnt.join("second")).unwrap(),
        "from child"
    );
    assert!(
        std::fs::write(mnt.join("nope"), "x").is_err(),
        "a view is read-only"
    );
    umount(&mnt);

    let ls = sn(&["ls"]);
    for (key, kind) in [("base", "Committed"), ("child", "Committed"), ("v", "View")] {
        assert!(
            ls.lines().any(|l| l.starts_with(key) && l.contains(kind)),
            "ls shows {key} {kind}:\n{ls}"
        );
    }
    let info = sn(&["info", "child"]);
    assert!(
        info.contains("\"Parent\": \"base\"") && info.contains("\"Kind\": \"Committed\""),
        "{info}"
    );
    sn(&["label", "child", "team=storage"]);
    assert!(sn(&["info", "child"]).contains("\"team\": \"storage\""));
    let usage = sn(&["usage", "-b", "base"]);
    assert!(
        usage.lines().nth(1).is_some_and(|l| l.starts_with("base")),
        "{usage}"
    );
    let tree = sn(&["tree"]);
    let (b, c) = (tree.find("base").unwrap(), tree.find("child").unwrap());
    assert!(
        b < c && tree.contains("\\_ child"),
        "tree nests child under base:\n{tree}"
    );
    let rm_parent = bed
        .containerd
        .ctr(&["snapshots", "--snapshotter", "augur", "rm", "base"]);
    assert!(!rm_parent.status.success());
    // containerd's metadata layer refuses this itself, before asking the snapshotter.
    let err = String::from_utf8_lossy(&rm_parent.stderr);
    assert!(
        err.contains("child") && err.contains("failed precondition"),
        "{err}"
    );
    sn(&["rm", "v"]);
    sn(&["rm", "child"]);
    sn(&["rm", "base"]);
    assert_eq!(sn(&["ls"]).lines().count(), 1, "only the header is left");
}

/// Snapshot names Augur holds, via its own gRPC API.
async fn augur_snapshots(sock: &Path) -> Vec<pb::Info> {
    list(&mut connect(sock).await, &[]).await.unwrap()
}

fn numbered_dirs(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// After Cleanup (what containerd calls after its GC), directories and records agree exactly.
fn assert_disk_matches_store(bed: &Bed, rt: &tokio::runtime::Runtime) {
    let sock = bed.daemon.socket().to_path_buf();
    rt.block_on(async {
        connect(&sock)
            .await
            .cleanup(pb::CleanupRequest::default())
            .await
            .unwrap();
    });
    let snaps = rt.block_on(augur_snapshots(&sock));
    // Removed snapshots' trash-* dirs belong to the reaper; it must finish them promptly.
    wait_until(
        "the reaper to empty the trash",
        Duration::from_secs(30),
        || {
            numbered_dirs(bed.daemon.root())
                .iter()
                .all(|d| d.parse::<u64>().is_ok())
        },
    );
    let dirs = numbered_dirs(bed.daemon.root());
    assert_eq!(
        dirs.len(),
        snaps.len(),
        "one dir per snapshot: dirs {dirs:?}"
    );
    assert!(
        dirs.iter().all(|d| d.parse::<u64>().is_ok()),
        "no temp dirs: {dirs:?}"
    );
}

#[test]
fn kill_9_mid_pull_keeps_committed_layers_and_cleans_the_rest() {
    let mut bed = Bed::start("e2e-crash-pull");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let image = bed.registry.image("python:latest");
    let mut pull = bed
        .containerd
        .command(&[
            "image",
            "pull",
            "--plain-http",
            "--snapshotter",
            "augur",
            &image,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once the first layer is committed, while the second is being unpacked.
    let first_commit = poll(Duration::from_secs(120), || {
        bed.daemon.log().contains("op=\"commit\"")
    });
    assert!(first_commit, "first layer committed");
    // The failed pull's lease goes with it, and containerd's garbage collector removes what the
    // lease held once the daemon is back, racing the checks below. Mark the committed layer as
    // a GC root first (containerd's `containerd.io/gc.root` label), so it stays for them.
    let mut base_key = String::new();
    let listed = poll(Duration::from_secs(30), || {
        let ls = bed
            .containerd
            .ctr(&["snapshots", "--snapshotter", "augur", "ls"]);
        let out = String::from_utf8_lossy(&ls.stdout).into_owned();
        match out.lines().find(|l| l.trim_end().ends_with("Committed")) {
            Some(line) => {
                base_key = line
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                true
            }
            None => false,
        }
    });
    assert!(listed, "containerd lists the committed layer");
    bed.containerd.ctr_ok(&[
        "snapshots",
        "--snapshotter",
        "augur",
        "label",
        &base_key,
        "containerd.io/gc.root=kill-9-test",
    ]);
    bed.daemon.kill9();
    let failed = !pull.wait().unwrap().success();
    bed.daemon.restart();
    bed.wait_reconnected();
    let committed: Vec<pb::Info> = rt
        .block_on(augur_snapshots(bed.daemon.socket()))
        .into_iter()
        .filter(|i| i.kind == pb::Kind::Committed as i32)
        .collect();
    assert!(
        !committed.is_empty(),
        "the committed base layer survived the crash"
    );
    let base = &committed[0].name;
    let view = rt.block_on(async {
        let mut c = connect(bed.daemon.socket()).await;
        let r = pb::ViewSnapshotRequest {
            key: "check".into(),
            parent: base.clone(),
            ..Default::default()
        };
        c.view(r).await.unwrap().into_inner().mounts
    });
    let base_dir = PathBuf::from(&view[0].source);
    assert!(
        base_dir.join("etc/debian_version").exists(),
        "content of {base} intact"
    );
    rt.block_on(async {
        let mut c = connect(bed.daemon.socket()).await;
        c.remove(pb::RemoveSnapshotRequest {
            key: "check".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    });
    // The pull can be finished, and the image runs.
    bed.pull("python:latest");
    assert_eq!(
        bed.run("python:latest", "py", &["python3", "-c", "print(6*7)"])
            .trim(),
        "42"
    );
    eprintln!("first pull failed by the kill: {failed}");
    assert_disk_matches_store(&bed, &rt);
    assert!(mounts_under(bed.daemon.root()).is_empty());
}

#[test]
fn kill_9_while_a_container_writes_keeps_its_upper_dir() {
    let mut bed = Bed::start("e2e-crash-writes");
    let rt = tokio::runtime::Runtime::new().unwrap();
    bed.pull("python:latest");
    let image = bed.registry.image("python:latest");
    let writer = "import os,time\nos.makedirs('/data',exist_ok=True)\ni=0\nwhile True:\n  \
        p='/data/%06d'%i\n  f=open(p+'.tmp','w'); f.write(str(i)); f.flush(); os.fsync(f.fileno()); f.close()\n  \
        os.rename(p+'.tmp',p); i+=1; time.sleep(0.005)\n";
    bed.ctr(&[
        "run",
        "-d",
        "--snapshotter",
        "augur",
        &image,
        "writer",
        "python3",
        "-c",
        writer,
    ]);
    let count = || {
        let out = bed.0.containerd.ctr(&[
            "tasks",
            "exec",
            "--exec-id",
            "c",
            "writer",
            "sh",
            "-c",
            "ls /data | wc -l",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<usize>()
            .unwrap_or(0)
    };
    wait_until("the container to write", Duration::from_secs(30), || {
        count() > 20
    });
    bed.0.daemon.kill9(); // fields of the bed: the closure above borrows only containerd
    std::thread::sleep(Duration::from_millis(500));
    let during_outage = count();
    assert!(
        during_outage > 20,
        "the container keeps writing while augur is down"
    );
    bed.0.daemon.restart();
    bed.wait_reconnected();
    bed.ctr(&["tasks", "kill", "-s", "SIGKILL", "writer"]);
    wait_until("writer to stop", Duration::from_secs(20), || {
        bed.containerd
            .ctr(&["tasks", "delete", "writer"])
            .status
            .success()
    });
    // The container's writes are in its upper dir, as Augur's mounts for it say.
    let mounts = bed.ctr(&[
        "snapshots",
        "--snapshotter",
        "augur",
        "mounts",
        "/x",
        "writer",
    ]);
    let upper = mounts
        .split([',', ' '])
        .find_map(|o| o.strip_prefix("upperdir="))
        .unwrap_or_else(|| panic!("no upperdir in {mounts}"));
    let data = Path::new(upper).join("data");
    let files: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let done: Vec<_> = files.iter().filter(|p| p.extension().is_none()).collect();
    assert!(
        done.len() >= during_outage,
        "{} files kept, {during_outage} seen during the outage",
        done.len()
    );
    for p in &done {
        let n: usize = p.file_name().unwrap().to_string_lossy().parse().unwrap();
        assert_eq!(
            std::fs::read_to_string(p).unwrap(),
            n.to_string(),
            "content of {}",
            p.display()
        );
    }
    bed.ctr(&["containers", "rm", "writer"]);
    assert_disk_matches_store(&bed, &rt);
    assert!(
        mounts_under(bed.daemon.root()).is_empty(),
        "nothing of augur's left mounted"
    );
}
