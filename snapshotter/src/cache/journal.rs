//! The NVMe tier's on-disk index: an append-only journal of fixed 64-byte records, "chunk K
//! lives in extent E" (put) and "chunk K is gone" (del), each with a CRC.
//!
//! Ordering is what makes it crash-safe without an fsync per chunk:
//! - a chunk's bytes are written into its extent **before** its put is appended, so a put never
//!   names an extent whose bytes were not written (a killed process loses no page-cache data);
//! - a del is appended **before** its extent can be reused, so after a restart no put names an
//!   extent that now holds another chunk.
//!
//! Replay stops at the first torn or foreign record (a write cut by a kill) and truncates the
//! journal there. Power loss can still lose or reorder page-cache writes; that is why every chunk
//! read from the tier after a restart is verified against its digest before it is served, and
//! a mismatch only costs a refetch. When the journal holds far more records than live chunks it
//! is rewritten (to a temporary file, fsynced, renamed over).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::alloc::Extent;
use super::key::ChunkKey;

const RECORD: usize = 64;
const MAGIC: &[u8; 4] = b"AUGJ";
const KIND_HEADER: u8 = 0;
const KIND_PUT: u8 = 1;
const KIND_DEL: u8 = 2;
/// Format version, in the header record.
const VERSION: u64 = 1;

/// One live chunk as the journal knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The chunk.
    pub key: ChunkKey,
    /// Where its bytes are.
    pub extent: Extent,
    /// Its length in bytes.
    pub len: u64,
    /// Position of its put in the journal (later wins when extents conflict).
    pub seq: u64,
}

/// The open journal, appending.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    total_blocks: u64,
    records: u64,
}

fn encode(kind: u8, key: &ChunkKey, a: u64, b: u64) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[..4].copy_from_slice(MAGIC);
    r[4] = kind;
    r[8..16].copy_from_slice(&a.to_le_bytes());
    r[16..24].copy_from_slice(&b.to_le_bytes());
    r[24..56].copy_from_slice(&key.0);
    let mut crc = flate2::Crc::new();
    crc.update(&r[..60]);
    r[60..].copy_from_slice(&crc.sum().to_le_bytes());
    r
}

fn decode(r: &[u8]) -> Option<(u8, ChunkKey, u64, u64)> {
    let mut crc = flate2::Crc::new();
    crc.update(&r[..60]);
    if &r[..4] != MAGIC || r[60..64] != crc.sum().to_le_bytes() {
        return None;
    }
    let u = |s: &[u8]| u64::from_le_bytes(s.try_into().expect("8 bytes"));
    let mut key = [0u8; 32];
    key.copy_from_slice(&r[24..56]);
    Some((r[4], ChunkKey(key), u(&r[8..16]), u(&r[16..24])))
}

impl Journal {
    /// Opens (or creates) the journal at `path` for a data file of `total_blocks` blocks and
    /// returns the live entries. A journal written for a different size, or of another format,
    /// is discarded: the tier then starts empty.
    pub fn open(path: &Path, total_blocks: u64) -> std::io::Result<(Journal, Vec<Entry>)> {
        let mut bytes = Vec::new();
        if let Ok(mut f) = File::open(path) {
            f.read_to_end(&mut bytes)?;
        }
        let (entries, valid_records) = replay(&bytes, total_blocks);
        let file = if valid_records == 0 {
            write_fresh(path, total_blocks, &[])?
        } else {
            let f = OpenOptions::new().write(true).open(path)?;
            f.set_len(valid_records * RECORD as u64)?;
            drop(f);
            OpenOptions::new().append(true).open(path)?
        };
        let journal = Journal {
            path: path.to_path_buf(),
            file,
            total_blocks,
            records: valid_records.max(1),
        };
        Ok((journal, entries))
    }

    /// Records that `key` now lives in `extent` (its bytes are already there).
    pub fn put(&mut self, key: &ChunkKey, extent: Extent, len: u64) -> std::io::Result<()> {
        self.append(&encode(KIND_PUT, key, extent.start, len))
    }

    /// Records that `key` is gone (before its extent is reused).
    pub fn del(&mut self, key: &ChunkKey) -> std::io::Result<()> {
        self.append(&encode(KIND_DEL, key, 0, 0))
    }

    fn append(&mut self, record: &[u8; RECORD]) -> std::io::Result<()> {
        self.file.write_all(record)?;
        self.records += 1;
        Ok(())
    }

    /// Records written since the journal was last rewritten (the header included).
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Rewrites the journal to hold just `live` (atomically: temp file, fsync, rename).
    pub fn compact(&mut self, live: &[(ChunkKey, Extent, u64)]) -> std::io::Result<()> {
        self.file = write_fresh(&self.path, self.total_blocks, live)?;
        self.records = 1 + live.len() as u64;
        Ok(())
    }
}

/// Live entries and the number of valid leading records (0: start a new journal).
fn replay(bytes: &[u8], total_blocks: u64) -> (Vec<Entry>, u64) {
    let mut records = bytes.chunks_exact(RECORD);
    match records.next().and_then(decode) {
        Some((KIND_HEADER, _, v, t)) if v == VERSION && t == total_blocks => {}
        _ => return (Vec::new(), 0),
    }
    let mut live: HashMap<ChunkKey, Entry> = HashMap::new();
    let mut valid = 1;
    for (seq, r) in records.enumerate() {
        match decode(r) {
            Some((KIND_PUT, key, start, len)) => {
                let extent = Extent {
                    start,
                    len: Extent::blocks_for(len),
                };
                let seq = seq as u64;
                live.insert(
                    key,
                    Entry {
                        key,
                        extent,
                        len,
                        seq,
                    },
                );
            }
            Some((KIND_DEL, key, _, _)) => {
                live.remove(&key);
            }
            _ => break,
        }
        valid += 1;
    }
    let mut entries: Vec<Entry> = live.into_values().collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.seq));
    (entries, valid)
}

fn write_fresh(
    path: &Path,
    total_blocks: u64,
    live: &[(ChunkKey, Extent, u64)],
) -> std::io::Result<File> {
    let tmp = path.with_extension("journal-tmp");
    let mut buf = Vec::with_capacity((live.len() + 1) * RECORD);
    buf.extend_from_slice(&encode(
        KIND_HEADER,
        &ChunkKey([0; 32]),
        VERSION,
        total_blocks,
    ));
    for (key, extent, len) in live {
        buf.extend_from_slice(&encode(KIND_PUT, key, extent.start, *len));
    }
    let mut f = File::create(&tmp)?;
    f.write_all(&buf)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    OpenOptions::new().append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> ChunkKey {
        ChunkKey([n; 32])
    }

    fn ext(start: u64, len: u64) -> Extent {
        Extent { start, len }
    }

    #[test]
    fn puts_and_dels_replay_to_the_live_set() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        let (mut j, e) = Journal::open(&p, 100).unwrap();
        assert!(e.is_empty());
        j.put(&key(1), ext(0, 1), 100).unwrap();
        j.put(&key(2), ext(1, 2), 5000).unwrap();
        j.del(&key(1)).unwrap();
        j.put(&key(3), ext(0, 1), 10).unwrap();
        drop(j);
        let (_, e) = Journal::open(&p, 100).unwrap();
        let got: Vec<_> = e.iter().map(|e| (e.key, e.extent, e.len)).collect();
        assert_eq!(
            got,
            vec![(key(3), ext(0, 1), 10), (key(2), ext(1, 2), 5000)],
            "newest first"
        );
    }

    #[test]
    fn a_torn_tail_is_cut_and_appends_continue_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        let (mut j, _) = Journal::open(&p, 100).unwrap();
        j.put(&key(1), ext(0, 1), 1).unwrap();
        j.put(&key(2), ext(1, 1), 1).unwrap();
        drop(j);
        // A kill in the middle of the third record's write.
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.extend_from_slice(&encode(KIND_PUT, &key(3), 2, 1)[..30]);
        std::fs::write(&p, &bytes).unwrap();
        let (mut j, e) = Journal::open(&p, 100).unwrap();
        assert_eq!(e.len(), 2);
        j.put(&key(4), ext(3, 1), 1).unwrap();
        drop(j);
        let (_, e) = Journal::open(&p, 100).unwrap();
        assert_eq!(e.len(), 3, "the record after the cut replays");
    }

    #[test]
    fn a_flipped_bit_ends_replay_there() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        let (mut j, _) = Journal::open(&p, 100).unwrap();
        for n in 0..4 {
            j.put(&key(n), ext(u64::from(n), 1), 1).unwrap();
        }
        drop(j);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[RECORD * 3 + 30] ^= 1; // third put
        std::fs::write(&p, &bytes).unwrap();
        let (_, e) = Journal::open(&p, 100).unwrap();
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn another_size_or_garbage_starts_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        let (mut j, _) = Journal::open(&p, 100).unwrap();
        j.put(&key(1), ext(0, 1), 1).unwrap();
        drop(j);
        let (_, e) = Journal::open(&p, 200).unwrap();
        assert!(e.is_empty(), "written for a 100-block file");
        std::fs::write(
            &p,
            b"not a journal at all, not at all, no no no no no no no no no no no",
        )
        .unwrap();
        let (_, e) = Journal::open(&p, 200).unwrap();
        assert!(e.is_empty());
    }

    #[test]
    fn compaction_keeps_exactly_the_live_set() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        let (mut j, _) = Journal::open(&p, 100).unwrap();
        for n in 0..50 {
            j.put(&key(n), ext(0, 1), 1).unwrap();
            j.del(&key(n)).unwrap();
        }
        j.compact(&[(key(7), ext(5, 1), 9)]).unwrap();
        assert_eq!(j.records(), 2);
        j.put(&key(8), ext(6, 1), 9).unwrap();
        drop(j);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 3 * RECORD as u64);
        let (_, e) = Journal::open(&p, 100).unwrap();
        assert_eq!(e.len(), 2);
    }
}
