//! The LSTM layer's error type. Each variant says what failed and what to do about it: which
//! library path, which file of a model directory, which check of the validation.

use std::path::PathBuf;

/// Why the ONNX LSTM cannot be used (the daemon then runs on the online models).
#[derive(Debug, thiserror::Error)]
pub enum LstmError {
    /// The ONNX Runtime library is not where the configuration says.
    #[error(
        "ONNX Runtime library {path} not found: install libonnxruntime.so.{version} from the onnxruntime=={version} PyPI wheel there (on a node, onnx-models/install.sh puts it in /usr/local/lib/augur/; onnx-models/setup.sh extracts it into the test cache)"
    )]
    LibraryMissing {
        /// The configured path.
        path: PathBuf,
        /// The ONNX Runtime version this build needs.
        version: &'static str,
    },
    /// The library exists but cannot be used: not ONNX Runtime, too old, or broken.
    #[error(
        "cannot use ONNX Runtime library {path}: {reason} (this build needs libonnxruntime.so.{version} from the onnxruntime=={version} wheel)"
    )]
    Library {
        /// The library.
        path: PathBuf,
        /// What ONNX Runtime or the loader said.
        reason: String,
        /// The ONNX Runtime version this build needs.
        version: &'static str,
    },
    /// ONNX Runtime is loaded once per process; another path was asked for later.
    #[error(
        "ONNX Runtime is already loaded from {loaded} in this process; {requested} can be used only after a restart"
    )]
    AlreadyLoaded {
        /// The library in use.
        loaded: PathBuf,
        /// The one asked for.
        requested: PathBuf,
    },
    /// A file of the model directory cannot be read.
    #[error("model directory: cannot read {path}: {source}")]
    ModelFile {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A model directory fails a validation check; `check` names it.
    #[error("model {dir} refused: {check}: {reason}")]
    Invalid {
        /// The model directory.
        dir: PathBuf,
        /// The check that failed (`meta.json`, `vocab.json`, `file hashes`, `graph inputs`, `golden case 2`, ...).
        check: String,
        /// What is wrong.
        reason: String,
    },
    /// ONNX Runtime failed to build a session or to run one.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// The inference thread has stopped (it panicked or was shut down).
    #[error("the LSTM inference thread has stopped")]
    EngineStopped,
}

impl LstmError {
    pub(crate) fn invalid(
        dir: impl Into<PathBuf>,
        check: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        LstmError::Invalid {
            dir: dir.into(),
            check: check.into(),
            reason: reason.into(),
        }
    }
}

impl From<ort::Error> for LstmError {
    fn from(e: ort::Error) -> Self {
        LstmError::Runtime(e.to_string())
    }
}

impl From<LstmError> for crate::Error {
    fn from(e: LstmError) -> Self {
        crate::Error::Model {
            model: "lstm".to_owned(),
            reason: e.to_string(),
        }
    }
}
