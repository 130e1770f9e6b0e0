#!/usr/bin/env bash
# The nightly run's cost, before and after a change: `run` with `crawler: auto` on the
# 1x day of bench/scale.sh (40 hosts, 3 calls/s each, 24 h, seed 7; about 10M events),
# breakers.yaml from the policies the simulator ran. Each binary's first run, untimed,
# writes the patch file its timed runs start from, as a second night does. The binaries
# alternate run after run (so a slow spell of the machine touches both alike); wall time
# and peak RSS, median of RUNS (default 3).
#
# Usage: bench/nightly_cost.sh WORKDIR BASELINE_BIN [RUNS]
#   (the other binary is this checkout's release build; the day is simulated by it)
source "$(dirname "$0")/common.sh"
base_bin="$2"
runs="${3:-3}"

sim="$work/day"
if [ ! -f "$sim/telemetry.sqlite" ]; then
  "$bin" -q simulate --out "$sim" --hosts 40 --rps 3 --hours 24 --seed 7 > /dev/null
fi
python3 bench/config_from_ground_truth.py "$sim/ground_truth.json" "$sim/breakers.yaml"
common=(--telemetry "$sim/telemetry.sqlite" --config "$sim/breakers.yaml" --out out
  --patch-file previous.patch.yaml)
declare -A times rss
for who in baseline this; do
  b="$bin"; [ "$who" = baseline ] && b="$base_bin"
  rm -rf "$work/seed-$who" && mkdir -p "$work/seed-$who"
  (cd "$work/seed-$who" && "$b" -q run "${common[@]}" > /dev/null)
done
for ((i = 1; i <= runs; i++)); do
  for who in baseline this; do
    b="$bin"; [ "$who" = baseline ] && b="$base_bin"
    dir="$work/run-$who"
    rm -rf "$dir" && mkdir -p "$dir" && cp "$work/seed-$who/previous.patch.yaml" "$dir/"
    read -r secs_ mib_ <<< "$(timed_with "$b" "$dir" run "${common[@]}")"
    times[$who]+="$secs_ "
    rss[$who]+="$mib_ "
  done
done
echo "| binary | runs | median time | peak RSS of each run | median peak RSS |"
echo "|---|---|---:|---|---:|"
for who in baseline this; do
  # shellcheck disable=SC2086
  echo "| $who | ${times[$who]}| $(median ${times[$who]}) s | ${rss[$who]}| $(median ${rss[$who]}) MiB |"
done
