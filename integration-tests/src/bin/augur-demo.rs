//! `augur-demo`: a real registry and a private containerd on this machine, an image pulled and
//! run through Augur, and a report of what was fetched. Run it through `./demo.sh`, which
//! installs the packages and builds the images it needs. Everything it starts, it stops.

use std::process::ExitCode;
use std::time::Instant;

use augur_integration_tests::{Containerd, Daemon, Registry, TestDir, cache_dir};

const IMAGE: &str = "python:latest";

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
    say("starting augur-snapshotter");
    let daemon = Daemon::start(
        &dir.join("augur"),
        &dir.join("augur.sock"),
        &dir.join("augur.log"),
    );
    say("starting a private containerd with [proxy_plugins.augur]");
    let containerd = Containerd::start(&dir.join("containerd"), &[("augur", daemon.socket())]);

    let image = registry.image(IMAGE);
    say(&format!("ctr image pull --snapshotter augur {image}"));
    let start = Instant::now();
    containerd.ctr_ok(&[
        "image",
        "pull",
        "--plain-http",
        "--snapshotter",
        "augur",
        &image,
    ]);
    let pull_secs = start.elapsed().as_secs_f64();

    say("ctr run --snapshotter augur … python3 -c '…'");
    let start = Instant::now();
    let out = containerd.ctr_ok(&[
        "run", "--rm", "--snapshotter", "augur", &image, "augur-demo", "python3", "-c",
        "import platform, sys; print(f'hello from Python {platform.python_version()} in a container on Augur')",
    ]);
    let run_secs = start.elapsed().as_secs_f64();

    let fetched = fetched_bytes(&containerd);
    let snapshots = containerd.ctr_ok(&["snapshots", "--snapshotter", "augur", "usage"]);
    println!("\n{}", out.trim());
    println!("\n== Augur demo report ==");
    println!("image:             {image}");
    println!("pull + unpack:     {pull_secs:.2} s");
    println!("run to exit:       {run_secs:.2} s");
    println!(
        "fetched:           {} bytes ({}) from the registry",
        fetched,
        human(fetched)
    );
    println!(
        "saved:             0 bytes: this milestone pulls whole layers; lazy pulling (fetch only what"
    );
    println!(
        "                   the container reads) is the next one, and this line will show the saving"
    );
    println!("snapshots in augur (ctr snapshots --snapshotter augur usage):");
    for line in snapshots.lines() {
        println!("  {line}");
    }
    say("stopping containerd, augur and the registry; removing the scratch directory");
}

/// Bytes in containerd's content store: everything the pull downloaded.
fn fetched_bytes(containerd: &Containerd) -> u64 {
    containerd
        .ctr_ok(&["content", "ls"])
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(parse_size)
        .sum()
}

/// Parses ctr's sizes (`1.1 MiB` is printed as `1.1MiB`? ctr prints e.g. `48.72MiB` or `1.23kB`).
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

fn human(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1024.0 / 1024.0)
}

fn say(msg: &str) {
    eprintln!("==> {msg}");
}
