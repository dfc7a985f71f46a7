//! [`LazyLayers`]: resolving a remote layer (footer, TOC, verification), mounting it, keeping
//! its FUSE session and background fetch alive, and unmounting it.
//!
//! What a layer keeps under `layers/<digest hex>/` is in [`saved`] (its TOC and inherited
//! directory attributes) and `data` (its fetch counters).
//!
//! Chunk bytes live in the node-wide tiered [`ChunkCache`] (`[cache]`), shared by all layers.
//! Several snapshots may use one layer (the same blob under different parents): they share one
//! [`LayerData`], so its bytes are fetched once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use fuser::BackgroundSession;

use crate::cache::{Admission, CacheSettings, CacheStatus, ChunkCache};
use crate::estargz::{self, FOOTER_SIZE, LayerIndex, Toc};
use crate::lazy::activity::Activity;
use crate::lazy::background::{BackgroundFetch, BackgroundPolicy};
use crate::lazy::data::LayerData;
use crate::lazy::labels::RemoteSpec;
use crate::lazy::locator::ChunkLocator;
use crate::lazy::progress::{FetchNow, LayerProgress, progress_of};
use crate::lazy::saved::{self, InheritedDir};
use crate::lazy::source::{BlobSource, RegistrySource};
use crate::lazy::warmed::{WarmedToc, WarmedTocs};
use crate::lazy::{LazyError, mount};
use crate::metrics::hot::HOT;
use crate::predictor::ChunkId;
use crate::predictor::layout::FileChunks;
use crate::registry::{Registry, RegistryConfig};
use crate::store::RemoteLayer;
use crate::trace::Recorder;

/// Settings of the lazy-pulling subsystem (the `[remote]` config section).
#[derive(Debug, Clone)]
pub struct LazyConfig {
    /// Threads serving each layer's FUSE requests.
    pub fuse_threads: usize,
    /// A read waiting on the registry longer than this fails with EIO.
    pub read_deadline: Duration,
    /// Fetch each mounted layer whole in the background.
    pub background_fetch: bool,
    /// Largest background request, in compressed bytes.
    pub fetch_span: u64,
    /// Quiet time on the demand side before a background span starts.
    pub background_idle: Duration,
    /// Accept layers whose image carries no TOC digest (their TOC is then unverified).
    pub require_toc_digest: bool,
    /// The registry client's settings.
    pub registry: RegistryConfig,
    /// The chunk cache's settings.
    pub cache: CacheSettings,
    /// Budget of the TOCs warmed ahead of their pull (`warm.max_toc_cache_mib`; 0: none kept).
    pub warmed_toc_bytes: u64,
}

/// A layer ready to mount: what the record keeps, and its index.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// For the snapshot record.
    pub remote: RemoteLayer,
    /// The layer's tree and chunk table.
    pub index: LayerIndex,
    /// The verified TOC, saved by [`LazyLayers::install`].
    pub toc: Arc<Toc>,
    /// Bytes read from the registry to resolve it (footer and TOC), counted in its stats.
    pub resolve_bytes: u64,
}

/// Totals over the mounted lazy layers (each distinct layer once), for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerTotals {
    /// Snapshots with a lazily mounted layer.
    pub snapshots: u64,
    /// Distinct layers among them.
    pub layers: u64,
    /// Their compressed data bytes (up to each TOC): a lower bound of a full pull's download.
    pub data_bytes: u64,
    /// Bytes fetched for them, over each layer's life on this node.
    pub fetched_bytes: u64,
    /// Per layer, data bytes less fetched bytes (never below 0), summed.
    pub saved_bytes: u64,
}

struct Mounted {
    mountpoint: PathBuf,
    digest: String,
    image_ref: String,
    data: Arc<LayerData>,
    /// The layer's multi-chunk files, built when a run first asks.
    files: OnceLock<Arc<[FileChunks]>>,
    // Dropped in this order: the fetch stops, then the session ends.
    fetch: Option<BackgroundFetch>,
    _session: BackgroundSession,
}

/// A lazily mounted layer, as a run starting on it is told.
#[derive(Debug, Clone)]
pub struct MountedLayer {
    /// The layer's digest.
    pub digest: String,
    /// The image it was pulled for.
    pub image_ref: String,
    /// Its files stored in more than one chunk (the predictor's [`crate::predictor::Layout`]).
    pub files: Arc<[FileChunks]>,
}

/// A file's chunks as the predictor names them.
fn file_chunks(chunks: &[crate::estargz::Chunk]) -> FileChunks {
    chunks
        .iter()
        .map(|c| (ChunkId(c.digest), u32::try_from(c.size).unwrap_or(u32::MAX)))
        .collect()
}

/// The lazily mounted layers of one daemon.
pub struct LazyLayers {
    layers_dir: PathBuf,
    cfg: LazyConfig,
    registry: Registry,
    cache: Arc<ChunkCache>,
    handle: tokio::runtime::Handle,
    mounted: Mutex<HashMap<u64, Mounted>>,
    shared: Mutex<HashMap<String, Weak<LayerData>>>,
    /// Demand-side registry use of every layer (the background fetches yield to it).
    activity: Arc<Activity>,
    /// TOCs fetched ahead by the warmer, looked up first by [`LazyLayers::resolve`].
    warmed: Arc<WarmedTocs>,
    /// Where reads are reported for access traces.
    recorder: Option<Arc<Recorder>>,
    /// Where each chunk of the mounted layers is (the prefetcher's map).
    locator: Arc<ChunkLocator>,
}

impl std::fmt::Debug for LazyLayers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyLayers")
            .field("layers_dir", &self.layers_dir)
            .finish_non_exhaustive()
    }
}

impl LazyLayers {
    /// The subsystem for the daemon rooted at `root`; `handle` runs registry requests.
    pub fn new(
        root: &Path,
        cfg: LazyConfig,
        handle: tokio::runtime::Handle,
    ) -> Result<LazyLayers, LazyError> {
        let layers_dir = root.join("layers");
        let cfg_warmed = cfg.warmed_toc_bytes;
        std::fs::create_dir_all(&layers_dir).map_err(LazyError::io("create", &layers_dir))?;
        let registry = Registry::new(cfg.registry.clone())?;
        let cache = Arc::new(ChunkCache::open(&cfg.cache)?);
        Ok(LazyLayers {
            layers_dir,
            cfg,
            registry,
            cache,
            handle,
            mounted: Mutex::new(HashMap::new()),
            shared: Mutex::new(HashMap::new()),
            activity: Arc::new(Activity::new()),
            warmed: Arc::new(WarmedTocs::new(cfg_warmed)),
            recorder: None,
            locator: Arc::new(ChunkLocator::new()),
        })
    }

    /// Reports every layer mounted from now on to `recorder` (access traces).
    pub fn with_recorder(mut self, recorder: Arc<Recorder>) -> LazyLayers {
        self.recorder = Some(recorder);
        self
    }

    /// Snapshot `id`'s layer, if it is mounted lazily.
    pub fn mounted_layer(&self, id: u64) -> Option<MountedLayer> {
        let all = self.mounted.lock().unwrap_or_else(|p| p.into_inner());
        let m = all.get(&id)?;
        let files = m.files.get_or_init(|| {
            let index = m.data.index();
            index.multi_chunk_files().map(file_chunks).collect()
        });
        Some(MountedLayer {
            digest: m.digest.clone(),
            image_ref: m.image_ref.clone(),
            files: Arc::clone(files),
        })
    }

    /// Demand-side registry activity across all layers.
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// Chunk digest → mounted layer, kept in step with mounts and unmounts.
    pub fn locator(&self) -> &Arc<ChunkLocator> {
        &self.locator
    }

    /// The directory holding `digest`'s local data.
    pub fn layer_dir(&self, digest: &str) -> PathBuf {
        self.layers_dir
            .join(digest.strip_prefix("sha256:").unwrap_or(digest))
    }

    /// The chunk cache's budgets, use and counters.
    pub fn cache_status(&self) -> CacheStatus {
        self.cache.status()
    }

    /// Totals over the mounted layers, now.
    pub fn totals(&self) -> LayerTotals {
        let mounted = self.mounted.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = std::collections::HashSet::new();
        let mut t = LayerTotals {
            snapshots: mounted.len() as u64,
            ..LayerTotals::default()
        };
        for m in mounted.values() {
            if !seen.insert(m.digest.as_str()) {
                continue;
            }
            let data = m.data.index().toc_offset();
            let fetched = m
                .data
                .stats
                .fetched_bytes
                .load(std::sync::atomic::Ordering::Relaxed);
            t.layers += 1;
            t.data_bytes += data;
            t.fetched_bytes += fetched;
            t.saved_bytes += data.saturating_sub(fetched);
        }
        t
    }

    /// The chunk cache.
    pub fn cache(&self) -> &Arc<ChunkCache> {
        &self.cache
    }

    /// The directory all layers live under.
    pub fn layers_dir(&self) -> &Path {
        &self.layers_dir
    }

    /// Reads the layer's footer and TOC from the registry (or takes the TOC the warmer fetched
    /// ahead), verifies the TOC and builds the index. [`LazyError::NotLazy`] means: use the
    /// normal path.
    pub async fn resolve(&self, spec: &RemoteSpec) -> Result<Resolved, LazyError> {
        if spec.toc_digest.is_none() && self.cfg.require_toc_digest {
            return Err(LazyError::NotLazy(format!(
                "layer {} has no TOC digest annotation (not eStargz, or converted without it); \
                 set remote.require_toc_digest = false to mount such layers unverified",
                spec.layer_digest
            )));
        }
        // A pull in progress: the background fetches of layers mounted before wait.
        self.activity.touch();
        let (toc, resolve_bytes) = match self
            .warmed
            .take(&spec.layer_digest, spec.toc_digest.as_deref())
        {
            Some(w) => {
                tracing::debug!(layer = %spec.layer_digest, "TOC warmed ahead: no registry request");
                (w, 0)
            }
            None => {
                let w = self
                    .fetch_toc(
                        &spec.image_ref,
                        &spec.layer_digest,
                        spec.toc_digest.as_deref(),
                    )
                    .await?;
                let bytes = w.fetched_bytes;
                (w, bytes)
            }
        };
        let index = LayerIndex::from_toc(&toc.toc, toc.toc_offset)?;
        Ok(Resolved {
            remote: RemoteLayer {
                image_ref: spec.image_ref.clone(),
                layer_digest: spec.layer_digest.clone(),
                toc_digest: toc.toc_digest,
                toc_offset: toc.toc_offset,
            },
            index,
            toc: toc.toc,
            resolve_bytes,
        })
    }

    /// The registry client.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// How long no demand fetch, resolve or mount happened: `None` while one is in flight.
    pub fn quiet_for(&self) -> Option<Duration> {
        self.activity.quiet_for()
    }

    /// The TOCs warmed ahead of their pull.
    pub fn warmed(&self) -> &Arc<WarmedTocs> {
        &self.warmed
    }

    /// Fetches a layer's footer and TOC from `image_ref`'s repository and verifies the TOC
    /// against `toc_digest` (when given). Does not mark the network busy: the warmer calls it
    /// too, and only demand should hold back background work.
    pub async fn fetch_toc(
        &self,
        image_ref: &str,
        layer_digest: &str,
        toc_digest: Option<&str>,
    ) -> Result<WarmedToc, LazyError> {
        let (r, d) = (image_ref, layer_digest);
        // The blob's size and its end (footer, and the whole TOC if it is small) in one request.
        let (tail, size) = self.registry.read_tail(r, d, RESOLVE_TAIL).await?;
        HOT.registry_fetched(tail.len() as u64);
        if size < FOOTER_SIZE || (tail.len() as u64) < FOOTER_SIZE {
            return Err(LazyError::NotLazy(format!(
                "layer {d} is only {size} bytes"
            )));
        }
        let footer = match estargz::parse_footer(&tail) {
            Ok(f) => f,
            Err(e) => return Err(LazyError::NotLazy(format!("layer {d}: {e}"))),
        };
        let toc_end = size - footer.footer_size;
        if footer.toc_offset >= toc_end {
            return Err(LazyError::NotLazy(format!(
                "layer {d}: TOC offset beyond the blob"
            )));
        }
        let tail_start = size - tail.len() as u64;
        let in_tail =
            |from: u64| tail.slice((from - tail_start) as usize..(toc_end - tail_start) as usize);
        let (toc_gz, head_len) = if footer.toc_offset >= tail_start {
            (in_tail(footer.toc_offset), 0)
        } else {
            // Only the part of the TOC before the tail is still missing.
            let head = self
                .registry
                .read_range(r, d, footer.toc_offset, tail_start - footer.toc_offset)
                .await?;
            HOT.registry_fetched(head.len() as u64);
            let mut toc = Vec::with_capacity(head.len() + tail.len());
            toc.extend_from_slice(&head);
            toc.extend_from_slice(&in_tail(tail_start));
            (bytes::Bytes::from(toc), head.len() as u64)
        };
        let (toc, toc_digest) = estargz::decode_toc(&toc_gz, toc_digest)?;
        Ok(WarmedToc {
            toc: Arc::new(toc),
            toc_digest,
            toc_offset: footer.toc_offset,
            fetched_bytes: tail.len() as u64 + head_len,
        })
    }

    /// Saves a resolved layer's TOC, and the attributes its implicit directories inherited from
    /// the layers below, under `layers/` (blocking), so it can be mounted again after a restart
    /// exactly as now. Called under the store's write lock, so Cleanup never sees it half-made.
    pub fn install(
        &self,
        resolved: &Resolved,
        inherited: &[InheritedDir],
    ) -> Result<(), LazyError> {
        saved::save(
            &self.layer_dir(&resolved.remote.layer_digest),
            &resolved.toc,
            inherited,
        )
    }

    /// Mounts snapshot `id`'s layer at `mountpoint` (blocking). Without `index`, the saved TOC
    /// is loaded (a mount after restart).
    pub fn mount(
        &self,
        id: u64,
        mountpoint: &Path,
        remote: &RemoteLayer,
        index: Option<Arc<LayerIndex>>,
    ) -> Result<(), LazyError> {
        let data = self.layer_data(remote, index)?;
        let session = mount::mount(Arc::clone(&data), mountpoint, self.cfg.fuse_threads)
            .map_err(LazyError::io("mount FUSE at", mountpoint))?;
        // One background fetch per layer, even when several snapshots share it.
        let fetching = self
            .mounted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|m| {
                m.digest == remote.layer_digest
                    && m.fetch.as_ref().is_some_and(|f| !f.is_finished())
            });
        let fits = data.index().data_size() <= self.cache.admission_budget(Admission::Background);
        if self.cfg.background_fetch && !fits && !fetching {
            tracing::info!(
                layer = %remote.layer_digest,
                bytes = data.index().data_size(),
                budget = self.cache.admission_budget(Admission::Background),
                "layer larger than the cache tier that keeps whole layers; no background fetch, \
                 chunks are fetched when read (raise cache.hdd_mib to keep such layers)"
            );
        }
        // A container usually starts right after its layers are mounted.
        self.activity.touch();
        let fetch = if self.cfg.background_fetch && fits && !data.is_complete() && !fetching {
            let policy = self.background_policy();
            match BackgroundFetch::start(Arc::clone(&data), Arc::clone(&self.activity), policy) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::warn!(error = %e, "could not start background fetch");
                    None
                }
            }
        } else {
            None
        };
        let mounted = Mounted {
            mountpoint: mountpoint.to_path_buf(),
            digest: remote.layer_digest.clone(),
            image_ref: remote.image_ref.clone(),
            data,
            files: OnceLock::new(),
            fetch,
            _session: session,
        };
        let mut all = self.mounted.lock().unwrap_or_else(|p| p.into_inner());
        // Under the lock, so that an unmount of another snapshot of this layer cannot
        // withdraw it from the locator after this registers it.
        self.locator.add(&remote.layer_digest, &mounted.data);
        all.insert(id, mounted);
        Ok(())
    }

    /// Counts the bytes a fresh resolve read (footer, TOC) in the layer's fetch statistics.
    pub fn count_resolve_bytes(&self, resolved: &Resolved) {
        let shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(data) = shared
            .get(&resolved.remote.layer_digest)
            .and_then(Weak::upgrade)
        {
            data.stats
                .fetched_bytes
                .fetch_add(resolved.resolve_bytes, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Unmounts snapshot `id`'s layer (if mounted) and saves its fetch progress.
    pub fn unmount(&self, id: u64) {
        let m = {
            let mut all = self.mounted.lock().unwrap_or_else(|p| p.into_inner());
            let m = all.remove(&id);
            if let Some(m) = &m
                && !all.values().any(|other| other.digest == m.digest)
            {
                self.locator.remove(&m.digest);
            }
            m
        };
        if let Some(m) = m {
            if let Err(e) = mount::unmount(&m.mountpoint) {
                tracing::warn!(path = %m.mountpoint.display(), error = %e, "could not unmount lazy layer");
            }
            if let Err(e) = m.data.persist() {
                tracing::warn!(layer = %m.digest, error = %e, "could not save fetch progress");
            }
        }
    }

    /// Unmounts every layer (daemon shutdown).
    pub fn unmount_all(&self) {
        let ids: Vec<u64> = self
            .mounted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        for id in ids {
            self.unmount(id);
        }
    }

    /// The whole-fetch progress of mounted layer `digest` (blocking: cache lookups).
    pub fn layer_progress(&self, digest: &str) -> Option<LayerProgress> {
        let (data, image_ref) = self.mounted_data(digest)?;
        let mut p = progress_of(&data, digest, &image_ref);
        let all = self.mounted.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = all
            .values()
            .filter(|m| m.digest == digest)
            .find_map(|m| m.fetch.as_ref().filter(|f| !f.is_finished()))
        {
            p.fetching = true;
            p.hurried = f.is_hurried();
        }
        Some(p)
    }

    /// Fetches mounted layer `digest` whole now, in the background: its running background
    /// fetch stops waiting for quiet, or one is started (also with `remote.background_fetch`
    /// off). Demand reads still go first. Blocking (cache lookups).
    pub fn fetch_now(&self, digest: &str) -> Result<FetchNow, LazyError> {
        let (data, image_ref) = self
            .mounted_data(digest)
            .ok_or_else(|| LazyError::NotMounted(digest.to_owned()))?;
        let mut p = progress_of(&data, digest, &image_ref);
        if p.complete {
            return Ok(FetchNow::Complete(p));
        }
        let budget = self.cache.admission_budget(Admission::Background);
        if data.index().data_size() > budget {
            return Err(LazyError::TooLarge {
                digest: digest.to_owned(),
                size: data.index().data_size(),
                budget,
            });
        }
        let mut all = self.mounted.lock().unwrap_or_else(|p| p.into_inner());
        let mut entries = all.values_mut().filter(|m| m.digest == digest);
        let first = entries
            .next()
            .ok_or_else(|| LazyError::NotMounted(digest.to_owned()))?;
        if let Some(f) = std::iter::once(&*first)
            .chain(entries.map(|m| &*m))
            .find_map(|m| m.fetch.as_ref().filter(|f| !f.is_finished()))
        {
            f.hurry();
        } else {
            let policy = self.background_policy();
            let fetch =
                BackgroundFetch::start(Arc::clone(&data), Arc::clone(&self.activity), policy)
                    .map_err(LazyError::io(
                        "start the background fetch of",
                        &self.layer_dir(digest),
                    ))?;
            fetch.hurry();
            first.fetch = Some(fetch);
        }
        tracing::info!(layer = %digest, "whole-layer fetch asked for over the admin API");
        (p.fetching, p.hurried) = (true, true);
        Ok(FetchNow::Queued(p))
    }

    fn background_policy(&self) -> BackgroundPolicy {
        BackgroundPolicy {
            max_span: self.cfg.fetch_span,
            idle: self.cfg.background_idle,
        }
    }

    /// The data of mounted layer `digest`, and the image of its first mount.
    fn mounted_data(&self, digest: &str) -> Option<(Arc<LayerData>, String)> {
        self.mounted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .find(|m| m.digest == digest)
            .map(|m| (Arc::clone(&m.data), m.image_ref.clone()))
    }

    /// Whether any mounted snapshot uses layer `digest`.
    pub fn in_use(&self, digest: &str) -> bool {
        self.mounted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|m| m.digest == digest)
    }

    /// The data of a layer warmed ahead of its pull (its TOC fetched, not mounted), for the
    /// prefetcher to fetch its likely chunks into the cache: the mounted layer's if it is open,
    /// else a new one over the warmed TOC (blocking: builds the index). The new one is not
    /// shared with a later mount, which builds its own index with the inherited directory
    /// attributes; both read the same node-wide cache.
    pub fn warm_layer_data(
        &self,
        image_ref: &str,
        layer_digest: &str,
        toc: &Toc,
        toc_offset: u64,
    ) -> Result<Arc<LayerData>, LazyError> {
        let open = self
            .shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(layer_digest)
            .and_then(Weak::upgrade);
        if let Some(data) = open {
            return Ok(data);
        }
        let index = Arc::new(LayerIndex::from_toc(toc, toc_offset)?);
        let source: Arc<dyn BlobSource> = Arc::new(RegistrySource::new(
            self.registry.clone(),
            self.handle.clone(),
            image_ref,
            layer_digest,
        ));
        let dir = self.layer_dir(layer_digest);
        let data = LayerData::open(
            &dir,
            index,
            source,
            Arc::clone(&self.cache),
            self.cfg.read_deadline,
            Arc::clone(&self.activity),
        )
        .map_err(LazyError::io("open layer data in", &dir))?;
        Ok(Arc::new(data))
    }

    /// The shared data of a layer, opened if no mounted snapshot has it open.
    fn layer_data(
        &self,
        remote: &RemoteLayer,
        index: Option<Arc<LayerIndex>>,
    ) -> Result<Arc<LayerData>, LazyError> {
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(data) = shared.get(&remote.layer_digest).and_then(Weak::upgrade) {
            return Ok(data);
        }
        let dir = self.layer_dir(&remote.layer_digest);
        let index = match index {
            Some(i) => i,
            None => Arc::new(saved::load_index(&dir, remote)?),
        };
        let source: Arc<dyn BlobSource> = Arc::new(RegistrySource::new(
            self.registry.clone(),
            self.handle.clone(),
            &remote.image_ref,
            &remote.layer_digest,
        ));
        let mut data = LayerData::open(
            &dir,
            Arc::clone(&index),
            source,
            Arc::clone(&self.cache),
            self.cfg.read_deadline,
            Arc::clone(&self.activity),
        )
        .map_err(LazyError::io("open layer data in", &dir))?;
        if let Some(recorder) = &self.recorder {
            data.set_trace(recorder.tap(&remote.layer_digest, &index));
        }
        let data = Arc::new(data);
        shared.retain(|_, w| w.strong_count() > 0);
        shared.insert(remote.layer_digest.clone(), Arc::downgrade(&data));
        Ok(data)
    }
}

/// Bytes read from the end of a layer at resolve: the footer, and the whole TOC when it is this
/// small. A larger TOC needs a second request, for the part before these
/// bytes only; a smaller one costs at most this much of the layer's data read for nothing.
const RESOLVE_TAIL: u64 = 64 << 10;
