//! Trace formats: round trips through both encodings, the live writer, torn tails at every
//! byte, damage in the middle, hostile bytes, directories and retention.

use std::collections::BTreeMap;
use std::path::Path;

use super::binary::{self, RunStart, TraceWriter};
use super::dir::{self, Retention};
use super::jsonl;
use super::*;
use crate::synth::{Program, Rng, RunStyle};
use crate::workload::{WORKLOAD_LABEL, WorkloadKey};

fn sample(seed: u64) -> Trace {
    Program::new("127.0.0.1:5000/python:esgz", 30, &[20, 25], 3).run(
        (seed % 2) as usize,
        &RunStyle::default(),
        seed,
    )
}

fn path() -> &'static Path {
    Path::new("test.augtrace")
}

#[test]
fn binary_round_trip_keeps_everything() {
    let mut trace = sample(1);
    trace.header.labels.insert("k".into(), "v ü".into());
    let bytes = binary::encode(&trace).unwrap();
    let decoded = binary::decode(&bytes, path()).unwrap();
    assert_eq!(decoded.trace, trace);
    assert_eq!(decoded.torn_at, None);
    // Compact: well under 16 bytes per access besides the chunk table.
    let table: usize = trace.chunks.iter().map(|c| 40 + c.file.len()).sum();
    assert!(
        bytes.len() - table < 16 * trace.accesses.len(),
        "{} bytes",
        bytes.len()
    );
}

#[test]
fn json_lines_round_trip_several_runs_in_one_file() {
    let (a, b) = (sample(1), sample(2));
    let mut out = Vec::new();
    jsonl::write_trace(&a, &mut out, path()).unwrap();
    jsonl::write_trace(&b, &mut out, path()).unwrap();
    let text = String::from_utf8(out.clone()).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "run");
    assert_eq!(first["version"], 1);
    assert_eq!(first["image"], "127.0.0.1:5000/python:esgz");
    let chunk: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    assert_eq!(chunk["type"], "chunk");
    assert_eq!(chunk["id"], 0);
    assert!(chunk["digest"].as_str().unwrap().starts_with("sha256:"));
    for field in ["layer", "size", "file", "file_offset"] {
        assert!(!chunk[field].is_null(), "{field}");
    }
    let access: serde_json::Value = serde_json::from_str(text.lines().nth(2).unwrap()).unwrap();
    assert_eq!(access["source"], "miss");
    for field in ["t_us", "chunk", "offset", "len"] {
        assert!(access[field].is_u64(), "{field}");
    }
    let back = jsonl::read_traces(out.as_slice(), path()).unwrap();
    assert_eq!(back, vec![a, b]);
}

#[test]
fn json_lines_errors_name_the_line() {
    let cases = [
        (
            "{\"type\":\"access\",\"t_us\":1,\"chunk\":0,\"offset\":0,\"len\":1,\"source\":\"miss\"}",
            1,
        ),
        (
            "{\"type\":\"run\",\"version\":2,\"image\":\"i\",\"workload\":\"w\",\"started_unix_ms\":0}",
            1,
        ),
        (
            "{\"type\":\"run\",\"version\":1,\"image\":\"i\",\"workload\":\"w\",\"started_unix_ms\":0}\n\
          {\"type\":\"access\",\"t_us\":1,\"chunk\":0,\"offset\":0,\"len\":1,\"source\":\"miss\"}",
            2,
        ),
        (
            "{\"type\":\"run\",\"version\":1,\"image\":\"i\",\"workload\":\"w\",\"started_unix_ms\":0}\n\
          {\"type\":\"chunk\",\"id\":3,\"digest\":\"sha256:00\",\"layer\":0,\"size\":1,\"file\":\"f\",\"file_offset\":0}",
            2,
        ),
        (
            "{\"type\":\"run\",\"version\":1,\"image\":\"i\",\"workload\":\"w\",\"started_unix_ms\":0}\n{not json",
            2,
        ),
    ];
    for (text, want) in cases {
        match jsonl::read_traces(text.as_bytes(), path()) {
            Err(Error::BadExport { line, .. }) => assert_eq!(line, want, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
}

fn write_live(trace: &Trace, label: Option<&str>, flush_every: usize) -> (Vec<u8>, Vec<usize>) {
    let mut labels = BTreeMap::new();
    if let Some(label) = label {
        labels.insert(WORKLOAD_LABEL.to_owned(), label.to_owned());
    }
    let start = RunStart {
        image: trace.header.image.clone(),
        layers: trace.header.layers.clone(),
        started_unix_ms: trace.header.started_unix_ms,
        labels,
    };
    let mut writer = TraceWriter::new(Vec::new(), path(), start, u64::MAX).unwrap();
    let mut flushed_at = Vec::new();
    for (i, a) in trace.accesses.iter().enumerate() {
        let chunk = &trace.chunks[a.chunk as usize];
        writer
            .access(chunk, a.t_us, a.offset, a.len, a.source)
            .unwrap();
        if (i + 1) % flush_every == 0 {
            writer.flush().unwrap();
            flushed_at.push(i + 1);
        }
    }
    (writer.finish(trace.duration_us()).unwrap(), flushed_at)
}

#[test]
fn the_live_writer_computes_the_workload_key_and_marks_the_end() {
    let trace = sample(3);
    let (bytes, _) = write_live(&trace, None, 7);
    let decoded = binary::decode(&bytes, path()).unwrap();
    let firsts: Vec<_> = trace.first_accesses().iter().map(|a| a.chunk).collect();
    let key = WorkloadKey::new(&trace.header.image, None, &firsts);
    assert_eq!(decoded.trace.header.workload, key.signature);
    assert_eq!(decoded.trace.accesses, trace.accesses);
    assert_eq!(decoded.ended_at_us, Some(trace.duration_us()));

    let (labelled, _) = write_live(&trace, Some("nightly-etl"), 7);
    let decoded = binary::decode(&labelled, path()).unwrap();
    assert_eq!(decoded.trace.header.workload, "label:nightly-etl");
}

#[test]
fn a_torn_tail_at_any_byte_loses_at_most_the_unflushed_tail() {
    let trace = sample(4);
    let (bytes, _) = write_live(&trace, None, 5);
    let full = binary::decode(&bytes, path()).unwrap();
    let mut torn_seen = 0;
    for cut in 0..bytes.len() {
        match binary::decode(&bytes[..cut], path()) {
            Ok(d) => {
                // Whatever survives is a prefix of the run, never something else.
                assert_eq!(d.trace.header, full.trace.header);
                assert_eq!(
                    d.trace.accesses[..],
                    full.trace.accesses[..d.trace.accesses.len()]
                );
                assert!(d.trace.chunks.len() <= full.trace.chunks.len());
                torn_seen += usize::from(d.torn_at.is_some());
            }
            Err(Error::NoHeader { .. }) => {}
            Err(e) => panic!("cut at {cut}: {e}"),
        }
    }
    assert!(torn_seen > bytes.len() / 2);
    // A file system that extended the file with zeros is a torn tail too.
    let mut zero_tail = bytes.clone();
    zero_tail.extend_from_slice(&[0; 100]);
    assert_eq!(
        binary::decode(&zero_tail, path()).unwrap().trace,
        full.trace
    );
}

#[test]
fn damage_before_the_tail_is_an_error_with_the_offset() {
    let trace = sample(5);
    let (bytes, _) = write_live(&trace, None, 3);
    // Flip a byte in the middle of the payload of the third frame.
    let mut frames = Vec::new();
    let mut pos = 10;
    while pos < bytes.len() {
        let mut cur = super::codec::Cursor::new(&bytes[pos..]);
        let len = cur.varint().unwrap() as usize;
        let payload = pos + cur.pos() + 4;
        frames.push((payload, payload + len));
        pos = payload + len;
    }
    assert!(frames.len() > 4);
    let at = (frames[2].0 + frames[2].1) / 2;
    let mut damaged = bytes.clone();
    damaged[at] ^= 0x55;
    match binary::decode(&damaged, path()) {
        Err(Error::Corrupt {
            offset, path: p, ..
        }) => {
            assert!(offset as usize <= at, "{offset}");
            assert_eq!(p, path());
        }
        other => panic!("{other:?}"),
    }
    let mut wrong_magic = bytes.clone();
    wrong_magic[0] = b'X';
    assert!(matches!(
        binary::decode(&wrong_magic, path()),
        Err(Error::NotATrace { .. })
    ));
    let mut newer = bytes;
    newer[8] = 9;
    let err = binary::decode(&newer, path()).unwrap_err().to_string();
    assert!(err.contains("version 9"), "{err}");
}

#[test]
fn random_bytes_never_panic_the_reader() {
    let mut rng = Rng::new(11);
    let good = binary::encode(&sample(6)).unwrap();
    for round in 0..2000 {
        let mut bytes = good.clone();
        let flips = 1 + rng.below(4);
        for _ in 0..flips {
            let i = 10 + rng.below(bytes.len() - 10);
            bytes[i] = (rng.next_u64() & 0xff) as u8;
        }
        if round % 3 == 0 {
            bytes.truncate(10 + rng.below(bytes.len() - 10));
        }
        let _ = binary::decode(&bytes, path());
    }
}

#[test]
fn directories_load_both_encodings_and_retention_drops_the_oldest() {
    let tmp = tempfile::tempdir().unwrap();
    let write_bin = |name: &str, trace: &Trace| {
        std::fs::write(tmp.path().join(name), binary::encode(trace).unwrap()).unwrap();
    };
    write_bin("a.augtrace", &sample(1));
    write_bin("b.augtrace", &sample(2));
    std::fs::write(tmp.path().join("c.augtrace"), b"AUGURTRC\x01\x00").unwrap();
    let mut export = Vec::new();
    jsonl::write_trace(&sample(3), &mut export, path()).unwrap();
    std::fs::write(tmp.path().join("d.jsonl"), &export).unwrap();
    std::fs::write(tmp.path().join("notes.txt"), b"ignored").unwrap();
    let loaded = dir::load_dir(tmp.path()).unwrap();
    assert_eq!(loaded.traces.len(), 3);
    assert_eq!(loaded.empty.len(), 1);
    assert_eq!(loaded.traces[2].1, sample(3));

    let limits = Retention {
        max_bytes: u64::MAX,
        max_runs: 1,
    };
    let active = vec![tmp.path().join("a.augtrace")];
    let removed = dir::enforce_retention(tmp.path(), limits, &active).unwrap();
    assert_eq!(removed.len(), 2);
    assert!(tmp.path().join("a.augtrace").exists());
    let removed = dir::enforce_retention(
        tmp.path(),
        Retention {
            max_bytes: 0,
            max_runs: 9,
        },
        &[],
    )
    .unwrap();
    assert_eq!(removed, active);
}

#[test]
fn the_per_run_bound_drops_accesses_past_it() {
    let trace = sample(7);
    let start = RunStart {
        image: "i".into(),
        layers: trace.header.layers.clone(),
        started_unix_ms: 0,
        labels: BTreeMap::new(),
    };
    let mut writer = TraceWriter::new(Vec::new(), path(), start, 10).unwrap();
    for a in &trace.accesses {
        let chunk = &trace.chunks[a.chunk as usize];
        writer
            .access(chunk, a.t_us, a.offset, a.len, a.source)
            .unwrap();
    }
    assert_eq!(writer.dropped(), trace.accesses.len() as u64 - 10);
    let bytes = writer.finish(0).unwrap();
    assert_eq!(
        binary::decode(&bytes, path()).unwrap().trace.accesses.len(),
        10
    );
}

#[test]
fn invalid_in_memory_traces_are_refused_by_the_writers() {
    let mut trace = sample(8);
    trace.accesses[0].chunk = 9999;
    assert!(matches!(
        binary::encode(&trace),
        Err(Error::InvalidTrace(_))
    ));
    assert!(matches!(
        jsonl::write_trace(&trace, &mut Vec::new(), path()),
        Err(Error::InvalidTrace(_))
    ));
}
