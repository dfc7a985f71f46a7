//! The registry layer's one error type.
//!
//! Callers branch on the variant: the FUSE read path turns [`RegistryError::Unreachable`] into
//! `EIO` and retries later, the snapshot layer falls back to an ordinary pull on
//! [`RegistryError::NotFound`], and everything else is reported to the person running `ctr`.
//! So every message names the host, repository or file concerned and says what to do.
//!
//! The type is `Clone` (causes are kept as text) because one failed request is shared by every
//! caller that was waiting on it (see `ranges::SingleFlight`).

use std::path::PathBuf;
use std::sync::Arc;

/// Everything a registry operation can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The manifest, tag or blob does not exist on any endpoint that was asked.
    #[error("{what} not found in {repository} (asked {host}); check the name, tag or digest")]
    NotFound {
        /// What was looked up, e.g. `blob sha256:…` or `manifest latest`.
        what: String,
        /// `registry/repository` as in the reference.
        repository: String,
        /// The endpoint that answered last (the origin unless it was unreachable).
        host: String,
    },
    /// The registry (or its token server) refused the request.
    #[error(
        "registry {host} refused access to {repository} ({reason}); credentials tried: \
         {credentials}; log in with `docker login {host}` or fix its entry in config.json"
    )]
    Unauthorized {
        /// The endpoint that refused.
        host: String,
        /// `registry/repository` as in the reference.
        repository: String,
        /// Where credentials were looked for and what was found.
        credentials: String,
        /// What the registry answered.
        reason: String,
    },
    /// No endpoint answered usefully within the retries (connection errors, timeouts, 5xx).
    #[error(
        "registry {host} unreachable after {attempts} attempt(s): {last_error}; check that it \
         runs and is reachable from this host, or configure a mirror in hosts.toml"
    )]
    Unreachable {
        /// The last endpoint tried.
        host: String,
        /// How many rounds over the endpoints were made.
        attempts: u32,
        /// The last failure seen.
        last_error: String,
    },
    /// The registry answered in a way the distribution protocol does not allow: an unexpected
    /// status, a short or long body, a wrong `Content-Range`, content that does not match its
    /// digest.
    #[error("registry {host}: {detail}")]
    Protocol {
        /// The endpoint that answered.
        host: String,
        /// What was wrong.
        detail: String,
    },
    /// An image reference or digest given by the caller does not parse.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The string as given.
        reference: String,
        /// Why it was refused.
        reason: String,
    },
    /// A configuration file (hosts.toml, a CA or client certificate, config.json) is unusable.
    #[error("{}: {key}: {reason}", file.display())]
    Config {
        /// The file (or directory) concerned.
        file: PathBuf,
        /// The key inside it, e.g. `server` or `host."https://mirror:5000".ca`.
        key: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A local file to upload cannot be read.
    #[error("cannot read {}", path.display())]
    LocalFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The destination of [`super::Registry::pull_blob`] failed.
    #[error("cannot write blob {digest}")]
    Write {
        /// The blob being written.
        digest: String,
        /// The writer's error.
        #[source]
        source: Arc<std::io::Error>,
    },
}

impl RegistryError {
    /// Its kind, as the `kind` label of `augur_registry_errors_total` spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            RegistryError::NotFound { .. } => "not_found",
            RegistryError::Unauthorized { .. } => "unauthorized",
            RegistryError::Unreachable { .. } => "unreachable",
            RegistryError::Protocol { .. } => "protocol",
            RegistryError::InvalidReference { .. } => "invalid_reference",
            RegistryError::Config { .. } => "config",
            RegistryError::LocalFile { .. } => "local_file",
            RegistryError::Write { .. } => "write",
        }
    }

    /// True when a later retry may succeed (the registry was unreachable, not wrong).
    pub fn is_transient(&self) -> bool {
        matches!(self, RegistryError::Unreachable { .. })
    }

    /// A [`RegistryError::Protocol`] for `host`.
    pub(crate) fn protocol(host: &str, detail: impl Into<String>) -> RegistryError {
        RegistryError::Protocol {
            host: host.to_owned(),
            detail: detail.into(),
        }
    }

    /// A [`RegistryError::Config`] about `key` in `file`.
    pub(crate) fn config(
        file: impl Into<PathBuf>,
        key: impl Into<String>,
        reason: impl Into<String>,
    ) -> RegistryError {
        RegistryError::Config {
            file: file.into(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}
