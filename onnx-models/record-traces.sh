#!/bin/bash
# record-traces.sh - record access traces of real programs through Augur, then train a model on
# them. The programs and their arguments are in workloads.json (Python, Perl, gcc, make, sqlite3,
# gawk and shell tools from Debian packages, each run with several different arguments).
#
# Usage (as root):
#   onnx-models/record-traces.sh [--workloads FILE] [--traces FILE] [--model DIR] [--no-train]
#     --workloads FILE  the programs to run (default onnx-models/workloads.json; its "image" names
#                       the test image of images.sh to run them in)
#     --traces FILE   where the JSON Lines export goes (default onnx-models/traces/tools-v1.jsonl)
#     --model DIR     the model directory to (re)write (default onnx-models/tools-v1)
#     --no-train      record only
#
# Steps (each idempotent; slow inputs cached under ${AUGUR_CACHE:-/var/cache/augur-tests}):
#   1. packages (integration-tests/scripts/deps.sh) and the trainer's venv (setup.sh);
#   2. the workload file's image (images.sh build tools: python's layers + perl, gcc, ...);
#   3. the daemon, augurctl and the recorder (cargo build);
#   4. augur-record-traces: a registry, containerd and Augur on this machine, each workload run in
#      a fresh container, every run's trace exported (integration-tests/src/bin/augur-record-traces.rs);
#   5. train.py on the export, seeded and reproducible (SOURCE_DATE_EPOCH pinned).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WS=$(cd "$HERE/.." && pwd)
CACHE=${AUGUR_CACHE:-/var/cache/augur-tests}
TARGET=${CARGO_TARGET_DIR:-$WS/target}
TRACES=$HERE/traces/tools-v1.jsonl
MODEL=$HERE/tools-v1
TRAIN=1
WORKLOADS=$HERE/workloads.json
log() { echo "record-traces: $*" >&2; }
die() { echo "record-traces: ERROR: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case $1 in
    --workloads) WORKLOADS=$2; shift 2 ;;
    --traces) TRACES=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --no-train) TRAIN=0; shift ;;
    *) die "unknown argument '$1' (see the header of $0)" ;;
  esac
done
[ "$(id -u)" = 0 ] || die "must run as root (containerd, mounts, drop_caches)"

cd "$WS"
log "packages and the trainer's venv"
bash integration-tests/scripts/deps.sh >&2
IMAGE=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["image"])' "$WORKLOADS") ||
  die "$WORKLOADS: not a workload file"
log "the $IMAGE image (cached)"
bash integration-tests/scripts/images.sh build "$IMAGE" >&2
log "building the daemon, augurctl and the recorder"
cargo build --quiet -p augur-snapshotter --bins
cargo build --quiet -p augur-integration-tests --bin augur-record-traces
log "recording (about 3-5 minutes)"
"$TARGET/debug/augur-record-traces" --workloads "$WORKLOADS" --out "$TRACES"
[ "$TRAIN" = 1 ] || exit 0
log "training $MODEL"
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1798761600} "$CACHE/venv-onnx/bin/python" "$HERE/train.py" \
  "$TRACES" --out "$MODEL" --force --quiet --epochs 80 \
  --label "real programs (workloads.json) in the tools image, recorded by record-traces.sh"
log "done: $TRACES, $MODEL"
