#!/bin/bash
# Installs everything the tests need (idempotent; slow parts cached under
# ${AUGUR_CACHE:-/var/cache/augur-tests}) and runs the whole test suite:
# unit tests, gRPC tests against the daemon, containerd's own snapshotter conformance suite,
# and end-to-end tests with real containerd, runc and a real registry.
# Needs root (mounts, containerd). Usage (as root): ./test.sh [extra nextest args]
set -euo pipefail
cd "$(dirname "$0")"
step() { printf '\n==> %s\n' "$*"; }

step "Debian packages"; bash integration-tests/scripts/deps.sh
step "test images (cached)"; bash integration-tests/scripts/images.sh build
step "Go conformance suite and reference snapshotter (cached)"; bash integration-tests/scripts/go-build.sh
step "format"; cargo fmt --all --check
step "lint"; cargo clippy --workspace --all-targets --quiet -- -D warnings
step "build"; cargo build --workspace --bins --quiet
step "tests"; cargo nextest run --workspace --no-fail-fast --test-threads 2 "$@"
