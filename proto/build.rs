//! Generates containerd's gRPC servers and clients from `vendor/` with `protox` (a pure-Rust
//! protobuf compiler), so building needs no system `protoc`: the snapshots v1 service (served by
//! the daemon) and the content, images, leases and diff v1 services (called by `augurctl`).
//! Refresh the vendored files with `proto/update-vendor.sh`.

const SERVICES: [&str; 5] = ["snapshots", "content", "images", "leases", "diff"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=vendor");
    let files =
        SERVICES.map(|s| format!("github.com/containerd/containerd/api/services/{s}/v1/{s}.proto"));
    let fds = protox::compile(files, ["vendor"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
