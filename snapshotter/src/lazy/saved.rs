//! What a resolved layer keeps on disk, so that a restart mounts it again exactly as before
//! without the registry:
//!
//! ```text
//! layers/<digest hex>/toc.json       the verified TOC
//! layers/<digest hex>/dirattrs.json  attributes implicit directories inherited from lower layers
//! layers/<digest hex>/stats.json     the layer's fetch counters (written by `data`)
//! ```
//!
//! Both files here are written atomically and durably ([`save`]) and read back by
//! [`load_index`] when a snapshot is mounted after a restart.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use crate::estargz::{DirAttrs, LayerIndex, NodeId, Toc};
use crate::lazy::LazyError;
use crate::store::RemoteLayer;

const TOC_FILE: &str = "toc.json";
const DIR_ATTRS_FILE: &str = "dirattrs.json";

/// Attributes an implicit directory of a layer (one its TOC implies but does not list) takes from
/// the same directory in a lower layer, as containerd's unpacking gives it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InheritedDir {
    /// The directory's node in the layer's index (stable: the index is built from the same TOC).
    pub node: NodeId,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime_secs: i64,
    /// Nanoseconds of the modification time.
    pub mtime_nanos: u32,
    /// Extended attributes but `trusted.*` (containerd does not copy those); base64 values.
    /// Absent from files saved before xattrs were inherited: those dirs then have none.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "crate::estargz::base64_values"
    )]
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl InheritedDir {
    /// Applies these attributes to `index`.
    pub fn apply(&self, index: &mut LayerIndex) {
        let mtime = if self.mtime_secs >= 0 {
            UNIX_EPOCH + Duration::new(self.mtime_secs as u64, self.mtime_nanos)
        } else {
            UNIX_EPOCH
        };
        let attrs = DirAttrs {
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            mtime,
            xattrs: self
                .xattrs
                .iter()
                .map(|(k, v)| (k.into(), v.clone()))
                .collect(),
        };
        index.inherit_dir_attrs(self.node, &attrs);
    }
}

/// Saves a layer's verified TOC and the attributes its implicit directories inherited.
pub(super) fn save(dir: &Path, toc: &Toc, inherited: &[InheritedDir]) -> Result<(), LazyError> {
    let toc = serde_json::to_vec(toc).map_err(|e| LazyError::Internal(e.to_string()))?;
    let attrs = serde_json::to_vec(inherited).map_err(|e| LazyError::Internal(e.to_string()))?;
    save_file(dir, DIR_ATTRS_FILE, &attrs)?;
    save_file(dir, TOC_FILE, &toc)
}

/// Writes `dir/name` atomically and durably (a restart mounts from it).
fn save_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), LazyError> {
    std::fs::create_dir_all(dir).map_err(LazyError::io("create", dir))?;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(LazyError::io("save", &path))
}

/// The index of a saved layer: its TOC with the inherited directory attributes applied.
pub(super) fn load_index(dir: &Path, remote: &RemoteLayer) -> Result<LayerIndex, LazyError> {
    let path = dir.join(TOC_FILE);
    let bytes = std::fs::read(&path).map_err(LazyError::io("read saved TOC", &path))?;
    let toc: Toc = serde_json::from_slice(&bytes)
        .map_err(|e| LazyError::Internal(format!("saved TOC {}: {e}", path.display())))?;
    let mut index = LayerIndex::from_toc(&toc, remote.toc_offset)?;
    let path = dir.join(DIR_ATTRS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let dirs: Vec<InheritedDir> = serde_json::from_slice(&bytes)
                .map_err(|e| LazyError::Internal(format!("{}: {e}", path.display())))?;
            for d in &dirs {
                d.apply(&mut index);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(LazyError::io("read", &path)(e)),
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estargz::TocEntry;

    fn index_with_implicit_usr() -> (LayerIndex, NodeId) {
        let entry = TocEntry {
            name: "usr/lib/x".into(),
            kind: "reg".into(),
            ..TocEntry::default()
        };
        let toc = Toc {
            version: 1,
            entries: vec![entry],
        };
        let index = LayerIndex::from_toc(&toc, 0).unwrap();
        let usr = index.find(Path::new("usr")).unwrap();
        (index, usr)
    }

    #[test]
    fn inherited_dirs_keep_their_xattrs_across_a_save() {
        let (mut index, usr) = index_with_implicit_usr();
        let dir = InheritedDir {
            node: usr,
            mode: 0o700,
            uid: 5,
            gid: 6,
            mtime_secs: 1_000_000_000,
            mtime_nanos: 7,
            xattrs: [("user.tag".to_owned(), vec![0, 0xff, b'y'])].into(),
        };
        let saved = serde_json::to_vec(&[&dir]).unwrap();
        let loaded: Vec<InheritedDir> = serde_json::from_slice(&saved).unwrap();
        assert_eq!(loaded, [dir]);
        loaded[0].apply(&mut index);
        let node = index.node(usr);
        assert_eq!((node.mode, node.uid, node.gid), (0o700, 5, 6));
        assert_eq!(
            node.xattrs[std::ffi::OsStr::new("user.tag")],
            [0, 0xff, b'y']
        );
    }

    #[test]
    fn inherited_dirs_saved_without_xattrs_still_load() {
        let old = br#"[{"node":1,"mode":493,"uid":0,"gid":0,"mtime_secs":0,"mtime_nanos":0}]"#;
        let loaded: Vec<InheritedDir> = serde_json::from_slice(old).unwrap();
        assert!(loaded[0].xattrs.is_empty());
    }
}
