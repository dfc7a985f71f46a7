//! [`LayerIndex`]: the filesystem one eStargz layer shows, built once from its TOC.
//!
//! The index is what the FUSE lower directory serves and what the chunk cache is keyed by. It is
//! immutable and plain data (`Send + Sync`, no locks): nodes in a vector addressed by [`NodeId`],
//! every regular file's chunks in one contiguous run of [`LayerIndex::chunks`], and the gzip
//! members those chunks live in. It shows exactly what containerd's overlay unpacking of the
//! same layer shows (see [`super::tree`] for the rules), minus the prefetch landmarks.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use super::error::FormatError;
use super::toc::Toc;
use super::{chunks, tree};

/// Index of a node; 0 is the root directory.
pub type NodeId = u32;

/// The root directory's id.
pub const ROOT: NodeId = 0;

/// A file, directory, link or device of the layer. Hard links share one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The directory it was first found in (the root's parent is the root).
    pub parent: NodeId,
    /// Its name in `parent` (empty for the root).
    pub name: OsString,
    /// What it is.
    pub kind: NodeKind,
    /// Permission bits with setuid (04000), setgid (02000) and sticky (01000); no type bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: SystemTime,
    /// Extended attributes (including `trusted.overlay.opaque` for opaque directories).
    pub xattrs: BTreeMap<OsString, Vec<u8>>,
    /// Links to it: names for files; 2 + child directories for directories.
    pub nlink: u32,
}

/// The type of a [`Node`], with what that type needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory and its entries by name.
    Dir {
        /// Child name → node.
        children: BTreeMap<OsString, NodeId>,
    },
    /// A regular file.
    File {
        /// Length in bytes.
        size: u64,
        /// Its chunks in [`LayerIndex::chunks`], sorted by file offset; empty for empty files.
        chunks: Range<u32>,
    },
    /// A symbolic link.
    Symlink {
        /// The link's target, verbatim.
        target: OsString,
    },
    /// A character device; `{0, 0}` is an overlay whiteout.
    CharDev {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    BlockDev {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

/// A piece of a regular file stored contiguously in one gzip member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Index into [`LayerIndex::members`].
    pub member: u32,
    /// Where the chunk starts in the decompressed member.
    pub inner_offset: u64,
    /// Where the chunk starts in its file.
    pub file_offset: u64,
    /// Its length (uncompressed).
    pub size: u64,
    /// sha256 of its bytes.
    pub digest: [u8; 32],
    /// Its offset were the layer's chunks packed in blob order (chunks of one member are
    /// contiguous this way; the last one ends at [`LayerIndex::data_size`]).
    pub slot: u64,
}

/// The compressed byte range `[offset, end)` of the blob that decompresses to a member's data.
///
/// It runs to the next member any TOC entry starts (or to the TOC), so it may end with gzip
/// members that hold only tar headers; [`super::inflate_member`] decompresses them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// First byte in the blob.
    pub offset: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Member {
    /// Its length in the blob.
    pub fn len(&self) -> u64 {
        self.end - self.offset
    }

    /// Never true for a member of an index (kept for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.end == self.offset
    }
}

/// The attributes a directory passes to an implicit directory of an upper layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirAttrs {
    /// Permission bits (type bits are ignored).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: SystemTime,
    /// Extended attributes; `trusted.*` ones are not passed on.
    pub xattrs: BTreeMap<OsString, Vec<u8>>,
}

impl From<&Node> for DirAttrs {
    fn from(n: &Node) -> Self {
        DirAttrs {
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            mtime: n.mtime,
            xattrs: n.xattrs.clone(),
        }
    }
}

/// What the layer asks to be prefetched, from its landmark file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefetch {
    /// No landmark: the producer said nothing.
    Unspecified,
    /// `.no.prefetch.landmark`: prefetch nothing.
    Nothing,
    /// `.prefetch.landmark`: the blob's bytes `[0, end)` hold the files to prefetch.
    UpTo(u64),
}

/// The filesystem view of one eStargz layer.
#[derive(Debug, Clone)]
pub struct LayerIndex {
    pub(crate) nodes: Vec<Node>,
    pub(crate) chunks: Vec<Chunk>,
    pub(crate) members: Vec<Member>,
    /// Chunk indexes ordered by slot.
    pub(crate) by_slot: Vec<u32>,
    /// For each member, its chunks' range in `by_slot`.
    pub(crate) member_chunks: Vec<Range<u32>>,
    pub(crate) data_size: u64,
    /// Directories no TOC entry describes.
    pub(crate) implicit_dirs: Vec<NodeId>,
    pub(crate) toc_offset: u64,
    pub(crate) prefetch: Prefetch,
}

impl LayerIndex {
    /// Builds the index of the layer whose TOC is `toc` and starts at `toc_offset` in the blob.
    pub fn from_toc(toc: &Toc, toc_offset: u64) -> Result<Self, FormatError> {
        let built = tree::build(&toc.entries)?;
        let tree::Built {
            nodes,
            raw_chunks,
            implicit_dirs,
            prefetch,
        } = built;
        let placed = chunks::place(&toc.entries, &nodes, raw_chunks, toc_offset)?;
        let mut index = LayerIndex {
            nodes,
            chunks: placed.chunks,
            members: placed.members,
            by_slot: placed.by_slot,
            member_chunks: placed.member_chunks,
            data_size: placed.data_size,
            implicit_dirs,
            toc_offset,
            prefetch,
        };
        for (id, range) in placed.file_ranges {
            if let NodeKind::File { chunks, .. } = &mut index.nodes[id as usize].kind {
                *chunks = range;
            }
        }
        Ok(index)
    }

    /// The node `id`. Panics if `id` is not below [`Self::node_count`] (ids come from the index).
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    /// The child `name` of directory `dir`; `None` if absent or `dir` is not a directory.
    pub fn lookup(&self, dir: NodeId, name: &OsStr) -> Option<NodeId> {
        match &self.nodes.get(dir as usize)?.kind {
            NodeKind::Dir { children } => children.get(name).copied(),
            _ => None,
        }
    }

    /// Every chunk of every file, each file's chunks contiguous.
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    /// Every gzip member holding file data, by blob offset.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The chunks of file `id` in file order; empty for other nodes and empty files.
    pub fn file_chunks(&self, id: NodeId) -> &[Chunk] {
        match self.nodes.get(id as usize).map(|n| &n.kind) {
            Some(NodeKind::File { chunks, .. }) => {
                &self.chunks[chunks.start as usize..chunks.end as usize]
            }
            _ => &[],
        }
    }

    /// The chunk of file `id` holding byte `offset` of the file, with its index in
    /// [`Self::chunks`]; `None` past the end or for non-files.
    pub fn file_chunk_at(&self, id: NodeId, offset: u64) -> Option<(u32, &Chunk)> {
        let NodeKind::File { chunks, .. } = &self.nodes.get(id as usize)?.kind else {
            return None;
        };
        let file = self.file_chunks(id);
        let k = file.partition_point(|c| c.file_offset + c.size <= offset);
        let chunk = file.get(k).filter(|c| c.file_offset <= offset)?;
        Some((chunks.start + k as u32, chunk))
    }

    /// The chunks stored in member `member` (indexes into [`Self::chunks`]), by inner offset:
    /// everything one fetch of that member can fill.
    pub fn member_chunks(&self, member: u32) -> impl Iterator<Item = u32> + '_ {
        let range = self
            .member_chunks
            .get(member as usize)
            .cloned()
            .unwrap_or(0..0);
        self.by_slot[range.start as usize..range.end as usize]
            .iter()
            .copied()
    }

    /// Total uncompressed size of all chunks (what the layer takes in a cache).
    pub fn data_size(&self) -> u64 {
        self.data_size
    }

    /// Number of nodes (ids are `0..node_count`).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Where the TOC starts in the blob (every member ends at or before it).
    pub fn toc_offset(&self) -> u64 {
        self.toc_offset
    }

    /// What the layer's landmark asks to prefetch.
    pub fn prefetch(&self) -> Prefetch {
        self.prefetch
    }

    /// Directories no TOC entry describes (made as parents of other entries; the root is not
    /// one), by id. They start as 0755, root-owned, at the epoch.
    pub fn implicit_dirs(&self) -> &[NodeId] {
        &self.implicit_dirs
    }

    /// Gives implicit directory `id` the attributes of the same path in a lower layer, as
    /// containerd's unpacking does (`mkparent` with `WithParents`): mode, owner, mtime, and the
    /// xattrs outside `trusted.*`. Call before sharing the index; other nodes are left alone.
    pub fn inherit_dir_attrs(&mut self, id: NodeId, lower: &DirAttrs) {
        if self.implicit_dirs.binary_search(&id).is_err() {
            return;
        }
        let node = &mut self.nodes[id as usize];
        (node.mode, node.uid, node.gid, node.mtime) =
            (lower.mode & 0o7777, lower.uid, lower.gid, lower.mtime);
        for (k, v) in &lower.xattrs {
            if !k.as_encoded_bytes().starts_with(b"trusted.") {
                node.xattrs.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }

    /// [`Self::inherit_dir_attrs`] for every implicit directory from `lowers`, the layers below
    /// this one, topmost first (already resolved themselves): the first layer that has the path
    /// decides; if it is not a directory there, the defaults stay, as in containerd.
    pub fn inherit_from(&mut self, lowers: &[&LayerIndex]) {
        for id in self.implicit_dirs.clone() {
            let path = self.path_of(id);
            let found = lowers.iter().find_map(|l| Some((l, l.find(&path)?)));
            if let Some((lower, at)) = found {
                let node = lower.node(at);
                if matches!(node.kind, NodeKind::Dir { .. }) {
                    self.inherit_dir_attrs(id, &DirAttrs::from(node));
                }
            }
        }
    }

    /// The node at `path` (relative to the layer root; a leading `/` is ignored).
    pub fn find(&self, path: &Path) -> Option<NodeId> {
        path.components().try_fold(ROOT, |dir, c| match c {
            Component::RootDir | Component::CurDir => Some(dir),
            Component::Normal(name) => self.lookup(dir, name),
            Component::ParentDir | Component::Prefix(_) => None,
        })
    }

    /// The path of `id` from the layer root (`/` for the root), for logs.
    pub fn path_of(&self, id: NodeId) -> PathBuf {
        path_in(&self.nodes, id)
    }

    /// The chunks of each file stored in more than one chunk, in file order (hard links once).
    pub fn multi_chunk_files(&self) -> impl Iterator<Item = &[Chunk]> + '_ {
        self.nodes.iter().filter_map(|n| match &n.kind {
            NodeKind::File { chunks, .. } if chunks.len() > 1 => {
                Some(&self.chunks[chunks.start as usize..chunks.end as usize])
            }
            _ => None,
        })
    }

    /// The file holding chunk `chunk` (an index in [`LayerIndex::chunks`]); a scan of the
    /// nodes, for the admin API's occasional look-ups.
    pub fn file_of_chunk(&self, chunk: u32) -> Option<NodeId> {
        self.nodes
            .iter()
            .position(
                |n| matches!(&n.kind, NodeKind::File { chunks, .. } if chunks.contains(&chunk)),
            )
            .and_then(|i| NodeId::try_from(i).ok())
    }
}

/// The path of `id` in `nodes`, whose parents have smaller ids than their children.
pub(crate) fn path_in(nodes: &[Node], id: NodeId) -> PathBuf {
    let mut names = Vec::new();
    let mut at = id;
    while at != ROOT {
        let Some(node) = nodes.get(at as usize).filter(|n| n.parent < at) else {
            break;
        };
        names.push(node.name.as_os_str());
        at = node.parent;
    }
    let mut path = PathBuf::from("/");
    path.extend(names.into_iter().rev());
    path
}
