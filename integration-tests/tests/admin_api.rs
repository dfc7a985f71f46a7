//! The admin API's image and layer endpoints end to end: real containerd, registry, FUSE and
//! the daemon, driven through `augurctl` and the admin client.
//!
//! - `augurctl prefetch layer DIGEST --wait` fetches a mounted lazy layer whole (with
//!   `remote.background_fetch = false`, so nothing else would) and returns once every chunk is
//!   cached; asked again, the daemon answers that it is complete; an unmounted digest is refused
//!   with a message.
//! - `augurctl image plan REF` (`POST /manifest/parse`) against the real registry: an eStargz
//!   image's layers are lazy with their TOC digests, a plain image's are not and come last; the
//!   models have no plan before a container of the image ran and name its files after; a bad
//!   reference or platform is a 400, an unknown tag a 404, an unreachable registry a 502.
//! - with `admin.tcp_address` on 127.0.0.1, `augurctl --address --token-file` works; a request
//!   without the token or with a wrong one gets a 401; a token file others can read, or none,
//!   stops the daemon at start with an error naming the key.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use augur_integration_tests::lazy::{LazyBed, layer_digests, push_estargz};
use augur_integration_tests::{
    Daemon, TestDir, augurctl_bin, free_port, poll, snapshotter_bin, traces_kept, with_test_cache,
};
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

/// `augurctl image plan REF --json`, parsed.
fn plan(bed: &LazyBed, image: &str) -> serde_json::Value {
    json_of(
        &augurctl(bed, &["image", "plan", image, "--json"]),
        "augurctl image plan",
    )
}

/// `augurctl image plan <args>`, which must fail; its stderr.
fn plan_error(bed: &LazyBed, args: &[&str]) -> String {
    let out = augurctl(bed, &[&["image", "plan"], args].concat());
    assert!(
        !out.status.success(),
        "augurctl image plan {args:?} succeeded"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn image_plan_orders_layers_and_names_what_a_run_read() {
    let bed = LazyBed::start("admin-plan");
    let image = push_estargz(&bed.containerd, &bed.registry, "python:latest");
    let before = plan(&bed, &image);
    let layers = before["layers"].as_array().unwrap();
    assert!(!layers.is_empty());
    for l in layers {
        assert_eq!(l["lazy"], true, "{l}");
        assert!(
            l["toc_digest"].as_str().unwrap().starts_with("sha256:"),
            "{l}"
        );
    }
    assert!(before["plan"]["chunks"].as_array().unwrap().is_empty());
    assert!(
        before["plan"]["note"]
            .as_str()
            .unwrap()
            .contains("know no run of this image"),
        "{before}"
    );

    // A plain image: no TOC digests, so no layer is lazy.
    let plain = plan(&bed, &bed.registry.image("busybox:latest"));
    let plain_layers = plain["layers"].as_array().unwrap();
    assert!(
        plain_layers
            .iter()
            .all(|l| l["lazy"] == false && l["estargz"] == false),
        "{plain}"
    );

    // A container of the image runs; once its trace is kept, the models plan its files.
    bed.ctr_remote_rpull("p", &image);
    let out = bed.run(
        "p",
        &image,
        "plan-run",
        &["python3", "-c", "import json; print(1)"],
    );
    assert_eq!(out.trim(), "1");
    assert!(
        poll(Duration::from_secs(60), || traces_kept(
            &bed.daemon.admin_socket()
        ) == 1),
        "the run left a trace"
    );
    let mut after = serde_json::Value::Null;
    assert!(
        poll(Duration::from_secs(60), || {
            after = plan(&bed, &image);
            !after["plan"]["chunks"].as_array().unwrap().is_empty()
        }),
        "the models plan the image once a run of it was learned: {after}"
    );
    let chunks = after["plan"]["chunks"].as_array().unwrap();
    assert!(
        chunks
            .iter()
            .any(|c| c["path"].as_str().is_some_and(|p| p.contains("python3"))),
        "the plan names the interpreter's files: {after}"
    );
    // The layers holding planned chunks come first.
    let first = &after["layers"][0];
    assert!(first["planned_chunks"].as_u64().unwrap() > 0, "{after}");

    let err = plan_error(&bed, &[&bed.registry.image("python:no-such-tag")]);
    assert!(err.contains("404") && err.contains("not found"), "{err}");
    let err = plan_error(&bed, &["Not A Reference"]);
    assert!(
        err.contains("400") && err.contains("invalid image reference"),
        "{err}"
    );
    let err = plan_error(&bed, &["--platform", "linux", &image]);
    assert!(
        err.contains("400") && err.contains("os/architecture"),
        "{err}"
    );
    let err = plan_error(&bed, &["127.0.0.1:1/nothing/here:1"]);
    assert!(err.contains("502") && err.contains("unreachable"), "{err}");
}

/// The status line of `GET /health` sent by hand to `port`, with `auth` as the Authorization
/// header if given.
fn raw_health(port: u16, auth: Option<&str>) -> String {
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    write!(
        conn,
        "GET /health HTTP/1.1\r\nHost: augur\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or_default().to_owned()
}

fn write_token(path: &Path, token: &str, mode: u32) {
    std::fs::write(path, token).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_tcp_listener_wants_the_token_and_a_private_token_file() {
    let dir = TestDir::new("admin-tcp");
    let token = dir.join("admin.token");
    write_token(&token, "0123456789abcdef\n", 0o600);
    let port = free_port();
    let config = dir.join("augur.toml");
    let toml = format!(
        "[admin]\ntcp_address = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n",
        token.display()
    );
    std::fs::write(&config, with_test_cache(&toml)).unwrap();
    let mut daemon = Daemon::start_with_config(
        &dir.join("root"),
        &dir.join("augur.sock"),
        &dir.join("augur.log"),
        &config,
    );
    let url = format!("http://127.0.0.1:{port}");
    assert!(
        poll(Duration::from_secs(20), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "the TCP listener is up: {}",
        daemon.log()
    );
    let out = Command::new(augurctl_bin())
        .args(["status", "--json", "--address", &url, "--token-file"])
        .arg(&token)
        .output()
        .unwrap();
    let status = json_of(&out, "augurctl status over TCP");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"), "{status}");
    // The same through the environment variable.
    let out = Command::new(augurctl_bin())
        .args(["cache", "status", "--address", &url])
        .env("AUGUR_TOKEN_FILE", &token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert!(raw_health(port, Some("Bearer 0123456789abcdef")).contains(" 200 "));
    assert!(raw_health(port, None).contains(" 401 "));
    assert!(raw_health(port, Some("Bearer 0123456789abcdeX")).contains(" 401 "));
    let wrong = dir.join("wrong.token");
    write_token(&wrong, "not-the-token", 0o600);
    let out = Command::new(augurctl_bin())
        .args(["status", "--address", &url, "--token-file"])
        .arg(&wrong)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("401") && err.contains("wrong bearer token"),
        "{err}"
    );
    daemon.stop();

    // A token file others can read: the daemon does not start, and says which key.
    write_token(&token, "0123456789abcdef", 0o644);
    let err = start_error(&dir, &config);
    assert!(
        err.contains("admin.token_file") && err.contains("chmod 0600"),
        "{err}"
    );
    // No token file at all.
    std::fs::write(
        &config,
        with_test_cache(&format!("[admin]\ntcp_address = \"127.0.0.1:{port}\"\n")),
    )
    .unwrap();
    let err = start_error(&dir, &config);
    assert!(
        err.contains("admin.token_file") && err.contains("required"),
        "{err}"
    );
}

/// Runs the daemon with `config`, which must make it exit with an error; its stderr.
fn start_error(dir: &TestDir, config: &Path) -> String {
    let out = Command::new(snapshotter_bin())
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--address")
        .arg(dir.join("augur.sock"))
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the daemon started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
