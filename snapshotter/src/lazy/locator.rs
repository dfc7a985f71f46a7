//! [`ChunkLocator`]: where a chunk can be fetched from. Predictions name chunks by content
//! digest; a fetch needs a mounted layer's [`LayerData`] and the chunk's index in it.
//! [`super::LazyLayers`] registers each layer's data when it opens it and withdraws it when its
//! last mount goes, so the map follows what is mounted; the prefetcher (`crate::prefetch`)
//! only reads it.
//!
//! Layers are held weakly: the locator never keeps a layer's data (and its cache references)
//! alive after the layer is unmounted. Two layers (or two files of one) may hold the same
//! chunk; any live one serves.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};

use augur_predictor::ChunkId;

use crate::lazy::data::LayerData;

/// One place a chunk can be fetched from.
#[derive(Debug, Clone)]
struct Place {
    layer: usize,
    chunk: u32,
}

#[derive(Debug, Default)]
struct Maps {
    /// Registered layers by digest: (slot id, data).
    layers: HashMap<String, (usize, Weak<LayerData>)>,
    /// Layer slots (digest per slot id, `None` once withdrawn).
    slots: Vec<Option<(String, Weak<LayerData>)>>,
    chunks: HashMap<ChunkId, Vec<Place>>,
}

/// Chunk digest → mounted layer and chunk index. Share it with an `Arc`.
#[derive(Debug, Default)]
pub struct ChunkLocator {
    maps: RwLock<Maps>,
}

impl ChunkLocator {
    /// An empty locator.
    pub fn new() -> ChunkLocator {
        ChunkLocator::default()
    }

    /// Registers layer `digest`'s chunks (again: replaces an earlier registration).
    pub fn add(&self, digest: &str, data: &Arc<LayerData>) {
        self.remove(digest);
        let mut maps = self.maps.write().unwrap_or_else(|p| p.into_inner());
        let slot = maps.slots.len();
        maps.slots
            .push(Some((digest.to_owned(), Arc::downgrade(data))));
        maps.layers
            .insert(digest.to_owned(), (slot, Arc::downgrade(data)));
        for (i, c) in data.index().chunks().iter().enumerate() {
            maps.chunks
                .entry(ChunkId(c.digest))
                .or_default()
                .push(Place {
                    layer: slot,
                    chunk: i as u32,
                });
        }
    }

    /// Withdraws layer `digest` (no longer mounted).
    pub fn remove(&self, digest: &str) {
        let mut maps = self.maps.write().unwrap_or_else(|p| p.into_inner());
        let Some((slot, data)) = maps.layers.remove(digest) else {
            return;
        };
        maps.slots[slot] = None;
        if let Some(data) = data.upgrade() {
            for c in data.index().chunks() {
                if let Some(places) = maps.chunks.get_mut(&ChunkId(c.digest)) {
                    places.retain(|p| p.layer != slot);
                    if places.is_empty() {
                        maps.chunks.remove(&ChunkId(c.digest));
                    }
                }
            }
        } else {
            maps.chunks.retain(|_, places| {
                places.retain(|p| p.layer != slot);
                !places.is_empty()
            });
        }
        // Slots are reused only when all are free (layers come and go rarely).
        if maps.slots.iter().all(Option::is_none) {
            maps.slots.clear();
        }
    }

    /// A live layer holding `chunk`, and the chunk's index in it.
    pub fn locate(&self, chunk: &ChunkId) -> Option<(Arc<LayerData>, u32)> {
        let maps = self.maps.read().unwrap_or_else(|p| p.into_inner());
        maps.chunks.get(chunk)?.iter().find_map(|p| {
            let (_, data) = maps.slots.get(p.layer)?.as_ref()?;
            Some((data.upgrade()?, p.chunk))
        })
    }

    /// Layers registered.
    pub fn layers(&self) -> usize {
        self.maps
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .layers
            .len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::estargz::tests::fixtures::{Layer, TarBuilder, noise, small_chunks};
    use crate::lazy::activity::Activity;
    use crate::lazy::tests::{TestSource, cache_in};

    fn layer(files: &[(&str, u64)]) -> Layer {
        let mut tar = TarBuilder::new();
        for (name, seed) in files {
            tar = tar.file(name, 0o644, &noise(20 << 10, *seed));
        }
        Layer::write(&tar.finish(), &small_chunks())
    }

    fn open(layer: &Layer, dir: &std::path::Path, name: &str) -> Arc<LayerData> {
        let data = LayerData::open(
            &dir.join(name),
            Arc::new(layer.index.clone()),
            TestSource::new(layer.blob.clone(), Duration::ZERO),
            cache_in(dir, 1 << 20),
            Duration::from_secs(5),
            Arc::new(Activity::new()),
        )
        .unwrap();
        Arc::new(data)
    }

    /// The digest of file `name`'s only chunk.
    fn digest(layer: &Layer, name: &str) -> ChunkId {
        let node = layer.index.find(std::path::Path::new(name)).unwrap();
        let crate::estargz::NodeKind::File { chunks, .. } = &layer.index.node(node).kind else {
            panic!("{name} is not a file");
        };
        ChunkId(layer.index.chunks()[chunks.start as usize].digest)
    }

    #[test]
    fn chunks_are_found_while_their_layer_is_registered_and_alive() {
        let dir = tempfile::tempdir().unwrap();
        // `shared` is in both layers.
        let a = layer(&[("shared", 1), ("only-a", 3)]);
        let b = layer(&[("shared", 1), ("only-b", 5)]);
        let (da, db) = (open(&a, dir.path(), "a"), open(&b, dir.path(), "b"));
        let loc = ChunkLocator::new();
        loc.add("sha256:a", &da);
        loc.add("sha256:b", &db);
        assert_eq!(loc.layers(), 2);
        let shared = digest(&a, "shared");
        assert_eq!(shared, digest(&b, "shared"));
        let only_a = digest(&a, "only-a");
        let (found, i) = loc.locate(&only_a).unwrap();
        assert!(Arc::ptr_eq(&found, &da));
        assert_eq!(ChunkId(da.index().chunks()[i as usize].digest), only_a);
        // Layer a unmounted: its own chunk is gone, the shared one is served by b.
        loc.remove("sha256:a");
        assert!(loc.locate(&only_a).is_none());
        assert!(Arc::ptr_eq(&loc.locate(&shared).unwrap().0, &db));
        // Registered but dropped (held weakly): not found, and not kept alive.
        let weak = Arc::downgrade(&db);
        drop(db);
        assert!(weak.upgrade().is_none());
        assert!(loc.locate(&shared).is_none());
        loc.remove("sha256:b");
        assert_eq!(loc.layers(), 0);
    }
}
