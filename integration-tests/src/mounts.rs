//! Scratch directories that clean up after themselves, mounts included.

use std::os::unix::ffi::OsStringExt;
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
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok());
        if let (b'\\', Some(Ok(v))) = (b[i], octal.map(|d| u8::from_str_radix(d, 8))) {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(
            super::unescape(r"/var/tmp/a\040b\011c\134d"),
            std::path::Path::new("/var/tmp/a b\tc\\d")
        );
        assert_eq!(
            super::unescape(r"/plain\04"),
            std::path::Path::new(r"/plain\04")
        );
    }
}
