# Shared set-up of the benchmark scripts: sourced, not run.
# Sets $work (the first argument, or /tmp/breaker-advisor-bench) and $bin (a fresh
# release build of breaker-advisor).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work="${1:-/tmp/breaker-advisor-bench}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/breaker-advisor/target}"
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/breaker-advisor"
mkdir -p "$work"
