//! Which Prepare starts a traced run: an active snapshot whose parent chain holds at least one
//! lazily mounted layer, and that is not a layer being unpacked (no `containerd.io/snapshot.ref`
//! label). What the run's trace header says about it comes from here: its image
//! (the Prepare's own image labels, else the reference the lazy layers were pulled from), its
//! lazy layers lowest first, the labels a trace keeps, and the layers' multi-chunk files (the
//! predictor's layout).

use std::sync::Arc;
use std::time::Instant;

use crate::lazy::{LazyLayers, MountedLayer};
use crate::predictor::Layout;
use crate::store::Labels;
use crate::trace::recorder::{kept_labels, unix_ms_now};
use crate::trace::runs::RunStart;

/// Labels naming the image on a Prepare (CRI's and stargz's), in the order they are preferred.
const IMAGE_LABELS: [&str; 2] = [
    "containerd.io/snapshot/cri.image-ref",
    "containerd.io/snapshot/remote/stargz.reference",
];

/// The run an active snapshot `key` on `parent_ids` (nearest first) starts, if any of those
/// layers is mounted lazily. `started` is when the Prepare began.
pub fn run_start(
    lazy: &LazyLayers,
    key: &str,
    parent_ids: &[u64],
    labels: &Labels,
    started: Instant,
) -> Option<RunStart> {
    // containerd unpacking a layer the ordinary way prepares an active snapshot too, named by
    // this label; that is a pull, not a container.
    if labels.contains_key(crate::lazy::labels::TARGET_REF) {
        return None;
    }
    // Nearest first in the chain; a trace lists layers lowest first.
    let lazy_layers: Vec<MountedLayer> = parent_ids
        .iter()
        .rev()
        .filter_map(|&id| lazy.mounted_layer(id))
        .collect();
    let top_image = &lazy_layers.last()?.image_ref;
    let image = IMAGE_LABELS
        .iter()
        .find_map(|l| labels.get(*l))
        .unwrap_or(top_image)
        .clone();
    let files = lazy_layers.iter().flat_map(|l| l.files.iter().cloned());
    let layout = Arc::new(Layout::new(files));
    Some(RunStart {
        key: key.to_owned(),
        image,
        layers: lazy_layers.into_iter().map(|l| l.digest).collect(),
        layout,
        labels: kept_labels(labels),
        started,
        started_unix_ms: unix_ms_now(),
    })
}
