//! Warming the images this node will pull next (issue 5, point 6): every image pull the
//! snapshotter sees is recorded and teaches a deployment-level model
//! ([`augur_predictor::deploy::DeployModel`]); while the network is idle, the images it
//! predicts are *warmed*: manifest resolved, each eStargz layer's footer and TOC fetched and
//! verified into [`crate::lazy::warmed::WarmedTocs`], so their Prepare later makes no registry
//! request and the container starts sooner.
//!
//! | module | role |
//! |---|---|
//! | this file | [`Warm`]: the subsystem the daemon starts and stops, [`WarmedImage`] and the chunk hook |
//! | [`pulls`] | folding per-layer Prepares into pulls; the rotated pull log `<root>/pulls.jsonl` |
//! | `warmer` | the `augur-warm` thread: learning, idle detection, warming, cancellation |
//! | [`settings`] | the `[warm]` config table |
//!
//! Files: `<root>/pulls.jsonl` (and `.1`), `<root>/predictor/deploy.state` (the model, loaded at
//! start, saved every 32 pulls and at shutdown).
//!
//! Threads: [`Warm::record`] runs on the gRPC worker in Prepare (a mutex and a channel send,
//! never blocking); everything else runs on `augur-warm`, which calls the registry through
//! the tokio handle, as FUSE threads do. Design: decision 0016 (deployment-level
//! prediction).

pub mod pulls;
pub mod settings;
mod warmer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use augur_predictor::deploy::{DeployConfig, DeployModel, PullEvent};
use tokio::sync::watch;

use crate::estargz::Toc;
use crate::lazy::labels::RemoteSpec;
use crate::lazy::{LazyError, LazyLayers};
use crate::registry::RegistryError;
use pulls::{PullLog, PullTracker};
use settings::WarmSettings;

/// Pulls queued for the warm thread at most (more are dropped and counted).
const QUEUE: usize = 1024;

/// Why an image could not be warmed (logged; warming is best effort).
#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    /// Resolving the manifest failed.
    #[error("resolve: {0}")]
    Registry(#[from] RegistryError),
    /// Fetching or verifying a TOC failed.
    #[error("{0}")]
    Lazy(#[from] LazyError),
}

/// A layer warmed ahead of its pull.
#[derive(Debug, Clone)]
pub struct WarmedLayer {
    /// The layer blob's digest.
    pub layer_digest: String,
    /// Its verified TOC (every file's chunks: offsets, sizes, `chunkDigest`s).
    pub toc: Arc<Toc>,
    /// Where the TOC starts in the blob.
    pub toc_offset: u64,
    /// Bytes read to fetch footer and TOC.
    pub fetched_bytes: u64,
}

/// An image warmed ahead of its pull: what the chunk hook receives.
#[derive(Debug, Clone)]
pub struct WarmedImage {
    /// The normalised reference it was resolved from.
    pub image: String,
    /// The manifest digest it resolved to (host platform).
    pub manifest_digest: String,
    /// How likely the model thinks the pull is, within the horizon.
    pub probability: f32,
    /// When the model expects it.
    pub expected_in: Duration,
    /// The eStargz layers whose TOCs were fetched now (layers already on the node or already
    /// warmed are not repeated).
    pub layers: Vec<WarmedLayer>,
}

/// Called on `augur-warm` after each warmed image, for the prefetcher to queue the image's
/// most likely chunks (at low priority, below demand). It must return quickly.
pub type ChunkHook = Arc<dyn Fn(&WarmedImage) + Send + Sync>;

/// Counters of the warm subsystem.
#[derive(Debug, Default)]
pub struct WarmStats {
    /// Pulls recorded.
    pub pulls: AtomicU64,
    /// Pulls dropped because the warm thread lagged.
    pub dropped: AtomicU64,
    /// Images warmed.
    pub images: AtomicU64,
    /// Layers whose TOC was warmed.
    pub layers: AtomicU64,
    /// Bytes fetched to warm them.
    pub bytes: AtomicU64,
    /// Warm-ups that failed.
    pub errors: AtomicU64,
}

/// The warm subsystem of one daemon (see the module docs).
pub struct Warm {
    tracker: Mutex<PullTracker>,
    tx: Mutex<Option<SyncSender<PullEvent>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
    stats: Arc<WarmStats>,
    hook: Arc<Mutex<Option<ChunkHook>>>,
}

impl std::fmt::Debug for Warm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warm")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Warm {
    /// Loads the model (a missing or unusable state file starts a fresh one) and starts the
    /// `augur-warm` thread (blocking: reads the state file).
    pub fn start(
        root: &Path,
        settings: WarmSettings,
        lazy: Arc<LazyLayers>,
        handle: tokio::runtime::Handle,
    ) -> std::io::Result<Warm> {
        let state_path = root.join("predictor").join("deploy.state");
        let model = load_model(&state_path, &settings);
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let (stop, stop_rx) = watch::channel(false);
        let stats = Arc::new(WarmStats::default());
        let hook = Arc::new(Mutex::new(None));
        let warmer = warmer::Warmer {
            model,
            log: PullLog::new(&root.join("pulls.jsonl")),
            state_path,
            lazy,
            settings,
            handle,
            stop: stop_rx,
            stats: Arc::clone(&stats),
            hook: Arc::clone(&hook),
            warmed_at: HashMap::new(),
        };
        let thread = std::thread::Builder::new()
            .name("augur-warm".into())
            .spawn(move || warmer.run(rx))?;
        Ok(Warm {
            tracker: Mutex::new(PullTracker::default()),
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            stop,
            stats,
            hook,
        })
    }

    /// Records the Prepare of a remote layer; the first of a pull becomes a pull event.
    /// Never blocks (a full queue drops the event and counts it).
    pub fn record(&self, spec: &RemoteSpec) {
        let new = self
            .tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_new_pull(spec, Instant::now());
        if !new {
            return;
        }
        let event = PullEvent {
            t_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            image: spec.image_ref.clone(),
        };
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        match tx.as_ref().map(|tx| tx.try_send(event)) {
            Some(Ok(())) => {
                self.stats.pulls.fetch_add(1, Ordering::Relaxed);
            }
            Some(Err(TrySendError::Full(_))) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Some(Err(TrySendError::Disconnected(_))) | None => {}
        }
    }

    /// Gives the prefetcher its hook (see [`ChunkHook`]).
    pub fn set_chunk_hook(&self, hook: ChunkHook) {
        *self.hook.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// The counters.
    pub fn stats(&self) -> &WarmStats {
        &self.stats
    }

    /// Cancels warming, stops the thread and saves the model (blocking).
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread
            && t.join().is_err()
        {
            tracing::error!("the warm thread panicked");
        }
    }
}

impl Drop for Warm {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The saved model, or a fresh one if there is none or it cannot be used (logged).
fn load_model(path: &Path, settings: &WarmSettings) -> DeployModel {
    let cfg = DeployConfig {
        horizon: settings.horizon,
        // [`PullTracker`] already folds the Prepares of one pull; two pulls are two.
        min_gap: Duration::ZERO,
        ..DeployConfig::default()
    };
    let mut model = DeployModel::new(cfg.clone());
    if !path.exists() {
        return model;
    }
    match model.load_from_file(path) {
        Ok(()) => {
            tracing::info!(images = model.images(), path = %path.display(), "deployment model loaded");
            model
        }
        Err(e) => {
            tracing::warn!(error = %e, "starting a fresh deployment model");
            DeployModel::new(cfg)
        }
    }
}
