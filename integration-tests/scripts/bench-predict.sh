#!/bin/bash
# bench-predict.sh - the predictor end to end: time from pull start to a workload's first output
# on a lazily pulled image, with no prefetch, with each model trained on other argument sets
# (replay, markov, lstm, ensemble), and with an oracle that knows the run, under shaped networks.
#
# Builds what the benchmark needs, then runs integration-tests/src/bin/augur-predict-bench/:
#   - the Debian packages, ONNX Runtime and the trainer's venv   integration-tests/scripts/deps.sh
#   - the release binaries     cargo build --release -p augur-snapshotter -p augur-integration-tests --bins
#   - the tools image          built by images.sh on first use (a few minutes), then cached
#   - the LSTM of the training runs   trained on first use (seconds), cached under
#                              $AUGUR_CACHE/predict-bench/lstm-<hash of the training traces>
# and tees the Markdown report into $AUGUR_CACHE/bench-predict-last.md. Progress lines go to
# stderr. A run takes 3-15 s on 2 cores; the default (3 rounds x 2 profiles x 10 argument sets x
# 7 variants = 462 runs) takes about 40 min, the quick one below about 5 min.
#
# Usage (as root: network namespace, tc, containerd, FUSE):
#   integration-tests/scripts/bench-predict.sh [augur-predict-bench args]
#     --rounds N          runs per profile x argument set x variant (default 3; medians reported)
#     --profiles LIST     of unshaped,100mbit-20ms,25mbit-50ms (default 100mbit-20ms,25mbit-50ms)
#     --variants LIST     of none,replay,markov,lstm,online,ensemble,oracle (default all)
#     --workloads N       the first N test argument sets of the split (default all)
#     --seed S            seed of the held-out-arguments split (default 1)
#     --keep-logs DIR     keep each run's daemon and containerd logs
#     --threshold P       the daemons' starting prefetch threshold (default: the daemon's, 0.5)
#     --unseen-image      train the models on python-big's recorded runs instead: the measured
#                         image is one they never saw (the same argument sets are run)
#   quick: integration-tests/scripts/bench-predict.sh --rounds 1 --profiles 25mbit-50ms --workloads 4
#
# Environment:
#   AUGUR_CACHE            cache root (default /var/cache/augur-tests)
#   AUGUR_ORT_LIB          ONNX Runtime (default $AUGUR_CACHE/ort/libonnxruntime.so.1.31.1)
#   CARGO_TARGET_DIR       honoured as cargo does
#
# Everything runs under one /var/tmp/augur-predictbench-* directory and one network namespace
# augur-predictbench-<pid>; both are removed (processes stopped, mounts undone, qdiscs gone)
# when the benchmark ends, also on failure or Ctrl-C.
set -euo pipefail

# The body is one function, read whole before it runs: a benchmark runs for half an hour, and
# bash reads a plain script as it goes, so an edit to this file meanwhile would run half of each.
main() {

  HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  # shellcheck source=integration-tests/scripts/bench-report.sh
  . "$HERE/bench-report.sh"
  bench_setup bench-predict bench-predict-last.md "network namespace, tc, containerd, FUSE"
  log "checking the Debian packages, ONNX Runtime and the trainer's venv"
  bash "$HERE/deps.sh" >&2
  log "building the release daemon, augurctl and the benchmark"
  cargo build --release --quiet -p augur-snapshotter -p augur-integration-tests --bins

  run_and_keep_report augur-predict-bench "$OUT" "$@"
}

main "$@"
exit
