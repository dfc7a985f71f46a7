//! Footers (eStargz, legacy, garbage) and TOC decoding (digest check, JSON field names).

use std::io::{Read, Write};

use super::fixtures::{Layer, TarBuilder, small_chunks};
use crate::estargz::*;

/// A legacy stargz footer as the original stargz writer made it: an empty gzip member whose
/// whole Extra field is `%016xSTARGZ`.
fn legacy_footer(toc_offset: u64) -> Vec<u8> {
    let mut f = vec![0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 255, 22, 0];
    f.extend_from_slice(format!("{toc_offset:016x}STARGZ").as_bytes());
    f.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    f.extend_from_slice(&[0; 8]);
    f
}

/// The gzip Extra field and content of a single member, decoded by flate2.
fn gunzip_with_extra(member: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut d = flate2::read::GzDecoder::new(member);
    let mut content = Vec::new();
    d.read_to_end(&mut content).unwrap();
    let extra = d.header().unwrap().extra().unwrap().to_vec();
    (extra, content)
}

#[test]
fn estargz_footer_is_an_empty_gzip_member_with_the_sg_subfield() {
    let f = footer_bytes(0x1234_5678_9abc);
    assert_eq!(f.len() as u64, FOOTER_SIZE);
    let (extra, content) = gunzip_with_extra(&f);
    assert!(content.is_empty());
    assert_eq!(&extra[..4], b"SG\x16\x00");
    assert_eq!(&extra[4..], b"0000123456789abcSTARGZ");
    let parsed = parse_footer(&f).unwrap();
    assert_eq!(
        parsed,
        Footer {
            toc_offset: 0x1234_5678_9abc,
            footer_size: FOOTER_SIZE
        }
    );
}

#[test]
fn legacy_footer_parses_from_a_51_byte_tail() {
    let legacy = legacy_footer(4242);
    assert_eq!(legacy.len() as u64, LEGACY_FOOTER_SIZE);
    let (extra, content) = gunzip_with_extra(&legacy);
    assert!(content.is_empty());
    assert_eq!(extra.len(), 22);
    // The tail the caller passes: the last 51 bytes of the blob, 4 of them before the footer.
    let mut tail = b"data".to_vec();
    tail.extend_from_slice(&legacy);
    let want = Footer {
        toc_offset: 4242,
        footer_size: LEGACY_FOOTER_SIZE,
    };
    assert_eq!(parse_footer(&tail).unwrap(), want);
    // A blob of exactly 47 bytes gives a 47-byte tail.
    assert_eq!(parse_footer(&legacy).unwrap(), want);
}

#[test]
fn garbage_is_not_estargz() {
    let mut plain_gzip = Vec::new();
    let mut gz = flate2::write::GzEncoder::new(&mut plain_gzip, flate2::Compression::none());
    gz.write_all(&[0; 20]).unwrap();
    gz.finish().unwrap();
    let mut wrong_magic = footer_bytes(7).to_vec();
    wrong_magic[37] = b'Y';
    let mut not_hex = footer_bytes(7).to_vec();
    not_hex[16] = b'g';
    let mut wrong_id = footer_bytes(7).to_vec();
    wrong_id[12] = b'X';
    let tails: [&[u8]; 8] = [
        &[],
        &[0x1f, 0x8b],
        &[0; 51],
        &plain_gzip[plain_gzip.len().saturating_sub(51)..],
        &wrong_magic,
        &not_hex,
        &wrong_id,
        &legacy_footer(1)[..46],
    ];
    for tail in tails {
        assert!(
            matches!(parse_footer(tail), Err(FormatError::NotEstargz)),
            "{tail:?} parsed as a footer"
        );
    }
}

#[test]
fn toc_range_rejects_offsets_past_the_footer() {
    let f = Footer {
        toc_offset: 100,
        footer_size: FOOTER_SIZE,
    };
    assert_eq!(f.toc_range(200).unwrap(), 100..149);
    for blob_size in [151, 150, 10] {
        assert!(matches!(
            f.toc_range(blob_size),
            Err(FormatError::TocOffsetOutOfRange { .. })
        ));
    }
}

fn toc_gz(layer: &Layer) -> &[u8] {
    let range = layer.footer.toc_range(layer.blob.len() as u64).unwrap();
    &layer.blob[range.start as usize..range.end as usize]
}

#[test]
fn toc_digest_is_checked_against_the_annotation() {
    let tar = TarBuilder::new().file("a", 0o644, b"hello").finish();
    let layer = Layer::write(&tar, &small_chunks());
    let gz = toc_gz(&layer);
    let (_, digest) = decode_toc(gz, None).unwrap();
    assert_eq!(digest, layer.summary.toc_digest);
    let upper = format!("sha256:{}", digest[7..].to_uppercase());
    assert!(decode_toc(gz, Some(&upper)).is_ok());
    let other = format!("sha256:{}", "0".repeat(64));
    match decode_toc(gz, Some(&other)) {
        Err(FormatError::TocDigestMismatch { expected, actual }) => {
            assert_eq!((expected, actual), (other, digest));
        }
        r => panic!("expected a digest mismatch, got {r:?}"),
    }
    assert!(matches!(
        decode_toc(gz, Some("md5:abcd")),
        Err(FormatError::BadDigest { .. })
    ));
}

fn gzip_tar(name: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    b.append_data(&mut h, name, content).unwrap();
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

#[test]
fn toc_stream_errors_name_what_is_wrong() {
    assert!(matches!(
        decode_toc(b"not gzip at all", None),
        Err(FormatError::TocStream { .. })
    ));
    match decode_toc(&gzip_tar("index.json", b"{}"), None) {
        Err(FormatError::TocName { found }) => assert_eq!(found, "index.json"),
        r => panic!("expected TocName, got {r:?}"),
    }
    assert!(matches!(
        decode_toc(
            &gzip_tar(TOC_TAR_NAME, b"{\"version\": 1, \"entries\": [{]}"),
            None
        ),
        Err(FormatError::TocJson { .. })
    ));
}

#[test]
fn toc_json_uses_the_reference_field_names_and_omits_zeros() {
    let e = TocEntry {
        name: "a".into(),
        kind: "reg".into(),
        size: 3,
        link_name: "l".into(),
        inner_offset: 5,
        chunk_digest: "sha256:x".into(),
        user_name: "u".into(),
        dev_major: 1,
        xattrs: [("user.k".to_owned(), b"\x00\xff".to_vec())].into(),
        ..TocEntry::default()
    };
    let json = serde_json::to_value(&e).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "chunkDigest",
            "devMajor",
            "innerOffset",
            "linkName",
            "name",
            "size",
            "type",
            "userName",
            "xattrs"
        ]
    );
    assert_eq!(json["xattrs"]["user.k"], "AP8=");
    let back: TocEntry = serde_json::from_value(json).unwrap();
    assert_eq!(back, e);
}

#[test]
fn toc_json_from_the_reference_writer_parses() {
    // Shaped like the example in stargz-snapshotter's docs/estargz.md.
    let json = r#"{
	"version": 1,
	"entries": [
		{"name": "bin/", "type": "dir", "modtime": "2019-08-20T10:30:43Z", "mode": 16877,
		 "NumLink": 0},
		{"name": "bin/busybox", "type": "reg", "size": 833104,
		 "modtime": "2019-06-12T17:52:45Z", "mode": 33261, "offset": 126,
		 "chunkSize": 4194304, "digest": "sha256:8b7c",
		 "chunkDigest": "sha256:8b7c", "xattrs": {"user.z": null}},
		{"name": "bin/busybox", "type": "chunk", "offset": 512427, "chunkOffset": 4194304}
	]
}"#;
    let toc: Toc = serde_json::from_str(json).unwrap();
    assert_eq!(toc.version, 1);
    assert_eq!(toc.entries[0].mode, 0o40755);
    assert_eq!(toc.entries[1].offset, 126);
    assert_eq!(toc.entries[1].xattrs["user.z"], b"");
    assert_eq!(toc.entries[2].kind, "chunk");
    assert_eq!(toc.entries[2].chunk_offset, 4_194_304);
}
