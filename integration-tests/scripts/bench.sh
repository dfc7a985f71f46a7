#!/bin/bash
# bench.sh - Augur vs containerd's own overlayfs snapshotter, side by side in one run.
#
# Builds what the benchmark needs, then runs integration-tests/src/bin/augur-bench.rs:
#   - the release daemon      cargo build --release -p augur-snapshotter
#   - the reference           integration-tests/scripts/go-build.sh  (augur-refsnap, cached)
#   - the test images         integration-tests/scripts/images.sh build (cached)
#   - the benchmark itself    cargo build --release -p augur-integration-tests --bin augur-bench
# and tees the Markdown report (table + machine facts) into $AUGUR_CACHE/bench-last.md.
# Progress lines go to stderr. Takes about 2-3 minutes on 2 cores once everything is built.
#
# Usage (as root: containerd, overlay upper dirs):
#   integration-tests/scripts/bench.sh [augur-bench args]
#     --iterations N   measured gRPC iterations per snapshotter (default 300)
#     --warmup N       unmeasured gRPC iterations first (default 30)
#     --rounds N       measured pulls per snapshotter, after one warm-up round (default 8;
#                      keep it even: each snapshotter then goes first equally often)
#     --skip-pull      gRPC micro-benchmark only
#     --strict         exit 1 if Augur's median is above the reference's on any operation
#
# Environment:
#   AUGUR_CACHE            cache root (default /var/cache/augur-tests)
#   AUGUR_SNAPSHOTTER_BIN  daemon to measure instead of target/release/augur-snapshotter
#                          (then it is not built here)
#   AUGUR_REFSNAP_BIN      reference to measure instead of $AUGUR_CACHE/go/bin/augur-refsnap
#   CARGO_TARGET_DIR       honoured as cargo does
#
# The benchmark starts everything under one /var/tmp/augur-bench-* directory and removes it
# (processes stopped, mounts undone) when it ends, also on failure or Ctrl-C.
set -euo pipefail

# The body is one function, read whole before it runs: a benchmark runs for half an hour, and
# bash reads a plain script as it goes, so an edit to this file meanwhile would run half of each.
main() {

  HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  # shellcheck source=integration-tests/scripts/bench-report.sh
  . "$HERE/bench-report.sh"
  bench_setup bench bench-last.md "containerd, overlay upper dirs"
  command -v containerd >/dev/null && command -v ctr >/dev/null && command -v docker-registry >/dev/null ||
    die "containerd/ctr/docker-registry missing: run integration-tests/scripts/deps.sh"
  if [ -z "${AUGUR_SNAPSHOTTER_BIN:-}" ]; then
    log "building the release daemon"
    cargo build --release --quiet -p augur-snapshotter
  fi
  log "building the reference snapshotter (cached)"
  bash "$HERE/go-build.sh" >&2
  log "building the test images (cached)"
  bash "$HERE/images.sh" build >&2
  log "building the benchmark"
  cargo build --release --quiet -p augur-integration-tests --bin augur-bench

  # The status is the benchmark's (--strict: 1 if Augur is slower anywhere);
  # a report that was printed is kept either way.
  run_and_keep_report augur-bench "$OUT" "$@"
}

main "$@"
exit
