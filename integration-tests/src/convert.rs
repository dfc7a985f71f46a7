//! `augurctl image convert` under test: running it, reading its summary line, and checking the
//! temporary directory it was given.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::augurctl_bin;

/// `augurctl image convert --tmp-dir <tmp> [extra…] <src> <dst>`, ready to run or spawn.
pub fn command(src: &str, dst: &str, tmp: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(augurctl_bin());
    cmd.args(["image", "convert", "--tmp-dir"])
        .arg(tmp)
        .args(extra)
        .args([src, dst])
        .stdin(Stdio::null());
    cmd
}

/// Runs a conversion and returns its output, whatever the exit status.
pub fn run(src: &str, dst: &str, tmp: &Path, extra: &[&str]) -> Output {
    command(src, dst, tmp, extra)
        .output()
        .expect("run augurctl")
}

/// Runs a conversion that must succeed; returns the digest DST names now (from the summary).
pub fn convert_ok(src: &str, dst: &str, tmp: &Path, extra: &[&str]) -> String {
    let out = run(src, dst, tmp, extra);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "augurctl image convert {src} {dst} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    summary_digest(&stdout)
}

/// The digest in the summary line (`… manifest sha256:… ;` or `… index sha256:… of …`).
pub fn summary_digest(stdout: &str) -> String {
    let line = stdout.lines().last().unwrap_or_default();
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("sha256:"))
        .map(|hex| format!("sha256:{}", hex.trim_end_matches(';')))
        .unwrap_or_else(|| panic!("no digest in the summary line {line:?}"))
}

/// The names in `dir` (a temporary directory that must end up empty).
pub fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
