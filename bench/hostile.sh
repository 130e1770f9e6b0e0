#!/usr/bin/env bash
# Hostile values at scale: the ~10 million events of bench/export.sh (40 hosts, 3 calls
# per second per host, one simulated day), and the same telemetry with two more rows: a
# 429 whose server sent `Retry-After: 1000000000000`, and a 200 stamped a year ahead.
# Times `analyze` without --now (the night is found: metrics::night) and with --now at
# the same end (no search), and `run` on the clean and the hostile day: wall time, user
# CPU and peak RSS, the runs alternated, median of 3 (all runs are printed).
#
# Usage: bench/hostile.sh [WORKDIR]
#   BASELINE_BIN=path/to/an/earlier/breaker-advisor runs the same commands with it too
#   (BENCHMARKS.md compares with the commit before the bounds, 5b63395).
source "$(dirname "$0")/common.sh"

day="$work/hostile-day"
if [ ! -f "$day/telemetry.sqlite" ]; then
  "$bin" -q simulate --out "$day" --hosts 40 --rps 3 --hours 24 --seed 7 > /dev/null
fi
python3 bench/config_from_ground_truth.py "$day/ground_truth.json" "$day/breakers.yaml"
hostile="$work/hostile-day/hostile"
if [ ! -f "$hostile/telemetry.sqlite" ]; then
  mkdir -p "$hostile"
  cp "$day/telemetry.sqlite" "$hostile/telemetry.sqlite"
  python3 - "$hostile/telemetry.sqlite" <<'EOF'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
end = c.execute("SELECT max(ts) FROM http_events").fetchone()[0]
cols = "run_id, ts, host, role, method, status, url_hash, from_cache, retry_count, retry_after_s, breaker_state, breaker_recorded, elapsed_ms"
c.execute(f"INSERT INTO http_events ({cols}) VALUES ('sim-7', ?, 'europepmc.org', 'metadata', 'GET', 429, 'ffffffffffffffff', 0, 0, 1000000000000, 'closed', 'failure', 12)", (end - 0.5,))
c.execute(f"INSERT INTO http_events ({cols}) VALUES ('sim-7', ?, 'doi.org', 'landing', 'GET', 200, 'eeeeeeeeeeeeeeee', 0, 0, NULL, 'closed', 'success', 40)", (end + 365 * 86400,))
c.commit()
EOF
fi

bins=("new=$bin")
[ -n "${BASELINE_BIN:-}" ] && bins+=("baseline=$BASELINE_BIN")
rm -rf "$day/data"
"$bin" -q export --telemetry "$day/telemetry.sqlite" --out "$day/data" > /dev/null
end=$("$bin" analyze --data "$day/data" --config "$day/breakers.yaml" --out "$work/hostile-m" \
  | sed -n 's/^window [^ ]* \.\. \([^ ]*Z\):.*/\1/p')
echo "the clean day's window ends at $end"
measure() { # label, command...
  local label="$1"; shift
  /usr/bin/time -f "$label %e s wall, %U s user, %M KB" "$@" > /dev/null 2>> "$work/hostile-times" || true
  tail -1 "$work/hostile-times"
}
: > "$work/hostile-times"
for ((i = 1; i <= 3; i++)); do
  for b in "${bins[@]}"; do
    name="${b%%=*}"; exe="${b#*=}"
    measure "$name analyze" "$exe" -q analyze --data "$day/data" --config "$day/breakers.yaml" --out "$work/hostile-m-$name"
    measure "$name analyze --now" "$exe" -q analyze --data "$day/data" --config "$day/breakers.yaml" --out "$work/hostile-m-$name" --now "$end"
    rm -rf "$day/out-$name" "$hostile/out-$name"
    measure "$name run clean" "$exe" -q run --telemetry "$day/telemetry.sqlite" --config "$day/breakers.yaml" --out "$day/out-$name"
    measure "$name run hostile" "$exe" -q run --telemetry "$hostile/telemetry.sqlite" --config "$day/breakers.yaml" --out "$hostile/out-$name"
  done
done
# What each made of the hostile day: its window and its warnings.
for b in "${bins[@]}"; do
  name="${b%%=*}"
  echo "$name, hostile day: $(grep -m1 '^<sub>Window' "$hostile/out-$name/report.md" | sed 's/<[^>]*>//g')"
  grep '^> [0-9a-z]' "$hostile/out-$name/report.md" | sed "s/^/$name, warning: /"
done
