//! Generates the containerd snapshots v1 server and client from `vendor/` with `protox`
//! (a pure-Rust protobuf compiler), so building needs no system `protoc`.
//! Refresh the vendored files with `proto/update-vendor.sh`.

const SNAPSHOTS: &str =
    "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=vendor");
    let fds = protox::compile([SNAPSHOTS], ["vendor"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
