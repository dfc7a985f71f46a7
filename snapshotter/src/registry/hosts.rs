//! containerd's registry host configuration (`config_path`, e.g. `/etc/containerd/certs.d`),
//! read the way containerd 1.6+ reads it (`remotes/docker/config/hosts.go`), and the plain-HTTP
//! rule.
//!
//! Layout: for a registry `host[:port]` the first existing directory of
//! `<root>/host_port_`, `<root>/host:port`, `<root>/_default` is used. Its `hosts.toml` lists
//! `[host."<url>"]` tables (mirrors, tried in file order) and then the top-level keys, which
//! describe the last endpoint: `server` if set, else the registry itself. Without `hosts.toml`
//! the directory may hold Docker-style certificates (`*.crt` CAs, `*.cert` + `*.key` client
//! pairs) for the registry itself.
//!
//! Keys: `server`, `capabilities` (`pull`, `resolve`, `push`; default all), `ca` (file or list),
//! `client` (file, list of files, or list of `[cert, key]` pairs), `skip_verify`, `header`
//! (name → string or list), `override_path`. Relative paths are relative to the directory.
//! Unknown keys are ignored with a warning, as containerd ignores them.
//!
//! Differences from containerd, deliberately: a `hosts.toml` that does not parse is an error
//! naming the file (containerd logs it and silently uses none of it), and `http://` endpoints
//! are refused unless the host may use plain HTTP (see [`plain_http_allowed`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::RegistryError;

/// What an endpoint may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caps {
    pub pull: bool,
    pub resolve: bool,
    pub push: bool,
}

impl Caps {
    pub(crate) const ALL: Caps = Caps {
        pull: true,
        resolve: true,
        push: true,
    };
}

/// One endpoint as configured; `host` empty means "the registry itself, with defaults".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostSpec {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]` (IPv6 in brackets).
    pub host: String,
    /// API root path, e.g. `/v2` or, with `override_path`, whatever was written.
    pub path: String,
    pub caps: Caps,
    /// CA bundles to trust in addition to the system roots.
    pub ca: Vec<PathBuf>,
    /// Client certificate files and their key files (`None`: the key is in the same file).
    pub client: Vec<(PathBuf, Option<PathBuf>)>,
    pub skip_verify: bool,
    /// Extra request headers (a name may repeat).
    pub headers: Vec<(String, String)>,
    /// The `hosts.toml` (or directory) this came from, for error messages.
    pub source: PathBuf,
    /// The key prefix in that file (`host."<url>"` or empty for top-level keys).
    pub key: String,
}

impl HostSpec {
    /// The registry itself with containerd's defaults (`/v2`, every capability).
    pub(crate) fn origin(source: PathBuf) -> HostSpec {
        HostSpec {
            scheme: String::new(),
            host: String::new(),
            path: "/v2".to_owned(),
            caps: Caps::ALL,
            ca: Vec::new(),
            client: Vec::new(),
            skip_verify: false,
            headers: Vec::new(),
            source,
            key: String::new(),
        }
    }

    /// `key` qualified with this entry's table, e.g. `host."https://m:5000".ca`.
    pub(crate) fn key_of(&self, key: &str) -> String {
        spec_key(&self.key, key)
    }
}

/// True if `host` (`name[:port]`) may be spoken to over plain HTTP: loopback addresses and
/// `localhost` always; otherwise only if `insecure` lists it, either as `name:port` or as a
/// bare `name` (any port).
pub(crate) fn plain_http_allowed(host: &str, insecure: &[String]) -> bool {
    let (name, _) = split_port(host);
    if is_loopback(name) {
        return true;
    }
    insecure
        .iter()
        .any(|entry| entry == host || (split_port(entry).1.is_none() && entry == name))
}

/// `localhost`, 127.0.0.0/8 or ::1 (brackets allowed).
pub(crate) fn is_loopback(name: &str) -> bool {
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Splits `name[:port]`, where `name` may be `[v6]` or a bare IPv6 address (no port then).
fn split_port(host: &str) -> (&str, Option<&str>) {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((v6, tail)) => (v6, tail.strip_prefix(':')),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, Some(port)),
        _ => (host, None),
    }
}

/// The configuration directory for `host` under `root`, if any (containerd's `hostPaths`).
pub(crate) fn host_dir(root: &Path, host: &str) -> Result<Option<PathBuf>, RegistryError> {
    let mut candidates = Vec::new();
    if let Some((name, port)) = host.rsplit_once(':') {
        candidates.push(root.join(format!("{name}_{port}_")));
    }
    candidates.push(root.join(host));
    candidates.push(root.join("_default"));
    for dir in candidates {
        match std::fs::metadata(&dir) {
            Ok(_) => return Ok(Some(dir)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(RegistryError::config(dir, "", format!("cannot read: {e}"))),
        }
    }
    Ok(None)
}

/// The endpoints configured for a registry under `root` (blocking: reads files). `None` when
/// nothing is configured for it.
pub(crate) fn load(root: &Path, host: &str) -> Result<Option<Vec<HostSpec>>, RegistryError> {
    let Some(dir) = host_dir(root, host)? else {
        return Ok(None);
    };
    let file = dir.join("hosts.toml");
    match std::fs::read_to_string(&file) {
        Ok(text) if !text.trim().is_empty() => parse(&file, &dir, &text).map(Some),
        Ok(_) => cert_files(&dir).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => cert_files(&dir).map(Some),
        Err(e) => Err(RegistryError::config(file, "", format!("cannot read: {e}"))),
    }
}

/// Docker's `certs.d` layout: `*.crt` are CAs, `*.cert` (+ `*.key`) are client pairs.
fn cert_files(dir: &Path) -> Result<Vec<HostSpec>, RegistryError> {
    let unreadable =
        |e: std::io::Error| RegistryError::config(dir, "", format!("cannot list: {e}"));
    let mut spec = HostSpec::origin(dir.to_owned());
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(unreadable)?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .map(|e| e.path())
        .collect();
    names.sort();
    for path in names {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => spec.ca.push(path),
            Some("cert") => {
                let key = path.with_extension("key");
                spec.client.push((path, key.exists().then_some(key)));
            }
            _ => {}
        }
    }
    Ok(vec![spec])
}

/// Keys an entry may have; others are ignored with a warning.
const KNOWN_KEYS: [&str; 6] = [
    "capabilities",
    "ca",
    "client",
    "skip_verify",
    "header",
    "override_path",
];

/// Parses the text of `file` (in directory `dir`): the `[host.*]` entries in file order, then
/// the top-level entry.
pub(crate) fn parse(file: &Path, dir: &Path, text: &str) -> Result<Vec<HostSpec>, RegistryError> {
    let bad_toml =
        |e: toml::de::Error| RegistryError::config(file, "", format!("not valid TOML: {e}"));
    let root: toml::Table = toml::from_str(text).map_err(bad_toml)?;
    let mut specs = Vec::new();
    for (url, table) in hosts_in_file_order(text).map_err(bad_toml)? {
        let key = format!("host.{url:?}");
        let table = table.as_table().ok_or_else(|| {
            RegistryError::config(file, &key, "must be a table: [host.\"https://mirror\"]")
        })?;
        specs.push(entry(file, dir, &key, Some(&url), table)?);
    }
    let server = match root.get("server") {
        None => None,
        Some(toml::Value::String(s)) if s.is_empty() => None,
        Some(toml::Value::String(s)) => Some(s.as_str()),
        Some(_) => {
            return Err(RegistryError::config(
                file,
                "server",
                "must be a string URL",
            ));
        }
    };
    let mut top = root.clone();
    top.remove("server");
    top.remove("host");
    specs.push(entry(file, dir, "", server, &top)?);
    Ok(specs)
}

/// The `[host."…"]` tables in the order they appear (TOML tables are otherwise sorted).
fn hosts_in_file_order(text: &str) -> Result<Vec<(String, toml::Value)>, toml::de::Error> {
    #[derive(serde::Deserialize)]
    struct Positions {
        #[serde(default)]
        host: BTreeMap<String, toml::Spanned<toml::Value>>,
    }
    let positions: Positions = toml::from_str(text)?;
    let mut hosts: Vec<_> = positions.host.into_iter().collect();
    hosts.sort_by_key(|(_, v)| v.span().start);
    Ok(hosts
        .into_iter()
        .map(|(k, v)| (k, v.into_inner()))
        .collect())
}

/// One endpoint: `server` is its URL (`None` for the registry itself), `table` its keys.
fn entry(
    file: &Path,
    dir: &Path,
    key: &str,
    server: Option<&str>,
    table: &toml::Table,
) -> Result<HostSpec, RegistryError> {
    let mut spec = HostSpec::origin(file.to_owned());
    spec.key = key.to_owned();
    let k = |name: &str| spec_key(key, name);
    for name in table.keys().filter(|n| !KNOWN_KEYS.contains(&n.as_str())) {
        tracing::warn!(file = %file.display(), key = %k(name), "ignoring unknown hosts.toml key");
    }
    let override_path = match table.get("override_path") {
        None => false,
        Some(v) => v.as_bool().ok_or_else(|| {
            RegistryError::config(file, k("override_path"), "must be true or false")
        })?,
    };
    if let Some(server) = server {
        let where_ = if key.is_empty() {
            "server".to_owned()
        } else {
            key.to_owned()
        };
        (spec.scheme, spec.host, spec.path) = server_url(server, override_path)
            .map_err(|reason| RegistryError::config(file, where_, reason))?;
    }
    if let Some(v) = table.get("capabilities") {
        spec.caps =
            capabilities(v).map_err(|r| RegistryError::config(file, k("capabilities"), r))?;
    }
    if let Some(v) = table.get("skip_verify") {
        spec.skip_verify = v.as_bool().ok_or_else(|| {
            RegistryError::config(file, k("skip_verify"), "must be true or false")
        })?;
    }
    if let Some(v) = table.get("ca") {
        let paths = strings(v).ok_or_else(|| {
            RegistryError::config(file, k("ca"), "must be a file name or a list of file names")
        })?;
        spec.ca = paths.iter().map(|p| dir.join(p)).collect();
    }
    if let Some(v) = table.get("client") {
        spec.client = client_pairs(v, dir).ok_or_else(|| {
            RegistryError::config(
                file,
                k("client"),
                "must be a file, a list of files, or a list of [cert, key] pairs",
            )
        })?;
    }
    if let Some(v) = table.get("header") {
        spec.headers = headers(v).map_err(|r| RegistryError::config(file, k("header"), r))?;
    }
    Ok(spec)
}

fn spec_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// `(scheme, host, path)` of a server URL; `https://` is assumed when no scheme is written. The
/// path gets `/v2` appended unless it already ends so or `override_path` is set.
fn server_url(server: &str, override_path: bool) -> Result<(String, String, String), String> {
    let with_scheme = if server.starts_with("http://") || server.starts_with("https://") {
        server.to_owned()
    } else if server.contains("://") {
        return Err(format!(
            "{server:?}: only http:// and https:// are supported"
        ));
    } else {
        format!("https://{server}")
    };
    let url =
        reqwest::Url::parse(&with_scheme).map_err(|e| format!("{server:?} is not a URL: {e}"))?;
    let name = url
        .host_str()
        .ok_or_else(|| format!("{server:?} names no host"))?;
    let host = match url.port() {
        Some(port) => format!("{name}:{port}"),
        None => name.to_owned(),
    };
    let mut path = url.path().trim_end_matches('/').to_owned();
    if !override_path && !path.ends_with("/v2") {
        path.push_str("/v2");
    }
    Ok((url.scheme().to_owned(), host, path))
}

fn capabilities(v: &toml::Value) -> Result<Caps, String> {
    let list = strings(v).ok_or("must be a list such as [\"pull\", \"resolve\"]")?;
    let mut caps = Caps {
        pull: false,
        resolve: false,
        push: false,
    };
    for c in &list {
        match c.to_ascii_lowercase().as_str() {
            "pull" => caps.pull = true,
            "resolve" => caps.resolve = true,
            "push" => caps.push = true,
            _ => {
                return Err(format!(
                    "unknown capability {c:?} (use pull, resolve or push)"
                ));
            }
        }
    }
    Ok(if list.is_empty() { Caps::ALL } else { caps })
}

/// A string or a list of strings.
fn strings(v: &toml::Value) -> Option<Vec<String>> {
    match v {
        toml::Value::String(s) => Some(vec![s.clone()]),
        toml::Value::Array(a) => a.iter().map(|x| x.as_str().map(str::to_owned)).collect(),
        _ => None,
    }
}

fn client_pairs(v: &toml::Value, dir: &Path) -> Option<Vec<(PathBuf, Option<PathBuf>)>> {
    let one = |x: &toml::Value| -> Option<(PathBuf, Option<PathBuf>)> {
        match x {
            toml::Value::String(s) => Some((dir.join(s), None)),
            toml::Value::Array(pair) if pair.len() == 2 => {
                let cert = pair[0].as_str()?;
                let key = pair[1].as_str()?;
                Some((dir.join(cert), Some(dir.join(key))))
            }
            _ => None,
        }
    };
    match v {
        toml::Value::String(_) => one(v).map(|p| vec![p]),
        toml::Value::Array(a) => a.iter().map(one).collect(),
        _ => None,
    }
}

fn headers(v: &toml::Value) -> Result<Vec<(String, String)>, String> {
    let table = v.as_table().ok_or("must be a table: [host.\"…\".header]")?;
    let mut out = Vec::new();
    for (name, value) in table {
        let values =
            strings(value).ok_or(format!("{name}: must be a string or list of strings"))?;
        out.extend(values.into_iter().map(|x| (name.clone(), x)));
    }
    Ok(out)
}

#[cfg(test)]
#[path = "hosts_tests.rs"]
mod tests;
