//! One registry request, made over a registry's endpoints with retries, re-authentication and
//! one classification of every answer into "done", "try again" or "give up".
//!
//! A round tries each usable endpoint in order (mirrors first, the registry itself last) and stops
//! at the first success. A failure that may pass (connection refused or reset, timeout, 408,
//! 429, 5xx, a body cut short) moves on to the next endpoint; when the last endpoint has also
//! failed that way, the round is repeated after a backoff, up to `retries` times, then the
//! request fails with [`RegistryError::Unreachable`]. A definite answer (404, 401 after
//! re-authenticating, another 4xx) from the fallback endpoint (the last one configured: the
//! registry itself or its `server`) ends the request at once, even when a mirror that is down
//! was moved behind it; from a mirror it only moves on to the next endpoint.
//!
//! A 401 is answered once per attempt: the challenge goes to [`Auth::authenticate`] (fresh
//! credentials, a fresh token) and the request is repeated; a second 401 is final.
//!
//! What to do with a successful response is the caller's [`Reader`], run inside the attempt, so
//! that a body cut off mid-way is retried like any other transient failure.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::{self, Stream};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use tokio::io::AsyncReadExt;

use super::RegistryError;
use super::auth::Auth;
use super::endpoint::{Cap, Endpoint};
use crate::metrics::hot::HOT;

/// Where a request goes.
#[derive(Debug)]
pub(crate) enum Target {
    /// A path under the repository, e.g. `blobs/sha256:…`.
    Api(String),
    /// An absolute URL the registry handed out (an upload location).
    Url(String),
}

/// A request, independent of the endpoint it is sent to.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub method: Method,
    pub cap: Cap,
    /// The repository path, e.g. `library/busybox`.
    pub repository: &'a str,
    /// `registry/repository`, for messages.
    pub display: &'a str,
    pub target: Target,
    pub headers: HeaderMap,
    pub body: Option<Body>,
    /// What is asked for, for messages: `blob sha256:…`, `manifest latest`.
    pub what: String,
    /// Bound the whole exchange, body included, by the request timeout (not for streams, whose
    /// reads are bounded individually instead).
    pub whole_timeout: bool,
}

/// What a request sends. Every attempt sends it again from the start.
pub(crate) enum Body {
    /// Bytes in memory (manifests, small blobs).
    Bytes(Bytes),
    /// A local file, streamed: blobs too large to hold in memory.
    File {
        path: PathBuf,
        /// Told how many bytes of this attempt have been handed to the connection so far.
        progress: Option<SendProgress>,
    },
}

/// A callback for the bytes of a streamed body sent so far (restarts at 0 on a retry).
pub type SendProgress = Arc<dyn Fn(u64) + Send + Sync>;

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Body::File { path, .. } => write!(f, "File({})", path.display()),
        }
    }
}

/// Why an attempt on one endpoint failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Transient; worth another endpoint or another round.
    Retry(String),
    /// Definite.
    Final(RegistryError),
}

/// Turns a successful response into the caller's result.
pub(crate) type Reader<'r, T> =
    &'r (dyn Fn(Arc<Endpoint>, Response) -> BoxFuture<'static, Result<T, Failure>> + Send + Sync);

/// Waits between retry rounds: `initial·2ⁿ` capped at `max`, each drawn uniformly from the upper
/// half of that so that clients that failed together do not retry together.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The nominal wait before retry `n` (0-based).
    pub(crate) fn nominal(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The wait actually used before retry `n`: in `[nominal/2, nominal]`.
    pub(crate) fn delay(&self, n: u32) -> Duration {
        let half = self.nominal(n) / 2;
        half + half.mul_f64(random_unit())
    }
}

/// A number in `[0, 1)` from the standard library's per-instance random hasher keys.
fn random_unit() -> f64 {
    let bits = RandomState::new().build_hasher().finish() >> 11;
    bits as f64 / (1u64 << 53) as f64
}

/// Sends requests for every registry.
#[derive(Debug)]
pub(crate) struct Transport {
    pub auth: Auth,
    pub backoff: Backoff,
    pub retries: u32,
    pub request_timeout: Duration,
}

impl Transport {
    /// Runs `req` over `eps` (already filtered and ordered) and hands the first successful
    /// response to `read`. Recorded in the metrics: duration, retries, and a final error's kind.
    pub(crate) async fn run<T>(
        &self,
        eps: &[Arc<Endpoint>],
        req: &Request<'_>,
        read: Reader<'_, T>,
    ) -> Result<T, RegistryError> {
        let start = Instant::now();
        let result = self.rounds(eps, req, read).await;
        HOT.registry_request(start.elapsed());
        if let Err(e) = &result {
            HOT.registry_error(e.kind());
        }
        result
    }

    async fn rounds<T>(
        &self,
        eps: &[Arc<Endpoint>],
        req: &Request<'_>,
        read: Reader<'_, T>,
    ) -> Result<T, RegistryError> {
        let mut last = (String::new(), "no endpoint".to_owned());
        for round in 0..=self.retries {
            if round > 0 {
                HOT.registry_retry();
                let wait = self.backoff.delay(round - 1);
                tracing::warn!(host = %last.0, error = %last.1, retry = round, of = self.retries,
                    wait_ms = wait.as_millis() as u64, "registry request failed; retrying");
                tokio::time::sleep(wait).await;
            }
            let mut transient = false;
            let mut mirror_answer = None;
            for ep in eps {
                match self.attempt(ep, req, read).await {
                    Ok(v) => {
                        ep.mark_up();
                        return Ok(v);
                    }
                    Err(Failure::Retry(e)) => {
                        transient = true;
                        last = (ep.host.clone(), e);
                    }
                    Err(Failure::Final(e)) if ep.fallback => return Err(e),
                    Err(Failure::Final(e)) => {
                        tracing::debug!(mirror = %ep.host, error = %e, "mirror failed; trying the next host");
                        mirror_answer = Some(e);
                    }
                }
            }
            if let (false, Some(e)) = (transient, mirror_answer) {
                return Err(e); // every host answered definitely: retrying changes nothing
            }
        }
        Err(RegistryError::Unreachable {
            host: last.0,
            attempts: self.retries + 1,
            last_error: last.1,
        })
    }

    async fn attempt<T>(
        &self,
        ep: &Arc<Endpoint>,
        req: &Request<'_>,
        read: Reader<'_, T>,
    ) -> Result<T, Failure> {
        let scope = scope(req);
        if self.auth.wants_token(&ep.host, &scope) {
            self.auth
                .authenticate(ep, req.display, &scope, None, None)
                .await
                .map_err(failure)?;
        }
        let used = self.auth.header(&ep.host, &scope);
        let mut resp = self.send(ep, req, used.clone()).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            drop(resp);
            self.auth
                .authenticate(ep, req.display, &scope, challenge.as_deref(), used.as_ref())
                .await
                .map_err(failure)?;
            let fresh = self.auth.header(&ep.host, &scope);
            resp = self.send(ep, req, fresh.clone()).await?;
            if resp.status() == StatusCode::UNAUTHORIZED {
                let reason = match fresh {
                    Some(_) => "401: it refused the credentials".to_owned(),
                    None => "401 Unauthorized".to_owned(),
                };
                return Err(Failure::Final(self.unauthorized(ep, req, reason)));
            }
        }
        self.check_status(ep, req, resp)
            .await
            .map(|r| read(ep.clone(), r))?
            .await
    }

    async fn send(
        &self,
        ep: &Endpoint,
        req: &Request<'_>,
        auth: Option<HeaderValue>,
    ) -> Result<Response, Failure> {
        let (url, own_host) = match &req.target {
            Target::Api(tail) => (ep.url(req.repository, tail, req.cap), true),
            Target::Url(u) => (u.clone(), same_origin(u, &ep.base)),
        };
        let mut b = ep
            .client
            .request(req.method.clone(), url)
            .headers(ep.headers.clone())
            .headers(req.headers.clone());
        if let (Some(a), true) = (auth, own_host) {
            b = b.header(AUTHORIZATION, a);
        }
        match &req.body {
            None => {}
            Some(Body::Bytes(bytes)) => b = b.body(bytes.clone()),
            Some(Body::File { path, progress }) => {
                let file = tokio::fs::File::open(path).await.map_err(|e| {
                    Failure::Final(RegistryError::LocalFile {
                        path: path.clone(),
                        source: Arc::new(e),
                    })
                })?;
                b = b.body(reqwest::Body::wrap_stream(file_chunks(
                    file,
                    progress.clone(),
                )));
            }
        }
        if req.whole_timeout {
            b = b.timeout(self.request_timeout);
        }
        b.send().await.map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                ep.mark_down();
            }
            Failure::Retry(describe(&e))
        })
    }

    /// Passes a 2xx response on; classifies anything else.
    async fn check_status(
        &self,
        ep: &Endpoint,
        req: &Request<'_>,
        resp: Response,
    ) -> Result<Response, Failure> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        match status.as_u16() {
            404 => Err(Failure::Final(RegistryError::NotFound {
                what: req.what.clone(),
                repository: req.display.to_owned(),
                host: ep.host.clone(),
            })),
            403 => Err(Failure::Final(self.unauthorized(
                ep,
                req,
                "403 Forbidden".to_owned(),
            ))),
            408 | 429 | 500..=599 => Err(Failure::Retry(format!(
                "{} {} answered {status}",
                req.method, req.what
            ))),
            _ => {
                let body = resp.text().await.unwrap_or_default();
                let excerpt: String = body.chars().take(300).collect();
                Err(Failure::Final(RegistryError::protocol(
                    &ep.host,
                    format!("{} {} answered {status}: {excerpt}", req.method, req.what),
                )))
            }
        }
    }

    fn unauthorized(&self, ep: &Endpoint, req: &Request<'_>, reason: String) -> RegistryError {
        RegistryError::Unauthorized {
            host: ep.host.clone(),
            repository: req.display.to_owned(),
            credentials: self.auth.source(&ep.host),
            reason,
        }
    }
}

/// A file as a stream of chunks, reporting the running total to `progress`.
fn file_chunks(
    file: tokio::fs::File,
    progress: Option<SendProgress>,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    const CHUNK: usize = 256 << 10;
    stream::try_unfold((file, 0u64), move |(mut file, sent)| {
        let progress = progress.clone();
        async move {
            let mut buf = BytesMut::zeroed(CHUNK);
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return Ok(None);
            }
            buf.truncate(n);
            let sent = sent + n as u64;
            if let Some(p) = &progress {
                p(sent);
            }
            Ok(Some((buf.freeze(), (file, sent))))
        }
    })
}

/// The token scope a request needs.
fn scope(req: &Request<'_>) -> String {
    let actions = if req.cap == Cap::Push {
        "pull,push"
    } else {
        "pull"
    };
    format!("repository:{}:{actions}", req.repository)
}

/// An authentication error as an attempt failure (a token server that is down is transient).
fn failure(e: RegistryError) -> Failure {
    match e {
        RegistryError::Unreachable { last_error, .. } => Failure::Retry(last_error),
        other => Failure::Final(other),
    }
}

/// True if `url` has the same scheme, host and port as `base` (credentials go nowhere else).
fn same_origin(url: &str, base: &str) -> bool {
    match (reqwest::Url::parse(url), reqwest::Url::parse(base)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

/// A reqwest error with its causes (`error sending request: … : Connection refused`).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out: "
    } else if e.is_connect() {
        "cannot connect: "
    } else {
        ""
    };
    format!("{kind}{}", crate::error::chain(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        };
        let nominal: Vec<u128> = (0..8).map(|n| b.nominal(n).as_millis()).collect();
        assert_eq!(nominal, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(
            b.nominal(200),
            Duration::from_secs(5),
            "no overflow on huge retry counts"
        );
    }

    #[test]
    fn backoff_jitter_stays_in_the_upper_half() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        };
        let mut seen = std::collections::HashSet::new();
        for n in 0..6 {
            for _ in 0..50 {
                let d = b.delay(n);
                assert!(
                    d >= b.nominal(n) / 2 && d <= b.nominal(n),
                    "{d:?} for retry {n}"
                );
                seen.insert(d);
            }
        }
        assert!(seen.len() > 10, "delays are not jittered: {seen:?}");
    }

    #[test]
    fn credentials_only_go_to_the_endpoint_itself() {
        let base = "https://reg.example:5000/v2";
        assert!(same_origin(
            "https://reg.example:5000/v2/x/blobs/uploads/1?_state=a",
            base
        ));
        assert!(!same_origin("https://s3.example/bucket/1", base));
        assert!(!same_origin("http://reg.example:5000/v2/x", base));
        assert!(!same_origin("not a url", base));
    }
}
