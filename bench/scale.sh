#!/usr/bin/env bash
# Memory and time at scale: `run` end to end (export from SQLite included) on one
# simulated day at 0.5x, 1x and 2x the ~10 million events of bench/export.sh (40 hosts,
# 1.5, 3 and 6 calls per second per host) under the default --memory-budget (1GiB):
# wall time and peak RSS. Then `analyze` against the same core metrics from the files
# in queries/ (counts, exact burst runs per breaker instance with q95, per-minute
# counts) in DuckDB (bench/peer_duckdb.py) and in Spark SQL (bench/peer_spark.py, local
# mode) on the 1x dataset, alternated, median of 3.
#
# Usage: bench/scale.sh [WORKDIR]
#   SCALE_RPS="3": only the 1x day; SCALE_RUNS=1: one run per size (default 3, the sizes
#   alternated). The 100M-event day is SCALE_RPS=30 SCALE_RUNS=1 (simulating it takes
#   about 8 minutes and 10 GB of disk; one run about 6 minutes).
source "$(dirname "$0")/common.sh"

runs="${SCALE_RUNS:-3}"
for rps in ${SCALE_RPS:-1.5 3 6}; do
  sim="$work/day-rps$rps"
  if [ ! -f "$sim/telemetry.sqlite" ]; then
    "$bin" -q simulate --out "$sim" --hosts 40 --rps "$rps" --hours 24 --seed 7 > /dev/null
  fi
  python3 bench/config_from_ground_truth.py "$sim/ground_truth.json" "$sim/breakers.yaml"
done
# The sizes alternate run after run, so a slow spell of the machine touches each alike.
declare -A run_times run_rss
for ((i = 1; i <= runs; i++)); do
  for rps in ${SCALE_RPS:-1.5 3 6}; do
    sim="$work/day-rps$rps"
    rm -rf "$sim/out"
    read -r secs_ mib_ <<< "$(timed "$sim" run --telemetry "$sim/telemetry.sqlite" \
      --config "$sim/breakers.yaml" --out "$sim/out")"
    run_times[$rps]+="$secs_ "
    run_rss[$rps]+="$mib_ "
  done
done
echo "| scale | events | runs | median time | peak RSS (median run) | events/s |"
echo "|---|---:|---|---:|---:|---:|"
for rps in ${SCALE_RPS:-1.5 3 6}; do
  rows=$(sqlite3 "$work/day-rps$rps/telemetry.sqlite" 'SELECT count(*) FROM http_events')
  python3 - "$rps" "$rows" "${run_times[$rps]}" "${run_rss[$rps]}" <<'PY'
import sys, statistics
r, n = float(sys.argv[1]), int(sys.argv[2])
t, m = [float(v) for v in sys.argv[3].split()], [int(v) for v in sys.argv[4].split()]
s = sorted(t)[(len(t) - 1) // 2]
print(f"| {r / 3:g}x | {n:,} | {', '.join(f'{v:.1f} s' for v in t)} | {s:.1f} s "
      f"| {m[t.index(s)]:,} MiB (of {', '.join(f'{v:,}' for v in m)}) | {n / s / 1e6:.2f} M |")
PY
done

# The comparison with the peers is on the 1x day only.
case " ${SCALE_RPS:-3} " in *" 3 "*) ;; *) exit 0 ;; esac
data="$work/day-rps3/out/dataset"
read -r start_txt end_txt < <(python3 - "$data" <<'PY'
import sys, duckdb, datetime as dt
mx = duckdb.sql(f"SELECT epoch_us(max(ts)) FROM read_parquet('{sys.argv[1]}/http_events/*/*.parquet')").fetchone()[0]
fmt = lambda us: (dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=us)).strftime("%Y-%m-%d %H:%M:%S.%f")
print(fmt(mx + 1 - 24 * 3600 * 1_000_000).replace(" ", "T"), fmt(mx + 1).replace(" ", "T"))
PY
)
echo
echo "| 1x day, 24 h window | run 1 | run 2 | run 3 | median | peak RSS (median run) |"
echo "|---|---:|---:|---:|---:|---:|"
declare -A times rss
for i in 1 2 3; do
  for tool in analyze duckdb spark; do
    t0=$(date +%s.%N)
    if [ "$tool" = analyze ]; then
      /usr/bin/time -f "%M" -o "$work/rss" "$bin" -q analyze --data "$data" \
        --config "$work/day-rps3/breakers.yaml" --out "$work/metrics-bench" > /dev/null
    else
      # Spark's RSS is the driver JVM's (local mode runs the executors in it).
      /usr/bin/time -f "%M" -o "$work/rss" python3 "bench/peer_$tool.py" queries "$data" \
        "${start_txt/T/ }" "${end_txt/T/ }" > /dev/null 2>&1
    fi
    t1=$(date +%s.%N)
    times[$tool]+="$(secs "$t0" "$t1") "
    rss[$tool]+="$(mib "$(cat "$work/rss")") "
  done
done
for tool in analyze duckdb spark; do
  python3 - "$tool" ${times[$tool]} ${rss[$tool]} <<'PY'
import sys, statistics
tool, vals = sys.argv[1], sys.argv[2:]
t, r = [float(v) for v in vals[:3]], [int(v) for v in vals[3:]]
m = statistics.median(t)
label = {
    "analyze": "breaker-advisor analyze",
    "duckdb": "DuckDB, queries/ (bench/peer_duckdb.py)",
    "spark": "Spark SQL local, queries/ (bench/peer_spark.py)",
}[tool]
print(f"| {label} | {t[0]:.1f} s | {t[1]:.1f} s | {t[2]:.1f} s | {m:.1f} s | {r[t.index(m)]} MiB |")
PY
done
