#!/usr/bin/env bash
# The mounts benchmark: reading one pushed dataset through `aetherfs mount`
# (FUSE) and `aetherfs serve` (NFSv3, WebDAV) against native reads, rclone
# mount, nfs-ganesha, wsgidav and rclone serve webdav. See bench/README.md.
#
#   bench/mounts.sh                       # full size (1 GiB file, 256 MiB db, 110k files), ~20 min
#   BENCH_SCALE=0.05 BENCH_RUNS=1 bench/mounts.sh   # quick smoke run
#
# Needs root (drop_caches, FUSE mounts, ip netns). Environment: BENCH_DIR
# (default /tmp/aetherfs-bench), BENCH_SCALE (default 1), BENCH_SEED,
# BENCH_RUNS (default 3), BENCH_RESULTS (default bench/results),
# BENCH_DROP_CACHES, BENCH_VERIFY, BENCH_QUIET_WAIT, BENCH_QUIET_CORES,
# BENCH_QUIET_INTERVAL (default 0.5 here), BENCH_QUIET_BUDGET (default 600 s
# here), BENCH_NO_BUILD, BENCH_BIN (use this aetherfs binary), BENCH_BIN_COMMIT
# (the commit it was built from, for the results), BENCH_CACHE_MIB (default
# 1536), BENCH_RANDOM_READS, BENCH_SQL_QUERIES, BENCH_TRACE (FUSE tracepoints,
# default 1), BENCH_PROFILE (perf profiles, default 1).
set -euo pipefail

cd "$(dirname "$0")/.."
export BENCH_DIR="${BENCH_DIR:-/tmp/aetherfs-bench}"
export BENCH_QUIET_INTERVAL="${BENCH_QUIET_INTERVAL:-0.5}"
export BENCH_QUIET_BUDGET="${BENCH_QUIET_BUDGET:-600}"
mkdir -p "$BENCH_DIR"

cmdline="bench/mounts.sh"
for a in "$@"; do cmdline+=" $(printf '%q' "$a")"; done
for v in BENCH_SCALE BENCH_DIR BENCH_SEED BENCH_RUNS BENCH_RESULTS BENCH_DROP_CACHES BENCH_VERIFY BENCH_QUIET_WAIT \
         BENCH_QUIET_CORES BENCH_NO_BUILD BENCH_BIN BENCH_BIN_COMMIT BENCH_CACHE_MIB BENCH_RANDOM_READS \
         BENCH_SQL_QUERIES BENCH_TRACE BENCH_PROFILE; do
  if [ -n "${!v:-}" ] && { [ "$v" != BENCH_DIR ] || [ "$BENCH_DIR" != /tmp/aetherfs-bench ]; }; then
    cmdline="$v=$(printf '%q' "${!v}") $cmdline"
  fi
done
[ "$BENCH_QUIET_INTERVAL" = 0.5 ] || cmdline="BENCH_QUIET_INTERVAL=$BENCH_QUIET_INTERVAL $cmdline"
[ "$BENCH_QUIET_BUDGET" = 600 ] || cmdline="BENCH_QUIET_BUDGET=$BENCH_QUIET_BUDGET $cmdline"
export BENCH_CMDLINE="$cmdline"

# The driver records every process, FUSE mount, network namespace and trace
# instance it creates in this state file; on any exit (even if the driver was
# killed) `mounts.py --cleanup` stops those processes by pid (checking they are
# still the same programs), unmounts (fusermount3 -u, then -uz) and deletes
# the namespace.
export BENCH_MOUNTS_STATE="$BENCH_DIR/mounts.state.json"
cleanup() {
  python3 bench/mounts.py --cleanup || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

if [ "$(id -u)" -ne 0 ]; then
  echo "mounts.sh: needs root (drop_caches, FUSE, ip netns)" >&2
  exit 1
fi
[ -e /dev/fuse ] || { echo "mounts.sh: /dev/fuse is missing" >&2; exit 1; }

bench/install-peers.sh mounts

if [ "${BENCH_NO_BUILD:-0}" != 1 ] && [ -z "${BENCH_BIN:-}" ]; then
  echo "bench: cargo build --release -p aetherfs" >&2
  cargo build --release -p aetherfs
fi

python3 bench/mounts.py "$@"
