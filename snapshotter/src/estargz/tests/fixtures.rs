//! Test inputs: tars built with the `tar` crate, turned into eStargz blobs by our writer, and
//! read back through the public reader API only.

use std::ffi::OsStr;

use crate::estargz::*;

/// Builds an uncompressed tar entry by entry.
pub struct TarBuilder {
    b: tar::Builder<Vec<u8>>,
}

/// mtime used for every entry unless a test says otherwise (2021-03-04T05:06:07Z).
pub const MTIME: u64 = 1_614_834_367;

impl TarBuilder {
    pub fn new() -> Self {
        TarBuilder {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(100);
        h.set_mtime(MTIME);
        h.set_size(size);
        h
    }

    pub fn dir(mut self, name: &str, mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.b.append_data(&mut h, name, std::io::empty()).unwrap();
        self
    }

    pub fn file(mut self, name: &str, mode: u32, data: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.b.append_data(&mut h, name, data).unwrap();
        self
    }

    /// A regular file whose header name is `name` byte for byte (`/abs`, `./rel`, up to 100
    /// bytes), bypassing the `tar` crate's path normalization.
    pub fn raw_file(mut self, name: &str, data: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, 0o644, data.len() as u64);
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn owned_file(mut self, name: &str, uid: u64, gid: u64, data: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, 0o640, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_username(&format!("user{uid}")).unwrap();
        h.set_groupname(&format!("group{gid}")).unwrap();
        self.b.append_data(&mut h, name, data).unwrap();
        self
    }

    pub fn symlink(mut self, name: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.b.append_link(&mut h, name, target).unwrap();
        self
    }

    /// A hard link; tar writers repeat the target's mode in its header.
    pub fn hardlink(mut self, name: &str, target: &str, mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Link, mode, 0);
        self.b.append_link(&mut h, name, target).unwrap();
        self
    }

    pub fn device(mut self, name: &str, kind: tar::EntryType, major: u32, minor: u32) -> Self {
        let mut h = Self::header(kind, 0o660, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.b.append_data(&mut h, name, std::io::empty()).unwrap();
        self
    }

    pub fn fifo(self, name: &str) -> Self {
        self.device(name, tar::EntryType::Fifo, 0, 0)
    }

    /// PAX xattrs for the next entry.
    pub fn xattrs(mut self, xattrs: &[(&str, &[u8])]) -> Self {
        let records: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
            .collect();
        self.b
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
            .unwrap();
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

/// An eStargz blob written by our writer and opened by our reader.
pub struct Layer {
    pub blob: Vec<u8>,
    pub summary: WriteSummary,
    pub footer: Footer,
    pub toc: Toc,
    pub index: LayerIndex,
}

/// Small chunks so that a few hundred KiB already make multi-chunk files.
pub fn small_chunks() -> WriterOptions {
    WriterOptions {
        chunk_size: 64 << 10,
        compression_level: 1,
        ..WriterOptions::default()
    }
}

impl Layer {
    pub fn write(tar: &[u8], opts: &WriterOptions) -> Layer {
        let mut blob = Vec::new();
        let summary = write_estargz(tar, &mut blob, opts).unwrap();
        Layer::open(blob, summary)
    }

    /// Opens `blob` the way the lazy-pull path does: footer, TOC (checked), index.
    pub fn open(blob: Vec<u8>, summary: WriteSummary) -> Layer {
        let tail = &blob[blob.len().saturating_sub(FOOTER_SIZE as usize)..];
        let footer = parse_footer(tail).unwrap();
        let range = footer.toc_range(blob.len() as u64).unwrap();
        let toc_gz = &blob[range.start as usize..range.end as usize];
        let (toc, digest) = decode_toc(toc_gz, Some(&summary.toc_digest)).unwrap();
        assert_eq!(digest, summary.toc_digest);
        let index = LayerIndex::from_toc(&toc, footer.toc_offset).unwrap();
        Layer {
            blob,
            summary,
            footer,
            toc,
            index,
        }
    }

    /// The node at `path` (`a/b/c`), walking from the root with `lookup`.
    pub fn find(&self, path: &str) -> Option<NodeId> {
        path.split('/')
            .filter(|c| !c.is_empty())
            .try_fold(ROOT, |dir, name| self.index.lookup(dir, OsStr::new(name)))
    }

    pub fn node(&self, path: &str) -> &Node {
        let id = self
            .find(path)
            .unwrap_or_else(|| panic!("{path} not found"));
        self.index.node(id)
    }

    /// The bytes of member `m` as fetched from the blob.
    pub fn member_bytes(&self, m: u32) -> &[u8] {
        let member = self.index.members()[m as usize];
        &self.blob[member.offset as usize..member.end as usize]
    }

    /// A file's content read through `inflate_member` and `chunk_bytes` only.
    pub fn read(&self, id: NodeId) -> Result<Vec<u8>, FormatError> {
        let mut out = Vec::new();
        for chunk in self.index.file_chunks(id) {
            assert_eq!(chunk.file_offset, out.len() as u64, "chunks out of order");
            let inflated = inflate_member(self.member_bytes(chunk.member))?;
            out.extend_from_slice(chunk_bytes(&inflated, chunk)?);
        }
        Ok(out)
    }

    pub fn read_path(&self, path: &str) -> Vec<u8> {
        let id = self
            .find(path)
            .unwrap_or_else(|| panic!("{path} not found"));
        self.read(id).unwrap()
    }

    /// Names in directory `path`, sorted.
    pub fn ls(&self, path: &str) -> Vec<String> {
        match &self.node(path).kind {
            NodeKind::Dir { children } => children
                .keys()
                .map(|k| k.to_string_lossy().into_owned())
                .collect(),
            other => panic!("{path} is not a directory: {other:?}"),
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough to need several members.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
