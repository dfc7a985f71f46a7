//! tar → eStargz, for `augurctl image convert` and for test fixtures.
//!
//! Follows the reference writer (`estargz.Writer.AppendTar`): the tar stream is re-encoded entry
//! by entry into a run of gzip members; each regular file's data starts a new member (so it can
//! be fetched alone) and is cut into `chunk_size` chunks, each in its own member unless
//! `min_chunk_size` lets small ones share one (they then get an `innerOffset`). Tar headers go
//! into whatever member is open. The TOC follows in its own member as a tar entry
//! `stargz.index.json`, closing the tar stream, and the 51-byte footer ends the blob. The input's
//! `stargz.index.json` and landmarks are dropped (they would be stale); a `.no.prefetch.landmark`
//! is added first unless disabled, as `ctr-remote image convert` does.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};
use tar::EntryType;

use super::error::FormatError;
use super::footer::footer_bytes;
use super::sink::{Sink, output};
use super::time::format_rfc3339;
use super::toc::{TOC_TAR_NAME, Toc, TocEntry, encode_toc_json, format_digest};
use super::tree::{NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK};

/// Chunk size when none is given: 4 MiB, as the reference writer.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;
/// Content of a landmark file.
const LANDMARK_CONTENT: [u8; 1] = [0xf];
const BLOCK: u64 = 512;

/// How to write the blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterOptions {
    /// Largest chunk of a regular file (default [`DEFAULT_CHUNK_SIZE`]).
    pub chunk_size: u64,
    /// If non-zero, a chunk starts a new gzip member only once the current one holds this many
    /// compressed bytes; smaller chunks share members (`innerOffset`). Default 0.
    pub min_chunk_size: u64,
    /// gzip level 0-9 (default 9, as the reference writer).
    pub compression_level: u32,
    /// Add `.no.prefetch.landmark` first, as `ctr-remote image convert` does (default true).
    pub no_prefetch_landmark: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            min_chunk_size: 0,
            compression_level: 9,
            no_prefetch_landmark: true,
        }
    }
}

/// What a written blob is, for its image manifest and config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteSummary {
    /// sha256 of the TOC JSON (`sha256:<hex>`): the `toc.digest` layer annotation.
    pub toc_digest: String,
    /// sha256 of the tar the blob decompresses to: the layer's diff ID in the image config.
    pub diff_id: String,
    /// sha256 of the blob itself: the layer descriptor's digest.
    pub blob_digest: String,
    /// Size of the blob in bytes.
    pub blob_size: u64,
    /// Size of the tar the blob decompresses to (TOC entry included): the
    /// `io.containers.estargz.uncompressed-size` layer annotation.
    pub uncompressed_size: u64,
}

/// Converts the uncompressed tar stream `tar` into an eStargz blob written to `out`.
pub fn write_estargz(
    tar: impl Read,
    out: impl Write,
    opts: &WriterOptions,
) -> Result<WriteSummary, FormatError> {
    if opts.chunk_size == 0 || opts.compression_level > 9 {
        return Err(FormatError::Options(format!(
            "chunk_size must be > 0 and compression_level 0-9 (got {} and {})",
            opts.chunk_size, opts.compression_level
        )));
    }
    let mut w = Writer::new(io::BufWriter::new(out), opts.clone());
    if opts.no_prefetch_landmark {
        let meta = Meta::landmark(NO_PREFETCH_LANDMARK);
        w.append(meta, &mut &LANDMARK_CONTENT[..])?;
    }
    let input = |source| FormatError::InputTar { source };
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(input)? {
        let mut entry = entry.map_err(input)?;
        if let Some(meta) = Meta::read(&mut entry)? {
            w.append(meta, &mut entry)?;
        }
    }
    w.finish()
}

/// One input entry, decoded.
#[derive(Debug)]
struct Meta {
    name: String,
    kind: EntryType,
    size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    uname: String,
    gname: String,
    mtime: u64,
    link_name: String,
    dev: (u32, u32),
    xattrs: BTreeMap<String, Vec<u8>>,
    /// PAX records carried over as they are (ACLs, vendor keys).
    other_pax: Vec<(String, Vec<u8>)>,
}

impl Meta {
    fn landmark(name: &str) -> Meta {
        Meta {
            name: name.to_owned(),
            kind: EntryType::Regular,
            size: LANDMARK_CONTENT.len() as u64,
            mode: 0,
            uid: 0,
            gid: 0,
            uname: String::new(),
            gname: String::new(),
            mtime: 0,
            link_name: String::new(),
            dev: (0, 0),
            xattrs: BTreeMap::new(),
            other_pax: Vec::new(),
        }
    }

    /// Decodes `entry`; `None` for entries that are dropped.
    fn read<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Option<Meta>, FormatError> {
        let raw = utf8(&entry.path_bytes(), &entry.path_bytes(), "name")?;
        let kind = entry.header().entry_type();
        let Some(name) = normalize(&raw, kind.is_dir())? else {
            return Ok(None);
        };
        if kind == EntryType::XGlobalHeader || is_reserved(&name) {
            return Ok(None);
        }
        let unsupported = |problem: &str| FormatError::Unsupported {
            name: raw.clone(),
            problem: problem.to_owned(),
        };
        let input = |source| FormatError::InputTar { source };
        let h = entry.header();
        let id = |v: u64| u32::try_from(v).map_err(|_| unsupported("uid or gid is over 2^32"));
        let link_name = match entry.link_name_bytes() {
            Some(l) => utf8(&l, raw.as_bytes(), "link name")?,
            None => String::new(),
        };
        let old = h.as_old();
        let mut meta = Meta {
            kind,
            size: entry.size(),
            mode: blank_is_zero(&old.mode, h.mode().map(u64::from)).map_err(input)? as u32,
            uid: id(blank_is_zero(&old.uid, h.uid()).map_err(input)?)?,
            gid: id(blank_is_zero(&old.gid, h.gid()).map_err(input)?)?,
            uname: String::from_utf8_lossy(h.username_bytes().unwrap_or_default()).into_owned(),
            gname: String::from_utf8_lossy(h.groupname_bytes().unwrap_or_default()).into_owned(),
            mtime: blank_is_zero(&old.mtime, h.mtime()).map_err(input)?,
            link_name,
            dev: if matches!(kind, EntryType::Char | EntryType::Block) {
                let major = h.device_major().map_err(input)?;
                let minor = h.device_minor().map_err(input)?;
                (major.unwrap_or(0), minor.unwrap_or(0))
            } else {
                (0, 0)
            },
            xattrs: BTreeMap::new(),
            other_pax: Vec::new(),
            name,
        };
        meta.read_pax(entry)?;
        if kind == EntryType::Link {
            meta.link_name = normalize(&meta.link_name, false)?
                .ok_or_else(|| unsupported("a hard link to the root"))?;
        }
        Ok(Some(meta))
    }

    /// Takes xattrs and overrides from the entry's PAX records.
    fn read_pax<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), FormatError> {
        let input = |source| FormatError::InputTar { source };
        let Some(records) = entry.pax_extensions().map_err(input)? else {
            return Ok(());
        };
        for record in records {
            let record = record.map_err(input)?;
            let key = String::from_utf8_lossy(record.key_bytes()).into_owned();
            let value = record.value_bytes();
            let text = String::from_utf8_lossy(value);
            let number = || text.split('.').next().and_then(|n| n.parse::<u64>().ok());
            // Like the reference (`ModTime.Round(time.Second)`): half a second rounds up.
            let seconds = || {
                let frac = text.split('.').nth(1).and_then(|f| f.bytes().next());
                number().map(|n| n + u64::from(frac.is_some_and(|d| d >= b'5')))
            };
            match key.as_str() {
                "uid" => self.uid = number().and_then(|n| n.try_into().ok()).unwrap_or(self.uid),
                "gid" => self.gid = number().and_then(|n| n.try_into().ok()).unwrap_or(self.gid),
                "mtime" => self.mtime = seconds().unwrap_or(self.mtime),
                "uname" => self.uname = text.into_owned(),
                "gname" => self.gname = text.into_owned(),
                // Re-derived by the tar writer, or dropped like the reference writer drops them.
                "path" | "linkpath" | "size" | "atime" | "ctime" => {}
                _ => match key.strip_prefix("SCHILY.xattr.") {
                    Some(name) => {
                        self.xattrs.insert(name.to_owned(), value.to_vec());
                    }
                    None => self.other_pax.push((key, value.to_vec())),
                },
            }
        }
        Ok(())
    }

    /// The TOC type of this entry.
    fn toc_type(&self) -> Result<&'static str, FormatError> {
        Ok(match self.kind {
            EntryType::Regular => "reg",
            EntryType::Directory => "dir",
            EntryType::Symlink => "symlink",
            EntryType::Link => "hardlink",
            EntryType::Char => "char",
            EntryType::Block => "block",
            EntryType::Fifo => "fifo",
            other => {
                return Err(FormatError::Unsupported {
                    name: self.name.clone(),
                    problem: format!(
                        "tar entry type {:?} ({other:?}) has no eStargz equivalent",
                        char::from(other.as_byte())
                    ),
                });
            }
        })
    }

    /// The tar headers (extension headers included) of this entry, without its data.
    fn tar_headers(&self) -> io::Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        let mut pax: Vec<(String, &[u8])> = self
            .xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
            .collect();
        pax.extend(
            self.other_pax
                .iter()
                .map(|(k, v)| (k.clone(), v.as_slice())),
        );
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(self.kind);
        h.set_mode(self.mode);
        h.set_uid(self.uid.into());
        h.set_gid(self.gid.into());
        h.set_mtime(self.mtime);
        h.set_size(if self.kind == EntryType::Regular {
            self.size
        } else {
            0
        });
        if h.set_username(&self.uname).is_err() {
            pax.push(("uname".into(), self.uname.as_bytes()));
        }
        if h.set_groupname(&self.gname).is_err() {
            pax.push(("gname".into(), self.gname.as_bytes()));
        }
        if matches!(self.kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(self.dev.0)?;
            h.set_device_minor(self.dev.1)?;
        }
        b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)))?;
        let path = Path::new(&self.name);
        if matches!(self.kind, EntryType::Link | EntryType::Symlink) {
            b.append_link(&mut h, path, &self.link_name)?;
        } else {
            b.append_data(&mut h, path, io::empty())?;
        }
        // Take the bytes without `finish`, which would end the archive.
        Ok(std::mem::take(b.get_mut()))
    }
}

/// A numeric header field, with a blank one read as 0 as Go's tar reader does (writers leave
/// fields blank when a PAX record carries the value).
fn blank_is_zero(field: &[u8], parsed: io::Result<u64>) -> io::Result<u64> {
    match parsed {
        Err(_) if field.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        other => other,
    }
}

/// Whether a cleaned input name is one the writer makes itself.
fn is_reserved(name: &str) -> bool {
    [TOC_TAR_NAME, PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK].contains(&name)
}

/// `./a//b/` → `a/b` (with a trailing `/` for directories; `./` for the root); `..` refused.
fn normalize(raw: &str, dir: bool) -> Result<Option<String>, FormatError> {
    let mut comps = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(FormatError::Unsupported {
                    name: raw.to_owned(),
                    problem: "the name has a `..` component".to_owned(),
                });
            }
            c => comps.push(c),
        }
    }
    Ok(Some(match (comps.is_empty(), dir) {
        (true, true) => "./".to_owned(),
        (true, false) => return Ok(None),
        (false, true) => format!("{}/", comps.join("/")),
        (false, false) => comps.join("/"),
    }))
}

fn utf8(bytes: &[u8], name: &[u8], what: &str) -> Result<String, FormatError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| FormatError::Unsupported {
        name: String::from_utf8_lossy(name).into_owned(),
        problem: format!("its {what} is not UTF-8, which the JSON TOC cannot hold"),
    })
}

/// The blob under construction.
struct Writer<W: Write> {
    sink: Sink<W>,
    toc: Toc,
    opts: WriterOptions,
    /// Last user/group name written per id (names are written only when they change).
    unames: HashMap<u32, String>,
    gnames: HashMap<u32, String>,
    /// Compressed and uncompressed offsets where the current data member started.
    member_start: (u64, u64),
}

impl<W: Write> Writer<W> {
    fn new(out: W, opts: WriterOptions) -> Self {
        Writer {
            sink: Sink::new(out, opts.compression_level),
            toc: Toc {
                version: 1,
                entries: Vec::new(),
            },
            opts,
            unames: HashMap::new(),
            gnames: HashMap::new(),
            member_start: (0, 0),
        }
    }

    /// Appends one entry; `data` holds a regular file's bytes.
    fn append(&mut self, meta: Meta, data: &mut dyn Read) -> Result<(), FormatError> {
        let kind = meta.toc_type()?;
        let entry = TocEntry {
            name: meta.name.clone(),
            kind: kind.to_owned(),
            size: if kind == "reg" { meta.size } else { 0 },
            modtime: if meta.mtime == 0 {
                String::new()
            } else {
                format_rfc3339(i64::try_from(meta.mtime).unwrap_or(i64::MAX))
            },
            link_name: meta.link_name.clone(),
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            user_name: changed(&mut self.unames, meta.uid, &meta.uname),
            group_name: changed(&mut self.gnames, meta.gid, &meta.gname),
            dev_major: meta.dev.0,
            dev_minor: meta.dev.1,
            xattrs: meta.xattrs.clone(),
            ..TocEntry::default()
        };
        let headers = meta.tar_headers().map_err(|e| FormatError::Unsupported {
            name: meta.name.clone(),
            problem: format!("cannot encode its tar header: {e}"),
        })?;
        self.sink.write(&headers)?;
        if kind != "reg" {
            self.toc.entries.push(entry);
            return Ok(());
        }
        let landmark = meta.name == NO_PREFETCH_LANDMARK || meta.name == PREFETCH_LANDMARK;
        self.file_data(entry, data, landmark)?;
        let pad = (BLOCK - meta.size % BLOCK) % BLOCK;
        self.sink.write(&[0; BLOCK as usize][..pad as usize])
    }

    /// Writes a regular file's data in chunks, pushing its `reg` and `chunk` entries.
    fn file_data(
        &mut self,
        mut e: TocEntry,
        data: &mut dyn Read,
        own_member: bool,
    ) -> Result<(), FormatError> {
        let size = e.size;
        let reg = self.toc.entries.len();
        let mut file_hash = Sha256::new();
        let mut written = 0;
        while written < size {
            let len = self.opts.chunk_size.min(size - written);
            if len == self.opts.chunk_size {
                e.chunk_size = len;
            }
            (e.offset, e.inner_offset) = self.chunk_start(own_member)?;
            e.chunk_offset = written;
            let chunk_hash = self.copy(data, len, &mut file_hash)?;
            e.chunk_digest = format_digest(&chunk_hash);
            self.toc.entries.push(e);
            written += len;
            e = TocEntry {
                name: self.toc.entries[reg].name.clone(),
                kind: "chunk".to_owned(),
                ..TocEntry::default()
            };
        }
        if size == 0 {
            self.toc.entries.push(e);
        }
        self.toc.entries[reg].digest = format_digest(&file_hash.finalize().into());
        Ok(())
    }

    /// Where the next chunk goes: a new member, or the current one at an inner offset.
    fn chunk_start(&mut self, own_member: bool) -> Result<(u64, u64), FormatError> {
        let min = self.opts.min_chunk_size;
        if min > 0 {
            self.sink.flush()?;
        }
        let (member, member_raw) = self.member_start;
        if own_member || self.sink.compressed() - member >= min {
            self.sink.close_member()?;
            self.member_start = (self.sink.compressed(), self.sink.uncompressed);
            return Ok((self.member_start.0, 0));
        }
        Ok((member, self.sink.uncompressed - member_raw))
    }

    /// Copies `len` bytes of `data` into the blob; returns their sha256.
    fn copy(
        &mut self,
        data: &mut dyn Read,
        len: u64,
        file: &mut Sha256,
    ) -> Result<[u8; 32], FormatError> {
        let mut chunk = Sha256::new();
        let mut buf = vec![0u8; 64 << 10];
        let mut left = len;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = data
                .read(&mut buf[..want])
                .map_err(|source| FormatError::InputTar { source })?;
            if n == 0 {
                let source = io::Error::new(io::ErrorKind::UnexpectedEof, "file data ends early");
                return Err(FormatError::InputTar { source });
            }
            chunk.update(&buf[..n]);
            file.update(&buf[..n]);
            self.sink.write(&buf[..n])?;
            left -= n as u64;
        }
        Ok(chunk.finalize().into())
    }

    /// Writes the TOC member and the footer.
    fn finish(mut self) -> Result<WriteSummary, FormatError> {
        self.sink.close_member()?;
        let toc_offset = self.sink.compressed();
        let json = encode_toc_json(&self.toc);
        let toc_digest = format_digest(&Sha256::digest(&json).into());
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(json.len() as u64);
        let toc_tar = b
            .append_data(&mut h, TOC_TAR_NAME, json.as_slice())
            .and_then(|()| b.into_inner())
            .map_err(output)?;
        self.sink.write(&toc_tar)?;
        self.sink.close_member()?;
        self.sink.write_raw(&footer_bytes(toc_offset))?;
        self.sink.summary(toc_digest)
    }
}

/// `name` if it is not already the recorded name of `id`, else empty (the reference writer's
/// `nameIfChanged`).
fn changed(names: &mut HashMap<u32, String>, id: u32, name: &str) -> String {
    if name.is_empty() || names.get(&id).is_some_and(|n| n == name) {
        return String::new();
    }
    names.insert(id, name.to_owned());
    name.to_owned()
}
