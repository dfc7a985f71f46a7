//! Deployment-level prediction end to end: a replayed pull sequence (A, then B, several
//! times) through a real containerd with `ctr-remote image rpull`, eStargz images in a real
//! registry. The daemon learns that B follows A, warms B (manifest, TOCs) once A is pulled and
//! the network is idle, and B's next pull then makes no TOC request: the registry's access log
//! shows no request for B's layer blobs during it.
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
