//! Chunk identity: [`ChunkId`], the sha256 of a chunk's uncompressed bytes (an eStargz TOC's
//! `chunkDigest`), which is the same for the same bytes in any run, layer or image. Also the
//! deterministic hash maps every model keys by chunk ([`FastMap`], [`FastSet`]): chunk ids are
//! already uniform random bytes, so hashing folds words instead of running SipHash, and the
//! iteration order does not change from one process to the next (the evaluator is
//! deterministic).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// A chunk's content digest: sha256 of its uncompressed bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// Parses `sha256:<64 hex digits>`.
    pub fn parse(digest: &str) -> Result<Self, Error> {
        let bad = || Error::BadDigest(digest.to_owned());
        let hex = digest.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            let pair = hex.get(2 * i..2 * i + 2).ok_or_else(bad)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(ChunkId(bytes))
    }

    /// The reserved token a run's first access follows in the Markov model: a hash of the
    /// image reference that no sha256 of real bytes will equal in practice (its last 24 bytes
    /// are 0xff).
    pub fn run_start(image: &str) -> Self {
        let mut bytes = [0xffu8; 32];
        bytes[..8].copy_from_slice(&fnv1a64(image.as_bytes()).to_le_bytes());
        ChunkId(bytes)
    }

    /// The first eight bytes as a number (a hash of the chunk, since the id is a digest).
    pub fn word(&self) -> u64 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(word)
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId(")?;
        self.0[..6].iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, "…)")
    }
}

impl Serialize for ChunkId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ChunkId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        ChunkId::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// 64-bit FNV-1a: small, stable across platforms and releases (unlike std's hasher), used for
/// workload signatures and reserved tokens.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A hasher for keys made of chunk ids (and small integers): each write is folded into the
/// state by rotate, xor and multiply. Fast and deterministic; not resistant to chosen keys,
/// which chunk digests are not.
#[derive(Debug, Default, Clone, Copy)]
pub struct ChunkHasher(u64);

impl ChunkHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for ChunkHasher {
    fn write(&mut self, bytes: &[u8]) {
        // A digest is uniform, so its first word is as good as all of it; shorter writes
        // (strings, integers) are folded whole.
        if bytes.len() >= 8 {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[..8]);
            self.mix(u64::from_le_bytes(word));
        } else {
            self.mix(fnv1a64(bytes));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A hash map keyed by chunk ids with a deterministic, fast hasher.
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<ChunkHasher>>;
/// A hash set of chunk ids with a deterministic, fast hasher.
pub type FastSet<K> = HashSet<K, BuildHasherDefault<ChunkHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trips_and_rejects_malformed_text() {
        let text = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let id = ChunkId::parse(&text).unwrap();
        assert_eq!(id.to_string(), text);
        assert_eq!(id.0[1], 0x23);
        for bad in [
            "sha256:12",
            "md5:00",
            "sha256:zz23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "sha256:+f23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(
                matches!(ChunkId::parse(bad), Err(Error::BadDigest(_))),
                "{bad}"
            );
        }
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<ChunkId>(&json).unwrap(), id);
    }

    #[test]
    fn run_start_tokens_differ_by_image() {
        assert_ne!(ChunkId::run_start("a:1"), ChunkId::run_start("a:2"));
        assert_eq!(ChunkId::run_start("a:1"), ChunkId::run_start("a:1"));
    }
}
