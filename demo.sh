#!/bin/bash
# Sets everything up on a fresh Debian bookworm machine (packages, test images, the daemon) and
# runs the demo: a real registry and a private containerd on this machine, an image pulled and
# run through Augur, and a report of what was fetched. Needs root. Usage (as root): ./demo.sh
# The shipped LSTM model and ONNX Runtime are installed where a node keeps them (decision 0020):
# $AUGUR_MODELS (default /var/lib/augur/models) and $AUGUR_LIB_DIR (default /usr/local/lib/augur).
set -euo pipefail
cd "$(dirname "$0")"
step() { printf '\n==> %s\n' "$*"; }

step "Debian packages"; bash integration-tests/scripts/deps.sh
step "demo images (cached)"; bash integration-tests/scripts/images.sh build
step "build augur"; cargo build --workspace --bins --quiet
MODELS=${AUGUR_MODELS:-/var/lib/augur/models}
LIB_DIR=${AUGUR_LIB_DIR:-/usr/local/lib/augur}
step "the LSTM model and ONNX Runtime"
bash onnx-models/install.sh --models "$MODELS" --lib-dir "$LIB_DIR"
step "demo"
AUGUR_DEMO_MODEL_DIR=$MODELS/current AUGUR_ORT_LIB=$LIB_DIR/libonnxruntime.so.1.31.1 \
  exec ./target/debug/augur-demo
