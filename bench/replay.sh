#!/usr/bin/env bash
# Replay and nightly-run benchmark on the ~10 million event day of bench/export.sh:
#  1. `run` end to end (export -> analyze -> detect -> advise with the replay grid ->
#     patch -> report), wall time and peak RSS;
#  2. `advise` with the replay check (loads every host's calls, replays the grid)
#     against `advise` without it: the replay's share of the night;
#  3. `replay` under the policies the simulator ran with: fidelity per host (replayed
#     opens and half-open outcomes against the recorded transitions).
#
# Usage: bench/replay.sh [WORKDIR]
source "$(dirname "$0")/common.sh"

sim="$work/sim-1"
if [ ! -f "$sim/telemetry.sqlite" ]; then
  "$bin" -q simulate --out "$sim" --hosts 40 --rps 3 --hours 24 --seed 7 > /dev/null
fi
# breakers.yaml with the policy each simulated host ran with.
python3 bench/config_from_ground_truth.py "$sim/ground_truth.json" "$work/breakers.yaml"

measure() { # label command...
  local label=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$work/rss" "$@" > "$work/last.out"
  t1=$(date +%s.%N)
  python3 -c "import sys; print(f'| {sys.argv[1]} | {float(sys.argv[3]) - float(sys.argv[2]):.1f} s | {int(sys.argv[4]) / 1024:.0f} MiB |')" \
    "$label" "$t0" "$t1" "$(cat "$work/rss")"
}

rows=$(sqlite3 "$sim/telemetry.sqlite" 'SELECT count(*) FROM http_events')
echo "## $rows events, 40 hosts, 24 h"
echo "| step | time | peak RSS |"
echo "|---|---|---|"
rm -rf "$work/run"
measure "run (export, analyze, detect, advise + replay grid, patch, report)" \
  "$bin" -q run --telemetry "$sim/telemetry.sqlite" --config "$work/breakers.yaml" --out "$work/run"
measure "advise with the replay check" \
  "$bin" -q advise --metrics "$work/run/metrics" --data "$work/run/dataset" --config "$work/breakers.yaml"
measure "advise without it" \
  "$bin" -q advise --metrics "$work/run/metrics" --config "$work/breakers.yaml"
measure "replay (every host, recorded policies)" \
  "$bin" -q replay --data "$work/run/dataset" --metrics "$work/run/metrics" --config "$work/breakers.yaml" --json
echo
python3 - "$work/last.out" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
worst, within, opening = 0.0, 0, 0
for r in rows:
    ok = True
    for k in ("opens", "half_open_closed", "half_open_reopened"):
        a, b = r[k], r["recorded"][k]
        err = abs(a - b) / max(b, 1)
        worst = max(worst, err)
        ok &= err <= 0.05
    within += ok
    opening += r["recorded"]["opens"] > 0
print(f"Fidelity: {within} of {len(rows)} hosts within 5% on opens and half-open outcomes "
      f"({opening} hosts opened); worst relative error {worst:.1%}; "
      f"{sum(r['recorded']['opens'] for r in rows)} recorded opens, "
      f"{sum(r['opens'] for r in rows)} replayed; {sum(r['synthetic_calls'] for r in rows)} synthetic calls filled in.")
PY
