//! Reading the source image: from a registry through [`crate::registry::Registry`], or from an
//! OCI layout on disk. Both hand out manifests and configs verified against their digests; layer
//! blobs are streamed by `layer.rs`, which verifies them as it converts.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::stream::BoxStream;

use super::ConvertError;
use super::image::is_index;
use super::layout::Layout;
use crate::registry::{Registry, RegistryError};

/// Manifests and indexes larger than this are refused (the distribution spec suggests 4 MiB).
const MAX_MANIFEST: u64 = 4 << 20;
/// Configs larger than this are refused (real ones are a few KiB).
pub(crate) const MAX_CONFIG: u64 = 64 << 20;

/// A manifest or index.
#[derive(Debug, Clone)]
pub(crate) struct Doc {
    pub media_type: String,
    pub index: bool,
    pub digest: String,
    pub bytes: Bytes,
}

/// Where the image is read from.
#[derive(Debug)]
pub(crate) enum Source {
    Registry {
        client: Registry,
        reference: String,
    },
    Layout {
        layout: Layout,
        tag: Option<String>,
        display: String,
    },
}

impl Source {
    /// How the source is shown in messages.
    pub(crate) fn name(&self) -> &str {
        match self {
            Source::Registry { reference, .. } => reference,
            Source::Layout { display, .. } => display,
        }
    }

    fn registry_error(&self, doing: &str) -> impl FnOnce(RegistryError) -> ConvertError {
        ConvertError::registry(format!("{doing} from SRC {}", self.name()))
    }

    /// The manifest or index SRC names.
    pub(crate) async fn top(&self) -> Result<Doc, ConvertError> {
        match self {
            Source::Registry { client, reference } => {
                let m = client
                    .manifest(reference, None)
                    .await
                    .map_err(self.registry_error("reading the manifest"))?;
                Ok(Doc {
                    media_type: m.media_type,
                    index: m.index,
                    digest: m.digest,
                    bytes: m.bytes,
                })
            }
            Source::Layout { layout, tag, .. } => {
                let (layout, tag) = (layout.clone(), tag.clone());
                blocking(move || {
                    let entry = layout.find(tag.as_deref())?;
                    let bytes = layout.read_blob(&entry.digest, MAX_MANIFEST)?;
                    Ok(doc(entry.media_type, entry.digest, bytes))
                })
                .await
            }
        }
    }

    /// The manifest `digest` (a member of an index), verified.
    pub(crate) async fn manifest(&self, digest: &str) -> Result<Doc, ConvertError> {
        match self {
            Source::Registry { client, reference } => {
                let m = client
                    .manifest(reference, Some(digest))
                    .await
                    .map_err(self.registry_error(&format!("reading manifest {digest}")))?;
                Ok(Doc {
                    media_type: m.media_type,
                    index: m.index,
                    digest: m.digest,
                    bytes: m.bytes,
                })
            }
            Source::Layout { layout, .. } => {
                let (layout, digest) = (layout.clone(), digest.to_owned());
                blocking(move || {
                    let bytes = layout.read_blob(&digest, MAX_MANIFEST)?;
                    Ok(doc(String::new(), digest, bytes))
                })
                .await
            }
        }
    }

    /// A small blob (the config), verified.
    pub(crate) async fn small_blob(&self, digest: &str, size: u64) -> Result<Bytes, ConvertError> {
        if size > MAX_CONFIG {
            return Err(ConvertError::Unsupported {
                what: "config",
                digest: digest.to_owned(),
                reason: format!("is {size} bytes, over the {MAX_CONFIG}-byte limit"),
            });
        }
        match self {
            Source::Registry { client, reference } => {
                let mut out = Vec::new();
                client
                    .pull_blob(reference, digest, &mut out)
                    .await
                    .map_err(self.registry_error(&format!("reading blob {digest}")))?;
                Ok(Bytes::from(out))
            }
            Source::Layout { layout, .. } => {
                let (layout, digest) = (layout.clone(), digest.to_owned());
                blocking(move || layout.read_blob(&digest, MAX_CONFIG).map(Bytes::from)).await
            }
        }
    }

    /// The last `n` bytes of a blob of `size` bytes (to look for an eStargz footer).
    pub(crate) async fn tail(
        &self,
        digest: &str,
        size: u64,
        n: u64,
    ) -> Result<Bytes, ConvertError> {
        let n = n.min(size);
        match self {
            Source::Registry { client, reference } => client
                .read_range(reference, digest, size - n, n)
                .await
                .map_err(self.registry_error(&format!("reading the end of layer {digest}"))),
            Source::Layout { layout, .. } => {
                let path = layout.blob_path(digest)?;
                blocking(move || {
                    let mut buf = vec![0; n as usize];
                    std::fs::File::open(&path)
                        .and_then(|mut f| {
                            f.seek(SeekFrom::Start(size - n))?;
                            f.read_exact(&mut buf)
                        })
                        .map_err(ConvertError::io("cannot read", &path))?;
                    Ok(Bytes::from(buf))
                })
                .await
            }
        }
    }

    /// How to read the layer blob `digest`: a layout's file directly, or from the registry.
    pub(crate) fn blob(&self, digest: &str) -> Result<Blob<'_>, ConvertError> {
        match self {
            Source::Layout { layout, .. } => layout.blob_path(digest).map(Blob::File),
            Source::Registry { client, reference } => Ok(Blob::Remote(Remote {
                client,
                reference,
                digest: digest.to_owned(),
            })),
        }
    }
}

/// Where a layer blob is read from.
#[derive(Debug)]
pub(crate) enum Blob<'a> {
    /// A file of an OCI layout (verified while it is read).
    File(PathBuf),
    /// A blob in a registry.
    Remote(Remote<'a>),
}

/// A blob in the source registry.
#[derive(Debug)]
pub(crate) struct Remote<'a> {
    client: &'a Registry,
    reference: &'a str,
    digest: String,
}

impl Remote<'_> {
    fn error(&self, doing: &str) -> impl FnOnce(RegistryError) -> ConvertError {
        ConvertError::registry(format!(
            "{doing} layer {} from SRC {}",
            self.digest, self.reference
        ))
    }

    /// The blob as a stream (the request is made, and retried, here; a failure once it runs
    /// ends the stream with an error).
    pub(crate) async fn stream(
        &self,
    ) -> Result<BoxStream<'static, Result<Bytes, RegistryError>>, ConvertError> {
        self.client
            .stream_blob(self.reference, &self.digest, 0)
            .await
            .map_err(self.error("reading"))
    }

    /// The blob, verified, into the file `to`.
    pub(crate) async fn download(&self, to: &Path) -> Result<(), ConvertError> {
        let mut file = tokio::fs::File::create(to)
            .await
            .map_err(ConvertError::io("cannot create", to))?;
        self.client
            .pull_blob(self.reference, &self.digest, &mut file)
            .await
            .map_err(self.error("copying"))
    }

    /// A stream error as the conversion's error.
    pub(crate) fn stream_error(&self, e: RegistryError) -> ConvertError {
        self.error("reading")(e)
    }
}

fn doc(declared: String, digest: String, bytes: Vec<u8>) -> Doc {
    #[derive(serde::Deserialize)]
    struct Shape {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    let own = serde_json::from_slice::<Shape>(&bytes)
        .ok()
        .and_then(|s| s.media_type)
        .filter(|m| !m.is_empty());
    let media_type = own.unwrap_or(declared);
    Doc {
        index: is_index(&media_type, &bytes),
        media_type,
        digest,
        bytes: Bytes::from(bytes),
    }
}

/// Runs file work on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> Result<T, ConvertError> + Send + 'static,
) -> Result<T, ConvertError> {
    match tokio::task::spawn_blocking(job).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(ConvertError::Interrupted),
    }
}
