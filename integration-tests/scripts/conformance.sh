#!/bin/bash
# conformance.sh - run containerd 1.6's snapshotter conformance suite
# (snapshots/testsuite, 21 tests) against a proxy snapshotter binary.
#
# Usage:
#   integration-tests/scripts/conformance.sh SNAPSHOTTER_BIN [EXTRA_ARG...]
# e.g.
#   conformance.sh /var/cache/augur-tests/go/bin/augur-refsnap    # reference (overlay)
#   conformance.sh target/release/augur-snapshotter --some-flag   # the Rust daemon
#
# Each test starts a fresh `SNAPSHOTTER_BIN --root <dir>/state --address
# <dir>/snap.sock EXTRA_ARG...` and stops it with SIGTERM (it must then exit 0).
# Builds the test binary first (go-build.sh; seconds when cached), runs it as
# `augur-conformance.test -test.v -test.root` with TMPDIR set to a fresh
# directory on a real disk (overlay upper dirs need xattrs and whiteouts; not
# tmpfs, never overlayfs), and exits with the test binary's status.
# Additionally it fails (status 1) if any test was skipped, except the suite's
# "Rename" test, which containerd 1.6 skips unconditionally (t.Skip in
# testsuite/issues.go). Afterwards every mount left under the temp dir is
# lazily unmounted, leftover processes started from it are killed (by pid) and
# the directory is removed, also on failure or Ctrl-C.
#
# Environment:
#   AUGUR_CACHE          cache root (default /var/cache/augur-tests)
#   CONFORMANCE_TMP      parent of the temp dir (default /var/tmp)
#   CONFORMANCE_TIMEOUT  go test timeout (default 30m)
#   CONFORMANCE_ARGS     extra go test flags, e.g. "-test.run TestSnapshotterConformance/Basic"
#   (the complete output is also kept in $AUGUR_CACHE/conformance-last.log)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${AUGUR_CACHE:-/var/cache/augur-tests}
TEST_BIN=$CACHE/go/bin/augur-conformance.test
PARENT=${CONFORMANCE_TMP:-/var/tmp}
OUT=$CACHE/conformance-last.log
# containerd 1.6 skips this one itself, unconditionally (overlay without
# redirect_dir gives EXDEV for renaming a lower directory)
ALLOWED_SKIPS=(Rename)

log() { echo "conformance: $*"; }
die() { echo "conformance: ERROR: $*" >&2; exit 1; }

[ $# -ge 1 ] || die "usage: $0 SNAPSHOTTER_BIN [EXTRA_ARG...]"
[ "$(id -u)" = 0 ] || die "must run as root (the suite mounts overlay filesystems)"
SN_BIN=$1; shift
SN_PATH=$(command -v "$SN_BIN" || true)
[ -n "$SN_PATH" ] && [ -x "$SN_PATH" ] || die "snapshotter binary not found or not executable: $SN_BIN"
SN_PATH=$(readlink -f "$SN_PATH")

"$HERE/go-build.sh"

mkdir -p "$PARENT"
FSTYPE=$(findmnt -no FSTYPE -T "$PARENT" 2>/dev/null || stat -f -c %T "$PARENT")
case $FSTYPE in
  overlayfs|overlay) die "$PARENT is on overlayfs: set CONFORMANCE_TMP to a directory on a real disk" ;;
  tmpfs) log "WARNING: $PARENT is tmpfs; a real disk (ext4/xfs) is recommended" ;;
esac
W=$(mktemp -d "$PARENT/augur-conformance.XXXXXX")
chmod 755 "$W"

cleanup() {
  local rc=$? mp pid n=0
  trap - INT TERM
  # processes still running from the temp dir (the test binary gives them
  # PDEATHSIG=SIGKILL, so normally none): kill them by pid
  # (pattern via -f: grep's own command line must not contain it)
  while read -r pid; do
    [ "$pid" = $$ ] && continue
    log "killing leftover process $pid: $(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)"
    kill -KILL "$pid" 2>/dev/null || true
  done < <(grep -lsF -f <(echo "$W/") /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3)
  # mounts left under the temp dir, deepest first (mountinfo field 5, octal-escaped)
  while read -r mp; do
    mp=$(printf '%b' "$mp")
    log "unmounting leftover mount $mp"
    umount -l "$mp" 2>/dev/null || true
    n=$((n + 1))
  done < <(awk -v p="$W/" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r)
  [ $n -eq 0 ] || log "WARNING: $n mount(s) were left behind under $W"
  rm -rf --one-file-system "$W" 2>/dev/null || rm -rf "$W" || log "WARNING: could not remove $W"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "snapshotter: $SN_PATH $*"
log "temp dir:    $W ($FSTYPE)"
start=$SECONDS
set +e
(
  cd "$W"
  export TMPDIR=$W SNAPSHOTTER_BIN=$SN_PATH SNAPSHOTTER_ARGS="$*"
  # shellcheck disable=SC2086 # CONFORMANCE_ARGS is a list of flags
  "$TEST_BIN" -test.v -test.root -test.timeout "${CONFORMANCE_TIMEOUT:-30m}" ${CONFORMANCE_ARGS:-}
) 2>&1 | tee "$OUT"
status=${PIPESTATUS[0]}
set -e
elapsed=$((SECONDS - start))

# summary of the suite's subtests ("    --- PASS: TestSnapshotterConformance/Basic (0.12s)")
count() { grep -cE "^ +--- $1: TestSnapshotterConformance/" "$OUT" || true; }
pass=$(count PASS); fail=$(count FAIL); skip=$(count SKIP)
log "$((pass + fail + skip)) tests: $pass passed, $fail failed, $skip skipped; test binary exit status $status; ${elapsed} s"

bad_skips=()
while read -r name; do
  [ -n "$name" ] || continue
  allowed=0
  for a in "${ALLOWED_SKIPS[@]}"; do [ "$name" = "$a" ] && allowed=1; done
  if [ $allowed = 1 ]; then
    log "skipped (hard-coded t.Skip in containerd's testsuite): $name"
  else
    bad_skips+=("$name")
  fi
done < <(sed -nE 's/^ +--- SKIP: TestSnapshotterConformance\/([^ ]+) .*/\1/p' "$OUT")
if grep -qE '^--- SKIP: TestSnapshotterConformance ' "$OUT"; then
  bad_skips+=("TestSnapshotterConformance (whole suite)")
fi

if [ "$status" -ne 0 ]; then
  log "FAILED (status $status); full output: $OUT"
  exit "$status"
fi
if [ ${#bad_skips[@]} -gt 0 ]; then
  log "FAILED: tests were skipped: ${bad_skips[*]}"
  exit 1
fi
if [ $((pass + fail + skip)) -eq 0 ]; then
  log "FAILED: no conformance test ran (CONFORMANCE_ARGS=${CONFORMANCE_ARGS:-})"
  exit 1
fi
log "PASSED"
