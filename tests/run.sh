#!/usr/bin/env bash
# The test command (README): installs what the tests use beside the Rust toolchain,
# then runs them. Works on a fresh machine (as root, with Debian's apt and PyPI).
#   - redis-server: the cooldown tests start their own instances on loopback ports;
#   - chromium: the report test loads report.html in a real headless browser;
#   - duckdb, pyarrow (tests/python/requirements.txt): the interop and query tests read
#     our Parquet with the analysts' tools; pyspark, with Debian's Java runtime: the
#     query test runs queries/ in Spark SQL too; pybreaker: the fleet harness drives the
#     real circuit breaker the crawler uses.
# It builds into the same target directory as `cargo run --release` (./target, or
# $CARGO_TARGET_DIR when set), so the README's two commands share one build.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt

log="$(mktemp)"
cargo test --release --locked 2>&1 | tee "$log"
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
