#!/usr/bin/env bash
# The chunk-index benchmark: a synthetic store of 10,000 packs and 5,000,000
# chunks; the hub's start time and memory on it, and a 1% update of a 256 MiB
# SQLite database pushed after a restart. See bench/README.md.
#
#   bench/index.sh                    # full size, results in bench/results/
#   BENCH_RECENT=2000 bench/index.sh  # the newest 2000 packs logged in the last hour
#
# Environment: BENCH_DIR, BENCH_SCALE, BENCH_SEED, BENCH_RESULTS, BENCH_PACKS,
# BENCH_CHUNKS_PER_PACK, BENCH_RECENT, BENCH_NO_BUILD (1 = use the existing
# release binaries), BENCH_BIN, BENCH_SYNTH_BIN.
set -euo pipefail

cd "$(dirname "$0")/.."
export BENCH_DIR="${BENCH_DIR:-/tmp/aetherfs-bench}"
mkdir -p "$BENCH_DIR"
cmdline="bench/index.sh"
for v in BENCH_SCALE BENCH_SEED BENCH_PACKS BENCH_CHUNKS_PER_PACK BENCH_RECENT BENCH_NO_BUILD; do
  if [ -n "${!v:-}" ]; then cmdline="$v=$(printf '%q' "${!v}") $cmdline"; fi
done
export BENCH_CMDLINE="$cmdline"

command -v sqlite3 >/dev/null || { echo "bench: sqlite3 is needed (apt install sqlite3)" >&2; exit 2; }
target="${CARGO_TARGET_DIR:-target}"
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  echo "bench: cargo build --release -p aetherfs; cargo build --release -p aetherfs-hub --example synth_store" >&2
  cargo build --release -p aetherfs
  cargo build --release -p aetherfs-hub --example synth_store
fi
export BENCH_BIN="${BENCH_BIN:-$target/release/aetherfs}"
export BENCH_SYNTH_BIN="${BENCH_SYNTH_BIN:-$target/release/examples/synth_store}"
python3 bench/index.py "$@"
