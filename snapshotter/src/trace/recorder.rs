//! [`Recorder`]: the `augur-trace` thread and the bounded channel that feeds it.
//!
//! A lazy layer's reads reach it through the layer's [`TraceTap`]: one `try_send` of a small,
//! allocation-free [`ReadEvent`] (layer tag, node, chunk index, the part read, pid, time, hit or
//! miss). A full channel drops the event and counts it; a reader never waits on tracing. Run
//! starts and ends, layer registrations and observers travel on the same channel with a
//! blocking send (they are rare and must not be lost), so the thread sees everything in order:
//! a run's start before its reads, its reads before its end.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::attribution::{PidCache, container_ids_of_pid};
use super::runs::{Attribution, Run, RunStart, Runs};
use super::{AccessObserver, Observers, PrefetchedChunks, TraceError, TraceSettings, files};
use crate::estargz::{LayerIndex, NodeId};
use crate::predictor::trace::{AccessSource, ChunkRecord};
use crate::predictor::{ChunkId, RunId};

/// pids whose run is remembered (see [`PidCache`]).
const PID_CACHE_CAPACITY: usize = 4096;
/// At most one "events dropped" warning per this many milliseconds.
const DROP_LOG_INTERVAL_MS: u64 = 10_000;

/// Where a read's bytes came from, as the FUSE path knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadSource {
    /// Served from a cache tier.
    Hit,
    /// Fetched from the registry while the reader waited (or waited on another reader's fetch).
    Miss,
}

/// One read of one chunk of a lazy layer, as a FUSE thread hands it over (no allocation).
#[derive(Debug, Clone, Copy)]
pub struct ReadEvent {
    /// The reading process.
    pub pid: u32,
    /// The file's node in the layer's index.
    pub node: NodeId,
    /// The chunk's index in the layer's chunk table.
    pub chunk: u32,
    /// Offset of the part read, in the file.
    pub offset: u64,
    /// Length of the part read.
    pub len: u32,
    /// When the read was served.
    pub at: Instant,
    /// Hit or miss.
    pub source: ReadSource,
}

/// What the recorder thread is told.
enum Msg {
    Read(u32, ReadEvent),
    Layer(u32, String, Weak<LayerIndex>),
    Start(Box<RunStart>),
    End(String),
    Observer(Arc<dyn AccessObserver>),
    Prefetched(Arc<dyn PrefetchedChunks>),
    Sync(SyncSender<()>),
    RunOf(String, SyncSender<Option<RunId>>),
    Stop,
}

/// Counters, shared by the taps, the thread and the admin API.
#[derive(Debug, Default)]
pub struct Counters {
    dropped: AtomicU64,
    unattributed: AtomicU64,
    written: AtomicU64,
    write_errors: AtomicU64,
    truncated: AtomicU64,
    last_drop_log_ms: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

/// The recorder's counters, for `GET /traces`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecorderStats {
    /// Read events dropped because the channel was full.
    pub dropped_events: u64,
    /// Reads no run could be found for.
    pub unattributed_events: u64,
    /// Traces written since the daemon started.
    pub traces_written: u64,
    /// Traces that could not be written.
    pub write_errors: u64,
    /// Accesses not kept because their run held the per-run maximum.
    pub truncated_accesses: u64,
    /// Runs active now.
    pub active_runs: u64,
}

/// A layer's connection to the recorder; [`crate::lazy::data::LayerData`] holds one.
#[derive(Debug, Clone)]
pub struct TraceTap {
    tx: SyncSender<Msg>,
    tag: u32,
    counters: Arc<Counters>,
}

impl TraceTap {
    /// Hands `event` to the recorder without blocking: a full channel drops it (counted, and
    /// logged at most every 10 s).
    pub fn record(&self, event: ReadEvent) {
        match self.tx.try_send(Msg::Read(self.tag, event)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.counters.note_drop(),
            // The recorder stopped (daemon shutdown): nothing records any more.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

impl Counters {
    fn note_drop(&self) {
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let epoch = *self.epoch.get_or_init(Instant::now);
        let now = epoch.elapsed().as_millis() as u64 + DROP_LOG_INTERVAL_MS;
        let last = self.last_drop_log_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= DROP_LOG_INTERVAL_MS
            && self
                .last_drop_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                dropped,
                "trace channel full: read events dropped (raise trace.channel_capacity; \
                 further drops are only counted for 10 s)"
            );
        }
    }

    /// How many events were dropped on a full channel.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The trace recorder of one daemon: owns the `augur-trace` thread.
#[derive(Debug)]
pub struct Recorder {
    tx: SyncSender<Msg>,
    dir: PathBuf,
    counters: Arc<Counters>,
    /// Keys of the active runs, so a Remove of any other snapshot costs no message.
    runs: Mutex<HashSet<String>>,
    next_tag: AtomicU32,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Recorder {
    /// Starts the recorder writing traces under `dir` within `settings`' bounds.
    pub fn start(dir: &Path, settings: &TraceSettings) -> Result<Arc<Recorder>, TraceError> {
        Recorder::spawn(dir, settings, Box::new(container_ids_of_pid))
    }

    /// Starts the thread; `pid_lookup` maps a pid to the container ids its cgroup names.
    fn spawn(
        dir: &Path,
        settings: &TraceSettings,
        pid_lookup: Box<dyn Fn(u32) -> Vec<String> + Send>,
    ) -> Result<Arc<Recorder>, TraceError> {
        std::fs::create_dir_all(dir).map_err(TraceError::io("create", dir))?;
        let (tx, rx) = sync_channel(settings.channel_capacity);
        let counters = Arc::new(Counters::default());
        let worker = Worker {
            dir: dir.to_path_buf(),
            settings: settings.clone(),
            counters: Arc::clone(&counters),
            runs: Runs::default(),
            pids: PidCache::new(PID_CACHE_CAPACITY),
            layers: Vec::new(),
            observers: Vec::new(),
            prefetched: None,
            pid_lookup,
        };
        let thread = std::thread::Builder::new()
            .name("augur-trace".into())
            .spawn(move || worker.run(rx))
            .map_err(TraceError::Thread)?;
        Ok(Arc::new(Recorder {
            tx,
            dir: dir.to_path_buf(),
            counters,
            runs: Mutex::new(HashSet::new()),
            next_tag: AtomicU32::new(0),
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// The directory traces are written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Registers a lazy layer whose reads will be recorded; its [`TraceTap`] sends them.
    pub fn tap(&self, digest: &str, index: &Arc<LayerIndex>) -> TraceTap {
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
        self.send(Msg::Layer(tag, digest.to_owned(), Arc::downgrade(index)));
        TraceTap {
            tx: self.tx.clone(),
            tag,
            counters: Arc::clone(&self.counters),
        }
    }

    /// A run began (called by the snapshot layer after a Prepare on lazy layers).
    pub fn run_started(&self, start: RunStart) {
        self.lock_runs().insert(start.key.clone());
        self.send(Msg::Start(Box::new(start)));
    }

    /// Snapshot `key` was removed; if it was a run, the run ends and its trace is written.
    pub fn snapshot_removed(&self, key: &str) {
        if self.lock_runs().remove(key) {
            self.send(Msg::End(key.to_owned()));
        }
    }

    /// Adds an observer of every run from now on (called on the recorder's thread).
    pub fn add_observer(&self, observer: Arc<dyn AccessObserver>) {
        self.send(Msg::Observer(observer));
    }

    /// Sets what tells prefetched chunks apart, so hits on them are recorded as `prefetch_hit`.
    pub fn set_prefetched(&self, prefetched: Arc<dyn PrefetchedChunks>) {
        self.send(Msg::Prefetched(prefetched));
    }

    /// Waits until the thread has handled everything sent before this call (tests, admin).
    pub fn sync(&self) {
        let (tx, rx) = sync_channel(1);
        self.send(Msg::Sync(tx));
        let _ = rx.recv();
    }

    /// The id of the active run of snapshot `key` (blocking: a round trip to the thread,
    /// after everything sent before).
    pub fn run_of(&self, key: &str) -> Option<RunId> {
        if !self.lock_runs().contains(key) {
            return None;
        }
        let (tx, rx) = sync_channel(1);
        self.send(Msg::RunOf(key.to_owned(), tx));
        rx.recv().ok().flatten()
    }

    /// The counters.
    pub fn stats(&self) -> RecorderStats {
        let c = &self.counters;
        RecorderStats {
            dropped_events: c.dropped(),
            unattributed_events: c.unattributed.load(Ordering::Relaxed),
            traces_written: c.written.load(Ordering::Relaxed),
            write_errors: c.write_errors.load(Ordering::Relaxed),
            truncated_accesses: c.truncated.load(Ordering::Relaxed),
            active_runs: self.lock_runs().len() as u64,
        }
    }

    /// Writes the traces of the runs still active and stops the thread (graceful shutdown).
    pub fn shutdown(&self) {
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            self.send(Msg::Stop);
            if thread.join().is_err() {
                tracing::error!("the augur-trace thread panicked; traces of active runs are lost");
            }
        }
    }

    fn send(&self, msg: Msg) {
        // Blocks only while the channel is full of read events, which the thread is draining.
        let _ = self.tx.send(msg);
    }

    fn lock_runs(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A registered layer, as the thread resolves its reads.
struct LayerEntry {
    digest: String,
    index: Weak<LayerIndex>,
}

/// The state the `augur-trace` thread owns.
pub(crate) struct Worker {
    dir: PathBuf,
    settings: TraceSettings,
    counters: Arc<Counters>,
    runs: Runs,
    pids: PidCache,
    layers: Vec<Option<LayerEntry>>,
    observers: Observers,
    prefetched: Option<Arc<dyn PrefetchedChunks>>,
    /// `/proc/<pid>/cgroup` → container ids (a stand-in in tests).
    pid_lookup: Box<dyn Fn(u32) -> Vec<String> + Send>,
}

impl Worker {
    fn run(mut self, rx: Receiver<Msg>) {
        while let Ok(msg) = rx.recv() {
            match msg {
                Msg::Read(tag, event) => self.read(tag, event),
                Msg::Layer(tag, digest, index) => self.add_layer(tag, digest, index),
                Msg::Start(start) => self.start(*start),
                Msg::End(key) => {
                    tracing::debug!(%key, "run ended");
                    if let Some(run) = self.runs.end(&key) {
                        self.pids.forget_run(&key);
                        self.finish(run);
                    }
                }
                Msg::Observer(o) => self.observers.push(o),
                Msg::Prefetched(p) => self.prefetched = Some(p),
                Msg::RunOf(key, answer) => {
                    let _ = answer.send(self.runs.get_mut(&key).map(|r| r.id));
                }
                Msg::Sync(done) => {
                    let _ = done.send(());
                }
                Msg::Stop => break,
            }
        }
        let active = self.runs.drain();
        if !active.is_empty() {
            tracing::info!(
                runs = active.len(),
                "writing the traces of runs still active"
            );
        }
        for run in active {
            self.finish(run);
        }
    }

    fn add_layer(&mut self, tag: u32, digest: String, index: Weak<LayerIndex>) {
        // Layers whose data is gone (unmounted) read nothing more: free their slots.
        for slot in &mut self.layers {
            if slot.as_ref().is_some_and(|l| l.index.strong_count() == 0) {
                *slot = None;
            }
        }
        let i = tag as usize;
        if self.layers.len() <= i {
            self.layers.resize_with(i + 1, || None);
        }
        self.layers[i] = Some(LayerEntry { digest, index });
    }

    fn start(&mut self, start: RunStart) {
        let ctx = start.context();
        tracing::debug!(key = %start.key, image = %ctx.image, layers = ctx.layers.len(), "run started");
        let id = self.runs.start(start);
        self.pids.forget_unmatched();
        for o in &self.observers {
            o.run_started(id, &ctx);
        }
    }

    fn read(&mut self, tag: u32, event: ReadEvent) {
        let Some(layer) = self.layers.get(tag as usize).and_then(Option::as_ref) else {
            return self.unattributed();
        };
        let Some(index) = layer.index.upgrade() else {
            return self.unattributed();
        };
        let digest = layer.digest.clone();
        let matched = self.run_of_pid(event.pid, &digest);
        let Attribution::Run(key) = self.runs.attribute(matched.as_deref(), &digest) else {
            return self.unattributed();
        };
        let Some(chunk) = index.chunks().get(event.chunk as usize) else {
            return self.unattributed();
        };
        let digest_id = ChunkId(chunk.digest);
        let source = match event.source {
            ReadSource::Miss => AccessSource::Miss,
            ReadSource::Hit if self.was_prefetched(&digest_id) => AccessSource::PrefetchHit,
            ReadSource::Hit => AccessSource::Hit,
        };
        let Some(run) = self.runs.get_mut(&key) else {
            return self.unattributed();
        };
        let Some(layer_at) = run.layer_index(&digest) else {
            return self.unattributed();
        };
        let path = index.path_of(event.node);
        let record = ChunkRecord {
            digest: digest_id,
            layer: layer_at,
            size: u32::try_from(chunk.size).unwrap_or(u32::MAX),
            file: path.to_string_lossy().trim_start_matches('/').to_owned(),
            file_offset: chunk.file_offset,
        };
        let id = run.id;
        match run.record(&record, event.at, event.offset, event.len, source) {
            Some(access) => self.observers.iter().for_each(|o| o.access(id, &access)),
            None => {
                self.counters.truncated.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The run whose key the reader's cgroup names (and which uses `layer`), cached per pid.
    fn run_of_pid(&mut self, pid: u32, layer: &str) -> Option<String> {
        if pid == 0 {
            return None;
        }
        if let Some(known) = self.pids.get(pid) {
            return known.map(str::to_owned);
        }
        let ids = (self.pid_lookup)(pid);
        let matched = self.runs.matching(&ids, layer);
        if matched.is_none() {
            tracing::debug!(
                pid,
                ?ids,
                "the reader's cgroup names no active run on this layer"
            );
        }
        // A pid that is gone names nothing: do not remember it (its number will be reused).
        if !ids.is_empty() {
            self.pids.insert(pid, matched.clone());
        }
        matched
    }

    fn was_prefetched(&self, chunk: &ChunkId) -> bool {
        self.prefetched
            .as_ref()
            .is_some_and(|p| p.was_prefetched(chunk))
    }

    fn unattributed(&self) {
        self.counters.unattributed.fetch_add(1, Ordering::Relaxed);
    }

    fn finish(&mut self, run: Run) {
        let id = run.id;
        let trace = run.finish().map(Arc::new);
        if let Some(trace) = &trace {
            self.write(id, trace);
        }
        for o in &self.observers {
            o.run_finished(id, trace.as_ref());
        }
    }

    fn write(&self, id: RunId, trace: &crate::predictor::Trace) {
        let name = format!("{:013}-{:06}", trace.header.started_unix_ms, id.0);
        match files::write_trace(&self.dir, &name, trace) {
            Ok(path) => {
                self.counters.written.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    file = %path.display(),
                    accesses = trace.accesses.len(),
                    image = %trace.header.image,
                    "trace written"
                );
            }
            Err(e) => {
                self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "could not write a run's trace");
                return;
            }
        }
        let (max_bytes, max_runs) = (self.settings.max_bytes, self.settings.max_runs);
        match files::enforce_retention(&self.dir, max_bytes, max_runs) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(
                removed = n,
                "oldest traces removed (trace.max_bytes/max_runs)"
            ),
            Err(e) => tracing::warn!(error = %e, "could not apply trace retention"),
        }
    }
}

/// Unix milliseconds now.
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Labels of a Prepare that a trace keeps: Augur's own (`containerd.io/snapshot/augur.*`).
pub fn kept_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(k, _)| k.starts_with("containerd.io/snapshot/augur."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
pub(crate) mod testing {
    //! A recorder thread with a stand-in `/proc`, for unit tests.
    use super::*;

    /// Starts a recorder whose pid → container ids lookup is `lookup`.
    pub fn start_with_lookup(
        dir: &Path,
        settings: &TraceSettings,
        lookup: impl Fn(u32) -> Vec<String> + Send + 'static,
    ) -> Arc<Recorder> {
        Recorder::spawn(dir, settings, Box::new(lookup)).expect("start recorder")
    }

    /// A tap on a channel nobody reads, of `capacity` events: for the drop test.
    pub fn stalled_tap(capacity: usize) -> (TraceTap, Receiver<impl Sized>) {
        let (tx, rx) = sync_channel::<Msg>(capacity);
        let tap = TraceTap {
            tx,
            tag: 0,
            counters: Arc::new(Counters::default()),
        };
        (tap, rx)
    }

    /// The tap's drop counter.
    pub fn dropped(tap: &TraceTap) -> u64 {
        tap.counters.dropped()
    }
}
