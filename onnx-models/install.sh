#!/bin/bash
# install.sh - puts the shipped LSTM model, ONNX Runtime and the retraining scripts where a
# node's daemon and its retraining timer find them (decision 0020). Idempotent; needs root for
# the default paths.
#
# Usage:  onnx-models/install.sh [--models DIR] [--lib-dir DIR] [--model SRC] [--augurctl BIN]
#                                [--ort-lib FILE] [--activate]
#
#   --models DIR     the node's model store (default /var/lib/augur/models: <root>/models, whose
#                    `current` link is the daemon's default predictor.model_dir)
#   --lib-dir DIR    where ONNX Runtime and the trainer go (default /usr/local/lib/augur)
#   --model SRC      the model directory to install (default onnx-models/tools-v1); it is
#                    installed as <models>/<name of SRC>
#   --augurctl BIN   the augurctl that validates it (default: beside this script's
#                    target/debug, else `augurctl` on PATH)
#   --ort-lib FILE   the ONNX Runtime library to install (default: the one onnx-models/setup.sh
#                    extracted into ${AUGUR_CACHE:-/var/cache/augur-tests}/ort/, else the one
#                    installed already; setup.sh is run if there is neither)
#   --activate       point `current` at this model even if `current` already points elsewhere
#                    (by default an existing `current`, e.g. a model retrained on the node, stays)
#
# Makes:
#   <lib-dir>/libonnxruntime.so.1.31.1     (replaced only if it differs)
#   <lib-dir>/trainer/                     train.py, lstm_numpy.py, export.py, retrain.sh,
#                                          requirements.txt, setup.sh (what the timer runs)
#   <models>/<name>/                       the model, validated with `augurctl model check`
#                                          (the daemon's own validation) before it is renamed in
#   <models>/current -> <name>             switched by renaming a new link over it (atomic)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ORT_VERSION=1.31.1
MODELS=/var/lib/augur/models
LIB_DIR=/usr/local/lib/augur
SRC=$HERE/tools-v1
AUGURCTL=
ORT_SRC=
ACTIVATE=0

log() { echo "onnx-install: $*"; }
die() { echo "onnx-install: ERROR: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case $1 in
    --models) MODELS=$2; shift 2 ;;
    --lib-dir) LIB_DIR=$2; shift 2 ;;
    --model) SRC=$2; shift 2 ;;
    --augurctl) AUGURCTL=$2; shift 2 ;;
    --ort-lib) ORT_SRC=$2; shift 2 ;;
    --activate) ACTIVATE=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

if [ -z "$AUGURCTL" ]; then
  if [ -x "$HERE/../target/debug/augurctl" ]; then AUGURCTL=$HERE/../target/debug/augurctl
  else AUGURCTL=$(command -v augurctl) || die "augurctl not found: build it (cargo build --bins) or pass --augurctl"
  fi
fi
[ -d "$SRC" ] || die "model directory $SRC not found"
NAME=$(basename "$SRC")

# --- ONNX Runtime
ORT_LIB=$LIB_DIR/libonnxruntime.so.$ORT_VERSION
if [ -z "$ORT_SRC" ]; then
  ORT_SRC=${AUGUR_CACHE:-/var/cache/augur-tests}/ort/libonnxruntime.so.$ORT_VERSION
  if [ ! -f "$ORT_SRC" ] && [ -f "$ORT_LIB" ]; then ORT_SRC=$ORT_LIB   # installed already
  elif [ ! -f "$ORT_SRC" ]; then bash "$HERE/setup.sh"
  fi
fi
[ -f "$ORT_SRC" ] || die "ONNX Runtime library $ORT_SRC not found"
mkdir -p "$LIB_DIR"
if cmp -s "$ORT_SRC" "$ORT_LIB"; then
  log "ONNX Runtime: $ORT_LIB (up to date)"
else
  cp "$ORT_SRC" "$ORT_LIB.tmp.$$"
  mv -f "$ORT_LIB.tmp.$$" "$ORT_LIB"
  log "ONNX Runtime: installed $ORT_LIB"
fi

# --- the trainer, for the retraining timer
TRAINER=$LIB_DIR/trainer
mkdir -p "$TRAINER"
for f in train.py lstm_numpy.py export.py retrain.sh requirements.txt setup.sh; do
  if ! cmp -s "$HERE/$f" "$TRAINER/$f"; then
    cp "$HERE/$f" "$TRAINER/$f.tmp.$$"
    mv -f "$TRAINER/$f.tmp.$$" "$TRAINER/$f"
  fi
done
log "trainer: $TRAINER"

# --- the model: copied beside its place, validated, renamed in
mkdir -p "$MODELS"
# One writer of $MODELS at a time: retrain.sh (the timer's job) takes the same lock; wait
# for a retraining in progress rather than switch `current` under it.
exec 9>"$MODELS/.lock"
if ! flock -n 9; then
  log "waiting for $MODELS/.lock (a retraining is running; at most 15 min)"
  flock -w 900 9 || die "$MODELS/.lock still held after 15 min; nothing was changed"
fi
DEST=$MODELS/$NAME
same_model() { # DIR: holds exactly SRC's four files
  local f
  for f in meta.json model.onnx vocab.json golden.json; do cmp -s "$SRC/$f" "$1/$f" || return 1; done
}
if [ -d "$DEST" ] && same_model "$DEST"; then
  log "model: $DEST (up to date)"
else
  STAGE=$MODELS/.$NAME.install.$$
  trap 'rm -rf "$STAGE"' EXIT
  rm -rf "$STAGE"
  mkdir "$STAGE"
  cp "$SRC"/meta.json "$SRC"/model.onnx "$SRC"/vocab.json "$SRC"/golden.json "$STAGE"/
  "$AUGURCTL" model check --onnxruntime-library "$ORT_LIB" "$STAGE" >/dev/null \
    || die "model $SRC failed validation (above); nothing was changed"
  if [ -e "$DEST" ]; then
    # A different model under the same name: keep it aside rather than lose it.
    mv "$DEST" "$DEST.replaced.$(date -u +%Y%m%dT%H%M%SZ)"
  fi
  mv "$STAGE" "$DEST"
  trap - EXIT
  log "model: installed and validated $DEST"
fi

# --- current
CURRENT=$MODELS/current
if [ -L "$CURRENT" ] && [ "$ACTIVATE" = 0 ] && [ "$(readlink "$CURRENT")" != "$NAME" ]; then
  log "current: stays $(readlink "$CURRENT") (--activate switches it to $NAME)"
elif [ "$(readlink "$CURRENT" 2>/dev/null)" = "$NAME" ]; then
  log "current: $NAME (up to date)"
else
  [ ! -e "$CURRENT" ] || [ -L "$CURRENT" ] || die "$CURRENT exists and is not a symbolic link"
  ln -sfn "$NAME" "$MODELS/.current.$$"
  mv -fT "$MODELS/.current.$$" "$CURRENT"
  log "current: -> $NAME (augurctl model reload, or a restart, serves it)"
fi
