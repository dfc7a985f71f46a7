#!/bin/bash
# bench-lazy.sh - lazy pull (Augur) against full pull (containerd's overlayfs) under shaped
# networks: time from pull start to the workload's first output, and bytes fetched.
#
# Builds what the benchmark needs, then runs integration-tests/src/bin/augur-lazy-bench/:
#   - the Debian packages      integration-tests/scripts/deps.sh (only what is missing)
#   - the release binaries     cargo build --release -p augur-snapshotter -p augur-integration-tests --bins
#   - the images               built and pushed by the benchmark with images.sh (python-big is
#                              built on first use, ~2 min, then cached)
# and tees the Markdown report into $AUGUR_CACHE/bench-lazy-last.md. Progress lines go to
# stderr. The default run (5 rounds x 3 profiles x 2 images x 2 modes) takes about 25-35 min on
# 2 cores, most of it full pulls of python-big at 25 Mbit/s.
#
# Usage (as root: network namespace, tc, containerd, FUSE):
#   integration-tests/scripts/bench-lazy.sh [augur-lazy-bench args]
#     --rounds N          runs per profile x image x mode (default 5; the report gives medians)
#     --profiles LIST     of unshaped,100mbit-20ms,25mbit-50ms (default all three)
#     --images LIST       of python,python-big (default both)
#     --augur-config F    the daemon's config file (default: none, i.e. the defaults)
#     --strict            exit 1 if a target is missed
#
# Environment:
#   AUGUR_CACHE            cache root (default /var/cache/augur-tests)
#   AUGUR_SNAPSHOTTER_BIN  daemon to measure instead of target/release/augur-snapshotter
#   CARGO_TARGET_DIR       honoured as cargo does
#
# Everything runs under one /var/tmp/augur-lazybench-* directory and one network namespace
# augur-lazybench-<pid>; both are removed (processes stopped, mounts undone, qdiscs gone) when
# the benchmark ends, also on failure or Ctrl-C.
set -euo pipefail

# The body is one function, read whole before it runs: a benchmark runs for half an hour, and
# bash reads a plain script as it goes, so an edit to this file meanwhile would run half of each.
main() {

  HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  # shellcheck source=integration-tests/scripts/bench-report.sh
  . "$HERE/bench-report.sh"
  bench_setup bench-lazy bench-lazy-last.md "network namespace, tc, containerd, FUSE"
  log "checking the Debian packages"
  bash "$HERE/deps.sh" >&2
  log "building the release daemon and the benchmark"
  cargo build --release --quiet -p augur-snapshotter -p augur-integration-tests --bins

  run_and_keep_report augur-lazy-bench "$OUT" "$@"
}

main "$@"
exit
