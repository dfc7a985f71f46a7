//! Writing the converted image: blobs, then manifests, then the tag, in that order, so that a tag
//! never names content that is not there. To a registry through [`crate::registry::Registry`]
//! (blobs it has already are not sent again), or into an OCI layout directory.

use std::path::Path;

use bytes::Bytes;

use super::ConvertError;
use super::layout::{Entry, Layout};
use super::scratch::Scratch;
use super::source::{Doc, blocking};
use crate::registry::{Registry, RegistryError, SendProgress, repository_of};

/// Where the converted image goes.
#[derive(Debug)]
pub(crate) enum Target {
    Registry {
        client: Registry,
        reference: String,
    },
    Layout {
        layout: Layout,
        tag: String,
        display: String,
    },
}

/// Whether a blob file may be moved into place (a temporary file) or must be copied (a source
/// layout's own blob).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileUse {
    Move,
    Copy,
}

impl Target {
    /// How the destination is shown in messages.
    pub(crate) fn name(&self) -> &str {
        match self {
            Target::Registry { reference, .. } => reference,
            Target::Layout { display, .. } => display,
        }
    }

    fn registry_error(&self, doing: String) -> impl FnOnce(RegistryError) -> ConvertError {
        ConvertError::registry(format!("{doing} to DST {}", self.name()))
    }

    /// Fails early if the destination registry cannot be reached or refuses access, before any
    /// layer is converted (`probe` is any digest; whether the registry has it does not matter).
    pub(crate) async fn check(&self, probe: &str) -> Result<(), ConvertError> {
        if let Target::Registry { client, reference } = self {
            match client.blob_size(reference, probe).await {
                Ok(_) | Err(RegistryError::NotFound { .. }) => {}
                Err(e) => {
                    return Err(ConvertError::registry(format!("reaching DST {reference}"))(
                        e,
                    ));
                }
            }
        }
        Ok(())
    }

    /// True if the destination has blob `digest` already.
    pub(crate) async fn has_blob(&self, digest: &str) -> Result<bool, ConvertError> {
        match self {
            Target::Registry { client, reference } => {
                match client.blob_size(reference, digest).await {
                    Ok(_) => Ok(true),
                    Err(RegistryError::NotFound { .. }) => Ok(false),
                    Err(e) => Err(self.registry_error(format!("checking for blob {digest}"))(
                        e,
                    )),
                }
            }
            Target::Layout { layout, .. } => Ok(layout.blob_path(digest)?.exists()),
        }
    }

    /// Stores the file `path` (`size` bytes) as blob `digest`; false if it was there already.
    pub(crate) async fn put_file(
        &self,
        scratch: &Scratch,
        path: &Path,
        size: u64,
        digest: &str,
        how: FileUse,
        progress: SendProgress,
    ) -> Result<bool, ConvertError> {
        match self {
            Target::Registry { client, reference } => client
                .push_blob_file(reference, path, size, digest, Some(progress))
                .await
                .map_err(self.registry_error(format!("uploading blob {digest}"))),
            Target::Layout { layout, .. } => {
                if layout.blob_path(digest)?.exists() {
                    return Ok(false);
                }
                let (layout, path, digest) =
                    (layout.clone(), path.to_path_buf(), digest.to_owned());
                scratch
                    .blocking(move || {
                        match how {
                            FileUse::Move => layout.put_blob_file(&path, &digest)?,
                            FileUse::Copy => layout.copy_blob_file(&path, &digest)?,
                        }
                        progress(size);
                        Ok(true)
                    })
                    .await
            }
        }
    }

    /// Stores a small blob (a config).
    pub(crate) async fn put_bytes(&self, data: Bytes, digest: &str) -> Result<(), ConvertError> {
        match self {
            Target::Registry { client, reference } => client
                .push_blob(reference, data, digest)
                .await
                .map_err(self.registry_error(format!("uploading blob {digest}"))),
            Target::Layout { layout, .. } => {
                let (layout, digest) = (layout.clone(), digest.to_owned());
                blocking(move || layout.put_blob(&data, &digest)).await
            }
        }
    }

    /// Stores a manifest or index; with `tagged`, under DST's tag, else only by digest (the
    /// members of an index). Returns where it is now: a reference a person can pull.
    pub(crate) async fn put_manifest(
        &self,
        doc: &Doc,
        tagged: bool,
    ) -> Result<String, ConvertError> {
        match self {
            Target::Registry { client, reference } => {
                let at = if tagged {
                    reference.clone()
                } else {
                    let repo = repository_of(reference)
                        .map_err(self.registry_error("naming".to_owned()))?;
                    format!("{repo}@{}", doc.digest)
                };
                client
                    .push_manifest_bytes(&at, &doc.media_type, doc.bytes.clone())
                    .await
                    .map_err(self.registry_error(format!("storing manifest {}", doc.digest)))?;
                Ok(at)
            }
            Target::Layout {
                layout,
                tag,
                display,
            } => {
                let (layout, doc2, tag2) = (layout.clone(), doc.clone(), tag.clone());
                blocking(move || {
                    layout.put_blob(&doc2.bytes, &doc2.digest)?;
                    if tagged {
                        let entry = Entry {
                            media_type: doc2.media_type.clone(),
                            digest: doc2.digest.clone(),
                            size: doc2.bytes.len() as u64,
                        };
                        layout.tag(&entry, &tag2)?;
                    }
                    Ok(())
                })
                .await?;
                Ok(if tagged {
                    display.clone()
                } else {
                    format!("{display}@{}", doc.digest)
                })
            }
        }
    }
}
