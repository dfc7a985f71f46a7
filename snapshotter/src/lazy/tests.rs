//! The lazy read path on a real FUSE mount (needs root and /dev/fuse): a blob written by our
//! eStargz writer, served from a [`BlobSource`] we control, read through the kernel.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::estargz::tests::fixtures::{Layer, TarBuilder, noise, small_chunks};
use crate::lazy::activity::Activity;
use crate::lazy::background::{BackgroundFetch, BackgroundPolicy};
use crate::lazy::data::LayerData;
use crate::lazy::mount;
use crate::lazy::source::{BlobSource, FetchError};

/// A blob in memory that counts requests and can be made slow or broken.
struct TestSource {
    blob: Vec<u8>,
    requests: AtomicUsize,
    broken: AtomicBool,
    delay: Duration,
    /// When the first request came.
    first_at: Mutex<Option<Instant>>,
}

impl TestSource {
    fn new(blob: Vec<u8>, delay: Duration) -> Arc<TestSource> {
        Arc::new(TestSource {
            blob,
            requests: AtomicUsize::new(0),
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
        std::thread::sleep(self.delay);
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

/// A mounted layer under a temp dir, unmounted on drop.
struct Mounted {
    dir: tempfile::TempDir,
    data: Arc<LayerData>,
    _session: fuser::BackgroundSession,
}

impl Mounted {
    fn new(layer: &Layer, source: Arc<dyn BlobSource>, deadline: Duration) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let data = Arc::new(
            LayerData::open(
                &dir.path().join("layer"),
                Arc::new(layer.index.clone()),
                source,
                deadline,
                Arc::new(Activity::new()),
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

    fn path(&self, rel: &str) -> std::path::PathBuf {
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
    // A new process (fresh LayerData over the same directory) trusts nothing it has not
    // verified, but needs no fetch either.
    let again = LayerData::open(
        &m.dir.path().join("layer"),
        Arc::new(layer.index.clone()),
        src.clone(),
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
fn a_corrupt_local_chunk_is_refetched_not_served() {
    let (layer, big) = sample_layer();
    let dir = tempfile::tempdir().unwrap();
    let src = TestSource::new(layer.blob.clone(), Duration::ZERO);
    let id = layer.find("big.bin").unwrap();
    {
        let data = LayerData::open(
            dir.path(),
            Arc::new(layer.index.clone()),
            src.clone(),
            Duration::from_secs(5),
            Arc::new(Activity::new()),
        )
        .unwrap();
        assert_eq!(data.read(id, 0, 1 << 20).unwrap(), big);
        data.persist().unwrap();
    }
    // Damage the stored copy of the first chunk of big.bin.
    let slot = layer.index.file_chunks(id)[0].slot;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("data"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"XXXX", slot).unwrap();
    let before = src.requests.load(Ordering::SeqCst);
    let data = LayerData::open(
        dir.path(),
        Arc::new(layer.index.clone()),
        src.clone(),
        Duration::from_secs(5),
        Arc::new(Activity::new()),
    )
    .unwrap();
    assert_eq!(data.read(id, 0, 1 << 20).unwrap(), big);
    assert_eq!(
        src.requests.load(Ordering::SeqCst),
        before + 1,
        "exactly the damaged member refetched"
    );
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
