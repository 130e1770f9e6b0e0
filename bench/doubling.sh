#!/usr/bin/env bash
# Time per doubling of the events: `run` end to end on the 1x and 2x days of
# bench/scale.sh (run that first: it simulates them), alternated run after run so a slow
# spell of the machine touches both alike; median wall and CPU (user + sys) time of 3.
#
# Usage: bench/doubling.sh [WORKDIR]   (RUNS=5: more pairs)
source "$(dirname "$0")/common.sh"

log="$work/doubling.times"
rm -f "$log"
for ((i = 1; i <= ${RUNS:-3}; i++)); do
  for rps in 3 6; do
    sim="$work/day-rps$rps"
    rm -rf "$work/doubling-out"
    /usr/bin/time -f "$rps %e %U %S %M" -a -o "$log" "$bin" -q run \
      --telemetry "$sim/telemetry.sqlite" --config "$sim/breakers.yaml" \
      --out "$work/doubling-out" > /dev/null
  done
done
python3 - "$log" <<'PY'
import sys, statistics, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    rps, wall, user, sys_, kb = line.split()
    runs[rps].append((float(wall), float(user) + float(sys_), int(kb) // 1024))
med = {r: (statistics.median(w for w, _, _ in v), statistics.median(c for _, c, _ in v)) for r, v in runs.items()}
print("| day | walls | median wall | median CPU | peak RSS (max) |")
print("|---|---|---:|---:|---:|")
for r, v in runs.items():
    print(f"| {float(r) / 3:g}x | {', '.join(f'{w:.1f} s' for w, _, _ in v)} | {med[r][0]:.1f} s | {med[r][1]:.1f} s | {max(m for _, _, m in v)} MiB |")
print(f"\n2x / 1x: wall {med['6'][0] / med['3'][0]:.2f}x, CPU {med['6'][1] / med['3'][1]:.2f}x")
PY
