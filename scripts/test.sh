#!/usr/bin/env bash
# The project's one test command: installs missing test peers, then runs every
# test (unit, in-process hub, and end-to-end through the real binary).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-peers.sh
exec cargo test --workspace --locked "$@"
