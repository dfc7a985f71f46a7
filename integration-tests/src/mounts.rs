//! Scratch directories that clean up after themselves, mounts included, and mounts made from a
//! snapshotter's mount descriptions.

use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use serde_json::Value;

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

/// A mount made by a test; detached on drop, so also when the test panics.
#[derive(Debug)]
pub struct MountGuard {
    target: PathBuf,
}

impl MountGuard {
    /// Performs the mount a snapshotter returned, as containerd's JSON prints it (`ctr snapshots
    /// view --mounts`: one `{Type, Source, Options}`), at `target` (created if missing): a bind
    /// (read-only if `ro` is among the options) or an overlay.
    pub fn mount_described(mounts: &Value, target: &Path) -> MountGuard {
        let list = mounts.as_array().expect("mounts are a JSON array");
        assert_eq!(list.len(), 1, "expected one mount: {mounts}");
        let m = &list[0];
        let kind = m["Type"].as_str().expect("mount Type");
        let source = m["Source"].as_str().expect("mount Source");
        let options: Vec<&str> = m["Options"]
            .as_array()
            .map(|o| o.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        std::fs::create_dir_all(target).expect("create mount point");
        let ro = options.contains(&"ro");
        let fail = |e| panic!("mount {m} at {}: {e}", target.display());
        match kind {
            "bind" => {
                let rec = if options.contains(&"rbind") {
                    MsFlags::MS_REC
                } else {
                    MsFlags::empty()
                };
                let flags = MsFlags::MS_BIND | rec;
                mount(Some(source), target, None::<&str>, flags, None::<&str>).unwrap_or_else(fail);
                let guard = MountGuard {
                    target: target.to_path_buf(),
                };
                if ro {
                    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
                    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
                        .unwrap_or_else(fail);
                }
                guard
            }
            "overlay" => {
                let data: Vec<&str> = options.iter().copied().filter(|o| *o != "ro").collect();
                let flags = if ro {
                    MsFlags::MS_RDONLY
                } else {
                    MsFlags::empty()
                };
                let data = data.join(",");
                mount(
                    Some(source),
                    target,
                    Some("overlay"),
                    flags,
                    Some(data.as_str()),
                )
                .unwrap_or_else(fail);
                MountGuard {
                    target: target.to_path_buf(),
                }
            }
            other => panic!("cannot mount type {other:?}: {m}"),
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = umount2(&self.target, MntFlags::MNT_DETACH);
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
