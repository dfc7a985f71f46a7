//! The tiered chunk cache end to end: real containerd, registry, FUSE and the daemon's admin
//! socket driven by `augurctl cache`.
//!
//! - two images whose layers are different blobs but hold the same files share chunks: the
//!   second one's container reads them without a single range request;
//! - the cache stays inside small budgets while whole layers stream through it, on disk too;
//! - removing the images makes their chunks garbage, which `augurctl cache evict` drops;
//! - `augurctl cache` reports errors a person can act on;
//! - the daemon's Prometheus metrics follow all of it (lazy pulls, runs, cache hits, registry
//!   bytes), a real Prometheus scrapes them, and the alert rules pass `promtool`.
//! - a container's reads leave an access trace (attributed by its cgroup, written when its
//!   snapshot is removed) that `augurctl trace export` writes as JSON Lines.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use augur_integration_tests::lazy::{LazyBed, layer_digests, push_estargz, push_estargz_as};
use augur_integration_tests::prometheus::{Prometheus, Scrape, curl, promtool_check_rules};
use augur_integration_tests::{augurctl_bin, free_port, poll, workspace};

/// `augurctl cache <args> --admin-socket <bed's> --json`, parsed.
fn cache_json(bed: &LazyBed, args: &[&str]) -> serde_json::Value {
    let out = augurctl(bed, args, true);
    assert!(
        out.status.success(),
        "augurctl cache {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from augurctl --json")
}

fn augurctl(bed: &LazyBed, args: &[&str], json: bool) -> std::process::Output {
    let mut cmd = Command::new(augurctl_bin());
    cmd.arg("cache")
        .args(args)
        .arg("--admin-socket")
        .arg(admin_socket(bed));
    if json {
        cmd.arg("--json");
    }
    cmd.output().expect("run augurctl")
}

fn admin_socket(bed: &LazyBed) -> std::path::PathBuf {
    bed.daemon.admin_socket()
}

/// (compressed bytes fetched, range requests) of `digest`'s layer, from its saved counters.
fn layer_counters(root: &Path, digest: &str) -> (u64, u64) {
    let path = root
        .join("layers")
        .join(digest.trim_start_matches("sha256:"))
        .join("stats.json");
    let v: serde_json::Value = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("no counters at {}", path.display()));
    (
        v["fetched_bytes"].as_u64().unwrap(),
        v["fetches"].as_u64().unwrap(),
    )
}

fn total_chunks(status: &serde_json::Value) -> u64 {
    status["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["chunks"].as_u64().unwrap())
        .sum()
}

#[test]
fn images_with_different_blobs_but_the_same_files_fetch_the_shared_chunks_once() {
    let mut bed =
        LazyBed::start_with_config("cache-shared", "[remote]\nbackground_fetch = false\n");
    let a = push_estargz(&bed.containerd, &bed.registry, "python:latest");
    // Same files, same chunking, other gzip level: other blobs, the same chunk digests.
    let b = push_estargz_as(
        &bed.containerd,
        &bed.registry,
        "python:latest",
        "esgz-level1",
        &["--estargz-compression-level", "1"],
    );
    bed.ctr_remote_rpull("a", &a);
    bed.ctr_remote_rpull("b", &b);
    let (layers_a, layers_b) = (
        layer_digests(&bed.containerd, "a", &a),
        layer_digests(&bed.containerd, "b", &b),
    );
    assert!(
        layers_a.iter().all(|d| !layers_b.contains(d)),
        "the two images must not share a layer blob"
    );
    let code = "import json; print(json.dumps({'ok': 1}))";
    assert_eq!(
        bed.run("a", &a, "first", &["python3", "-c", code]).trim(),
        r#"{"ok": 1}"#
    );
    assert_eq!(
        bed.run("b", &b, "second", &["python3", "-c", code]).trim(),
        r#"{"ok": 1}"#
    );
    bed.daemon.stop(); // saves every layer's counters
    let root = bed.daemon.root().to_path_buf();
    let requests_a: u64 = layers_a.iter().map(|d| layer_counters(&root, d).1).sum();
    let requests_b: u64 = layers_b.iter().map(|d| layer_counters(&root, d).1).sum();
    assert!(
        requests_a > 5,
        "image a's container fetched its chunks ({requests_a} requests)"
    );
    assert_eq!(
        requests_b, 0,
        "image b's container found every chunk it read in the cache (only its TOCs were read)"
    );
}

#[test]
fn budgets_hold_on_disk_and_removed_images_become_evictable_garbage() {
    // Budgets far below python's layers (~200 MiB unpacked): no background fetch (the layers
    // cannot fit), and a container that reads every file pushes them all through the tiers.
    let bed = LazyBed::start_with_config(
        "cache-budgets",
        "[cache]\nram_mib = 4\nnvme_mib = 8\nhdd_mib = 16\n",
    );
    let image = push_estargz(&bed.containerd, &bed.registry, "python:latest");
    bed.ctr_remote_rpull("ns", &image);
    let script = "find /usr -xdev -type f -exec cat {} + | wc -c";
    let read: u64 = bed
        .run("ns", &image, "c1", &["sh", "-c", script])
        .trim()
        .parse()
        .expect("a byte count");
    assert!(read > 100 << 20, "the container read {read} bytes");
    assert!(
        bed.daemon.log().contains("no background fetch"),
        "a layer larger than the spill tier is not fetched whole"
    );
    let inserted: u64 = cache_json(&bed, &["status"])["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["inserts"].as_u64().unwrap())
        .sum();
    assert!(
        inserted > 3000,
        "thousands of chunks went through the tiers ({inserted})"
    );
    let status = cache_json(&bed, &["status"]);
    for t in status["tiers"].as_array().unwrap() {
        let (used, budget) = (
            t["used_bytes"].as_u64().unwrap(),
            t["budget_bytes"].as_u64().unwrap(),
        );
        assert!(used <= budget, "{t}");
    }
    let cache_dir = bed.daemon.root().join("cache");
    assert_eq!(
        std::fs::metadata(cache_dir.join("chunks.nvme"))
            .unwrap()
            .len(),
        8 << 20
    );
    let spilled = du_blocks(&cache_dir.join("spill"));
    assert!(spilled <= 16 << 20, "spill dir holds {spilled} bytes");
    // Still correct after all that churn.
    let out = bed.run(
        "ns",
        &image,
        "c2",
        &["python3", "-c", "import email, json; print('again')"],
    );
    assert_eq!(out.trim(), "again");

    // The admin socket is root's alone.
    let mode = std::fs::metadata(admin_socket(&bed))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let human = augurctl(&bed, &["status"], false);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("policy lfu") && text.contains("nvme"),
        "{text}"
    );

    // Remove the image: its layers unmount, their chunks are no longer referenced.
    assert!(status["referenced_chunks"].as_u64().unwrap() > 0);
    bed.containerd
        .ctr_ok(&["-n", "ns", "image", "rm", "--sync", &image]);
    assert!(
        poll(std::time::Duration::from_secs(60), || bed
            .fuse_mounts()
            .is_empty()),
        "GC removes the lazy snapshots"
    );
    let status = cache_json(&bed, &["status"]);
    assert_eq!(status["referenced_chunks"], 0, "{status}");
    let held = total_chunks(&status);
    assert!(held > 0);
    let evicted = cache_json(&bed, &["evict"]);
    assert_eq!(evicted["chunks"].as_u64(), Some(held));
    assert_eq!(total_chunks(&cache_json(&bed, &["status"])), 0);
    assert!(
        du_blocks(&cache_dir.join("spill")) == 0,
        "spill files deleted"
    );
}

/// Bytes in whole 4 KiB blocks of the files below `dir`.
fn du_blocks(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let m = e.metadata().unwrap();
        if m.is_dir() {
            total += du_blocks(&e.path());
        } else {
            total += m.len().div_ceil(4096) * 4096;
        }
    }
    total
}

#[test]
fn augurctl_cache_errors_say_what_to_do() {
    let bed = LazyBed::start("cache-errors");
    let out = augurctl(
        &bed,
        &["thresholds", "--ram", "0.1", "--nvme", "0.5"],
        false,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nvme_threshold <= ram_threshold"), "{err}");
    let ok = cache_json(&bed, &["thresholds", "--ram", "0.9", "--nvme", "0.3"]);
    assert!((ok["nvme"].as_f64().unwrap() - 0.3).abs() < 1e-6);

    let out = Command::new(augurctl_bin())
        .args([
            "cache",
            "status",
            "--admin-socket",
            "/nonexistent/admin.sock",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to the admin socket /nonexistent/admin.sock"),
        "{err}"
    );
    assert!(err.contains("is augur-snapshotter running"), "{err}");
}

/// Lazy pulls and runs of two images that share chunks but no blob, with the metrics endpoint on:
/// every family moves as the work says, and the registry bytes match the layers' own counters.
#[test]
fn metrics_follow_lazy_pulls_runs_and_cache_hits() {
    let port = free_port();
    let config =
        format!("[remote]\nbackground_fetch = false\n[metrics]\naddress = \"127.0.0.1:{port}\"\n");
    let mut bed = LazyBed::start_with_config("cache-metrics", &config);
    let index = curl(&format!("http://127.0.0.1:{port}/")).expect("GET / answers");
    assert!(
        index.contains("/metrics"),
        "GET / points to /metrics: {index}"
    );
    let a = push_estargz(&bed.containerd, &bed.registry, "busybox:latest");
    let b = push_estargz_as(
        &bed.containerd,
        &bed.registry,
        "busybox:latest",
        "esgz-level1",
        &["--estargz-compression-level", "1"],
    );
    bed.ctr_remote_rpull("a", &a);
    assert_eq!(bed.run("a", &a, "first", &["echo", "one"]).trim(), "one");
    bed.ctr_remote_rpull("b", &b);
    // The same busybox binary under another blob: its chunks come from RAM, where a's demand
    // misses put them.
    assert_eq!(bed.run("b", &b, "second", &["echo", "two"]).trim(), "two");
    let snap = |args: &[&str]| {
        let mut all = vec!["-n", "a", "snapshots", "--snapshotter", "augur"];
        all.extend_from_slice(args);
        bed.containerd.ctr_ok(&all);
    };
    snap(&["prepare", "metrics-active"]);
    snap(&["commit", "metrics-committed", "metrics-active"]);
    snap(&["rm", "metrics-committed"]);

    let m = Scrape::get(port);
    check_scrape(&m);
    check_real_prometheus(&bed, port);

    let fetched = m.sum("augur_registry_fetched_bytes_total", &[]);
    bed.daemon.stop(); // saves every layer's counters
    let root = bed.daemon.root().to_path_buf();
    let layers = [
        layer_digests(&bed.containerd, "a", &a),
        layer_digests(&bed.containerd, "b", &b),
    ]
    .concat();
    let stats: u64 = layers.iter().map(|d| layer_counters(&root, d).0).sum();
    assert_eq!(
        fetched, stats as f64,
        "augur_registry_fetched_bytes_total must equal the layers' stats.json fetched_bytes"
    );
}

/// The families of one scrape after [`metrics_follow_lazy_pulls_runs_and_cache_hits`]'s work.
fn check_scrape(m: &Scrape) {
    let ctx = |what: &str| format!("{what}\n--- /metrics ---\n{}", m.text);
    let op = "augur_snapshot_operation_duration_seconds_count";
    for name in ["prepare", "commit", "remove"] {
        let label = format!("op=\"{name}\"");
        assert!(m.sum(op, &[&label, "code=\"OK\""]) >= 1.0, "{}", ctx(name));
    }
    assert!(
        m.sum(op, &["op=\"prepare\"", "code=\"AlreadyExists\""]) >= 2.0,
        "{}",
        ctx("each image's layer was answered AlreadyExists (mounted lazily)")
    );
    let served = "augur_lazy_served_bytes_total";
    assert!(
        m.sum(served, &["source=\"network\""]) > 0.0,
        "{}",
        ctx("network")
    );
    assert!(m.sum(served, &["source=\"ram\""]) > 0.0, "{}", ctx("ram"));
    assert!(
        m.sum("augur_cache_hits_total", &["tier=\"ram\""]) > 0.0,
        "{}",
        ctx("hits")
    );
    assert!(
        m.sum("augur_cache_misses_total", &[]) > 0.0,
        "{}",
        ctx("misses")
    );
    assert!(
        m.sum("augur_lazy_blocked_read_duration_seconds_count", &[]) > 0.0,
        "{}",
        ctx("the first run's reads waited on the registry")
    );
    assert!(m.sum("augur_registry_request_duration_seconds_count", &[]) > 0.0);
    assert_eq!(
        m.sum("augur_registry_errors_total", &[]),
        0.0,
        "{}",
        ctx("errors")
    );
    assert_eq!(m.sum("augur_lazy_read_errors_total", &[]), 0.0);
    assert_eq!(m.sum("augur_cache_corrupt_chunks_dropped_total", &[]), 0.0);
    assert_eq!(
        m.sum("augur_lazy_mounted_layers", &[]),
        2.0,
        "{}",
        ctx("layers")
    );
    let (data, saved) = (
        m.sum("augur_lazy_layer_bytes", &[]),
        m.sum("augur_lazy_saved_bytes", &[]),
    );
    assert!(saved > 0.0 && saved < data, "{}", ctx("saved bytes"));
    assert_eq!(
        m.sum("augur_lazy_layer_fetched_bytes", &[]),
        m.sum("augur_registry_fetched_bytes_total", &[]),
        "{}",
        ctx("live layer counters and the registry counter agree")
    );
    assert_eq!(
        m.sum("augur_cache_budget_bytes", &["tier=\"ram\""]),
        (64u64 << 20) as f64,
        "the test cache's ram_mib = 64"
    );
    assert!(m.sum("augur_cache_used_bytes", &["tier=\"ram\""]) > 0.0);
    assert!(m.has("augur_build_info"), "{}", ctx("build info"));
}

/// A real Prometheus scrapes the daemon and loads the shipped alert rules.
fn check_real_prometheus(bed: &LazyBed, port: u16) {
    let rules = workspace().join("systemd/augur-alerts.yml");
    let prom = Prometheus::start(
        &bed.dir.join("prometheus"),
        &[format!("127.0.0.1:{port}")],
        &[rules],
    );
    let arrived = poll(std::time::Duration::from_secs(60), || {
        !prom.query("augur_build_info{job=\"augur\"}").is_empty()
    });
    assert!(arrived, "Prometheus never stored augur_build_info");
    let up = prom.query("up{job=\"augur\"}");
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0]["value"][1], "1", "the scrape succeeded: {up:?}");
    let served = prom.query("sum(augur_lazy_served_bytes_total)");
    assert!(
        served[0]["value"][1]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            > 0.0,
        "{served:?}"
    );
    let groups = prom.rule_groups();
    let mut names: Vec<&str> = groups.iter().filter_map(|g| g["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["augur-alerts", "augur-recording"],
        "rule groups loaded"
    );
}

/// The shipped alert rules are valid, and each alert fires on the failure it is for
/// (`integration-tests/promtool/augur-alerts.test.yml`).
#[test]
fn alert_rules_pass_promtool() {
    let out = promtool_check_rules(&workspace().join("systemd/augur-alerts.yml"));
    assert!(out.contains("SUCCESS"), "{out}");
    let tests = workspace().join("integration-tests/promtool/augur-alerts.test.yml");
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&tests)
        .output()
        .expect("run promtool (integration-tests/scripts/deps.sh installs it)");
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `augurctl trace <args> --admin-socket <bed's>`.
fn augurctl_trace(bed: &LazyBed, args: &[&str]) -> std::process::Output {
    Command::new(augurctl_bin())
        .arg("trace")
        .args(args)
        .arg("--admin-socket")
        .arg(admin_socket(bed))
        .output()
        .expect("run augurctl")
}

/// The runs of a JSON Lines export: (run line, chunk lines, access lines) each.
type Run = (
    serde_json::Value,
    Vec<serde_json::Value>,
    Vec<serde_json::Value>,
);

fn runs_of(jsonl: &str) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for line in jsonl.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        match v["type"].as_str() {
            Some("run") => runs.push((v, Vec::new(), Vec::new())),
            Some("chunk") => runs.last_mut().expect("run first").1.push(v),
            Some("access") => runs.last_mut().expect("run first").2.push(v),
            other => panic!("unknown line type {other:?}"),
        }
    }
    runs
}

#[test]
fn a_container_run_leaves_a_trace_that_augurctl_exports() {
    let bed = LazyBed::start_with_config("trace-e2e", "[remote]\nbackground_fetch = false\n");
    let image = push_estargz(&bed.containerd, &bed.registry, "python:latest");
    bed.ctr_remote_rpull("ns", &image);
    let out = augurctl_trace(&bed, &["export"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no traces kept yet"), "{err}");

    // `ctr run --rm` removes the container's snapshot when it exits: the run ends there.
    bed.run("ns", &image, "trace-1", &["python3", "-c", "import json"]);
    let labelled = [
        "-n",
        "ns",
        "run",
        "--rm",
        "--snapshotter",
        "augur",
        "--snapshotter-label",
        "containerd.io/snapshot/augur.workload=mail-check",
        &image,
        "trace-2",
        "python3",
        "-c",
        "import email.mime.text",
    ];
    let ran = bed.containerd.ctr(&labelled);
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let listed = || {
        let out = augurctl_trace(&bed, &["list", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    assert!(
        poll(std::time::Duration::from_secs(30), || listed()["traces"]
            .as_array()
            .is_some_and(|t| t.len() == 2)),
        "two traces listed: {}\n--- augur log (trace lines) ---\n{}",
        listed(),
        bed.daemon
            .log()
            .lines()
            .filter(|l| l.contains("trace") || l.contains("Prepare") || l.contains("Remove"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    let file = bed.dir.join("traces.jsonl");
    let out = augurctl_trace(&bed, &["export", "--out", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs = runs_of(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(runs.len(), 2);
    let image_layers = layer_digests(&bed.containerd, "ns", &image);
    let (run, chunks, accesses) = &runs[0];
    assert_eq!(run["image"], image.as_str());
    let layers: Vec<&str> = run["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(!layers.is_empty());
    let positions: Vec<usize> = layers
        .iter()
        .map(|l| {
            image_layers
                .iter()
                .position(|d| d == l)
                .expect("a layer of the image")
        })
        .collect();
    assert!(positions.is_sorted(), "lowest layer first: {layers:?}");
    let files: Vec<&str> = chunks.iter().map(|c| c["file"].as_str().unwrap()).collect();
    assert!(
        files.iter().any(|f| f.starts_with("usr/bin/python3")),
        "{files:?}"
    );
    // The image ships compiled modules: `import json` stats json/__init__.py but reads its .pyc.
    assert!(
        files
            .iter()
            .any(|f| f.contains("/json/") && f.contains("__init__.")),
        "{files:?}"
    );
    let times: Vec<u64> = accesses
        .iter()
        .map(|a| a["t_us"].as_u64().unwrap())
        .collect();
    // Times are taken on the FUSE threads and recorded in the order the events arrive, so reads
    // served at once by two threads may swap; the run as a whole moves forward.
    let backwards = times.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(
        times.last() > times.first() && backwards <= times.len() / 10,
        "{times:?}"
    );
    assert!(accesses.iter().any(|a| a["source"] == "miss"));
    assert!(
        run["workload"].as_str().unwrap().starts_with("first8:"),
        "{run}"
    );

    let (run, _, accesses) = &runs[1];
    assert_eq!(run["workload"], "label:mail-check");
    assert_eq!(
        run["labels"]["containerd.io/snapshot/augur.workload"],
        "mail-check"
    );
    assert!(!accesses.is_empty());
    let human = augurctl_trace(&bed, &["list"]);
    let text = String::from_utf8_lossy(&human.stdout);
    eprintln!("augurctl trace list:\n{text}");
    assert!(
        text.contains("label:mail-check") && text.contains("unattributed reads"),
        "{text}"
    );
}
