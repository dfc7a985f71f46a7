//! ONNX Runtime, loaded once per process with `dlopen` (`ort`'s `load-dynamic`) from a path the
//! caller names: the daemon's configuration, `AUGUR_ORT_LIB` in tests and tools.
//!
//! A missing, foreign or too old library is a [`LstmError`], never a panic or an abort: the
//! file is checked before `dlopen`, `ort::init_from` returns an error for a library that is not
//! ONNX Runtime or older than the API this build uses (it reads the version before creating
//! anything), and a panic inside the loader is caught. ONNX Runtime allows one environment per
//! process, so the first library that loads stays; a failed load can be retried (after the
//! operator installs the library, a model reload tries again).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;

use super::error::LstmError;

/// The ONNX Runtime release this build is made for (`ort`'s `api-31` feature).
pub const ORT_VERSION: &str = "1.31.1";
/// The environment variable tests and tools read the library's path from.
pub const ORT_LIB_ENV: &str = "AUGUR_ORT_LIB";
/// Where a node operator puts the library (`docs/operations.md`).
pub const DEFAULT_ORT_LIB: &str = "/usr/local/lib/augur/libonnxruntime.so.1.31.1";
/// The library's file name.
pub const ORT_LIB_FILE: &str = "libonnxruntime.so.1.31.1";
/// Where this repository's scripts cache what tests need, unless `AUGUR_CACHE` says otherwise
/// ([`test_cache`]).
pub const TEST_CACHE: &str = "/var/cache/augur-tests";

static LOADED: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

/// The library path from `AUGUR_ORT_LIB`, else [`DEFAULT_ORT_LIB`].
pub fn library_from_env() -> PathBuf {
    std::env::var_os(ORT_LIB_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ORT_LIB))
}

/// The library this repository's tests, benchmarks and tools load: `AUGUR_ORT_LIB`, else the
/// one `onnx-models/setup.sh` caches under `$AUGUR_CACHE/ort` ([`TEST_CACHE`] by default).
/// The daemon never uses it (it reads `[predictor] onnxruntime_library`).
pub fn test_library() -> PathBuf {
    std::env::var_os(ORT_LIB_ENV).map_or_else(
        || test_cache().join("ort").join(ORT_LIB_FILE),
        PathBuf::from,
    )
}

/// Where this repository's scripts cache what tests need (the venv, ONNX Runtime, images):
/// `$AUGUR_CACHE`, else [`TEST_CACHE`].
pub fn test_cache() -> PathBuf {
    std::env::var_os("AUGUR_CACHE").map_or_else(|| PathBuf::from(TEST_CACHE), PathBuf::from)
}

/// The process's ONNX Runtime environment, loading the library at `path` the first time.
pub fn environment(path: &Path) -> Result<Environment, LstmError> {
    let missing = || LstmError::LibraryMissing {
        path: path.to_owned(),
        version: ORT_VERSION,
    };
    // Absolute and existing: ort resolves relative paths against the executable and panics
    // if it cannot find that.
    let path = std::fs::canonicalize(path).map_err(|_| missing())?;
    if !path.is_file() {
        return Err(missing());
    }
    let mut loaded = LOADED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((current, env)) = loaded.as_ref() {
        if *current == path {
            return Ok(env.clone());
        }
        return Err(LstmError::AlreadyLoaded {
            loaded: current.clone(),
            requested: path,
        });
    }
    let library_error = |reason: String| LstmError::Library {
        path: path.clone(),
        reason,
        version: ORT_VERSION,
    };
    let built = catch_unwind(AssertUnwindSafe(|| {
        ort::init_from(&path)
            .map_err(|e| e.to_string())?
            .with_name("augur-lstm")
            .build()
            .map_err(|e| e.to_string())
    }))
    .map_err(|panic| library_error(panic_text(&panic)))?
    .map_err(library_error)?;
    *loaded = Some((path, built.clone()));
    Ok(built)
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "the loader panicked".to_owned())
}
