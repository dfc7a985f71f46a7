#!/bin/bash
# retrain.sh - retrains the node's LSTM on the node's own traces and serves it (what
# augur-retrain.timer runs; decision 0020). On any failure the current model stays and the
# script exits non-zero with a message; too few runs is not a failure (exit 0, nothing changed).
#
# Usage:  retrain.sh [options]
#
#   --admin-socket S   the daemon's admin socket (default /run/augur/admin.sock): traces are
#                      exported from it (augurctl trace export) and the new model is served
#                      through it (augurctl model reload)
#   --traces FILE      train on FILE (JSON Lines, docs/traces.md) instead of exporting
#   --no-reload        switch `current` but do not ask the daemon to reload (it serves the new
#                      model at its next start)
#   --models DIR       the model store (default /var/lib/augur/models); `current` is switched
#   --venv DIR         the trainer's venv (default /usr/local/lib/augur/venv-onnx, made by
#                      `AUGUR_CACHE=/usr/local/lib/augur onnx-models/setup.sh`)
#   --ort-lib FILE     ONNX Runtime for validation (default
#                      /usr/local/lib/augur/libonnxruntime.so.1.31.1)
#   --augurctl BIN     default `augurctl` on PATH
#   --min-runs N       refuse to train on fewer runs (default 20)
#   --keep N           retrained versions kept, the served one included (default 3); shipped
#                      models (names not starting with a digit) are never removed
#   --epochs N         training epochs (default 20)
#   --label TEXT       meta.json's label (default "retrained on <host> from N runs")
#
# Versions are named by UTC time, <models>/20270101T030000Z/. train.py writes beside its final
# place and renames it in; `current` is switched by renaming a new link over it.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SOCKET=/run/augur/admin.sock
TRACES=
RELOAD=1
MODELS=/var/lib/augur/models
VENV=/usr/local/lib/augur/venv-onnx
ORT_LIB=/usr/local/lib/augur/libonnxruntime.so.1.31.1
AUGURCTL=augurctl
MIN_RUNS=20
KEEP=3
EPOCHS=20
LABEL=

log() { echo "augur-retrain: $*"; }
die() { echo "augur-retrain: ERROR: $*; the current model stays" >&2; exit 1; }
number() { [[ $2 =~ ^[0-9]+$ ]] || die "$1 wants a number, got '$2'"; }

while [ $# -gt 0 ]; do
  case $1 in
    --admin-socket) SOCKET=$2; shift 2 ;;
    --traces) TRACES=$2; shift 2 ;;
    --no-reload) RELOAD=0; shift ;;
    --models) MODELS=$2; shift 2 ;;
    --venv) VENV=$2; shift 2 ;;
    --ort-lib) ORT_LIB=$2; shift 2 ;;
    --augurctl) AUGURCTL=$2; shift 2 ;;
    --min-runs) number "$1" "$2"; MIN_RUNS=$2; shift 2 ;;
    --keep) number "$1" "$2"; KEEP=$2; shift 2 ;;
    --epochs) number "$1" "$2"; EPOCHS=$2; shift 2 ;;
    --label) LABEL=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ "$KEEP" -ge 1 ] || die "--keep must be at least 1"
[ -x "$VENV/bin/python" ] || die "no trainer venv at $VENV: run AUGUR_CACHE=$(dirname "$VENV") $HERE/setup.sh, or pass --venv"
[ -f "$HERE/train.py" ] || die "train.py not found beside $0"
command -v "$AUGURCTL" >/dev/null || die "augurctl not found ($AUGURCTL): pass --augurctl"
admin() { "$AUGURCTL" "$@" --admin-socket "$SOCKET"; }

mkdir -p "$MODELS"
# One writer of $MODELS at a time: install.sh takes the same lock.
exec 9>"$MODELS/.lock"
flock -n 9 || die "another retraining or install.sh holds $MODELS/.lock"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/augur-retrain.XXXXXX")
VERSION=
cleanup() {
  rm -rf "$WORK"
  # A version that was not switched in is not kept.
  if [ -n "$VERSION" ] && [ "$(readlink "$MODELS/current" 2>/dev/null)" != "$VERSION" ]; then
    rm -rf "${MODELS:?}/$VERSION"
  fi
}
trap cleanup EXIT

# 1. traces
if [ -z "$TRACES" ]; then
  TRACES=$WORK/traces.jsonl
  # How many runs the daemon keeps, from its JSON list: a node that ran nothing lazily yet has
  # none, and its export would be refused (404).
  admin trace list --json >"$WORK/list.json" 2>"$WORK/export.err" \
    || die "cannot list traces through $SOCKET: $(cat "$WORK/export.err")"
  KEPT=$("$VENV/bin/python" -c 'import json, sys; print(len(json.load(sys.stdin)["traces"]))' \
    <"$WORK/list.json") || die "cannot read the trace list of $SOCKET: $(head -c 300 "$WORK/list.json")"
  if [ "$KEPT" -eq 0 ]; then
    : >"$TRACES"
  else
    admin trace export --quiet --out "$TRACES" 2>"$WORK/export.err" \
      || die "cannot export traces through $SOCKET: $(cat "$WORK/export.err")"
  fi
fi
[ -f "$TRACES" ] || die "traces file $TRACES not found"
RUNS=$(grep -c '"type":"run"' "$TRACES" || true)
if [ "$RUNS" -lt "$MIN_RUNS" ]; then
  log "only $RUNS runs in the traces, fewer than --min-runs $MIN_RUNS: not retraining (current model stays)"
  exit 0
fi
log "$RUNS runs in $TRACES"

# 2. train
VERSION=$(date -u +%Y%m%dT%H%M%SZ)
while [ -e "$MODELS/$VERSION" ]; do sleep 1; VERSION=$(date -u +%Y%m%dT%H%M%SZ); done
LABEL=${LABEL:-retrained on $(hostname) from $RUNS runs}
log "training $MODELS/$VERSION ($EPOCHS epochs)"
"$VENV/bin/python" "$HERE/train.py" --quiet --epochs "$EPOCHS" --label "$LABEL" \
  --out "$MODELS/$VERSION" "$TRACES" || die "train.py failed"

# 3. validate with the daemon's own checks
CHECK=$("$AUGURCTL" model check --onnxruntime-library "$ORT_LIB" "$MODELS/$VERSION" 2>&1) \
  || die "the new model failed validation: $CHECK"
log "$CHECK"

# 4. switch current, then serve
PREVIOUS=$(readlink "$MODELS/current" 2>/dev/null || true)
switch() {
  ln -sfn "$1" "$MODELS/.current.$$"
  mv -fT "$MODELS/.current.$$" "$MODELS/current"
}
switch "$VERSION"
log "current: ${PREVIOUS:-none} -> $VERSION"
if [ "$RELOAD" = 1 ]; then
  if ! OUT=$(admin model reload --dir "$MODELS/current" 2>&1); then
    if [ -n "$PREVIOUS" ]; then switch "$PREVIOUS"; else rm -f "$MODELS/current"; fi
    die "the daemon did not take the new model: $OUT"
  fi
  log "$OUT"
fi

# 5. keep the last KEEP retrained versions (the served one always)
mapfile -t OLD < <(find "$MODELS" -mindepth 1 -maxdepth 1 -type d -name '[0-9]*T*Z' -printf '%f\n' | sort -r)
for v in "${OLD[@]:$KEEP}"; do
  [ "$v" = "$(readlink "$MODELS/current")" ] && continue
  rm -rf "${MODELS:?}/$v"
  log "removed old version $v"
done
log "done: current is $VERSION"
