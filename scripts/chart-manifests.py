#!/usr/bin/env python3
"""Splits `helm template` output for scripts/check-chart.sh and checks what
kubernetes-validate cannot.

    chart-manifests.py RENDERED.yaml OUTDIR
    chart-manifests.py --docs-example OUTDIR CHARTDIR
    chart-manifests.py --unpack RENDERED.yaml ROOT OUTDIR

Writes each Kubernetes document to OUTDIR/NNN-kind-name.yaml, except custom
resources (ServiceMonitor), which kubernetes-validate has no schema for: those
are checked here against the fields the chart uses and the Service they
select. Every *.toml in a ConfigMap is parsed, and its keys checked against
the keys the hub (docs/security.md) and the agent (docs/agent.md) accept.
Prints one line per problem and exits 1 if there is any.

With --docs-example, writes the example chart of docs/kubernetes.md to OUTDIR:
its code blocks headed "# Chart.yaml of your chart", "# values.yaml of your
chart" and "# templates/NAME.yaml of your chart", the dependency pointed at
CHARTDIR.

With --unpack (as root), lays out inside the root filesystem ROOT what the
containers of the rendered Deployments and Pods would see: every ConfigMap volume's
files at its mountPath, an empty directory (owned by the container's
runAsUser) at every other mountPath; and writes OUTDIR/CONTAINER.argv
(command, else the image's entrypoint, and args),
OUTDIR/CONTAINER.env (the plain `value`s only) and OUTDIR/CONTAINER.prestop
(the preStop exec command), NUL-separated, for scripts/image-rootfs-check.sh
to run them.
"""

import re
import sys
import tomllib
from pathlib import Path

import yaml

# Custom resources the chart renders, and the apiVersion each must have.
CUSTOM = {"ServiceMonitor": "monitoring.coreos.com/v1"}

# Keys of the agent's configuration (docs/agent.md), the materialize mode's
# `materialize`, `keep_versions` and the `on_switch` hook included.
AGENT_KEYS = {
    "": {"hub", "reader", "allowed_hosts", "admin", "cache", "fetch", "auth", "mount"},
    "admin": {"listen", "token_file"},
    "cache": {"dir", "max_size", "memory_size", "key_file"},
    "fetch": {"timeout_secs", "concurrency", "readahead", "poll_secs"},
    "auth": {"token_file", "client_id", "client_secret_file", "issuer", "audience", "scope", "ca_file"},
    "mount": {"ref", "fuse", "nfs", "export", "webdav", "prefetch", "allow_other",
              "materialize", "keep_versions", "on_switch"},
    "mount.on_switch": {"command", "url", "timeout_secs"},
}
# Keys of the hub's --lifecycle file (docs/operations.md).
HUB_LIFECYCLE_KEYS = {
    "": {"gc", "retention"},
    "gc": {"interval", "grace", "max_unused", "lease", "lock_ttl"},
    "retention": {"datasets", "keep_last", "keep_younger_than"},
}
# Keys of the hub's --auth-config file (docs/security.md).
HUB_AUTH_KEYS = {
    "": {"metrics", "oidc", "basic", "rule"},
    "oidc": {"issuer", "audience", "algorithms", "token_type", "subject_claim", "groups_claim",
             "leeway_secs", "jwks_refresh_min_secs", "ca_file", "discovery_token_file"},
    "basic": {"users_file"},
    "rule": {"datasets", "read", "write", "admin"},
}


def check_keys(table, allowed, where, path=""):
    problems = []
    for key, value in table.items():
        if key not in allowed.get(path, set()):
            problems.append(f"{where}: unknown key {'.'.join(filter(None, [path, key]))}")
            continue
        sub = f"{path}.{key}" if path else key
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict):
                problems += check_keys(item, allowed, where, sub)
    return problems


def check_toml(doc, where):
    problems = []
    for name, text in (doc.get("data") or {}).items():
        if not name.endswith(".toml"):
            continue
        try:
            parsed = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            problems.append(f"{where} {name}: not TOML: {e}")
            continue
        allowed = {"agent.toml": AGENT_KEYS, "lifecycle.toml": HUB_LIFECYCLE_KEYS}.get(name, HUB_AUTH_KEYS)
        problems += check_keys(parsed, allowed, f"{where} {name}")
        if name == "agent.toml":
            for i, m in enumerate(parsed.get("mount", [])):
                if not {"fuse", "nfs", "webdav", "materialize"} & m.keys():
                    problems.append(f"{where} {name}: mount {i} has no fuse, nfs, webdav or materialize")
    return problems


def check_service_monitor(doc, services, where):
    problems = []
    if doc.get("apiVersion") != CUSTOM["ServiceMonitor"]:
        problems.append(f"{where}: apiVersion {doc.get('apiVersion')}")
    spec = doc.get("spec") or {}
    unknown = set(spec) - {"selector", "endpoints", "namespaceSelector"}
    if unknown:
        problems.append(f"{where}: unknown spec fields {sorted(unknown)}")
    want = (spec.get("selector") or {}).get("matchLabels") or {}
    selected = [s for s in services if want and want.items() <= (s["metadata"].get("labels") or {}).items()]
    if not selected:
        problems.append(f"{where}: selects no Service of the release ({want})")
    endpoints = spec.get("endpoints") or []
    if not endpoints:
        problems.append(f"{where}: no endpoints")
    for ep in endpoints:
        unknown = set(ep) - {"port", "path", "interval", "scrapeTimeout", "scheme", "tlsConfig"}
        if unknown:
            problems.append(f"{where}: unknown endpoint fields {sorted(unknown)}")
        if ep.get("scheme") not in ("http", "https"):
            problems.append(f"{where}: scheme {ep.get('scheme')}")
        for svc in selected:
            ports = {p.get("name") for p in svc["spec"].get("ports", [])}
            if ep.get("port") not in ports:
                problems.append(f"{where}: port {ep.get('port')} is not a port of Service {svc['metadata']['name']}")
    return problems


def docs_example(outdir, chart):
    files = 0
    for block in re.findall(r"```yaml\n(.*?)```", Path("docs/kubernetes.md").read_text(), re.S):
        m = re.match(r"# ((?:templates/)?[\w.-]+\.yaml) of your chart\n", block)
        if not m:
            continue
        text = block[m.end():]
        if m.group(1) == "Chart.yaml":
            text = re.sub(r"repository: \S+", f"repository: file://{Path(chart).resolve()}", text)
        path = outdir / m.group(1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        files += 1
    if files != 3:
        sys.exit(f"docs/kubernetes.md: {files} example files, want Chart.yaml, values.yaml and one template")


def unpack(rendered, root, outdir):
    import os
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d["kind"] == "ConfigMap"}
    files, dirs = {}, {}
    for d in docs:
        if d["kind"] not in ("Deployment", "Pod"):
            continue
        pod = d["spec"]["template"]["spec"] if d["kind"] == "Deployment" else d["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod.get("initContainers", []) + pod["containers"]:
            uid = (c.get("securityContext") or {}).get("runAsUser", 0)
            for m in c.get("volumeMounts", []):
                cm = volumes[m["name"]].get("configMap")
                if cm:
                    for key, text in configmaps[cm["name"]].items():
                        files[f"{m['mountPath']}/{key}"] = text
                else:
                    dirs[m["mountPath"]] = uid
            # The image's ENTRYPOINT unless the container sets a command.
            argv = (c.get("command") or ["aetherfs"]) + c.get("args", [])
            (outdir / f"{c['name']}.argv").write_text("".join(a + "\0" for a in argv))
            prestop = ((c.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command", [])
            (outdir / f"{c['name']}.prestop").write_text("".join(a + "\0" for a in prestop))
            env = [f"{e['name']}={e['value']}" for e in c.get("env", []) if "value" in e]
            (outdir / f"{c['name']}.env").write_text("".join(e + "\0" for e in env))
    # Paths are the container's: resolve them inside ROOT (/var/run is an
    # absolute symlink there).
    os.chroot(root)
    os.chdir("/")
    for path, uid in dirs.items():
        os.makedirs(path, exist_ok=True)
        os.chown(path, uid, uid)
    for path, text in files.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Path(path).write_text(text)


def main():
    if sys.argv[1] == "--unpack":
        unpack(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
        return
    if sys.argv[1] == "--docs-example":
        docs_example(Path(sys.argv[2]), sys.argv[3])
        return
    rendered, outdir = Path(sys.argv[1]), Path(sys.argv[2])
    outdir.mkdir(parents=True, exist_ok=True)
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    services = [d for d in docs if d.get("kind") == "Service"]
    problems, written, custom = [], 0, 0
    for i, doc in enumerate(docs):
        kind, name = doc.get("kind", "?"), (doc.get("metadata") or {}).get("name", "?")
        where = f"{rendered.name}: {kind}/{name}"
        if kind == "ConfigMap":
            problems += check_toml(doc, where)
        if kind in CUSTOM:
            custom += 1
            problems += check_service_monitor(doc, services, where)
            continue
        (outdir / f"{i:03d}-{kind.lower()}-{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        written += 1
    for p in problems:
        print(p)
    print(f"{rendered.name}: {written} manifests for kubernetes-validate, {custom} custom resources checked here")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
