#!/usr/bin/env bash
# The project's one test command: installs missing test peers, then runs every
# test (unit, in-process hub, and end-to-end through the real binary), after
# the Dockerfile and Helm chart checks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-peers.sh
# The image definition and the Helm chart, offline (about 30 s).
scripts/check-chart.sh
cargo test --workspace --locked "$@"
# The examples/kubernetes pods, simulated with the binary cargo test built
# (target/debug/aetherfs): each database in materialize and fuse mode.
scripts/pod-sim-all.sh
