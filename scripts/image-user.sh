#!/bin/sh
# Creates the image's non-root user and enables FUSE's allow_other for it.
# Run by the Dockerfile's runtime stage and, inside the chroot, by
# scripts/image-rootfs-check.sh, so both get the same uid, gid and home.
set -eu
uid=65532
gid=65532
groupadd --gid "$gid" aetherfs
useradd --no-log-init --uid "$uid" --gid "$gid" --home-dir /home/aetherfs --create-home \
  --shell /usr/sbin/nologin aetherfs
# Non-root `aetherfs mount --allow-other` goes through fusermount3, which
# needs this line; root (the chart's fuse mode) does not.
if [ -f /etc/fuse.conf ]; then
  sed -i 's/^#[[:space:]]*user_allow_other/user_allow_other/' /etc/fuse.conf
  grep -q '^user_allow_other' /etc/fuse.conf || echo user_allow_other >>/etc/fuse.conf
fi
