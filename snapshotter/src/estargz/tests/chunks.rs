//! File data: chunking, members, slots, round trips through the chunk API, and corruption.

use std::io::Read;

use super::fixtures::{Layer, TarBuilder, noise, small_chunks};
use crate::estargz::*;

#[test]
fn a_big_file_is_split_into_chunks_each_in_its_own_member() {
    let big = noise(300 << 10, 1);
    let tar = TarBuilder::new()
        .file("small", 0o644, b"small")
        .file("big", 0o644, &big)
        .finish();
    let l = Layer::write(&tar, &small_chunks());
    let id = l.find("big").unwrap();
    let chunks = l.index.file_chunks(id);
    let sizes: Vec<u64> = chunks.iter().map(|c| c.size).collect();
    assert_eq!(sizes, [65536, 65536, 65536, 65536, 45056]);
    for (k, c) in chunks.iter().enumerate() {
        assert_eq!(c.file_offset, k as u64 * 65536);
        assert_eq!(c.inner_offset, 0);
        let start = c.file_offset as usize;
        assert_eq!(c.digest, sha256(&big[start..start + c.size as usize]));
    }
    let members: Vec<u32> = chunks.iter().map(|c| c.member).collect();
    assert_eq!(members.len(), 5);
    assert!(members.windows(2).all(|w| w[0] < w[1]), "{members:?}");
    assert_eq!(l.read(id).unwrap(), big);
    // The TOC says it the reference way: chunkSize on all but the last chunk.
    let entries: Vec<&TocEntry> = l.toc.entries.iter().filter(|e| e.name == "big").collect();
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[0].kind, "reg");
    assert_eq!(entries[0].digest, format_digest(&sha256(&big)));
    assert!(entries[1..].iter().all(|e| e.kind == "chunk"));
    assert_eq!(entries[4].chunk_size, 0);
    assert_eq!(entries[3].chunk_size, 65536);
    // The predictor's layout: only the file of several chunks, in file order.
    let multi: Vec<&[Chunk]> = l.index.multi_chunk_files().collect();
    assert_eq!(multi, vec![chunks]);
}

#[test]
fn default_options_cut_at_4_mib() {
    let big = noise(9 << 20, 2);
    let tar = TarBuilder::new().file("big", 0o644, &big).finish();
    let opts = WriterOptions {
        compression_level: 1,
        ..WriterOptions::default()
    };
    let l = Layer::write(&tar, &opts);
    let id = l.find("big").unwrap();
    let sizes: Vec<u64> = l.index.file_chunks(id).iter().map(|c| c.size).collect();
    assert_eq!(sizes, [4 << 20, 4 << 20, 1 << 20]);
    assert!(l.read(id).unwrap() == big);
}

#[test]
fn members_run_to_the_next_member_or_the_toc_and_slots_pack_in_blob_order() {
    let tar = TarBuilder::new()
        .file("a", 0o644, &noise(100 << 10, 3))
        .dir("d/", 0o755)
        .file("d/b", 0o644, &noise(10 << 10, 4))
        .file("c", 0o644, b"c")
        .finish();
    let l = Layer::write(&tar, &small_chunks());
    let members = l.index.members();
    for pair in members.windows(2) {
        assert_eq!(pair[0].end, pair[1].offset);
    }
    assert_eq!(members.last().unwrap().end, l.footer.toc_offset);
    // The landmark's member is a boundary too, but holds no visible chunk.
    assert!(members[0].offset > l.toc.entries[0].offset);
    let mut slot = 0;
    let mut seen = 0;
    for m in 0..members.len() as u32 {
        for c in l.index.member_chunks(m) {
            let chunk = l.index.chunks()[c as usize];
            assert_eq!((chunk.member, chunk.slot), (m, slot));
            slot += chunk.size;
            seen += 1;
        }
    }
    assert_eq!(seen, l.index.chunks().len());
    assert_eq!(l.index.data_size(), slot);
    assert_eq!(l.index.data_size(), (100 << 10) + (10 << 10) + 1);
    assert_eq!(l.index.member_chunks(99).count(), 0);
}

#[test]
fn small_files_share_members_with_min_chunk_size() {
    let mut tar = TarBuilder::new();
    let files: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| (format!("f{i:02}"), noise(3000 + i * 100, 10 + i as u64)))
        .collect();
    for (name, data) in &files {
        tar = tar.file(name, 0o644, data);
    }
    let opts = WriterOptions {
        min_chunk_size: 32 << 10,
        ..small_chunks()
    };
    let l = Layer::write(&tar.finish(), &opts);
    assert!(
        l.index.members().len() < files.len() / 4,
        "{} members for {} files",
        l.index.members().len(),
        files.len()
    );
    assert!(l.index.chunks().iter().any(|c| c.inner_offset > 0));
    for (name, data) in &files {
        assert_eq!(&l.read_path(name), data, "{name}");
    }
    // One inflate of a member serves every chunk in it.
    let shared = (0..l.index.members().len() as u32)
        .find(|&m| l.index.member_chunks(m).count() > 1)
        .unwrap();
    let inflated = inflate_member(l.member_bytes(shared)).unwrap();
    let mut last = None;
    for c in l.index.member_chunks(shared) {
        let chunk = &l.index.chunks()[c as usize];
        assert!(Some(chunk.inner_offset) > last);
        last = Some(chunk.inner_offset);
        assert!(chunk_bytes(&inflated, chunk).is_ok());
    }
}

#[test]
fn every_file_round_trips_through_the_chunk_api() {
    let tar = TarBuilder::new()
        .file("zero", 0o644, b"")
        .file("one", 0o644, b"1")
        .file("exact", 0o644, &noise(64 << 10, 5))
        .file("exact2", 0o644, &noise(128 << 10, 6))
        .file("plus1", 0o644, &noise((64 << 10) + 1, 7))
        .file("text", 0o644, &b"compressible ".repeat(20_000))
        .finish();
    let l = Layer::write(&tar, &small_chunks());
    let mut archive = tar::Archive::new(tar.as_slice());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut want = Vec::new();
        entry.read_to_end(&mut want).unwrap();
        assert_eq!(l.read_path(&name), want, "{name}");
    }
    let exact = l.find("exact2").unwrap();
    assert_eq!(l.index.file_chunks(exact).len(), 2);
}

#[test]
fn chunk_bytes_rejects_corrupt_data() {
    let data = noise(5000, 8);
    let tar = TarBuilder::new().file("f", 0o644, &data).finish();
    let l = Layer::write(&tar, &small_chunks());
    let chunk = l.index.file_chunks(l.find("f").unwrap())[0];
    let mut inflated = inflate_member(l.member_bytes(chunk.member)).unwrap();
    inflated[chunk.inner_offset as usize + 100] ^= 1;
    match chunk_bytes(&inflated, &chunk) {
        Err(FormatError::ChunkDigestMismatch {
            expected, actual, ..
        }) => {
            assert_eq!(expected, hex::encode(sha256(&data)));
            assert_ne!(actual, expected);
        }
        r => panic!("expected ChunkDigestMismatch, got {r:?}"),
    }
    assert!(matches!(
        chunk_bytes(&inflated[..4000], &chunk),
        Err(FormatError::ChunkOutOfRange { .. })
    ));
    assert!(verify(&data, &chunk.digest));
    assert!(!verify(&data[1..], &chunk.digest));
}

/// A byte flipped in the blob, with the gzip CRC fixed up so only the chunk digest can tell: the
/// registry served well-formed but wrong bytes.
#[test]
fn a_corrupt_member_is_caught_by_the_chunk_digest() {
    let data = noise(5000, 9);
    let tar = TarBuilder::new().file("f", 0o644, &data).finish();
    let stored = WriterOptions {
        compression_level: 0,
        ..small_chunks()
    };
    let mut l = Layer::write(&tar, &stored);
    let chunk = l.index.file_chunks(l.find("f").unwrap())[0];
    let member = l.index.members()[chunk.member as usize];
    let bytes = &mut l.blob[member.offset as usize..member.end as usize];
    // Stored deflate blocks hold the data verbatim; find it and flip a byte.
    let at = bytes.windows(32).position(|w| w == &data[..32]).unwrap() + 100;
    bytes[at] ^= 1;
    // Re-seal the first gzip member of the range: CRC32 of its corrupted content.
    let mut first = flate2::bufread::GzDecoder::new(&bytes[..]);
    let mut content = Vec::new();
    assert!(
        first.read_to_end(&mut content).is_err(),
        "CRC catches it first"
    );
    let member_len = gzip_member_len(&l.blob[member.offset as usize..member.end as usize]);
    let bytes = &mut l.blob[member.offset as usize..member.end as usize];
    let mut raw = flate2::read::DeflateDecoder::new(&bytes[10..member_len - 8]);
    let mut corrupted = Vec::new();
    raw.read_to_end(&mut corrupted).unwrap();
    let mut crc = flate2::Crc::new();
    crc.update(&corrupted);
    bytes[member_len - 8..member_len - 4].copy_from_slice(&crc.sum().to_le_bytes());

    let inflated = inflate_member(&bytes[..]).unwrap();
    assert!(matches!(
        chunk_bytes(&inflated, &chunk),
        Err(FormatError::ChunkDigestMismatch { .. })
    ));
    // Truncating the range instead breaks the gzip stream itself.
    assert!(matches!(
        inflate_member(&bytes[..member_len - 3]),
        Err(FormatError::Member { .. })
    ));
}

/// Length of the first gzip member in `bytes` (flate2 writes a 10-byte header, no extras).
fn gzip_member_len(bytes: &[u8]) -> usize {
    let mut d = flate2::bufread::DeflateDecoder::new(&bytes[10..]);
    std::io::copy(&mut d, &mut std::io::sink()).unwrap();
    let rest = d.into_inner();
    bytes.len() - rest.len() + 8
}

#[test]
fn file_chunk_at_finds_the_chunk_holding_an_offset() {
    let tar = TarBuilder::new()
        .file("a", 0o644, b"a")
        .file("big", 0o644, &noise(150 << 10, 12))
        .finish();
    let l = Layer::write(&tar, &small_chunks());
    let big = l.find("big").unwrap();
    for (offset, k) in [
        (0, 0),
        (65535, 0),
        (65536, 1),
        (131072, 2),
        ((150 << 10) - 1, 2),
    ] {
        let (index, chunk) = l.index.file_chunk_at(big, offset).unwrap();
        assert_eq!(chunk, &l.index.file_chunks(big)[k], "offset {offset}");
        assert_eq!(l.index.chunks()[index as usize], *chunk);
    }
    assert!(l.index.file_chunk_at(big, 150 << 10).is_none());
    assert!(l.index.file_chunk_at(ROOT, 0).is_none());
}

#[test]
fn the_index_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<LayerIndex>();
}
