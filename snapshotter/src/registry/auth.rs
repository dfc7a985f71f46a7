//! Registry authentication: credentials from Docker's `config.json`, the `Basic` and `Bearer`
//! challenges of the distribution spec, and a per-host token cache.
//!
//! Credentials are looked up per endpoint host (a mirror gets its own), in
//! `<dir>/config.json` where `dir` is the configured directory, else `$DOCKER_CONFIG`, else
//! `~/.docker`; `docker_credential` handles `auths`, `credHelpers` and `credsStore`. They are
//! read when a registry first asks for them and again whenever a registry refuses them, so a
//! `docker login` takes effect without a restart.
//!
//! Tokens are cached per host and scope (`repository:<name>:pull`) until shortly before
//! `expires_in`; a 401 on a request that carried one makes the transport call
//! [`Auth::authenticate`] again, once, which fetches a fresh token.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::HeaderValue;

use super::RegistryError;
use super::endpoint::Endpoint;
use super::hosts::plain_http_allowed;

/// A credential from `config.json`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken`), exchanged at the token endpoint.
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username:?}, <redacted>)"),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// The outcome of a credential lookup, with a description of where it looked.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub credential: Option<Credential>,
    /// E.g. `user "alice" from /root/.docker/config.json`, or `none (no entry for …)`.
    pub source: String,
}

/// `config.json`'s directory: `explicit`, else `$DOCKER_CONFIG`, else `$HOME/.docker`.
pub(crate) fn docker_config_dir(
    explicit: Option<&Path>,
    docker_config_env: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| docker_config_env.map(PathBuf::from))
        .or_else(|| home.map(|h| PathBuf::from(h).join(".docker")))
}

/// The `auths` keys Docker uses for `host` (Docker Hub is keyed by its v1 URL).
fn config_keys(host: &str) -> Vec<String> {
    match host {
        "docker.io" | "registry-1.docker.io" | "index.docker.io" => {
            vec!["https://index.docker.io/v1/".to_owned(), host.to_owned()]
        }
        _ => vec![host.to_owned(), format!("https://{host}")],
    }
}

/// Looks up the credential for `host` in `dir/config.json` (blocking: reads the file and may
/// run a credential helper).
pub(crate) fn lookup(dir: Option<&Path>, host: &str) -> Found {
    let Some(dir) = dir else {
        return Found {
            credential: None,
            source: "none (no config.json: neither DOCKER_CONFIG nor HOME is set)".to_owned(),
        };
    };
    let file = dir.join("config.json");
    let text = match std::fs::read(&file) {
        Ok(t) => t,
        Err(e) => {
            return Found {
                credential: None,
                source: format!("none ({} unreadable: {e})", file.display()),
            };
        }
    };
    let mut last = None;
    for key in config_keys(host) {
        match docker_credential::get_credential_from_reader(text.as_slice(), &key) {
            Ok(docker_credential::DockerCredential::UsernamePassword(username, password)) => {
                let source = format!("user {username:?} from {}", file.display());
                let credential = Some(Credential::Basic { username, password });
                return Found { credential, source };
            }
            Ok(docker_credential::DockerCredential::IdentityToken(t)) => {
                return Found {
                    credential: Some(Credential::IdentityToken(t)),
                    source: format!("identity token from {}", file.display()),
                };
            }
            Err(docker_credential::CredentialRetrievalError::NoCredentialConfigured) => {}
            Err(e) => last = Some(e.to_string()),
        }
    }
    let why = last.unwrap_or_else(|| format!("no entry for {host}"));
    Found {
        credential: None,
        source: format!("none ({why} in {})", file.display()),
    }
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// The challenges in a `WWW-Authenticate` value (`Bearer realm="…",service="…"`, `Basic
/// realm="…"`; several may be listed). Unknown schemes are skipped.
pub(crate) fn parse_challenges(value: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        let (scheme, after) = rest.split_once(' ').unwrap_or((rest, ""));
        let (params, next) = auth_params(after);
        rest = next;
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => out.push(Challenge::Basic),
            "bearer" => {
                if let Some(realm) = params.get("realm") {
                    out.push(Challenge::Bearer {
                        realm: realm.clone(),
                        service: params.get("service").cloned(),
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// Reads `k=v` / `k="v"` pairs separated by commas; stops at the next challenge (a token not
/// followed by `=`). Returns the pairs (keys lower-cased) and the unread remainder.
fn auth_params(mut s: &str) -> (HashMap<String, String>, &str) {
    let mut params = HashMap::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        let Some(eq) = s.find('=') else { break };
        let key = &s[..eq];
        if key.is_empty() || key.contains([' ', ',']) {
            break;
        }
        let after = &s[eq + 1..];
        let (value, rest) = if let Some(quoted) = after.strip_prefix('"') {
            quoted_string(quoted)
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.insert(key.to_ascii_lowercase(), value);
        s = rest;
    }
    (params, s)
}

/// The content of a quoted string (backslash escapes honoured) and what follows it.
fn quoted_string(s: &str) -> (String, &str) {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (out, &s[i + 1..]),
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    out.push(escaped);
                }
            }
            _ => out.push(c),
        }
    }
    (out, "")
}

/// Authentication state for all hosts.
#[derive(Debug)]
pub(crate) struct Auth {
    config_dir: Option<PathBuf>,
    insecure: Vec<String>,
    request_timeout: Duration,
    hosts: Mutex<HashMap<String, Arc<HostAuth>>>,
}

#[derive(Debug, Default)]
struct HostAuth {
    state: Mutex<State>,
    /// One credential lookup / token fetch per host at a time.
    refreshing: tokio::sync::Mutex<()>,
}

impl HostAuth {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, Default)]
struct State {
    basic: Option<HeaderValue>,
    /// The host's token endpoint, once it has asked for a token.
    bearer: Option<Challenge>,
    tokens: HashMap<String, (HeaderValue, Instant)>,
    /// Where the last lookup for this host found (or did not find) credentials.
    source: Option<String>,
}

/// Tokens are refreshed this long before the registry says they expire.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);
/// `expires_in` when the token server does not say (the distribution spec's default).
const DEFAULT_EXPIRES_IN: u64 = 60;

impl Auth {
    pub(crate) fn new(
        config_dir: Option<PathBuf>,
        insecure: Vec<String>,
        request_timeout: Duration,
    ) -> Auth {
        Auth {
            config_dir,
            insecure,
            request_timeout,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    fn host(&self, host: &str) -> Arc<HostAuth> {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        hosts.entry(host.to_owned()).or_default().clone()
    }

    /// The `Authorization` value to send to `host` for `scope`, if one is known and current.
    pub(crate) fn header(&self, host: &str, scope: &str) -> Option<HeaderValue> {
        let h = self.host(host);
        let state = h.state();
        if let Some((token, until)) = state.tokens.get(scope)
            && Instant::now() < *until
        {
            return Some(token.clone());
        }
        state.basic.clone()
    }

    /// True if `host` uses tokens and none is current for `scope`: fetch one before sending
    /// rather than collect a 401 first.
    pub(crate) fn wants_token(&self, host: &str, scope: &str) -> bool {
        let h = self.host(host);
        let state = h.state();
        state.bearer.is_some()
            && state
                .tokens
                .get(scope)
                .is_none_or(|(_, until)| Instant::now() >= *until)
    }

    /// Where credentials for `host` were last looked for, for error messages.
    pub(crate) fn source(&self, host: &str) -> String {
        let h = self.host(host);
        let state = h.state();
        state
            .source
            .clone()
            .unwrap_or_else(|| "none (the registry never asked for any)".to_owned())
    }

    /// Answers a challenge from `ep` (or refreshes a known token endpoint when `challenge` is
    /// `None`): reads the credentials again and stores a Basic header or a fresh token.
    /// `used` is the header the refused request carried; if another task has replaced it
    /// meanwhile, nothing is fetched.
    pub(crate) async fn authenticate(
        &self,
        ep: &Endpoint,
        repository: &str,
        scope: &str,
        challenge: Option<&str>,
        used: Option<&HeaderValue>,
    ) -> Result<(), RegistryError> {
        let h = self.host(&ep.host);
        let _one_at_a_time = h.refreshing.lock().await;
        let current = self.header(&ep.host, scope);
        if current.is_some() && current.as_ref() != used {
            return Ok(());
        }
        let challenges = challenge.map(parse_challenges).unwrap_or_default();
        let known = h.state().bearer.clone();
        let chosen = challenges
            .iter()
            .find(|c| matches!(c, Challenge::Bearer { .. }))
            .or(challenges.first())
            .cloned()
            .or(known);
        let found = self.lookup_blocking(&ep.host).await;
        h.state().source = Some(found.source.clone());
        let refused = |reason: String| RegistryError::Unauthorized {
            host: ep.host.clone(),
            repository: repository.to_owned(),
            credentials: found.source.clone(),
            reason,
        };
        match chosen {
            None => Err(refused(
                "401 without a usable WWW-Authenticate challenge".to_owned(),
            )),
            Some(Challenge::Basic) => match &found.credential {
                Some(Credential::Basic { username, password }) => {
                    let value = basic_header(username, password);
                    h.state().basic = Some(value);
                    Ok(())
                }
                Some(Credential::IdentityToken(_)) => Err(refused(
                    "it asks for a user name and password, config.json holds an identity token"
                        .to_owned(),
                )),
                None => Err(refused("it asks for a user name and password".to_owned())),
            },
            Some(bearer @ Challenge::Bearer { .. }) => {
                let token = self
                    .fetch_token(ep, &bearer, scope, &found, &refused)
                    .await?;
                let mut state = h.state();
                state.bearer = Some(bearer);
                state.tokens.insert(scope.to_owned(), token);
                Ok(())
            }
        }
    }

    async fn lookup_blocking(&self, host: &str) -> Found {
        let dir = self.config_dir.clone();
        let host_owned = host.to_owned();
        tokio::task::spawn_blocking(move || lookup(dir.as_deref(), &host_owned))
            .await
            .unwrap_or_else(|e| Found {
                credential: None,
                source: format!("none (credential lookup failed: {e})"),
            })
    }

    /// Fetches a token from the challenge's realm (GET with Basic credentials, or the OAuth2
    /// refresh-token POST for an identity token).
    async fn fetch_token(
        &self,
        ep: &Endpoint,
        challenge: &Challenge,
        scope: &str,
        found: &Found,
        refused: &(dyn Fn(String) -> RegistryError + Sync),
    ) -> Result<(HeaderValue, Instant), RegistryError> {
        let Challenge::Bearer { realm, service } = challenge else {
            return Err(refused("no token endpoint".to_owned()));
        };
        let url = self.realm_url(ep, realm)?;
        let service = service.clone().unwrap_or_default();
        let request = match &found.credential {
            Some(Credential::IdentityToken(refresh)) => {
                let form = form_body(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh),
                    ("service", &service),
                    ("scope", scope),
                    ("client_id", "augur"),
                ]);
                ep.client
                    .post(url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form)
            }
            other => {
                let mut u = url;
                u.query_pairs_mut()
                    .append_pair("service", &service)
                    .append_pair("scope", scope);
                let req = ep.client.get(u);
                match other {
                    Some(Credential::Basic { username, password }) => {
                        req.basic_auth(username, Some(password))
                    }
                    _ => req,
                }
            }
        };
        let unreachable = |e: String| RegistryError::Unreachable {
            host: realm.clone(),
            attempts: 1,
            last_error: e,
        };
        let resp = request
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(|e| unreachable(super::transport::describe(&e)))?;
        let status = resp.status();
        if status == 401 || status == 403 {
            return Err(refused(format!("token server {realm} answered {status}")));
        }
        if status.is_server_error() {
            return Err(unreachable(format!(
                "token server {realm} answered {status}"
            )));
        }
        if !status.is_success() {
            return Err(RegistryError::protocol(
                &ep.host,
                format!("token server {realm} answered {status}"),
            ));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| unreachable(super::transport::describe(&e)))?;
        token_from_json(&body).ok_or_else(|| {
            RegistryError::protocol(&ep.host, format!("token server {realm} sent no token"))
        })
    }

    /// The realm as a URL, refusing plain HTTP to hosts that may not use it.
    fn realm_url(&self, ep: &Endpoint, realm: &str) -> Result<reqwest::Url, RegistryError> {
        let url = reqwest::Url::parse(realm).map_err(|e| {
            RegistryError::protocol(&ep.host, format!("token realm {realm:?} is not a URL: {e}"))
        })?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => String::new(),
        };
        match url.scheme() {
            "https" => Ok(url),
            "http" if plain_http_allowed(&host, &self.insecure) => Ok(url),
            _ => Err(RegistryError::protocol(
                &ep.host,
                format!(
                    "token realm {realm} is not https; credentials are only sent over plain HTTP \
                     to hosts listed in insecure_hosts"
                ),
            )),
        }
    }
}

fn basic_header(username: &str, password: &str) -> HeaderValue {
    let raw = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let mut v = HeaderValue::from_str(&format!("Basic {raw}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    v.set_sensitive(true);
    v
}

/// `application/x-www-form-urlencoded` encoding of `pairs`.
fn form_body(pairs: &[(&str, &str)]) -> String {
    let mut scratch = reqwest::Url::parse("http://form.invalid/").expect("constant URL parses");
    scratch.query_pairs_mut().extend_pairs(pairs);
    scratch.query().unwrap_or_default().to_owned()
}

/// The bearer header and its deadline from a token response (`token` or `access_token`).
fn token_from_json(body: &[u8]) -> Option<(HeaderValue, Instant)> {
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
    }
    let t: TokenResponse = serde_json::from_slice(body).ok()?;
    let token = t.token.filter(|s| !s.is_empty()).or(t.access_token)?;
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    let lifetime = Duration::from_secs(t.expires_in.unwrap_or(DEFAULT_EXPIRES_IN).max(1));
    // Short-lived tokens are still used for at least half their life.
    let usable = lifetime.saturating_sub(EXPIRY_MARGIN).max(lifetime / 2);
    Some((value, Instant::now() + usable))
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
