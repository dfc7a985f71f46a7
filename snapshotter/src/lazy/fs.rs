//! The FUSE filesystem of one lazy layer: a read-only tree built from the layer's TOC, whose file
//! contents come from [`LayerData`].
//!
//! It must look to OverlayFS exactly like the layer unpacked into a directory: whiteouts are
//! character devices 0/0, opaque directories carry `trusted.overlay.opaque=y`, hard links share
//! an inode, and every mode, owner, time and xattr comes from the TOC as containerd's unpacking
//! applies it (`estargz::tree` has the rules). The tree never changes, so the kernel may cache
//! entries, attributes and pages for as long as it likes.
//!
//! Runs on the session's own threads (`fuser-N`), never on the async runtime; a read that has to
//! fetch blocks only its thread.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, ReplyXattr, Request,
};

use crate::estargz::{LayerIndex, Node, NodeId, NodeKind};
use crate::lazy::data::LayerData;

/// The tree is immutable: let the kernel cache lookups and attributes for a long time.
const TTL: Duration = Duration::from_secs(3600);

/// A mounted lazy layer's filesystem.
#[derive(Debug)]
pub struct LazyFs {
    data: Arc<LayerData>,
}

impl LazyFs {
    /// A filesystem serving `data`'s index.
    pub fn new(data: Arc<LayerData>) -> LazyFs {
        LazyFs { data }
    }

    fn index(&self) -> &LayerIndex {
        self.data.index()
    }

    /// The node behind an inode number (inode = node id + 1; the root is FUSE's inode 1).
    fn node_id(&self, ino: INodeNo) -> Option<NodeId> {
        let id = u64::from(ino).checked_sub(1)?;
        let id = NodeId::try_from(id).ok()?;
        ((id as usize) < self.index().node_count()).then_some(id)
    }

    fn attr(&self, id: NodeId) -> FileAttr {
        file_attr(id, self.index().node(id))
    }
}

/// The attributes the kernel sees for `node`.
pub fn file_attr(id: NodeId, node: &Node) -> FileAttr {
    let (kind, size, rdev) = match &node.kind {
        NodeKind::Dir { .. } => (FileType::Directory, 4096, 0),
        NodeKind::File { size, .. } => (FileType::RegularFile, *size, 0),
        NodeKind::Symlink { target } => (FileType::Symlink, target.len() as u64, 0),
        NodeKind::CharDev { major, minor } => (FileType::CharDevice, 0, encode_dev(*major, *minor)),
        NodeKind::BlockDev { major, minor } => {
            (FileType::BlockDevice, 0, encode_dev(*major, *minor))
        }
        NodeKind::Fifo => (FileType::NamedPipe, 0, 0),
    };
    FileAttr {
        ino: INodeNo(u64::from(id) + 1),
        size,
        blocks: size.div_ceil(512),
        atime: node.mtime,
        mtime: node.mtime,
        ctime: node.mtime,
        crtime: UNIX_EPOCH,
        kind,
        perm: (node.mode & 0o7777) as u16,
        nlink: node.nlink,
        uid: node.uid,
        gid: node.gid,
        rdev,
        blksize: 4096,
        flags: 0,
    }
}

/// The kernel's `new_encode_dev`, which FUSE's `rdev` uses.
fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

fn kind_of(node: &Node) -> FileType {
    match node.kind {
        NodeKind::Dir { .. } => FileType::Directory,
        NodeKind::File { .. } => FileType::RegularFile,
        NodeKind::Symlink { .. } => FileType::Symlink,
        NodeKind::CharDev { .. } => FileType::CharDevice,
        NodeKind::BlockDev { .. } => FileType::BlockDevice,
        NodeKind::Fifo => FileType::NamedPipe,
    }
}

/// Answers an xattr request: the size when `size` is 0, the bytes when they fit, ERANGE if not.
fn reply_xattr(reply: ReplyXattr, size: u32, bytes: &[u8]) {
    if size == 0 {
        reply.size(bytes.len() as u32);
    } else if bytes.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(bytes);
    }
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(dir) = self.node_id(parent) else {
            return reply.error(Errno::ENOENT);
        };
        match self.index().lookup(dir, name) {
            Some(id) => reply.entry(&TTL, &self.attr(id), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node_id(ino) {
            Some(id) => reply.attr(&TTL, &self.attr(id)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.node_id(ino).map(|id| &self.index().node(id).kind) {
            Some(NodeKind::Symlink { target }) => reply.data(target.as_bytes()),
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.node_id(ino) {
            // Contents never change: keep the page cache across opens.
            Some(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(id) = self.node_id(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match self.data.read_by(req.pid(), id, offset, size) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => {
                crate::lazy::log_read_error(&self.data, &self.index().path_of(id), &e);
                reply.error(Errno::EIO);
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: fuser::ReplyEmpty,
    ) {
        // Read-only and stateless: nothing to flush. (fuser's default logs a warning per call.)
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(id) = self.node_id(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let node = self.index().node(id);
        let NodeKind::Dir { children } = &node.kind else {
            return reply.error(Errno::ENOTDIR);
        };
        let dots = [
            (id, FileType::Directory, OsStr::new(".")),
            (node.parent, FileType::Directory, OsStr::new("..")),
        ];
        let entries =
            dots.into_iter()
                .chain(children.iter().map(|(name, &child)| {
                    (child, kind_of(self.index().node(child)), name.as_os_str())
                }));
        for (i, (child, kind, name)) in entries.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(u64::from(child) + 1), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(id) = self.node_id(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match self.index().node(id).xattrs.get(name) {
            Some(value) => reply_xattr(reply, size, value),
            None => reply.error(Errno::NO_XATTR),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let Some(id) = self.node_id(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let mut names = Vec::new();
        for name in self.index().node(id).xattrs.keys() {
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        reply_xattr(reply, size, &names);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_encode_like_the_kernel() {
        // new_encode_dev(MKDEV(1, 3)) = 0x103 (/dev/null); large minors go to the high bits.
        assert_eq!(encode_dev(1, 3), 0x103);
        assert_eq!(encode_dev(0, 0), 0);
        assert_eq!(encode_dev(8, 0x1234), 0x34 | (8 << 8) | (0x1200 << 12));
    }
}
