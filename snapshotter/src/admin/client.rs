//! The admin API's client, for `augurctl`: one HTTP/1.1 request per connection over the unix
//! socket (or over TCP with a bearer token, `admin.tcp_address`), JSON in and out, and a server's
//! `{"error": ...}` turned into an error that says it.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

/// Why a call to the admin API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers on the socket.
    #[error(
        "cannot connect to the admin socket {}: {reason} (is augur-snapshotter running? is \
         admin.address set differently in its config? the socket is root-only)",
        path.display()
    )]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The OS error (in the message, not a `source`: printed once, before the hints).
        reason: std::io::Error,
    },
    /// Nothing answers at the TCP address.
    #[error(
        "cannot connect to the admin API at {address}: {reason} (is admin.tcp_address set to it \
         in the daemon's config?)"
    )]
    ConnectTcp {
        /// `host:port`.
        address: String,
        /// The OS error.
        reason: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("admin API request failed: {0}")]
    Http(String),
    /// The daemon refused the request.
    #[error("the daemon answered {status}: {message}")]
    Refused {
        /// HTTP status.
        status: StatusCode,
        /// Its `error` message.
        message: String,
    },
    /// The answer was not the JSON expected.
    #[error("unexpected answer from the admin API: {0}")]
    Decode(String),
}

/// A connection's request sender, and the task driving it (aborted when the answer is read).
type Connection = (
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<()>,
);

/// Where the daemon's admin API is.
#[derive(Clone)]
enum Endpoint {
    /// Its unix socket.
    Unix(PathBuf),
    /// Its TCP listener (`host:port`) and the bearer token it wants.
    Tcp { authority: String, token: String },
}

/// A client of one daemon's admin API.
#[derive(Clone)]
pub struct AdminClient {
    endpoint: Endpoint,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.endpoint {
            Endpoint::Unix(p) => f.debug_tuple("AdminClient").field(p).finish(),
            // Never the token.
            Endpoint::Tcp { authority, .. } => {
                f.debug_tuple("AdminClient").field(authority).finish()
            }
        }
    }
}

impl AdminClient {
    /// A client for the socket at `socket` (nothing is connected yet).
    pub fn new(socket: &Path) -> AdminClient {
        AdminClient {
            endpoint: Endpoint::Unix(socket.to_path_buf()),
        }
    }

    /// A client for the TCP listener at `authority` (`host:port`), sending `token` as bearer.
    pub fn tcp(authority: &str, token: &str) -> AdminClient {
        AdminClient {
            endpoint: Endpoint::Tcp {
                authority: authority.to_owned(),
                token: token.to_owned(),
            },
        }
    }

    /// `GET path`, decoded.
    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with `body` as JSON, decoded.
    pub async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, ClientError> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `PUT path` with `body` as JSON, decoded.
    pub async fn put<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, ClientError> {
        self.call(Method::PUT, path, Some(body)).await
    }

    /// `GET path`, its body copied to `out` as it arrives (a large export is never held in
    /// memory); returns the bytes copied.
    pub async fn get_to(
        &self,
        path: &str,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<u64, ClientError> {
        use tokio::io::AsyncWriteExt;
        let (resp, driver) = self.send(Method::GET, path, None).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body.collect().await.map_err(http)?.to_bytes();
            driver.abort();
            return Err(refused(status, &bytes));
        }
        let mut copied = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(http)?;
            if let Ok(data) = frame.into_data() {
                out.write_all(&data)
                    .await
                    .map_err(|e| ClientError::Http(format!("cannot write the answer: {e}")))?;
                copied += data.len() as u64;
            }
        }
        driver.abort();
        out.flush()
            .await
            .map_err(|e| ClientError::Http(format!("cannot write the answer: {e}")))?;
        Ok(copied)
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ClientError> {
        let (resp, driver) = self.send(method, path, body).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(http)?.to_bytes();
        driver.abort();
        if !status.is_success() {
            return Err(refused(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Sends one request; the answer's body is read through the returned connection driver,
    /// which the caller aborts when done.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<
        (
            hyper::Response<hyper::body::Incoming>,
            tokio::task::JoinHandle<()>,
        ),
        ClientError,
    > {
        let (mut sender, driver) = self.connect().await?;
        let mut req = Request::builder().method(method).uri(path);
        req = match &self.endpoint {
            Endpoint::Unix(_) => req.header("host", "augur"),
            Endpoint::Tcp { authority, token } => req
                .header("host", authority.as_str())
                .header("authorization", format!("Bearer {token}")),
        };
        let bytes = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(b).map_err(|e| ClientError::Decode(e.to_string()))?)
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(http)?;
        Ok((resp, driver))
    }
}

impl AdminClient {
    /// One HTTP/1.1 connection to the endpoint, and the task driving it.
    async fn connect(&self) -> Result<Connection, ClientError> {
        match &self.endpoint {
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|reason| ClientError::Connect {
                        path: path.clone(),
                        reason,
                    })?;
                handshake(stream).await
            }
            Endpoint::Tcp { authority, .. } => {
                let stream = tokio::net::TcpStream::connect(authority.as_str())
                    .await
                    .map_err(|reason| ClientError::ConnectTcp {
                        address: authority.clone(),
                        reason,
                    })?;
                handshake(stream).await
            }
        }
    }
}

async fn handshake(
    stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
) -> Result<Connection, ClientError> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((sender, driver))
}

fn http(e: hyper::Error) -> ClientError {
    ClientError::Http(e.to_string())
}

/// The error of a refused request: the `error` of its JSON body, or the body as text.
fn refused(status: StatusCode, bytes: &[u8]) -> ClientError {
    let message = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned());
    ClientError::Refused { status, message }
}
