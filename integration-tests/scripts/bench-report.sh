# bench-report.sh - sourced by bench.sh, bench-lazy.sh and bench-predict.sh: what they share.
#
#   bench_setup NAME REPORT_FILE ROOT_REASON
# sets WS (the workspace), CACHE, TARGET and OUT ($CACHE/REPORT_FILE), defines log() and die()
# prefixed with NAME, refuses to run unless root (saying ROOT_REASON), and cd's to WS.
#
#   run_and_keep_report BINARY REPORT [benchmark args]
# runs $TARGET/release/BINARY with the args, tees stdout into REPORT.tmp and renames it to
# REPORT if anything was printed (a report is kept even when the benchmark exits non-zero, e.g.
# --strict), and returns the benchmark's exit status. With -h or --help the usage is printed
# and the last report left alone. Needs TARGET and a log() function.
bench_setup() {
  local name=$1 report=$2 reason=$3
  WS=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  CACHE=${AUGUR_CACHE:-/var/cache/augur-tests}
  TARGET=${CARGO_TARGET_DIR:-$WS/target}
  OUT=$CACHE/$report
  BENCH_NAME=$name
  log() { echo "$BENCH_NAME: $*" >&2; }
  die() {
    echo "$BENCH_NAME: ERROR: $*" >&2
    exit 1
  }
  [ "$(id -u)" = 0 ] || die "must run as root ($reason)"
  cd "$WS"
}

# Runs a release benchmark binary and keeps the Markdown report it prints.
run_and_keep_report() {
  local bin=$1 out=$2 rc=0 arg
  shift 2
  for arg in "$@"; do
    case $arg in
      -h | --help)
        "$TARGET/release/$bin" "$@"
        return
        ;;
    esac
  done
  mkdir -p "$(dirname "$out")"
  log "running; the report goes to stdout and $out"
  "$TARGET/release/$bin" "$@" | tee "$out.tmp" || rc=$?
  if [ -s "$out.tmp" ]; then
    mv -f "$out.tmp" "$out"
    log "report saved to $out"
  else
    rm -f "$out.tmp"
  fi
  return "$rc"
}
