#!/usr/bin/env bash
# The garbage-collection benchmark: 20 versions of a 256 MiB SQLite database
# with clustered 1% updates, keep the last 2, `aetherfs gc`, and compare the
# store with a fresh hub holding only those 2. See bench/README.md.
#
#   bench/gc.sh                      # full size, results in bench/results/
#   BENCH_SCALE=0.1 bench/gc.sh      # quick run (~26 MiB database)
#
# Environment: BENCH_DIR, BENCH_SCALE, BENCH_SEED, BENCH_RESULTS,
# BENCH_NO_BUILD (1 = use the existing target/release/aetherfs), BENCH_BIN.
set -euo pipefail

cd "$(dirname "$0")/.."
export BENCH_DIR="${BENCH_DIR:-/tmp/aetherfs-bench}"
mkdir -p "$BENCH_DIR"
cmdline="bench/gc.sh"
for v in BENCH_SCALE BENCH_SEED BENCH_NO_BUILD BENCH_BIN; do
  if [ -n "${!v:-}" ]; then cmdline="$v=$(printf '%q' "${!v}") $cmdline"; fi
done
export BENCH_CMDLINE="$cmdline"

command -v sqlite3 >/dev/null || { echo "bench: sqlite3 is needed (apt install sqlite3)" >&2; exit 2; }
if [ "${BENCH_NO_BUILD:-0}" != 1 ] && [ -z "${BENCH_BIN:-}" ]; then
  echo "bench: cargo build --release -p aetherfs" >&2
  cargo build --release -p aetherfs
fi
python3 bench/gc.py "$@"
