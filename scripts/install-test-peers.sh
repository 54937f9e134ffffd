#!/usr/bin/env bash
# Installs the real peers the tests talk to: sqlite3, diff, fusermount3 (the
# FUSE tests also need /dev/fuse), moto's S3 server, Node.js with the test
# OpenID provider (scripts/oidc-provider), curl and python3 for the auth tests.
# Only what is missing is installed; safe to run repeatedly.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

apt_pkgs=()
command -v sqlite3 >/dev/null || apt_pkgs+=(sqlite3)
command -v diff >/dev/null || apt_pkgs+=(diffutils)
command -v fusermount3 >/dev/null || apt_pkgs+=(fuse3)
# The NFS and WebDAV front-end tests (mounts/tests): libnfs's nfs-ls/nfs-cat/
# nfs-cp, rclone, davfs2 (mount.davfs; its test needs root and /dev/fuse), curl.
command -v nfs-ls >/dev/null || apt_pkgs+=(libnfs-utils)
command -v rclone >/dev/null || apt_pkgs+=(rclone)
[ -x /usr/sbin/mount.davfs ] || apt_pkgs+=(davfs2)
command -v curl >/dev/null || apt_pkgs+=(curl)
# The auth tests: the OpenID provider runs on Node.js (>= 20), its device-flow
# approval helper on python3.
command -v node >/dev/null || apt_pkgs+=(nodejs)
command -v npm >/dev/null || apt_pkgs+=(npm)
command -v python3 >/dev/null || apt_pkgs+=(python3)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  echo "installing ${apt_pkgs[*]} (apt)"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null
fi

if ! command -v moto_server >/dev/null || ! moto_server --help >/dev/null 2>&1; then
  echo "installing moto[server] (pip)"
  python3 -m pip install --quiet 'moto[server]==5.2.5'
  command -v pyenv >/dev/null && pyenv rehash || true
fi

# The test OpenID provider's packages, pinned by its package-lock.json.
# oidc-provider 9 needs Node.js >= 20 (Debian 12's own nodejs is 18).
node -e 'process.exit(Number(process.versions.node.split(".")[0]) < 20 ? 1 : 0)' \
  || echo "WARNING: Node.js $(node --version) is too old for the test OpenID provider: install Node.js >= 20" >&2
provider="$(dirname "$0")/oidc-provider"
if [ ! -f "$provider/node_modules/.package-lock.json" ] || ! cmp -s "$provider/package-lock.json" "$provider/node_modules/.aetherfs-lock"; then
  echo "installing the test OpenID provider (npm ci in scripts/oidc-provider)"
  (cd "$provider" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  cp "$provider/package-lock.json" "$provider/node_modules/.aetherfs-lock"
fi
