#!/usr/bin/env bash
# The agent benchmark: `aetherfs agent` (FUSE, encrypted disk cache under a
# memory tier, tag following) against curl of the packs, native dd, rclone
# mount and rsync. See bench/README.md ("Agent").
#
#   bench/agent.sh                                    # full size (1 GiB file, 100k files, 256 MiB db), ~5 min idle
#   BENCH_SCALE=0.05 BENCH_RUNS=1 bench/agent.sh      # quick smoke run
#   BENCH_AGENT_PARTS=read bench/agent.sh             # only the 1 GiB sequential reads (the issue-12 read rows)
#
# Needs root (drop_caches, FUSE mounts, perf). Environment: BENCH_DIR (default
# /tmp/aetherfs-bench), BENCH_SCALE (default 1), BENCH_SEED, BENCH_RUNS
# (default 3), BENCH_RESULTS (default bench/results), BENCH_DROP_CACHES,
# BENCH_VERIFY, BENCH_QUIET_WAIT, BENCH_QUIET_CORES, BENCH_QUIET_INTERVAL
# (default 0.5 here), BENCH_QUIET_BUDGET (default 300 s here), BENCH_NO_BUILD,
# BENCH_BIN (use this aetherfs binary), BENCH_BIN_COMMIT, BENCH_PROFILE (perf
# profiles, default 1), BENCH_AGENT_MEMORY (the agent's memory tier, default 64MiB),
# BENCH_AGENT_PARTS (all, or read), BENCH_AGENT_RCLONE (rclone rows; default 1 for all, 0 for read).
set -euo pipefail

cd "$(dirname "$0")/.."
export BENCH_DIR="${BENCH_DIR:-/tmp/aetherfs-bench}"
export BENCH_QUIET_INTERVAL="${BENCH_QUIET_INTERVAL:-0.5}"
export BENCH_QUIET_BUDGET="${BENCH_QUIET_BUDGET:-300}"
mkdir -p "$BENCH_DIR"

cmdline="bench/agent.sh"
for a in "$@"; do cmdline+=" $(printf '%q' "$a")"; done
for v in BENCH_SCALE BENCH_DIR BENCH_SEED BENCH_RUNS BENCH_RESULTS BENCH_DROP_CACHES BENCH_VERIFY BENCH_QUIET_WAIT \
         BENCH_QUIET_CORES BENCH_NO_BUILD BENCH_BIN BENCH_BIN_COMMIT BENCH_PROFILE BENCH_AGENT_MEMORY \
         BENCH_AGENT_PARTS BENCH_AGENT_RCLONE; do
  if [ -n "${!v:-}" ] && { [ "$v" != BENCH_DIR ] || [ "$BENCH_DIR" != /tmp/aetherfs-bench ]; }; then
    cmdline="$v=$(printf '%q' "${!v}") $cmdline"
  fi
done
[ "$BENCH_QUIET_INTERVAL" = 0.5 ] || cmdline="BENCH_QUIET_INTERVAL=$BENCH_QUIET_INTERVAL $cmdline"
[ "$BENCH_QUIET_BUDGET" = 300 ] || cmdline="BENCH_QUIET_BUDGET=$BENCH_QUIET_BUDGET $cmdline"
export BENCH_CMDLINE="$cmdline"

# The driver records every process and FUSE mount it creates (hub, agents,
# rclone) in this state file; on any exit, even if the driver was killed,
# `agent.py --cleanup` stops those processes by pid (checking they still run
# the same program) and unmounts (fusermount3 -u, then -uz).
export BENCH_AGENT_STATE="$BENCH_DIR/agent.state.json"
cleanup() {
  python3 bench/agent.py --cleanup || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

if [ "$(id -u)" -ne 0 ]; then
  echo "agent.sh: needs root (drop_caches, FUSE, perf)" >&2
  exit 1
fi
[ -e /dev/fuse ] || { echo "agent.sh: /dev/fuse is missing" >&2; exit 1; }

# Tools: installed with apt only if missing.
pkgs=()
need() { command -v "$1" >/dev/null 2>&1 || pkgs+=("$2"); }
need fusermount3 fuse3
need rclone rclone
need rsync rsync
need sqlite3 sqlite3
need curl curl
need cmp diffutils
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "agent.sh: installing ${pkgs[*]} (apt)" >&2
  env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
command -v perf >/dev/null 2>&1 || echo "agent.sh: perf not installed (linux-perf): no CPU profiles" >&2

if [ "${BENCH_NO_BUILD:-0}" != 1 ] && [ -z "${BENCH_BIN:-}" ]; then
  echo "bench: cargo build --release -p aetherfs" >&2
  cargo build --release -p aetherfs
fi

python3 bench/agent.py "$@"
