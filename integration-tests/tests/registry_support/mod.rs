//! Helpers for `registry_client.rs`: a request-counting TCP proxy and a token server for
//! distribution's token authentication, both on 127.0.0.1 and stopped on drop; certificates and
//! JWT signatures come from the `openssl` command.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use augur_integration_tests::run_ok;
use base64::Engine as _;

/// Accepts on 127.0.0.1 until dropped; each connection is handed to `serve` on its own thread.
struct Acceptor {
    port: u16,
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: Option<JoinHandle<()>>,
}

impl Acceptor {
    fn start(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> Acceptor {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let serve = Arc::new(serve);
        let (stop2, streams2, threads2) = (stop.clone(), streams.clone(), threads.clone());
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                if let Ok(c) = conn.try_clone() {
                    lock(&streams2).push(c);
                }
                let serve = serve.clone();
                lock(&threads2).push(std::thread::spawn(move || serve(conn)));
            }
        });
        Acceptor {
            port,
            stop,
            streams,
            threads,
            accept: Some(accept),
        }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the accept loop
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for s in lock(&self.streams).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        let threads: Vec<_> = lock(&self.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A TCP proxy to `127.0.0.1:<upstream>` that counts occurrences of a byte string in what
/// clients send (e.g. a request line), across reads and connections.
pub struct CountingProxy {
    acceptor: Acceptor,
    count: Arc<AtomicUsize>,
}

impl CountingProxy {
    pub fn start(upstream: u16, needle: &str) -> CountingProxy {
        let count = Arc::new(AtomicUsize::new(0));
        let (count2, needle) = (count.clone(), needle.as_bytes().to_vec());
        let acceptor = Acceptor::start(move |client| {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
                return;
            };
            let back = std::thread::spawn(move || pump(server2, client2, None));
            pump(client, server, Some((&needle, &count2)));
            let _ = back.join();
        });
        CountingProxy { acceptor, count }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.acceptor.port)
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// Copies `from` → `to` until either end closes, counting `needle` if asked.
fn pump(mut from: TcpStream, mut to: TcpStream, counting: Option<(&[u8], &AtomicUsize)>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((needle, count)) = counting {
            carry.extend_from_slice(&buf[..n]);
            let hits = carry.windows(needle.len()).filter(|w| w == &needle).count();
            count.fetch_add(hits, Ordering::SeqCst);
            let keep = carry.len().min(needle.len() - 1);
            carry.drain(..carry.len() - keep);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    // Either side closing ends the connection (both pumps then stop).
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// A signing key and its self-signed certificate, made by `openssl` in `dir`.
pub struct SigningKey {
    pub key: PathBuf,
    pub cert: PathBuf,
    /// The certificate in DER, base64 (a JWT `x5c` entry).
    x5c: String,
}

impl SigningKey {
    pub fn generate(dir: &Path, name: &str) -> SigningKey {
        let key = dir.join(format!("{name}.key"));
        let cert = dir.join(format!("{name}.pem"));
        self_signed(&key, &cert, name, None);
        let der_file = dir.join(format!("{name}.der"));
        run_ok(
            Command::new("openssl")
                .args(["x509", "-outform", "DER", "-in"])
                .arg(&cert)
                .arg("-out")
                .arg(&der_file),
        );
        let der = std::fs::read(&der_file).expect("read DER certificate");
        SigningKey {
            key,
            cert,
            x5c: base64::engine::general_purpose::STANDARD.encode(der),
        }
    }
}

/// A self-signed certificate (with `san`, e.g. `IP:127.0.0.1`, if given) and its RSA key.
pub fn self_signed(key: &Path, cert: &Path, cn: &str, san: Option<&str>) {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
    ])
    .arg(format!("/CN={cn}"))
    .arg("-keyout")
    .arg(key)
    .arg("-out")
    .arg(cert);
    if let Some(san) = san {
        // A server certificate: rustls refuses a CA certificate as the end entity.
        cmd.args(["-addext", "basicConstraints=critical,CA:FALSE", "-addext"])
            .arg(format!("subjectAltName={san}"));
    }
    run_ok(&mut cmd);
}

/// A token server for distribution's `auth.token`: `GET /token?service=…&scope=…` with the
/// right Basic credentials gets an RS256 JWT signed by the current [`SigningKey`].
pub struct TokenServer {
    acceptor: Acceptor,
    key: Arc<Mutex<Arc<SigningKey>>>,
    issued: Arc<AtomicUsize>,
}

pub const TOKEN_SERVICE: &str = "augur-tests";
pub const TOKEN_ISSUER: &str = "augur-tests-issuer";

impl TokenServer {
    pub fn start(key: SigningKey, user: &str, password: &str) -> TokenServer {
        let key = Arc::new(Mutex::new(Arc::new(key)));
        let issued = Arc::new(AtomicUsize::new(0));
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let (key2, issued2) = (key.clone(), issued.clone());
        let acceptor = Acceptor::start(move |conn| {
            let current = lock(&key2).clone();
            serve_token(conn, &basic, &current, &issued2);
        });
        TokenServer {
            acceptor,
            key,
            issued,
        }
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.acceptor.port)
    }

    /// Tokens issued so far.
    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }

    /// Signs future tokens with `key`.
    pub fn rotate(&self, key: SigningKey) {
        *lock(&self.key) = Arc::new(key);
    }
}

fn serve_token(mut conn: TcpStream, basic: &str, key: &SigningKey, issued: &AtomicUsize) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let authorized = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("authorization") && value.trim() == basic
        })
    });
    let head = head.to_lowercase();
    let scope_repo = head
        .split_whitespace()
        .nth(1)
        .and_then(|target| target.split("scope=repository%3a").nth(1))
        .and_then(|rest| rest.split("%3a").next())
        .map(|r| r.replace("%2f", "/"));
    let (status, body) = match (authorized, scope_repo) {
        (true, Some(repo)) => {
            issued.fetch_add(1, Ordering::SeqCst);
            let jwt = sign_jwt(key, &repo);
            (
                "200 OK",
                format!(r#"{{"token": "{jwt}", "expires_in": 300}}"#),
            )
        }
        (true, None) => ("400 Bad Request", "{}".to_owned()),
        (false, _) => ("401 Unauthorized", "{}".to_owned()),
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// An RS256 JWT granting pull and push on `repo`.
fn sign_jwt(key: &SigningKey, repo: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [key.x5c]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": "tester", "aud": TOKEN_SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{repo}"),
        "access": [{"type": "repository", "name": repo, "actions": ["pull", "push"]}],
    });
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&key.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn openssl dgst");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write signing input");
    let out = child.wait_with_output().expect("openssl dgst");
    assert!(out.status.success(), "openssl dgst failed");
    format!("{input}.{}", b64url(&out.stdout))
}
