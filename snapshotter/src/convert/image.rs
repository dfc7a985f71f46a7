//! The JSON side of a conversion, pure (no I/O): which layers can be converted, and the new
//! manifest, config and index around converted layers.
//!
//! Follows containerd's converter (`images/converter/default.go`, which `ctr-remote image
//! convert` drives): the config keeps every field but `rootfs.diff_ids` (and the legacy
//! `config.Image` / `container_config.Image` ids, cleared when the diff IDs change), the
//! manifest keeps its annotations, layers keep theirs plus the eStargz ones. Unlike
//! `ctr-remote` without `--oci`, Docker media types always become OCI ones: Docker manifests
//! cannot carry the layer annotations a lazy pull needs (containerd drops them), so the result
//! is always an OCI image (decision 0008).

use std::collections::BTreeMap;

use oci_client::manifest::{
    IMAGE_CONFIG_MEDIA_TYPE, IMAGE_DOCKER_CONFIG_MEDIA_TYPE, IMAGE_DOCKER_LAYER_GZIP_MEDIA_TYPE,
    IMAGE_DOCKER_LAYER_TAR_MEDIA_TYPE, IMAGE_LAYER_GZIP_MEDIA_TYPE, IMAGE_LAYER_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, ImageIndexEntry,
    OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageIndex,
    OciImageManifest,
};
use serde_json::Value;

use super::ConvertError;
use crate::estargz::{TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION, WriteSummary};

/// zstd-compressed OCI layers.
const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Index entries that are not images of a platform (buildx attestations) carry this.
const REFERENCE_TYPE_ANNOTATION: &str = "vnd.docker.reference.type";

/// How a layer's blob is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Gzip,
    Tar,
}

/// The encoding of a layer, or why it cannot be converted.
pub(crate) fn encoding(layer: &OciDescriptor) -> Result<Encoding, ConvertError> {
    let unsupported = |reason: &str| ConvertError::UnsupportedMediaType {
        digest: layer.digest.clone(),
        media_type: layer.media_type.clone(),
        reason: reason.to_owned(),
    };
    match layer.media_type.as_str() {
        IMAGE_LAYER_GZIP_MEDIA_TYPE | IMAGE_DOCKER_LAYER_GZIP_MEDIA_TYPE => Ok(Encoding::Gzip),
        IMAGE_LAYER_MEDIA_TYPE | IMAGE_DOCKER_LAYER_TAR_MEDIA_TYPE => Ok(Encoding::Tar),
        OCI_LAYER_ZSTD => Err(unsupported(
            "this build of augurctl has no zstd decoder; convert an image whose layers are \
             gzip or uncompressed tar (e.g. the same image built or pushed with gzip)",
        )),
        m if m.contains("nondistributable") || m.contains("foreign") => Err(unsupported(
            "non-distributable (foreign) layers are not served by the registry and are not \
             converted",
        )),
        _ => Err(unsupported(
            "not a layer type augurctl converts (tar and tar+gzip layers are converted, \
             eStargz layers copied)",
        )),
    }
}

/// True for an index or manifest list, by media type or, without one, by shape.
pub(crate) fn is_index(media_type: &str, bytes: &[u8]) -> bool {
    match media_type {
        OCI_IMAGE_INDEX_MEDIA_TYPE | IMAGE_MANIFEST_LIST_MEDIA_TYPE => true,
        OCI_IMAGE_MEDIA_TYPE | IMAGE_MANIFEST_MEDIA_TYPE => false,
        _ => serde_json::from_slice::<Value>(bytes).is_ok_and(|v| v.get("manifests").is_some()),
    }
}

/// Parses an image manifest and checks it describes a container image.
pub(crate) fn parse_manifest(bytes: &[u8], digest: &str) -> Result<OciImageManifest, ConvertError> {
    let m: OciImageManifest = serde_json::from_slice(bytes).map_err(|e| ConvertError::Corrupt {
        what: format!("manifest {digest}"),
        detail: format!("does not parse as an image manifest: {e}"),
    })?;
    match m.config.media_type.as_str() {
        IMAGE_CONFIG_MEDIA_TYPE | IMAGE_DOCKER_CONFIG_MEDIA_TYPE => Ok(m),
        other => Err(ConvertError::Unsupported {
            what: "manifest",
            digest: digest.to_owned(),
            reason: format!(
                "its config has media type {other}, so it is not a container image; only \
                 container images are converted"
            ),
        }),
    }
}

/// Parses an index.
pub(crate) fn parse_index(bytes: &[u8], digest: &str) -> Result<OciImageIndex, ConvertError> {
    serde_json::from_slice(bytes).map_err(|e| ConvertError::Corrupt {
        what: format!("index {digest}"),
        detail: format!("does not parse: {e}"),
    })
}

/// The entries of `index` that are images of a platform (not attestations or other artifacts).
pub(crate) fn platform_images(index: &OciImageIndex) -> Vec<&ImageIndexEntry> {
    index
        .manifests
        .iter()
        .filter(|e| {
            let attestation = e
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(REFERENCE_TYPE_ANNOTATION));
            let unknown = e
                .platform
                .as_ref()
                .is_some_and(|p| p.os.to_string() == "unknown");
            !attestation && !unknown
        })
        .collect()
}

/// `os/arch[/variant]` of an index entry.
pub(crate) fn platform_name(e: &ImageIndexEntry) -> Option<String> {
    let p = e.platform.as_ref()?;
    let mut s = format!("{}/{}", p.os, p.architecture);
    if let Some(v) = &p.variant {
        s.push('/');
        s.push_str(v);
    }
    Some(s)
}

/// The descriptor of a layer rewritten as eStargz: OCI gzip, the new digest and size, the old
/// annotations plus the TOC digest and uncompressed size (what `ctr-remote` sets).
pub(crate) fn estargz_layer(old: &OciDescriptor, s: &WriteSummary) -> OciDescriptor {
    let mut annotations = old.annotations.clone().unwrap_or_default();
    annotations.insert(TOC_DIGEST_ANNOTATION.to_owned(), s.toc_digest.clone());
    annotations.insert(
        UNCOMPRESSED_SIZE_ANNOTATION.to_owned(),
        s.uncompressed_size.to_string(),
    );
    OciDescriptor {
        media_type: IMAGE_LAYER_GZIP_MEDIA_TYPE.to_owned(),
        digest: s.blob_digest.clone(),
        size: i64::try_from(s.blob_size).unwrap_or(i64::MAX),
        urls: None,
        annotations: Some(annotations),
        artifact_type: None,
    }
}

/// An eStargz layer kept as it is, under the OCI media type.
pub(crate) fn kept_layer(old: &OciDescriptor) -> OciDescriptor {
    OciDescriptor {
        media_type: IMAGE_LAYER_GZIP_MEDIA_TYPE.to_owned(),
        ..old.clone()
    }
}

/// The config with `rootfs.diff_ids` updated from `diff_ids` (one per layer, bottom first;
/// `None` keeps the layer's diff ID). An unchanged config is returned byte for byte, so its
/// digest stays the same.
pub(crate) fn rewrite_config(
    bytes: &[u8],
    digest: &str,
    diff_ids: &[Option<String>],
) -> Result<Vec<u8>, ConvertError> {
    let corrupt = |detail: String| ConvertError::Corrupt {
        what: format!("config {digest}"),
        detail,
    };
    let mut config: serde_json::Map<String, Value> =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("does not parse: {e}")))?;
    let rootfs = config
        .get_mut("rootfs")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| corrupt("has no rootfs".to_owned()))?;
    if rootfs.get("type").and_then(Value::as_str) != Some("layers") {
        return Err(corrupt("rootfs.type is not \"layers\"".to_owned()));
    }
    let old: Vec<String> = rootfs
        .get("diff_ids")
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if old.len() != diff_ids.len() {
        return Err(corrupt(format!(
            "lists {} diff IDs for {} layers; the image is inconsistent",
            old.len(),
            diff_ids.len()
        )));
    }
    let new: Vec<String> = old
        .iter()
        .zip(diff_ids)
        .map(|(o, n)| n.clone().unwrap_or_else(|| o.clone()))
        .collect();
    if new == old {
        return Ok(bytes.to_vec());
    }
    rootfs.insert("diff_ids".to_owned(), new.into());
    for key in ["config", "container_config"] {
        if let Some(Value::Object(c)) = config.get_mut(key) {
            c.remove("Image");
        }
    }
    serde_json::to_vec(&config).map_err(|e| corrupt(format!("does not serialise: {e}")))
}

/// The converted image's manifest (always OCI), keeping the old one's annotations and subject.
pub(crate) fn manifest_bytes(
    old: &OciImageManifest,
    config: OciDescriptor,
    layers: Vec<OciDescriptor>,
) -> Vec<u8> {
    let m = OciImageManifest {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_owned()),
        config,
        layers,
        subject: old.subject.clone(),
        artifact_type: old.artifact_type.clone(),
        annotations: old.annotations.clone(),
    };
    serde_json::to_vec(&m).unwrap_or_default()
}

/// The new config's descriptor.
pub(crate) fn config_descriptor(old: &OciDescriptor, bytes: &[u8]) -> OciDescriptor {
    OciDescriptor {
        media_type: IMAGE_CONFIG_MEDIA_TYPE.to_owned(),
        digest: crate::estargz::format_digest(&crate::estargz::sha256(bytes)),
        size: bytes.len() as i64,
        urls: None,
        annotations: old.annotations.clone(),
        artifact_type: None,
    }
}

/// An OCI index of the converted manifests: `(old entry, new digest, new size)`.
pub(crate) fn index_bytes(
    old: &OciImageIndex,
    converted: &[(&ImageIndexEntry, String, u64)],
) -> Vec<u8> {
    let manifests = converted
        .iter()
        .map(|(e, digest, size)| ImageIndexEntry {
            media_type: OCI_IMAGE_MEDIA_TYPE.to_owned(),
            digest: digest.clone(),
            size: *size as i64,
            platform: e.platform.clone(),
            annotations: e.annotations.clone(),
            artifact_type: None,
        })
        .collect();
    let index = OciImageIndex {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_INDEX_MEDIA_TYPE.to_owned()),
        manifests,
        artifact_type: old.artifact_type.clone(),
        annotations: old.annotations.clone(),
    };
    serde_json::to_vec(&index).unwrap_or_default()
}

/// A descriptor's annotations as a map (empty if it has none).
pub(crate) fn annotations(d: &OciDescriptor) -> BTreeMap<String, String> {
    d.annotations.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn desc(media_type: &str) -> OciDescriptor {
        OciDescriptor {
            media_type: media_type.to_owned(),
            digest: format!("sha256:{}", "a".repeat(64)),
            size: 10,
            ..OciDescriptor::default()
        }
    }

    #[test]
    fn layer_media_types() {
        for m in [
            IMAGE_LAYER_GZIP_MEDIA_TYPE,
            IMAGE_DOCKER_LAYER_GZIP_MEDIA_TYPE,
        ] {
            assert_eq!(encoding(&desc(m)).unwrap(), Encoding::Gzip);
        }
        for m in [IMAGE_LAYER_MEDIA_TYPE, IMAGE_DOCKER_LAYER_TAR_MEDIA_TYPE] {
            assert_eq!(encoding(&desc(m)).unwrap(), Encoding::Tar);
        }
        let e = encoding(&desc(OCI_LAYER_ZSTD)).unwrap_err().to_string();
        assert!(
            e.contains(OCI_LAYER_ZSTD) && e.contains("no zstd decoder"),
            "{e}"
        );
        let e = encoding(&desc("application/vnd.cncf.helm.chart.content.v1.tar+gzip"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("helm") && e.contains("not a layer type"), "{e}");
        let e = encoding(&desc(
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("non-distributable"), "{e}");
    }

    #[test]
    fn config_keeps_everything_but_the_diff_ids() {
        let config = json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "Image": "sha256:old"},
            "container_config": {"Image": "sha256:old", "Hostname": "h"},
            "history": [{"created_by": "umoci"}, {"created_by": "apt"}],
            "rootfs": {"type": "layers", "diff_ids": ["sha256:a", "sha256:b"]},
            "x-unknown": {"kept": true},
        });
        let bytes = serde_json::to_vec(&config).unwrap();
        let new = [None, Some("sha256:c".to_owned())];
        let out: Value =
            serde_json::from_slice(&rewrite_config(&bytes, "c", &new).unwrap()).unwrap();
        assert_eq!(out["rootfs"]["diff_ids"], json!(["sha256:a", "sha256:c"]));
        assert_eq!(out["history"], config["history"]);
        assert_eq!(out["config"]["Cmd"], json!(["/bin/sh"]));
        assert_eq!(out["config"]["Env"], json!(["PATH=/bin"]));
        assert_eq!(out["x-unknown"], json!({"kept": true}));
        assert!(out["config"].get("Image").is_none());
        assert_eq!(out["container_config"], json!({"Hostname": "h"}));

        let same = [Some("sha256:a".to_owned()), None];
        assert_eq!(rewrite_config(&bytes, "c", &same).unwrap(), bytes);
        let e = rewrite_config(&bytes, "c", &same[..1])
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 diff IDs for 1 layers"), "{e}");
        let e = rewrite_config(b"[]", "sha256:c", &same)
            .unwrap_err()
            .to_string();
        assert!(e.contains("config sha256:c"), "{e}");
    }

    #[test]
    fn estargz_layer_descriptor_carries_the_annotations() {
        let mut old = desc(IMAGE_DOCKER_LAYER_GZIP_MEDIA_TYPE);
        old.annotations = Some([("keep".to_owned(), "me".to_owned())].into());
        old.urls = Some(vec!["https://elsewhere".to_owned()]);
        let s = WriteSummary {
            toc_digest: "sha256:toc".into(),
            diff_id: "sha256:diff".into(),
            blob_digest: "sha256:blob".into(),
            blob_size: 1234,
            uncompressed_size: 5678,
        };
        let d = estargz_layer(&old, &s);
        assert_eq!(d.media_type, IMAGE_LAYER_GZIP_MEDIA_TYPE);
        assert_eq!((d.digest.as_str(), d.size), ("sha256:blob", 1234));
        assert_eq!(d.urls, None);
        let a = annotations(&d);
        assert_eq!(a["keep"], "me");
        assert_eq!(a[TOC_DIGEST_ANNOTATION], "sha256:toc");
        assert_eq!(a[UNCOMPRESSED_SIZE_ANNOTATION], "5678");
    }

    #[test]
    fn attestations_are_not_platform_images() {
        let index: OciImageIndex = serde_json::from_value(json!({
            "schemaVersion": 2,
            "manifests": [
                {"mediaType": OCI_IMAGE_MEDIA_TYPE, "digest": "sha256:1", "size": 1,
                 "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
                {"mediaType": OCI_IMAGE_MEDIA_TYPE, "digest": "sha256:2", "size": 1,
                 "platform": {"os": "unknown", "architecture": "unknown"},
                 "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
            ]
        }))
        .unwrap();
        let images = platform_images(&index);
        assert_eq!(images.len(), 1);
        assert_eq!(platform_name(images[0]).as_deref(), Some("linux/arm/v7"));
        let out: Value =
            serde_json::from_slice(&index_bytes(&index, &[(images[0], "sha256:n".into(), 9)]))
                .unwrap();
        assert_eq!(out["mediaType"], OCI_IMAGE_INDEX_MEDIA_TYPE);
        assert_eq!(out["manifests"][0]["digest"], "sha256:n");
        assert_eq!(out["manifests"][0]["platform"]["variant"], "v7");
    }

    #[test]
    fn docker_manifests_become_oci() {
        let old: OciImageManifest = serde_json::from_value(json!({
            "schemaVersion": 2,
            "mediaType": IMAGE_MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": IMAGE_DOCKER_CONFIG_MEDIA_TYPE, "digest": "sha256:c", "size": 3},
            "layers": [],
            "annotations": {"org.opencontainers.image.source": "x"},
        }))
        .unwrap();
        let cfg = config_descriptor(&old.config, b"{}");
        let out: Value = serde_json::from_slice(&manifest_bytes(
            &old,
            cfg,
            vec![kept_layer(&desc(IMAGE_DOCKER_LAYER_GZIP_MEDIA_TYPE))],
        ))
        .unwrap();
        assert_eq!(out["mediaType"], OCI_IMAGE_MEDIA_TYPE);
        assert_eq!(out["config"]["mediaType"], IMAGE_CONFIG_MEDIA_TYPE);
        assert_eq!(out["layers"][0]["mediaType"], IMAGE_LAYER_GZIP_MEDIA_TYPE);
        assert_eq!(out["annotations"]["org.opencontainers.image.source"], "x");
        assert!(is_index("", br#"{"schemaVersion":2,"manifests":[]}"#));
        assert!(!is_index(OCI_IMAGE_MEDIA_TYPE, b"{}"));
    }
}
