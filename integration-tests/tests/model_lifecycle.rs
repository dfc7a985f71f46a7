//! A node's model, installed and retrained (decision 0020): `onnx-models/install.sh` puts the
//! shipped model and ONNX Runtime in place and switches `current` only once the model passed
//! the daemon's own validation (`augurctl model check`); `onnx-models/retrain.sh` trains on
//! traces (a file, or exported through a real daemon's admin socket), validates, switches
//! `current`, has the running daemon reload it, prunes old versions, and leaves the current
//! model in place when anything fails. The systemd units pass `systemd-analyze verify`.
//!
//! Every path is a temporary directory (never the machine's `/var/lib/augur` or
//! `/usr/local/lib/augur`). Needs the trainer's venv and ONNX Runtime in the test cache
//! (`onnx-models/setup.sh`, run by `integration-tests/scripts/deps.sh`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use augur_integration_tests::{
    Daemon, TestDir, augurctl_bin, cache_dir, with_test_cache, workspace,
};

/// The node's directories, in a test directory.
struct Node {
    dir: TestDir,
}

impl Node {
    fn new(name: &str) -> Node {
        let venv = cache_dir().join("venv-onnx/bin/python");
        assert!(
            venv.exists(),
            "{} missing: run `bash onnx-models/setup.sh`",
            venv.display()
        );
        Node {
            dir: TestDir::new(name),
        }
    }
    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
    fn models(&self) -> PathBuf {
        self.root().join("models")
    }
    fn lib(&self) -> PathBuf {
        self.dir.join("lib")
    }
    fn ort(&self) -> PathBuf {
        self.lib()
            .join(augur_predictor::lstm::runtime::ORT_LIB_FILE)
    }
    fn current(&self) -> String {
        std::fs::read_link(self.models().join("current"))
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }
    /// Retrained versions present (directories named by time).
    fn versions(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.models())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(|c: char| c.is_ascii_digit()))
            .collect();
        v.sort();
        v
    }

    fn install(&self, extra: &[&str]) -> Output {
        let mut cmd = Command::new(workspace().join("onnx-models/install.sh"));
        cmd.arg("--models")
            .arg(self.models())
            .arg("--lib-dir")
            .arg(self.lib())
            .arg("--augurctl")
            .arg(augurctl_bin())
            .args(extra);
        cmd.output().expect("run install.sh")
    }

    /// retrain.sh from where install.sh put it, with the test cache's venv and 2 epochs.
    fn retrain(&self, extra: &[&str]) -> Output {
        let mut cmd = Command::new(self.lib().join("trainer/retrain.sh"));
        cmd.arg("--models")
            .arg(self.models())
            .arg("--venv")
            .arg(cache_dir().join("venv-onnx"))
            .arg("--ort-lib")
            .arg(self.ort())
            .arg("--augurctl")
            .arg(augurctl_bin())
            .args(["--epochs", "2"])
            .args(extra);
        cmd.output().expect("run retrain.sh")
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn shipped_traces() -> PathBuf {
    workspace().join("onnx-models/traces/tools-v1.jsonl")
}

fn traces_arg() -> String {
    shipped_traces().display().to_string()
}

#[test]
fn install_validates_before_it_switches_current_and_is_idempotent() {
    let node = Node::new("model-install");
    let first = node.install(&[]);
    assert!(first.status.success(), "{}", text(&first));
    assert_eq!(node.current(), "tools-v1");
    assert!(node.ort().is_file() && node.lib().join("trainer/train.py").is_file());

    let again = node.install(&[]);
    let out = text(&again);
    assert!(again.status.success(), "{out}");
    assert_eq!(out.matches("up to date").count(), 3, "{out}");

    // A damaged model is refused by the daemon's validation; nothing changes.
    let broken = node.dir.join("broken");
    std::fs::create_dir(&broken).unwrap();
    for f in ["meta.json", "model.onnx", "vocab.json", "golden.json"] {
        std::fs::copy(
            workspace().join("onnx-models/tools-v1").join(f),
            broken.join(f),
        )
        .unwrap();
    }
    let mut onnx = std::fs::read(broken.join("model.onnx")).unwrap();
    let n = onnx.len();
    onnx[n - 100] ^= 0xff;
    std::fs::write(broken.join("model.onnx"), onnx).unwrap();
    let refused = node.install(&["--model", broken.to_str().unwrap(), "--activate"]);
    let out = text(&refused);
    assert!(!refused.status.success(), "{out}");
    assert!(out.contains("file hashes"), "{out}");
    assert_eq!(node.current(), "tools-v1");
    assert!(!node.models().join("broken").exists(), "{out}");
}

fn start_daemon(node: &Node) -> Daemon {
    let config = node.dir.join("augur.toml");
    let toml = format!(
        "[predictor]\nonnxruntime_library = \"{}\"\n",
        node.ort().display()
    );
    std::fs::write(&config, with_test_cache(&toml)).unwrap();
    Daemon::start_with_config(
        &node.root(),
        &node.dir.join("augur.sock"),
        &node.dir.join("augur.log"),
        &config,
    )
}

/// The served model's version (its directory's name) from `augurctl status --json`.
fn served(daemon: &Daemon) -> String {
    let out = augur_integration_tests::run_ok(
        Command::new(augurctl_bin())
            .args(["status", "--json", "--admin-socket"])
            .arg(daemon.admin_socket()),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let dir = v["model"]["dir"].as_str().unwrap_or_default();
    Path::new(dir)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn retrain_serves_a_validated_model_without_a_restart_and_keeps_the_old_one_on_failure() {
    let node = Node::new("model-retrain");
    let install = node.install(&[]);
    assert!(install.status.success(), "{}", text(&install));
    let daemon = start_daemon(&node);
    assert_eq!(served(&daemon), "tools-v1", "{}", daemon.log());
    // An operator can tell on which images the LSTM is silent (decision 0029).
    let status = augur_integration_tests::run_ok(
        Command::new(augurctl_bin())
            .args(["status", "--admin-socket"])
            .arg(daemon.admin_socket()),
    );
    assert!(
        status.contains("the LSTM predicts for tools:esgz only; other images: the other models"),
        "{status}"
    );
    let socket = daemon.admin_socket();
    let socket = socket.to_str().unwrap();

    // Through the socket: a fresh daemon has no traces, so retraining declines politely.
    let none = node.retrain(&["--admin-socket", socket, "--min-runs", "1"]);
    let out = text(&none);
    assert!(none.status.success(), "{out}");
    assert!(out.contains("only 0 runs"), "{out}");
    assert_eq!(node.current(), "tools-v1");

    // The recorded traces: trained, validated, switched, reloaded.
    let ok = node.retrain(&["--admin-socket", socket, "--traces", &traces_arg()]);
    let out = text(&ok);
    assert!(ok.status.success(), "{out}");
    assert!(
        out.contains("the LSTM predicts for tools:esgz only"),
        "{out}"
    );
    let versions = node.versions();
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(node.current(), versions[0]);
    assert_eq!(served(&daemon), versions[0], "{out}");

    // A failure (no trainer venv) leaves everything as it was, and says so.
    let failed = node.retrain(&["--venv", "/nonexistent", "--traces", &traces_arg()]);
    let out = text(&failed);
    assert!(!failed.status.success(), "{out}");
    assert!(out.contains("the current model stays"), "{out}");
    assert_eq!(node.current(), versions[0]);
    assert_eq!(served(&daemon), versions[0]);

    // A daemon that does not take the model (here: unreachable) switches `current` back.
    let refused = node.retrain(&[
        "--admin-socket",
        "/nonexistent.sock",
        "--traces",
        &traces_arg(),
    ]);
    let out = text(&refused);
    assert!(!refused.status.success(), "{out}");
    assert!(out.contains("did not take the new model"), "{out}");
    assert_eq!(node.current(), versions[0]);
    assert_eq!(node.versions(), versions, "the refused version is removed");

    // Old versions are pruned: --keep 2 leaves the two newest.
    for _ in 0..2 {
        let r = node.retrain(&[
            "--admin-socket",
            socket,
            "--traces",
            &traces_arg(),
            "--keep",
            "2",
        ]);
        assert!(r.status.success(), "{}", text(&r));
    }
    let kept = node.versions();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(!kept.contains(&versions[0]), "{kept:?}");
    assert_eq!(node.current(), kept[1]);
    assert_eq!(served(&daemon), kept[1]);
    assert!(
        node.models().join("tools-v1").is_dir(),
        "shipped models stay"
    );
}

#[test]
fn a_node_without_a_model_says_so_in_one_info_line() {
    let node = Node::new("model-none");
    let mut daemon = start_daemon(&node);
    daemon.stop();
    let log = daemon.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("LSTM")).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" INFO ") && l.contains("no LSTM model installed")),
        "{log}"
    );
    assert!(!lines.iter().any(|l| l.contains(" WARN ")), "{lines:#?}");
}

#[test]
fn the_systemd_units_verify() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed: skipped");
        return;
    };
    assert!(out.status.success());
    let units = workspace().join("systemd");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(
            [
                "augur-snapshotter.service",
                "augur-retrain.service",
                "augur-retrain.timer",
            ]
            .map(|u| units.join(u)),
        )
        .output()
        .unwrap();
    // The binaries are not installed on a test machine; anything else is a real complaint.
    let complaints: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.contains("is not executable: No such file or directory"))
        .map(str::to_owned)
        .collect();
    assert!(complaints.is_empty(), "{complaints:#?}");
}
