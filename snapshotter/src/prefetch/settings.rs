//! The `[prefetch]` and `[predictor]` config tables: as written ([`RawPrefetch`],
//! [`RawPredictor`]) and validated ([`PrefetchSettings`], [`PredictorSettings`]), with errors
//! that name the key, and [`ModelKind`]: which models `[predictor] models` selects. Documented in
//! `docs/configuration.md` and `systemd/config.toml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, in_range, invalid, probability};

/// The `[prefetch]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrefetch {
    /// Prefetch predicted chunks of lazy layers.
    pub enabled: Option<bool>,
    /// Worker threads (and so fetches in flight at most).
    pub workers: Option<i64>,
    /// Prefetch bandwidth bound, MiB/s (0: none).
    pub max_bandwidth_mib_s: Option<i64>,
    /// Queued chunks at most.
    pub queue_max: Option<i64>,
    /// Starting probability threshold.
    pub threshold: Option<f64>,
    /// Lowest the threshold adapts to.
    pub threshold_min: Option<f64>,
    /// Highest the threshold adapts to.
    pub threshold_max: Option<f64>,
    /// Milliseconds between adaptations.
    pub adapt_interval_ms: Option<i64>,
}

/// The `[predictor]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPredictor {
    /// The LSTM's model directory (`""`: none; unset: `<root>/models/current`).
    pub model_dir: Option<PathBuf>,
    /// ONNX Runtime's library (`""`: `$AUGUR_ORT_LIB`, else the default path).
    pub onnxruntime_library: Option<PathBuf>,
    /// The models to run (`replay`, `markov`, `continuation`, `lstm`).
    pub models: Option<Vec<String>>,
}

/// A model the daemon's predictor can run; the order of the variants is the order the
/// ensemble's members are built in (it names the saved state file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ModelKind {
    /// Record-and-replay.
    Replay,
    /// The online Markov model.
    Markov,
    /// The rest of a multi-chunk file a run has begun (from the layers' TOCs).
    Continuation,
    /// The ONNX LSTM (only when `model_dir` validates).
    Lstm,
}

impl ModelKind {
    /// Every model, in member order (the default selection).
    pub const ALL: [ModelKind; 4] = [
        ModelKind::Replay,
        ModelKind::Markov,
        ModelKind::Continuation,
        ModelKind::Lstm,
    ];

    /// The name in the config (and the model's [`augur_predictor::Predictor::name`]).
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Replay => "replay",
            ModelKind::Markov => "markov",
            ModelKind::Continuation => "continuation",
            ModelKind::Lstm => "lstm",
        }
    }

    /// The model called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<ModelKind> {
        ModelKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Parses a list of model names (`key` names the setting in errors): at least one, each
/// known; returned in member order without repeats.
pub fn parse_models<S: AsRef<str>>(
    key: &'static str,
    names: &[S],
) -> Result<Vec<ModelKind>, ConfigError> {
    let all = || {
        ModelKind::ALL
            .map(|k| format!("\"{}\"", k.name()))
            .join(", ")
    };
    if names.is_empty() {
        return Err(invalid(
            key,
            "[]".into(),
            format!("name at least one model of {}", all()),
        ));
    }
    let mut kinds = Vec::with_capacity(names.len());
    for n in names {
        let n = n.as_ref();
        let kind = ModelKind::from_name(n).ok_or_else(|| {
            invalid(
                key,
                format!("\"{n}\""),
                format!("unknown model; choose from {}", all()),
            )
        })?;
        kinds.push(kind);
    }
    kinds.sort();
    kinds.dedup();
    Ok(kinds)
}

/// Validated `[prefetch]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefetchSettings {
    /// Prefetch at all.
    pub enabled: bool,
    /// Worker threads.
    pub workers: usize,
    /// Bytes per second at most (0: unbounded).
    pub max_bandwidth: u64,
    /// Queue length at most.
    pub queue_max: usize,
    /// Starting threshold.
    pub threshold: f32,
    /// Lower bound of the threshold.
    pub threshold_min: f32,
    /// Upper bound of the threshold.
    pub threshold_max: f32,
    /// Time between adaptations.
    pub adapt_interval: Duration,
}

/// Validated `[predictor]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictorSettings {
    /// The LSTM's model directory, if any.
    pub model_dir: Option<PathBuf>,
    /// Whether `model_dir` is the default place (`<root>/models/current`, see
    /// [`default_model_dir`]), unset or written out: a node without an installed model is
    /// normal there, not worth a warning.
    pub model_dir_is_default: bool,
    /// ONNX Runtime's library, if set (else `$AUGUR_ORT_LIB` or the default).
    pub onnxruntime: Option<PathBuf>,
    /// Where learned state is saved: `<root>/predictor`.
    pub state_dir: PathBuf,
    /// The models selected, in member order (the LSTM only runs if `model_dir` validates).
    pub models: Vec<ModelKind>,
}

impl RawPrefetch {
    /// Validates the table.
    pub fn validate(self) -> Result<PrefetchSettings, ConfigError> {
        let threshold_min = probability("prefetch.threshold_min", self.threshold_min, 0.05)?;
        let threshold_max = probability("prefetch.threshold_max", self.threshold_max, 0.9)?;
        let threshold = probability("prefetch.threshold", self.threshold, 0.5)?;
        if threshold_min > threshold_max {
            return Err(invalid(
                "prefetch.threshold_min",
                threshold_min.to_string(),
                format!("must not be above prefetch.threshold_max ({threshold_max})"),
            ));
        }
        if !(threshold_min..=threshold_max).contains(&threshold) {
            return Err(invalid(
                "prefetch.threshold",
                threshold.to_string(),
                format!(
                    "must be within prefetch.threshold_min ({threshold_min}) and \
                     prefetch.threshold_max ({threshold_max})"
                ),
            ));
        }
        Ok(PrefetchSettings {
            enabled: self.enabled.unwrap_or(true),
            workers: in_range("prefetch.workers", self.workers, 2, 1, 32)? as usize,
            max_bandwidth: in_range(
                "prefetch.max_bandwidth_mib_s",
                self.max_bandwidth_mib_s,
                50,
                0,
                100_000,
            )? << 20,
            queue_max: in_range("prefetch.queue_max", self.queue_max, 4096, 1, 1 << 20)? as usize,
            threshold,
            threshold_min,
            threshold_max,
            adapt_interval: Duration::from_millis(in_range(
                "prefetch.adapt_interval_ms",
                self.adapt_interval_ms,
                2000,
                100,
                3_600_000,
            )?),
        })
    }
}

/// Where a node's model lives when `predictor.model_dir` is not set: the `current` link of
/// `<root>/models/`, which `onnx-models/install.sh` and `retrain.sh` switch (decision 0020).
pub fn default_model_dir(root: &Path) -> PathBuf {
    root.join("models").join("current")
}

impl RawPredictor {
    /// Validates the table; state lives under `root`.
    pub fn validate(self, root: &Path) -> Result<PredictorSettings, ConfigError> {
        let path = |key: &'static str, p: Option<PathBuf>| match p {
            Some(p) if p.as_os_str().is_empty() => Ok(None),
            Some(p) if p.is_absolute() => Ok(Some(p)),
            Some(p) => Err(invalid(
                key,
                p.display().to_string(),
                "must be an absolute path, or \"\"".into(),
            )),
            None => Ok(None),
        };
        let model_dir = match self.model_dir {
            None => Some(default_model_dir(root)),
            set => path("predictor.model_dir", set)?,
        };
        let model_dir_is_default = model_dir.as_deref() == Some(&*default_model_dir(root));
        Ok(PredictorSettings {
            model_dir,
            model_dir_is_default,
            onnxruntime: path("predictor.onnxruntime_library", self.onnxruntime_library)?,
            state_dir: root.join("predictor"),
            models: match &self.models {
                None => ModelKind::ALL.to_vec(),
                Some(names) => parse_models("predictor.models", names)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_dir_defaults_to_the_roots_current_link_and_empty_turns_it_off() {
        let root = Path::new("/r");
        let v = |dir: Option<&str>| {
            let raw = RawPredictor {
                model_dir: dir.map(PathBuf::from),
                onnxruntime_library: None,
                models: None,
            };
            let s = raw.validate(root).unwrap();
            (s.model_dir, s.model_dir_is_default)
        };
        let current = Some(PathBuf::from("/r/models/current"));
        assert_eq!(v(None), (current.clone(), true));
        assert_eq!(v(Some("/r/models/current")), (current, true));
        assert_eq!(v(Some("")), (None, false));
        assert_eq!(v(Some("/m")), (Some(PathBuf::from("/m")), false));
    }

    fn models(text: &str) -> Result<Vec<ModelKind>, ConfigError> {
        let raw: RawPredictor = toml::from_str(text).expect("parses");
        raw.validate(Path::new("/r")).map(|s| s.models)
    }

    #[test]
    fn every_model_by_default() {
        assert_eq!(models("").unwrap(), ModelKind::ALL.to_vec());
    }

    #[test]
    fn selection_is_kept_in_member_order_without_repeats() {
        assert_eq!(
            models("models = [\"markov\"]").unwrap(),
            vec![ModelKind::Markov]
        );
        assert_eq!(
            models("models = [\"lstm\", \"replay\", \"lstm\", \"continuation\"]").unwrap(),
            vec![ModelKind::Replay, ModelKind::Continuation, ModelKind::Lstm]
        );
    }

    #[test]
    fn unknown_names_and_an_empty_list_are_errors_naming_the_key() {
        for text in ["models = []", "models = [\"replay\", \"lsmt\"]"] {
            match models(text) {
                Err(ConfigError::Invalid { key, rule, .. }) => {
                    assert_eq!(key, "predictor.models", "{text}");
                    assert!(rule.contains("\"markov\""), "{text}: {rule}");
                }
                other => panic!("{text}: expected an error, got {other:?}"),
            }
        }
    }
}
