//! Mounting a lazy layer's FUSE filesystem, unmounting it, and finding mounts a killed daemon
//! left behind.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{BackgroundSession, Config, MountOption, SessionACL};
use nix::mount::{MntFlags, umount2};

use crate::lazy::data::LayerData;
use crate::lazy::fs::LazyFs;

/// The `source` field our FUSE mounts show in `/proc/mounts`.
pub const FS_NAME: &str = "augur";

/// Mounts `data` read-only at `mountpoint`, served by `threads` threads of its own.
///
/// `allow_other` + `default_permissions`: the kernel checks modes and owners from our attributes,
/// for any user (OverlayFS uses the mounter's credentials; tools that look at the lower dir
/// directly see the same permissions a plain directory would have).
pub fn mount(
    data: Arc<LayerData>,
    mountpoint: &Path,
    threads: usize,
) -> io::Result<BackgroundSession> {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName(FS_NAME.into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
    ];
    config.acl = SessionACL::All;
    config.n_threads = Some(threads.max(1));
    config.clone_fd = true;
    fuser::spawn_mount(LazyFs::new(data), mountpoint, &config)
}

/// Detaches the mount at `path` (lazily: it never blocks on a busy mount). Not mounted is fine.
pub fn unmount(path: &Path) -> io::Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// FUSE mount points strictly below `dir`, deepest first (from `/proc/self/mountinfo`).
pub fn fuse_mounts_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(parse_mountinfo_line)
        .filter(|(point, fstype)| {
            fstype.starts_with("fuse") && point.starts_with(dir) && point != dir
        })
        .map(|(point, _)| point)
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    Ok(found)
}

/// (mount point, filesystem type) of one mountinfo line.
fn parse_mountinfo_line(line: &str) -> Option<(PathBuf, String)> {
    let (left, right) = line.split_once(" - ")?;
    let point = left.split(' ').nth(4)?;
    let fstype = right.split(' ').next()?;
    Some((PathBuf::from(unescape(point)), fstype.to_owned()))
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = oct.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let l = "36 35 0:45 / /var/lib/augur/snapshots/7/fs ro,nosuid,nodev,noatime shared:1 - fuse augur ro,user_id=0";
        assert_eq!(
            parse_mountinfo_line(l),
            Some((
                PathBuf::from("/var/lib/augur/snapshots/7/fs"),
                "fuse".into()
            ))
        );
        let l = "36 35 0:45 / /tmp/a\\040b rw - overlay overlay rw";
        assert_eq!(
            parse_mountinfo_line(l).unwrap().0,
            PathBuf::from("/tmp/a b")
        );
        assert_eq!(parse_mountinfo_line("garbage"), None);
    }
}
