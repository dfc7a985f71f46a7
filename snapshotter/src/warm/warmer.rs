//! The `augur-warm` thread: it owns the deployment model and the pull log, learns from each
//! pull as it arrives, and, whenever the network has been idle for `warm.idle_ms`, warms the
//! images most likely to be pulled next: it resolves the manifest (host platform, as `rpull`)
//! and fetches and verifies each eStargz layer's footer and TOC into
//! [`crate::lazy::warmed::WarmedTocs`], one request at a time, checking before each request
//! that no demand fetch has started. Shutdown cancels a request in flight.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use augur_predictor::deploy::{DeployModel, ImagePrediction, PullEvent, PullPredictor, normalize};
use tokio::sync::watch;

use super::pulls::PullLog;
use super::{ChunkHook, WarmError, WarmStats, WarmedImage, WarmedLayer};
use crate::lazy::LazyLayers;
use crate::lazy::labels::TOC_DIGEST;
use crate::warm::settings::WarmSettings;

/// The model is saved after this many new pulls (and at shutdown).
const SAVE_EVERY: u64 = 32;

/// Everything the thread owns.
pub(super) struct Warmer {
    pub(super) model: DeployModel,
    pub(super) log: PullLog,
    pub(super) state_path: PathBuf,
    pub(super) lazy: Arc<LazyLayers>,
    pub(super) settings: WarmSettings,
    pub(super) handle: tokio::runtime::Handle,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) stats: Arc<WarmStats>,
    pub(super) hook: Arc<std::sync::Mutex<Option<ChunkHook>>>,
    /// Image → when it was last warmed (not warmed again within the horizon).
    pub(super) warmed_at: HashMap<String, Instant>,
}

impl Warmer {
    /// The thread's loop, until the channel closes (shutdown).
    pub(super) fn run(mut self, pulls: Receiver<PullEvent>) {
        let poll =
            (self.settings.idle / 2).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut unsaved = 0u64;
        loop {
            match pulls.recv_timeout(poll) {
                Ok(event) => {
                    self.learn(&event);
                    unsaved += 1;
                    if unsaved >= SAVE_EVERY {
                        self.save();
                        unsaved = 0;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if *self.stop.borrow() {
                break;
            }
            if self.idle() {
                self.round();
            }
        }
        self.save();
    }

    fn learn(&mut self, event: &PullEvent) {
        if let Err(e) = self.log.append(event) {
            tracing::warn!(error = %e, "cannot append to the pull log");
        }
        self.model.observe(event);
        // Pulled: its warm-up is used up, and it may be warmed again before its next pull.
        self.warmed_at.remove(&normalize(&event.image));
        tracing::debug!(image = %event.image, "pull recorded");
    }

    fn save(&self) {
        if let Some(dir) = self.state_path.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot create the model's directory");
            return;
        }
        if let Err(e) = self.model.save_to_file(&self.state_path) {
            tracing::warn!(error = %e, "cannot save the deployment model");
        }
    }

    /// No demand fetch in flight, and none for `idle`.
    fn idle(&self) -> bool {
        self.lazy
            .quiet_for()
            .is_some_and(|q| q >= self.settings.idle)
    }

    /// Warms the top predictions not warmed within the horizon.
    fn round(&mut self) {
        let horizon = self.settings.horizon;
        self.warmed_at.retain(|_, t| t.elapsed() < horizon);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let predictions = self.model.predict(now_ms, self.settings.max_images);
        tracing::debug!(?predictions, "warm round");
        for p in predictions {
            if p.probability < self.settings.min_probability
                || self.warmed_at.contains_key(&p.image)
            {
                continue;
            }
            if !self.idle() || *self.stop.borrow() {
                return;
            }
            self.warmed_at.insert(p.image.clone(), Instant::now());
            match self.warm_one(&p) {
                Ok(Some(image)) => self.warmed(&p, image),
                Ok(None) => {
                    // Cancelled or demand appeared: try again at the next idle moment.
                    self.warmed_at.remove(&p.image);
                    return;
                }
                Err(e) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(image = %p.image, error = %e, "could not warm a predicted image");
                }
            }
        }
    }

    fn warmed(&self, p: &ImagePrediction, image: WarmedImage) {
        let bytes: u64 = image.layers.iter().map(|l| l.fetched_bytes).sum();
        self.stats.images.fetch_add(1, Ordering::Relaxed);
        self.stats
            .layers
            .fetch_add(image.layers.len() as u64, Ordering::Relaxed);
        self.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
        tracing::info!(
            image = %p.image,
            probability = p.probability,
            expected_in_s = p.expected_in.as_secs(),
            reason = ?p.reason,
            layers = image.layers.len(),
            bytes,
            "image warmed"
        );
        let hook = self.hook.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(hook) = hook {
            hook(&image);
        }
    }

    /// Warms one image on the runtime, cancelled by shutdown: `None` if cancelled or demand
    /// appeared before the image was complete.
    fn warm_one(&self, p: &ImagePrediction) -> Result<Option<WarmedImage>, WarmError> {
        let mut stop = self.stop.clone();
        self.handle.block_on(async {
            tokio::select! {
                r = self.fetch_image(p) => r,
                _ = stop.wait_for(|s| *s) => Ok(None),
            }
        })
    }

    async fn fetch_image(&self, p: &ImagePrediction) -> Result<Option<WarmedImage>, WarmError> {
        let resolved = self.lazy.registry().resolve(&p.image, None).await?;
        let mut image = WarmedImage {
            image: p.image.clone(),
            manifest_digest: resolved.manifest_digest.clone(),
            probability: p.probability,
            expected_in: p.expected_in,
            layers: Vec::new(),
        };
        for layer in &resolved.layers {
            let Some(toc_digest) = layer.annotations.get(TOC_DIGEST) else {
                continue; // Not eStargz: pulled the normal way, nothing to warm.
            };
            let warmed = self.lazy.warmed();
            // A mounted layer's next Prepare finds its committed snapshot: nothing to fetch.
            if warmed.contains(&layer.digest) || self.lazy.in_use(&layer.digest) {
                continue;
            }
            if !self.idle() {
                return Ok(None);
            }
            let toc = self
                .lazy
                .fetch_toc(&p.image, &layer.digest, Some(toc_digest))
                .await?;
            warmed.insert(&layer.digest, toc.clone());
            image.layers.push(WarmedLayer {
                layer_digest: layer.digest.clone(),
                toc: toc.toc,
                toc_offset: toc.toc_offset,
                fetched_bytes: toc.fetched_bytes,
            });
        }
        Ok(Some(image))
    }
}
