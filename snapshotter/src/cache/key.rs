//! Chunk identity: the sha256 of a chunk's uncompressed bytes, the same digest an eStargz TOC
//! records as `chunkDigest`. Content addressing is what lets two layers (or two images) that
//! share a chunk store and fetch it once.

use std::fmt;

use crate::estargz;

/// sha256 of a chunk's uncompressed bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkKey(pub [u8; 32]);

impl ChunkKey {
    /// The key of `bytes` (hashes them).
    pub fn of(bytes: &[u8]) -> ChunkKey {
        ChunkKey(estargz::sha256(bytes))
    }

    /// Whether `bytes` are the chunk this key names.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        estargz::verify(bytes, &self.0)
    }

    /// Lower-case hex, as in `sha256:<hex>` digests and the spill tier's file names.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits (optionally prefixed `sha256:`).
    pub fn parse(s: &str) -> Option<ChunkKey> {
        let s = s.strip_prefix("sha256:").unwrap_or(s);
        let mut key = [0u8; 32];
        hex::decode_to_slice(s, &mut key).ok()?;
        Some(ChunkKey(key))
    }

    /// Which of `n` shards this key lives in (its first byte is uniformly distributed).
    pub(crate) fn shard(&self, n: usize) -> usize {
        usize::from(self.0[0]) % n
    }
}

impl fmt::Debug for ChunkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", &self.hex()[..12])
    }
}

impl fmt::Display for ChunkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

/// Bytes that were checked against their key: the only thing a tier will store.
#[derive(Debug, Clone, Copy)]
pub struct Verified<'a> {
    key: ChunkKey,
    bytes: &'a [u8],
}

impl<'a> Verified<'a> {
    /// `Some` if `bytes` hash to `key`.
    pub fn check(key: ChunkKey, bytes: &'a [u8]) -> Option<Verified<'a>> {
        key.matches(bytes).then_some(Verified { key, bytes })
    }

    /// The key.
    pub fn key(&self) -> ChunkKey {
        self.key
    }

    /// The bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Bytes the caller has just checked against `key` itself (the lazy read path verifies
    /// each chunk against its TOC digest, which is this key), so they are not hashed twice.
    pub(crate) fn assume(key: ChunkKey, bytes: &'a [u8]) -> Verified<'a> {
        debug_assert!(key.matches(bytes));
        Verified { key, bytes }
    }

    /// Re-wraps bytes already held verified by a tier (moving a chunk between tiers).
    pub(super) fn trusted(key: ChunkKey, bytes: &'a [u8]) -> Verified<'a> {
        Verified { key, bytes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_reject_bad_hex() {
        let k = ChunkKey::of(b"hello");
        assert_eq!(ChunkKey::parse(&k.to_string()), Some(k));
        assert_eq!(ChunkKey::parse(&k.hex()), Some(k));
        assert_eq!(ChunkKey::parse("sha256:zz"), None);
        assert_eq!(ChunkKey::parse(&k.hex()[..62]), None);
    }

    #[test]
    fn only_matching_bytes_verify() {
        let k = ChunkKey::of(b"chunk");
        assert!(Verified::check(k, b"chunk").is_some());
        assert!(Verified::check(k, b"chunK").is_none());
    }
}
