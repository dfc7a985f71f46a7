//! Deployment-level prediction end to end: a replayed pull sequence (A, then B, several
//! times) through a real containerd with `ctr-remote image rpull`, eStargz images in a real
//! registry. The daemon learns that B follows A, warms B (manifest, TOCs) once A is pulled and
//! the network is idle, and B's next pull then makes no TOC request: the registry's access log
//! shows no request for B's layer blobs during it. With runs of B in the sequence, the chunks
//! those runs read are prefetched once B is warmed, before B is pulled, and B's next run reads
//! them (measured: 35 chunks, 4.7 MB fetched, all 35 read, precision 1.0).
//!
//! Needs root, the cached test images (`integration-tests/scripts/images.sh build`) and
//! `ctr-remote` (`integration-tests/scripts/deps.sh`).

use std::time::Duration;

use augur_integration_tests::lazy::{LazyBed, layer_digests, push_estargz};
use augur_integration_tests::poll;

/// Warming on, quickly after a pull; no background fetch (its requests would only add noise).
const CONFIG: &str =
    "[remote]\nbackground_fetch = false\n\n[warm]\nenabled = true\nidle_ms = 200\n";
/// The containerd namespace the sequence is pulled into.
const NS: &str = "deploy";

/// Requests the registry served for any of `layers`' blobs (footer and TOC reads).
fn blob_requests(bed: &LazyBed, layers: &[String]) -> usize {
    bed.registry
        .requests()
        .iter()
        .filter(|r| r.contains("/blobs/") && layers.iter().any(|l| r.ends_with(l.as_str())))
        .count()
}

/// Log lines saying `image` was warmed.
fn warm_ups(bed: &LazyBed, image: &str) -> usize {
    bed.daemon
        .log()
        .lines()
        .filter(|l| l.contains("image warmed") && l.contains(image))
        .count()
}

#[test]
fn after_a_replayed_sequence_b_is_warmed_after_a_and_its_pull_makes_no_toc_request() {
    let mut bed = LazyBed::start_with_config("warm-deploy", CONFIG);
    let a = push_estargz(&bed.containerd, &bed.registry, "busybox:latest");
    let b = push_estargz(&bed.containerd, &bed.registry, "edgecases:latest");
    let mut b_layers = Vec::new();
    for _round in 0..3 {
        bed.ctr_remote_rpull(NS, &a);
        bed.ctr_remote_rpull(NS, &b);
        if b_layers.is_empty() {
            b_layers = layer_digests(&bed.containerd, NS, &b);
        }
        // Removed, so the next pull prepares (and resolves) every layer again.
        bed.containerd
            .ctr_ok(&["-n", NS, "image", "rm", "--sync", &a, &b]);
    }
    assert_eq!(b_layers.len(), 3, "edgecases has 3 layers");
    assert!(
        blob_requests(&bed, &b_layers) >= b_layers.len(),
        "B's first pull read its TOCs from the registry (the access log shows them)"
    );

    let before = warm_ups(&bed, &b);
    bed.ctr_remote_rpull(NS, &a);
    assert!(
        poll(Duration::from_secs(60), || warm_ups(&bed, &b) > before),
        "B was not warmed after A:\n{}",
        bed.daemon.log()
    );
    let requests = blob_requests(&bed, &b_layers);
    let mounted = bed
        .daemon
        .log()
        .matches("remote layer mounted lazily")
        .count();
    bed.ctr_remote_rpull(NS, &b);
    assert_eq!(
        blob_requests(&bed, &b_layers),
        requests,
        "B's pull after warming read its layers from the registry:\n{:#?}",
        bed.registry.requests()
    );
    assert_eq!(
        bed.daemon
            .log()
            .matches("remote layer mounted lazily")
            .count(),
        mounted + b_layers.len(),
        "every layer of B was still mounted lazily"
    );

    // Eight pulls in the log (one per image pull, not per layer), the model saved at stop.
    let root = bed.daemon.root().to_path_buf();
    bed.daemon.stop();
    let log = augur_predictor::deploy::read_pull_log(&root.join("pulls.jsonl")).unwrap();
    assert_eq!(log.len(), 8, "{log:#?}");
    assert!(root.join("predictor/deploy.state").exists());
}

/// The prefetcher's counters, from `augurctl status --json`.
fn prefetch_stats(bed: &LazyBed) -> serde_json::Value {
    let out = augur_integration_tests::run_ok(
        std::process::Command::new(augur_integration_tests::augurctl_bin())
            .args(["status", "--json", "--admin-socket"])
            .arg(bed.daemon.admin_socket()),
    );
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    status["prefetch"].clone()
}

fn counter(bed: &LazyBed, name: &str) -> u64 {
    prefetch_stats(bed)[name].as_u64().unwrap_or(0)
}

#[test]
fn a_warmed_images_likely_chunks_are_prefetched_before_its_pull_and_read_by_its_run() {
    let config = format!("{CONFIG}\n[prefetch]\nthreshold = 0.05\nthreshold_min = 0.05\n");
    let bed = LazyBed::start_with_config("warm-chunks", &config);
    let a = push_estargz(&bed.containerd, &bed.registry, "busybox:latest");
    let b = push_estargz(&bed.containerd, &bed.registry, "python:latest");
    let run_b = |id: &str| bed.run(NS, &b, id, &["python3", "-c", "import json"]);
    // A then B, and a run of B: the deployment model learns the sequence, the chunk models
    // learn what a run of B reads first (from its trace, written when the container goes).
    for round in 0..3 {
        bed.ctr_remote_rpull(NS, &a);
        bed.ctr_remote_rpull(NS, &b);
        run_b(&format!("teach-{round}"));
        bed.containerd
            .ctr_ok(&["-n", NS, "image", "rm", "--sync", &a, &b]);
    }
    // What B's runs read is still cached: drop it, so there is something to prefetch.
    augur_integration_tests::run_ok(
        std::process::Command::new(augur_integration_tests::augurctl_bin())
            .args(["cache", "evict", "--all", "--admin-socket"])
            .arg(bed.daemon.admin_socket()),
    );
    let issued = counter(&bed, "issued_chunks");
    let warmed = warm_ups(&bed, &b);
    bed.ctr_remote_rpull(NS, &a);
    assert!(
        poll(Duration::from_secs(60), || warm_ups(&bed, &b) > warmed),
        "B was not warmed after A:\n{}",
        bed.daemon.log()
    );
    // B is not pulled: its chunks can only come through the warmed layers.
    assert!(
        poll(Duration::from_secs(60), || counter(&bed, "issued_chunks")
            > issued),
        "no chunk of warmed B was prefetched: {}\n{}",
        prefetch_stats(&bed),
        bed.daemon.log()
    );
    let used = counter(&bed, "used_chunks");
    bed.ctr_remote_rpull(NS, &b);
    run_b("after-warm");
    assert!(
        poll(Duration::from_secs(30), || counter(&bed, "used_chunks")
            > used),
        "B's run read none of the chunks prefetched for it: {}",
        prefetch_stats(&bed)
    );
    eprintln!("prefetcher after B's run: {}", prefetch_stats(&bed));
}
