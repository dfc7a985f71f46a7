//! The conversion layer's one error type.
//!
//! The person reading these ran `augurctl image convert SRC DST` and needs to know which side
//! failed, what it was doing, and what to change: every variant names the image, layer or file
//! concerned, and registry failures keep the registry's own message (host, credentials tried,
//! advice) as their source.

use std::path::PathBuf;

use crate::estargz::FormatError;
use crate::registry::RegistryError;

/// Everything `augurctl image convert` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// SRC or DST does not parse.
    #[error("{which} {input:?}: {reason}")]
    Location {
        /// `SRC` or `DST`.
        which: &'static str,
        /// The argument as given.
        input: String,
        /// What is wrong, with the accepted forms.
        reason: String,
    },
    /// The options cannot be used together or are out of range.
    #[error("{0}")]
    Options(String),
    /// A registry request failed; `context` says which side and what was being done.
    #[error("{context}")]
    Registry {
        /// e.g. `reading SRC 127.0.0.1:5000/busybox:latest`.
        context: String,
        /// The registry client's error (host, cause, advice).
        #[source]
        source: RegistryError,
    },
    /// An OCI layout is missing, incomplete, or does not hold the tag asked for.
    #[error("OCI layout {}: {reason}", dir.display())]
    Layout {
        /// The layout directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A local file (layout, temporary file) cannot be read or written.
    #[error("{what} {}", path.display())]
    Io {
        /// e.g. `cannot write`.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A layer's media type is one this build cannot convert.
    #[error("layer {digest} has media type {media_type}: {reason}")]
    UnsupportedMediaType {
        /// The layer's digest.
        digest: String,
        /// Its media type.
        media_type: String,
        /// Why, and what to do instead.
        reason: String,
    },
    /// A manifest or index is of a kind that cannot be converted.
    #[error("{what} {digest}: {reason}")]
    Unsupported {
        /// `manifest`, `index`, `config`.
        what: &'static str,
        /// Its digest (or the reference).
        digest: String,
        /// Why.
        reason: String,
    },
    /// No manifest of the index fits the platform asked for.
    #[error(
        "{image} has no manifest for platform {wanted} (it offers {offered}); pick one with \
         --platform or convert them all with --all-platforms"
    )]
    Platform {
        /// The source image.
        image: String,
        /// The platform asked for.
        wanted: String,
        /// What the index offers.
        offered: String,
    },
    /// Content does not match its digest or does not decode as its media type says.
    #[error("{what}: {detail}")]
    Corrupt {
        /// e.g. `layer sha256:… of SRC`.
        what: String,
        /// What was found.
        detail: String,
    },
    /// The eStargz writer refused a layer (an entry eStargz cannot hold, a broken tar).
    #[error("cannot convert layer {digest} ({media_type})")]
    Format {
        /// The layer's digest.
        digest: String,
        /// Its media type.
        media_type: String,
        /// The writer's error.
        #[source]
        source: FormatError,
    },
    /// SIGINT or SIGTERM arrived; everything temporary was removed.
    #[error("interrupted; temporary files removed, nothing was tagged")]
    Interrupted,
}

impl ConvertError {
    /// A [`ConvertError::Registry`] with `context`.
    pub(crate) fn registry(context: impl Into<String>) -> impl FnOnce(RegistryError) -> Self {
        let context = context.into();
        move |source| ConvertError::Registry { context, source }
    }

    /// A [`ConvertError::Io`] about `path`.
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ConvertError::Io { what, path, source }
    }
}
