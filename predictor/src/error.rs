//! The crate's one error type. Every variant names what a person can act on: the file and byte
//! offset of a corrupt trace, the line of a bad export, the model whose saved state is unusable.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file or stream failed.
    #[error("cannot {op} {path}")]
    Io {
        /// What was being done ("read", "create", ...).
        op: &'static str,
        /// The file (or `-` for a stream without a name).
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A binary trace file is damaged before its tail (a torn tail is not an error).
    #[error("{path}: corrupt trace at byte {offset}: {reason}; remove or move the file")]
    Corrupt {
        /// The trace file.
        path: PathBuf,
        /// Byte offset of the damaged frame or record.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// A file does not start with the trace magic, or has a version this build cannot read.
    #[error("{path}: {reason}")]
    NotATrace {
        /// The file.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
    /// A binary trace ended before its run header (the run crashed within its first accesses).
    #[error(
        "{path}: the trace has no run header (the run stopped before its first accesses were written)"
    )]
    NoHeader {
        /// The file.
        path: PathBuf,
    },
    /// A line of a JSON Lines export is malformed.
    #[error("{path}: line {line}: {reason}")]
    BadExport {
        /// The export file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A chunk digest is not `sha256:` followed by 64 lowercase hex digits.
    #[error("invalid chunk digest {0:?}: expected \"sha256:\" and 64 hex digits")]
    BadDigest(String),
    /// An in-memory trace breaks an invariant (an access names a chunk that is not in the table).
    #[error("invalid trace: {0}")]
    InvalidTrace(String),
    /// A model's saved state cannot be used (another model's, a newer format, damaged).
    #[error(
        "saved state of model {model:?} is unusable: {reason}; delete it to start from scratch"
    )]
    State {
        /// The model's name.
        model: String,
        /// Why.
        reason: String,
    },
    /// A model could not be built (for example a missing ONNX runtime).
    #[error("model {model:?} is unavailable: {reason}")]
    Model {
        /// The model's name.
        model: String,
        /// Why.
        reason: String,
    },
    /// The evaluator was given nothing to evaluate.
    #[error("{0}")]
    NothingToEvaluate(String),
}

impl Error {
    /// An I/O error with its operation and file.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
