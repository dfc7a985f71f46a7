//! Which Prepare calls ask for a remote (lazily mounted) layer, read from the labels containerd
//! forwards.
//!
//! Two label families say the same thing. `ctr-remote image rpull` and nerdctl send
//! `containerd.io/snapshot/remote/stargz.*`; containerd's CRI plugin sends
//! `containerd.io/snapshot/cri.*` (when `disable_snapshot_annotations = false`). Both come with
//! `containerd.io/snapshot.ref`, the chain ID the layer is to be committed under. Layer
//! annotations with the `containerd.io/snapshot/` prefix are forwarded too, which is how the TOC
//! digest of an eStargz layer arrives.

use crate::store::Labels;

/// The chain ID containerd wants the finished layer committed under.
pub const TARGET_REF: &str = "containerd.io/snapshot.ref";
/// Set on a snapshot that is a lazily mounted remote layer (stargz sets the same label).
pub const REMOTE: &str = "containerd.io/snapshot/remote";
/// The value of [`REMOTE`] (as stargz writes it).
pub const REMOTE_VALUE: &str = "remote snapshot";
/// The eStargz TOC digest annotation of the layer.
pub const TOC_DIGEST: &str = "containerd.io/snapshot/stargz/toc.digest";

const STARGZ_REFERENCE: &str = "containerd.io/snapshot/remote/stargz.reference";
const STARGZ_DIGEST: &str = "containerd.io/snapshot/remote/stargz.digest";
const STARGZ_LAYERS: &str = "containerd.io/snapshot/remote/stargz.layers";
const CRI_IMAGE_REF: &str = "containerd.io/snapshot/cri.image-ref";
const CRI_LAYER_DIGEST: &str = "containerd.io/snapshot/cri.layer-digest";
const CRI_MANIFEST_DIGEST: &str = "containerd.io/snapshot/cri.manifest-digest";
const CRI_IMAGE_LAYERS: &str = "containerd.io/snapshot/cri.image-layers";

/// A request to mount one layer of an image lazily.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSpec {
    /// The name to commit the layer under (its chain ID, not namespaced).
    pub target: String,
    /// The image reference to fetch from, e.g. `registry.example:5000/app:1.0`.
    pub image_ref: String,
    /// The layer blob's digest.
    pub layer_digest: String,
    /// The TOC digest annotation, when the image carries it.
    pub toc_digest: Option<String>,
    /// The image's manifest digest (CRI labels only).
    pub manifest_digest: Option<String>,
    /// This layer and the ones above it, as the labels list them (used for prefetch order).
    pub layers: Vec<String>,
}

/// Why remote labels were present but unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label {label:?} is {problem}")]
pub struct LabelError {
    /// The offending label.
    pub label: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

/// The remote layer these labels ask for: `Ok(None)` when they do not ask for one (a plain
/// Prepare), an error when they do but say it badly.
pub fn remote_spec(labels: &Labels) -> Result<Option<RemoteSpec>, LabelError> {
    let Some(target) = labels.get(TARGET_REF) else {
        return Ok(None);
    };
    let (image_ref, digest, layers, manifest) = if labels.contains_key(STARGZ_REFERENCE) {
        (
            (STARGZ_REFERENCE, labels.get(STARGZ_REFERENCE)),
            (STARGZ_DIGEST, labels.get(STARGZ_DIGEST)),
            labels.get(STARGZ_LAYERS),
            None,
        )
    } else if labels.contains_key(CRI_IMAGE_REF) {
        (
            (CRI_IMAGE_REF, labels.get(CRI_IMAGE_REF)),
            (CRI_LAYER_DIGEST, labels.get(CRI_LAYER_DIGEST)),
            labels.get(CRI_IMAGE_LAYERS),
            labels.get(CRI_MANIFEST_DIGEST),
        )
    } else {
        return Ok(None);
    };
    let image_ref = required(image_ref.0, image_ref.1)?;
    let layer_digest = required(digest.0, digest.1)?;
    check_digest(digest.0, &layer_digest)?;
    check_digest(TARGET_REF, target)?;
    let toc_digest = labels.get(TOC_DIGEST).filter(|d| !d.is_empty()).cloned();
    if let Some(d) = &toc_digest {
        check_digest(TOC_DIGEST, d)?;
    }
    let layers = layers
        .map(|l| {
            l.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(RemoteSpec {
        target: target.clone(),
        image_ref,
        layer_digest,
        toc_digest,
        manifest_digest: manifest.filter(|d| !d.is_empty()).cloned(),
        layers,
    }))
}

fn required(label: &'static str, value: Option<&String>) -> Result<String, LabelError> {
    match value.map(|v| v.trim()) {
        Some(v) if !v.is_empty() => Ok(v.to_owned()),
        _ => Err(LabelError {
            label,
            problem: "missing or empty".into(),
        }),
    }
}

/// Accepts `sha256:<64 lowercase hex>`, the only algorithm eStargz and containerd use here.
fn check_digest(label: &'static str, value: &str) -> Result<(), LabelError> {
    let ok = value.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if ok {
        Ok(())
    } else {
        Err(LabelError {
            label,
            problem: format!("{value:?}, not a sha256 digest (sha256:<64 hex digits>)"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn plain_prepare_is_not_remote() {
        assert_eq!(remote_spec(&Labels::new()), Ok(None));
        // ctr snapshots commit / gc labels only.
        let l = labels(&[("containerd.io/gc.root", "x")]);
        assert_eq!(remote_spec(&l), Ok(None));
        // The target alone (no image) is not a remote request either.
        assert_eq!(remote_spec(&labels(&[(TARGET_REF, D1)])), Ok(None));
    }

    #[test]
    fn stargz_family() {
        let l = labels(&[
            (TARGET_REF, D1),
            (STARGZ_REFERENCE, "127.0.0.1:5000/python:latest"),
            (STARGZ_DIGEST, D2),
            (STARGZ_LAYERS, &format!("{D2},{D3}")),
            (TOC_DIGEST, D3),
            ("containerd.io/snapshot/remote/stargz.prefetch", "10485760"),
        ]);
        let s = remote_spec(&l).unwrap().unwrap();
        assert_eq!(s.target, D1);
        assert_eq!(s.image_ref, "127.0.0.1:5000/python:latest");
        assert_eq!(s.layer_digest, D2);
        assert_eq!(s.toc_digest.as_deref(), Some(D3));
        assert_eq!(s.layers, vec![D2.to_string(), D3.to_string()]);
        assert_eq!(s.manifest_digest, None);
    }

    #[test]
    fn cri_family() {
        let l = labels(&[
            (TARGET_REF, D1),
            (CRI_IMAGE_REF, "registry.example/app:1"),
            (CRI_LAYER_DIGEST, D2),
            (CRI_MANIFEST_DIGEST, D3),
            (CRI_IMAGE_LAYERS, D2),
        ]);
        let s = remote_spec(&l).unwrap().unwrap();
        assert_eq!(s.image_ref, "registry.example/app:1");
        assert_eq!(s.manifest_digest.as_deref(), Some(D3));
        assert_eq!(s.toc_digest, None);
    }

    #[test]
    fn bad_labels_name_the_label() {
        let l = labels(&[(TARGET_REF, D1), (STARGZ_REFERENCE, "r/x:1")]);
        let e = remote_spec(&l).unwrap_err();
        assert_eq!(e.label, STARGZ_DIGEST);
        let l = labels(&[
            (TARGET_REF, D1),
            (STARGZ_REFERENCE, "r/x:1"),
            (STARGZ_DIGEST, "sha256:XYZ"),
        ]);
        let e = remote_spec(&l).unwrap_err();
        assert!(e.to_string().contains("stargz.digest"), "{e}");
        assert!(e.to_string().contains("not a sha256 digest"), "{e}");
        let l = labels(&[
            (TARGET_REF, D1),
            (STARGZ_REFERENCE, "r/x:1"),
            (STARGZ_DIGEST, D2),
            (TOC_DIGEST, "md5:00"),
        ]);
        assert_eq!(remote_spec(&l).unwrap_err().label, TOC_DIGEST);
    }
}
