//! A TCP proxy on 127.0.0.1 that adds network latency, and counts what passes through it: the
//! stand-in for `tc netem delay`, which this kernel lacks (`CONFIG_NET_SCH_NETEM` unset; env.md
//! §7). Bandwidth is limited separately with HTB on the proxy's port ([`crate::netns::RateLimit`]).
//!
//! **Delay model.** `one_way` is added once per direction to every chunk read from either side:
//! a chunk the client sends reaches the upstream `one_way` later, and an answer reaches the
//! client `one_way` after the proxy read it, so a request/response exchange costs a round trip
//! of `2 × one_way` on top of transfer time. A new connection first waits `2 × one_way` before
//! the proxy connects upstream, as the TCP handshake costs one round trip on a real network, so
//! the first answer on a new connection comes after `4 × one_way`. Chunks keep their order, and
//! at most [`MAX_QUEUED`] chunks per direction wait in the proxy, so a slow reader holds up the
//! sender as a real network's window would.
//!
//! **Counting.** Bytes delivered to clients (`down`: what they downloaded through the proxy),
//! bytes delivered upstream (`up`) and connections accepted, as atomic counters that can be read
//! at any moment ([`ProxyCounters`]).
//!
//! **Threads.** The proxy runs on its own thread with a current-thread tokio runtime, which
//! first enters a network namespace if one is given, so that its sockets live there. Dropping
//! the [`DelayProxy`] stops it and closes every connection.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Largest chunk read from a socket at once.
const CHUNK: usize = 64 * 1024;
/// Chunks per direction waiting out their delay before the reader of that side stops reading.
pub const MAX_QUEUED: usize = 256;

/// Where a proxy listens and what it adds.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Network namespace to run in (`/run/netns/NAME`); `None`: this process's.
    pub netns: Option<PathBuf>,
    /// Port on 127.0.0.1 the proxy listens on.
    pub listen_port: u16,
    /// Port on 127.0.0.1 it forwards to.
    pub upstream_port: u16,
    /// Delay added per direction (see the module map).
    pub one_way: Duration,
}

/// What went through a proxy so far.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    down: AtomicU64,
    up: AtomicU64,
    connections: AtomicU64,
}

impl ProxyCounters {
    /// Bytes delivered to clients (from upstream).
    pub fn down(&self) -> u64 {
        self.down.load(Ordering::Relaxed)
    }

    /// Bytes delivered upstream (from clients).
    pub fn up(&self) -> u64 {
        self.up.load(Ordering::Relaxed)
    }

    /// Connections accepted.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

/// A running proxy; dropping it stops it.
#[derive(Debug)]
pub struct DelayProxy {
    config: ProxyConfig,
    counters: Arc<ProxyCounters>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DelayProxy {
    /// Starts the proxy and returns once it listens (or why it could not).
    pub fn start(config: ProxyConfig) -> std::io::Result<DelayProxy> {
        let counters = Arc::new(ProxyCounters::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let (config, counters) = (config.clone(), Arc::clone(&counters));
            std::thread::Builder::new()
                .name(format!("delay-proxy-{}", config.listen_port))
                .spawn(move || serve(&config, counters, stop_rx, &ready_tx))?
        };
        let mut proxy = DelayProxy {
            config,
            counters,
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(proxy),
            Ok(Err(e)) => {
                proxy.shutdown();
                Err(e)
            }
            Err(_) => {
                proxy.shutdown();
                Err(std::io::Error::other(
                    "delay proxy thread ended at start-up",
                ))
            }
        }
    }

    /// The counters (shared; they keep counting while the proxy runs).
    pub fn counters(&self) -> Arc<ProxyCounters> {
        Arc::clone(&self.counters)
    }

    /// `127.0.0.1:<listen port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.config.listen_port)
    }

    /// Its configuration.
    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The proxy thread: enter the namespace, bind, report readiness, serve until stopped. Dropping
/// the runtime at the end cancels every connection task.
fn serve(
    config: &ProxyConfig,
    counters: Arc<ProxyCounters>,
    stop: oneshot::Receiver<()>,
    ready: &std::sync::mpsc::Sender<std::io::Result<()>>,
) {
    let setup = || -> std::io::Result<(tokio::runtime::Runtime, std::net::TcpListener)> {
        if let Some(ns) = &config.netns {
            crate::netns::enter(ns)?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = std::net::TcpListener::bind(SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            config.listen_port,
        )))?;
        listener.set_nonblocking(true)?;
        Ok((rt, listener))
    };
    let (rt, listener) = match setup() {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    rt.block_on(async {
        let Ok(listener) = TcpListener::from_std(listener) else {
            return;
        };
        tokio::select! {
            _ = stop => {}
            () = accept_loop(listener, config.upstream_port, config.one_way, counters) => {}
        }
    });
}

async fn accept_loop(
    listener: TcpListener,
    upstream_port: u16,
    one_way: Duration,
    counters: Arc<ProxyCounters>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        counters.connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connection(
            client,
            upstream_port,
            one_way,
            Arc::clone(&counters),
        ));
    }
}

/// One client connection: a handshake round trip, then both directions delayed.
async fn connection(
    client: TcpStream,
    upstream_port: u16,
    one_way: Duration,
    counters: Arc<ProxyCounters>,
) {
    tokio::time::sleep(one_way * 2).await;
    let Ok(upstream) = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream_port)).await else {
        return;
    };
    // Small requests must leave at once: Nagle plus delayed ACKs would add up to 40 ms a turn.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_rd, client_wr) = client.into_split();
    let (up_rd, up_wr) = upstream.into_split();
    let to_upstream = pipe(client_rd, up_wr, one_way, Counter(&counters, Direction::Up));
    let to_client = pipe(
        up_rd,
        client_wr,
        one_way,
        Counter(&counters, Direction::Down),
    );
    tokio::join!(to_upstream, to_client);
}

#[derive(Clone, Copy)]
enum Direction {
    Up,
    Down,
}

/// Which counter a pipe adds its delivered bytes to.
#[derive(Clone, Copy)]
struct Counter<'a>(&'a ProxyCounters, Direction);

impl Counter<'_> {
    fn add(self, n: usize) {
        let c = match self.1 {
            Direction::Up => &self.0.up,
            Direction::Down => &self.0.down,
        };
        c.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Copies `from` to `to`, each chunk delivered `delay` after it was read; passes on EOF the
/// same way (a half-close arrives `delay` late too).
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
    count: Counter<'_>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(MAX_QUEUED);
    let reader = async move {
        loop {
            let mut buf = vec![0; CHUNK];
            let n = from.read(&mut buf).await.unwrap_or(0);
            buf.truncate(n);
            if tx.send((Instant::now() + delay, buf)).await.is_err() || n == 0 {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, buf)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if buf.is_empty() || to.write_all(&buf).await.is_err() {
                break;
            }
            count.add(buf.len());
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// The config of a proxy for `upstream_port` on a free port of this namespace (tests).
pub fn local(upstream_port: u16, one_way: Duration) -> ProxyConfig {
    ProxyConfig {
        netns: None,
        listen_port: crate::free_port(),
        upstream_port,
        one_way,
    }
}

/// Same as [`local`], inside the namespace at `netns` on a fixed port.
pub fn in_netns(
    netns: &Path,
    listen_port: u16,
    upstream_port: u16,
    one_way: Duration,
) -> ProxyConfig {
    ProxyConfig {
        netns: Some(netns.to_path_buf()),
        listen_port,
        upstream_port,
        one_way,
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream as StdStream;
    use std::time::Instant as StdInstant;

    use super::*;

    /// An upstream that answers each connection's first read with `reply`, then closes.
    fn echo_server(reply: Vec<u8>) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let mut req = vec![0; 16];
            let n = s.read(&mut req).expect("read request");
            req.truncate(n);
            s.write_all(&reply).expect("reply");
            req
        });
        (port, t)
    }

    #[test]
    fn bytes_pass_unchanged_and_are_counted_per_direction() {
        let reply: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (port, upstream) = echo_server(reply.clone());
        let proxy = DelayProxy::start(local(port, Duration::ZERO)).expect("proxy");
        let mut s = StdStream::connect(proxy.host()).expect("connect");
        s.write_all(b"hello").expect("send");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read");
        assert_eq!(upstream.join().expect("upstream"), b"hello");
        assert!(got == reply, "reply corrupted: {} bytes", got.len());
        let c = proxy.counters();
        assert_eq!((c.down(), c.up(), c.connections()), (300_000, 5, 1));
    }

    /// The delay is a lower bound the proxy guarantees (load only adds to it), so this cannot
    /// fail on a busy machine: handshake round trip + request + answer = 4 × one way.
    #[test]
    fn a_new_connection_costs_two_round_trips_before_the_first_answer() {
        let (port, upstream) = echo_server(b"answer".to_vec());
        let one_way = Duration::from_millis(60);
        let proxy = DelayProxy::start(local(port, one_way)).expect("proxy");
        let start = StdInstant::now();
        let mut s = StdStream::connect(proxy.host()).expect("connect");
        s.write_all(b"q").expect("send");
        let mut first = [0u8; 1];
        s.read_exact(&mut first).expect("first byte");
        let took = start.elapsed();
        assert!(
            took >= one_way * 4,
            "answer after {took:?}, expected ≥ {:?}",
            one_way * 4
        );
        upstream.join().expect("upstream");
    }

    #[test]
    fn a_port_in_use_is_reported_at_start() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let mut cfg = local(1, Duration::ZERO);
        cfg.listen_port = port;
        let e = DelayProxy::start(cfg).expect_err("port is taken");
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    }
}
