#!/usr/bin/env bash
# The push/pull benchmark: AetherFS against restic, rsync, casync and cp on one
# generated ~1 GiB dataset. See bench/README.md for what it measures.
#
#   bench/push-pull.sh                      # full size (~1 GiB), results in bench/results/
#   BENCH_SCALE=0.05 bench/push-pull.sh     # quick smoke run (~50 MiB)
#
# Environment: BENCH_DIR (work dir, default /tmp/aetherfs-bench), BENCH_SCALE
# (default 1), BENCH_DATASET (issue = issue 12's shape, the default; classic), BENCH_SEED, BENCH_RUNS (repeats of each timed step, median
# reported, default 3), BENCH_RESULTS (output dir, default bench/results),
# BENCH_DROP_CACHES (1 = drop the page cache before cold runs, default 1),
# BENCH_VERIFY (1 = compare the pulled tree with the source, default 1),
# BENCH_QUIET_WAIT (max seconds to wait for an idle machine before each step,
# default 180; 0 = don't wait), BENCH_QUIET_BUDGET (max total seconds of
# such waits, 0 = no limit), BENCH_NO_BUILD (1 = use the existing
# target/release/aetherfs), BENCH_BIN (use this aetherfs binary instead).
set -euo pipefail

cd "$(dirname "$0")/.."
export BENCH_DIR="${BENCH_DIR:-/tmp/aetherfs-bench}"
mkdir -p "$BENCH_DIR"

# The exact command line, for the results file.
cmdline="bench/push-pull.sh"
for a in "$@"; do cmdline+=" $(printf '%q' "$a")"; done
for v in BENCH_DATASET BENCH_SCALE BENCH_DIR BENCH_SEED BENCH_RUNS BENCH_RESULTS BENCH_DROP_CACHES BENCH_VERIFY BENCH_QUIET_WAIT BENCH_QUIET_CORES BENCH_QUIET_BUDGET BENCH_NO_BUILD BENCH_BIN; do
  if [ -n "${!v:-}" ] && { [ "$v" != BENCH_DIR ] || [ "$BENCH_DIR" != /tmp/aetherfs-bench ]; }; then
    cmdline="$v=$(printf '%q' "${!v}") $cmdline"
  fi
done
export BENCH_CMDLINE="$cmdline"

# The Python driver writes the hub's pid here; kill it on any exit, even if the
# driver itself was killed before its own cleanup ran. Only that pid, and only
# if it still is an aetherfs process.
export BENCH_HUB_PIDFILE="$BENCH_DIR/hub.pid"
cleanup() {
  if [ -f "$BENCH_HUB_PIDFILE" ]; then
    pid="$(cat "$BENCH_HUB_PIDFILE" 2>/dev/null || true)"
    if [ -n "$pid" ] && grep -q aetherfs "/proc/$pid/cmdline" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
    fi
    rm -f "$BENCH_HUB_PIDFILE"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bench/install-peers.sh push-pull

if [ "${BENCH_NO_BUILD:-0}" != 1 ] && [ -z "${BENCH_BIN:-}" ]; then
  echo "bench: cargo build --release -p aetherfs" >&2
  cargo build --release -p aetherfs
fi

python3 bench/push_pull.py "$@"
