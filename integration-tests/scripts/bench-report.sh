# bench-report.sh - sourced by bench.sh, bench-lazy.sh and bench-predict.sh: runs a release
# benchmark binary and keeps the Markdown report it prints.
#
#   run_and_keep_report BINARY REPORT [benchmark args]
# runs $TARGET/release/BINARY with the args, tees stdout into REPORT.tmp and renames it to
# REPORT if anything was printed (a report is kept even when the benchmark exits non-zero, e.g.
# --strict), and returns the benchmark's exit status. With -h or --help the usage is printed
# and the last report left alone. Needs TARGET and a log() function.
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
