//! The names and labels a pull gives containerd, computed as containerd 1.6's client and
//! stargz's `AppendDefaultLabelsHandlerWrapper` compute them (pure functions, no I/O).
//!
//! - Snapshot labels of each layer's Prepare and Commit: the layer's `containerd.io/snapshot/…`
//!   annotations (`snapshots.FilterInheritedLabels`), `containerd.io/snapshot.ref` = the chain ID,
//!   and the `containerd.io/snapshot/remote/…` labels ctr-remote adds (reference, digest, this
//!   and the following layers, their URLs, the prefetch size).
//! - Content labels: the GC references from a parent blob to its children
//!   (`images.ChildGCLabels`: `gc.ref.content.config`, `.l.<i>`, `.m.<i>`), the distribution
//!   source (`containerd.io/distribution.source.<host>` = sorted repositories), and the config's
//!   `containerd.io/gc.ref.snapshot.<snapshotter>` = the top chain ID.
//! - Chain IDs (OCI `identity.ChainID`), ingest refs, extraction keys, the lease expiry.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use crate::lazy::labels::TARGET_REF;

/// Labels of this prefix on a layer descriptor are passed to the snapshotter.
const INHERITED_PREFIX: &str = "containerd.io/snapshot/";
const STARGZ_REFERENCE: &str = "containerd.io/snapshot/remote/stargz.reference";
const STARGZ_DIGEST: &str = "containerd.io/snapshot/remote/stargz.digest";
const STARGZ_LAYERS: &str = "containerd.io/snapshot/remote/stargz.layers";
const STARGZ_PREFETCH: &str = "containerd.io/snapshot/remote/stargz.prefetch";
const REMOTE_URLS: &str = "containerd.io/snapshot/remote/urls";
/// containerd refuses a label whose key and value together are longer (`labels.Validate`).
const MAX_LABEL_BYTES: usize = 4096;

/// Lease label: when GC may collect the lease even if it was never deleted.
pub const GC_EXPIRE: &str = "containerd.io/gc.expire";
/// Content label: the digest of the uncompressed layer (set after a verified apply).
pub const UNCOMPRESSED: &str = "containerd.io/uncompressed";

/// A layer as the snapshot labels need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// The blob digest.
    pub digest: String,
    /// The descriptor's annotations.
    pub annotations: BTreeMap<String, String>,
    /// The descriptor's `urls` (foreign layers).
    pub urls: Vec<String>,
}

/// The chain IDs of a stack of layers with these diff IDs, bottom first.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => {
                let hash = Sha256::digest(format!("{parent} {d}").as_bytes());
                format!("sha256:{}", hex::encode(hash))
            }
        };
        out.push(next);
    }
    out
}

/// The labels of layer `i`'s Prepare and Commit, as ctr-remote's pull sends them.
pub fn snapshot_labels(
    reference: &str,
    layers: &[LayerInfo],
    i: usize,
    chain_id: &str,
    prefetch_size: u64,
) -> BTreeMap<String, String> {
    let layer = &layers[i];
    let mut annotations = layer.annotations.clone();
    annotations.insert(STARGZ_REFERENCE.to_owned(), reference.to_owned());
    annotations.insert(STARGZ_DIGEST.to_owned(), layer.digest.clone());
    let mut listed = String::new();
    for (j, l) in layers[i..].iter().enumerate() {
        let next = format!("{},", l.digest);
        if !fits(STARGZ_LAYERS, &format!("{listed}{next}")) {
            break;
        }
        listed.push_str(&next);
        let key = format!("{REMOTE_URLS}.{j}");
        let urls = joined_within_limit(&key, &l.urls);
        annotations.insert(key, urls);
    }
    annotations.insert(
        STARGZ_LAYERS.to_owned(),
        listed.trim_end_matches(',').to_owned(),
    );
    annotations.insert(STARGZ_PREFETCH.to_owned(), prefetch_size.to_string());
    annotations.insert(
        REMOTE_URLS.to_owned(),
        joined_within_limit(REMOTE_URLS, &layer.urls),
    );
    let mut labels: BTreeMap<String, String> = annotations
        .into_iter()
        .filter(|(k, _)| k == TARGET_REF || k.starts_with(INHERITED_PREFIX))
        .collect();
    labels.insert(TARGET_REF.to_owned(), chain_id.to_owned());
    labels
}

fn fits(key: &str, value: &str) -> bool {
    key.len() + value.len() <= MAX_LABEL_BYTES
}

/// `values` joined by commas, stopping before the label would grow too long.
fn joined_within_limit(key: &str, values: &[String]) -> String {
    let mut v = String::new();
    for u in values {
        let next = format!("{u},");
        if !fits(key, &format!("{v}{next}")) {
            break;
        }
        v.push_str(&next);
    }
    v.trim_end_matches(',').to_owned()
}

/// The GC labels a manifest gets for its config and layers.
pub fn manifest_gc_labels(
    config: (&str, &str),
    layers: &[(String, String)],
) -> BTreeMap<String, String> {
    let children = std::iter::once((config.0.to_owned(), config.1.to_owned()))
        .chain(layers.iter().cloned())
        .collect::<Vec<_>>();
    child_gc_labels(&children)
}

/// `images.SetChildrenMappedLabels` with `ChildGCLabels`: one label per child `(media type,
/// digest)`; a key ending in `.` or seen before gets the count of its earlier uses appended.
pub fn child_gc_labels(children: &[(String, String)]) -> BTreeMap<String, String> {
    let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (media_type, digest) in children {
        let base = gc_label_for(media_type);
        let idx = seen.entry(base).or_default();
        let key = if *idx > 0 || base.ends_with('.') {
            format!("{base}{idx}")
        } else {
            base.to_owned()
        };
        *idx += 1;
        out.insert(key, digest.clone());
    }
    out
}

fn gc_label_for(media_type: &str) -> &'static str {
    if is_known_config(media_type) {
        "containerd.io/gc.ref.content.config"
    } else if matches!(
        media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
            | "application/vnd.oci.image.manifest.v1+json"
    ) {
        "containerd.io/gc.ref.content.m."
    } else if is_layer_type(media_type) {
        "containerd.io/gc.ref.content.l."
    } else {
        "containerd.io/gc.ref.content."
    }
}

/// containerd's `images.IsKnownConfig`.
pub fn is_known_config(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.docker.container.image.v1+json"
            | "application/vnd.oci.image.config.v1+json"
            | "application/vnd.containerd.container.criu.checkpoint.criu.tar"
            | "application/vnd.containerd.container.checkpoint.config.v1+proto"
    )
}

/// containerd's `images.IsLayerType`.
pub fn is_layer_type(media_type: &str) -> bool {
    if media_type.starts_with("application/vnd.oci.image.layer.") {
        return true;
    }
    let base = media_type.split('+').next().unwrap_or(media_type);
    matches!(
        base,
        "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    )
}

/// The distribution-source label key and repository for `registry` and `repository` (the key
/// names the host without its port, as containerd's `url.Hostname()` does).
pub fn distribution_source(registry: &str, repository: &str) -> (String, String) {
    let host = match registry.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => registry.split(':').next().unwrap_or(registry),
    };
    (
        format!("containerd.io/distribution.source.{host}"),
        repository.to_owned(),
    )
}

/// Adds `repository` to a distribution-source value: sorted, without duplicates.
pub fn append_source(existing: Option<&str>, repository: &str) -> String {
    let mut repos: Vec<&str> = existing
        .unwrap_or("")
        .split(',')
        .filter(|r| !r.is_empty())
        .collect();
    repos.push(repository);
    repos.sort_unstable();
    repos.dedup();
    repos.join(",")
}

/// The ingest ref containerd's `remotes.MakeRefKey` gives a blob.
pub fn ingest_ref(media_type: &str, digest: &str) -> String {
    let kind = if matches!(
        media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
            | "application/vnd.oci.image.manifest.v1+json"
    ) {
        "manifest"
    } else if matches!(
        media_type,
        "application/vnd.docker.distribution.manifest.list.v2+json"
            | "application/vnd.oci.image.index.v1+json"
    ) {
        "index"
    } else if is_layer_type(media_type) {
        "layer"
    } else if is_known_config(media_type) {
        "config"
    } else {
        "unknown"
    };
    format!("{kind}-{digest}")
}

/// An extraction key, `extract-<nanos>-<random> <chainID>` (`snapshots.UnpackKeyFormat`).
pub fn extract_key(chain_id: &str) -> String {
    format!("extract-{} {chain_id}", unique_part())
}

/// A lease id as `leases.WithRandomID` makes one: `<nanos>-<random>`.
pub fn lease_id() -> String {
    unique_part()
}

fn unique_part() -> String {
    use base64::Engine as _;
    use std::hash::{BuildHasher, Hasher};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    // RandomState is seeded from the OS's randomness: three of its bytes are enough here.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(nanos);
    let r = h.finish().to_le_bytes();
    let tail = base64::engine::general_purpose::URL_SAFE.encode(&r[..3]);
    format!("{nanos}-{tail}")
}

/// `now + secs` as RFC 3339 in UTC (`2026-11-30T20:27:09Z`), for [`GC_EXPIRE`].
pub fn rfc3339_after(now: SystemTime, secs: u64) -> String {
    let t = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() + secs;
    let (days, rem) = (t / 86_400, t % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
#[path = "labels_tests.rs"]
mod tests;
