//! The admin API's image and layer endpoints end to end: real containerd, registry, FUSE and
//! the daemon, driven through `augurctl` and the admin client.
//!
//! - `augurctl prefetch layer DIGEST --wait` fetches a mounted lazy layer whole (with
//!   `remote.background_fetch = false`, so nothing else would) and returns once every chunk is
//!   cached; asked again, the daemon answers that it is complete; an unmounted digest is refused
//!   with a message.

use std::process::{Command, Output};

use augur_integration_tests::augurctl_bin;
use augur_integration_tests::lazy::{LazyBed, layer_digests, push_estargz};
use augur_snapshotter::admin::AdminClient;
use augur_snapshotter::lazy::progress::LayerProgress;

/// `augurctl <args> --admin-socket <bed's>`.
fn augurctl(bed: &LazyBed, args: &[&str]) -> Output {
    Command::new(augurctl_bin())
        .args(args)
        .arg("--admin-socket")
        .arg(bed.daemon.admin_socket())
        .output()
        .expect("run augurctl")
}

fn json_of(out: &Output, what: &str) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from augurctl --json")
}

/// `GET /layers/{digest}` through the admin client.
fn progress(bed: &LazyBed, digest: &str) -> LayerProgress {
    let client = AdminClient::new(&bed.daemon.admin_socket());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(client.get(&format!("/layers/{digest}")))
        .expect("GET /layers/{digest}")
}

#[test]
fn prefetch_layer_fetches_a_mounted_layer_whole_and_waits_for_it() {
    let bed = LazyBed::start_with_config("admin-prefetch", "[remote]\nbackground_fetch = false\n");
    let image = push_estargz(&bed.containerd, &bed.registry, "python:latest");
    bed.ctr_remote_rpull("p", &image);
    let layers = layer_digests(&bed.containerd, "p", &image);
    // The largest layer: the one a whole fetch takes longest for.
    let (digest, before) = layers
        .iter()
        .map(|d| (d.clone(), progress(&bed, d)))
        .max_by_key(|(_, p)| p.size_bytes)
        .expect("the image has layers");
    assert!(
        !before.complete && !before.fetching && before.present_bytes < before.size_bytes,
        "with background_fetch off nothing fetches the layer: {before:?}"
    );

    let done = json_of(
        &augurctl(&bed, &["prefetch", "layer", &digest, "--wait", "--json"]),
        "augurctl prefetch layer --wait",
    );
    assert_eq!(done["complete"], true, "{done}");
    assert_eq!(done["present_bytes"], done["size_bytes"], "{done}");
    // Not all of the missing bytes: members whose chunks other layers brought are skipped.
    assert!(
        done["fetched_bytes"].as_u64().unwrap() > before.fetched_bytes + before.size_bytes / 2,
        "the missing bytes came from the registry (before: {before:?}): {done}"
    );

    let again = json_of(
        &augurctl(&bed, &["prefetch", "layer", &digest, "--json"]),
        "augurctl prefetch layer (again)",
    );
    assert_eq!(again["status"], "complete", "{again}");

    let unknown = format!("sha256:{}", "0".repeat(64));
    let out = augurctl(&bed, &["prefetch", "layer", &unknown]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("404") && err.contains("no mounted lazy layer has digest"),
        "{err}"
    );
}
