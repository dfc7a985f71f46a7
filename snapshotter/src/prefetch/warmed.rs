//! Images warmed ahead of their pull (`crate::warm`), as the prefetcher sees them: the warmer
//! hands over each warmed image's layers ([`WarmUp`], through [`super::Prefetcher::warm_image`]);
//! the predictor thread asks the models which chunks a run of that image reads first and queues
//! them as **background** entries (after every running container's, see [`super::queue`]) under
//! a run id of their own; the workers find their layers here, since a layer not pulled yet is in
//! no mount's [`crate::lazy::locator::ChunkLocator`].
//!
//! At most [`WARM_KEPT`] images are kept: a newer one evicts the oldest, whose queued entries
//! are cancelled and whose unread prefetched chunks count as wasted. Entries also expire on
//! their own once their image's expected pull time is [`super::scheduler::LATE_GRACE`] past.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use augur_predictor::{ChunkId, RunId};

use crate::lazy::LazyLayers;
use crate::lazy::data::LayerData;
use crate::warm::{ChunkHook, WarmedImage};

/// Warmed images whose layers are kept at most.
pub const WARM_KEPT: usize = 4;

/// Run ids of warmed images start here (trace runs count up from 1; the models reserve
/// `u64::MAX` and [`WARM_MODEL_RUN`]).
const WARM_RUN_BASE: u64 = 1 << 63;

/// The run the models are asked about a warmed image under. It is started again (replaced) for
/// each warmed image and never finished: finishing would teach the ensemble's calibration that
/// its predictions were misses, while the pull has not even happened.
pub const WARM_MODEL_RUN: RunId = RunId(u64::MAX - 1);

/// A warmed image, as the warmer hands it over.
#[derive(Debug, Clone)]
pub struct WarmUp {
    /// The image reference.
    pub image: String,
    /// How likely its pull is (the deployment model's probability).
    pub probability: f32,
    /// When the pull is expected.
    pub expected_in: Duration,
    /// Its lazily pullable layers: digest, and the layer's data opened from its warmed TOC.
    pub layers: Vec<(String, Arc<LayerData>)>,
}

#[derive(Debug)]
struct WarmSet {
    run: RunId,
    /// Chunk → (layer, chunk index in it).
    chunks: HashMap<ChunkId, (usize, u32)>,
    layers: Vec<Arc<LayerData>>,
}

/// The warmed images' layers the workers fetch from.
#[derive(Debug, Default)]
pub struct WarmSets {
    sets: Mutex<VecDeque<WarmSet>>,
    next: AtomicU64,
}

impl WarmSets {
    /// Keeps `warm`'s layers under a new run id; returns it, and the run evicted to make room
    /// (whose entries the caller cancels).
    pub fn insert(&self, warm: &WarmUp) -> (RunId, Option<RunId>) {
        let run = RunId(WARM_RUN_BASE + self.next.fetch_add(1, Ordering::Relaxed));
        let mut chunks = HashMap::new();
        for (l, (_, data)) in warm.layers.iter().enumerate() {
            for (i, c) in data.index().chunks().iter().enumerate() {
                chunks.entry(ChunkId(c.digest)).or_insert((l, i as u32));
            }
        }
        let set = WarmSet {
            run,
            chunks,
            layers: warm.layers.iter().map(|(_, d)| Arc::clone(d)).collect(),
        };
        let mut sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        let evicted = (sets.len() >= WARM_KEPT)
            .then(|| sets.pop_front())
            .flatten()
            .map(|s| s.run);
        sets.push_back(set);
        (run, evicted)
    }

    /// Whether the layers of warmed `run` hold `chunk`.
    pub fn holds(&self, run: RunId, chunk: &ChunkId) -> bool {
        self.locate(run, chunk).is_some()
    }

    /// The layer of warmed `run` holding `chunk`, and the chunk's index in it.
    pub fn locate(&self, run: RunId, chunk: &ChunkId) -> Option<(Arc<LayerData>, u32)> {
        if run.0 < WARM_RUN_BASE || run == WARM_MODEL_RUN {
            return None;
        }
        let sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        let set = sets.iter().find(|s| s.run == run)?;
        let &(layer, index) = set.chunks.get(chunk)?;
        Some((Arc::clone(&set.layers[layer]), index))
    }

    /// Warmed images kept now.
    pub fn len(&self) -> usize {
        self.sets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The warmer's chunk hook (`Warm::set_chunk_hook`): opens each warmed layer's data over its
/// TOC and hands the image to `prefetcher`. Runs on `augur-warm` (building an index is CPU work
/// of a few milliseconds; nothing here waits on the network).
pub fn hook(lazy: Arc<LazyLayers>, prefetcher: super::Prefetcher) -> ChunkHook {
    Arc::new(move |image: &WarmedImage| {
        let layers = image
            .layers
            .iter()
            .filter_map(|l| {
                lazy.warm_layer_data(&image.image, &l.layer_digest, &l.toc, l.toc_offset)
                    .map_err(|e| {
                        tracing::info!(
                            layer = %l.layer_digest,
                            error = %e,
                            "cannot prefetch the chunks of a warmed layer"
                        );
                    })
                    .ok()
                    .map(|data| (l.layer_digest.clone(), data))
            })
            .collect();
        prefetcher.warm_image(WarmUp {
            image: image.image.clone(),
            probability: image.probability,
            expected_in: image.expected_in,
            layers,
        });
    })
}
