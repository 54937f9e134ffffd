#!/usr/bin/env bash
# The main job on the embedded defaults: a hub on local storage, a push of the
# example dataset, a pull into a fresh directory, and a look at what moved.
# No external services. Everything lives under ${QUICKSTART_DIR:-/tmp/aetherfs-quickstart}.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${QUICKSTART_DIR:-/tmp/aetherfs-quickstart}"
mkdir -p "$work"
cargo build --release -p aetherfs
bin="$PWD/target/release/aetherfs"

log="$work/hub.log"
"$bin" hub --listen 127.0.0.1:0 --storage "file://$work/hub-data" 2>"$log" &
hub_pid=$!
trap 'kill $hub_pid 2>/dev/null; wait $hub_pid 2>/dev/null || true' EXIT
# Wait for the hub to announce its address, then for readiness.
for _ in $(seq 1 600); do
  addr=$(sed -n 's/.*listening on \(http:\/\/[^ ]*\).*/\1/p' "$log" | head -n1)
  [ -n "$addr" ] && break
  kill -0 $hub_pid 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
until curl -fsS "$addr/readyz" >/dev/null 2>&1; do sleep 0.1; done
export AETHERFS_HUB="$addr"
echo "hub at $AETHERFS_HUB (data in $work/hub-data)"

set -x
"$bin" push examples/geoip acme/geoip:v1 --tag latest
"$bin" ls
"$bin" ls acme/geoip
"$bin" inspect acme/geoip:latest --files
rm -rf "$work/pulled"
"$bin" pull acme/geoip:latest "$work/pulled"
diff -r examples/geoip "$work/pulled"
# The file digest `inspect --files` shows (derived from the chunks; not b3sum's).
"$bin" digest "$work/pulled/geoip.sqlite"
sqlite3 "$work/pulled/geoip.sqlite" "SELECT city, count(*) FROM blocks GROUP BY city ORDER BY 2 DESC LIMIT 3;" || true
