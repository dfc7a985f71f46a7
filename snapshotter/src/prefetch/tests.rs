//! The scheduler on real FUSE lazy layers (needs root and /dev/fuse): a layer written by our
//! eStargz writer, served from an in-memory source that counts requests, bytes and requests at
//! once; the real cache, models and worker threads. A first run teaches the models; the next
//! runs are predicted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use augur_predictor::trace::{ChunkRecord, RunHeader, TraceBuilder};
use augur_predictor::workload::WORKLOAD_LABEL;
use augur_predictor::{Access, AccessSource, ChunkId, RunContext, RunId};

use crate::cache::{ChunkCache, ChunkKey, Tier};
use crate::estargz::NodeKind;
use crate::estargz::tests::fixtures::{Layer, TarBuilder, noise, small_chunks};
use crate::lazy::activity::Activity;
use crate::lazy::locator::ChunkLocator;
use crate::lazy::tests::{Mounted, TestSource, cache_in};
use crate::prefetch::{Parts, PredictorSettings, PrefetchSettings, PrefetchStats, Prefetcher};

const FILES: usize = 12;
const FILE_BYTES: usize = 48 << 10;
const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";
const WORKERS: usize = 2;
/// The bandwidth bound, bytes per second (so a run's prefetch takes a second or two).
const RATE: u64 = 256 << 10;

/// Files `f00`..`f11` of incompressible bytes, all different (`noise` ignores a seed's lowest
/// bit), one chunk (and one gzip member) each.
fn layer() -> Layer {
    let mut tar = TarBuilder::new();
    for i in 0..FILES {
        tar = tar.file(
            &format!("f{i:02}"),
            0o644,
            &noise(FILE_BYTES, 2 * i as u64 + 1),
        );
    }
    Layer::write(&tar.finish(), &small_chunks())
}

/// The chunk records of the files, in file order.
fn records(layer: &Layer) -> Vec<ChunkRecord> {
    (0..FILES)
        .map(|i| {
            let name = format!("f{i:02}");
            let node = layer.index.find(std::path::Path::new(&name)).unwrap();
            let NodeKind::File { chunks, .. } = &layer.index.node(node).kind else {
                panic!("{name} is not a file");
            };
            assert_eq!(chunks.len(), 1, "{name}: one chunk");
            let c = layer.index.chunks()[chunks.start as usize];
            ChunkRecord {
                digest: ChunkId(c.digest),
                layer: 0,
                size: c.size as u32,
                file: name,
                file_offset: 0,
            }
        })
        .collect()
}

fn context() -> RunContext {
    RunContext {
        image: "127.0.0.1:5000/prefetch-test:esgz".into(),
        label: Some("test".into()),
        layers: vec![DIGEST.into()],
        layout: Default::default(),
    }
}

/// The run the models learn: every file in order, 500 ms apart.
fn teaching_trace(records: &[ChunkRecord]) -> Arc<augur_predictor::Trace> {
    let ctx = context();
    let header = RunHeader {
        image: ctx.image.clone(),
        workload: String::new(),
        layers: ctx.layers.clone(),
        started_unix_ms: 0,
        labels: BTreeMap::from([(WORKLOAD_LABEL.to_owned(), "test".to_owned())]),
    };
    let mut b = TraceBuilder::new(header);
    for (i, r) in records.iter().enumerate() {
        b.access(r, i as u64 * 500_000, 0, r.size, AccessSource::Miss);
    }
    Arc::new(b.finish())
}

fn access(r: &ChunkRecord, i: usize, source: AccessSource) -> Access {
    Access {
        chunk: r.digest,
        at: Duration::from_millis(i as u64 * 500),
        size: r.size,
        source,
    }
}

fn settings() -> PrefetchSettings {
    PrefetchSettings {
        enabled: true,
        workers: WORKERS,
        max_bandwidth: RATE,
        queue_max: 1024,
        threshold: 0.05,
        threshold_min: 0.0,
        threshold_max: 1.0,
        // No adaptation during the test: the threshold stays where it starts.
        adapt_interval: Duration::from_secs(3600),
    }
}

struct Bed {
    layer: Layer,
    records: Vec<ChunkRecord>,
    source: Arc<TestSource>,
    cache: Arc<ChunkCache>,
    activity: Arc<Activity>,
    mounted: Mounted,
    locator: Arc<ChunkLocator>,
    prefetcher: Prefetcher,
    state_dir: tempfile::TempDir,
}

impl Bed {
    fn new() -> Bed {
        let layer = layer();
        let records = records(&layer);
        let source = TestSource::new(layer.blob.clone(), Duration::from_millis(5));
        let dir = tempfile::tempdir().unwrap();
        let cache = cache_in(dir.path(), 4 << 20);
        let activity = Arc::new(Activity::new());
        let mounted = Mounted::with_activity(
            dir,
            Arc::clone(&cache),
            Arc::clone(&activity),
            &layer,
            source.clone(),
            Duration::from_secs(30),
        );
        let locator = Arc::new(ChunkLocator::new());
        locator.add(DIGEST, &mounted.data);
        let state_dir = tempfile::tempdir().unwrap();
        let predictor = PredictorSettings {
            model_dir: None,
            model_dir_is_default: false,
            onnxruntime: None,
            state_dir: state_dir.path().to_path_buf(),
            models: crate::prefetch::settings::ModelKind::ALL.to_vec(),
        };
        let parts = Parts {
            cache: Arc::clone(&cache),
            activity: Arc::clone(&activity),
            locator: Arc::clone(&locator),
        };
        let prefetcher = Prefetcher::start(&settings(), &predictor, &parts).unwrap();
        Bed {
            layer,
            records,
            source,
            cache,
            activity,
            mounted,
            locator,
            prefetcher,
            state_dir,
        }
    }

    /// Run 1: every file read on demand through FUSE, then the trace taught.
    fn teach(&self) {
        let run = RunId(1);
        self.prefetcher.run_started(run, &context());
        for (i, r) in self.records.iter().enumerate() {
            std::fs::read(self.mounted.path(&r.file)).unwrap();
            self.prefetcher
                .access(run, &access(r, i, AccessSource::Miss));
        }
        self.prefetcher
            .run_finished(run, Some(&teaching_trace(&self.records)));
        // Evict what run 1 fetched, so the next runs find nothing cached.
        self.cache.evict_all();
        assert!(!self.cache.contains(&ChunkKey(self.records[5].digest.0)));
    }

    /// Reads file `i` through FUSE and tells the prefetcher.
    fn read(&self, run: RunId, i: usize) {
        let r = &self.records[i];
        let was = self.prefetcher.was_prefetched(&r.digest);
        std::fs::read(self.mounted.path(&r.file)).unwrap();
        let source = if was {
            AccessSource::PrefetchHit
        } else {
            AccessSource::Miss
        };
        self.prefetcher.access(run, &access(r, i, source));
    }

    fn stats(&self) -> PrefetchStats {
        self.prefetcher.stats()
    }

    /// Waits (bounded) until `done` holds; the bound only keeps a broken build from hanging.
    fn wait_until(&self, what: &str, mut done: impl FnMut(&PrefetchStats) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.stats();
            if done(&s) {
                return;
            }
            assert!(Instant::now() < deadline, "gave up waiting: {what}: {s:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.prefetcher.stop();
    }
}

/// The tier the cache's thresholds (0.8 RAM, 0.4 NVMe) give a prefetched chunk.
fn earned(probability: f32) -> Tier {
    if probability >= 0.8 {
        Tier::Ram
    } else if probability >= 0.4 {
        Tier::Nvme
    } else {
        Tier::Hdd
    }
}

/// The predictor has handled every event, and the queue and the workers are idle.
fn settled(s: &PrefetchStats) -> bool {
    s.events_pending == 0 && s.queue_len == 0 && s.in_flight == 0
}

#[test]
fn predicted_chunks_are_prefetched_into_their_tier_within_the_bounds() {
    let bed = Bed::new();
    bed.teach();
    let run = RunId(2);
    let started = Instant::now();
    let before = bed.source.bytes.load(Ordering::SeqCst);
    bed.prefetcher.run_started(run, &context());
    bed.read(run, 0);
    bed.read(run, 1);
    // What follows in the taught run is predicted (as far as the models look ahead) and
    // prefetched.
    bed.wait_until("the predicted chunks to be prefetched", |s| {
        s.issued_chunks > 0 && settled(s)
    });
    let elapsed = started.elapsed();
    let issued = bed.prefetcher.issued();
    // File 1 may have been prefetched between the two reads (and used by the second).
    let unread: Vec<_> = issued.iter().filter(|(_, i)| !i.used).collect();
    assert!(unread.len() >= 4, "{issued:?}");
    let later: Vec<ChunkId> = bed.records[1..].iter().map(|r| r.digest).collect();
    for (chunk, i) in &issued {
        assert!(
            later.contains(chunk),
            "{chunk:?} was read before any prediction"
        );
        assert!(i.probability >= 0.05, "{i:?}");
        assert_eq!(
            bed.cache.tier_of(&ChunkKey(chunk.0)),
            Some(earned(i.probability)),
            "chunk predicted at {}",
            i.probability
        );
        assert!(bed.prefetcher.was_prefetched(chunk));
    }
    // Bounds: never more fetches at once than workers, never more bytes than the bucket let
    // through (its burst, its rate over the time that passed, one member of debt) plus the two
    // demand reads.
    let s = bed.stats();
    assert!(s.max_in_flight <= WORKERS, "{s:?}");
    assert!(bed.source.max_active.load(Ordering::SeqCst) <= WORKERS);
    let fetched = (bed.source.bytes.load(Ordering::SeqCst) - before) as f64;
    let member = bed
        .layer
        .index
        .members()
        .iter()
        .map(|m| m.len())
        .max()
        .unwrap() as f64;
    let bound = RATE as f64 * (1.0 + elapsed.as_secs_f64()) + 3.0 * member;
    assert!(
        fetched <= bound,
        "{fetched} bytes in {elapsed:?}, bound {bound}"
    );
    assert!(s.fetched_bytes as f64 <= fetched, "{s:?}");

    // Three more prefetched files are read: used. Reading them may prefetch more.
    let before = bed.stats();
    let index_of = |c: &ChunkId| bed.records.iter().position(|r| r.digest == *c).unwrap();
    let mut read: Vec<usize> = unread.iter().map(|(c, _)| index_of(c)).collect();
    read.sort_unstable();
    for &i in &read[..3] {
        bed.read(run, i);
        bed.wait_until("the run to settle", settled);
    }
    let s = bed.stats();
    assert_eq!(s.used_chunks, before.used_chunks + 3, "{s:?}");
    let used: u64 = read[..3]
        .iter()
        .map(|&i| u64::from(bed.records[i].size))
        .sum();
    assert_eq!(s.used_bytes, before.used_bytes + used);
    // The run ends: everything else it prefetched was wasted.
    bed.prefetcher.run_finished(run, None);
    let s = bed.stats();
    assert_eq!(s.wasted_chunks, s.issued_chunks - s.used_chunks, "{s:?}");
    assert_eq!(s.wasted_bytes, s.issued_bytes - s.used_bytes);
    assert!(
        s.wasted_chunks > 0,
        "the models look further ahead than was read: {s:?}"
    );
    let precision = s.used_bytes as f64 / s.issued_bytes as f64;
    assert_eq!(s.precision, Some(precision));
    assert!(!bed.prefetcher.was_prefetched(&bed.records[read[0]].digest));
}

#[test]
fn demand_goes_first_and_cancel_run_empties_the_queue() {
    let bed = Bed::new();
    bed.teach();
    let run = RunId(3);
    // A demand fetch in flight: workers must not start anything.
    let demand = bed.activity.fetching();
    let requests = bed.source.requests.load(Ordering::SeqCst);
    bed.prefetcher.run_started(run, &context());
    bed.prefetcher
        .access(run, &access(&bed.records[0], 0, AccessSource::Miss));
    bed.wait_until("predictions to be queued", |s| {
        s.events_pending == 0 && s.queue_len > 0
    });
    // Give the workers a chance to misbehave (not a timing assertion: they must never fetch).
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(bed.source.requests.load(Ordering::SeqCst), requests);
    let queued = bed.stats().queue_len;
    assert_eq!(bed.stats().issued_chunks, 0);
    assert_eq!(bed.prefetcher.cancel_run(run), queued);
    let s = bed.stats();
    assert_eq!((s.queue_len, s.cancelled), (0, queued as u64));
    drop(demand);
    bed.prefetcher.run_finished(run, None);
    bed.wait_until("the end of the run to be handled", settled);
    assert_eq!(bed.stats().issued_chunks, 0);
    assert_eq!(bed.source.requests.load(Ordering::SeqCst), requests);
}

#[test]
fn learned_state_is_saved_at_stop_and_loaded_at_start() {
    let bed = Bed::new();
    bed.teach();
    bed.prefetcher.stop();
    let saved = bed
        .state_dir
        .path()
        .join("replay+markov+continuation.state.gz");
    assert!(saved.exists(), "{}", saved.display());
    // A corrupt file is ignored, not fatal.
    std::fs::write(&saved, b"not gzip").unwrap();
    let predictor = PredictorSettings {
        model_dir: None,
        model_dir_is_default: false,
        onnxruntime: None,
        state_dir: bed.state_dir.path().to_path_buf(),
        models: crate::prefetch::settings::ModelKind::ALL.to_vec(),
    };
    let parts = Parts {
        cache: Arc::clone(&bed.cache),
        activity: Arc::clone(&bed.activity),
        locator: Arc::new(ChunkLocator::new()),
    };
    let p = Prefetcher::start(&settings(), &predictor, &parts).unwrap();
    p.stop();
}

/// `[predictor]` settings naming `model_dir` and the test cache's ONNX Runtime library.
fn predictor_with(model_dir: std::path::PathBuf, state: &std::path::Path) -> PredictorSettings {
    let library = augur_predictor::lstm::runtime::test_library();
    assert!(
        library.exists(),
        "ONNX Runtime not found at {}: run `bash onnx-models/setup.sh` \
         (integration-tests/scripts/deps.sh runs it)",
        library.display()
    );
    PredictorSettings {
        model_dir: Some(model_dir),
        model_dir_is_default: false,
        onnxruntime: Some(library),
        state_dir: state.to_path_buf(),
        models: crate::prefetch::settings::ModelKind::ALL.to_vec(),
    }
}

#[test]
fn the_lstm_joins_when_its_model_loads_and_is_left_out_when_it_does_not() {
    let state = tempfile::tempdir().unwrap();
    let shipped =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../onnx-models/synthetic-v0");
    let models = crate::prefetch::predict::load_models(&predictor_with(shipped, state.path()));
    assert!(models.lstm.is_some(), "the shipped model and runtime load");
    let missing = state.path().join("no-such-model");
    let models = crate::prefetch::predict::load_models(&predictor_with(missing, state.path()));
    assert!(
        models.lstm.is_none(),
        "a missing model directory leaves the online models only"
    );
}

#[test]
fn every_lstm_step_is_measured_under_its_model_version() {
    use augur_predictor::{Lstm, LstmConfig, Predictor};
    let state = tempfile::tempdir().unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../onnx-models/tools-v1");
    let models = crate::prefetch::predict::load_models(&predictor_with(shipped, state.path()));
    let engine = models.lstm.expect("tools-v1 and the runtime load");
    let latency = Arc::new(crate::metrics::inference::InferenceLatency::default());
    engine.set_step_observer(latency.observer());
    // A run of an image the model was trained on: predicted from its start token alone.
    let image = engine.model().images.first().cloned().unwrap_or_default();
    let config = LstmConfig {
        timeout: Duration::from_secs(30),
        ..LstmConfig::default()
    };
    let mut lstm = Lstm::new(Arc::clone(&engine), config);
    // The ensemble does not calibrate it on recorded runs of the images it was trained on.
    let header = |image: &str| augur_predictor::trace::RunHeader {
        image: image.to_owned(),
        workload: String::new(),
        layers: Vec::new(),
        started_unix_ms: 0,
        labels: Default::default(),
    };
    assert!(lstm.trained_on(&header(&image)));
    assert!(!lstm.trained_on(&header("127.0.0.1:5000/never-trained:esgz")));
    lstm.start_run(
        RunId(1),
        &RunContext {
            image,
            label: None,
            layers: Vec::new(),
            layout: Default::default(),
        },
    );
    assert!(
        !lstm.predict(RunId(1), 8).is_empty(),
        "tools-v1 predicts a run's start"
    );
    let series = latency.snapshot();
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(series[0].0, "tools-v1");
    assert!(
        series[0].1.count >= 1 && series[0].1.sum > 0.0,
        "{series:?}"
    );
}

#[test]
fn a_warmed_images_likely_chunks_are_prefetched_behind_demand_into_their_tier() {
    use crate::prefetch::warmed::{WARM_KEPT, WarmUp};
    let bed = Bed::new();
    bed.teach();
    // The image is warmed, not pulled: no mount's locator knows its layer.
    bed.locator.remove(DIGEST);
    let warm = || WarmUp {
        image: context().image,
        probability: 1.0,
        expected_in: Duration::from_secs(60),
        layers: vec![(DIGEST.to_owned(), Arc::clone(&bed.mounted.data))],
    };
    let requests = bed.source.requests.load(Ordering::SeqCst);
    let demand = bed.activity.fetching();
    bed.prefetcher.warm_image(warm());
    bed.wait_until("the warmed image's chunks to be queued", |s| {
        s.events_pending == 0 && s.queue_len > 0
    });
    {
        let q = bed.prefetcher.inner.shared.queue.lock().unwrap();
        assert!(q.len() >= 4, "the taught run's first chunks: {}", q.len());
    }
    // Demand first: nothing is fetched while a read waits (not a timing assertion: never).
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(bed.source.requests.load(Ordering::SeqCst), requests);
    drop(demand);
    bed.wait_until("the warmed chunks to be prefetched", |s| {
        s.issued_chunks > 0 && settled(s)
    });
    let s = bed.stats();
    assert_eq!(s.unlocated, 0, "found through the warmed layers: {s:?}");
    let issued = bed.prefetcher.issued();
    assert!(issued.len() >= 4, "{issued:?}");
    for (chunk, i) in &issued {
        assert!(bed.records.iter().any(|r| r.digest == *chunk));
        assert_eq!(
            bed.cache.tier_of(&ChunkKey(chunk.0)),
            Some(earned(i.probability)),
            "chunk predicted at {}",
            i.probability
        );
    }
    // Newer warm-ups evict the oldest: its unread chunks count as wasted.
    bed.cache.evict_all();
    bed.prefetcher.warm_image(warm());
    for _ in 0..WARM_KEPT {
        bed.prefetcher.warm_image(WarmUp {
            probability: 0.0,
            ..warm()
        });
    }
    bed.wait_until("the warm-ups to be handled", settled);
    let s = bed.stats();
    assert_eq!(bed.prefetcher.inner.shared.warm.len(), WARM_KEPT);
    assert!(s.wasted_chunks >= issued.len() as u64, "{s:?}");
}

#[test]
fn a_plan_names_what_a_taught_image_reads_first_and_teaches_the_models_nothing() {
    let bed = Bed::new();
    bed.teach();
    let requests = bed.source.requests.load(Ordering::Relaxed);
    let first = bed
        .prefetcher
        .plan(context(), 64)
        .expect("the thread answers");
    let taught: Vec<ChunkId> = bed.records.iter().map(|r| r.digest).collect();
    assert!(
        first.len() >= FILES / 2 && first.iter().all(|p| taught.contains(&p.chunk)),
        "the plan is the taught run's chunks: {first:?}"
    );
    // A dry run: asked again, the same answer (a run that read nothing would have lowered
    // the calibrated probabilities), and nothing was queued or fetched.
    let again = bed
        .prefetcher
        .plan(context(), 64)
        .expect("the thread answers");
    let key = |v: &[augur_predictor::Prediction]| -> Vec<(ChunkId, u32)> {
        v.iter()
            .map(|p| (p.chunk, p.probability.to_bits()))
            .collect()
    };
    assert_eq!(key(&first), key(&again));
    bed.wait_until("events handled", settled);
    assert_eq!(bed.stats().issued_chunks, 0, "a plan prefetches nothing");
    assert_eq!(bed.source.requests.load(Ordering::Relaxed), requests);
    let unknown = RunContext {
        image: "127.0.0.1:5000/never-run:1".into(),
        label: None,
        layers: vec![format!("sha256:{}", "9".repeat(64))],
        layout: Default::default(),
    };
    assert_eq!(bed.prefetcher.plan(unknown, 64), Some(Vec::new()));
}
