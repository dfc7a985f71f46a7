//! # rpull: pulling an image lazily through containerd
//!
//! What `augurctl image rpull` does, step for step what containerd 1.6's Go client does for
//! `client.Pull(ref, WithPullUnpack, WithPullSnapshotter(sn),
//! WithImageHandlerWrapper(source.AppendDefaultLabelsHandlerWrapper(ref, 10 MiB)))`, the call
//! behind `ctr-remote image rpull`, so a node needs neither `ctr-remote` nor nerdctl to pull
//! lazily:
//!
//! 1. resolve the reference with Augur's registry client (platform choice, auth, `hosts.toml`);
//! 2. take a lease (24 h expiry) so GC leaves half-written content and snapshots alone;
//! 3. write the index (if any), the manifest and the config to containerd's content store, with
//!    the GC labels that tie parent to children and the distribution-source label;
//! 4. per layer, bottom first ([`unpack`]): skip it if its chain ID exists; else Prepare an
//!    extraction snapshot on the snapshotter with the remote labels. ALREADY_EXISTS and the chain
//!    ID then Stat-able means the snapshotter mounted the layer remotely and no byte of it is
//!    fetched; mounts mean an ordinary layer: fetch the blob into the content store, apply it
//!    with containerd's diff service, check the diff ID, Commit under the chain ID;
//! 5. label the config `containerd.io/gc.ref.snapshot.<snapshotter>` = top chain ID, create or
//!    update the image record, and delete the lease: from then on the image record holds
//!    everything, and `ctr image rm` plus GC removes it all.
//!
//! | module | role |
//! |---|---|
//! | this file | [`rpull`], its options, progress events and result |
//! | [`labels`] | every label, key and name the pull gives containerd (pure) |
//! | `unpack` | step 4 for one layer |
//! | `error` | [`RpullError`] |
//!
//! Unlike containerd, layers are handled one after the other (containerd fetches the blobs of
//! the layers above the first non-remote one concurrently). Everything runs on the caller's
//! tokio runtime; nothing blocks.

mod error;
pub mod labels;
mod unpack;

use std::collections::BTreeMap;
use std::time::SystemTime;

use bytes::Bytes;

use crate::containerd::{Containerd, ContainerdError};
use crate::registry::{self, Platform, Registry, RegistryError};

pub use error::RpullError;

/// The snapshotter rpull prepares layers on by default.
pub const DEFAULT_SNAPSHOTTER: &str = "augur";
/// The prefetch size announced to the snapshotter (ctr-remote's fixed 10 MiB).
pub const DEFAULT_PREFETCH_SIZE: u64 = 10 << 20;
/// How long the pull's lease lives if it is never deleted (containerd's client: 24 h).
const LEASE_EXPIRY_SECS: u64 = 24 * 3600;

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// containerd's name for the snapshotter (`augur`).
    pub snapshotter: String,
    /// The platform to pick from an index; `None`: this host's.
    pub platform: Option<Platform>,
    /// Sent as `containerd.io/snapshot/remote/stargz.prefetch`.
    pub prefetch_size: u64,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            snapshotter: DEFAULT_SNAPSHOTTER.to_owned(),
            platform: None,
            prefetch_size: DEFAULT_PREFETCH_SIZE,
        }
    }
}

/// What happened to one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerOutcome {
    /// The snapshotter mounted it remotely; its blob was not fetched.
    Lazy,
    /// Fetched into the content store (`bytes` new bytes; 0 if it was there) and unpacked.
    Fetched {
        /// Bytes written to the content store.
        bytes: u64,
    },
    /// The namespace had the layer's snapshot already.
    Present,
}

/// Progress of a pull, for the person watching.
#[derive(Debug, Clone)]
pub enum Event {
    /// The reference resolved to a manifest.
    Resolved {
        /// The manifest's digest.
        manifest: String,
        /// How many layers it has.
        layers: usize,
    },
    /// A layer is done.
    Layer {
        /// 0-based, bottom first.
        index: usize,
        /// Number of layers.
        count: usize,
        /// The blob digest.
        digest: String,
        /// The blob size.
        size: u64,
        /// What happened.
        outcome: LayerOutcome,
    },
}

/// The result of a pull.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The image record's name (the reference as given).
    pub name: String,
    /// The image record's target digest (the index, else the manifest).
    pub target: String,
    /// The chain ID of the top layer (the snapshot containers start from).
    pub chain_id: String,
    /// One outcome per layer, bottom first.
    pub layers: Vec<LayerOutcome>,
}

/// Pulls `reference` into `containerd`'s namespace with layers on `opts.snapshotter`, lazily
/// where the snapshotter can; `progress` sees each step.
pub async fn rpull(
    containerd: &Containerd,
    registry: &Registry,
    reference: &str,
    opts: &PullOptions,
    progress: &mut (dyn FnMut(Event) + Send),
) -> Result<Pulled, RpullError> {
    let resolved = registry.resolve(reference, opts.platform.as_ref()).await?;
    progress(Event::Resolved {
        manifest: resolved.manifest_digest.clone(),
        layers: resolved.layers.len(),
    });
    let lease = labels::lease_id();
    let expiry = labels::rfc3339_after(SystemTime::now(), LEASE_EXPIRY_SECS);
    containerd
        .create_lease(
            &lease,
            BTreeMap::from([(labels::GC_EXPIRE.to_owned(), expiry)]),
        )
        .await?;
    let pull = Pull {
        containerd: containerd.with_lease(&lease)?,
        registry,
        reference,
        opts,
        resolved: &resolved,
        source: source_label(reference)?,
    };
    let result = pull.run(progress).await;
    if let Err(e) = containerd.delete_lease(&lease).await {
        tracing::warn!(lease, error = %e, "cannot delete the pull's lease; it expires in 24 h");
    }
    result
}

/// One pull under its lease.
struct Pull<'a> {
    containerd: Containerd,
    registry: &'a Registry,
    reference: &'a str,
    opts: &'a PullOptions,
    resolved: &'a registry::Resolved,
    /// `(containerd.io/distribution.source.<host>, repository)`.
    source: (String, String),
}

impl Pull<'_> {
    async fn run(&self, progress: &mut (dyn FnMut(Event) + Send)) -> Result<Pulled, RpullError> {
        let r = self.resolved;
        for index in &r.indexes {
            let children = [(index.chosen.media_type.clone(), index.chosen.digest.clone())];
            let gc = labels::child_gc_labels(&children);
            self.store_bytes(&index.media_type, &index.digest, index.bytes.clone(), gc)
                .await?;
        }
        let layer_refs: Vec<(String, String)> = r
            .layers
            .iter()
            .map(|l| (l.media_type.clone(), l.digest.clone()))
            .collect();
        let gc = labels::manifest_gc_labels((&r.config.media_type, &r.config.digest), &layer_refs);
        self.store_bytes(
            &r.media_type,
            &r.manifest_digest,
            r.manifest_bytes.clone(),
            gc,
        )
        .await?;
        let config = self.fetch_config().await?;
        let diff_ids = self.diff_ids(&config)?;
        let chain = labels::chain_ids(&diff_ids);
        let mut outcomes = Vec::with_capacity(r.layers.len());
        for i in 0..r.layers.len() {
            let outcome = unpack::unpack_layer(self, i, &diff_ids, &chain).await?;
            progress(Event::Layer {
                index: i,
                count: r.layers.len(),
                digest: r.layers[i].digest.clone(),
                size: r.layers[i].size,
                outcome: outcome.clone(),
            });
            outcomes.push(outcome);
        }
        let top = chain.last().cloned().unwrap_or_default();
        let snapshot_ref = format!("containerd.io/gc.ref.snapshot.{}", self.opts.snapshotter);
        self.containerd
            .set_content_labels(
                &r.config.digest,
                &BTreeMap::from([(snapshot_ref, top.clone())]),
            )
            .await?;
        let (target, name) = (self.target(), self.reference.to_owned());
        let target_digest = target.digest.clone();
        self.containerd
            .put_image(&name, target, BTreeMap::new())
            .await?;
        Ok(Pulled {
            name,
            target: target_digest,
            chain_id: top,
            layers: outcomes,
        })
    }

    /// Writes a small blob to the content store and sets `labels` plus the source label on it.
    async fn store_bytes(
        &self,
        media_type: &str,
        digest: &str,
        bytes: Bytes,
        labels: BTreeMap<String, String>,
    ) -> Result<(), RpullError> {
        let size = bytes.len() as u64;
        let open =
            async || Ok::<_, RegistryError>(futures::stream::iter([Ok::<_, RegistryError>(bytes)]));
        self.containerd
            .write_content(&labels::ingest_ref(media_type, digest), digest, size, open)
            .await??;
        self.label_blob(digest, labels).await
    }

    /// Sets `labels` and the distribution-source label (merged with the one there) on a blob.
    async fn label_blob(
        &self,
        digest: &str,
        mut labels: BTreeMap<String, String>,
    ) -> Result<(), RpullError> {
        let existing = self.containerd.content_labels(digest).await?;
        let (key, repo) = &self.source;
        let merged = labels::append_source(
            existing
                .as_ref()
                .and_then(|l| l.get(key))
                .map(String::as_str),
            repo,
        );
        labels.insert(key.clone(), merged);
        self.containerd.set_content_labels(digest, &labels).await?;
        Ok(())
    }

    /// The config blob: fetched (verified) from the registry and stored.
    async fn fetch_config(&self) -> Result<Bytes, RpullError> {
        let c = &self.resolved.config;
        let mut body = Vec::with_capacity(c.size as usize);
        self.registry
            .pull_blob(self.reference, &c.digest, &mut body)
            .await?;
        let body = Bytes::from(body);
        self.store_bytes(&c.media_type, &c.digest, body.clone(), BTreeMap::new())
            .await?;
        Ok(body)
    }

    /// The config's `rootfs.diff_ids`, one per layer.
    fn diff_ids(&self, config: &[u8]) -> Result<Vec<String>, RpullError> {
        #[derive(serde::Deserialize)]
        struct Config {
            rootfs: RootFs,
        }
        #[derive(serde::Deserialize)]
        struct RootFs {
            diff_ids: Vec<String>,
        }
        let bad = |detail: String| RpullError::BadImage {
            reference: self.reference.to_owned(),
            detail,
        };
        let parsed: Config = serde_json::from_slice(config).map_err(|e| {
            bad(format!(
                "config {} does not parse: {e}",
                self.resolved.config.digest
            ))
        })?;
        let (ids, layers) = (parsed.rootfs.diff_ids, self.resolved.layers.len());
        if ids.len() != layers {
            return Err(bad(format!(
                "number of layers and diffIDs don't match: {layers} != {}",
                ids.len()
            )));
        }
        Ok(ids)
    }

    /// The image record's target: the outermost index, else the manifest.
    fn target(&self) -> augur_proto::Descriptor {
        let r = self.resolved;
        let (media_type, digest, size) = match r.indexes.first() {
            Some(i) => (i.media_type.clone(), i.digest.clone(), i.bytes.len()),
            None => (
                r.media_type.clone(),
                r.manifest_digest.clone(),
                r.manifest_bytes.len(),
            ),
        };
        augur_proto::Descriptor {
            media_type,
            digest,
            size: size as i64,
            annotations: Default::default(),
        }
    }

    fn snapshot_error(&self, e: ContainerdError) -> RpullError {
        RpullError::from_snapshot_call(&self.opts.snapshotter, e)
    }
}

fn source_label(reference: &str) -> Result<(String, String), RegistryError> {
    let (registry, repository) = registry::registry_and_repository(reference)?;
    Ok(labels::distribution_source(&registry, &repository))
}
