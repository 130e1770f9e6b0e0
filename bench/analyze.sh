#!/usr/bin/env bash
# Analyze benchmark: our `analyze` on the ~10 million event dataset of bench/export.sh,
# side by side with the same core metrics in DuckDB SQL and in Python Polars, then on the
# 2x dataset. Wall time and peak RSS (/usr/bin/time).
#
# Usage: bench/analyze.sh [WORKDIR]   (run bench/export.sh WORKDIR first; needs duckdb, polars)
source "$(dirname "$0")/common.sh"

measure() { # label command...
  local label=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$work/rss" "$@" > /dev/null
  t1=$(date +%s.%N)
  python3 -c "import sys; print(f'| {sys.argv[1]} | {float(sys.argv[3]) - float(sys.argv[2]):.1f} s | {int(sys.argv[4]) / 1024:.0f} MiB |')" \
    "$label" "$t0" "$t1" "$(cat "$work/rss")"
}

for scale in 1 2; do
  data="$work/out-$scale"
  # The window: the 24 hours ending at the latest event (what `analyze` does by default).
  read -r start_us end_us start_txt end_txt < <(python3 - "$data" <<'PY'
import sys, duckdb, datetime as dt
mx = duckdb.sql(f"SELECT epoch_us(max(ts)) FROM read_parquet('{sys.argv[1]}/http_events/*/*.parquet')").fetchone()[0]
end = mx + 1
start = end - 24 * 3600 * 1_000_000
fmt = lambda us: (dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%f")
print(start, end, fmt(start), fmt(end))
PY
)
  rows=$(python3 -c "import duckdb,sys; print(duckdb.sql(\"SELECT count(*) FROM read_parquet('$data/http_events/*/*.parquet') WHERE ts >= TIMESTAMP '${start_txt/T/ }' AND ts < TIMESTAMP '${end_txt/T/ }'\").fetchone()[0])")
  echo "## ${scale}x dataset, 24 h window: $rows events"
  echo "| tool | time | peak RSS |"
  echo "|---|---|---|"
  measure "breaker-advisor analyze" "$bin" -q analyze --data "$data" --out "$work/metrics-$scale" --window 24h
  measure "DuckDB SQL (counts, bursts, buckets; no EWMA)" python3 bench/peer_duckdb.py queries "$data" "${start_txt/T/ }" "${end_txt/T/ }"
  measure "Python Polars (counts, bursts, buckets, EWMA)" python3 bench/peer_polars.py "$data" "$start_us" "$end_us"
  echo
done
