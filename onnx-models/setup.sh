#!/bin/bash
# setup.sh - the Python side of the ONNX model pipeline, installed into the test cache.
#
# Usage:  onnx-models/setup.sh          (deps.sh calls it; idempotent, quiet unless it fails)
#
# Makes, under ${AUGUR_CACHE:-/var/cache/augur-tests}:
#   venv-onnx/                     a venv (Debian's python3) with requirements.txt installed:
#                                  what train.py and its tests run with
#   venv-onnx/.requirements.sha256 the hash of requirements.txt it was built from (a changed
#                                  file rebuilds the venv)
#   ort/libonnxruntime.so.1.31.1   ONNX Runtime, taken from the onnxruntime wheel: the library
#                                  the predictor's `ort` crate loads (AUGUR_ORT_LIB points at it
#                                  in tests). On a node, put the same file in /usr/local/lib/augur/.
#
# Needs python3 with venv (Debian python3-venv, installed by deps.sh) and access to PyPI.
# A lock serialises concurrent runs; the venv's stamp is written only once it is complete.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${AUGUR_CACHE:-/var/cache/augur-tests}
VENV=$CACHE/venv-onnx
ORT_DIR=$CACHE/ort
ORT_VERSION=1.31.1
ORT_LIB=$ORT_DIR/libonnxruntime.so.$ORT_VERSION
PYTHON=${AUGUR_PYTHON:-/usr/bin/python3}

log() { echo "onnx-setup: $*"; }
die() { echo "onnx-setup: ERROR: $*" >&2; exit 1; }

# quiet CMD...: run CMD with its output in a temp file, shown only if it fails
quiet() {
  local out rc=0
  out=$(mktemp)
  "$@" >"$out" 2>&1 || rc=$?
  if [ $rc -ne 0 ]; then cat "$out" >&2; log "FAILED (rc=$rc): $*" >&2; fi
  rm -f "$out"
  return $rc
}

[ -x "$PYTHON" ] || die "$PYTHON not found: install Debian's python3 and python3-venv (integration-tests/scripts/deps.sh does)"
mkdir -p "$CACHE"
exec 9>"$CACHE/.venv-onnx.lock"
flock 9

WANT=$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" = "$WANT" ] && [ -x "$VENV/bin/python" ]; then
  log "venv: $VENV (up to date)"
else
  log "venv: building $VENV from requirements.txt"
  # The stamp is written last: an interrupted build has none and is redone.
  rm -rf "$VENV"
  quiet "$PYTHON" -m venv "$VENV"
  quiet "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q \
    --only-binary=:all: --no-deps -r "$HERE/requirements.txt"
  echo "$WANT" >"$VENV/.requirements.sha256"
  log "venv: ready"
fi

SO=$("$VENV/bin/python" - <<'PY'
import glob, os, onnxruntime
capi = os.path.join(os.path.dirname(onnxruntime.__file__), "capi")
print(next(iter(glob.glob(os.path.join(capi, "libonnxruntime.so.*"))), ""))
PY
)
[ -n "$SO" ] || die "libonnxruntime.so.* not found in the onnxruntime wheel in $VENV"
[ "$(basename "$SO")" = "libonnxruntime.so.$ORT_VERSION" ] \
  || die "the venv's onnxruntime ships $(basename "$SO"), expected libonnxruntime.so.$ORT_VERSION (requirements.txt and the ort crate's api feature must agree)"
if ! cmp -s "$SO" "$ORT_LIB"; then
  mkdir -p "$ORT_DIR"
  cp "$SO" "$ORT_LIB.tmp.$$"
  mv "$ORT_LIB.tmp.$$" "$ORT_LIB"
fi
log "ONNX Runtime: $ORT_LIB"
