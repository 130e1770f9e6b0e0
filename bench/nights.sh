#!/usr/bin/env bash
# The closed loop (issue 14): does applying the advice make the crawler's next night
# better? Night 1 runs the simulator's default fleet (12 hosts, 2 calls/s each, 24 h,
# server quotas on the chronic-noise and timeout hosts) under the given breakers.yaml
# and ratelimits.yaml; `run --write` patches them; night 2 runs under the patched files,
# and so on. Every night is also simulated under the original files: the baseline, the
# same hosts with the same noise and incident times. bench/nights.py then tables the
# outcomes per night from each night's ground truth.
#
# Usage: bench/nights.sh [NIGHTS] [WORKDIR] [BREAKERS] [RATELIMITS] [-- SIMULATE_ARGS...]
#   defaults: 3 nights, /tmp/breaker-advisor-nights, data-samples/breakers.yaml and
#   data-samples/ratelimits.yaml, `--hosts 12 --rps 2 --hours 24 --quotas`.
pos=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do pos+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
fleet=("$@")
[ ${#fleet[@]} -eq 0 ] && fleet=(--hosts 12 --rps 2 --hours 24 --quotas)
nights="${pos[0]:-3}"
source "$(dirname "$0")/common.sh" "${pos[1]:-/tmp/breaker-advisor-nights}"
breakers="${pos[2]:-data-samples/breakers.yaml}"
ratelimits="${pos[3]:-data-samples/ratelimits.yaml}"
# Each run reads one night: the dataset keeps them all.
hours=24
for ((i = 0; i < ${#fleet[@]}; i++)); do
  [ "${fleet[$i]}" = "--hours" ] && hours="${fleet[$((i + 1))]}"
done

rm -rf "$work/cfg" "$work/orig" "$work/out" "$work"/base-* "$work"/advised-*
mkdir -p "$work/cfg" "$work/orig"
cp "$breakers" "$work/orig/breakers.yaml"
cp "$ratelimits" "$work/orig/ratelimits.yaml"
cp "$work/orig/"*.yaml "$work/cfg/"

for k in $(seq 1 "$nights"); do
  "$bin" -q simulate --out "$work/base-$k" --night "$k" "${fleet[@]}" \
    --config "$work/orig/breakers.yaml" --ratelimits "$work/orig/ratelimits.yaml" > /dev/null
  if [ "$k" -eq 1 ]; then
    cp -r "$work/base-1" "$work/advised-1"
  else
    "$bin" -q simulate --out "$work/advised-$k" --night "$k" "${fleet[@]}" \
      --config "$work/cfg/breakers.yaml" --ratelimits "$work/cfg/ratelimits.yaml" > /dev/null
  fi
  # The files this night ran under.
  cp "$work/cfg/breakers.yaml" "$work/cfg/ratelimits.yaml" "$work/advised-$k/"
  "$bin" -q run --out "$work/out" --patch-file "$work/cfg/breakers.patch.yaml" \
    --window "$(python3 -c "import sys; print(round(float(sys.argv[1]) * 60))" "$hours")m" \
    --config "$work/cfg/breakers.yaml" --ratelimits "$work/cfg/ratelimits.yaml" --write \
    $(for f in "$work/advised-$k"/telemetry*.sqlite; do printf -- '-t %s ' "$f"; done) \
    > "$work/advised-$k/run.txt"
  cp "$work/cfg/breakers.patch.yaml" "$work/advised-$k/patch.yaml"
done
python3 bench/nights.py "$work" "$nights"
