#!/usr/bin/env bash
# Two builds give the same bytes: simulates the 10-million-event night of bench/export.sh
# (40 hosts, 3 requests/s, 24 h), then with each binary exports it, analyzes it (24 h
# window), runs the nightly job on it and one command that fails on its input, and
# compares every output file's SHA-256 and each command's output and exit status. For
# refactors that must not change behaviour (BENCHMARKS.md, "The house walked").
#
# Usage: bench/identical.sh WORKDIR BIN_BEFORE BIN_AFTER
set -euo pipefail
work=$1 before=$2 after=$3
mkdir -p "$work"
sim="$work/sim"
if [ ! -f "$sim/telemetry.sqlite" ]; then
  "$before" -q simulate --out "$sim" --hosts 40 --rps 3 --hours 24 --seed 7 > /dev/null
fi
for side in before after; do
  bin=${!side}
  # Both sides run in the same folder: the report names the paths it wrote.
  out="$work/cur"
  rm -rf "$out" "${work:?}/$side"
  mkdir -p "$out"
  mkdir -p "$out/log"
  # Each command's stdout, stderr and exit status are compared too.
  step() { # name command...
    local name=$1; shift
    set +e
    "$@" > "$out/log/$name.out" 2> "$out/log/$name.err"
    echo $? > "$out/log/$name.status"
    set -e
  }
  step export "$bin" -q export --telemetry "$sim/telemetry.sqlite" --out "$out/dataset"
  # The export's summary says how long it took: the one line that is not the same twice.
  sed -i -E 's/, [0-9.]+ s \([0-9]+ rows\/s\)$//' "$out/log/export.out"
  step analyze "$bin" -q analyze --data "$out/dataset" --out "$out/metrics" --window 24h
  step run "$bin" -q run --telemetry "$sim/telemetry.sqlite" --config data-samples/breakers.yaml \
    --ratelimits data-samples/ratelimits.yaml --out "$out/run"
  step missing "$bin" -q advise --metrics "$out/no-such-folder" --config data-samples/breakers.yaml
  mv "$out" "$work/$side"
done
# The dataset's part files carry their export's run number and the manifest its paths;
# the analyze outputs, the patch, the diff and the reports are compared whole.
compare() {
  (cd "$work/$1" && find metrics run log -type f ! -path 'run/dataset/*' | sort | xargs sha256sum)
}
if diff <(compare before) <(compare after) > "$work/diff.txt"; then
  echo "identical: $(compare before | wc -l) files (metrics/, run/ without its dataset, each command's stdout, stderr and exit status)"
else
  echo "DIFFERENT:"; cat "$work/diff.txt"; exit 1
fi
