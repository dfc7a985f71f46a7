//! The `[cache]` table: parsed as written ([`RawCache`]), then validated into
//! [`CacheSettings`] with errors that name the key (`docs/configuration.md` has every key).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cache::{CacheSettings, Policy};
use crate::config::{ConfigError, check_absolute, in_range, invalid, probability, secs};

/// The `[cache]` table (the tiered chunk cache of lazy layers) as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// RAM tier budget, MiB.
    pub ram_mib: Option<i64>,
    /// The NVMe tier's file (`""` = `<root>/cache/chunks.nvme`).
    pub nvme_path: Option<PathBuf>,
    /// NVMe tier budget, MiB.
    pub nvme_mib: Option<i64>,
    /// The spill tier's directory (`""` = `<root>/cache/spill`).
    pub hdd_path: Option<PathBuf>,
    /// Spill tier budget, MiB.
    pub hdd_mib: Option<i64>,
    /// `lfu`, `lru` or `score`.
    pub policy: Option<String>,
    /// LFU: seconds after which an access counts half.
    pub lfu_half_life_secs: Option<i64>,
    /// Prefetched chunks at least this likely go to RAM.
    pub ram_threshold: Option<f64>,
    /// Prefetched chunks at least this likely go to NVMe.
    pub nvme_threshold: Option<f64>,
    /// Every this many hits in a tier, a chunk tries to move up.
    pub promote_after_hits: Option<i64>,
}

impl RawCache {
    /// Checks every key (errors name it); relative defaults live under `root`.
    pub(crate) fn validate(self, root: &Path) -> Result<CacheSettings, ConfigError> {
        let path = |key: &'static str, p: Option<PathBuf>, default: &str| match p {
            Some(p) if !p.as_os_str().is_empty() => check_absolute(key, &p).map(|()| p),
            _ => Ok(root.join(default)),
        };
        let mib = |key, v, default| in_range(key, v, default, 0, 16 << 20).map(|m| m << 20);
        let policy = match self.policy.as_deref().unwrap_or("lfu") {
            "lfu" => Policy::LfuDecay {
                half_life: secs(
                    "cache.lfu_half_life_secs",
                    self.lfu_half_life_secs,
                    600,
                    1,
                    7 * 24 * 3600,
                )?,
            },
            "lru" => Policy::Lru,
            "score" => Policy::Score,
            other => {
                return Err(invalid(
                    "cache.policy",
                    other.into(),
                    "one of \"lfu\", \"lru\" or \"score\"".into(),
                ));
            }
        };
        let ram_threshold = probability("cache.ram_threshold", self.ram_threshold, 0.8)?;
        let nvme_threshold = probability("cache.nvme_threshold", self.nvme_threshold, 0.4)?;
        if nvme_threshold > ram_threshold {
            return Err(invalid(
                "cache.nvme_threshold",
                nvme_threshold.to_string(),
                format!("must not be above cache.ram_threshold ({ram_threshold})"),
            ));
        }
        Ok(CacheSettings {
            ram_bytes: mib("cache.ram_mib", self.ram_mib, 256)?,
            nvme_path: path("cache.nvme_path", self.nvme_path, "cache/chunks.nvme")?,
            nvme_bytes: mib("cache.nvme_mib", self.nvme_mib, 2048)?,
            hdd_path: path("cache.hdd_path", self.hdd_path, "cache/spill")?,
            hdd_bytes: mib("cache.hdd_mib", self.hdd_mib, 8192)?,
            policy,
            ram_threshold,
            nvme_threshold,
            promote_after_hits: in_range(
                "cache.promote_after_hits",
                self.promote_after_hits,
                2,
                1,
                1000,
            )? as u32,
        })
    }
}
