#!/usr/bin/env bash
# Installs the reference systems and tools the benchmarks use. Only what is
# missing is installed; safe to run repeatedly. Uses sudo only when not root.
#
# push/pull (bench/push-pull.sh): restic, casync, rsync (the peers), sqlite3
#   (builds the dataset), curl.
# mounts (bench/mounts.sh): fuse3 (fusermount3), rclone (rclone mount and
#   rclone serve webdav), libnfs-utils (nfs-cp/nfs-cat: NFSv3 client without a
#   kernel client), nfs-ganesha + nfs-ganesha-vfs + rpcbind (reference NFSv3
#   server, run in a private network namespace), iproute2 (ip netns), fio
#   (random reads), wsgidav + cheroot (pip; reference WebDAV server).
#
#   bench/install-peers.sh            # everything
#   bench/install-peers.sh push-pull  # only what push/pull needs
#   bench/install-peers.sh mounts     # only what the mounts benchmark needs
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
what="${1:-all}"

pkgs=()
need() {  # need COMMAND PACKAGE: queue PACKAGE unless COMMAND is there
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] || pkgs+=("$2")
}
need sqlite3 sqlite3
need python3 python3
need curl curl
if [ "$what" = all ] || [ "$what" = push-pull ]; then
  need restic restic
  need casync casync
  need rsync rsync
fi
if [ "$what" = all ] || [ "$what" = mounts ]; then
  need fusermount3 fuse3
  need rclone rclone
  need nfs-cp libnfs-utils
  need ganesha.nfsd nfs-ganesha
  [ -e /usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so ] || ls /usr/lib/*/ganesha/libfsalvfs.so >/dev/null 2>&1 \
    || pkgs+=(nfs-ganesha-vfs)
  need rpcbind rpcbind
  need ip iproute2
  need fio fio
fi
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "install-peers: installing ${pkgs[*]} (apt)" >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

if [ "$what" = all ] || [ "$what" = mounts ]; then
  if ! command -v wsgidav >/dev/null 2>&1 || ! python3 -c 'import wsgidav, cheroot' 2>/dev/null; then
    echo "install-peers: installing wsgidav, cheroot (pip)" >&2
    python3 -m pip install --quiet 'wsgidav==4.4.0' 'cheroot==11.1.2' \
      || python3 -m pip install --quiet --break-system-packages 'wsgidav==4.4.0' 'cheroot==11.1.2'
    command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
  fi
fi

check=(sqlite3 python3 curl)
[ "$what" = mounts ] || check+=(restic casync rsync)
[ "$what" = push-pull ] || check+=(fusermount3 rclone nfs-cp nfs-cat ganesha.nfsd rpcbind ip fio wsgidav)
for c in "${check[@]}"; do
  command -v "$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$c" ] || [ -x "/sbin/$c" ] \
    || { echo "install-peers: $c is still missing" >&2; exit 1; }
done
