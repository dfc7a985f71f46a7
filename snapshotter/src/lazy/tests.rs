//! The lazy read path on a real FUSE mount (needs root and /dev/fuse): a blob written by our
//! eStargz writer, served from a [`BlobSource`] we control, read through the kernel. The
//! prefetcher's tests (`crate::prefetch::tests`) mount layers with the same harness.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cache::{CacheSettings, ChunkCache, Policy};
use crate::estargz::tests::fixtures::{Layer, TarBuilder, noise, small_chunks};
use crate::lazy::activity::Activity;
use crate::lazy::background::{BackgroundFetch, BackgroundPolicy};
use crate::lazy::data::LayerData;
use crate::lazy::mount;
use crate::lazy::source::{BlobSource, FetchError};

/// A blob in memory that counts requests (and bytes, and requests at once) and can be made
/// slow or broken.
pub(crate) struct TestSource {
    pub(crate) blob: Vec<u8>,
    pub(crate) requests: AtomicUsize,
    /// Bytes served.
    pub(crate) bytes: AtomicUsize,
    /// Requests being served now, and the most at once.
    active: AtomicUsize,
    pub(crate) max_active: AtomicUsize,
    broken: AtomicBool,
    delay: Duration,
    /// When the first request came.
    first_at: Mutex<Option<Instant>>,
}

impl TestSource {
    pub(crate) fn new(blob: Vec<u8>, delay: Duration) -> Arc<TestSource> {
        Arc::new(TestSource {
            blob,
            requests: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            max_active: AtomicUsize::new(0),
            broken: AtomicBool::new(false),
            delay,
            first_at: Mutex::new(None),
        })
    }
}

impl BlobSource for TestSource {
    fn read_range(&self, offset: u64, len: u64, deadline: Instant) -> Result<Vec<u8>, FetchError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.first_at
            .lock()
            .unwrap()
            .get_or_insert_with(Instant::now);
        if self.broken.load(Ordering::SeqCst) {
            // An unreachable registry: nothing comes back before the deadline.
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            return Err(FetchError::Deadline {
                source_name: "test".into(),
                after: Duration::ZERO,
            });
        }
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_active.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        self.bytes.fetch_add(len as usize, Ordering::SeqCst);
        self.active.fetch_sub(1, Ordering::SeqCst);
        Ok(self.blob[offset as usize..(offset + len) as usize].to_vec())
    }

    fn name(&self) -> &str {
        "test"
    }
}

fn sample_layer() -> (Layer, Vec<u8>) {
    let big = noise(300 << 10, 7);
    let tar = TarBuilder::new()
        .dir("etc", 0o755)
        .file("etc/hello", 0o644, b"hello, lazy world\n")
        .file("bin-suid", 0o4755, b"#!/bin/sh\n")
        .file("big.bin", 0o600, &big)
        .symlink("link", "etc/hello")
        .hardlink("etc/hello2", "etc/hello", 0o644)
        .fifo("pipe")
        .file(".wh.gone", 0o644, b"")
        .dir("opaque", 0o700)
        .file("opaque/.wh..wh..opq", 0o644, b"")
        .file("opaque/kept", 0o644, b"kept")
        .finish();
    (Layer::write(&tar, &small_chunks()), big)
}

/// A chunk cache under `dir` (`ram` bytes of RAM tier; 0 puts demand reads on the NVMe tier,
/// which survives a reopen).
pub(crate) fn cache_in(dir: &Path, ram: u64) -> Arc<ChunkCache> {
    Arc::new(
        ChunkCache::open(&CacheSettings {
            ram_bytes: ram,
            nvme_path: dir.join("cache/chunks.nvme"),
            nvme_bytes: 8 << 20,
            hdd_path: dir.join("cache/spill"),
            hdd_bytes: 8 << 20,
            policy: Policy::Lru,
            ram_threshold: 0.8,
            nvme_threshold: 0.4,
            promote_after_hits: 2,
        })
        .unwrap(),
    )
}

/// A mounted layer under a temp dir, unmounted on drop.
pub(crate) struct Mounted {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) data: Arc<LayerData>,
    _session: fuser::BackgroundSession,
}

impl Mounted {
    fn new(layer: &Layer, source: Arc<dyn BlobSource>, deadline: Duration) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache_in(dir.path(), 4 << 20);
        Mounted::with_cache(dir, cache, layer, source, deadline)
    }

    fn with_cache(
        dir: tempfile::TempDir,
        cache: Arc<ChunkCache>,
        layer: &Layer,
        source: Arc<dyn BlobSource>,
        deadline: Duration,
    ) -> Mounted {
        let activity = Arc::new(Activity::new());
        Mounted::with_activity(dir, cache, activity, layer, source, deadline)
    }

    /// Mounts `layer` under `dir`, its chunks in `cache`, its demand fetches told to `activity`.
    pub(crate) fn with_activity(
        dir: tempfile::TempDir,
        cache: Arc<ChunkCache>,
        activity: Arc<Activity>,
        layer: &Layer,
        source: Arc<dyn BlobSource>,
        deadline: Duration,
    ) -> Mounted {
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let data = Arc::new(
            LayerData::open(
                &dir.path().join("layer"),
                Arc::new(layer.index.clone()),
                source,
                cache,
                deadline,
                activity,
            )
            .unwrap(),
        );
        let session = mount::mount(Arc::clone(&data), &mnt, 4).unwrap();
        Mounted {
            dir,
            data,
            _session: session,
        }
    }

    pub(crate) fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join("mnt").join(rel)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        for m in crate::lazy::mount::fuse_mounts_under(self.dir.path()).unwrap_or_default() {
            let _ = mount::unmount(&m);
        }
    }
}

#[test]
fn the_mounted_tree_shows_what_the_tar_holds() {
    let (layer, big) = sample_layer();
    let src = TestSource::new(layer.blob.clone(), Duration::ZERO);
    let m = Mounted::new(&layer, src.clone(), Duration::from_secs(10));
    assert_eq!(
        std::fs::read(m.path("etc/hello")).unwrap(),
        b"hello, lazy world\n"
    );
    assert_eq!(std::fs::read(m.path("big.bin")).unwrap(), big);
    let meta = std::fs::symlink_metadata(m.path("bin-suid")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o4755);
    assert_eq!((meta.uid(), meta.gid()), (1000, 100));
    assert_eq!(
        std::fs::read_link(m.path("link")).unwrap(),
        Path::new("etc/hello")
    );
    let (a, b) = (
        std::fs::metadata(m.path("etc/hello")).unwrap(),
        std::fs::metadata(m.path("etc/hello2")).unwrap(),
    );
    assert_eq!(
        (a.ino(), a.nlink()),
        (b.ino(), 2),
        "hard links share an inode"
    );
    assert!(
        std::fs::symlink_metadata(m.path("pipe"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let gone = std::fs::symlink_metadata(m.path("gone")).unwrap();
    assert!(
        gone.file_type().is_char_device() && gone.rdev() == 0,
        "whiteout is char 0/0"
    );
    assert!(std::fs::symlink_metadata(m.path(".wh.gone")).is_err());
    let names: Vec<_> = std::fs::read_dir(m.path("opaque"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("kept")]);
    let opaque = nix::sys::stat::stat(&m.path("opaque")).unwrap();
    assert_eq!(opaque.st_mode & 0o7777, 0o700);
    assert!(src.requests.load(Ordering::SeqCst) > 0);
}

#[test]
fn concurrent_misses_on_one_member_fetch_it_once() {
    let (layer, big) = sample_layer();
    // Slow enough that all readers arrive while the first fetch is in flight.
    let src = TestSource::new(layer.blob.clone(), Duration::from_millis(300));
    let m = Mounted::new(&layer, src.clone(), Duration::from_secs(10));
    let id = layer.find("big.bin").unwrap();
    // Different offsets in the first 64 KiB chunk: the kernel cannot merge these (different
    // pages, called directly), only the single-flight can.
    let readers: Vec<_> = (0..6u64)
        .map(|i| {
            let data = Arc::clone(&m.data);
            std::thread::spawn(move || (i, data.read(id, i * 8192, 4096).unwrap()))
        })
        .collect();
    for r in readers {
        let (i, bytes) = r.join().unwrap();
        let at = (i * 8192) as usize;
        assert_eq!(bytes, big[at..at + 4096]);
    }
    assert_eq!(
        src.requests.load(Ordering::SeqCst),
        1,
        "six readers of one chunk must share one fetch"
    );
    // And through the kernel, a file spanning several members reads back whole.
    assert_eq!(std::fs::read(m.path("big.bin")).unwrap(), big);
}

#[test]
fn wrong_bytes_from_the_registry_are_never_served() {
    let (layer, _) = sample_layer();
    let mut blob = layer.blob.clone();
    let member = layer.index.members()
        [layer.index.file_chunks(layer.find("etc/hello").unwrap())[0].member as usize];
    // Flip a byte inside the member's compressed data: inflate or digest check must fail.
    blob[(member.offset + member.end) as usize / 2] ^= 0x55;
    let src = TestSource::new(blob, Duration::ZERO);
    let m = Mounted::new(&layer, src, Duration::from_secs(10));
    let err = std::fs::read(m.path("etc/hello")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(m.data.stats.read_errors.load(Ordering::Relaxed) >= 1);
}

#[test]
fn an_unreachable_registry_gives_eio_after_the_deadline_not_a_hang() {
    let (layer, _) = sample_layer();
    let src = TestSource::new(layer.blob.clone(), Duration::ZERO);
    src.broken.store(true, Ordering::SeqCst);
    let m = Mounted::new(&layer, src, Duration::from_millis(500));
    let err = std::fs::read(m.path("etc/hello")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(m.data.stats.read_errors.load(Ordering::Relaxed) >= 1);
}

#[test]
fn after_the_background_fetch_reads_need_no_registry_and_survive_a_reopen() {
    let (layer, big) = sample_layer();
    let src = TestSource::new(layer.blob.clone(), Duration::ZERO);
    let m = Mounted::new(&layer, src.clone(), Duration::from_millis(500));
    let policy = BackgroundPolicy {
        max_span: 64 << 10,
        idle: Duration::ZERO,
    };
    let fetch =
        BackgroundFetch::start(Arc::clone(&m.data), Arc::new(Activity::new()), policy).unwrap();
    let start = Instant::now();
    while !m.data.is_complete() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "background fetch did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(fetch);
    src.broken.store(true, Ordering::SeqCst);
    let before = src.requests.load(Ordering::SeqCst);
    assert_eq!(std::fs::read(m.path("big.bin")).unwrap(), big);
    assert_eq!(std::fs::read(m.path("opaque/kept")).unwrap(), b"kept");
    assert_eq!(
        src.requests.load(Ordering::SeqCst),
        before,
        "served from local data only"
    );
    // A new process (a fresh cache and LayerData over the same files) trusts nothing it has
    // not verified, but needs no fetch either: the background fetch spilled every chunk to disk.
    let again = LayerData::open(
        &m.dir.path().join("layer"),
        Arc::new(layer.index.clone()),
        src.clone(),
        cache_in(m.dir.path(), 4 << 20),
        Duration::from_millis(500),
        Arc::new(Activity::new()),
    )
    .unwrap();
    assert!(again.is_complete());
    let id = layer.find("big.bin").unwrap();
    assert_eq!(again.read(id, 0, 1 << 20).unwrap(), big);
    assert_eq!(src.requests.load(Ordering::SeqCst), before);
}

#[test]
fn a_corrupt_cached_chunk_is_refetched_not_served() {
    let (layer, big) = sample_layer();
    let dir = tempfile::tempdir().unwrap();
    let src = TestSource::new(layer.blob.clone(), Duration::ZERO);
    let id = layer.find("big.bin").unwrap();
    let open = |cache| {
        LayerData::open(
            &dir.path().join("layer"),
            Arc::new(layer.index.clone()),
            src.clone(),
            cache,
            Duration::from_secs(5),
            Arc::new(Activity::new()),
        )
        .unwrap()
    };
    // No RAM tier: the chunks land in the NVMe file, which outlives the process.
    let data = open(cache_in(dir.path(), 0));
    assert_eq!(data.read(id, 0, 1 << 20).unwrap(), big);
    drop(data);
    // Damage the stored copy of big.bin's first chunk (found by its bytes in the file).
    let first = &big[..4096];
    let file = std::fs::read(dir.path().join("cache/chunks.nvme")).unwrap();
    let at = file
        .windows(first.len())
        .position(|w| w == first)
        .expect("the chunk is in the NVMe file");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("cache/chunks.nvme"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"XXXX", at as u64 + 10).unwrap();
    let before = src.requests.load(Ordering::SeqCst);
    let cache = cache_in(dir.path(), 0);
    let data = open(Arc::clone(&cache));
    assert_eq!(data.read(id, 0, 1 << 20).unwrap(), big);
    assert_eq!(
        src.requests.load(Ordering::SeqCst),
        before + 1,
        "exactly the damaged member refetched"
    );
    assert_eq!(cache.status().corrupt, 1, "and counted");
}

/// Two different layers (two images) holding the same file: its chunks are stored once, by
/// digest, and the second layer's read is served from what the first one fetched.
#[test]
fn layers_that_share_a_chunk_fetch_it_once() {
    let shared = noise(100 << 10, 42);
    let layer_a = Layer::write(
        &TarBuilder::new()
            .file("a-only", 0o644, b"from image a")
            .file("usr/lib/shared.so", 0o755, &shared)
            .finish(),
        &small_chunks(),
    );
    let layer_b = Layer::write(
        &TarBuilder::new()
            .file("b-only", 0o644, &noise(50 << 10, 7))
            .file("lib/same.so", 0o755, &shared)
            .finish(),
        &small_chunks(),
    );
    assert_ne!(layer_a.blob, layer_b.blob, "two different layer blobs");
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path(), 4 << 20);
    let (src_a, src_b) = (
        TestSource::new(layer_a.blob.clone(), Duration::ZERO),
        TestSource::new(layer_b.blob.clone(), Duration::ZERO),
    );
    let a = Mounted::with_cache(
        tempfile::tempdir().unwrap(),
        Arc::clone(&cache),
        &layer_a,
        src_a.clone(),
        Duration::from_secs(5),
    );
    let b = Mounted::with_cache(
        tempfile::tempdir().unwrap(),
        Arc::clone(&cache),
        &layer_b,
        src_b.clone(),
        Duration::from_secs(5),
    );
    assert_eq!(std::fs::read(a.path("usr/lib/shared.so")).unwrap(), shared);
    assert!(src_a.requests.load(Ordering::SeqCst) > 0);
    assert_eq!(std::fs::read(b.path("lib/same.so")).unwrap(), shared);
    assert_eq!(
        src_b.requests.load(Ordering::SeqCst),
        0,
        "image b's copy of the file came from the cache"
    );
    // Its own file still comes from its own blob.
    assert_eq!(std::fs::read(b.path("b-only")).unwrap(), noise(50 << 10, 7));
    assert!(src_b.requests.load(Ordering::SeqCst) > 0);
}

/// Many readers through the kernel at once, over a cache far smaller than the layer: every byte
/// read is right, and no tier goes over its budget while chunks churn through all three.
#[test]
fn parallel_readers_through_fuse_over_a_small_cache_read_right_bytes_within_budgets() {
    let files: Vec<Vec<u8>> = (0..24)
        .map(|i| noise((96 + 8 * i) << 10, 100 + i as u64))
        .collect();
    let mut tar = TarBuilder::new().dir("d", 0o755);
    for (i, f) in files.iter().enumerate() {
        tar = tar.file(&format!("d/f{i}"), 0o644, f);
    }
    let layer = Layer::write(&tar.finish(), &small_chunks());
    let dir = tempfile::tempdir().unwrap();
    // ~3.4 MiB of files against 256 KiB + 512 KiB + 1 MiB of cache.
    let cache = Arc::new(
        ChunkCache::open(&CacheSettings {
            ram_bytes: 256 << 10,
            nvme_path: dir.path().join("cache/chunks.nvme"),
            nvme_bytes: 512 << 10,
            hdd_path: dir.path().join("cache/spill"),
            hdd_bytes: 1 << 20,
            policy: Policy::LfuDecay {
                half_life: Duration::from_secs(60),
            },
            ram_threshold: 0.8,
            nvme_threshold: 0.4,
            promote_after_hits: 2,
        })
        .unwrap(),
    );
    let src = TestSource::new(layer.blob.clone(), Duration::ZERO);
    let m = Mounted::with_cache(
        dir,
        Arc::clone(&cache),
        &layer,
        src,
        Duration::from_secs(10),
    );
    let files = Arc::new(files);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (cache, stop) = (Arc::clone(&cache), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut checks = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for t in cache.status().tiers {
                    assert!(t.used_bytes <= t.budget_bytes, "{t:?}");
                }
                checks += 1;
            }
            checks
        })
    };
    let readers: Vec<_> = (0..8)
        .map(|r| {
            let files = Arc::clone(&files);
            let base = m.path("d");
            std::thread::spawn(move || {
                for round in 0..6 {
                    for k in 0..files.len() {
                        let i = (k * 7 + r * 5 + round) % files.len();
                        let mut f = std::fs::File::open(base.join(format!("f{i}"))).unwrap();
                        let mut got = Vec::new();
                        std::io::Read::read_to_end(&mut f, &mut got).unwrap();
                        assert!(got == files[i], "reader {r}: d/f{i} differs");
                        // Forget the kernel's copy, so the next read reaches the cache again.
                        nix::fcntl::posix_fadvise(
                            &f,
                            0,
                            0,
                            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
                        )
                        .unwrap();
                    }
                }
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(watcher.join().unwrap() > 10);
    let s = cache.status();
    let evictions: u64 = s.tiers.iter().map(|t| t.evictions).sum();
    assert!(evictions > 20, "chunks churned through the tiers: {s:?}");
    let lookups = s.misses + s.tiers.iter().map(|t| t.hits).sum::<u64>();
    let chunks = layer.index.chunks().len() as u64;
    assert!(
        lookups > 5 * chunks,
        "reads reached the cache again and again ({lookups} lookups of {chunks} chunks)"
    );
    assert_eq!(s.corrupt, 0);
}

/// The background fetch sends nothing while a container's fetch (on any layer) is in flight, and
/// starts only once the demand side has been quiet for the policy's idle time. Both checks are
/// lower bounds on when it starts, which load can only push later.
#[test]
fn the_background_fetch_waits_until_demand_fetches_have_been_quiet_for_a_while() {
    let (layer, big) = sample_layer();
    let dir = tempfile::tempdir().unwrap();
    let src = TestSource::new(layer.blob.clone(), Duration::ZERO);
    let activity = Arc::new(Activity::new());
    let data = Arc::new(
        LayerData::open(
            dir.path(),
            Arc::new(layer.index.clone()),
            src.clone(),
            cache_in(dir.path(), 4 << 20),
            Duration::from_secs(5),
            Arc::clone(&activity),
        )
        .unwrap(),
    );
    let idle = Duration::from_millis(300);
    let demand = activity.fetching();
    let policy = BackgroundPolicy {
        max_span: 64 << 10,
        idle,
    };
    let fetch = BackgroundFetch::start(Arc::clone(&data), Arc::clone(&activity), policy).unwrap();
    std::thread::sleep(idle * 2);
    assert_eq!(
        src.requests.load(Ordering::SeqCst),
        0,
        "the background fetch ran while a demand fetch was in flight"
    );
    let ended = Instant::now();
    drop(demand);
    let start = Instant::now();
    while !data.is_complete() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "background fetch did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let first = src.first_at.lock().unwrap().expect("it fetched");
    assert!(
        first.duration_since(ended) >= idle,
        "first background request {:?} after the demand side went quiet; idle is {idle:?}",
        first.duration_since(ended)
    );
    drop(fetch);
    let id = layer.find("big.bin").unwrap();
    assert_eq!(data.read(id, 0, 1 << 20).unwrap(), big);
}

#[test]
fn reads_are_reported_to_the_trace_as_misses_then_hits() {
    use crate::trace::TraceSettings;
    use crate::trace::files;
    use crate::trace::recorder::testing::start_with_lookup;
    use crate::trace::runs::RunStart;

    let (layer, big) = sample_layer();
    let dir = tempfile::tempdir().unwrap();
    let src = TestSource::new(layer.blob.clone(), Duration::ZERO);
    let index = Arc::new(layer.index.clone());
    let traces = dir.path().join("traces");
    let rec = start_with_lookup(&traces, &TraceSettings::default(), |_| vec!["c".into()]);
    let mut data = LayerData::open(
        &dir.path().join("layer"),
        Arc::clone(&index),
        src,
        cache_in(dir.path(), 4 << 20),
        Duration::from_secs(5),
        Arc::new(Activity::new()),
    )
    .unwrap();
    data.set_trace(rec.tap("sha256:l", &index));
    rec.run_started(RunStart {
        key: "ns/1/c".into(),
        image: "img".into(),
        layers: vec!["sha256:l".into()],
        layout: Default::default(),
        labels: Default::default(),
        started: Instant::now(),
        started_unix_ms: 1,
    });
    let id = layer.find("big.bin").unwrap();
    // 10,000 bytes across the first chunk boundary (64 KiB chunks): two accesses per read.
    let part = &big[60_000..70_000];
    assert_eq!(data.read_by(77, id, 60_000, 10_000).unwrap(), part);
    assert_eq!(data.read_by(77, id, 60_000, 10_000).unwrap(), part);
    rec.snapshot_removed("ns/1/c");
    rec.sync();
    let path = &files::trace_files(&traces).unwrap()[0];
    let trace = crate::predictor::trace::binary::read_file(path)
        .unwrap()
        .trace;
    use crate::predictor::AccessSource::{Hit, Miss};
    let seen: Vec<_> = trace
        .accesses
        .iter()
        .map(|a| (a.chunk, a.offset, a.len, a.source))
        .collect();
    assert_eq!(
        seen,
        [
            (0, 60_000, 5536, Miss),
            (1, 65_536, 4464, Miss),
            (0, 60_000, 5536, Hit),
            (1, 65_536, 4464, Hit)
        ]
    );
    assert!(trace.chunks.iter().all(|c| c.file == "big.bin"));
}
