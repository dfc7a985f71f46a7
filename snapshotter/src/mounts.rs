//! The mounts a snapshot is used through, built exactly as containerd's overlayfs snapshotter
//! builds them, so containerd, runc and `ctr snapshots mounts` treat Augur's answers the same way:
//!
//! | snapshot | parents | mount |
//! |---|---|---|
//! | active | none | `bind` of its `fs` dir, `rw,rbind` |
//! | view | none | `bind` of its `fs` dir, `ro,rbind` |
//! | view | one | `bind` of the parent's `fs` dir, `ro,rbind` |
//! | active | one or more | `overlay`: `upperdir`, `workdir`, `lowerdir=p1:p2:…` (nearest first) |
//! | view | two or more | `overlay` with only `lowerdir` (read-only by construction) |
//!
//! `index=off` is added when the kernel's overlay has the `index` parameter, as containerd does,
//! so a lower dir shared by several overlays never trips the inode index check.

use std::path::{Path, PathBuf};

use crate::store::{Kind, Snapshot};

/// One mount, in containerd's terms (`containerd.types.Mount`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Filesystem type: `bind` or `overlay`.
    pub kind: String,
    /// Source: a directory for binds, `overlay` for overlays.
    pub source: String,
    /// Mount options, as `mount -o` takes them.
    pub options: Vec<String>,
}

/// Where snapshot directories live and which overlay options the kernel wants.
#[derive(Debug, Clone)]
pub struct Layout {
    snapshots_dir: PathBuf,
    index_off: bool,
}

impl Layout {
    /// The layout under `snapshots_dir`, probing the kernel for overlay's `index` parameter.
    pub fn new(snapshots_dir: PathBuf) -> Layout {
        let index_off = Path::new("/sys/module/overlay/parameters/index").exists();
        Layout {
            snapshots_dir,
            index_off,
        }
    }

    /// The directory of snapshot `id`.
    pub fn dir(&self, id: u64) -> PathBuf {
        self.snapshots_dir.join(id.to_string())
    }

    /// The directory holding the snapshot's files (the overlay upper dir while active).
    pub fn fs(&self, id: u64) -> PathBuf {
        self.dir(id).join("fs")
    }

    /// The overlay work dir of an active snapshot.
    pub fn work(&self, id: u64) -> PathBuf {
        self.dir(id).join("work")
    }

    /// The mounts for `snap`.
    pub fn mounts(&self, snap: &Snapshot) -> Vec<Mount> {
        let path = |id: u64| self.fs(id).display().to_string();
        match (snap.kind, snap.parent_ids.as_slice()) {
            (kind, []) => vec![bind(path(snap.id), kind == Kind::View)],
            (Kind::View, [parent]) => vec![bind(path(*parent), true)],
            (kind, parents) => {
                let mut options = Vec::with_capacity(4);
                if self.index_off {
                    options.push("index=off".to_owned());
                }
                if kind == Kind::Active {
                    options.push(format!("workdir={}", self.work(snap.id).display()));
                    options.push(format!("upperdir={}", path(snap.id)));
                }
                let lower: Vec<String> = parents.iter().map(|&id| path(id)).collect();
                options.push(format!("lowerdir={}", lower.join(":")));
                vec![Mount {
                    kind: "overlay".into(),
                    source: "overlay".into(),
                    options,
                }]
            }
        }
    }
}

fn bind(source: String, read_only: bool) -> Mount {
    Mount {
        kind: "bind".into(),
        source,
        options: vec![if read_only { "ro" } else { "rw" }.into(), "rbind".into()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            snapshots_dir: "/r/snapshots".into(),
            index_off: true,
        }
    }

    fn snap(kind: Kind, id: u64, parent_ids: &[u64]) -> Snapshot {
        Snapshot {
            id,
            kind,
            parent_ids: parent_ids.to_vec(),
        }
    }

    #[test]
    fn base_snapshots_are_binds_of_their_own_dir() {
        let m = layout().mounts(&snap(Kind::Active, 7, &[]));
        assert_eq!(m, vec![bind("/r/snapshots/7/fs".into(), false)]);
        let m = layout().mounts(&snap(Kind::View, 7, &[]));
        assert_eq!(m[0].options, ["ro", "rbind"]);
    }

    #[test]
    fn view_of_one_parent_binds_the_parent_read_only() {
        let m = layout().mounts(&snap(Kind::View, 9, &[3]));
        assert_eq!(m, vec![bind("/r/snapshots/3/fs".into(), true)]);
    }

    #[test]
    fn active_child_is_an_overlay_with_nearest_parent_first() {
        let m = layout().mounts(&snap(Kind::Active, 9, &[3, 1]));
        assert_eq!(m[0].kind, "overlay");
        assert_eq!(
            m[0].options,
            [
                "index=off",
                "workdir=/r/snapshots/9/work",
                "upperdir=/r/snapshots/9/fs",
                "lowerdir=/r/snapshots/3/fs:/r/snapshots/1/fs",
            ]
        );
    }

    #[test]
    fn view_of_many_parents_has_no_upper_dir() {
        let m = layout().mounts(&snap(Kind::View, 9, &[3, 1]));
        assert!(m[0].options.iter().all(|o| !o.starts_with("upperdir")));
        assert!(
            m[0].options
                .contains(&"lowerdir=/r/snapshots/3/fs:/r/snapshots/1/fs".to_owned())
        );
    }
}
