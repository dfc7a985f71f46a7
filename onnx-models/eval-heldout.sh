#!/bin/bash
# eval-heldout.sh - the predictor evaluation with the LSTM trained on the training runs only.
#
# Usage: onnx-models/eval-heldout.sh [augurctl predictor eval options...]
#   e.g. onnx-models/eval-heldout.sh --seed 2 --threshold 0.3,0.5,0.7 --network 50ms,25mbit
# Defaults: the traces of record-traces.sh (onnx-models/traces/tools-v1.jsonl), held-out
# argument sets. Steps: split (augurctl predictor eval --write-split), train.py on train.jsonl
# (the same options as tools-v1: 80 epochs, seed 1, and 4 cross-fitting folds so that the
# ensemble calibrates the LSTM out of sample, decision 0029), then the evaluation with that model.
# Needs the venv and libonnxruntime of setup.sh, and a built augurctl (cargo build).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WS=$(cd "$HERE/.." && pwd)
CACHE=${AUGUR_CACHE:-/var/cache/augur-tests}
AUGURCTL=${AUGURCTL:-${CARGO_TARGET_DIR:-$WS/target}/debug/augurctl}
export AUGUR_ORT_LIB=${AUGUR_ORT_LIB:-$CACHE/ort/libonnxruntime.so.1.31.1}
die() { echo "eval-heldout: ERROR: $*" >&2; exit 1; }
[ -x "$AUGURCTL" ] || die "$AUGURCTL missing: cargo build -p augur-snapshotter --bins"
[ -x "$CACHE/venv-onnx/bin/python" ] || die "the trainer's venv is missing: bash onnx-models/setup.sh"

has_traces=0
for a in "$@"; do [ "$a" = --traces ] && has_traces=1; done
args=("$@")
[ "$has_traces" = 1 ] || args+=(--traces "$HERE/traces/tools-v1.jsonl")

work=$(mktemp -d /tmp/augur-eval-heldout.XXXXXX)
trap 'rm -rf "$work"' EXIT
# The split alone first (one threshold, no output kept), so the LSTM learns the training runs only.
"$AUGURCTL" predictor eval "${args[@]}" --write-split "$work/split" > /dev/null
SOURCE_DATE_EPOCH=1798761600 "$CACHE/venv-onnx/bin/python" "$HERE/train.py" \
  "$work/split/train.jsonl" --out "$work/model" --epochs 80 --folds 4 --quiet \
  --label "held-out evaluation: training runs of the split only"
"$AUGURCTL" predictor eval "${args[@]}" --lstm-model "$work/model"
