//! The recorder's own logic: cgroup parsing, the pid cache, attribution among runs, dropping
//! on a full channel, trace files and retention. (The real FUSE path and containerd are in
//! `integration-tests/tests/chunk_cache.rs`.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::attribution::{PidCache, container_ids};
use super::files;
use super::recorder::testing::{dropped, stalled_tap, start_with_lookup};
use super::recorder::{ReadEvent, ReadSource};
use super::runs::{Attribution, RunStart, Runs};
use super::{AccessObserver, PrefetchedChunks, TraceSettings};
use crate::estargz::LayerIndex;
use crate::estargz::tests::fixtures::{Layer, TarBuilder, noise, small_chunks};
use crate::predictor::trace::{AccessSource, binary};
use crate::predictor::workload::WORKLOAD_LABEL;
use crate::predictor::{Access, ChunkId, RunContext, RunId, Trace};

#[test]
fn cgroup_lines_name_the_container() {
    // cgroup v2, `ctr run` (namespace/id), an id with dashes kept whole.
    assert_eq!(container_ids("0::/default/my-ctr-1\n"), ["my-ctr-1"]);
    // CRI with the systemd driver.
    let cri = "0::/kubepods.slice/kubepods-burstable.slice/\
               kubepods-burstable-pod5f2e.slice/cri-containerd-4c1f9ab2e7.scope\n";
    assert_eq!(container_ids(cri)[0], "4c1f9ab2e7");
    // runc's `slice:prefix:id` form, docker's scope.
    assert_eq!(
        container_ids("0::/kubepods-besteffort-pod12.slice:cri-containerd:77aa\n"),
        ["77aa"]
    );
    assert_eq!(
        container_ids("0::/system.slice/docker-abc.scope\n")[0],
        "abc"
    );
    // cgroup v1: every controller line names the same path; the v2 line (if any) comes first.
    let v1 = "12:pids:/k8s.io/c0ffee\n11:memory:/k8s.io/c0ffee\n1:name=systemd:/k8s.io/c0ffee\n\
              0::/k8s.io/c0ffee-v2\n";
    assert_eq!(container_ids(v1), ["c0ffee-v2", "c0ffee"]);
    // Host processes at the root, and garbage, name nothing.
    assert!(container_ids("0::/\n").is_empty());
    assert!(container_ids("").is_empty());
    assert!(container_ids("not a cgroup line\n").is_empty());
}

#[test]
fn the_pid_cache_is_bounded_and_forgets_ended_runs() {
    let mut cache = PidCache::new(3);
    cache.insert(1, Some("a".into()));
    cache.insert(2, Some("b".into()));
    cache.insert(3, None);
    assert_eq!(cache.get(1), Some(Some("a")));
    assert_eq!(cache.get(3), Some(None));
    assert_eq!(cache.get(9), None);
    cache.forget_run("a");
    assert_eq!(cache.get(1), None);
    cache.forget_unmatched();
    assert_eq!(cache.get(3), None);
    cache.insert(4, Some("b".into()));
    cache.insert(5, Some("b".into()));
    assert_eq!(cache.len(), 3);
    // Full: a new pid starts it over, never past the bound.
    cache.insert(6, None);
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.get(6), Some(None));
}

fn start(key: &str, layers: &[&str], label: Option<&str>) -> RunStart {
    RunStart {
        key: key.into(),
        image: "127.0.0.1:5000/python:esgz".into(),
        layers: layers.iter().map(|l| (*l).to_owned()).collect(),
        layout: Default::default(),
        labels: label
            .map(|l| BTreeMap::from([(WORKLOAD_LABEL.to_owned(), l.to_owned())]))
            .unwrap_or_default(),
        started: Instant::now(),
        started_unix_ms: 1_764_460_800_000,
    }
}

#[test]
fn reads_go_to_the_readers_run_or_to_the_only_run_on_the_layer() {
    let mut runs = Runs::default();
    runs.start(start("c1", &["sha256:base", "sha256:app"], None));
    let run = |k: &str| Attribution::Run(k.into());
    assert_eq!(runs.attribute(None, "sha256:app"), run("c1"));
    runs.start(start("c2", &["sha256:base"], None));
    // Two runs share base: the reader's cgroup decides, or nobody gets the read.
    assert_eq!(runs.attribute(Some("c2"), "sha256:base"), run("c2"));
    assert_eq!(
        runs.attribute(None, "sha256:base"),
        Attribution::Unattributed
    );
    // A cgroup that names a run not on this layer does not count; the only user gets it.
    assert_eq!(runs.attribute(Some("c2"), "sha256:app"), run("c1"));
    assert_eq!(
        runs.attribute(None, "sha256:other"),
        Attribution::Unattributed
    );
    let ids = ["nope".to_owned(), "c2".to_owned()];
    assert_eq!(runs.matching(&ids, "sha256:base").as_deref(), Some("c2"));
    assert_eq!(runs.matching(&ids, "sha256:app"), None);
    // containerd's keys carry the namespace and a counter before the container id.
    runs.start(start("ns/7/web-1", &["sha256:base"], None));
    let ids = ["web-1".to_owned()];
    assert_eq!(
        runs.matching(&ids, "sha256:base").as_deref(),
        Some("ns/7/web-1")
    );
    assert_eq!(
        runs.attribute(Some("ns/7/web-1"), "sha256:base"),
        run("ns/7/web-1")
    );
    assert!(runs.end("ns/7/web-1").is_some());
    assert!(
        runs.end("c1").is_some_and(|r| r.finish().is_none()),
        "an empty run has no trace"
    );
    assert_eq!(runs.attribute(None, "sha256:base"), run("c2"));
}

#[test]
fn a_full_channel_drops_events_and_never_blocks_the_reader() {
    let (tap, _rx) = stalled_tap(4);
    let began = Instant::now();
    for i in 0..100 {
        tap.record(event(1, 0, i, ReadSource::Hit));
    }
    assert_eq!(dropped(&tap), 96);
    // Not a timing assertion on the reader's speed: a blocked send would never return at all.
    assert!(began.elapsed() < Duration::from_secs(60));
}

fn event(pid: u32, node: u32, chunk: u32, source: ReadSource) -> ReadEvent {
    ReadEvent {
        pid,
        node,
        chunk,
        offset: 0,
        len: 100,
        at: Instant::now(),
        source,
    }
}

/// A layer with one small file and one chunked big file.
fn sample_index() -> (Arc<LayerIndex>, u32, u32) {
    let tar = TarBuilder::new()
        .file("etc/hello", 0o644, b"hello\n")
        .file("usr/lib/big.bin", 0o644, &noise(200 << 10, 3))
        .finish();
    let layer = Layer::write(&tar, &small_chunks());
    let hello = layer.find("etc/hello").unwrap();
    let big = layer.find("usr/lib/big.bin").unwrap();
    (Arc::new(layer.index), hello, big)
}

/// The first chunk index of file `node`.
fn chunk_of(index: &LayerIndex, node: u32, nth: u32) -> u32 {
    match &index.node(node).kind {
        crate::estargz::NodeKind::File { chunks, .. } => chunks.start + nth,
        _ => panic!("not a file"),
    }
}

/// Records what observers are told.
#[derive(Default)]
struct Seen {
    started: Mutex<Vec<(RunId, RunContext)>>,
    accesses: AtomicUsize,
    finished: Mutex<Vec<(RunId, Option<usize>)>>,
}

impl AccessObserver for Seen {
    fn run_started(&self, run: RunId, ctx: &RunContext) {
        self.started.lock().unwrap().push((run, ctx.clone()));
    }
    fn access(&self, _run: RunId, _access: &Access) {
        self.accesses.fetch_add(1, Ordering::SeqCst);
    }
    fn run_finished(&self, run: RunId, trace: Option<&Arc<Trace>>) {
        let n = trace.map(|t| t.accesses.len());
        self.finished.lock().unwrap().push((run, n));
    }
}

struct AllPrefetched;

impl PrefetchedChunks for AllPrefetched {
    fn was_prefetched(&self, _chunk: &ChunkId) -> bool {
        true
    }
}

#[test]
fn a_run_is_written_with_paths_times_and_sources_and_observers_see_it() {
    let dir = tempfile::tempdir().unwrap();
    let (index, hello, big) = sample_index();
    // pid 100 is in container c1, 200 in c2, 300 on the host.
    let rec = start_with_lookup(dir.path(), &TraceSettings::default(), |pid| match pid {
        100 => vec!["c1".into()],
        200 => vec!["c2".into()],
        _ => Vec::new(),
    });
    let seen = Arc::new(Seen::default());
    rec.add_observer(Arc::clone(&seen) as Arc<dyn AccessObserver>);
    let tap = rec.tap("sha256:layer", &index);
    rec.run_started(start("c1", &["sha256:layer"], Some("etl")));
    rec.run_started(start("c2", &["sha256:layer"], None));
    tap.record(event(
        100,
        hello,
        chunk_of(&index, hello, 0),
        ReadSource::Miss,
    ));
    std::thread::sleep(Duration::from_millis(2));
    tap.record(event(100, big, chunk_of(&index, big, 1), ReadSource::Hit));
    tap.record(event(300, big, chunk_of(&index, big, 0), ReadSource::Hit));
    rec.set_prefetched(Arc::new(AllPrefetched));
    tap.record(event(100, big, chunk_of(&index, big, 2), ReadSource::Hit));
    rec.snapshot_removed("c1");
    rec.snapshot_removed("not-a-run");
    rec.sync();

    let stats = rec.stats();
    assert_eq!(
        stats.unattributed_events, 1,
        "the host read with two runs on the layer"
    );
    assert_eq!((stats.traces_written, stats.active_runs), (1, 1));
    let kept = files::list(dir.path()).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].workload, "label:etl");
    assert_eq!((kept[0].accesses, kept[0].bytes), (3, 300));
    let trace = binary::read_file(&files::trace_files(dir.path()).unwrap()[0])
        .unwrap()
        .trace;
    assert_eq!(trace.header.layers, ["sha256:layer"]);
    assert_eq!(trace.header.labels[WORKLOAD_LABEL], "etl");
    let files: Vec<&str> = trace.chunks.iter().map(|c| c.file.as_str()).collect();
    assert_eq!(files, ["etc/hello", "usr/lib/big.bin", "usr/lib/big.bin"]);
    assert!(
        trace.chunks[1].file_offset > 0,
        "the big file's second chunk"
    );
    let sources: Vec<AccessSource> = trace.accesses.iter().map(|a| a.source).collect();
    use AccessSource::{Hit, Miss, PrefetchHit};
    assert_eq!(sources, [Miss, Hit, PrefetchHit]);
    assert!(trace.accesses[1].t_us > trace.accesses[0].t_us);

    // c2 read nothing: no file, but observers hear it ended; c2 is written at shutdown only
    // if it read something.
    rec.shutdown();
    assert_eq!(files::trace_files(dir.path()).unwrap().len(), 1);
    assert_eq!(seen.started.lock().unwrap().len(), 2);
    assert_eq!(
        seen.started.lock().unwrap()[0].1.label.as_deref(),
        Some("etl")
    );
    assert_eq!(seen.accesses.load(Ordering::SeqCst), 3);
    let finished = seen.finished.lock().unwrap();
    assert_eq!(
        finished.iter().map(|f| f.1).collect::<Vec<_>>(),
        [Some(3), None]
    );
}

#[test]
fn runs_still_active_at_shutdown_are_written_and_retention_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let (index, hello, _) = sample_index();
    let settings = TraceSettings {
        max_runs: 2,
        ..TraceSettings::default()
    };
    let rec = start_with_lookup(dir.path(), &settings, |_| Vec::new());
    let tap = rec.tap("sha256:layer", &index);
    for n in 0..3 {
        let mut s = start(&format!("c{n}"), &["sha256:layer"], None);
        s.started_unix_ms += n;
        rec.run_started(s);
        tap.record(event(
            0,
            hello,
            chunk_of(&index, hello, 0),
            ReadSource::Miss,
        ));
        if n < 2 {
            rec.snapshot_removed(&format!("c{n}"));
        }
    }
    rec.shutdown();
    let kept = files::list(dir.path()).unwrap();
    let starts: Vec<u64> = kept.iter().map(|t| t.started_unix_ms % 10).collect();
    assert_eq!(
        starts,
        [1, 2],
        "the oldest run went; the active one was written at shutdown"
    );
    assert!(kept.iter().all(|t| t.workload.starts_with("first1:")));
    // The export is the documented JSON Lines, one run line per trace.
    let mut out = Vec::new();
    let paths = files::trace_files(dir.path()).unwrap();
    assert_eq!(files::export(&paths, &mut out).unwrap(), 2);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.matches(r#""type":"run""#).count(), 2);
    assert!(text.contains(r#""file":"etc/hello""#), "{text}");
}
