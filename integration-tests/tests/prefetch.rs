//! Prefetching end to end, through real containerd, the registry, FUSE and the daemon: a
//! container's first run teaches the models (through its access trace), and its second run, on
//! a cold cache, reads more chunks the prefetcher fetched ahead of it. The first run, of an
//! image no model knows, reads prefetched chunks too: continuation's, the rest of the files it
//! begins that the layers' TOCs list in several chunks (decision 0031).

use std::process::Command;
use std::time::Duration;

use augur_integration_tests::lazy::{LazyBed, push_estargz};
use augur_integration_tests::{augurctl_bin, drop_page_cache, poll};
use serde_json::Value;

/// `augurctl <args> --admin-socket <bed's> [--json]`, which must succeed; its stdout.
fn augurctl(bed: &LazyBed, args: &[&str]) -> String {
    let out = Command::new(augurctl_bin())
        .args(args)
        .arg("--admin-socket")
        .arg(bed.daemon.admin_socket())
        .output()
        .expect("run augurctl");
    assert!(
        out.status.success(),
        "augurctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn traces_kept(bed: &LazyBed) -> usize {
    augur_integration_tests::traces_kept(&bed.daemon.admin_socket())
}

/// Sources of the accesses of each run in a JSON Lines export, in order: (misses, hits,
/// prefetch hits) per run.
fn sources_per_run(jsonl: &str) -> Vec<(usize, usize, usize)> {
    let mut runs = Vec::new();
    for line in jsonl.lines() {
        let v: Value = serde_json::from_str(line).expect("a JSON line");
        match v["type"].as_str() {
            Some("run") => runs.push((0, 0, 0)),
            Some("access") => {
                let r = runs.last_mut().expect("run first");
                match v["source"].as_str() {
                    Some("miss") => r.0 += 1,
                    Some("hit") => r.1 += 1,
                    Some("prefetch_hit") => r.2 += 1,
                    other => panic!("unknown source {other:?}"),
                }
            }
            _ => {}
        }
    }
    runs
}

#[test]
fn a_second_run_on_a_cold_cache_reads_prefetched_chunks() {
    // No background fetch: every chunk the second run finds cached was prefetched for it.
    let bed = LazyBed::start_with_config("prefetch-e2e", "[remote]\nbackground_fetch = false\n");
    let image = push_estargz(&bed.containerd, &bed.registry, "python:latest");
    bed.ctr_remote_rpull("ns", &image);
    let cmd = ["python3", "-c", "import json, email.message; print('ok')"];
    assert_eq!(bed.run("ns", &image, "first", &cmd).trim(), "ok");
    assert!(
        poll(Duration::from_secs(60), || traces_kept(&bed) == 1),
        "the first run's trace was never written"
    );

    // A cold start again: no chunk in the cache, no page in the kernel's cache.
    augurctl(&bed, &["cache", "evict", "--all"]);
    drop_page_cache().expect("drop the page cache");
    assert_eq!(bed.run("ns", &image, "second", &cmd).trim(), "ok");
    assert!(
        poll(Duration::from_secs(60), || traces_kept(&bed) == 2),
        "the second run's trace was never written"
    );

    let runs = sources_per_run(&augurctl(&bed, &["trace", "export"]));
    assert_eq!(runs.len(), 2, "{runs:?}");
    let (first, second) = (runs[0], runs[1]);
    eprintln!("(misses, hits, prefetch hits): first run {first:?}, second run {second:?}");
    assert!(
        first.2 > 0,
        "continuation prefetched nothing of the files the first run began: {first:?}"
    );
    assert!(
        second.2 > first.2,
        "the second run read no more prefetched chunks than the first (misses, hits, prefetch hits): {first:?} then {second:?}\n--- augur log ---\n{}",
        bed.daemon
            .log()
            .lines()
            .filter(|l| l.contains("prefetch") || l.contains("predict"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        second.0 < first.0,
        "the second run waited on the registry as often as the first: {first:?} then {second:?}"
    );
}
