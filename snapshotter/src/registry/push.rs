//! Pushes, for `augurctl image convert`: a blob from memory or streamed from a file (monolithic
//! upload, skipped if the registry has it) and a manifest or index. Pushes go to the endpoints with the `push` capability (the
//! registry itself unless `hosts.toml` says otherwise), with a `pull,push` token scope.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::FutureExt;
use oci_client::manifest::OciManifest;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION};
use reqwest::{Method, Response};

use super::digest::{Digest, sha256};
use super::endpoint::{Cap, Endpoint};
use super::transport::{Body, Failure, Request, SendProgress, Target};
use super::{Registry, RegistryError, Repo, parse_reference};

impl Registry {
    /// Uploads `data` as blob `digest` into the reference's repository. The data is checked
    /// against the digest first; a blob the registry already has is not sent again.
    pub async fn push_blob(
        &self,
        reference: &str,
        data: Bytes,
        digest: &str,
    ) -> Result<(), RegistryError> {
        let repo = parse_reference(reference)?;
        let digest = Digest::parse(digest)?;
        let actual = digest.of_same_kind(&data);
        if actual != digest {
            return Err(RegistryError::InvalidReference {
                reference: digest.to_string(),
                reason: format!("the data to push has digest {actual}"),
            });
        }
        let len = data.len() as u64;
        self.upload(&repo, &digest, len, Body::Bytes(data))
            .await
            .map(|_| ())
    }

    /// Uploads the file at `path` (`size` bytes, digest `digest`, both computed by the caller)
    /// as a blob, streamed from disk so that a blob of any size costs no memory. `progress` is
    /// told the bytes sent so far. Returns false if the registry had the blob already (nothing
    /// was sent). The registry checks the digest when the upload completes.
    pub async fn push_blob_file(
        &self,
        reference: &str,
        path: &Path,
        size: u64,
        digest: &str,
        progress: Option<SendProgress>,
    ) -> Result<bool, RegistryError> {
        let repo = parse_reference(reference)?;
        let digest = Digest::parse(digest)?;
        let body = Body::File {
            path: path.to_path_buf(),
            progress,
        };
        self.upload(&repo, &digest, size, body).await
    }

    /// HEAD, then a monolithic upload (POST for a location, PUT with the body) unless the blob
    /// is there already. True if it was uploaded.
    async fn upload(
        &self,
        repo: &Repo,
        digest: &Digest,
        len: u64,
        body: Body,
    ) -> Result<bool, RegistryError> {
        let eps = self.net.endpoints(repo, Cap::Push).await?;
        let exists = push_request(
            repo,
            Method::HEAD,
            Target::Api(format!("blobs/{digest}")),
            format!("blob {digest}"),
        );
        match self
            .net
            .transport
            .run(&eps, &exists, &|_, _| async { Ok(()) }.boxed())
            .await
        {
            Ok(()) => return Ok(false),
            Err(RegistryError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let start = push_request(
            repo,
            Method::POST,
            Target::Api("blobs/uploads/".to_owned()),
            "upload".to_owned(),
        );
        let (location, ep) = self
            .net
            .transport
            .run(&eps, &start, &|ep, resp| upload_location(ep, resp).boxed())
            .await?;
        let sep = if location.contains('?') { '&' } else { '?' };
        let mut put = push_request(
            repo,
            Method::PUT,
            Target::Url(format!("{location}{sep}digest={digest}")),
            format!("blob {digest}"),
        );
        put.headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        put.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
        // A large blob takes as long as it takes; each read and write is still bounded.
        put.whole_timeout = matches!(body, Body::Bytes(_));
        put.body = Some(body);
        self.net
            .transport
            .run(&[ep], &put, &|_, _| async { Ok(()) }.boxed())
            .await?;
        Ok(true)
    }

    /// Stores `manifest` (an image manifest or an index) under the reference's tag or digest and
    /// returns its digest. The blobs it names must be in the repository already.
    pub async fn push_manifest(
        &self,
        reference: &str,
        manifest: &OciManifest,
    ) -> Result<String, RegistryError> {
        let body = serde_json::to_vec(manifest).map_err(|e| RegistryError::InvalidReference {
            reference: reference.to_owned(),
            reason: format!("the manifest does not serialise: {e}"),
        })?;
        self.push_manifest_bytes(reference, manifest.content_type(), Bytes::from(body))
            .await
    }

    /// Stores the manifest or index `body`, exactly these bytes, with content type `media_type`
    /// under the reference's tag or digest; returns its digest.
    pub async fn push_manifest_bytes(
        &self,
        reference: &str,
        media_type: &str,
        body: Bytes,
    ) -> Result<String, RegistryError> {
        let repo = parse_reference(reference)?;
        let digest = sha256(&body);
        if repo.is_digest && repo.reference != digest.to_string() {
            return Err(RegistryError::InvalidReference {
                reference: reference.to_owned(),
                reason: format!("the manifest's digest is {digest}"),
            });
        }
        let eps = self.net.endpoints(&repo, Cap::Push).await?;
        let mut put = push_request(
            &repo,
            Method::PUT,
            Target::Api(format!("manifests/{}", repo.reference)),
            format!("manifest {}", repo.reference),
        );
        let content_type =
            HeaderValue::from_str(media_type).map_err(|_| RegistryError::InvalidReference {
                reference: reference.to_owned(),
                reason: format!("media type {media_type:?} is not a valid header"),
            })?;
        put.headers.insert(CONTENT_TYPE, content_type);
        put.body = Some(Body::Bytes(body));
        let expected = digest.to_string();
        let check = |ep: Arc<Endpoint>, resp: Response| {
            let expected = expected.clone();
            async move {
                let told = resp
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok());
                match told {
                    Some(d) if d != expected => Err(Failure::Final(RegistryError::protocol(
                        &ep.host,
                        format!("stored the manifest as {d}, expected {expected}"),
                    ))),
                    _ => Ok(()),
                }
            }
            .boxed()
        };
        self.net.transport.run(&eps, &put, &check).await?;
        Ok(expected)
    }
}

fn push_request(repo: &Repo, method: Method, target: Target, what: String) -> Request<'_> {
    Request {
        method,
        cap: Cap::Push,
        repository: &repo.repository,
        display: &repo.display,
        target,
        headers: HeaderMap::new(),
        body: None,
        what,
        whole_timeout: true,
    }
}

/// The absolute upload URL from a 202 to `POST blobs/uploads/`.
async fn upload_location(
    ep: Arc<Endpoint>,
    resp: Response,
) -> Result<(String, Arc<Endpoint>), Failure> {
    let location = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| resp.url().join(l).ok())
        .ok_or_else(|| {
            Failure::Final(RegistryError::protocol(
                &ep.host,
                "upload started without a usable Location",
            ))
        })?;
    Ok((location.to_string(), ep))
}
