use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use super::*;

fn layer(d: &str, annotations: &[(&str, &str)]) -> LayerInfo {
    LayerInfo {
        digest: d.to_owned(),
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        urls: Vec::new(),
    }
}

#[test]
fn chain_ids_follow_the_oci_identity_rule() {
    let a = format!("sha256:{}", "a".repeat(64));
    let b = format!("sha256:{}", "b".repeat(64));
    let ids = chain_ids(&[a.clone(), b.clone()]);
    assert_eq!(ids[0], a, "the bottom layer's chain ID is its diff ID");
    let expected = hex::encode(Sha256::digest(format!("{a} {b}").as_bytes()));
    assert_eq!(ids[1], format!("sha256:{expected}"));
    assert!(chain_ids(&[]).is_empty());
}

/// The same set ctr-remote sent for python's first layer (captured in research/env.md §5).
#[test]
fn snapshot_labels_are_the_ones_ctr_remote_sends() {
    let toc = "containerd.io/snapshot/stargz/toc.digest";
    let layers = [
        layer(
            "sha256:l0",
            &[
                (toc, "sha256:t0"),
                ("io.containers.estargz.uncompressed-size", "9"),
            ],
        ),
        layer("sha256:l1", &[(toc, "sha256:t1")]),
    ];
    let got = snapshot_labels(
        "127.0.0.1:5000/python:esgz",
        &layers,
        0,
        "sha256:c0",
        10 << 20,
    );
    let want: BTreeMap<String, String> = [
        ("containerd.io/snapshot.ref", "sha256:c0"),
        (
            "containerd.io/snapshot/remote/stargz.reference",
            "127.0.0.1:5000/python:esgz",
        ),
        ("containerd.io/snapshot/remote/stargz.digest", "sha256:l0"),
        (
            "containerd.io/snapshot/remote/stargz.layers",
            "sha256:l0,sha256:l1",
        ),
        ("containerd.io/snapshot/remote/stargz.prefetch", "10485760"),
        ("containerd.io/snapshot/remote/urls", ""),
        ("containerd.io/snapshot/remote/urls.0", ""),
        ("containerd.io/snapshot/remote/urls.1", ""),
        (toc, "sha256:t0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(got, want);

    let top = snapshot_labels("r", &layers, 1, "sha256:c1", 1);
    assert_eq!(
        top["containerd.io/snapshot/remote/stargz.layers"],
        "sha256:l1"
    );
    assert!(!top.contains_key("containerd.io/snapshot/remote/urls.1"));
    assert_eq!(top[toc], "sha256:t1");
}

#[test]
fn long_layer_lists_are_cut_to_the_label_limit() {
    let layers: Vec<LayerInfo> = (0..100)
        .map(|i| layer(&format!("sha256:{i:064}"), &[]))
        .collect();
    let got = snapshot_labels("r", &layers, 0, "c", 0);
    let listed = &got["containerd.io/snapshot/remote/stargz.layers"];
    assert!(STARGZ_LAYERS.len() + listed.len() <= MAX_LABEL_BYTES);
    let n = listed.split(',').count();
    assert!(n > 10 && n < 100, "{n} layers listed");
    assert!(got.contains_key(&format!("{REMOTE_URLS}.{}", n - 1)));
    assert!(!got.contains_key(&format!("{REMOTE_URLS}.{n}")));
}

#[test]
fn gc_labels_name_children_as_containerd_does() {
    let layer_mt = "application/vnd.oci.image.layer.v1.tar+gzip";
    let got = manifest_gc_labels(
        ("application/vnd.oci.image.config.v1+json", "sha256:c"),
        &[
            (layer_mt.to_owned(), "sha256:a".to_owned()),
            (layer_mt.to_owned(), "sha256:b".to_owned()),
        ],
    );
    let keys: Vec<_> = got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        keys,
        [
            ("containerd.io/gc.ref.content.config", "sha256:c"),
            ("containerd.io/gc.ref.content.l.0", "sha256:a"),
            ("containerd.io/gc.ref.content.l.1", "sha256:b"),
        ]
    );
    let index = child_gc_labels(&[(
        "application/vnd.oci.image.manifest.v1+json".to_owned(),
        "sha256:m".to_owned(),
    )]);
    assert_eq!(index["containerd.io/gc.ref.content.m.0"], "sha256:m");
}

#[test]
fn media_types_and_ingest_refs() {
    assert!(is_layer_type("application/vnd.oci.image.layer.v1.tar+zstd"));
    assert!(is_layer_type(
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    ));
    assert!(!is_layer_type("application/vnd.oci.image.config.v1+json"));
    assert_eq!(
        ingest_ref("application/vnd.oci.image.index.v1+json", "sha256:x"),
        "index-sha256:x"
    );
    assert_eq!(
        ingest_ref("application/vnd.docker.container.image.v1+json", "sha256:x"),
        "config-sha256:x"
    );
    let key = extract_key("sha256:c");
    assert!(
        key.starts_with("extract-") && key.ends_with(" sha256:c"),
        "{key}"
    );
    assert_ne!(lease_id(), lease_id());
}

#[test]
fn distribution_source_drops_the_port_and_merges_sorted() {
    let (key, repo) = distribution_source("127.0.0.1:5000", "python");
    assert_eq!(key, "containerd.io/distribution.source.127.0.0.1");
    assert_eq!(repo, "python");
    assert_eq!(
        distribution_source("[::1]:5000", "x").0,
        "containerd.io/distribution.source.::1"
    );
    assert_eq!(append_source(None, "b"), "b");
    assert_eq!(append_source(Some("c,a"), "b"), "a,b,c");
    assert_eq!(append_source(Some("a,b"), "b"), "a,b");
}

#[test]
fn expiry_is_rfc3339_utc() {
    assert_eq!(rfc3339_after(UNIX_EPOCH, 0), "1970-01-01T00:00:00Z");
    let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
    assert_eq!(rfc3339_after(leap, 86_400 + 3_661), "2000-03-01T01:01:01Z");
}
