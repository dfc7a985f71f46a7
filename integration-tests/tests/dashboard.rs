//! The live dashboard end to end: a daemon with its metrics listener on a free port does lazy
//! work (an eStargz image pulled lazily and run twice), then Debian's headless Chromium loads
//! `GET /dashboard`, runs its scripts (which poll `GET /dashboard/data`), dumps the DOM and takes
//! a screenshot (kept as `target/tmp/dashboard.png`: the test directory goes with the bed).

use augur_integration_tests::chromium::{dump_dom, png_size, screenshot};
use augur_integration_tests::free_port;
use augur_integration_tests::lazy::{LazyBed, push_estargz};
use augur_integration_tests::prometheus::curl;

/// The text of the element with `id` in a serialised DOM (`<tag id="…" …>text<`).
fn text_of<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let rest = &dom[at..];
    let open = rest.find('>')?;
    let rest = &rest[open + 1..];
    Some(&rest[..rest.find('<')?])
}

#[test]
fn the_dashboard_shows_live_numbers_in_headless_chromium() {
    let port = free_port();
    let config =
        format!("[remote]\nbackground_fetch = false\n[metrics]\naddress = \"127.0.0.1:{port}\"\n");
    let bed = LazyBed::start_with_config("dashboard", &config);
    let image = push_estargz(&bed.containerd, &bed.registry, "busybox:latest");
    bed.ctr_remote_rpull("dash", &image);
    assert_eq!(
        bed.run("dash", &image, "first", &["echo", "one"]).trim(),
        "one"
    );
    assert_eq!(
        bed.run("dash", &image, "second", &["echo", "two"]).trim(),
        "two"
    );

    let base = format!("http://127.0.0.1:{port}");
    let data: serde_json::Value = serde_json::from_str(
        &curl(&format!("{base}/dashboard/data")).expect("GET /dashboard/data answers"),
    )
    .expect("JSON");
    let served = &data["served_bytes"];
    let network = served["network"].as_u64().unwrap();
    assert!(network > 0, "the first run's reads were fetched: {data}");
    assert!(data["fetched_bytes"].as_u64().unwrap() > 0, "{data}");
    // Saved bytes may be 0 here: the prefetcher and warm-up may have brought in the whole layer.
    assert!(data["saved_bytes"].is_u64(), "{data}");
    let colds = data["cold_starts"].as_array().unwrap();
    let ours = colds
        .iter()
        .find(|c| c["image"] == image.as_str())
        .unwrap_or_else(|| panic!("no cold starts for {image}: {data}"));
    let runs = ours["runs"].as_array().unwrap();
    assert!(!runs.is_empty(), "{data}");
    assert_eq!(runs[0]["first_for_image"], true, "{data}");
    assert!(
        runs.iter().all(|r| r["seconds"].as_f64().unwrap() > 0.0),
        "{data}"
    );

    let url = format!("{base}/dashboard");
    let browser = bed.dir.join("chromium");
    let dom = dump_dom(&browser, &url);
    std::fs::write(bed.dir.join("dashboard.html"), &dom).unwrap();
    let hit = text_of(&dom, "hit-ratio").expect("the hit-ratio element");
    assert!(
        hit.ends_with('%') && hit != "–",
        "the hit ratio shows a number, not the placeholder: {hit:?}"
    );
    let fetched = text_of(&dom, "fetched").unwrap();
    assert!(
        fetched.ends_with("iB") || fetched.ends_with(" B"),
        "{fetched:?}"
    );
    assert!(
        dom.contains("data-series=\"network\"") && dom.contains("data-series=\"fetched\""),
        "the tier and bytes charts have lines"
    );
    assert!(
        dom.contains(&format!("data-image=\"{image}\"")),
        "the cold-start chart has a bar for {image}"
    );
    let status = text_of(&dom, "status").unwrap();
    assert!(
        status.starts_with("live: "),
        "the page read its data: {status:?}"
    );

    let png = bed.dir.join("dashboard.png");
    screenshot(&browser, &url, &png);
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(png_size(&bytes), Some((1280, 900)), "a 1280×900 PNG");
    assert!(
        bytes.len() > 10_000,
        "the screenshot has content: {} bytes",
        bytes.len()
    );
    // The test directory goes with the bed: keep the picture where cargo keeps test output.
    let kept = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::copy(&png, &kept).expect("keep the screenshot");
    println!("dashboard screenshot: {}", kept.display());
}
