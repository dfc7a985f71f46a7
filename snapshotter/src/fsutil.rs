//! Small filesystem helpers for snapshot directories: disk usage and crash-safe removal.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::store::Usage;

/// Disk usage of the tree at `root`, counted as containerd's `fs.DiskUsage` does: every distinct
/// inode once, its size as allocated blocks × 512. Symlinks are not followed.
pub fn disk_usage(root: &Path) -> io::Result<Usage> {
    disk_usage_within(root, usize::MAX).map(|u| u.expect("no limit"))
}

/// [`disk_usage`], unless the tree has more than `max_inodes` entries: then `None`, having
/// stopped there (so a caller can measure small trees at once and hand large ones to a thread).
pub fn disk_usage_within(root: &Path, max_inodes: usize) -> io::Result<Option<Usage>> {
    let mut seen = HashSet::new();
    let mut size: i64 = 0;
    let mut stack = vec![root.to_path_buf()];
    let mut visited = 0usize;
    while let Some(path) = stack.pop() {
        visited += 1;
        if visited > max_inodes {
            return Ok(None);
        }
        let meta = fs::symlink_metadata(&path)?;
        if seen.insert((meta.dev(), meta.ino())) {
            size = size.saturating_add(i64::try_from(meta.blocks()).unwrap_or(i64::MAX) * 512);
        }
        if meta.is_dir() {
            for entry in fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(Some(Usage {
        size,
        inodes: i64::try_from(seen.len()).unwrap_or(i64::MAX),
    }))
}

/// Removes `path` and everything below it; a path that is already gone is not an error.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), vec![1u8; 10_000]).unwrap();
        fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        let u = disk_usage(dir.path()).unwrap();
        assert_eq!(u.inodes, 3, "root, the file (two names) and d");
        assert!(
            u.size >= 10_000,
            "allocated size {} covers the file",
            u.size
        );
    }

    #[test]
    fn removing_a_missing_tree_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        remove_tree(&dir.path().join("nope")).unwrap();
    }
}
