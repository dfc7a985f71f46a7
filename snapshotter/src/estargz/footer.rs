//! The footer: an empty gzip member at the end of the blob whose Extra field holds the TOC offset.
//!
//! eStargz (51 bytes) stores `%016xSTARGZ` as an RFC 1952 subfield with id `SG`; legacy stargz
//! (47 bytes) stores the same 22 bytes as the whole Extra field. Only the gzip header is read, as
//! the reference reader does: the empty deflate body and trailer carry nothing.

use super::error::FormatError;

/// Size of the eStargz footer.
pub const FOOTER_SIZE: u64 = 51;
/// Size of the legacy stargz footer.
pub const LEGACY_FOOTER_SIZE: u64 = 47;

/// `STARGZ`, after the 16 hex digits of the offset.
const MAGIC: &[u8] = b"STARGZ";
/// 16 hex digits + `STARGZ`.
const PAYLOAD_LEN: usize = 22;
/// gzip FLG bit: an Extra field follows the fixed header.
const FEXTRA: u8 = 0x04;

/// Where the TOC starts and how long the footer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// Offset of the TOC gzip member in the blob.
    pub toc_offset: u64,
    /// [`FOOTER_SIZE`] or [`LEGACY_FOOTER_SIZE`].
    pub footer_size: u64,
}

impl Footer {
    /// The byte range of the TOC gzip member in a blob of `blob_size` bytes, checked.
    pub fn toc_range(&self, blob_size: u64) -> Result<std::ops::Range<u64>, FormatError> {
        let end = blob_size.checked_sub(self.footer_size);
        match end {
            Some(end) if self.toc_offset < end => Ok(self.toc_offset..end),
            _ => Err(FormatError::TocOffsetOutOfRange {
                toc_offset: self.toc_offset,
                blob_size,
                footer_size: self.footer_size,
            }),
        }
    }
}

/// Parses the footer from `tail`, the last [`FOOTER_SIZE`] bytes of the blob (or all of it if
/// the blob is smaller). Tries the eStargz footer, then the legacy one.
pub fn parse_footer(tail: &[u8]) -> Result<Footer, FormatError> {
    let last = |n: u64| tail.len().checked_sub(n as usize).map(|at| &tail[at..]);
    if let Some(toc_offset) = last(FOOTER_SIZE).and_then(estargz_offset) {
        return Ok(Footer {
            toc_offset,
            footer_size: FOOTER_SIZE,
        });
    }
    if let Some(toc_offset) = last(LEGACY_FOOTER_SIZE).and_then(legacy_offset) {
        return Ok(Footer {
            toc_offset,
            footer_size: LEGACY_FOOTER_SIZE,
        });
    }
    Err(FormatError::NotEstargz)
}

/// The 51-byte eStargz footer for a TOC at `toc_offset`.
pub fn footer_bytes(toc_offset: u64) -> [u8; FOOTER_SIZE as usize] {
    let mut f = [0u8; FOOTER_SIZE as usize];
    // gzip header: magic, deflate, FEXTRA, mtime 0, xfl 0, OS unknown.
    f[..10].copy_from_slice(&[0x1f, 0x8b, 8, FEXTRA, 0, 0, 0, 0, 0, 255]);
    f[10..12].copy_from_slice(&(4 + PAYLOAD_LEN as u16).to_le_bytes()); // XLEN
    f[12..14].copy_from_slice(b"SG");
    f[14..16].copy_from_slice(&(PAYLOAD_LEN as u16).to_le_bytes());
    f[16..38].copy_from_slice(format!("{toc_offset:016x}STARGZ").as_bytes());
    // A final stored block of length 0, then CRC32 and ISIZE of nothing (all zero).
    f[38..43].copy_from_slice(&[1, 0, 0, 0xff, 0xff]);
    f
}

fn estargz_offset(footer: &[u8]) -> Option<u64> {
    let extra = gzip_extra(footer)?;
    let (id, rest) = extra.split_at_checked(2)?;
    let (len, payload) = rest.split_at_checked(2)?;
    if id != b"SG" || u16::from_le_bytes([len[0], len[1]]) as usize != PAYLOAD_LEN {
        return None;
    }
    offset_of(payload)
}

fn legacy_offset(footer: &[u8]) -> Option<u64> {
    offset_of(gzip_extra(footer)?)
}

/// The Extra field of the gzip header at the start of `member`.
fn gzip_extra(member: &[u8]) -> Option<&[u8]> {
    let header = member.get(..12)?;
    if header[..3] != [0x1f, 0x8b, 8] || header[3] & FEXTRA == 0 {
        return None;
    }
    let xlen = u16::from_le_bytes([header[10], header[11]]) as usize;
    member.get(12..12 + xlen)
}

/// `%016xSTARGZ` → the offset.
fn offset_of(payload: &[u8]) -> Option<u64> {
    if payload.len() != PAYLOAD_LEN || &payload[16..] != MAGIC {
        return None;
    }
    let hex = std::str::from_utf8(&payload[..16]).ok()?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}
