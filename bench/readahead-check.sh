#!/usr/bin/env bash
# Spot check of a FUSE first read through `aetherfs mount` (the read-ahead
# path): a 1 GiB random file pushed to a hub on local storage, read once with
# the page cache dropped (chunks come from the hub), again with chunks in the
# memory cache, and natively. Prints MB/s and how many bytes were fetched.
# Needs root (drop_caches, FUSE). Usage: bench/readahead-check.sh [SIZE_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
size="${1:-1024}"
work="$(mktemp -d /tmp/aetherfs-ra.XXXXXX)"
cargo build --release -q -p aetherfs
bin="$work/aetherfs"; cp target/release/aetherfs "$bin"
mkdir -p "$work/src" "$work/mnt"
cleanup() {
  fusermount3 -uz "$work/mnt" 2>/dev/null || true
  kill "${mount_pid:-}" "${hub_pid:-}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
head -c "${size}M" /dev/urandom > "$work/src/big.bin"
"$bin" hub --listen 127.0.0.1:0 --storage "file://$work/hub" 2>"$work/hub.log" & hub_pid=$!
until grep -q 'listening on' "$work/hub.log"; do sleep 0.05; done
export AETHERFS_HUB="$(sed -n 's/.*listening on \(http:\/\/[^ ]*\).*/\1/p' "$work/hub.log")"
until curl -fs "$AETHERFS_HUB/readyz" >/dev/null; do sleep 0.05; done
"$bin" push -q "$work/src" bench/readahead:v1 >/dev/null
"$bin" mount bench/readahead:v1 "$work/mnt" --admin 127.0.0.1:0 --cache-mib $((size + 512)) 2>"$work/mount.log" & mount_pid=$!
until grep -q 'mounted at' "$work/mount.log"; do sleep 0.05; done
admin="$(sed -n 's/.*admin on \(http:\/\/[^ ]*\).*/\1/p' "$work/mount.log")"
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; dd if="$1" of=/dev/null bs=1M 2>&1 | tail -1; }
echo "first read (chunks from the hub):   $(cold "$work/mnt/big.bin")"
curl -fs "$admin/metrics" | grep -E '^aetherfs_(fetched_bytes_total|fetch_duration_seconds_count) '
echo "chunks cached, cold page cache:     $(cold "$work/mnt/big.bin")"
echo "native, cold page cache:            $(cold "$work/src/big.bin")"
