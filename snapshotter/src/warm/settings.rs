//! The `[warm]` config table: parsed with the rest of the config (unknown keys rejected),
//! validated here with errors that name the key.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, in_range, probability, secs};

/// The `[warm]` table (warming the images this node will pull next) as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWarm {
    /// Record pulls, learn, and warm predicted images.
    pub enabled: Option<bool>,
    /// Milliseconds without demand fetches before warming starts.
    pub idle_ms: Option<i64>,
    /// Images warmed per round at most.
    pub max_images: Option<i64>,
    /// Predictions below this probability are not warmed.
    pub min_probability: Option<f64>,
    /// How far ahead predictions look, seconds; also how long a warmed image is not warmed again.
    pub horizon_secs: Option<i64>,
    /// Memory for warmed TOCs, MiB.
    pub max_toc_cache_mib: Option<i64>,
}

/// Validated `[warm]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmSettings {
    /// Record pulls, learn, and warm predicted images.
    pub enabled: bool,
    /// Quiet time on the demand side before warming starts.
    pub idle: Duration,
    /// Images warmed per round at most.
    pub max_images: usize,
    /// Predictions below this probability are not warmed.
    pub min_probability: f32,
    /// How far ahead predictions look.
    pub horizon: Duration,
    /// Memory for warmed TOCs, bytes.
    pub max_toc_cache_bytes: u64,
}

impl RawWarm {
    /// Validates the table; the defaults are documented in `docs/configuration.md`.
    pub fn validate(self) -> Result<WarmSettings, ConfigError> {
        let min_probability = probability("warm.min_probability", self.min_probability, 0.5)?;
        Ok(WarmSettings {
            enabled: self.enabled.unwrap_or(false),
            idle: Duration::from_millis(in_range(
                "warm.idle_ms",
                self.idle_ms,
                5000,
                0,
                3_600_000,
            )?),
            max_images: in_range("warm.max_images", self.max_images, 3, 1, 64)? as usize,
            min_probability,
            horizon: secs("warm.horizon_secs", self.horizon_secs, 900, 10, 86_400)?,
            max_toc_cache_bytes: in_range(
                "warm.max_toc_cache_mib",
                self.max_toc_cache_mib,
                64,
                1,
                4096,
            )? << 20,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, Overrides, RawConfig};

    fn validate(text: &str) -> Result<crate::config::Config, ConfigError> {
        RawConfig::parse(text)
            .expect("parses")
            .validate(Overrides::default())
    }

    #[test]
    fn warming_is_off_by_default_and_bad_values_name_their_key() {
        let w = validate("").unwrap().warm;
        assert!(!w.enabled);
        assert_eq!((w.max_images, w.max_toc_cache_bytes), (3, 64 << 20));
        for (text, key) in [
            ("[warm]\nidle_ms = -1", "warm.idle_ms"),
            ("[warm]\nmax_images = 0", "warm.max_images"),
            ("[warm]\nmin_probability = 1.5", "warm.min_probability"),
            ("[warm]\nhorizon_secs = 1", "warm.horizon_secs"),
            ("[warm]\nmax_toc_cache_mib = 0", "warm.max_toc_cache_mib"),
        ] {
            match validate(text) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(
            RawConfig::parse("[warm]\nidle = 1")
                .unwrap_err()
                .contains("idle")
        );
    }
}
