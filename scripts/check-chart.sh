#!/usr/bin/env bash
# Offline checks of the container image definition and the Helm chart:
#   hadolint on the Dockerfile;
#   helm lint --strict of charts/aetherfs with its defaults and every
#   charts/aetherfs/ci/*.yaml;
#   helm template of each, every manifest validated by kubernetes-validate
#   --strict against Kubernetes $KUBE_VERSION's API schemas; custom resources
#   (the prometheus-operator ServiceMonitor, which kubernetes-validate has no
#   schema for) and the TOML in ConfigMaps are checked by
#   scripts/chart-manifests.py instead;
#   negative checks: values the schema or the templates must refuse.
# The tools come from scripts/install-test-peers.sh (helm in target/tools).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${AETHERFS_TOOLS_DIR:-$PWD/target/tools}/bin:$PATH"
chart=charts/aetherfs
kube="${KUBE_VERSION:-1.33.0}"
for tool in hadolint helm kubernetes-validate python3; do
  command -v "$tool" >/dev/null || { echo "check-chart: $tool is missing: run scripts/install-test-peers.sh" >&2; exit 1; }
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
start=$(date +%s)

echo "check-chart: hadolint Dockerfile examples/kubernetes/*/files/Dockerfile"
hadolint Dockerfile examples/kubernetes/*/files/Dockerfile

echo "check-chart: helm lint --strict (defaults and ci/*.yaml)"
helm lint --strict --quiet --kube-version "$kube" "$chart" >/dev/null
values=("$chart"/ci/*.yaml)
[ -e "${values[0]}" ] || { echo "check-chart: no values files in $chart/ci" >&2; exit 1; }
for v in "${values[@]}"; do
  helm lint --strict --quiet --kube-version "$kube" "$chart" -f "$v" >"$out/lint.log" 2>&1 \
    || { cat "$out/lint.log" >&2; echo "check-chart: helm lint failed with $v" >&2; exit 1; }
done

echo "check-chart: helm template + kubernetes-validate --strict -k $kube"
for v in "${values[@]}"; do
  name=$(basename "$v" .yaml)
  helm template check "$chart" -f "$v" --namespace aetherfs --kube-version "$kube" >"$out/$name.yaml"
  python3 scripts/chart-manifests.py "$out/$name.yaml" "$out/$name"
  kubernetes-validate --strict --quiet -k "$kube" "$out/$name"/*.yaml
done

# The example of docs/kubernetes.md: a chart that depends on this one.
echo "check-chart: the docs/kubernetes.md example chart"
python3 scripts/chart-manifests.py --docs-example "$out/example" "$chart"
helm dependency build "$out/example" >/dev/null
helm lint --strict --quiet --kube-version "$kube" "$out/example" >"$out/lint.log" 2>&1 \
  || { cat "$out/lint.log" >&2; echo "check-chart: helm lint failed on the docs example" >&2; exit 1; }
helm template check "$out/example" --namespace geo --kube-version "$kube" >"$out/example.yaml"
python3 scripts/chart-manifests.py "$out/example.yaml" "$out/example-manifests"
kubernetes-validate --strict --quiet -k "$kube" "$out/example-manifests"/*.yaml

# examples/kubernetes/*: parent charts (charts/aetherfs a symlink), each
# values file linted, rendered and validated; scripts/pod-sim.py runs them.
echo "check-chart: examples/kubernetes charts"
for ex in examples/kubernetes/*/; do
  ex=${ex%/}
  for v in "$ex"/values.yaml "$ex"/values-*.yaml; do
    [ -e "$v" ] || continue
    name=$(basename "$ex")-$(basename "$v" .yaml)
    helm lint --strict --quiet --kube-version "$kube" "$ex" -f "$v" >"$out/lint.log" 2>&1 \
      || { cat "$out/lint.log" >&2; echo "check-chart: helm lint failed on $ex with $v" >&2; exit 1; }
    helm template check "$ex" -f "$v" --namespace geo --kube-version "$kube" >"$out/$name.yaml" 2>/dev/null
    python3 scripts/chart-manifests.py "$out/$name.yaml" "$out/$name"
    kubernetes-validate --strict --quiet -k "$kube" "$out/$name"/*.yaml
  done
done

# Values that must be refused: "$1" is what the error must say.
refuse() {
  local want=$1
  shift
  if helm template check "$chart" --kube-version "$kube" "$@" >"$out/neg.log" 2>&1; then
    echo "check-chart: accepted, should have been refused: $*" >&2
    exit 1
  fi
  grep -q -- "$want" "$out/neg.log" || { cat "$out/neg.log" >&2; echo "check-chart: refused without '$want': $*" >&2; exit 1; }
}
echo "check-chart: negative checks"
refuse "additional properties 'replica' not allowed" --set hub.replica=2
refuse "additional properties 'typo' not allowed" --set agent.cache.typo=1
refuse "maximum: got 3, want 1" --set hub.replicas=3
# The template refuses it too, for renderers that skip the schema.
refuse "hub.replicas > 1 needs hub.storage.type=s3" --skip-schema-validation --set hub.replicas=3
refuse "hub.storage.type=s3 needs hub.storage.s3.bucket" --set hub.storage.type=s3
refuse "agent.hub is required" -f "$chart/ci/sidecar-webdav-values.yaml" --set agent.hub=
refuse "value must be one of" -f "$chart/ci/sidecar-webdav-values.yaml" --set agent.mode=nfs
refuse "'oneOf' failed" -f "$chart/ci/sidecar-webdav-values.yaml" \
  --set 'agent.mounts[0].onSwitch.command[0]=/bin/true'
refuse 'the name "geoip" is used twice' -f "$chart/ci/sidecar-materialize-values.yaml" \
  --set-json 'agent.mounts=[{"name":"geoip","ref":"a/b:c"},{"name":"geoip","ref":"a/d:c"}]'
refuse "port 9100 is taken" -f "$chart/ci/sidecar-webdav-values.yaml" --set 'agent.mounts[0].webdavPort=9100'
# kubernetes-validate --strict itself refuses an unknown field.
python3 - "$out" <<'EOF'
import sys, pathlib, yaml
out = pathlib.Path(sys.argv[1])
src = sorted(out.glob("*/*-deployment-*.yaml"))[0]
doc = yaml.safe_load(src.read_text())
doc["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
(out / "bad.yaml").write_text(yaml.safe_dump(doc))
EOF
if kubernetes-validate --strict --quiet -k "$kube" "$out/bad.yaml" >/dev/null 2>&1; then
  echo "check-chart: kubernetes-validate --strict accepted an unknown field" >&2
  exit 1
fi

echo "check-chart: OK (${#values[@]} values files, $(($(date +%s) - start))s)"
