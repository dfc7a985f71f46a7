//! The shaped network the lazy-pull benchmark runs on: a loopback-only network namespace, the
//! delay proxy inside it, and HTB limiting only what the proxy's port sends.
//!
//! Needs root (`ip netns`, `tc`) and iproute2 (`integration-tests/scripts/deps.sh`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use augur_integration_tests::delay_proxy::{self, DelayProxy};
use augur_integration_tests::netns::{NetNs, PortRate, RateLimit, in_netns};
use augur_integration_tests::{free_port, run_ok, wait_until};

/// Serves `payload` to every connection after reading its request, until the test ends.
fn serve(listener: TcpListener, payload: Vec<u8>) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut req = [0u8; 8];
            let _ = conn.read(&mut req);
            let _ = conn.write_all(&payload);
        }
    });
}

/// Connects to 127.0.0.1:`port` inside `ns`, sends a request, reads everything.
fn fetch(ns: &NetNs, port: u16) -> Vec<u8> {
    in_netns(&ns.path(), || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect in the namespace");
        s.write_all(b"get").expect("request");
        let mut body = Vec::new();
        s.read_to_end(&mut body).expect("read");
        body
    })
    .expect("enter the namespace")
}

/// Bytes HTB class `class` (e.g. `1:10`) has sent, from `tc -s class show`.
fn class_sent(stats: &str, class: &str) -> u64 {
    let head = format!("class htb {class} ");
    let mut lines = stats.lines().skip_while(|l| !l.starts_with(&head));
    lines.next();
    lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no Sent line for {class} in:\n{stats}"))
}

#[test]
fn namespace_is_loopback_only_and_private() {
    let port = free_port();
    let ns = NetNs::create("augur-test-shaping");
    let links = run_ok(Command::new("ip").args(["-n", ns.name(), "-o", "link"]));
    assert_eq!(links.lines().count(), 1, "only lo expected:\n{links}");
    assert!(links.contains(": lo:"), "{links}");
    let listener = in_netns(&ns.path(), || TcpListener::bind(("127.0.0.1", port)))
        .expect("enter")
        .expect("bind in the namespace");
    serve(listener, b"inside".to_vec());
    assert_eq!(fetch(&ns, port), b"inside");
    // The port free in our namespace stays free: the server is only reachable inside.
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "a server in the namespace answered outside it"
    );
    let path = ns.path();
    drop(ns);
    assert!(!path.exists(), "{} still exists after drop", path.display());
}

#[test]
fn a_namespace_left_by_a_dead_process_is_swept() {
    // Pids never get this large (pid_max is at most 2^22).
    let stale = "augur-test-sweep-999999999";
    run_ok(Command::new("ip").args(["netns", "add", stale]));
    // What a killed run leaves running in its namespace (a registry, a daemon).
    let mut left = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{stale}"))
        .args(["sleep", "600"])
        .spawn()
        .expect("spawn sleep in the stale namespace");
    let pid = left.id().to_string();
    wait_until(
        "sleep to enter the namespace",
        Duration::from_secs(10),
        || {
            run_ok(Command::new("ip").args(["netns", "pids", stale]))
                .lines()
                .any(|p| p.trim() == pid)
        },
    );
    let ns = NetNs::create("augur-test-sweep");
    let list = run_ok(Command::new("ip").args(["netns", "list"]));
    let status = left.wait().expect("wait");
    assert!(!list.contains(stale), "stale namespace kept:\n{list}");
    assert!(list.contains(ns.name()), "{list}");
    assert!(
        !status.success(),
        "the process left in the stale namespace was not stopped: {status}"
    );
}

/// HTB limits what the proxy's port sends, and only that: the proxy's own hop from the upstream
/// crosses the same `lo` unshaped. Checked with tc's counters, and with a lower bound on the
/// transfer time (the limit guarantees it; load only adds to it).
#[test]
fn rate_limit_shapes_only_the_proxy_port() {
    const PAYLOAD: usize = 3 << 20;
    const MBIT: u32 = 8; // 1 MB/s: 3 MiB take ≥ 3.1 s
    let (upstream, proxied) = (free_port(), free_port());
    let ns = NetNs::create("augur-test-rate");
    let listener = in_netns(&ns.path(), || TcpListener::bind(("127.0.0.1", upstream)))
        .expect("enter")
        .expect("bind upstream");
    serve(listener, vec![7u8; PAYLOAD]);
    let limit = RateLimit::install(
        &ns,
        &[PortRate {
            port: proxied,
            mbit: MBIT,
        }],
    );
    let proxy = DelayProxy::start(delay_proxy::in_netns(
        &ns.path(),
        proxied,
        upstream,
        Duration::from_millis(5),
    ))
    .expect("proxy in the namespace");

    let start = Instant::now();
    let body = fetch(&ns, proxied);
    let took = start.elapsed();
    assert_eq!(body.len(), PAYLOAD);
    assert_eq!(proxy.counters().down(), PAYLOAD as u64);

    let stats = limit.stats();
    let shaped = class_sent(&stats, "1:10");
    assert!(
        shaped >= PAYLOAD as u64 && shaped < PAYLOAD as u64 * 3 / 2,
        "the shaped class sent {shaped} bytes for a {PAYLOAD}-byte transfer:\n{stats}"
    );
    let nominal = Duration::from_secs_f64(PAYLOAD as f64 * 8.0 / (f64::from(MBIT) * 1e6));
    assert!(
        took >= nominal / 2,
        "{PAYLOAD} bytes at {MBIT} Mbit/s took only {took:?}:\n{stats}"
    );
}
