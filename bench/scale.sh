#!/usr/bin/env bash
# Scale-out curve: `run` end to end (export from SQLite included) on one simulated day
# at 1x, 2x and 4x the ~10 million events of bench/export.sh (40 hosts, 3, 6 and 12
# calls per second per host), wall time and peak RSS.
#
# Usage: bench/scale.sh [WORKDIR]
source "$(dirname "$0")/common.sh"

echo "| scale | events | run time | peak RSS | events/s |"
echo "|---|---|---|---|---|"
for k in 1 2 4; do
  sim="$work/day-x$k"
  if [ ! -f "$sim/telemetry.sqlite" ]; then
    "$bin" -q simulate --out "$sim" --hosts 40 --rps $((3 * k)) --hours 24 --seed 7 > /dev/null
  fi
  python3 bench/config_from_ground_truth.py "$sim/ground_truth.json" "$sim/breakers.yaml"
  rows=$(sqlite3 "$sim/telemetry.sqlite" 'SELECT count(*) FROM http_events')
  rm -rf "$sim/out"
  t0=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$work/rss" "$bin" -q run --telemetry "$sim/telemetry.sqlite" \
    --config "$sim/breakers.yaml" --out "$sim/out" > /dev/null
  t1=$(date +%s.%N)
  python3 -c "import sys; s = float(sys.argv[3]) - float(sys.argv[2]); print(f'| {sys.argv[1]}x | {int(sys.argv[4]):,} | {s:.1f} s | {int(sys.argv[5]) / 1024:.0f} MiB | {int(sys.argv[4]) / s / 1e6:.2f} M |')" \
    "$k" "$t0" "$t1" "$rows" "$(cat "$work/rss")"
  rm -rf "$sim/out"
done
