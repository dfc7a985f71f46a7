//! Scratch directories that clean up after themselves, mounts included.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, umount2};

/// A scratch directory under `/var/tmp` (a real disk: overlay upper dirs need xattrs). On drop
/// it lazily unmounts everything mounted below it, deepest first, then deletes it.
#[derive(Debug)]
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
}

impl TestDir {
    /// Creates `/var/tmp/augur-<prefix>-XXXX`.
    pub fn new(prefix: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("augur-{prefix}-"))
            .tempdir_in("/var/tmp")
            .expect("create scratch dir in /var/tmp");
        TestDir { dir: Some(dir) }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("live test dir").path()
    }

    /// `path()/name`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let path = self.path().to_path_buf();
        for m in mounts_under(&path).into_iter().rev() {
            let _ = umount2(&m, MntFlags::MNT_DETACH);
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

/// Mount points at or below `dir`, in mount order (from `/proc/self/mountinfo`).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> PathBuf {
    let mut out = Vec::with_capacity(field.len());
    let b = field.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() + 1 && b[i + 1..].len() >= 3 {
            if let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(String::from_utf8_lossy(&out).into_owned())
}
