//! The writer's output as a whole: digests in the summary, the tar it decompresses to, dropped
//! inputs, options.

use std::io::Read;

use super::fixtures::{Layer, TarBuilder, noise, small_chunks};
use crate::estargz::*;

fn gunzip_all(blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(blob)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// (name, type byte, content) of every entry of an uncompressed tar.
fn entries(tar: &[u8]) -> Vec<(String, u8, Vec<u8>)> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let kind = e.header().entry_type().as_byte();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (name, kind, data)
        })
        .collect()
}

fn sample() -> Vec<u8> {
    TarBuilder::new()
        .dir("./", 0o755)
        .dir("./etc/", 0o755)
        .xattrs(&[("user.x", b"y")])
        .raw_file("./etc/hosts", b"127.0.0.1 localhost\n")
        .raw_file("/big", &noise(200 << 10, 11))
        .symlink("link", "etc/hosts")
        .hardlink("hard", "./etc/hosts", 0o644)
        .finish()
}

#[test]
fn summary_digests_describe_the_blob_and_its_tar() {
    let tar = sample();
    let l = Layer::write(&tar, &small_chunks());
    let s = &l.summary;
    assert_eq!(s.blob_size, l.blob.len() as u64);
    assert_eq!(s.blob_digest, format_digest(&sha256(&l.blob)));
    let unpacked = gunzip_all(&l.blob);
    assert_eq!(s.diff_id, format_digest(&sha256(&unpacked)));
    assert_eq!(s.uncompressed_size, unpacked.len() as u64);
    let toc_json = &entries(&unpacked).last().unwrap().2.clone();
    assert_eq!(s.toc_digest, format_digest(&sha256(toc_json)));
}

#[test]
fn the_blob_decompresses_to_the_input_tar_plus_the_toc() {
    let tar = sample();
    let l = Layer::write(&tar, &small_chunks());
    let got = entries(&gunzip_all(&l.blob));
    let names: Vec<&str> = got.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            NO_PREFETCH_LANDMARK,
            "./",
            "etc/",
            "etc/hosts",
            "big",
            "link",
            "hard",
            TOC_TAR_NAME
        ]
    );
    let input = entries(&tar);
    for ((_, kind, data), (_, want_kind, want_data)) in got[1..7].iter().zip(&input) {
        assert_eq!((kind, data), (want_kind, want_data));
    }
    assert_eq!(got[0].2, [0xf]);
    // The tar stream is complete: it ends in the two zero blocks after the TOC entry.
    let unpacked = gunzip_all(&l.blob);
    assert!(unpacked.ends_with(&[0; 1024]));
    // And xattrs travel in the tar as well as in the TOC.
    let mut archive = tar::Archive::new(unpacked.as_slice());
    let mut hosts = archive.entries().unwrap().nth(3).unwrap().unwrap();
    let pax: Vec<(String, Vec<u8>)> = hosts
        .pax_extensions()
        .unwrap()
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            (r.key().unwrap().to_owned(), r.value_bytes().to_vec())
        })
        .collect();
    assert_eq!(pax, [("SCHILY.xattr.user.x".to_owned(), b"y".to_vec())]);
}

#[test]
fn toc_entries_carry_the_header_fields() {
    let l = Layer::write(&sample(), &small_chunks());
    let by_name = |n: &str| l.toc.entries.iter().find(|e| e.name == n).unwrap();
    let hosts = by_name("etc/hosts");
    assert_eq!(
        (hosts.kind.as_str(), hosts.size, hosts.mode),
        ("reg", 20, 0o644)
    );
    assert_eq!((hosts.uid, hosts.gid), (1000, 100));
    assert_eq!(hosts.modtime, "2021-03-04T05:06:07Z");
    assert_eq!(hosts.xattrs["user.x"], b"y");
    assert_eq!(by_name("link").link_name, "etc/hosts");
    assert_eq!(by_name("hard").link_name, "etc/hosts");
    assert_eq!(by_name("hard").kind, "hardlink");
    assert_eq!(by_name("etc/").kind, "dir");
    assert_eq!(l.toc.version, 1);
}

#[test]
fn stale_toc_and_landmarks_in_the_input_are_dropped() {
    let tar = TarBuilder::new()
        .file(TOC_TAR_NAME, 0o644, b"{}")
        .file(PREFETCH_LANDMARK, 0o644, &[0xf])
        .file("./.no.prefetch.landmark", 0o644, &[0xf])
        .file("keep", 0o644, b"k")
        .finish();
    let l = Layer::write(&tar, &small_chunks());
    let names: Vec<&str> = l.toc.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, [NO_PREFETCH_LANDMARK, "keep"]);
    let no_landmark = WriterOptions {
        no_prefetch_landmark: false,
        ..small_chunks()
    };
    let l = Layer::write(&tar, &no_landmark);
    assert_eq!(l.toc.entries.len(), 1);
    assert_eq!(l.index.prefetch(), Prefetch::Unspecified);
}

#[test]
fn toc_json_is_tab_indented_like_the_reference() {
    let l = Layer::write(
        &TarBuilder::new().file("a", 0o644, b"a").finish(),
        &small_chunks(),
    );
    let unpacked = gunzip_all(&l.blob);
    let json = String::from_utf8(entries(&unpacked).pop().unwrap().2).unwrap();
    assert!(
        json.starts_with("{\n\t\"version\": 1,\n\t\"entries\": [\n\t\t{\n"),
        "{json}"
    );
}

#[test]
fn bad_input_and_options_are_refused() {
    let mut out = Vec::new();
    let zero_chunks = WriterOptions {
        chunk_size: 0,
        ..WriterOptions::default()
    };
    assert!(matches!(
        write_estargz(&[][..], &mut out, &zero_chunks),
        Err(FormatError::Options(_))
    ));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.as_gnu_mut().unwrap().name[..3].copy_from_slice(b"a\xffb");
    h.set_cksum();
    b.append(&h, std::io::empty()).unwrap();
    let tar = b.into_inner().unwrap();
    match write_estargz(tar.as_slice(), &mut out, &WriterOptions::default()) {
        Err(FormatError::Unsupported { problem, .. }) => assert!(problem.contains("UTF-8")),
        r => panic!("expected Unsupported, got {r:?}"),
    }
    let truncated = &sample()[..3000];
    assert!(matches!(
        write_estargz(truncated, &mut out, &small_chunks()),
        Err(FormatError::InputTar { .. })
    ));
}

#[test]
fn an_empty_tar_makes_a_valid_empty_layer() {
    let l = Layer::write(&TarBuilder::new().finish(), &small_chunks());
    assert_eq!(l.index.node_count(), 1);
    assert_eq!(l.index.data_size(), 0);
    assert!(l.index.members().is_empty());
}

#[test]
fn pax_overrides_win_and_sub_second_mtimes_round_like_the_reference() {
    let mut b = tar::Builder::new(Vec::new());
    let records: [(&str, &[u8]); 4] = [
        ("mtime", b"1614834367.6"),
        ("uid", b"4000000"),
        ("uname", b"a-user-name-longer-than-the-32-bytes-of-a-header"),
        ("SCHILY.acl.access", b"kept"),
    ];
    b.append_pax_extensions(records).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_mtime(1);
    b.append_data(&mut h, "f", &b"x"[..]).unwrap();
    let l = Layer::write(&b.into_inner().unwrap(), &small_chunks());
    let f = l.toc.entries.iter().find(|e| e.name == "f").unwrap();
    assert_eq!(f.modtime, "2021-03-04T05:06:08Z");
    assert_eq!(f.uid, 4_000_000);
    assert_eq!(
        f.user_name,
        "a-user-name-longer-than-the-32-bytes-of-a-header"
    );
    // The long name and the unknown record travel in the tar's PAX header.
    let unpacked = gunzip_all(&l.blob);
    let mut archive = tar::Archive::new(unpacked.as_slice());
    let mut entry = archive.entries().unwrap().nth(1).unwrap().unwrap();
    let keys: Vec<String> = entry
        .pax_extensions()
        .unwrap()
        .unwrap()
        .map(|r| r.unwrap().key().unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["SCHILY.acl.access", "uname"]);
    assert_eq!(entry.header().uid().unwrap(), 4_000_000);
}
