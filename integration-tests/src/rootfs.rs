//! A mounted root filesystem read into a listing that two mounts of the same image can be
//! compared by, and the comparison.
//!
//! [`walk`] lists every path below a mount point with its type, permission bits (setuid, setgid
//! and sticky included), owner, size, device numbers, mtime (with nanoseconds), link count,
//! xattrs, symlink target and the sha256 of its content, reading every regular file whole, and
//! groups the paths that share an inode. [`diff`] lists every difference between two listings,
//! except the few an [`Expected`] names, each of which must really be there.
//!
//! Not compared, because no two filesystems can agree on them: inode and device numbers (only
//! which paths share an inode is), atime (reading changes it) and ctime (no unpacker can set
//! it), block counts, and the size of directories (ext4 counts its blocks, FUSE reports 4096).
//! [`unpack_time_dirs`] names the directories whose mtime containerd's unpacking leaves at the
//! wall-clock time of the unpack, so the only mtime that is not compared is one no layer records.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};

/// The type of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// A character device.
    CharDev,
    /// A block device.
    BlockDev,
    /// A named pipe.
    Fifo,
    /// A unix socket.
    Socket,
}

/// What [`walk`] records for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its type.
    pub kind: Kind,
    /// Permission bits with setuid (04000), setgid (02000) and sticky (01000).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Length (symlinks: of the target); `None` for directories.
    pub size: Option<u64>,
    /// Link count.
    pub nlink: u64,
    /// Device (major, minor) of a device node.
    pub rdev: Option<(u64, u64)>,
    /// Modification time: seconds and nanoseconds since the epoch.
    pub mtime: (i64, i64),
    /// Extended attributes (not following symlinks).
    pub xattrs: BTreeMap<OsString, Vec<u8>>,
    /// A symlink's target.
    pub target: Option<PathBuf>,
    /// sha256 (hex) of a regular file's content.
    pub sha256: Option<String>,
}

/// A walked root filesystem.
#[derive(Debug, Default)]
pub struct Tree {
    /// Every path, absolute from the mount point (`/` is the root itself).
    pub entries: BTreeMap<PathBuf, Entry>,
    /// Paths that share an inode (non-directories only), each group sorted; groups of two or
    /// more.
    pub hard_links: BTreeSet<Vec<PathBuf>>,
    /// What could not be read (a path and the OS error), each a difference in itself.
    pub errors: Vec<String>,
    /// Regular files read whole.
    pub files_read: usize,
    /// Bytes read from them.
    pub bytes_read: u64,
}

/// Threads reading file contents (a lazy mount serves several demand fetches at once).
const READERS: usize = 4;

/// Lists everything below `root` (a mount point), reading every regular file whole.
pub fn walk(root: &Path) -> Tree {
    let mut tree = Tree::default();
    let mut inodes: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    let mut stack = vec![PathBuf::from("/")];
    while let Some(rel) = stack.pop() {
        let path = on_disk(root, &rel);
        let md = match std::fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(e) => {
                tree.errors.push(format!("lstat {rel:?}: {e}"));
                continue;
            }
        };
        let entry = read_entry(&path, &rel, &md, &mut tree);
        if entry.kind == Kind::Dir {
            push_children(&path, &rel, &mut stack, &mut tree.errors);
        } else {
            inodes
                .entry((md.dev(), md.ino()))
                .or_default()
                .push(rel.clone());
        }
        tree.entries.insert(rel, entry);
    }
    tree.hard_links = inodes
        .into_values()
        .filter(|paths| paths.len() > 1)
        .map(|mut paths| {
            paths.sort();
            paths
        })
        .collect();
    hash_files(root, &mut tree);
    tree.errors.sort();
    tree
}

/// Pushes the children of directory `rel` (at `path`) on `stack`.
fn push_children(path: &Path, rel: &Path, stack: &mut Vec<PathBuf>, errors: &mut Vec<String>) {
    let dir = match std::fs::read_dir(path) {
        Ok(dir) => dir,
        Err(e) => return errors.push(format!("opendir {rel:?}: {e}")),
    };
    for child in dir {
        match child {
            Ok(child) => stack.push(rel.join(child.file_name())),
            Err(e) => errors.push(format!("readdir {rel:?}: {e}")),
        }
    }
}

/// Fills in the sha256 of every regular file of `tree`, reading them on [`READERS`] threads.
fn hash_files(root: &Path, tree: &mut Tree) {
    let files: Vec<PathBuf> = tree
        .entries
        .iter()
        .filter(|(_, e)| e.kind == Kind::File)
        .map(|(p, _)| p.clone())
        .collect();
    let next = AtomicUsize::new(0);
    let read = || {
        let mut out = Vec::new();
        while let Some(rel) = files.get(next.fetch_add(1, Ordering::Relaxed)) {
            out.push((rel, hash_file(&on_disk(root, rel))));
        }
        out
    };
    let results: Vec<_> = std::thread::scope(|s| {
        let readers: Vec<_> = (0..READERS).map(|_| s.spawn(read)).collect();
        readers
            .into_iter()
            .flat_map(|r| r.join().expect("reader thread panicked"))
            .collect()
    });
    for (rel, result) in results {
        match result {
            Ok((digest, len)) => {
                if let Some(e) = tree.entries.get_mut(rel) {
                    e.sha256 = Some(digest);
                }
                tree.files_read += 1;
                tree.bytes_read += len;
            }
            Err(e) => tree.errors.push(format!("read {rel:?}: {e}")),
        }
    }
}

/// `root` joined with `rel` (which starts with `/`).
fn on_disk(root: &Path, rel: &Path) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(
        rel.components()
            .filter(|c| matches!(c, Component::Normal(_))),
    );
    p
}

fn read_entry(path: &Path, rel: &Path, md: &std::fs::Metadata, tree: &mut Tree) -> Entry {
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_char_device() {
        Kind::CharDev
    } else if ft.is_block_device() {
        Kind::BlockDev
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Socket
    };
    let device = matches!(kind, Kind::CharDev | Kind::BlockDev);
    let mut entry = Entry {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: (kind != Kind::Dir).then_some(md.size()),
        nlink: md.nlink(),
        rdev: device.then(|| {
            let dev = md.rdev();
            (nix::sys::stat::major(dev), nix::sys::stat::minor(dev))
        }),
        mtime: (md.mtime(), md.mtime_nsec()),
        xattrs: BTreeMap::new(),
        target: None,
        sha256: None,
    };
    match xattrs(path) {
        Ok(x) => entry.xattrs = x,
        Err(e) => tree.errors.push(format!("xattrs of {rel:?}: {e}")),
    }
    if kind == Kind::Symlink {
        match std::fs::read_link(path) {
            Ok(t) => entry.target = Some(t),
            Err(e) => tree.errors.push(format!("readlink {rel:?}: {e}")),
        }
    }
    entry
}

fn xattrs(path: &Path) -> std::io::Result<BTreeMap<OsString, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for name in xattr::list(path)? {
        // `get` does not follow symlinks; a value that vanished in between reads as empty.
        let value = xattr::get(path, &name)?.unwrap_or_default();
        out.insert(name, value);
    }
    Ok(out)
}

/// The sha256 (hex) and length of a file's content, read in 1 MiB pieces.
fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), len))
}

/// The differences [`diff`] must find, and only those.
#[derive(Debug, Default)]
pub struct Expected {
    /// Paths only the second tree has; each must be there.
    pub only_in_b: Vec<PathBuf>,
    /// Directories whose mtime the second tree's unpacker set to the time of the unpack (see
    /// [`unpack_time_dirs`]): their mtime is not compared.
    pub unpack_time_dirs: BTreeSet<PathBuf>,
}

/// Every difference between `a` and `b` (named `names.0` and `names.1` in the messages), but
/// those `expected` names, one line each; empty if they are identical.
pub fn diff(a: &Tree, b: &Tree, names: (&str, &str), expected: &Expected) -> Vec<String> {
    let (an, bn) = names;
    let mut out = Vec::new();
    out.extend(a.errors.iter().map(|e| format!("{an}: {e}")));
    out.extend(b.errors.iter().map(|e| format!("{bn}: {e}")));
    for p in &expected.only_in_b {
        if !b.entries.contains_key(p) {
            out.push(format!("{p:?}: expected in {bn}, missing"));
        }
    }
    let only_b: BTreeSet<&PathBuf> = expected.only_in_b.iter().collect();
    for (path, ea) in &a.entries {
        match b.entries.get(path) {
            None => out.push(format!("{path:?}: only in {an} ({:?})", ea.kind)),
            Some(_) if only_b.contains(path) => {
                out.push(format!("{path:?}: expected only in {bn}, also in {an}"))
            }
            Some(eb) => {
                let mtime = !expected.unpack_time_dirs.contains(path);
                out.extend(
                    entry_diffs(ea, eb, mtime)
                        .into_iter()
                        .map(|d| format!("{path:?}: {d} ({an} vs {bn})")),
                );
            }
        }
    }
    for (path, eb) in &b.entries {
        if !a.entries.contains_key(path) && !only_b.contains(path) {
            out.push(format!("{path:?}: only in {bn} ({:?})", eb.kind));
        }
    }
    let strip = |groups: &BTreeSet<Vec<PathBuf>>| -> BTreeSet<Vec<PathBuf>> {
        groups
            .iter()
            .map(|g| g.iter().filter(|p| !only_b.contains(p)).cloned().collect())
            .filter(|g: &Vec<PathBuf>| g.len() > 1)
            .collect()
    };
    let (ga, gb) = (strip(&a.hard_links), strip(&b.hard_links));
    for g in ga.difference(&gb) {
        out.push(format!("hard links {g:?}: one inode in {an} only"));
    }
    for g in gb.difference(&ga) {
        out.push(format!("hard links {g:?}: one inode in {bn} only"));
    }
    out
}

/// The fields of two entries for one path that differ, as `field: a != b`.
fn entry_diffs(a: &Entry, b: &Entry, compare_mtime: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = |name: &str, differ: bool, av: String, bv: String| {
        if differ {
            out.push(format!("{name}: {av} != {bv}"));
        }
    };
    field("type", a.kind != b.kind, dbg(&a.kind), dbg(&b.kind));
    field("mode", a.mode != b.mode, oct(a.mode), oct(b.mode));
    field("uid", a.uid != b.uid, a.uid.to_string(), b.uid.to_string());
    field("gid", a.gid != b.gid, a.gid.to_string(), b.gid.to_string());
    field("size", a.size != b.size, dbg(&a.size), dbg(&b.size));
    field("nlink", a.nlink != b.nlink, dbg(&a.nlink), dbg(&b.nlink));
    field("rdev", a.rdev != b.rdev, dbg(&a.rdev), dbg(&b.rdev));
    let mtime_differs = compare_mtime && a.mtime != b.mtime;
    field("mtime", mtime_differs, time(a.mtime), time(b.mtime));
    field("xattrs", a.xattrs != b.xattrs, xa(&a.xattrs), xa(&b.xattrs));
    field(
        "target",
        a.target != b.target,
        dbg(&a.target),
        dbg(&b.target),
    );
    field(
        "sha256",
        a.sha256 != b.sha256,
        dbg(&a.sha256),
        dbg(&b.sha256),
    );
    out
}

fn dbg(v: &impl std::fmt::Debug) -> String {
    format!("{v:?}")
}

fn oct(mode: u32) -> String {
    format!("{mode:04o}")
}

fn time((s, ns): (i64, i64)) -> String {
    format!("{s}.{ns:09}")
}

fn xa(x: &BTreeMap<OsString, Vec<u8>>) -> String {
    let mut s = String::from("{");
    for (k, v) in x {
        let _ = write!(s, " {}={}", k.to_string_lossy(), hex::encode(v));
    }
    s + " }"
}

/// The directories whose mtime containerd's overlay unpacking of these layers (gzip or plain
/// tar blobs, bottom first) leaves at the wall-clock time of the unpack: the root, whose `./`
/// entry containerd skips, and every directory whose topmost layer has no entry of its own
/// for it (it was made as the parent of another entry, and writing into it set its mtime).
/// Paths are absolute, as in [`Tree`].
pub fn unpack_time_dirs(layers: &[PathBuf]) -> std::io::Result<BTreeSet<PathBuf>> {
    let mut provider: BTreeMap<PathBuf, bool> = BTreeMap::new(); // dir -> explicit in topmost
    for blob in layers {
        let (explicit, parents) = layer_dirs(blob)?;
        for d in parents.union(&explicit) {
            provider.insert(d.clone(), explicit.contains(d));
        }
    }
    let mut out: BTreeSet<PathBuf> = provider
        .into_iter()
        .filter(|(_, explicit)| !explicit)
        .map(|(d, _)| d)
        .collect();
    out.insert(PathBuf::from("/"));
    Ok(out)
}

/// A layer's directories with entries of their own, and the directories that are parents of
/// any entry (whiteouts included).
fn layer_dirs(blob: &Path) -> std::io::Result<(BTreeSet<PathBuf>, BTreeSet<PathBuf>)> {
    let mut file = std::io::BufReader::new(std::fs::File::open(blob)?);
    let gzip = std::io::BufRead::fill_buf(&mut file)?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(reader);
    let (mut explicit, mut parents) = (BTreeSet::new(), BTreeSet::new());
    for entry in archive.entries()? {
        let entry = entry?;
        let name = clean(&entry.path_bytes());
        if entry.header().entry_type().is_dir() {
            explicit.insert(name.clone());
        }
        let mut at = name.parent();
        while let Some(p) = at {
            parents.insert(p.to_path_buf());
            at = p.parent();
        }
    }
    explicit.remove(Path::new("/"));
    parents.remove(Path::new("/"));
    Ok((explicit, parents))
}

/// A tar name (`./a/b/`, `a//b`) as an absolute path (`/a/b`).
fn clean(name: &[u8]) -> PathBuf {
    let mut p = PathBuf::from("/");
    for c in name.split(|&b| b == b'/') {
        if !c.is_empty() && c != b"." {
            p.push(std::ffi::OsStr::from_bytes(c));
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(sha: &str) -> Entry {
        Entry {
            kind: Kind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: Some(1),
            nlink: 1,
            rdev: None,
            mtime: (1, 0),
            xattrs: BTreeMap::new(),
            target: None,
            sha256: Some(sha.into()),
        }
    }

    fn tree(entries: &[(&str, Entry)]) -> Tree {
        Tree {
            entries: entries
                .iter()
                .map(|(p, e)| (PathBuf::from(p), e.clone()))
                .collect(),
            ..Tree::default()
        }
    }

    #[test]
    fn diff_reports_every_difference_and_only_unexpected_ones() {
        let mut suid = file("aa");
        suid.mode = 0o4755;
        let a = tree(&[("/x", suid), ("/y", file("aa")), ("/only-a", file("aa"))]);
        let mut b = tree(&[
            ("/x", file("bb")),
            ("/y", file("aa")),
            ("/meta", file("cc")),
        ]);
        b.hard_links.insert(vec!["/x".into(), "/y".into()]);
        let expected = Expected {
            only_in_b: vec!["/meta".into()],
            ..Expected::default()
        };
        let d = diff(&a, &b, ("lazy", "plain"), &expected);
        let text = d.join("\n");
        assert!(text.contains("\"/x\": mode: 4755 != 0644"), "{text}");
        assert!(text.contains("\"/x\": sha256"), "{text}");
        assert!(text.contains("\"/only-a\": only in lazy"), "{text}");
        assert!(text.contains("one inode in plain only"), "{text}");
        assert!(!text.contains("/meta"), "{text}");
        assert_eq!(d.len(), 4, "{text}");
    }

    #[test]
    fn an_expected_path_must_be_there() {
        let expected = Expected {
            only_in_b: vec!["/meta".into()],
            ..Expected::default()
        };
        let d = diff(&Tree::default(), &Tree::default(), ("a", "b"), &expected);
        assert_eq!(d, vec!["\"/meta\": expected in b, missing".to_owned()]);
    }

    #[test]
    fn mtime_of_unpack_time_dirs_is_not_compared() {
        let mut d1 = file("");
        (d1.kind, d1.size, d1.sha256) = (Kind::Dir, None, None);
        let mut d2 = d1.clone();
        d2.mtime = (99, 5);
        let (a, b) = (tree(&[("/d", d1)]), tree(&[("/d", d2)]));
        assert_eq!(diff(&a, &b, ("a", "b"), &Expected::default()).len(), 1);
        let expected = Expected {
            unpack_time_dirs: [PathBuf::from("/d")].into(),
            ..Expected::default()
        };
        assert!(diff(&a, &b, ("a", "b"), &expected).is_empty());
    }

    #[test]
    fn tar_names_are_cleaned() {
        assert_eq!(clean(b"./a//b/"), PathBuf::from("/a/b"));
        assert_eq!(clean(b"./"), PathBuf::from("/"));
    }
}
