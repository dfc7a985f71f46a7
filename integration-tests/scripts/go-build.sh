#!/bin/bash
# go-build.sh - build the two Go test programs of Augur offline (GOPATH mode,
# against Debian's containerd 1.6 sources in /usr/share/gocode):
#   augur-refsnap           reference snapshotter (containerd's overlay
#                           snapshotter served as a gRPC proxy snapshotter)
#   augur-conformance.test  containerd's snapshotter conformance suite, run
#                           against an external snapshotter process
#
# Usage:  integration-tests/scripts/go-build.sh
#   -> ${AUGUR_CACHE:-/var/cache/augur-tests}/go/bin/{augur-refsnap,augur-conformance.test}
#
# GOCACHE lives under $AUGUR_CACHE/go/cache, so a rebuild takes seconds (the
# first build compiles containerd's dependencies, ~1 min on 2 cores). Go's own
# cache makes it idempotent; an unchanged binary is not rewritten.
# Needs golang-go and golang-github-containerd-containerd-dev: run deps.sh first.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GOSRC=$(cd "$HERE/../go" && pwd)           # GOPATH entry holding src/augur-*
CACHE=${AUGUR_CACHE:-/var/cache/augur-tests}
BIN=$CACHE/go/bin
GOCODE=/usr/share/gocode

log() { echo "go-build: $*"; }
die() { echo "go-build: ERROR: $*" >&2; exit 1; }

command -v go >/dev/null 2>&1 ||
  die "'go' not found (Debian golang-go): run integration-tests/scripts/deps.sh"
[ -f "$GOCODE/src/github.com/containerd/containerd/snapshots/testsuite/testsuite.go" ] ||
  die "containerd 1.6 Go sources missing under $GOCODE (golang-github-containerd-containerd-dev): run integration-tests/scripts/deps.sh"

mkdir -p "$BIN" "$CACHE/go/cache"
export GO111MODULE=off                     # GOPATH mode: no module proxy needed
export GOPATH=$GOSRC:$GOCODE
export GOCACHE=$CACHE/go/cache
unset GOFLAGS                              # ignore any GOFLAGS of the caller
export CGO_ENABLED=${CGO_ENABLED:-0}
log "$(go version), GOPATH=$GOPATH"

# install NAME: move $BIN/.NAME.tmp into place unless identical (never a half-written binary)
install_bin() {
  local new=$BIN/.$1.tmp dst=$BIN/$1
  if [ -f "$dst" ] && cmp -s "$new" "$dst"; then
    rm -f "$new"; log "$dst: up to date ($((SECONDS - t)) s)"
  else
    mv -f "$new" "$dst"; log "$dst: built ($((SECONDS - t)) s)"
  fi
}

t=$SECONDS
go build -o "$BIN/.augur-refsnap.tmp" augur-refsnap
install_bin augur-refsnap

t=$SECONDS
(cd "$GOSRC/src/augur-conformance" && go test -c -o "$BIN/.augur-conformance.test.tmp" .)
install_bin augur-conformance.test
