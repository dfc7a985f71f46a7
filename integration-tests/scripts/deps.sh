#!/bin/bash
# deps.sh - install everything the Augur integration tests and the demo need.
#
# Usage:  integration-tests/scripts/deps.sh        (as root; Debian bookworm)
#
# Installs with apt-get (only when something is missing; `apt-get update` runs
# only then, so a second run takes well under a second):
#   containerd runc docker-registry skopeo umoci debootstrap busybox-static
#   fuse3 golang-go curl jq ca-certificates
#   attr libcap2-bin (setfattr, setcap: xattrs and file capabilities in the edgecases image)
#   stargz-snapshotter (ctr-remote: rpull and eStargz conversion in the lazy-pull tests)
#   apache2-utils (htpasswd, for the registry-auth test)
#   iproute2 (ip netns, tc: the shaped network of the lazy-pull benchmark)
#   python3-venv (the ONNX trainer's venv: onnx-models/setup.sh, called at the end)
#   golang-github-containerd-containerd-dev (--no-install-recommends; the
#     containerd 1.6 Go sources under /usr/share/gocode used to build the
#     reference snapshotter and the conformance test offline)
#   prometheus (--no-install-recommends, no node exporter: promtool checks
#     systemd/augur-alerts.yml, and the metrics test scrapes the daemon with a
#     real Prometheus on 127.0.0.1; the packaged service is not started)
#   chromium (--no-install-recommends: headless Chromium loads the daemon's
#     /dashboard page in the dashboard test, dumps its DOM and takes a screenshot)
# makes sure `cargo nextest` exists (cargo install --locked cargo-nextest), and runs
# onnx-models/setup.sh (the trainer's venv and libonnxruntime.so in the test cache).
# Nothing is started: there is no systemd here and the tests run their own
# containerd / registry processes.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

PKGS=(containerd runc docker-registry skopeo umoci debootstrap busybox-static
      fuse3 golang-go curl jq ca-certificates stargz-snapshotter apache2-utils
      attr libcap2-bin iproute2 python3-venv)
PKGS_NO_RECOMMENDS=(golang-github-containerd-containerd-dev prometheus chromium)

log() { echo "deps: $*"; }

# quiet CMD...: run CMD with its output in a temp file, shown only if it fails
quiet() {
  local out rc=0
  out=$(mktemp)
  "$@" >"$out" 2>&1 || rc=$?
  if [ $rc -ne 0 ]; then cat "$out" >&2; log "FAILED (rc=$rc): $*" >&2; fi
  rm -f "$out"
  return $rc
}

if [ "$(id -u)" != 0 ]; then
  log "must run as root (apt-get install)" >&2
  exit 1
fi

# missing PKG... -> prints the packages that are not fully installed
missing() {
  local p st
  for p in "$@"; do
    st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
    [ "${st:0:2}" = "ii" ] || echo "$p"
  done
}

mapfile -t MISS < <(missing "${PKGS[@]}")
mapfile -t MISS_NR < <(missing "${PKGS_NO_RECOMMENDS[@]}")

if [ ${#MISS[@]} -eq 0 ] && [ ${#MISS_NR[@]} -eq 0 ]; then
  log "apt packages: all $(( ${#PKGS[@]} + ${#PKGS_NO_RECOMMENDS[@]} )) present"
else
  log "apt packages missing: ${MISS[*]}${MISS_NR[*]:+ ${MISS_NR[*]}}"
  log "apt-get update"
  quiet apt-get update
  if [ ${#MISS[@]} -gt 0 ]; then
    log "apt-get install ${MISS[*]}"
    quiet apt-get install -y "${MISS[@]}"
  fi
  if [ ${#MISS_NR[@]} -gt 0 ]; then
    log "apt-get install --no-install-recommends ${MISS_NR[*]}"
    quiet apt-get install -y --no-install-recommends "${MISS_NR[@]}"
  fi
  mapfile -t STILL < <(missing "${PKGS[@]}" "${PKGS_NO_RECOMMENDS[@]}")
  if [ ${#STILL[@]} -gt 0 ]; then
    log "still missing after install: ${STILL[*]}" >&2
    exit 1
  fi
  log "apt packages: installed"
fi

# Sanity: the Go sources the offline GOPATH builds need.
if [ ! -f /usr/share/gocode/src/github.com/containerd/containerd/snapshots/testsuite/testsuite.go ]; then
  log "containerd Go sources missing under /usr/share/gocode (golang-github-containerd-containerd-dev)" >&2
  exit 1
fi
log "containerd Go sources: /usr/share/gocode/src/github.com/containerd/containerd"

# cargo-nextest (a cargo subcommand, installed per user into ~/.cargo/bin)
if ! command -v cargo >/dev/null 2>&1; then
  log "cargo not found: install Rust (rustup) first" >&2
  exit 1
fi
if cargo nextest --version >/dev/null 2>&1; then
  log "cargo nextest: $(cargo nextest --version 2>/dev/null | head -1)"
else
  log "cargo install --locked cargo-nextest"
  quiet cargo install --locked cargo-nextest
  log "cargo nextest: $(cargo nextest --version 2>/dev/null | head -1)"
fi

bash "$(dirname "$0")/../../onnx-models/setup.sh"

log "done"
