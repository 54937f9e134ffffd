#!/usr/bin/env bash
# Proves the image's runtime stage without a container engine: builds the
# same root filesystem the Dockerfile's runtime stage has (Debian bookworm,
# minbase, the packages of scripts/image-packages.txt, the user of
# scripts/image-user.sh), copies target/release/aetherfs in, and inside a
# chroot, as uid/gid 65532: prints the version, starts the hub and the agent
# the way the chart's pods do (the chart's rendered hub auth.toml, agent.toml,
# args and env: file storage, basic auth and rules, webdav mode), pushes a
# directory, waits for /readyz, and fetches files over WebDAV with curl from
# outside, byte for byte. Where /dev/fuse is usable, the fuse-mode sidecar
# too: its files read as 65532, its preStop hook unmounting.
#
# Needs root (debootstrap, chroot, mount -t proc) and the network on first
# run. The debootstrapped base is cached under
# ${AETHERFS_IMAGE_CACHE:-target/image-rootfs}, keyed by the package list, so
# reruns skip it. AETHERFS_BIN=PATH uses that binary instead of building
# target/release/aetherfs. DEBOOTSTRAP_MIRROR overrides debootstrap's default mirror.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
start=$(date +%s)

if [ "$(id -u)" -ne 0 ]; then
  exec sudo --preserve-env=AETHERFS_BIN,AETHERFS_IMAGE_CACHE,AETHERFS_TOOLS_DIR,DEBOOTSTRAP_MIRROR,PATH "$0" "$@"
fi
helm="${AETHERFS_TOOLS_DIR:-$repo/target/tools}/bin/helm"
command -v "$helm" >/dev/null || helm=$(command -v helm) \
  || { echo "image-rootfs-check: helm is missing (scripts/install-test-peers.sh installs it)" >&2; exit 1; }
for tool in debootstrap chroot curl cmp python3; do
  command -v "$tool" >/dev/null || { echo "image-rootfs-check: $tool is missing (scripts/install-test-peers.sh installs it)" >&2; exit 1; }
done

suite=bookworm
uid=65532
gid=65532
packages=$(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' scripts/image-packages.txt | paste -sd, -)

if [ -z "${AETHERFS_BIN:-}" ]; then
  cargo build --release --locked -p aetherfs --quiet
  bin="$repo/target/release/aetherfs"
else
  bin="$AETHERFS_BIN"
fi

# The base root filesystem, built once per package list.
cache="${AETHERFS_IMAGE_CACHE:-$repo/target/image-rootfs}"
mkdir -p "$cache"
key=$( (echo "$suite minbase $packages") | sha256sum | cut -c1-16)
base="$cache/$suite-minbase-$key"
if [ ! -f "$base/.complete" ]; then
  echo "image-rootfs-check: debootstrap $suite (minbase + $packages) into $base"
  # debootstrap mounts /proc in its target and leaves it there when it fails
  # or is interrupted; the cache holds files only.
  unmount_tmp_proc() { if mountpoint -q "$base.tmp/proc" 2>/dev/null; then umount -l "$base.tmp/proc"; fi; }
  unmount_tmp_proc
  rm -rf --one-file-system "$base.tmp"
  t0=$(date +%s)
  # In the background, so that a signal stops it at once.
  debootstrap --variant=minbase --include="$packages" "$suite" "$base.tmp" ${DEBOOTSTRAP_MIRROR:+"$DEBOOTSTRAP_MIRROR"} \
    >"$cache/debootstrap.log" 2>&1 &
  deb_pid=$!
  trap unmount_tmp_proc EXIT
  trap 'kill "$deb_pid" 2>/dev/null; wait "$deb_pid"; exit 130' INT TERM
  wait "$deb_pid" || { tail -n 30 "$cache/debootstrap.log" >&2; exit 1; }
  unmount_tmp_proc
  trap - EXIT INT TERM
  rm -rf "$base.tmp/var/cache/apt/archives/"*.deb "$base.tmp/var/lib/apt/lists/"*
  touch "$base.tmp/.complete"
  rm -rf --one-file-system "$base"
  mv "$base.tmp" "$base"
  echo "image-rootfs-check: debootstrap took $(($(date +%s) - t0))s"
fi

work=$(mktemp -d "$cache/run.XXXXXX")
root="$work/root"
pids=()
cleanup() {
  local rc=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  # FUSE mounts the check left inside the rootfs, then /proc.
  while read -r _ mnt _; do
    case "$mnt" in "$root"/*) [ "$mnt" = "$root/proc" ] || umount -l "$mnt" || true ;; esac
  done < <(tac /proc/mounts)
  if mountpoint -q "$root/proc"; then umount "$root/proc" || umount -l "$root/proc"; fi
  if [ $rc -ne 0 ]; then
    for log in "$work"/*.log; do [ -f "$log" ] && { echo "--- $log" >&2; tail -n 20 "$log" >&2; }; done
  fi
  # --one-file-system: never descend into something still mounted.
  if ! mountpoint -q "$root/proc" 2>/dev/null; then rm -rf --one-file-system "$work"; fi
  exit $rc
}
trap cleanup EXIT INT TERM

cp -a "$base" "$root"
rm -f "$root/.complete"
chroot "$root" /bin/sh -s <scripts/image-user.sh
install -m 0755 "$bin" "$root/usr/local/bin/aetherfs"
mount -t proc proc "$root/proc"

# Runs a command in the rootfs as the image's user, with the image's environment.
as_user=(chroot --userspec="$uid:$gid" "$root" /usr/bin/env -i HOME=/home/aetherfs PATH=/usr/local/bin:/usr/bin:/bin)
as_user() { "${as_user[@]}" "$@"; }
# The same in the background. exec: the pid is the daemon's own (chroot and
# env exec too), so the cleanup's kill reaches it.
spawn_as_user() {
  local log=$1
  shift
  (exec "${as_user[@]}" "$@" 2>"$log" </dev/null >/dev/null) &
  pids+=($!)
}

# The log line "PREFIX ADDR" of a daemon, once it appears; fails if the daemon exits.
wait_line() {
  local log=$1 prefix=$2 pid=$3 found
  for _ in $(seq 1 1800); do
    found=$(sed -n "s#.*$prefix\([^ ]*\).*#\1#p" "$log" | head -n1)
    if [ -n "$found" ]; then echo "$found"; return 0; fi
    kill -0 "$pid" 2>/dev/null || { echo "image-rootfs-check: daemon exited: $log" >&2; return 1; }
    sleep 0.1
  done
  echo "image-rootfs-check: no '$prefix' in $log after 180s" >&2
  return 1
}
wait_ok() {
  local url=$1
  for _ in $(seq 1 1800); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "image-rootfs-check: $url never answered 200 in 180s" >&2
  return 1
}

as_user aetherfs --version
as_user fusermount3 --version >/dev/null
[ "$(as_user id -u)" = "$uid" ]

# Data written by the image's user, as a volume would be.
mkdir -p "$root/home/aetherfs/src/sub"
cp examples/geoip/* "$root/home/aetherfs/src/"
head -c 300000 /dev/urandom >"$root/home/aetherfs/src/sub/random.bin"
chown -R "$uid:$gid" "$root/home/aetherfs"

# One release of the chart, rendered: the hub (file storage; auth with a
# basic-auth users file, the kubernetes issuer and rules) and the example
# Deployment with the sidecar (webdav mode). Their ConfigMaps become files at
# the containers' mount paths; their args and env are what runs. Only the
# listen addresses move to loopback.
read -r hub_port admin_port webdav_port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')
"$helm" template check charts/aetherfs -f charts/aetherfs/ci/sidecar-webdav-values.yaml \
  --set hub.enabled=true --set hub.port="$hub_port" --set hub.auth.enabled=true \
  --set hub.auth.basic.existingSecret=users --set hub.auth.kubernetes.enabled=true \
  --set hub.auth.kubernetes.inClusterDiscovery=false \
  --set-json 'hub.auth.rules=[{"datasets":["check/**","aetherfs-test/**"],"read":["anonymous"],"write":["user:basic#ci"]},{"datasets":"**","admin":["user:basic#ci"]}]' \
  --set hub.lifecycle.enabled=true --set-json 'hub.lifecycle.retention=[{"datasets":"check/**","keepLast":2}]' \
  --set agent.hub="http://127.0.0.1:$hub_port" --set agent.adminPort="$admin_port" \
  --set agent.webdavPort="$webdav_port" --set agent.cache.keySecret=key --set agent.auth.serviceAccountToken=false \
  --set-json 'agent.mounts=[{"name":"check","ref":"check/rootfs:latest","prefetch":"all"}]' \
  >"$work/release.yaml"
mkdir -p "$work/pods"
python3 scripts/chart-manifests.py --unpack "$work/release.yaml" "$root" "$work/pods"
# The Secrets' files.
password=$(head -c 18 /dev/urandom | base64)
echo "$password" | as_user aetherfs hub passwd /etc/aetherfs/users/users ci
chroot "$root" /bin/sh -ec 'head -c 32 /dev/urandom >/etc/aetherfs/cache-key/cache.key; chmod 0444 /etc/aetherfs/cache-key/cache.key'

mapfile -t -d '' hub_argv <"$work/pods/hub.argv"
mapfile -t -d '' hub_env <"$work/pods/hub.env"
hub_argv=("${hub_argv[@]/#--listen=0.0.0.0:/--listen=127.0.0.1:}")
spawn_as_user "$work/hub.log" env "${hub_env[@]}" "${hub_argv[@]}"
hub=$(wait_line "$work/hub.log" "listening on " "${pids[-1]}")
wait_ok "$hub/readyz"

# The rendered rules are in force: anonymous callers may read, not write.
if as_user aetherfs --hub "$hub" --quiet push /home/aetherfs/src check/rootfs:anonymous 2>/dev/null; then
  echo "image-rootfs-check: the hub let an anonymous caller push" >&2
  exit 1
fi
as_user env AETHERFS_USER=ci AETHERFS_PASSWORD="$password" \
  aetherfs --hub "$hub" --quiet push /home/aetherfs/src check/rootfs:v1 --tag latest

# The `helm test` pod's script, as the basic-auth user (the test pod itself
# authenticates with its service-account token).
mapfile -t -d '' test_argv <"$work/pods/push-pull.argv"
mapfile -t -d '' test_env <"$work/pods/push-pull.env"
as_user env "${test_env[@]}" AETHERFS_HUB="$hub" AETHERFS_TOKEN_FILE= AETHERFS_USER=ci AETHERFS_PASSWORD="$password" \
  "${test_argv[@]}" >"$work/helm-test.log" 2>&1 || { cat "$work/helm-test.log" >&2; exit 1; }
grep "^pushed and pulled" "$work/helm-test.log"

# The rendered lifecycle is in force: the admin's dry run names its rule.
as_user env AETHERFS_USER=ci AETHERFS_PASSWORD="$password" \
  aetherfs --hub "$hub" --quiet push /home/aetherfs/src check/rootfs:v0 --annotation run=old
as_user env AETHERFS_USER=ci AETHERFS_PASSWORD="$password" \
  aetherfs --hub "$hub" tag rm check/rootfs:v0 2>/dev/null || true
as_user env AETHERFS_USER=ci AETHERFS_PASSWORD="$password" \
  aetherfs --hub "$hub" gc --dry-run --json >"$work/gc.json"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["dry_run"] and r["datasets"], r' "$work/gc.json"

mapfile -t -d '' agent_argv <"$work/pods/aetherfs-agent.argv"
spawn_as_user "$work/agent.log" env AETHERFS_ADMIN="127.0.0.1:$admin_port" "${agent_argv[@]}"
admin="http://127.0.0.1:$admin_port"
webdav=$(wait_line "$work/agent.log" "WebDAV on " "${pids[-1]}")
wait_ok "$admin/readyz"
curl -fsS "$admin/healthz" >/dev/null
curl -fsS "$admin/v1/mounts" >/dev/null

for f in geoip.sqlite sub/random.bin; do
  curl -fsS -o "$work/fetched" "${webdav%/}/$f"
  cmp "$work/fetched" "$root/home/aetherfs/src/$f"
done
# fuse mode, where /dev/fuse is usable: the sidecar as rendered (root,
# allow_other), read by the image's user as the consumer would, then the
# rendered preStop hook must leave no mount behind.
fuse=skipped
if [ -c /dev/fuse ] && grep -qw fuse /proc/filesystems; then
  kill "${pids[-1]}"
  wait "${pids[-1]}" || true
  "$helm" template check charts/aetherfs -f charts/aetherfs/ci/sidecar-fuse-values.yaml \
    --set agent.hub="$hub" --set agent.adminPort="$admin_port" --set agent.cache.keySecret=key \
    --set agent.auth.caSecret= --set agent.auth.serviceAccountToken=false \
    --set-json 'agent.mounts=[{"name":"check","ref":"check/rootfs:latest","prefetch":"metadata"}]' \
    >"$work/fuse.yaml"
  mkdir -p "$work/fuse"
  python3 scripts/chart-manifests.py --unpack "$work/fuse.yaml" "$root" "$work/fuse"
  [ -c "$root/dev/fuse" ] || mknod -m 0666 "$root/dev/fuse" c 10 229
  mapfile -t -d '' fuse_argv <"$work/fuse/aetherfs-agent.argv"
  mapfile -t -d '' prestop <"$work/fuse/aetherfs-agent.prestop"
  (exec chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin \
    AETHERFS_ADMIN="127.0.0.1:$admin_port" "${fuse_argv[@]}" 2>"$work/agent-fuse.log" </dev/null >/dev/null) &
  pids+=($!)
  wait_line "$work/agent-fuse.log" "mounted at " "${pids[-1]}" >/dev/null
  wait_ok "$admin/readyz"
  for f in geoip.sqlite sub/random.bin; do
    as_user cat "/aetherfs/data/check/$f" | cmp - "$root/home/aetherfs/src/$f"
  done
  chroot "$root" "${prestop[@]}"
  if mountpoint -q "$root/aetherfs/data/check"; then
    echo "image-rootfs-check: the preStop hook left /aetherfs/data/check mounted" >&2
    exit 1
  fi
  fuse=ok
fi
echo "image-rootfs-check: OK ($(as_user aetherfs --version), hub $hub, WebDAV $webdav, FUSE $fuse, $(($(date +%s) - start))s)"
