#!/usr/bin/env bash
# Fleet breadth (issue 31): the same events over 40 hosts and over many small ones.
# Simulates one day of HOSTS hosts at the rate that gives about EVENTS events in all,
# and one of 40 hosts with the same events; runs `run` RUNS times on each (a fresh
# output folder each time: export included) and prints the median time, the median peak
# RSS and the sizes of report.html and report.md.
#
# Usage: bench/breadth.sh [WORKDIR] [HOSTS] [EVENTS] [RUNS]
#   defaults: /tmp/breaker-advisor-breadth, 3000 hosts, 850000 events, 3 runs.
source "$(dirname "$0")/common.sh" "${1:-/tmp/breaker-advisor-breadth}"
hosts="${2:-3000}"
events="${3:-850000}"
runs="${4:-3}"
rps() { python3 -c "import sys; print(f'{int(sys.argv[1]) / (int(sys.argv[2]) * 86400):.6f}')" "$events" "$1"; }
for n in 40 "$hosts"; do
  [ -f "$work/h$n/telemetry.sqlite" ] ||
    "$bin" -q simulate --out "$work/h$n" --hosts "$n" --rps "$(rps "$n")" --hours 24 --seed 5 > /dev/null
done
for n in 40 "$hosts"; do
  : > "$work/times-$n.txt"
  for i in $(seq 1 "$runs"); do
    rm -rf "$work/out-$n"
    /usr/bin/time -f "%e %M" -a -o "$work/times-$n.txt" "$bin" -q run \
      -t "$work/h$n/telemetry.sqlite" --config data-samples/breakers.yaml \
      --ratelimits data-samples/ratelimits.yaml --out "$work/out-$n" > /dev/null
  done
  python3 - "$work/times-$n.txt" "$n" "$work/out-$n" <<'PY'
import os, statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip() and l[0].isdigit()]
t = statistics.median(float(r[0]) for r in rows)
m = statistics.median(int(r[1]) for r in rows) / 1024
out = sys.argv[3]
html = os.path.getsize(os.path.join(out, "report.html"))
md = len(open(os.path.join(out, "report.md"), encoding="utf-8").read())
runs = ", ".join(f"{float(r[0]):.2f}" for r in rows)
print(f"{sys.argv[2]:>6} hosts: runs {runs} s; median {t:.2f} s, peak {m:.0f} MiB; report.html {html:,} bytes, report.md {md:,} characters")
PY
done
