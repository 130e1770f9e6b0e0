#!/usr/bin/env bash
# Speed and peak memory of each change-point detector per series length.
# Usage: bench/detect_speed.sh
source "$(dirname "$0")/common.sh"
cargo build --release --quiet --example detect_speed
ex="$CARGO_TARGET_DIR/release/examples/detect_speed"
echo "| detector | buckets | time | peak RSS |"
echo "|---|---|---|---|"
for detector in pelt-binomial bocpd; do
  for len in 1440 10080 100000; do
    out=$(/usr/bin/time -f "%M" -o "$work/rss" timeout 300 "$ex" "$detector" "$len" || echo "timeout after 300 s")
    echo "| $detector | $len | ${out#*: } | $(( $(cat "$work/rss") / 1024 )) MiB |"
  done
done
