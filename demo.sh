#!/bin/bash
# Sets everything up on a fresh Debian bookworm machine (packages, test images, the daemon) and
# runs the demo: a real registry and a private containerd on this machine, an image pulled and
# run through Augur, and a report of what was fetched. Needs root. Usage (as root): ./demo.sh
set -euo pipefail
cd "$(dirname "$0")"
step() { printf '\n==> %s\n' "$*"; }

step "Debian packages"; bash integration-tests/scripts/deps.sh
step "demo images (cached)"; bash integration-tests/scripts/images.sh build
step "build augur"; cargo build --workspace --bins --quiet
step "demo"; exec ./target/debug/augur-demo
