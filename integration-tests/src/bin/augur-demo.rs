//! `augur-demo`: a real registry and a private containerd on this machine; the python image
//! converted to eStargz with `augurctl image convert`, pulled *lazily* through Augur with
//! `augurctl image rpull` and run; and a report of what was fetched and what was saved. Only
//! Augur's own tools, containerd's `ctr` and the registry are used. Run it through `./demo.sh`,
//! which installs the packages, builds the images it needs and installs the shipped LSTM model
//! (`onnx-models/install.sh`); the daemon serves the model at `$AUGUR_DEMO_MODEL_DIR` (default
//! the node's `/var/lib/augur/models/current`) with ONNX Runtime from `$AUGUR_ORT_LIB` (default
//! `/usr/local/lib/augur/`). Everything it starts, it stops.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use augur_integration_tests::lazy::{layer_digests, manifest_of};
use augur_integration_tests::{
    Containerd, Daemon, Registry, TestDir, augurctl_bin, cache_dir, run_ok,
};

const IMAGE: &str = "python:latest";
const NS: &str = "demo";
/// The demo measures what the container itself needs, so the background fetch (which would
/// bring the rest of each layer a moment later) is off.
const CONFIG: &str = "[remote]\nbackground_fetch = false\n";
/// Where `onnx-models/install.sh` puts a node's model (the demo's root is a scratch directory,
/// so its default `<root>/models/current` would be empty).
const MODEL_DIR: &str = "/var/lib/augur/models/current";

fn main() -> ExitCode {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("augur-demo: run as root (it starts containerd and mounts snapshots)");
        return ExitCode::FAILURE;
    }
    if !cache_dir().join("images/python.stamp").exists() {
        eprintln!(
            "augur-demo: test images missing; run `bash integration-tests/scripts/images.sh build`"
        );
        return ExitCode::FAILURE;
    }
    demo();
    ExitCode::SUCCESS
}

fn demo() {
    let dir = TestDir::new("demo");
    say("starting a registry on 127.0.0.1 and pushing the demo images (Debian minbase + python3)");
    let registry = Registry::start(&dir.join("registry"));
    registry.push_test_images();
    say("starting augur-snapshotter (background fetch off, to show what the container reads)");
    let model_dir = std::env::var("AUGUR_DEMO_MODEL_DIR").unwrap_or_else(|_| MODEL_DIR.into());
    let config = format!("{CONFIG}\n[predictor]\nmodel_dir = {model_dir:?}\n");
    std::fs::write(dir.join("augur.toml"), config).expect("write demo config");
    let mut daemon = Daemon::start_with_config(
        &dir.join("augur"),
        &dir.join("augur.sock"),
        &dir.join("augur.log"),
        &dir.join("augur.toml"),
    );
    say(&model_line(&daemon));
    say("starting a private containerd with [proxy_plugins.augur]");
    let containerd = Containerd::start(&dir.join("containerd"), &[("augur", daemon.socket())]);

    let plain = registry.image(IMAGE);
    let esgz = registry.image("python:esgz");
    say(&format!(
        "augurctl image convert {plain} {esgz}   (once per image, registry to registry)"
    ));
    run_ok(
        std::process::Command::new(augurctl_bin())
            .args(["image", "convert", "--quiet", &plain, &esgz]),
    );

    say(&format!("augurctl image rpull -n {NS} {esgz}"));
    let start = Instant::now();
    run_ok(
        std::process::Command::new(augurctl_bin())
            .args(["image", "rpull", "--quiet", "-n", NS, "--address"])
            .arg(containerd.address())
            .arg(&esgz),
    );
    let pull_secs = start.elapsed().as_secs_f64();

    say("ctr run --snapshotter augur … python3 -c '…'");
    let start = Instant::now();
    let out = containerd.ctr_ok(&[
        "-n", NS, "run", "--rm", "--snapshotter", "augur", &esgz, "augur-demo", "python3", "-c",
        "import platform, json; print(f'hello from Python {platform.python_version()} in a container on Augur')",
    ]);
    let run_secs = start.elapsed().as_secs_f64();

    let image_bytes = layer_bytes(&containerd, &esgz);
    let in_containerd = containerd_layer_bytes(&containerd, &esgz);
    // A clean stop saves every layer's counters (layers/<digest>/stats.json).
    daemon.stop();
    let (fetched, requests) = fetched_bytes(&daemon.root().join("layers"));
    let saved = image_bytes.saturating_sub(fetched);
    println!("\n{}", out.trim());
    println!("\n== Augur demo report ==");
    println!("image:                 {esgz} (eStargz)");
    println!("rpull (lazy):          {pull_secs:.2} s");
    println!("run to exit:           {run_secs:.2} s");
    println!(
        "image layers:          {image_bytes} bytes ({})",
        human(image_bytes)
    );
    println!(
        "fetched by augur:      {fetched} bytes ({}), {:.1} % of the layers: TOCs and what python read",
        human(fetched),
        percent(fetched, image_bytes)
    );
    println!("range requests:        {requests} (besides the footer and TOC reads)");
    println!(
        "saved:                 {saved} bytes ({}), {:.1} % never left the registry",
        human(saved),
        percent(saved, image_bytes)
    );
    println!("layer bytes in containerd's content store: {in_containerd}");
    say("stopping containerd, augur and the registry; removing the scratch directory");
}

/// What `augurctl status` says about the LSTM model the daemon serves.
fn model_line(daemon: &Daemon) -> String {
    let status = run_ok(
        std::process::Command::new(augurctl_bin())
            .arg("status")
            .arg("--admin-socket")
            .arg(daemon.admin_socket()),
    );
    status
        .lines()
        .find_map(|l| l.strip_prefix("model:"))
        .map_or_else(
            || "augurctl status shows no model line".to_owned(),
            |m| format!("predictor model: {}", m.trim()),
        )
}

/// Total compressed size of the image's layers (from its manifest).
fn layer_bytes(containerd: &Containerd, image: &str) -> u64 {
    manifest_of(containerd, NS, image)["layers"]
        .as_array()
        .map(|l| l.iter().filter_map(|d| d["size"].as_u64()).sum())
        .unwrap_or(0)
}

/// Bytes of the image's layer blobs in containerd's content store (0 when pulled lazily).
fn containerd_layer_bytes(containerd: &Containerd, image: &str) -> u64 {
    let layers = layer_digests(containerd, NS, image);
    containerd
        .ctr_ok(&["-n", NS, "content", "ls"])
        .lines()
        .skip(1)
        .filter(|l| layers.iter().any(|d| l.starts_with(d.as_str())))
        .filter_map(|l| l.split_whitespace().nth(1).and_then(parse_size))
        .sum()
}

/// Compressed bytes Augur fetched and chunk range requests it made, summed over its layers'
/// saved counters.
fn fetched_bytes(layers: &Path) -> (u64, u64) {
    let Ok(dirs) = std::fs::read_dir(layers) else {
        return (0, 0);
    };
    dirs.flatten()
        .filter_map(|d| std::fs::read(d.path().join("stats.json")).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .fold((0, 0), |(bytes, reqs), v| {
            (
                bytes + v["fetched_bytes"].as_u64().unwrap_or(0),
                reqs + v["fetches"].as_u64().unwrap_or(0),
            )
        })
}

/// Parses ctr's sizes (`48.72MiB`, `1.23kB`, `512B`).
fn parse_size(s: &str) -> Option<u64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match unit {
        "" | "B" => 1.0,
        "kB" => 1e3,
        "KiB" => 1024.0,
        "MB" => 1e6,
        "MiB" => 1024.0 * 1024.0,
        "GB" => 1e9,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((n * mult) as u64)
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn human(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1024.0 / 1024.0)
}

fn say(msg: &str) {
    eprintln!("==> {msg}");
}
