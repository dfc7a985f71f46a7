//! The `[trace]` config table: parsed as written ([`RawTrace`]), validated into
//! [`TraceSettings`] with errors that name the key (through `crate::config`'s rules).

use serde::Deserialize;

use crate::config::{ConfigError, in_range};

/// Default `trace.max_bytes`: 256 MiB of trace files.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;
/// Default `trace.max_runs`.
pub const DEFAULT_MAX_RUNS: u64 = 10_000;
/// Default `trace.channel_capacity`: read events queued for the recorder before new ones drop.
pub const DEFAULT_CHANNEL_CAPACITY: u64 = 65_536;

/// The `[trace]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrace {
    /// Record access traces of lazily mounted containers.
    pub enabled: Option<bool>,
    /// Total bytes of trace files kept; the oldest go first.
    pub max_bytes: Option<i64>,
    /// Number of trace files kept; the oldest go first.
    pub max_runs: Option<i64>,
    /// Read events that may wait for the recorder thread; more are dropped (and counted).
    pub channel_capacity: Option<i64>,
}

/// Validated `[trace]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSettings {
    /// Whether traces are recorded.
    pub enabled: bool,
    /// Total bytes of trace files kept.
    pub max_bytes: u64,
    /// Number of trace files kept.
    pub max_runs: u64,
    /// Capacity of the event channel.
    pub channel_capacity: usize,
}

impl Default for TraceSettings {
    fn default() -> Self {
        TraceSettings {
            enabled: true,
            max_bytes: DEFAULT_MAX_BYTES,
            max_runs: DEFAULT_MAX_RUNS,
            channel_capacity: DEFAULT_CHANNEL_CAPACITY as usize,
        }
    }
}

impl RawTrace {
    /// Checks every value; an error names the key.
    pub fn validate(self) -> Result<TraceSettings, ConfigError> {
        Ok(TraceSettings {
            enabled: self.enabled.unwrap_or(true),
            max_bytes: in_range(
                "trace.max_bytes",
                self.max_bytes,
                DEFAULT_MAX_BYTES,
                1 << 20,
                1 << 40,
            )?,
            max_runs: in_range(
                "trace.max_runs",
                self.max_runs,
                DEFAULT_MAX_RUNS,
                1,
                10_000_000,
            )?,
            channel_capacity: in_range(
                "trace.channel_capacity",
                self.channel_capacity,
                DEFAULT_CHANNEL_CAPACITY,
                64,
                1 << 22,
            )? as usize,
        })
    }
}
