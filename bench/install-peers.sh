#!/usr/bin/env bash
# Installs the reference systems and tools the push/pull benchmark uses:
# restic, casync, rsync (the peers), sqlite3 (builds the dataset), GNU time
# (per-process CPU and memory). Only what is missing is installed; safe to
# run repeatedly. Uses sudo only when not root.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

pkgs=()
command -v restic  >/dev/null || pkgs+=(restic)
command -v casync  >/dev/null || pkgs+=(casync)
command -v rsync   >/dev/null || pkgs+=(rsync)
command -v sqlite3 >/dev/null || pkgs+=(sqlite3)
command -v python3 >/dev/null || pkgs+=(python3)
command -v curl    >/dev/null || pkgs+=(curl)
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "install-peers: installing ${pkgs[*]} (apt)" >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
for c in restic casync rsync sqlite3 python3; do
  command -v "$c" >/dev/null || { echo "install-peers: $c is still missing" >&2; exit 1; }
done
