//! Pushes, for `augurctl image convert`: a blob (monolithic upload, skipped if the registry has
//! it) and a manifest or index. Pushes go to the endpoints with the `push` capability (the
//! registry itself unless `hosts.toml` says otherwise), with a `pull,push` token scope.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::FutureExt;
use oci_client::manifest::OciManifest;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION};
use reqwest::{Method, Response};

use super::digest::{Digest, sha256};
use super::endpoint::{Cap, Endpoint};
use super::transport::{Failure, Request, Target};
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
        let eps = self.net.endpoints(&repo, Cap::Push).await?;
        let exists = push_request(
            &repo,
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
            Ok(()) => return Ok(()),
            Err(RegistryError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let start = push_request(
            &repo,
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
            &repo,
            Method::PUT,
            Target::Url(format!("{location}{sep}digest={digest}")),
            format!("blob {digest}"),
        );
        put.headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        put.body = Some(data);
        self.net
            .transport
            .run(&[ep], &put, &|_, _| async { Ok(()) }.boxed())
            .await
    }

    /// Stores `manifest` (an image manifest or an index) under the reference's tag or digest and
    /// returns its digest. The blobs it names must be in the repository already.
    pub async fn push_manifest(
        &self,
        reference: &str,
        manifest: &OciManifest,
    ) -> Result<String, RegistryError> {
        let repo = parse_reference(reference)?;
        let body = serde_json::to_vec(manifest).map_err(|e| RegistryError::InvalidReference {
            reference: reference.to_owned(),
            reason: format!("the manifest does not serialise: {e}"),
        })?;
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
        let content_type = HeaderValue::from_str(manifest.content_type()).map_err(|_| {
            RegistryError::InvalidReference {
                reference: reference.to_owned(),
                reason: format!(
                    "media type {:?} is not a valid header",
                    manifest.content_type()
                ),
            }
        })?;
        put.headers.insert(CONTENT_TYPE, content_type);
        put.body = Some(Bytes::from(body));
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
