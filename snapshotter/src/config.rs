//! Daemon configuration: TOML parsed into [`RawConfig`] (unknown keys rejected), then validated
//! into [`Config`] with errors that name the offending key. Command-line flags override the file.
//!
//! Every key, its default and its rule is documented in `docs/configuration.md`, and the
//! annotated default file is `systemd/config.toml`; a test keeps the three in step.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::admin::settings::{AdminTcp, RawAdmin};
pub use crate::cache::settings::RawCache;
pub use crate::cache::{CacheSettings, Policy};
pub use crate::prefetch::settings::{
    PredictorSettings, PrefetchSettings, RawPredictor, RawPrefetch,
};
pub use crate::trace::{RawTrace, TraceSettings};
pub use crate::warm::settings::{RawWarm, WarmSettings};

/// The config file read when `--config` is not given (absent = all defaults).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/augur/config.toml";
/// Default state directory.
pub const DEFAULT_ROOT: &str = "/var/lib/augur";
/// Default gRPC socket (what containerd's `proxy_plugins` stanza names).
pub const DEFAULT_ADDRESS: &str = "/run/augur/snapshotter.sock";
/// Default socket permissions: owner and group read/write.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;
/// Default log filter.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// The config format this build reads.
pub const CONFIG_VERSION: u32 = 1;

/// A config file larger than this is refused (it is surely not a config file).
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// `sun_path` holds 108 bytes including the terminating NUL, and the daemon first binds a
/// temporary name `.<file name>.<pid>` beside the socket (see `daemon::bind`), up to 9 bytes
/// longer than the configured path.
pub const MAX_SOCKET_PATH_BYTES: usize = 107 - 9;

/// The file as written, before validation. Field names are the TOML keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Config format version.
    pub version: Option<u32>,
    /// State directory.
    pub root: Option<PathBuf>,
    /// Log filter (`error`…`trace`, or a `tracing` filter directive).
    pub log_level: Option<String>,
    /// `[grpc]` table.
    #[serde(default)]
    pub grpc: RawGrpc,
    /// `[remote]` table.
    #[serde(default)]
    pub remote: RawRemote,
    /// `[registry]` table.
    #[serde(default)]
    pub registry: RawRegistry,
    /// `[cache]` table.
    #[serde(default)]
    pub cache: RawCache,
    /// `[admin]` table.
    #[serde(default)]
    pub admin: RawAdmin,
    /// `[metrics]` table.
    #[serde(default)]
    pub metrics: RawMetrics,
    /// `[warm]` table (see [`crate::warm::settings`]).
    #[serde(default)]
    pub warm: RawWarm,
    /// `[trace]` table.
    #[serde(default)]
    pub trace: RawTrace,
    /// `[prefetch]` table.
    #[serde(default)]
    pub prefetch: RawPrefetch,
    /// `[predictor]` table.
    #[serde(default)]
    pub predictor: RawPredictor,
}

/// The `[metrics]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// `ip:port` of the Prometheus endpoint (`""` = off).
    pub address: Option<String>,
    /// Accept an address other than loopback.
    pub allow_remote: Option<bool>,
}

/// Default metrics endpoint: loopback, port 9464 (the OpenTelemetry Prometheus exporter's
/// customary port, free of the common exporters').
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9464";

/// The `[remote]` table (lazy pulling) as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemote {
    /// Mount eStargz layers lazily.
    pub enable: Option<bool>,
    /// FUSE threads per mounted layer.
    pub fuse_threads: Option<i64>,
    /// Seconds a read may wait on the registry before it fails with EIO.
    pub read_timeout_secs: Option<i64>,
    /// Fetch each mounted layer whole in the background.
    pub background_fetch: Option<bool>,
    /// Largest background request, in MiB.
    pub fetch_span_mib: Option<i64>,
    /// Milliseconds without demand fetches before the background fetch sends a request.
    pub background_idle_ms: Option<i64>,
    /// Refuse (pull normally) layers whose image carries no TOC digest.
    pub require_toc_digest: Option<bool>,
}

/// The `[registry]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegistry {
    /// containerd-style `hosts.toml` directory (`""` = none).
    pub config_path: Option<PathBuf>,
    /// Directory holding the Docker `config.json` (`""` = `$DOCKER_CONFIG` or `~/.docker`).
    pub docker_config: Option<PathBuf>,
    /// Hosts (`host` or `host:port`) that may be reached over plain HTTP.
    pub insecure_hosts: Option<Vec<String>>,
    /// TCP connect timeout, seconds.
    pub connect_timeout_secs: Option<i64>,
    /// Timeout of one HTTP request, seconds.
    pub request_timeout_secs: Option<i64>,
    /// Retries of a failed request (with backoff).
    pub retries: Option<i64>,
}

/// Validated `[remote]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSettings {
    /// Mount eStargz layers lazily.
    pub enable: bool,
    /// FUSE threads per mounted layer.
    pub fuse_threads: usize,
    /// A read waiting on the registry longer than this fails with EIO.
    pub read_timeout: Duration,
    /// Fetch each mounted layer whole in the background.
    pub background_fetch: bool,
    /// Largest background request, in bytes.
    pub fetch_span: u64,
    /// Quiet time on the demand side before a background request.
    pub background_idle: Duration,
    /// Refuse (pull normally) layers whose image carries no TOC digest.
    pub require_toc_digest: bool,
}

/// Validated `[registry]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySettings {
    /// `hosts.toml` directory, if any.
    pub config_path: Option<PathBuf>,
    /// Docker config directory, if set.
    pub docker_config: Option<PathBuf>,
    /// Hosts reachable over plain HTTP (loopback always is).
    pub insecure_hosts: Vec<String>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// Retries of a failed request.
    pub retries: u32,
}

/// The `[grpc]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrpc {
    /// Unix socket path.
    pub address: Option<PathBuf>,
    /// Socket permissions, an octal string such as `"0660"`.
    pub socket_mode: Option<String>,
}

/// Command-line overrides (each `None` keeps the file's value).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--root`.
    pub root: Option<PathBuf>,
    /// `--address`.
    pub address: Option<PathBuf>,
    /// `--log-level`.
    pub log_level: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// State directory (absolute).
    pub root: PathBuf,
    /// Unix socket path (absolute).
    pub address: PathBuf,
    /// Socket permission bits (a subset of 0660).
    pub socket_mode: u32,
    /// Log filter directive.
    pub log_level: String,
    /// `[remote]`.
    pub remote: RemoteSettings,
    /// `[registry]`.
    pub registry: RegistrySettings,
    /// `[cache]`.
    pub cache: CacheSettings,
    /// The admin API's unix socket (absolute; mode 0600).
    pub admin_address: PathBuf,
    /// The admin API's TCP listener with a bearer token (`None`: off, the default).
    pub admin_tcp: Option<AdminTcp>,
    /// The Prometheus endpoint's address (`None`: off).
    pub metrics_address: Option<SocketAddr>,
    /// Whether `metrics.address` names an address other than the default: then a port that
    /// cannot be bound stops start-up; the default only gets a warning (containers must still
    /// start on a node where something else holds it).
    pub metrics_address_explicit: bool,
    /// `[warm]`.
    pub warm: WarmSettings,
    /// `[trace]`.
    pub trace: TraceSettings,
    /// `[prefetch]`.
    pub prefetch: PrefetchSettings,
    /// `[predictor]`.
    pub predictor: PredictorSettings,
}

/// Why a configuration was refused. Each message names the key (or the file).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("config file {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (it names the key and line).
        reason: String,
    },
    /// A value is out of its allowed range (from the file or from the flag that overrides it).
    #[error("config key `{key}`{} = {value:?}: {rule}", flag_note(key))]
    Invalid {
        /// The key, in TOML dotted form (`grpc.address`).
        key: &'static str,
        /// The value given.
        value: String,
        /// What a valid value looks like.
        rule: String,
    },
}

impl RawConfig {
    /// Reads `path`. A missing file is an error only if `required` (it was named explicitly).
    pub fn load(path: &Path, required: bool) -> Result<RawConfig, ConfigError> {
        let read_err = |reason: String| ConfigError::Read {
            path: path.to_path_buf(),
            reason,
        };
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(RawConfig::default());
            }
            Err(e) => return Err(read_err(e.to_string())),
            Ok(m) if m.len() > MAX_CONFIG_BYTES => {
                return Err(read_err(format!(
                    "{} bytes is over the {MAX_CONFIG_BYTES}-byte limit",
                    m.len()
                )));
            }
            Ok(_) => {}
        }
        let text = std::fs::read_to_string(path).map_err(|e| read_err(e.to_string()))?;
        RawConfig::parse(&text).map_err(|reason| ConfigError::Parse {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<RawConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Applies `overrides` and validates every value.
    pub fn validate(self, overrides: Overrides) -> Result<Config, ConfigError> {
        if let Some(v) = self.version
            && v != CONFIG_VERSION
        {
            return Err(invalid(
                "version",
                v.to_string(),
                format!("this build reads version {CONFIG_VERSION}"),
            ));
        }
        let root = overrides
            .root
            .or(self.root)
            .unwrap_or_else(|| DEFAULT_ROOT.into());
        check_absolute("root", &root)?;
        let address = overrides
            .address
            .or(self.grpc.address)
            .unwrap_or_else(|| DEFAULT_ADDRESS.into());
        check_absolute("grpc.address", &address)?;
        if address.as_os_str().len() > MAX_SOCKET_PATH_BYTES {
            return Err(invalid(
                "grpc.address",
                address.display().to_string(),
                format!("a unix socket path must be at most {MAX_SOCKET_PATH_BYTES} bytes"),
            ));
        }
        let socket_mode = match self.grpc.socket_mode {
            None => DEFAULT_SOCKET_MODE,
            Some(s) => parse_socket_mode(&s)?,
        };
        let log_level = overrides
            .log_level
            .or(self.log_level)
            .unwrap_or_else(|| DEFAULT_LOG_LEVEL.into());
        if !is_log_filter(&log_level) {
            return Err(invalid(
                "log_level",
                log_level,
                "use error, warn, info, debug or trace, or a tracing filter such as \"augur=debug,info\"".into(),
            ));
        }
        Ok(Config {
            root: root.clone(),
            address: address.clone(),
            socket_mode,
            log_level,
            remote: self.remote.validate()?,
            registry: self.registry.validate()?,
            cache: self.cache.validate(&root)?,
            admin_tcp: self.admin.validate_tcp()?,
            admin_address: admin_address(self.admin.address, &address)?,
            metrics_address_explicit: self
                .metrics
                .address
                .as_deref()
                .is_some_and(|a| a != DEFAULT_METRICS_ADDRESS),
            metrics_address: self.metrics.validate()?,
            warm: self.warm.validate()?,
            trace: self.trace.validate()?,
            prefetch: self.prefetch.validate()?,
            predictor: self.predictor.validate(&root)?,
        })
    }
}

impl RawRemote {
    fn validate(self) -> Result<RemoteSettings, ConfigError> {
        Ok(RemoteSettings {
            enable: self.enable.unwrap_or(true),
            fuse_threads: in_range("remote.fuse_threads", self.fuse_threads, 4, 1, 64)? as usize,
            read_timeout: secs(
                "remote.read_timeout_secs",
                self.read_timeout_secs,
                30,
                1,
                3600,
            )?,
            background_fetch: self.background_fetch.unwrap_or(true),
            fetch_span: in_range("remote.fetch_span_mib", self.fetch_span_mib, 4, 1, 256)? << 20,
            background_idle: Duration::from_millis(in_range(
                "remote.background_idle_ms",
                self.background_idle_ms,
                2000,
                0,
                600_000,
            )?),
            require_toc_digest: self.require_toc_digest.unwrap_or(true),
        })
    }
}

impl RawRegistry {
    fn validate(self) -> Result<RegistrySettings, ConfigError> {
        let dir = |key: &'static str, p: Option<PathBuf>, default: Option<&str>| match p
            .or_else(|| default.map(PathBuf::from))
        {
            Some(p) if p.as_os_str().is_empty() => Ok(None),
            Some(p) => check_absolute(key, &p).map(|()| Some(p)),
            None => Ok(None),
        };
        let insecure_hosts = self.insecure_hosts.unwrap_or_default();
        for h in &insecure_hosts {
            let ok = !h.is_empty() && !h.contains("://") && !h.contains('/') && !h.contains(' ');
            if !ok {
                return Err(invalid(
                    "registry.insecure_hosts",
                    h.clone(),
                    "each entry is a host or host:port, without scheme or path".into(),
                ));
            }
        }
        Ok(RegistrySettings {
            config_path: dir(
                "registry.config_path",
                self.config_path,
                Some(DEFAULT_HOSTS_DIR),
            )?,
            docker_config: dir("registry.docker_config", self.docker_config, None)?,
            insecure_hosts,
            connect_timeout: secs(
                "registry.connect_timeout_secs",
                self.connect_timeout_secs,
                10,
                1,
                600,
            )?,
            request_timeout: secs(
                "registry.request_timeout_secs",
                self.request_timeout_secs,
                60,
                1,
                3600,
            )?,
            retries: in_range("registry.retries", self.retries, 4, 0, 20)? as u32,
        })
    }
}

impl RawMetrics {
    fn validate(self) -> Result<Option<SocketAddr>, ConfigError> {
        let text = self
            .address
            .unwrap_or_else(|| DEFAULT_METRICS_ADDRESS.to_owned());
        if text.is_empty() {
            return Ok(None);
        }
        let address: SocketAddr = text.parse().map_err(|_| {
            invalid(
                "metrics.address",
                text.clone(),
                "an IP address and port such as \"127.0.0.1:9464\" or \"[::1]:9464\" (no host names), or \"\" to turn the endpoint off".into(),
            )
        })?;
        if !address.ip().is_loopback() && !self.allow_remote.unwrap_or(false) {
            return Err(invalid(
                "metrics.address",
                text,
                "not a loopback address: the endpoint has no authentication and shows the node's \
                 images and traffic to anyone who can connect; set metrics.allow_remote = true \
                 if a firewall or network policy limits who can reach it"
                    .into(),
            ));
        }
        Ok(Some(address))
    }
}

/// The admin socket: as configured, or `admin.sock` in the gRPC socket's directory.
fn admin_address(configured: Option<PathBuf>, grpc: &Path) -> Result<PathBuf, ConfigError> {
    let path = match configured {
        Some(p) if !p.as_os_str().is_empty() => {
            check_absolute("admin.address", &p)?;
            p
        }
        _ => grpc.with_file_name(DEFAULT_ADMIN_SOCKET_NAME),
    };
    if path == grpc {
        return Err(invalid(
            "admin.address",
            path.display().to_string(),
            "must differ from grpc.address".into(),
        ));
    }
    if path.as_os_str().len() > MAX_SOCKET_PATH_BYTES {
        return Err(invalid(
            "admin.address",
            path.display().to_string(),
            format!(
                "a unix socket path must be at most {MAX_SOCKET_PATH_BYTES} bytes; set a shorter one"
            ),
        ));
    }
    Ok(path)
}

/// The admin socket's name when `admin.address` is not set.
pub const DEFAULT_ADMIN_SOCKET_NAME: &str = "admin.sock";

/// containerd's default `config_path` for registry hosts.
pub const DEFAULT_HOSTS_DIR: &str = "/etc/containerd/certs.d";

/// `value` (or `default`) if within `min..=max`.
pub(crate) fn in_range(
    key: &'static str,
    value: Option<i64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(v) = value else {
        return Ok(default);
    };
    match u64::try_from(v) {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(invalid(
            key,
            v.to_string(),
            format!("must be a whole number from {min} to {max}"),
        )),
    }
}

/// A probability key: 0.0–1.0, `default` when unset; an error naming `key` otherwise.
pub(crate) fn probability(
    key: &'static str,
    value: Option<f64>,
    default: f32,
) -> Result<f32, ConfigError> {
    match value {
        None => Ok(default),
        Some(f) if (0.0..=1.0).contains(&f) => Ok(f as f32),
        Some(f) => Err(invalid(
            key,
            f.to_string(),
            "a probability from 0.0 to 1.0".into(),
        )),
    }
}

pub(crate) fn secs(
    key: &'static str,
    value: Option<i64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<Duration, ConfigError> {
    in_range(key, value, default, min, max).map(Duration::from_secs)
}

/// Names the command-line flag that can also set `key`, since the bad value may come from it.
fn flag_note(key: &str) -> &'static str {
    match key {
        "root" => " (or --root)",
        "grpc.address" => " (or --address)",
        "log_level" => " (or --log-level)",
        _ => "",
    }
}

pub(crate) fn invalid(key: &'static str, value: String, rule: String) -> ConfigError {
    ConfigError::Invalid { key, value, rule }
}

/// A level, or comma-separated `target=level` directives, that `tracing` accepts. (A bare word
/// that is not a level would be taken as a target name, silently hiding Augur's logs: refuse it.)
fn is_log_filter(s: &str) -> bool {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let directive_ok = |d: &str| {
        let level = d.rsplit_once('=').map_or(d, |(_, l)| l);
        LEVELS.contains(&level.trim().to_ascii_lowercase().as_str())
    };
    !s.trim().is_empty()
        && s.split(',').all(directive_ok)
        && tracing_subscriber::EnvFilter::try_new(s).is_ok()
}

pub(crate) fn check_absolute(key: &'static str, path: &Path) -> Result<(), ConfigError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(invalid(
            key,
            path.display().to_string(),
            "must be an absolute path".into(),
        ))
    }
}

fn parse_socket_mode(s: &str) -> Result<u32, ConfigError> {
    let rule =
        || "an octal mode such as \"0660\" or \"0600\", granting nothing beyond 0660".to_owned();
    let mode = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|_| invalid("grpc.socket_mode", s.into(), rule()))?;
    if mode & !DEFAULT_SOCKET_MODE != 0 || mode & 0o600 != 0o600 {
        return Err(invalid(
            "grpc.socket_mode",
            s.into(),
            rule() + "; the owner needs read and write",
        ));
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(text: &str) -> Result<Config, ConfigError> {
        RawConfig::parse(text)
            .expect("parses")
            .validate(Overrides::default())
    }

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let c = validate("").unwrap();
        assert_eq!(c.root, Path::new(DEFAULT_ROOT));
        assert_eq!(c.address, Path::new(DEFAULT_ADDRESS));
        assert_eq!(c.socket_mode, 0o660);
        assert_eq!(c.log_level, "info");
        assert_eq!(
            c.cache.nvme_path,
            Path::new(DEFAULT_ROOT).join("cache/chunks.nvme")
        );
        assert_eq!(c.cache.hdd_bytes, 8192 << 20);
        assert_eq!(c.cache.policy.name(), "lfu");
        assert_eq!(c.admin_address, Path::new("/run/augur/admin.sock"));
        assert_eq!(c.metrics_address, Some(([127, 0, 0, 1], 9464).into()));
    }

    #[test]
    fn metrics_stay_on_loopback_unless_allowed() {
        let addr = |text: &str| validate(&format!("[metrics]\n{text}")).map(|c| c.metrics_address);
        assert_eq!(addr("address = \"\""), Ok(None));
        assert_eq!(
            addr("address = \"[::1]:9100\""),
            Ok(Some("[::1]:9100".parse().unwrap()))
        );
        let remote = "address = \"0.0.0.0:9464\"";
        let Err(ConfigError::Invalid { key, rule, .. }) = addr(remote) else {
            panic!("a wildcard address was accepted without allow_remote");
        };
        assert_eq!(key, "metrics.address");
        assert!(rule.contains("metrics.allow_remote = true"), "{rule}");
        let allowed = addr(&format!("{remote}\nallow_remote = true"));
        assert_eq!(allowed, Ok(Some(([0, 0, 0, 0], 9464).into())));
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = RawConfig::parse("[grpc]\nadress = \"/x\"\n").unwrap_err();
        assert!(err.contains("adress"), "{err}");
        let err = RawConfig::parse("rooot = \"/x\"").unwrap_err();
        assert!(err.contains("rooot"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("root = \"relative/dir\"", "root"),
            ("version = 2", "version"),
            ("log_level = \"loud\"", "log_level"),
            ("[grpc]\naddress = \"sock\"", "grpc.address"),
            ("[grpc]\nsocket_mode = \"0666\"", "grpc.socket_mode"),
            ("[grpc]\nsocket_mode = \"0400\"", "grpc.socket_mode"),
            ("[grpc]\nsocket_mode = \"rw\"", "grpc.socket_mode"),
            ("[remote]\nfuse_threads = 0", "remote.fuse_threads"),
            (
                "[remote]\nread_timeout_secs = -1",
                "remote.read_timeout_secs",
            ),
            ("[remote]\nfetch_span_mib = 1024", "remote.fetch_span_mib"),
            (
                "[remote]\nbackground_idle_ms = -1",
                "remote.background_idle_ms",
            ),
            (
                "[registry]\nconfig_path = \"certs.d\"",
                "registry.config_path",
            ),
            (
                "[registry]\ninsecure_hosts = [\"http://x\"]",
                "registry.insecure_hosts",
            ),
            ("[registry]\nretries = 100", "registry.retries"),
            ("[cache]\nram_mib = -1", "cache.ram_mib"),
            ("[cache]\nnvme_path = \"rel\"", "cache.nvme_path"),
            ("[cache]\npolicy = \"fifo\"", "cache.policy"),
            ("[cache]\nram_threshold = 1.5", "cache.ram_threshold"),
            (
                "[cache]\nram_threshold = 0.3\nnvme_threshold = 0.5",
                "cache.nvme_threshold",
            ),
            (
                "[cache]\npromote_after_hits = 0",
                "cache.promote_after_hits",
            ),
            ("[admin]\naddress = \"admin.sock\"", "admin.address"),
            ("[metrics]\naddress = \"localhost:9464\"", "metrics.address"),
            ("[metrics]\naddress = \"127.0.0.1\"", "metrics.address"),
            ("[trace]\nmax_bytes = 1000", "trace.max_bytes"),
            ("[trace]\nmax_runs = 0", "trace.max_runs"),
            ("[trace]\nchannel_capacity = 1", "trace.channel_capacity"),
            ("[prefetch]\nworkers = 0", "prefetch.workers"),
            (
                "[prefetch]\nmax_bandwidth_mib_s = -1",
                "prefetch.max_bandwidth_mib_s",
            ),
            ("[prefetch]\nqueue_max = 0", "prefetch.queue_max"),
            ("[prefetch]\nthreshold = 1.2", "prefetch.threshold"),
            ("[prefetch]\nthreshold = 0.95", "prefetch.threshold"),
            (
                "[prefetch]\nthreshold_min = 0.6\nthreshold_max = 0.5",
                "prefetch.threshold_min",
            ),
            (
                "[prefetch]\nadapt_interval_ms = 5",
                "prefetch.adapt_interval_ms",
            ),
            ("[predictor]\nmodel_dir = \"models\"", "predictor.model_dir"),
            (
                "[admin]\naddress = \"/run/augur/snapshotter.sock\"",
                "admin.address",
            ),
        ];
        for (text, key) in cases {
            match validate(text) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: expected an error naming {key}, got {other:?}"),
            }
        }
        let long = format!("[grpc]\naddress = \"/{}\"", "s".repeat(120));
        assert!(matches!(
            validate(&long),
            Err(ConfigError::Invalid {
                key: "grpc.address",
                ..
            })
        ));
    }

    #[test]
    fn flags_override_the_file() {
        let raw = RawConfig::parse("root = \"/a\"\nlog_level = \"warn\"").unwrap();
        let c = raw
            .validate(Overrides {
                root: Some("/b".into()),
                address: Some("/c.sock".into()),
                log_level: None,
            })
            .unwrap();
        assert_eq!(
            (c.root.as_path(), c.address.as_path()),
            (Path::new("/b"), Path::new("/c.sock"))
        );
        assert_eq!(c.log_level, "warn");
    }

    #[test]
    fn stricter_socket_modes_are_accepted() {
        assert_eq!(
            validate("[grpc]\nsocket_mode = \"0600\"")
                .unwrap()
                .socket_mode,
            0o600
        );
    }

    #[test]
    fn a_named_but_missing_file_is_an_error_and_the_default_is_optional() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        assert!(matches!(
            RawConfig::load(&missing, true),
            Err(ConfigError::Read { .. })
        ));
        assert!(RawConfig::load(&missing, false).is_ok());
    }
}
