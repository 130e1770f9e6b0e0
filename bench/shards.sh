#!/usr/bin/env bash
# Shards: the 1x day of bench/scale.sh (40 hosts, ~10 million events) advised by one
# `run` and by N shard jobs (`run --shard I/N`, one after the other here; on N machines
# they run side by side) plus `run --merge-shards`: wall time and peak RSS of each, and
# whether the merge wrote the single run's patch and report. Median of 3 runs each.
# Every run starts from the same previous patch file (a first single run's), as a
# second night does: with `crawler: auto` the shards count by the model it records.
#
# Usage: bench/shards.sh [WORKDIR]   (SHARDS="2 4": the shard counts to measure)
source "$(dirname "$0")/common.sh"

sim="$work/day-rps3"
if [ ! -f "$sim/telemetry.sqlite" ]; then
  "$bin" -q simulate --out "$sim" --hosts 40 --rps 3 --hours 24 --seed 7 > /dev/null
fi
python3 bench/config_from_ground_truth.py "$sim/ground_truth.json" "$sim/breakers.yaml"
# Every job analyses the same window: the day the simulator wrote.
# (ts is epoch seconds in this schema variant.)
now=$(sqlite3 "$sim/telemetry.sqlite" "SELECT strftime('%Y-%m-%dT00:00:00Z', max(ts), 'unixepoch', '+1 day') FROM http_events")

echo "| job | run 1 | run 2 | run 3 | median time | median peak RSS |"
echo "|---|---:|---:|---:|---:|---:|"
row() {
  local name="$1"; shift
  local -a ts ms
  for v in "$@"; do ts+=("${v% *}"); ms+=("${v#* }"); done
  echo "| $name | ${ts[0]} s | ${ts[1]} s | ${ts[2]} s | $(median "${ts[@]}") s | $(median "${ms[@]}") MiB |"
}
common=(--telemetry "$sim/telemetry.sqlite" --config "$sim/breakers.yaml" --out out
  --patch-file previous.patch.yaml)
# The first night, once, untimed: its patch file is every measured run's previous one.
rm -rf "$work/seed" && mkdir -p "$work/seed"
(cd "$work/seed" && "$bin" -q run "${common[@]}" --now "$now" > /dev/null)
fresh() { rm -rf "$1" && mkdir -p "$1" && cp "$work/seed/previous.patch.yaml" "$1/"; }
declare -a single
for i in 1 2 3; do
  fresh "$work/single"
  single+=("$(timed "$work/single" run "${common[@]}" --now "$now")")
done
row "one run, every host" "${single[@]}"
for n in ${SHARDS:-2 4}; do
  declare -A jobs=()
  declare -a merge=()
  for i in 1 2 3; do
    fresh "$work/sharded"
    for s in $(seq 1 "$n"); do
      jobs[$s]+="$(timed "$work/sharded" run "${common[@]}" --now "$now" --shard "$s/$n");"
    done
    merge+=("$(timed "$work/sharded" run --merge-shards --config "$sim/breakers.yaml" --out out \
      --patch-file previous.patch.yaml)")
  done
  for s in $(seq 1 "$n"); do
    IFS=';' read -r -a runs <<< "${jobs[$s]%;}"
    row "shard $s/$n" "${runs[@]}"
  done
  row "merge of $n shards" "${merge[@]}"
  for f in previous.patch.yaml out/changes.diff; do
    cmp -s "$work/single/$f" "$work/sharded/$f" || echo "merge of $n: $f differs from the single run's" >&2
  done
  sed 's#out/shard=\*/dataset#out/dataset#' "$work/sharded/out/report.md" \
    | cmp -s - "$work/single/out/report.md" || echo "merge of $n: report.md differs" >&2
  unset jobs merge
done
