# Shared set-up of the benchmark scripts: sourced, not run.
# Sets $work (the first argument, or /tmp/breaker-advisor-bench) and $bin (a fresh
# release build of breaker-advisor).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work="${1:-/tmp/breaker-advisor-bench}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/breaker-advisor/target}"
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/breaker-advisor"
mkdir -p "$work"

# Seconds between two `date +%s.%N` stamps; KiB (from /usr/bin/time's %M) as MiB; the
# median of numbers.
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$@"; }
mib() { python3 -c "import sys; print(f'{int(sys.argv[1]) / 1024:.0f}')" "$1"; }
median() { python3 -c "import sys, statistics; print(statistics.median(float(v) for v in sys.argv[1:]))" "$@"; }

# Runs breaker-advisor BIN in folder DIR with the rest as its arguments, quietly;
# prints "seconds MiB" (wall time, peak RSS). `timed DIR ...` runs this checkout's $bin.
timed_with() {
  local b="$1" dir="$2"; shift 2
  local t0 t1
  t0=$(date +%s.%N)
  (cd "$dir" && /usr/bin/time -f "%M" -o "$work/rss" "$b" -q "$@" > /dev/null)
  t1=$(date +%s.%N)
  echo "$(secs "$t0" "$t1") $(mib "$(cat "$work/rss")")"
}
timed() { timed_with "$bin" "$@"; }
