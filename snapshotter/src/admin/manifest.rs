//! `POST /manifest/parse` (`{"image": "ref", "platform": "linux/arm64"}`): an image's layers in
//! the order Augur prefers to fetch them, and the prefetch plan the running models have for it.
//!
//! Resolution is the warmer's (`crate::warm`): [`crate::registry::Registry::resolve`] for the
//! platform (the host's by default), then [`LazyLayers::fetch_toc`] for each layer whose
//! descriptor carries an eStargz TOC digest, verified against it. Nothing is kept: the TOCs are
//! not added to the warmed set, the models learn nothing ([`crate::prefetch::Prefetcher::plan`]
//! is a dry run). Registry and TOC requests run on the runtime; TOC parsing and the models'
//! answer on the blocking pool.
//!
//! The preference rule ([`RULE`], also in `docs/operations.md`), ties kept in manifest order:
//! 1. layers holding chunks the models plan for this image, the larger planned probability mass
//!    first (what a container of it read before);
//! 2. other lazily mountable (eStargz) layers with a `.prefetch.landmark`, the smaller prefetch
//!    region first (what the image's producer marked as needed at start; small ones finish first);
//! 3. other lazily mountable layers, smaller first;
//! 4. layers Augur cannot mount lazily (containerd downloads them whole), smaller first.

use std::collections::HashMap;

use augur_predictor::{ChunkId, RunContext};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::{AdminError, AdminState, Body, blocking, lazy};
use crate::cache::ChunkKey;
use crate::estargz::{LayerIndex, Prefetch};
use crate::lazy::labels::TOC_DIGEST;
use crate::lazy::warmed::WarmedToc;
use crate::lazy::{LazyError, LazyLayers};
use crate::prefetch::Prefetcher;
use crate::registry::{Descriptor, Platform, RegistryError};

/// Chunks asked of the models for a plan.
pub const PLAN_MAX: usize = 64;

/// The preference rule, in the answer so a reader of the JSON knows what the order means.
pub const RULE: &str = "layers with chunks the models plan for this image first (more planned \
     probability first), then eStargz layers with a prefetch landmark (smaller prefetch region \
     first), then other eStargz layers (smaller first), then layers Augur cannot mount lazily \
     (smaller first); ties in manifest order";

/// `POST /manifest/parse` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParseRequest {
    /// The image reference, as it would be pulled.
    pub image: String,
    /// `os/architecture[/variant]`; default this host's.
    #[serde(default)]
    pub platform: Option<String>,
}

/// `POST /manifest/parse` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImagePlan {
    /// The reference asked for.
    pub image: String,
    /// The platform resolved for.
    pub platform: String,
    /// The image manifest's digest.
    pub manifest_digest: String,
    /// The rule the layers are ordered by.
    pub rule: String,
    /// The layers, preferred first.
    pub layers: Vec<PlannedLayer>,
    /// What the models would prefetch first.
    pub plan: PrefetchPlan,
}

/// One layer of [`ImagePlan`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedLayer {
    /// The blob's digest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its place in the manifest (0: the bottom layer).
    pub position: usize,
    /// Its descriptor names an eStargz TOC digest.
    pub estargz: bool,
    /// Augur mounts it lazily: its TOC was fetched and verified.
    pub lazy: bool,
    /// The TOC digest (from the descriptor's annotation).
    pub toc_digest: Option<String>,
    /// Bytes of the blob before its `.prefetch.landmark` (`None`: no landmark).
    pub prefetch_landmark_bytes: Option<u64>,
    /// Chunks of the plan in this layer.
    pub planned_chunks: usize,
    /// Why it is not lazy, when it is not.
    pub note: Option<String>,
}

/// The models' plan for the image.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PrefetchPlan {
    /// Best first.
    pub chunks: Vec<PlannedChunk>,
    /// Why the plan is empty, when it is.
    pub note: Option<String>,
}

/// One chunk of [`PrefetchPlan`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedChunk {
    /// The chunk's digest.
    pub chunk: String,
    /// The layer holding it, if one of the image's TOCs lists it.
    pub layer: Option<String>,
    /// The file holding it.
    pub path: Option<String>,
    /// Calibrated probability that a run of the image reads it.
    pub probability: f32,
    /// Expected time of the read from the run's start, ms.
    pub expected_in_ms: u64,
    /// Whether it is in the cache already.
    pub cached: bool,
}

/// `POST /manifest/parse`.
pub(super) async fn parse(
    State(s): State<AdminState>,
    Body(req): Body<ParseRequest>,
) -> Result<Json<ImagePlan>, AdminError> {
    let lazy = lazy(&s)?;
    if req.image.trim().is_empty() {
        return Err(AdminError::BadRequest(
            "image is empty: give a reference such as registry.example/app:1.0".into(),
        ));
    }
    let platform = match req.platform.as_deref() {
        Some(p) => Platform::parse(p).map_err(|e| AdminError::BadRequest(e.to_string()))?,
        None => Platform::host(),
    };
    let resolved = lazy
        .registry()
        .resolve(&req.image, Some(&platform))
        .await
        .map_err(registry_error)?;
    let mut tocs = Vec::with_capacity(resolved.layers.len());
    for layer in &resolved.layers {
        tocs.push(toc_of(&lazy, &req.image, layer).await?);
    }
    let prefetch = s.prefetch.clone();
    let (layers, manifest_digest) = (resolved.layers, resolved.manifest_digest);
    blocking(move || {
        let mut layers = describe(&layers, tocs);
        let plan = plan(prefetch.as_ref(), &req.image, &layers, &lazy);
        order(&mut layers, &plan);
        Json(ImagePlan {
            image: req.image,
            platform: platform.to_string(),
            manifest_digest,
            rule: RULE.into(),
            layers: layers.into_iter().map(|l| l.layer).collect(),
            plan,
        })
    })
    .await
}

/// A layer's TOC, if its descriptor names one: `Ok(None)` for a plain layer, `Err` inside for
/// one that is not usable lazily (the note); a registry failure fails the request.
async fn toc_of(
    lazy: &LazyLayers,
    image: &str,
    layer: &Descriptor,
) -> Result<Option<Result<WarmedToc, String>>, AdminError> {
    let Some(toc_digest) = layer.annotations.get(TOC_DIGEST) else {
        return Ok(None);
    };
    match lazy.fetch_toc(image, &layer.digest, Some(toc_digest)).await {
        Ok(toc) => Ok(Some(Ok(toc))),
        Err(LazyError::Registry(e)) => Err(registry_error(e)),
        Err(e) => Ok(Some(Err(e.to_string()))),
    }
}

/// A layer with what ordering needs: its index (lazy layers) and planned probability mass.
struct Described {
    layer: PlannedLayer,
    index: Option<LayerIndex>,
    planned_mass: f32,
}

fn describe(layers: &[Descriptor], tocs: Vec<Option<Result<WarmedToc, String>>>) -> Vec<Described> {
    layers
        .iter()
        .zip(tocs)
        .enumerate()
        .map(|(position, (d, toc))| {
            let index = match &toc {
                Some(Ok(t)) => {
                    LayerIndex::from_toc(&t.toc, t.toc_offset).map_err(|e| e.to_string())
                }
                Some(Err(note)) => Err(note.clone()),
                None => Err("no eStargz TOC digest in its descriptor".into()),
            };
            let landmark = match index.as_ref().map(LayerIndex::prefetch) {
                Ok(Prefetch::UpTo(end)) => Some(end),
                _ => None,
            };
            Described {
                layer: PlannedLayer {
                    digest: d.digest.clone(),
                    media_type: d.media_type.clone(),
                    size: d.size,
                    position,
                    estargz: toc.is_some(),
                    lazy: index.is_ok(),
                    toc_digest: d.annotations.get(TOC_DIGEST).cloned(),
                    prefetch_landmark_bytes: landmark,
                    planned_chunks: 0,
                    note: index.as_ref().err().cloned(),
                },
                index: index.ok(),
                planned_mass: 0.0,
            }
        })
        .collect()
}

/// The models' plan, each chunk placed in the layer and file whose TOC lists it (blocking).
fn plan(
    prefetch: Option<&Prefetcher>,
    image: &str,
    layers: &[Described],
    lazy: &LazyLayers,
) -> PrefetchPlan {
    let Some(p) = prefetch else {
        return note(
            "prefetching is off (prefetch.enabled = false, or traces are off): no models run",
        );
    };
    let ctx = RunContext {
        image: image.to_owned(),
        label: None,
        layers: layers.iter().map(|l| l.layer.digest.clone()).collect(),
        layout: Default::default(),
    };
    let Some(predictions) = p.plan(ctx, PLAN_MAX) else {
        return note(
            "the models did not answer (stopping, busy, or their state did not save: see the daemon's log); ask again",
        );
    };
    if predictions.is_empty() {
        return note(
            "the models know no run of this image yet: they plan once a container of it has run \
             on lazily mounted layers and its trace was recorded",
        );
    }
    let places = chunk_places(layers);
    let chunks = predictions
        .iter()
        .map(|pr| {
            let place = places.get(&pr.chunk);
            PlannedChunk {
                chunk: pr.chunk.to_string(),
                layer: place.map(|(l, _)| layers[*l].layer.digest.clone()),
                path: place.map(|(_, path)| path.clone()),
                probability: pr.probability,
                expected_in_ms: u64::try_from(pr.expected_in.as_millis()).unwrap_or(u64::MAX),
                cached: lazy.cache().contains(&ChunkKey(pr.chunk.0)),
            }
        })
        .collect();
    PrefetchPlan { chunks, note: None }
}

fn note(why: &str) -> PrefetchPlan {
    PrefetchPlan {
        chunks: Vec::new(),
        note: Some(why.to_owned()),
    }
}

/// Chunk digest → (layer position, file path), from the lazy layers' TOCs.
fn chunk_places(layers: &[Described]) -> HashMap<ChunkId, (usize, String)> {
    let mut places = HashMap::new();
    for (l, d) in layers.iter().enumerate() {
        let Some(idx) = &d.index else { continue };
        for (i, c) in idx.chunks().iter().enumerate() {
            places.entry(ChunkId(c.digest)).or_insert_with(|| {
                let path = idx
                    .file_of_chunk(i as u32)
                    .map(|n| idx.path_of(n).display().to_string())
                    .unwrap_or_default();
                (l, path)
            });
        }
    }
    places
}

/// Sorts `layers` by [`RULE`] (stable: ties stay in manifest order).
fn order(layers: &mut [Described], plan: &PrefetchPlan) {
    let by_digest: HashMap<String, usize> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| (l.layer.digest.clone(), i))
        .collect();
    for c in &plan.chunks {
        if let Some(&i) = c.layer.as_ref().and_then(|d| by_digest.get(d)) {
            layers[i].layer.planned_chunks += 1;
            layers[i].planned_mass += c.probability;
        }
    }
    let class = |l: &Described| match (&l.layer, l.planned_mass > 0.0) {
        (_, true) => 0,
        (p, _) if p.lazy && p.prefetch_landmark_bytes.is_some() => 1,
        (p, _) if p.lazy => 2,
        _ => 3,
    };
    let secondary = |l: &Described| l.layer.prefetch_landmark_bytes.unwrap_or(l.layer.size);
    layers.sort_by(|a, b| {
        class(a)
            .cmp(&class(b))
            .then(b.planned_mass.total_cmp(&a.planned_mass))
            .then(secondary(a).cmp(&secondary(b)))
    });
}

/// A registry failure as the answer: the caller's reference (400), a missing image (404), the
/// registry refusing or failing (502), or this node's registry configuration (500).
fn registry_error(e: RegistryError) -> AdminError {
    match e {
        RegistryError::InvalidReference { .. } => AdminError::BadRequest(e.to_string()),
        RegistryError::NotFound { .. } => AdminError::Empty(e.to_string()),
        RegistryError::Unauthorized { .. }
        | RegistryError::Unreachable { .. }
        | RegistryError::Protocol { .. } => AdminError::BadGateway(e.to_string()),
        RegistryError::Config { .. }
        | RegistryError::LocalFile { .. }
        | RegistryError::Write { .. } => AdminError::Internal(e.to_string()),
    }
}
