//! From fetched compressed bytes to verified chunk bytes.
//!
//! A fetched [`super::Member`] range is decompressed whole (it may hold more than one gzip
//! member; the reference reader reads across them too), then each chunk is sliced out and its
//! sha256 checked before anyone sees it.

use std::io::Read;

use sha2::{Digest, Sha256};

use super::error::FormatError;
use super::index::Chunk;

/// Decompresses a member's compressed bytes (exactly `blob[member.offset..member.end]`).
pub fn inflate_member(compressed: &[u8]) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(compressed)
        .read_to_end(&mut out)
        .map_err(|source| FormatError::Member { source })?;
    Ok(out)
}

/// The bytes of `chunk` in its decompressed member, checked against the chunk's digest.
pub fn chunk_bytes<'a>(inflated: &'a [u8], chunk: &Chunk) -> Result<&'a [u8], FormatError> {
    let bytes = usize::try_from(chunk.inner_offset)
        .ok()
        .zip(usize::try_from(chunk.size).ok())
        .and_then(|(start, len)| inflated.get(start..start.checked_add(len)?))
        .ok_or(FormatError::ChunkOutOfRange {
            inner_offset: chunk.inner_offset,
            size: chunk.size,
            inflated: inflated.len() as u64,
        })?;
    let actual = sha256(bytes);
    if actual != chunk.digest {
        return Err(FormatError::ChunkDigestMismatch {
            inner_offset: chunk.inner_offset,
            size: chunk.size,
            expected: hex::encode(chunk.digest),
            actual: hex::encode(actual),
        });
    }
    Ok(bytes)
}

/// Whether `bytes` has sha256 `digest`.
pub fn verify(bytes: &[u8], digest: &[u8; 32]) -> bool {
    sha256(bytes) == *digest
}

/// sha256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}
