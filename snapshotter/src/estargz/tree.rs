//! TOC entries → the directory tree, applied the way containerd unpacks a tar for overlayfs.
//!
//! Entries are applied in order, as `archive.Apply` with `OverlayConvertWhiteout` does:
//! - names are cleaned (`./`, `/`, empty and `.` components dropped); `..` is refused;
//! - a missing parent directory is created implicitly (0755, root-owned, epoch mtime) and takes
//!   real attributes when its own entry comes later; containerd would copy them from the same
//!   directory in a lower layer, which only the caller knows
//!   ([`super::LayerIndex::inherit_from`]);
//! - a later entry for an existing path replaces it (and everything below it), except a
//!   directory over a directory, which keeps its children and takes the new attributes, merging
//!   xattrs (setxattr adds, never clears);
//! - a hard link names an earlier non-directory; it shares that node, and its header's owner,
//!   mode, mtime and xattrs are applied to it (containerd chowns/chmods the link path);
//! - xattrs are those containerd sets: never `trusted.*` (it refuses admin attributes from an
//!   archive, so a layer cannot steer OverlayFS with `trusted.overlay.*`), and `user.*` only on
//!   regular files and directories (the kernel refuses them elsewhere and containerd skips
//!   them);
//! - `.wh.<name>` becomes a character device 0/0 named `<name>` with mode 0, and `.wh..wh..opq`
//!   sets `trusted.overlay.opaque=y` on its directory; neither marker is listed. A whiteout
//!   never hides an entry of the same layer (OCI image spec: whiteouts apply to lower layers
//!   only) where containerd would fail with EEXIST; a real entry replaces a whiteout;
//! - a parent path that is not a directory is refused (containerd's ENOTDIR; it would follow a
//!   symlink there, which a lazily served layer cannot do safely);
//! - a `./` entry changes nothing: containerd skips an entry that resolves to the root, whose
//!   attributes are those of the directory the snapshotter made (0755, root-owned);
//! - `.prefetch.landmark` and `.no.prefetch.landmark` in the root are hidden, as stargz
//!   snapshotter hides them, and become [`Prefetch`].
//!
//! The result is compacted breadth first from the root, so replaced nodes disappear and every
//! parent has a smaller id than its children.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::FormatError;
use super::index::{Node, NodeId, NodeKind, Prefetch, ROOT};
use super::time::parse_rfc3339;
use super::toc::TocEntry;

/// Whiteout prefix of the tar convention.
const WHITEOUT: &str = ".wh.";
/// Opaque-directory marker of the tar convention.
const OPAQUE: &str = ".wh..wh..opq";
/// The xattr overlayfs reads for an opaque directory.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Landmark: files before it in the blob are to be prefetched.
pub const PREFETCH_LANDMARK: &str = ".prefetch.landmark";
/// Landmark: nothing is to be prefetched.
pub const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";

/// The tree, before chunks are placed.
#[derive(Debug)]
pub(crate) struct Built {
    /// Compacted nodes; files have empty chunk ranges.
    pub nodes: Vec<Node>,
    /// For every file node (in id order), the TOC indexes of its `reg` and `chunk` entries.
    pub raw_chunks: Vec<(NodeId, Vec<usize>)>,
    /// Directories no entry describes, in id order (the root excluded).
    pub implicit_dirs: Vec<NodeId>,
    /// From the landmarks.
    pub prefetch: Prefetch,
}

/// Applies `entries` in order and compacts the result.
pub(crate) fn build(entries: &[TocEntry]) -> Result<Built, FormatError> {
    let mut tree = Tree::new();
    // The regular file the next `chunk` entries continue: (name, node, or None if hidden).
    let mut open_file: Option<(Vec<&str>, Option<usize>)> = None;
    for (i, e) in entries.iter().enumerate() {
        let comps = clean(i, e, &e.name)?;
        if e.kind == "chunk" {
            let Some((reg_name, node)) = &open_file else {
                return Err(FormatError::entry(
                    i,
                    &e.name,
                    "a chunk entry must follow a reg entry",
                ));
            };
            if !e.name.is_empty() && &comps != reg_name {
                return Err(FormatError::entry(
                    i,
                    &e.name,
                    "chunk entry names another file",
                ));
            }
            if let Some(n) = node {
                tree.data[*n].push(i);
            }
            continue;
        }
        let node = tree.apply(i, e, &comps)?;
        open_file = (e.kind == "reg").then_some((comps, node));
    }
    tree.compact()
}

/// Splits a TOC name into clean components (empty: the root).
fn clean<'a>(i: usize, e: &TocEntry, name: &'a str) -> Result<Vec<&'a str>, FormatError> {
    let mut comps = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(FormatError::entry(
                    i,
                    &e.name,
                    "the name has a `..` component",
                ));
            }
            c if c.contains('\0') => {
                return Err(FormatError::entry(i, &e.name, "the name has a NUL byte"));
            }
            c => comps.push(c),
        }
    }
    Ok(comps)
}

/// The tree under construction, with provisional ids.
struct Tree {
    nodes: Vec<Node>,
    /// Which nodes are whiteouts (a real entry may replace them, even as a parent).
    whiteout: Vec<bool>,
    /// Which nodes are directories no entry has described (yet).
    implicit: Vec<bool>,
    /// TOC indexes of each file node's data entries.
    data: Vec<Vec<usize>>,
    prefetch: Prefetch,
}

impl Tree {
    fn new() -> Tree {
        let mut tree = Tree {
            nodes: Vec::new(),
            whiteout: Vec::new(),
            implicit: Vec::new(),
            data: Vec::new(),
            prefetch: Prefetch::Unspecified,
        };
        tree.add(implicit_dir());
        tree
    }

    fn add(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.whiteout.push(false);
        self.implicit.push(false);
        self.data.push(Vec::new());
        self.nodes.len() - 1
    }

    fn child(&self, dir: usize, name: &str) -> Option<usize> {
        match &self.nodes[dir].kind {
            NodeKind::Dir { children } => children.get(OsStr::new(name)).map(|&c| c as usize),
            _ => None,
        }
    }

    fn link(&mut self, dir: usize, name: &str, node: usize) {
        if let NodeKind::Dir { children } = &mut self.nodes[dir].kind {
            children.insert(name.into(), node as NodeId);
        }
    }

    fn is_dir(&self, n: usize) -> bool {
        matches!(self.nodes[n].kind, NodeKind::Dir { .. })
    }

    /// Applies one non-chunk entry; returns the file node its chunks belong to, if any.
    fn apply(
        &mut self,
        i: usize,
        e: &TocEntry,
        comps: &[&str],
    ) -> Result<Option<usize>, FormatError> {
        let Some((&base, parents)) = comps.split_last() else {
            if e.kind != "dir" {
                return Err(FormatError::entry(
                    i,
                    &e.name,
                    "the root must be a dir entry",
                ));
            }
            // containerd's `archive.Apply`: "file ignored: resolved to root".
            return Ok(None);
        };
        let parent = self.ensure_dirs(i, e, parents)?;
        if base == OPAQUE {
            let xattrs = &mut self.nodes[parent].xattrs;
            xattrs.insert(OPAQUE_XATTR.into(), b"y".to_vec());
            return Ok(None);
        }
        if let Some(target) = base.strip_prefix(WHITEOUT) {
            self.whiteout(i, e, parent, target)?;
            return Ok(None);
        }
        if parent == ROOT as usize && e.kind == "reg" && self.landmark(base, e) {
            return Ok(None);
        }
        match e.kind.as_str() {
            "dir" => match self.child(parent, base) {
                Some(d) if self.is_dir(d) => self.merge_attrs(d, i, e)?,
                _ => {
                    let d = self.add(attrs(i, e, dir_kind(), e.mode)?);
                    self.link(parent, base, d);
                }
            },
            "hardlink" => {
                let target = self.link_target(i, e)?;
                self.merge_attrs(target, i, e)?;
                self.link(parent, base, target);
            }
            _ => {
                let (kind, mode) = leaf_kind(i, e)?;
                let n = self.add(attrs(i, e, kind, mode)?);
                if e.kind == "reg" && e.size > 0 {
                    self.data[n].push(i);
                }
                self.link(parent, base, n);
                return Ok((e.kind == "reg").then_some(n));
            }
        }
        Ok(None)
    }

    /// Walks `parents` from the root, creating missing directories; refuses non-directories.
    fn ensure_dirs(
        &mut self,
        i: usize,
        e: &TocEntry,
        parents: &[&str],
    ) -> Result<usize, FormatError> {
        let mut at = ROOT as usize;
        for (depth, &name) in parents.iter().enumerate() {
            at = match self.child(at, name) {
                Some(d) if self.is_dir(d) => d,
                Some(w) if !self.whiteout[w] => {
                    let path = parents[..=depth].join("/");
                    let problem = format!("its parent {path:?} is not a directory in this layer");
                    return Err(FormatError::entry(i, &e.name, problem));
                }
                // Missing, or a whiteout that this layer's own entry overrides.
                _ => {
                    let d = self.add(implicit_dir());
                    self.implicit[d] = true;
                    self.link(at, name, d);
                    d
                }
            };
        }
        Ok(at)
    }

    /// `.wh.<target>` in `dir`: a 0/0 character device, unless `target` exists in this layer.
    fn whiteout(
        &mut self,
        i: usize,
        e: &TocEntry,
        dir: usize,
        target: &str,
    ) -> Result<(), FormatError> {
        if target.is_empty() {
            return Err(FormatError::entry(
                i,
                &e.name,
                "a whiteout must name a file",
            ));
        }
        if self.child(dir, target).is_some() {
            return Ok(());
        }
        let mut node = attrs(i, e, NodeKind::CharDev { major: 0, minor: 0 }, 0)?;
        node.xattrs.clear();
        let n = self.add(node);
        self.whiteout[n] = true;
        self.link(dir, target, n);
        Ok(())
    }

    /// Records a landmark in the root; false if `name` is not one.
    fn landmark(&mut self, name: &str, e: &TocEntry) -> bool {
        match name {
            NO_PREFETCH_LANDMARK => self.prefetch = Prefetch::Nothing,
            PREFETCH_LANDMARK if self.prefetch != Prefetch::Nothing => {
                self.prefetch = Prefetch::UpTo(e.offset)
            }
            PREFETCH_LANDMARK => {}
            _ => return false,
        }
        true
    }

    /// The existing non-directory a hard link entry names.
    fn link_target(&self, i: usize, e: &TocEntry) -> Result<usize, FormatError> {
        let bad = |why: &str| {
            let problem = format!("hard link target {:?} {why}", e.link_name);
            FormatError::entry(i, &e.name, problem)
        };
        let comps = clean(i, e, &e.link_name)?;
        let mut at = Some(ROOT as usize);
        for name in &comps {
            at = at.and_then(|d| self.child(d, name));
        }
        match at {
            _ if comps.is_empty() => Err(bad("is the root")),
            Some(n) if self.is_dir(n) => Err(bad("is a directory")),
            Some(n) if !self.whiteout[n] => Ok(n),
            _ => Err(bad("is not an earlier entry of this layer")),
        }
    }

    /// Applies `e`'s owner, mode, mtime and xattrs to an existing node.
    fn merge_attrs(&mut self, n: usize, i: usize, e: &TocEntry) -> Result<(), FormatError> {
        let mtime = mtime(i, e)?;
        self.implicit[n] = false;
        let node = &mut self.nodes[n];
        if !matches!(node.kind, NodeKind::Symlink { .. }) {
            node.mode = e.mode & 0o7777;
        }
        (node.uid, node.gid, node.mtime) = (e.uid, e.gid, mtime);
        node.xattrs.extend(unpacked_xattrs(e, &node.kind));
        Ok(())
    }

    /// Keeps what the root reaches, breadth first; computes link counts.
    fn compact(self) -> Result<Built, FormatError> {
        let Tree {
            nodes,
            data,
            prefetch,
            implicit,
            ..
        } = self;
        let mut new_id: Vec<Option<NodeId>> = vec![None; nodes.len()];
        let mut order = vec![ROOT as usize];
        let mut placed: Vec<(NodeId, OsString)> = vec![(ROOT, OsString::new())];
        let mut refs = vec![0u32; nodes.len()];
        new_id[ROOT as usize] = Some(ROOT);
        let mut next = 0;
        while let Some(&old) = order.get(next) {
            if let NodeKind::Dir { children } = &nodes[old].kind {
                for (name, &child) in children {
                    let child = child as usize;
                    refs[child] += 1;
                    if new_id[child].is_none() {
                        new_id[child] = Some(to_id(order.len())?);
                        order.push(child);
                        placed.push((to_id(next)?, name.clone()));
                    }
                }
            }
            next += 1;
        }
        let mut out = Vec::with_capacity(order.len());
        let mut raw_chunks = Vec::new();
        let mut implicit_dirs = Vec::new();
        for (pos, (&old, (parent, name))) in order.iter().zip(placed).enumerate() {
            let mut node = nodes[old].clone();
            (node.parent, node.name) = (parent, name);
            node.nlink = refs[old].max(1);
            if let NodeKind::Dir { children } = &mut node.kind {
                let mut subdirs = 0;
                for child in children.values_mut() {
                    let old_child = *child as usize;
                    subdirs += u32::from(matches!(nodes[old_child].kind, NodeKind::Dir { .. }));
                    *child = new_id[old_child].unwrap_or(ROOT);
                }
                node.nlink = 2 + subdirs;
            }
            if matches!(node.kind, NodeKind::File { .. }) {
                raw_chunks.push((to_id(pos)?, data[old].clone()));
            }
            if implicit[old] {
                implicit_dirs.push(to_id(pos)?);
            }
            out.push(node);
        }
        Ok(Built {
            nodes: out,
            raw_chunks,
            implicit_dirs,
            prefetch,
        })
    }
}

fn to_id(n: usize) -> Result<NodeId, FormatError> {
    NodeId::try_from(n).map_err(|_| FormatError::entry(n, "", "the layer has over 2^32 nodes"))
}

fn dir_kind() -> NodeKind {
    NodeKind::Dir {
        children: BTreeMap::new(),
    }
}

/// A directory no entry describes: 0755, root-owned, at the epoch.
fn implicit_dir() -> Node {
    Node {
        parent: ROOT,
        name: OsString::new(),
        kind: dir_kind(),
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: UNIX_EPOCH,
        xattrs: BTreeMap::new(),
        nlink: 0,
    }
}

/// The kind and permission bits of a `reg`, `symlink`, `char`, `block` or `fifo` entry.
fn leaf_kind(i: usize, e: &TocEntry) -> Result<(NodeKind, u32), FormatError> {
    let dev = (e.dev_major, e.dev_minor);
    let kind = match e.kind.as_str() {
        "reg" => NodeKind::File {
            size: e.size,
            chunks: 0..0,
        },
        "symlink" if e.link_name.is_empty() => {
            return Err(FormatError::entry(i, &e.name, "a symlink needs a linkName"));
        }
        // Symlink permissions are always 0777 on Linux; the header's mode is not applied.
        "symlink" => {
            return Ok((
                NodeKind::Symlink {
                    target: e.link_name.clone().into(),
                },
                0o777,
            ));
        }
        "char" => NodeKind::CharDev {
            major: dev.0,
            minor: dev.1,
        },
        "block" => NodeKind::BlockDev {
            major: dev.0,
            minor: dev.1,
        },
        "fifo" => NodeKind::Fifo,
        other => {
            let problem = format!(
                "unknown type {other:?} (expected dir, reg, symlink, hardlink, char, block, fifo \
                 or chunk)"
            );
            return Err(FormatError::entry(i, &e.name, problem));
        }
    };
    Ok((kind, e.mode & 0o7777))
}

/// A node of `kind` with `e`'s owner, mtime and xattrs and the given mode.
fn attrs(i: usize, e: &TocEntry, kind: NodeKind, mode: u32) -> Result<Node, FormatError> {
    Ok(Node {
        xattrs: unpacked_xattrs(e, &kind).collect(),
        kind,
        mode: mode & 0o7777,
        uid: e.uid,
        gid: e.gid,
        mtime: mtime(i, e)?,
        ..implicit_dir()
    })
}

/// The xattrs of `e` that containerd's unpacking sets on a node of `kind` (`archive.Apply`,
/// `setxattr`): it refuses every `trusted.*` name, and skips `user.*` names where the kernel
/// refuses them, on anything but regular files and directories.
fn unpacked_xattrs<'a>(
    e: &'a TocEntry,
    kind: &NodeKind,
) -> impl Iterator<Item = (OsString, Vec<u8>)> + 'a {
    let user_ok = matches!(kind, NodeKind::File { .. } | NodeKind::Dir { .. });
    e.xattrs
        .iter()
        .filter(move |(k, _)| !k.starts_with("trusted.") && (user_ok || !k.starts_with("user.")))
        .map(|(k, v)| (k.into(), v.clone()))
}

fn mtime(i: usize, e: &TocEntry) -> Result<SystemTime, FormatError> {
    if e.modtime.is_empty() {
        return Ok(UNIX_EPOCH);
    }
    parse_rfc3339(&e.modtime).ok_or_else(|| {
        let problem = format!("modtime {:?} is not an RFC 3339 time", e.modtime);
        FormatError::entry(i, &e.name, problem)
    })
}
