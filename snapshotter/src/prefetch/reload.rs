//! Model reload while the daemon runs (`POST /models/reload`, `augurctl model reload`): a new
//! LSTM model directory is validated (its files, ONNX Runtime loading it, its golden cases) and
//! only then served; if anything fails the current model stays and the error names the check.
//!
//! If the daemon started without an LSTM (no `model_dir`, or the model did not load), the
//! first successful reload adds it to the running ensemble (see [`super::predict`]): no
//! restart is needed either way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use augur_predictor::lstm::runtime;
use augur_predictor::lstm::{Engine, LstmError, ModelInfo};
use augur_predictor::{Lstm, LstmConfig};

use super::Prefetcher;
use super::predict::Event;

/// Why a model was not loaded (the running one, if any, stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// No directory given and `[predictor] model_dir` is not set.
    #[error(
        "no model directory: give one (augurctl model reload --dir DIR) or set \
         predictor.model_dir in the config"
    )]
    NoDirectory,
    /// `[predictor] models` does not select the LSTM.
    #[error("the LSTM is not among predictor.models; add \"lstm\" to it and restart the daemon")]
    NotSelected,
    /// The directory is not absolute (the daemon's working directory is not the caller's).
    #[error("model directory {0} is not an absolute path")]
    Relative(PathBuf),
    /// The model failed a check, or ONNX Runtime failed; the message names which.
    #[error("{0} (the current model is kept)")]
    Invalid(#[from] LstmError),
    /// The predictor thread is gone (the daemon is stopping).
    #[error("the predictor thread has stopped")]
    Stopped,
}

impl ReloadError {
    /// Whether the caller's input is at fault (a 4xx), not the daemon (a 5xx).
    pub fn is_input(&self) -> bool {
        match self {
            ReloadError::NoDirectory | ReloadError::NotSelected | ReloadError::Relative(_) => true,
            ReloadError::Invalid(e) => !matches!(
                e,
                LstmError::LibraryMissing { .. }
                    | LstmError::Library { .. }
                    | LstmError::EngineStopped
            ),
            ReloadError::Stopped => false,
        }
    }
}

impl Prefetcher {
    /// The LSTM's engine, if the LSTM is among the models.
    pub fn lstm_engine(&self) -> Option<Arc<Engine>> {
        self.inner
            .lstm
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The LSTM model served now, if any.
    pub fn model(&self) -> Option<ModelInfo> {
        self.lstm_engine().map(|e| e.model())
    }

    /// Validates the model in `dir` (default: `[predictor] model_dir`) and serves it from the
    /// next prediction on, adding the LSTM to the models if it was not among them. Blocking
    /// (loads ONNX Runtime sessions): call it on the blocking pool.
    pub fn reload_model(&self, dir: Option<&Path>) -> Result<ModelInfo, ReloadError> {
        let settings = &self.inner.predictor;
        if !settings.models.contains(&super::settings::ModelKind::Lstm) {
            return Err(ReloadError::NotSelected);
        }
        let dir = dir
            .or(settings.model_dir.as_deref())
            .ok_or(ReloadError::NoDirectory)?;
        if !dir.is_absolute() {
            return Err(ReloadError::Relative(dir.to_path_buf()));
        }
        let library = settings
            .onnxruntime
            .clone()
            .unwrap_or_else(runtime::library_from_env);
        // One reload at a time: two first loads must not both add an LSTM. (A separate lock:
        // stats and scrapes read the engine meanwhile.)
        let _one = self
            .inner
            .reloading
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let info = match self.lstm_engine() {
            Some(engine) => engine.reload(dir, &library)?,
            None => {
                let lstm = Lstm::load(dir, &library, LstmConfig::default())?;
                let engine = Arc::clone(lstm.engine());
                engine.set_step_observer(self.inner.inference.observer());
                let (ack, added) = std::sync::mpsc::sync_channel(1);
                self.inner
                    .events
                    .send(Event::AddLstm(Box::new(lstm), ack))
                    .map_err(|_| ReloadError::Stopped)?;
                added.recv().map_err(|_| ReloadError::Stopped)?;
                let info = engine.model();
                *self.inner.lstm.lock().unwrap_or_else(|p| p.into_inner()) = Some(engine);
                info
            }
        };
        tracing::info!(
            dir = %info.dir.display(),
            label = %info.label,
            created = %info.created,
            vocab = info.vocab,
            "LSTM model loaded while running"
        );
        Ok(info)
    }

    /// `run`'s latest predictions, best first (`None`: none made for it yet).
    pub fn predictions(
        &self,
        run: augur_predictor::RunId,
    ) -> Option<Vec<augur_predictor::Prediction>> {
        self.inner.shared.predictions(run)
    }
}
