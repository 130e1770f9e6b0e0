#!/usr/bin/env bash
# Export benchmark: about 10 million simulated events, timed side by side with the
# Python peer (sqlite3 + pyarrow) and the floor (sqlite3 CLI reading every row), with
# peak RSS from /usr/bin/time. Then the same at twice the input, to see memory stay flat.
#
# Usage: bench/export.sh [WORKDIR]   (needs: sqlite3 CLI, GNU time, pyarrow)
source "$(dirname "$0")/common.sh"

measure() { # label rows command...
  local label=$1 rows=$2; shift 2
  local t0 t1
  t0=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$work/rss" "$@" > /dev/null
  t1=$(date +%s.%N)
  python3 - "$label" "$rows" "$t0" "$t1" "$(cat "$work/rss")" <<'PY'
import sys
label, rows, t0, t1, rss_kb = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
s = t1 - t0
print(f"| {label} | {rows:,} | {s:.1f} s | {rows / s / 1e6:.2f} M rows/s | {rss_kb / 1024:.0f} MiB |")
PY
}

for scale in 1 2; do
  hours=$((24 * scale))
  dir="$work/sim-$scale"
  if [ ! -f "$dir/telemetry.sqlite" ]; then
    "$bin" -q simulate --out "$dir" --hosts 40 --rps 3 --hours "$hours" --seed 7 > /dev/null
  fi
  db="$dir/telemetry.sqlite"
  rows=$(sqlite3 "$db" 'SELECT count(*) FROM http_events')
  echo "## ${scale}x: $rows http_events rows ($(du -h "$db" | cut -f1) SQLite)"
  echo "| tool | rows | time | rows/s | peak RSS |"
  echo "|---|---|---|---|---|"
  measure "floor: sqlite3 CLI SELECT *" "$rows" sqlite3 "$db" 'SELECT * FROM http_events'
  rm -rf "$work/out-$scale"
  measure "breaker-advisor export" "$rows" "$bin" -q export --telemetry "$db" --out "$work/out-$scale"
  if [ "$scale" = 1 ]; then
    measure "python sqlite3 + pyarrow" "$rows" python3 bench/python_export.py "$db" "$work/py.parquet"
  fi
  echo
done
