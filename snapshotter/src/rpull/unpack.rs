//! One layer of a pull: the remote-snapshot handshake, and the ordinary unpack when the
//! snapshotter cannot mount the layer remotely (containerd's `unpacker.unpack`, `doUnpackFn`).

use std::collections::BTreeMap;

use augur_proto::Mount;

use super::labels::{self, LayerInfo};
use super::{LayerOutcome, Pull, RpullError};
use crate::containerd::Written;

/// containerd tries this many extraction keys when Prepare says "exists" but the chain ID does
/// not (a rare race with another pull).
const PREPARE_TRIES: usize = 3;

/// Unpacks layer `i` (diff IDs and chain IDs of all layers given) onto the snapshotter.
pub(super) async fn unpack_layer(
    pull: &Pull<'_>,
    i: usize,
    diff_ids: &[String],
    chain: &[String],
) -> Result<LayerOutcome, RpullError> {
    let sn = &pull.opts.snapshotter;
    let chain_id = &chain[i];
    let parent = if i == 0 { "" } else { chain[i - 1].as_str() };
    if stat(pull, chain_id).await? {
        return Ok(LayerOutcome::Present);
    }
    let layers: Vec<LayerInfo> = pull
        .resolved
        .layers
        .iter()
        .zip(&pull.resolved.manifest.layers)
        .map(|(d, raw)| LayerInfo {
            digest: d.digest.clone(),
            annotations: d.annotations.clone(),
            urls: raw.urls.clone().unwrap_or_default(),
        })
        .collect();
    let snapshot_labels = labels::snapshot_labels(
        pull.reference,
        &layers,
        i,
        chain_id,
        pull.opts.prefetch_size,
    );
    let Some((key, mounts)) = prepare(pull, chain_id, parent, &snapshot_labels).await? else {
        return Ok(LayerOutcome::Lazy);
    };
    let step = Unpack {
        pull,
        i,
        diff_id: &diff_ids[i],
        chain_id,
        key: &key,
        labels: &snapshot_labels,
    };
    let result = step.fetch_apply_commit(mounts).await;
    if result.is_err() || result.as_ref().is_ok_and(|o| *o == LayerOutcome::Present) {
        // Abort the extraction snapshot, as containerd does when Commit does not happen.
        if let Err(e) = pull.containerd.remove(sn, &key).await {
            tracing::warn!(key, error = %e, "cannot remove the extraction snapshot");
        }
    }
    result
}

/// Prepares an extraction snapshot for `chain_id`: `None` when the snapshotter answered
/// ALREADY_EXISTS and the chain ID now exists (the remote-snapshot handshake), else its key and
/// mounts.
async fn prepare(
    pull: &Pull<'_>,
    chain_id: &str,
    parent: &str,
    labels: &BTreeMap<String, String>,
) -> Result<Option<(String, Vec<Mount>)>, RpullError> {
    let sn = &pull.opts.snapshotter;
    for _ in 0..PREPARE_TRIES {
        let key = labels::extract_key(chain_id);
        match pull.containerd.prepare(sn, &key, parent, labels).await {
            Ok(mounts) => return Ok(Some((key, mounts))),
            Err(e) if e.code() == tonic::Code::AlreadyExists => {
                if stat(pull, chain_id).await? {
                    tracing::debug!(chain_id, "layer mounted remotely by the snapshotter");
                    return Ok(None);
                }
                tracing::debug!(
                    key,
                    chain_id,
                    "extraction snapshot exists, chain ID not found"
                );
            }
            Err(e) => return Err(pull.snapshot_error(e)),
        }
    }
    Err(RpullError::BadImage {
        reference: pull.reference.to_owned(),
        detail: format!(
            "unable to prepare extraction snapshot for {chain_id}: the snapshotter answered \
             \"already exists\" {PREPARE_TRIES} times but has no snapshot by that name"
        ),
    })
}

/// Whether the chain ID exists (containerd answers from its metadata).
async fn stat(pull: &Pull<'_>, chain_id: &str) -> Result<bool, RpullError> {
    let info = pull
        .containerd
        .stat(&pull.opts.snapshotter, chain_id)
        .await
        .map_err(|e| pull.snapshot_error(e))?;
    Ok(info.is_some())
}

/// The ordinary path for one prepared layer.
struct Unpack<'a> {
    pull: &'a Pull<'a>,
    i: usize,
    diff_id: &'a str,
    chain_id: &'a str,
    key: &'a str,
    labels: &'a BTreeMap<String, String>,
}

impl Unpack<'_> {
    async fn fetch_apply_commit(&self, mounts: Vec<Mount>) -> Result<LayerOutcome, RpullError> {
        let pull = self.pull;
        let layer = &pull.resolved.layers[self.i];
        tracing::debug!(
            digest = layer.digest,
            "layer not mounted remotely; fetching it"
        );
        let open = async || {
            pull.registry
                .stream_blob(pull.reference, &layer.digest, 0)
                .await
        };
        let written = pull
            .containerd
            .write_content(
                &labels::ingest_ref(&layer.media_type, &layer.digest),
                &layer.digest,
                layer.size,
                open,
            )
            .await??;
        pull.label_blob(&layer.digest, BTreeMap::new()).await?;
        let descriptor = augur_proto::Descriptor {
            media_type: layer.media_type.clone(),
            digest: layer.digest.clone(),
            size: layer.size as i64,
            annotations: layer.annotations.clone().into_iter().collect(),
        };
        let applied = pull.containerd.apply(descriptor, mounts).await?;
        if applied.digest != self.diff_id {
            return Err(RpullError::WrongDiffId {
                layer: layer.digest.clone(),
                expected: self.diff_id.to_owned(),
                got: applied.digest,
            });
        }
        let sn = &pull.opts.snapshotter;
        match pull
            .containerd
            .commit(sn, self.chain_id, self.key, self.labels)
            .await
        {
            Ok(()) => {}
            // Another pull committed the same chain meanwhile.
            Err(e) if e.code() == tonic::Code::AlreadyExists => return Ok(LayerOutcome::Present),
            Err(e) => return Err(pull.snapshot_error(e)),
        }
        let uncompressed = BTreeMap::from([(labels::UNCOMPRESSED.to_owned(), applied.digest)]);
        pull.containerd
            .set_content_labels(&layer.digest, &uncompressed)
            .await?;
        let bytes = match written {
            Written::Committed => layer.size,
            Written::AlreadyPresent => 0,
        };
        Ok(LayerOutcome::Fetched { bytes })
    }
}
