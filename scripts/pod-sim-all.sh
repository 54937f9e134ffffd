#!/usr/bin/env bash
# Runs scripts/pod-sim.py for every example of examples/kubernetes, in
# materialize mode (values.yaml) and fuse mode (values-fuse.yaml; needs root
# and /dev/fuse, skipped with a message otherwise). Needs target/debug/aetherfs
# (cargo test or cargo build -p aetherfs builds it) or AETHERFS_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${AETHERFS_BIN:-target/debug/aetherfs}"
[ -x "$bin" ] || { echo "pod-sim-all: $bin is missing: cargo build -p aetherfs" >&2; exit 1; }
start=$(date +%s)
for ex in examples/kubernetes/*/; do
  ex=${ex%/}
  python3 scripts/pod-sim.py "$ex"
  if [ "$(id -u)" -eq 0 ] && [ -c /dev/fuse ]; then
    python3 scripts/pod-sim.py "$ex" -f values-fuse.yaml
  else
    echo "pod-sim-all: SKIP $ex fuse mode (needs root and /dev/fuse)"
  fi
done
echo "pod-sim-all: OK in $(($(date +%s) - start))s"
