//! Hand-made TOCs: what no honest writer produces must be refused with an error that says what
//! is wrong, and the odd-but-valid shapes other writers produce must be accepted.

use crate::estargz::*;

const TOC_AT: u64 = 10_000;

fn digest_of(b: &[u8]) -> String {
    format_digest(&sha256(b))
}

fn entry(name: &str, kind: &str) -> TocEntry {
    TocEntry {
        name: name.into(),
        kind: kind.into(),
        mode: 0o644,
        ..TocEntry::default()
    }
}

fn reg(name: &str, size: u64, offset: u64) -> TocEntry {
    TocEntry {
        size,
        offset,
        digest: digest_of(name.as_bytes()),
        chunk_digest: digest_of(name.as_bytes()),
        ..entry(name, "reg")
    }
}

fn chunk(offset: u64, chunk_offset: u64, chunk_size: u64) -> TocEntry {
    TocEntry {
        offset,
        chunk_offset,
        chunk_size,
        chunk_digest: digest_of(&chunk_offset.to_le_bytes()),
        ..entry("", "chunk")
    }
}

fn index(entries: Vec<TocEntry>) -> Result<LayerIndex, FormatError> {
    LayerIndex::from_toc(
        &Toc {
            version: 1,
            entries,
        },
        TOC_AT,
    )
}

/// Asserts `entries` are refused with an error whose message contains `words`.
#[track_caller]
fn refused(entries: Vec<TocEntry>, words: &str) {
    match index(entries) {
        Ok(_) => panic!("accepted; expected an error about {words:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(words), "{msg:?} does not mention {words:?}");
        }
    }
}

#[test]
fn unknown_types_are_refused() {
    refused(vec![entry("s", "socket")], "unknown type \"socket\"");
}

#[test]
fn chunks_must_continue_a_regular_file() {
    refused(vec![chunk(100, 0, 0)], "must follow a reg entry");
    refused(
        vec![entry("d", "dir"), chunk(100, 0, 0)],
        "must follow a reg entry",
    );
    let mut other = chunk(200, 10, 0);
    other.name = "other".into();
    let mut head = reg("f", 20, 100);
    head.chunk_size = 10;
    refused(vec![head, other], "names another file");
}

#[test]
fn chunks_must_tile_the_file() {
    let mut head = reg("f", 100, 100);
    head.chunk_size = 40;
    refused(
        vec![head.clone(), chunk(200, 50, 0)],
        "starts at 50, where 40 was expected",
    );
    refused(
        vec![head.clone(), chunk(200, 40, 30)],
        "cover 70 of its 100 bytes",
    );
    refused(
        vec![head.clone(), chunk(200, 40, 80)],
        "does not fit a file of 100 bytes",
    );
    let mut zero = reg("z", 0, 0);
    zero.chunk_size = 0;
    refused(
        vec![zero, chunk(300, 0, 0)],
        "does not fit a file of 0 bytes",
    );
    head.chunk_offset = 5;
    refused(vec![head], "starts at 5, where 0 was expected");
}

#[test]
fn offsets_must_lie_before_the_toc() {
    refused(vec![reg("f", 10, TOC_AT)], "not before the TOC");
    let mut head = reg("f", 20, 100);
    head.chunk_size = 10;
    refused(vec![head, chunk(TOC_AT + 5, 10, 0)], "not before the TOC");
}

#[test]
fn data_needs_a_digest() {
    let mut bare = reg("f", 10, 100);
    bare.chunk_digest.clear();
    bare.digest.clear();
    refused(vec![bare.clone()], "no chunkDigest");
    // The file digest stands in only for a single-chunk file.
    let mut head = reg("g", 20, 100);
    head.chunk_size = 10;
    head.chunk_digest.clear();
    refused(vec![head, chunk(200, 10, 0)], "no chunkDigest");
    bare.digest = "sha256:zz".into();
    refused(vec![bare], "is not a sha256 digest");
    let mut alone = reg("h", 10, 100);
    alone.chunk_digest.clear();
    let l = index(vec![alone.clone()]).unwrap();
    assert_eq!(format_digest(&l.chunks()[0].digest), alone.digest);
}

#[test]
fn names_must_stay_inside_the_layer() {
    refused(vec![reg("../etc/passwd", 1, 100)], "`..` component");
    refused(vec![reg("a/../../b", 1, 100)], "`..` component");
    refused(vec![reg("a\0b", 1, 100)], "NUL");
    refused(
        vec![reg("f", 0, 0), reg("f/g", 0, 0)],
        "its parent \"f\" is not a directory",
    );
    refused(vec![entry("./", "reg")], "the root must be a dir entry");
}

#[test]
fn hard_links_need_an_earlier_non_directory() {
    let link = |target: &str| TocEntry {
        link_name: target.into(),
        ..entry("l", "hardlink")
    };
    refused(vec![link("missing")], "is not an earlier entry");
    refused(vec![entry("d", "dir"), link("d")], "is a directory");
    refused(vec![link("./")], "is the root");
    refused(vec![link("l"), reg("l", 0, 0)], "is not an earlier entry");
    let l = index(vec![reg("./a/f", 0, 0), link("/a/f")]).unwrap();
    assert_eq!(l.node(l.lookup(ROOT, "l".as_ref()).unwrap()).nlink, 2);
}

#[test]
fn other_fields_are_checked() {
    let mut bad_time = entry("t", "dir");
    bad_time.modtime = "yesterday".into();
    refused(
        vec![bad_time],
        "modtime \"yesterday\" is not an RFC 3339 time",
    );
    refused(vec![entry("s", "symlink")], "a symlink needs a linkName");
    refused(vec![entry(".wh.", "reg")], "a whiteout must name a file");
}

#[test]
fn errors_name_the_entry_and_say_what_to_do() {
    let err = index(vec![entry("a", "dir"), entry("b", "socket")]).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("TOC entry #1 (\"b\")"), "{msg}");
    assert!(msg.contains("ctr-remote image convert --estargz"), "{msg}");
}

#[test]
fn shapes_other_writers_produce_are_accepted() {
    // Names with `./` and `/` prefixes, trailing slashes, implicit parents, type bits in the
    // mode, fractional and zoned mtimes, chunkSize 0 on the last chunk, shared members.
    let mut dir = entry("/usr/", "dir");
    dir.mode = 0o40755;
    dir.modtime = "2020-01-02T03:04:05.5+01:00".into();
    let mut head = reg("./usr/lib/x", 30, 100);
    head.chunk_size = 10;
    let mut second = chunk(100, 10, 10);
    second.inner_offset = 10;
    second.name = "usr/lib/x".into();
    let third = chunk(500, 20, 0);
    let l = index(vec![dir, head, second, third]).unwrap();
    let usr = l.node(l.lookup(ROOT, "usr".as_ref()).unwrap());
    assert_eq!(usr.mode, 0o755);
    let mtime = usr.mtime.duration_since(std::time::UNIX_EPOCH).unwrap();
    assert_eq!(mtime.as_millis(), 1_577_930_645_500);
    let lib = l.lookup(ROOT, "usr".as_ref()).unwrap();
    let x = l
        .lookup(l.lookup(lib, "lib".as_ref()).unwrap(), "x".as_ref())
        .unwrap();
    let chunks = l.file_chunks(x);
    let shape: Vec<(u32, u64, u64, u64)> = chunks
        .iter()
        .map(|c| (c.member, c.inner_offset, c.file_offset, c.size))
        .collect();
    assert_eq!(shape, [(0, 0, 0, 10), (0, 10, 10, 10), (1, 0, 20, 10)]);
    assert_eq!(
        l.members(),
        [
            Member {
                offset: 100,
                end: 500
            },
            Member {
                offset: 500,
                end: TOC_AT
            }
        ]
    );
    assert_eq!(l.member_chunks(0).count(), 2);
    assert_eq!(l.data_size(), 30);
    assert_eq!(l.prefetch(), Prefetch::Unspecified);
}

#[test]
fn member_ends_count_entries_that_are_not_shown() {
    // A whiteout with data and a replaced file still start members: the ranges must stop there.
    let mut whiteout = reg(".wh.x", 5, 300);
    whiteout.name = ".wh.x".into();
    let entries = vec![
        reg("a", 5, 100),
        reg("b", 5, 200),
        whiteout,
        reg("b", 5, 400),
    ];
    let l = index(entries).unwrap();
    assert_eq!(
        l.members(),
        [
            Member {
                offset: 100,
                end: 200
            },
            Member {
                offset: 400,
                end: TOC_AT
            }
        ]
    );
    assert_eq!(l.node_count(), 4, "root, a, b, whiteout x");
}

#[test]
fn the_prefetch_landmark_marks_the_prefetch_range() {
    let mut landmark = reg(PREFETCH_LANDMARK, 1, 700);
    landmark.chunk_digest = digest_of(&[0xf]);
    let l = index(vec![reg("hot", 3, 100), landmark, reg("cold", 3, 800)]).unwrap();
    assert_eq!(l.prefetch(), Prefetch::UpTo(700));
    assert!(l.lookup(ROOT, PREFETCH_LANDMARK.as_ref()).is_none());
    // Deeper down it is an ordinary file.
    let nested = index(vec![reg(&format!("d/{PREFETCH_LANDMARK}"), 1, 100)]).unwrap();
    assert_eq!(nested.prefetch(), Prefetch::Unspecified);
    assert_eq!(nested.node_count(), 3);
}
