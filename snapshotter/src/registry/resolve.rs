//! Resolving a reference: tag or digest → manifest, following an index (or Docker manifest list)
//! to the manifest for a platform. Every manifest fetched by digest is checked against it.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::future::FutureExt;
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageIndex, OciImageManifest, Versioned,
};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, Response};

use super::digest::{Digest, sha256};
use super::endpoint::{Cap, Endpoint};
use super::platform::{self, Platform};
use super::transport::{Failure, Request, Target, describe};
use super::{
    Descriptor, IndexBlob, RawManifest, Registry, RegistryError, Repo, Resolved, parse_reference,
};

/// Manifest media types asked for, indexes first.
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";
/// A manifest larger than this is refused (the distribution spec suggests 4 MiB).
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Docker's schema 1 manifests (`…manifest.v1+json`, `…manifest.v1+prettyjws`).
const DOCKER_SCHEMA1_PREFIX: &str = "application/vnd.docker.distribution.manifest.v1";
/// Indexes pointing at indexes are followed this deep.
const MAX_INDEX_DEPTH: usize = 3;

/// A manifest as served.
struct Fetched {
    bytes: Bytes,
    media_type: String,
    digest: Digest,
    host: String,
}

impl Registry {
    /// Resolves `reference` (`127.0.0.1:5000/python:latest`, `docker.io/library/x@sha256:…`) to
    /// an image manifest. An index is followed to the manifest for `platform` (default:
    /// [`Platform::host`]).
    pub async fn resolve(
        &self,
        reference: &str,
        platform: Option<&Platform>,
    ) -> Result<Resolved, RegistryError> {
        let repo = parse_reference(reference)?;
        let want = platform.cloned().unwrap_or_else(Platform::host);
        let cap = if repo.is_digest {
            Cap::Pull
        } else {
            Cap::Resolve
        };
        let mut fetched = self.fetch_manifest(&repo, &repo.reference, cap).await?;
        let mut index_digest = None;
        let mut indexes = Vec::new();
        for _ in 0..MAX_INDEX_DEPTH {
            if !is_index(&fetched) {
                break;
            }
            let index: OciImageIndex = serde_json::from_slice(&fetched.bytes)
                .map_err(|e| bad_json(&fetched, &repo, "index", &e))?;
            let entry = platform::select(&index, &want).ok_or_else(|| RegistryError::NotFound {
                what: format!(
                    "a manifest for platform {want} (the index offers {})",
                    platform::offered(&index)
                ),
                repository: repo.display.clone(),
                host: fetched.host.clone(),
            })?;
            let child = Digest::parse(&entry.digest)?.to_string();
            index_digest.get_or_insert_with(|| fetched.digest.to_string());
            let chosen = Descriptor {
                media_type: entry.media_type.clone(),
                digest: child.clone(),
                size: u64::try_from(entry.size).unwrap_or_default(),
                annotations: entry.annotations.clone().unwrap_or_default(),
            };
            let next = self.fetch_manifest(&repo, &child, Cap::Pull).await?;
            indexes.push(index_blob(std::mem::replace(&mut fetched, next), chosen));
        }
        if is_index(&fetched) {
            return Err(RegistryError::protocol(
                &fetched.host,
                format!("{} nests indexes too deep", repo.display),
            ));
        }
        let mut resolved = image(fetched, index_digest, &repo)?;
        resolved.indexes = indexes;
        Ok(resolved)
    }

    /// The manifest or index `reference` names (or, with `digest`, the one with that digest in
    /// the reference's repository), exactly as served and not followed: for callers that walk
    /// an index themselves. A digest is verified; Docker schema 1 is refused.
    pub async fn manifest(
        &self,
        reference: &str,
        digest: Option<&str>,
    ) -> Result<RawManifest, RegistryError> {
        let repo = parse_reference(reference)?;
        let (wanted, cap) = match digest {
            Some(d) => (Digest::parse(d)?.to_string(), Cap::Pull),
            None if repo.is_digest => (repo.reference.clone(), Cap::Pull),
            None => (repo.reference.clone(), Cap::Resolve),
        };
        let f = self.fetch_manifest(&repo, &wanted, cap).await?;
        if f.media_type.starts_with(DOCKER_SCHEMA1_PREFIX) {
            return Err(schema1(&f, &repo));
        }
        let declared = serde_json::from_slice::<Versioned>(&f.bytes)
            .ok()
            .and_then(|v| v.media_type)
            .filter(|m| !m.is_empty());
        let index = is_index(&f);
        Ok(RawManifest {
            media_type: declared.unwrap_or(f.media_type),
            index,
            digest: f.digest.to_string(),
            bytes: f.bytes,
        })
    }

    /// GET `manifests/<reference>`; a digest reference is verified.
    async fn fetch_manifest(
        &self,
        repo: &Repo,
        reference: &str,
        cap: Cap,
    ) -> Result<Fetched, RegistryError> {
        let eps = self.net.endpoints(repo, cap).await?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(ACCEPT_MANIFESTS));
        let req = Request {
            method: Method::GET,
            cap,
            repository: &repo.repository,
            display: &repo.display,
            target: Target::Api(format!("manifests/{reference}")),
            headers,
            body: None,
            what: format!("manifest {reference}"),
            whole_timeout: true,
        };
        let expected = if reference.starts_with("sha") {
            Some(Digest::parse(reference)?)
        } else {
            None
        };
        let read =
            |ep: Arc<Endpoint>, resp: Response| read_manifest(ep, resp, expected.clone()).boxed();
        self.net.transport.run(&eps, &req, &read).await
    }
}

async fn read_manifest(
    ep: Arc<Endpoint>,
    mut resp: Response,
    expected: Option<Digest>,
) -> Result<Fetched, Failure> {
    let media_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
        .unwrap_or_default();
    let mut body = BytesMut::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Failure::Retry(describe(&e)))?
    {
        if body.len() + chunk.len() > MAX_MANIFEST_BYTES {
            return Err(Failure::Final(RegistryError::protocol(
                &ep.host,
                format!("manifest larger than {MAX_MANIFEST_BYTES} bytes"),
            )));
        }
        body.extend_from_slice(&chunk);
    }
    let bytes = body.freeze();
    let digest = match expected {
        Some(want) => {
            let got = want.of_same_kind(&bytes);
            if got != want {
                return Err(Failure::Final(RegistryError::protocol(
                    &ep.host,
                    format!("manifest {want} has digest {got}: corrupt or wrong content"),
                )));
            }
            want
        }
        None => sha256(&bytes),
    };
    Ok(Fetched {
        bytes,
        media_type,
        digest,
        host: ep.host.clone(),
    })
}

fn index_blob(f: Fetched, chosen: Descriptor) -> IndexBlob {
    #[derive(serde::Deserialize)]
    struct Shape {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    let declared = serde_json::from_slice::<Shape>(&f.bytes)
        .ok()
        .and_then(|s| s.media_type)
        .filter(|m| !m.is_empty());
    let media_type = declared.unwrap_or_else(|| match f.media_type.as_str() {
        IMAGE_MANIFEST_LIST_MEDIA_TYPE => f.media_type.clone(),
        _ => OCI_IMAGE_INDEX_MEDIA_TYPE.to_owned(),
    });
    IndexBlob {
        digest: f.digest.to_string(),
        media_type,
        bytes: f.bytes,
        chosen,
    }
}

/// Index or manifest list, by media type, else by shape (`manifests` instead of `layers`).
fn is_index(f: &Fetched) -> bool {
    #[derive(serde::Deserialize)]
    struct Shape {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
    }
    let shape: Option<Shape> = serde_json::from_slice(&f.bytes).ok();
    let declared = shape
        .as_ref()
        .and_then(|s| s.media_type.clone())
        .unwrap_or_else(|| f.media_type.clone());
    match declared.as_str() {
        OCI_IMAGE_INDEX_MEDIA_TYPE | IMAGE_MANIFEST_LIST_MEDIA_TYPE => true,
        OCI_IMAGE_MEDIA_TYPE | IMAGE_MANIFEST_MEDIA_TYPE => false,
        _ => shape.is_some_and(|s| s.manifests.is_some()),
    }
}

fn schema1(f: &Fetched, repo: &Repo) -> RegistryError {
    RegistryError::protocol(
        &f.host,
        format!(
            "{} has a Docker schema 1 manifest, which is not supported; push it again with a current tool",
            repo.display
        ),
    )
}

fn image(f: Fetched, index_digest: Option<String>, repo: &Repo) -> Result<Resolved, RegistryError> {
    if f.media_type.starts_with(DOCKER_SCHEMA1_PREFIX) {
        return Err(schema1(&f, repo));
    }
    let manifest: OciImageManifest =
        serde_json::from_slice(&f.bytes).map_err(|e| bad_json(&f, repo, "manifest", &e))?;
    let descriptor = |d: &OciDescriptor| -> Result<Descriptor, RegistryError> {
        Digest::parse(&d.digest)?;
        let size = u64::try_from(d.size).map_err(|_| {
            RegistryError::protocol(
                &f.host,
                format!("descriptor {} has size {}", d.digest, d.size),
            )
        })?;
        Ok(Descriptor {
            media_type: d.media_type.clone(),
            digest: d.digest.clone(),
            size,
            annotations: d.annotations.clone().unwrap_or_default(),
        })
    };
    let config = descriptor(&manifest.config)?;
    let layers = manifest
        .layers
        .iter()
        .map(descriptor)
        .collect::<Result<Vec<_>, _>>()?;
    let media_type = manifest
        .media_type
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| {
            if f.media_type.is_empty() {
                OCI_IMAGE_MEDIA_TYPE.to_owned()
            } else {
                f.media_type.clone()
            }
        });
    Ok(Resolved {
        manifest_digest: f.digest.to_string(),
        index_digest,
        indexes: Vec::new(),
        media_type,
        manifest,
        manifest_bytes: f.bytes,
        config,
        layers,
    })
}

fn bad_json(f: &Fetched, repo: &Repo, what: &str, e: &serde_json::Error) -> RegistryError {
    RegistryError::protocol(
        &f.host,
        format!(
            "{what} {} of {} does not parse: {e}",
            f.digest, repo.display
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetched(media_type: &str, body: &str) -> Fetched {
        Fetched {
            bytes: Bytes::from(body.to_owned()),
            media_type: media_type.to_owned(),
            digest: sha256(body.as_bytes()),
            host: "h".to_owned(),
        }
    }

    #[test]
    fn index_detection_by_type_then_shape() {
        assert!(is_index(&fetched(OCI_IMAGE_INDEX_MEDIA_TYPE, "{}")));
        assert!(is_index(&fetched(
            "",
            r#"{"mediaType": "application/vnd.docker.distribution.manifest.list.v2+json"}"#
        )));
        assert!(is_index(&fetched(
            "application/json",
            r#"{"schemaVersion": 2, "manifests": []}"#
        )));
        assert!(!is_index(&fetched(
            OCI_IMAGE_MEDIA_TYPE,
            r#"{"manifests": []}"#
        )));
        assert!(!is_index(&fetched(
            "",
            r#"{"schemaVersion": 2, "layers": []}"#
        )));
    }

    #[test]
    fn manifest_becomes_descriptors() {
        let body = format!(
            r#"{{"schemaVersion": 2, "mediaType": "{OCI_IMAGE_MEDIA_TYPE}",
               "config": {{"mediaType": "c", "digest": "sha256:{c}", "size": 7}},
               "layers": [{{"mediaType": "l", "digest": "sha256:{l}", "size": 9,
                            "annotations": {{"containerd.io/snapshot/stargz/toc.digest": "x"}}}}]}}"#,
            c = "c".repeat(64),
            l = "d".repeat(64)
        );
        let repo = parse_reference("h/x").expect("ref");
        let r = image(fetched("", &body), None, &repo).expect("parses");
        assert_eq!(r.media_type, OCI_IMAGE_MEDIA_TYPE);
        assert_eq!(r.config.size, 7);
        assert_eq!(r.layers.len(), 1);
        assert_eq!(r.layers[0].annotations.len(), 1);
        assert_eq!(r.manifest_digest, sha256(body.as_bytes()).to_string());

        let negative = body.replace("\"size\": 9", "\"size\": -1");
        let e = image(fetched("", &negative), None, &repo).expect_err("negative size");
        assert!(e.to_string().contains("size -1"), "{e}");
        let e = image(
            fetched(
                "application/vnd.docker.distribution.manifest.v1+prettyjws",
                "{}",
            ),
            None,
            &repo,
        )
        .expect_err("schema 1");
        assert!(e.to_string().contains("schema 1"), "{e}");
        let oci =
            image(fetched(OCI_IMAGE_MEDIA_TYPE, &body), None, &repo).expect("OCI content type");
        assert_eq!(oci.layers.len(), 1);
    }
}
