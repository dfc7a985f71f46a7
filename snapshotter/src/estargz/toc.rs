//! The table of contents: `stargz.index.json`, in a tar, in the gzip member before the footer.
//!
//! [`Toc`] and [`TocEntry`] mirror the JSON field for field (names, `omitempty` on output,
//! base64 xattr values) so a TOC we write reads back identically in the reference Go reader and
//! vice versa; meaning is given to the fields by [`super::LayerIndex::from_toc`], not here.

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::FormatError;

/// Name of the TOC's tar entry.
pub const TOC_TAR_NAME: &str = "stargz.index.json";
/// The layer annotation holding the TOC digest.
pub const TOC_DIGEST_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
/// The layer annotation holding the size of the tar the blob decompresses to (what
/// `ctr-remote image convert` and podman write; lets a puller size the layer without reading it).
pub const UNCOMPRESSED_SIZE_ANNOTATION: &str = "io.containers.estargz.uncompressed-size";
/// The largest uncompressed TOC JSON [`decode_toc`] accepts (a guard against gzip bombs; real
/// TOCs are a few hundred bytes per file).
pub const MAX_TOC_JSON: u64 = 1 << 30;

/// The decoded `stargz.index.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toc {
    /// Format version; 1 is the only one defined.
    pub version: u32,
    /// Every tar entry and file chunk of the layer, in blob order.
    #[serde(default)]
    pub entries: Vec<TocEntry>,
}

/// One entry of the TOC, as eStargz's JSON defines it (`docs/estargz.md` in stargz-snapshotter).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TocEntry {
    /// The tar entry's full name (`chunk` entries may repeat it or leave it empty).
    pub name: String,
    /// `dir`, `reg`, `symlink`, `hardlink`, `char`, `block`, `fifo` or `chunk` (JSON `type`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Size of a regular file.
    #[serde(skip_serializing_if = "is_zero")]
    pub size: u64,
    /// Modification time, RFC 3339; empty means unknown (the epoch).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub modtime: String,
    /// Target of a symlink, or the linked path of a hard link.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub link_name: String,
    /// The tar header's mode (permission bits, setuid/setgid/sticky, maybe type bits).
    #[serde(skip_serializing_if = "is_zero")]
    pub mode: u32,
    /// Owner.
    #[serde(skip_serializing_if = "is_zero")]
    pub uid: u32,
    /// Group.
    #[serde(skip_serializing_if = "is_zero")]
    pub gid: u32,
    /// Owner's name; writers may give it only on the first entry with this uid.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user_name: String,
    /// Group's name; writers may give it only on the first entry with this gid.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group_name: String,
    /// Blob offset of the gzip member holding this `reg`/`chunk` entry's data.
    #[serde(skip_serializing_if = "is_zero")]
    pub offset: u64,
    /// Where the data starts in that member once decompressed.
    #[serde(skip_serializing_if = "is_zero")]
    pub inner_offset: u64,
    /// Device major number (`char`, `block`).
    #[serde(skip_serializing_if = "is_zero")]
    pub dev_major: u32,
    /// Device minor number (`char`, `block`).
    #[serde(skip_serializing_if = "is_zero")]
    pub dev_minor: u32,
    /// Extended attributes (base64 values in the JSON).
    #[serde(skip_serializing_if = "BTreeMap::is_empty", with = "base64_values")]
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// `sha256:<hex>` of a regular file's whole content.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// Offset of this chunk in the file.
    #[serde(skip_serializing_if = "is_zero")]
    pub chunk_offset: u64,
    /// Length of this chunk; 0 means "to the end of the file".
    #[serde(skip_serializing_if = "is_zero")]
    pub chunk_size: u64,
    /// `sha256:<hex>` of this chunk's bytes.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub chunk_digest: String,
}

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Decodes the TOC gzip member (`blob[toc_offset .. blob_size - footer_size]`), checks the
/// JSON's sha256 against `expected` (the `toc.digest` annotation) if given, and returns the TOC
/// with the JSON's digest (`sha256:<hex>`).
pub fn decode_toc(toc_gz: &[u8], expected: Option<&str>) -> Result<(Toc, String), FormatError> {
    let json = toc_json(toc_gz)?;
    let actual = format_digest(&Sha256::digest(&json).into());
    if let Some(expected) = expected {
        parse_digest(expected, "the toc.digest annotation")?;
        if !expected.eq_ignore_ascii_case(&actual) {
            return Err(FormatError::TocDigestMismatch {
                expected: expected.to_owned(),
                actual,
            });
        }
    }
    let toc = serde_json::from_slice(&json).map_err(|source| FormatError::TocJson { source })?;
    Ok((toc, actual))
}

/// The uncompressed bytes of `stargz.index.json`.
fn toc_json(toc_gz: &[u8]) -> Result<Vec<u8>, FormatError> {
    let stream = |source| FormatError::TocStream { source };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(toc_gz));
    let mut entry = archive
        .entries()
        .map_err(stream)?
        .next()
        .ok_or_else(|| stream(std::io::ErrorKind::UnexpectedEof.into()))?
        .map_err(stream)?;
    let name = entry.path_bytes();
    if name.as_ref() != TOC_TAR_NAME.as_bytes() {
        return Err(FormatError::TocName {
            found: String::from_utf8_lossy(&name).into_owned(),
        });
    }
    let mut json = Vec::new();
    (&mut entry)
        .take(MAX_TOC_JSON + 1)
        .read_to_end(&mut json)
        .map_err(stream)?;
    if json.len() as u64 > MAX_TOC_JSON {
        return Err(FormatError::TocTooLarge {
            limit: MAX_TOC_JSON,
        });
    }
    Ok(json)
}

/// The TOC as the reference writer serializes it: tab-indented JSON.
pub fn encode_toc_json(toc: &Toc) -> Vec<u8> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    // Serializing plain strings, integers and maps into a Vec cannot fail.
    if toc.serialize(&mut ser).is_err() {
        unreachable!("TOC serialization into memory failed");
    }
    out
}

/// `sha256:<64 hex>` → the 32 bytes; `what` names the field for the error.
pub fn parse_digest(s: &str, what: &str) -> Result<[u8; 32], FormatError> {
    let bad = || FormatError::BadDigest {
        what: what.to_owned(),
        value: s.to_owned(),
    };
    let hex = s.strip_prefix("sha256:").ok_or_else(bad)?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex, &mut out).map_err(|_| bad())?;
    Ok(out)
}

/// The 32 bytes → `sha256:<hex>`.
pub fn format_digest(d: &[u8; 32]) -> String {
    format!("sha256:{}", hex::encode(d))
}

/// Xattr values as base64 strings, as Go's `encoding/json` writes `[]byte` (a JSON `null`
/// reads as empty). Also used for the xattrs `lazy` saves beside a TOC.
pub(crate) mod base64_values {
    use std::collections::BTreeMap;

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, v)| (k, STANDARD.encode(v))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        let raw = Option::<BTreeMap<String, Option<String>>>::deserialize(d)?;
        raw.unwrap_or_default()
            .into_iter()
            .map(|(k, v)| {
                let v = v.unwrap_or_default();
                let bytes = STANDARD.decode(&v).map_err(|e| {
                    D::Error::custom(format!("xattr {k:?}: value is not base64: {e}"))
                })?;
                Ok((k, bytes))
            })
            .collect()
    }
}
