#!/usr/bin/env python3
"""The pod, simulated: runs an example chart's rendered Pod as local processes.

    scripts/pod-sim.py examples/kubernetes/psql-sqlite            # materialize
    scripts/pod-sim.py examples/kubernetes/datasette -f values-fuse.yaml

No kubelet here (docs/kubernetes.md). The example is rendered with helm (the
hub URL set to the local hub with --set aetherfs.agent.hub=...), and its one
Deployment's pod template is run as Kubernetes would:

- Volumes: each one a directory ROOT/volumes/NAME (ROOT a temporary
  directory). ConfigMap volumes get the rendered ConfigMap's keys as files;
  the projected service-account token is a file the simulation rewrites
  (atomically, like the kubelet) every second; emptyDirs start empty.
- Identity: a simulated service-account issuer (discovery and JWKS on
  loopback) signs RS256 tokens shaped like projected ones (`kubernetes.io`
  claim, the volume's audience, 4 s lifetime); the hub trusts it with
  token_type "kubernetes" and no leeway, lets group
  system:serviceaccounts:geo read demo/** and refuses anonymous reads.
- Paths: every absolute path in a container's command, args, env values and
  the ConfigMap files it mounts is remapped through that container's
  volumeMounts: mountPath P becomes ROOT/volumes/NAME (longest mountPath
  first, only at path boundaries). Paths under no volumeMount (/bin/sh,
  /usr/...) are the host's: the images are mapped to local programs.
- Images: a container without `command` runs its image's entrypoint, which
  is mapped here (the aetherfs image -> $AETHERFS_BIN, default
  target/debug/aetherfs). A container with `command` runs that command from
  the host's PATH (python3 with the pip datasette / buenavista). Processes
  run as the invoking user (root here), each in its own session:
  securityContext (runAsUser 65532, read-only root) is not applied, since the
  host's Python lives in root's home; so file ownership and modes between
  containers of different uids are not proved here (image-rootfs-check.sh
  proves uid 65532 reading a root sidecar's FUSE mount).
- Network: the whole simulation re-executes itself in a private network
  namespace (unshare -n, loopback up), the pod's; ports are used as
  rendered (0.0.0.0:9100 ...) without clashing with anything on the host.
  Without root it runs in the host's namespace.
- Order: initContainers with restartPolicy Always (native sidecars) start
  first, each main container starts only after every sidecar's startupProbe
  passed; readiness and liveness probes (httpGet, tcpSocket) are polled at
  their periodSeconds for the whole run and a liveness failure fails the run.
  On stop, main containers get SIGTERM first (SIGKILL after
  terminationGracePeriodSeconds), then the sidecars in reverse order, each
  after its preStop exec hook.

The scenario: a hub on loopback (file storage, that auth), a SQLite dataset
pushed as demo/cities:v1 and tagged `stable`; the pod starts; the database
answers a query; the sidecar's first token expires (the hub must refuse it
and accept the rotated one); a reader (a sqlite3 connection on the consumer's path, and for the
psql example a psql session inside BEGIN) is opened; v2 is pushed to
`stable`; the on_switch hook must run and the database answer v2 (the
sidecar's /readyz, polled every 50 ms meanwhile, never failing), while the
reader opened before keeps answering v1; the pod stops with the main
container first, no mount left in /proc/self/mountinfo and no process left.
"""
import argparse
import atexit
import base64
import http.server
import http.client
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELM = os.environ.get("HELM") or os.path.join(
    os.environ.get("AETHERFS_TOOLS_DIR") or os.path.join(REPO, "target/tools"), "bin/helm")
AETHERFS = os.path.abspath(os.environ.get("AETHERFS_BIN", os.path.join(REPO, "target/debug/aetherfs")))
HUB_PORT = 7070
# The pod's identity, and its tokens: valid TOKEN_LIFETIME seconds, rotated
# every TOKEN_ROTATE seconds; the hub allows no clock leeway, so the agent
# must read each new token to keep following the tag.
NAMESPACE, ACCOUNT = "geo", "cities"
TOKEN_LIFETIME, TOKEN_ROTATE = 4, 1
HUB = "http://127.0.0.1:%d" % HUB_PORT
STARTED = time.monotonic()


def log(msg):
    print("pod-sim %6.2fs: %s" % (time.monotonic() - STARTED, msg), flush=True)


class Failure(Exception):
    pass


def wait_for(what, check, timeout=60, interval=0.1):
    """Polls check() until it returns a true value; returns that value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = check()
            if v:
                return v
        except Failure:
            raise
        except Exception as e:  # noqa: BLE001 (any failure means "not yet")
            last = e
        time.sleep(interval)
    raise Failure("timed out after %ss waiting for %s (last error: %s)" % (timeout, what, last))


def http_get(port, path, host="127.0.0.1", timeout=3, headers=None):
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


# ---------------------------------------------------------------- processes

PROCS = []  # every Popen started, for the cleanup
ROOT = None


def spawn(argv, env, log_path, cwd=None):
    out = open(log_path, "ab")
    p = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         cwd=cwd, start_new_session=True)
    out.close()
    PROCS.append(p)
    return p


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_group(p, grace):
    """SIGTERM to the process group, SIGKILL after grace seconds; True if it exited in time."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        p.wait(grace)
        clean = True
    except subprocess.TimeoutExpired:
        clean = False
    if group_alive(p.pid):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if p.poll() is None:
            p.wait()
    return clean


def our_mounts():
    if ROOT is None:
        return []
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(ROOT)]


def cleanup():
    for p in reversed(PROCS):
        try:
            if group_alive(p.pid) or p.poll() is None:
                stop_group(p, 5)
        except Exception:  # noqa: BLE001
            pass
    for m in sorted(our_mounts(), key=len, reverse=True):
        subprocess.call(["fusermount3", "-uz", m], stderr=subprocess.DEVNULL)
        subprocess.call(["umount", "-l", m], stderr=subprocess.DEVNULL)
    if ROOT and not os.environ.get("POD_SIM_KEEP"):
        shutil.rmtree(ROOT, ignore_errors=True)


def on_alarm(_signum, _frame):
    log("FAIL: the run took longer than POD_SIM_TIMEOUT; cleaning up")
    cleanup()
    os._exit(1)


def on_signal(signum, _frame):
    cleanup()
    sys.exit(128 + signum)


# ---------------------------------------------------------------- the pod

class Container:
    def __init__(self, spec, kind, pod):
        self.spec = spec
        self.name = spec["name"]
        self.kind = kind  # "sidecar" or "main"
        self.pod = pod
        self.proc = None
        self.ports = {p.get("name"): p["containerPort"] for p in spec.get("ports", [])}
        self.mounts = sorted(((m["mountPath"].rstrip("/") or "/", os.path.join(pod.volumes_dir, m["name"]))
                              for m in spec.get("volumeMounts", [])), key=lambda m: -len(m[0]))
        self.liveness_failures = 0
        self.stopped_at = None

    def remap(self, s):
        """Rewrites every absolute path under one of this container's mountPaths."""
        if not self.mounts:
            return s
        table = dict(self.mounts)
        pattern = r"(?<![\w./-])(" + "|".join(re.escape(m) for m, _ in self.mounts) + r")(?=[/\"' ]|$)"
        # One pass, longest mountPath first: a remapped path is never remapped again.
        return re.sub(pattern, lambda mo: table[mo.group(1)], s)

    def argv(self):
        command = self.spec.get("command")
        args = self.spec.get("args", [])
        if command is None:
            command = self.pod.entrypoint(self.spec["image"])
        return [self.remap(str(a)) for a in list(command) + list(args)]

    def env(self):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOSTNAME": self.pod.name}
        for name in ("LANG", "PYENV_ROOT", "PYENV_VERSION"):
            if name in os.environ:
                env[name] = os.environ[name]
        for e in self.spec.get("env", []):
            env[e["name"]] = self.remap(str(e.get("value", "")))
        return env

    def start(self):
        argv = self.argv()
        log("start %s %s: %s" % (self.kind, self.name, " ".join(argv)))
        self.proc = spawn(argv, self.env(), os.path.join(self.pod.root, "%s.log" % self.name),
                          cwd=self.pod.root)

    def probe(self, which):
        pr = self.spec.get(which)
        if not pr:
            return True
        if self.proc.poll() is not None:
            raise Failure("%s exited with %s (log %s/%s.log)" % (self.name, self.proc.returncode, self.pod.root, self.name))
        if "httpGet" in pr:
            port = pr["httpGet"]["port"]
            port = self.ports[port] if isinstance(port, str) else port
            status, _ = http_get(port, pr["httpGet"].get("path", "/"))
            return 200 <= status < 400
        if "tcpSocket" in pr:
            port = pr["tcpSocket"]["port"]
            port = self.ports[port] if isinstance(port, str) else port
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return True
        if "exec" in pr:
            return subprocess.call([self.remap(a) for a in pr["exec"]["command"]], env=self.env()) == 0
        raise Failure("%s: unsupported probe %s" % (self.name, pr))

    def wait_probe(self, which, default_timeout=60):
        pr = self.spec.get(which) or {}
        timeout = min(default_timeout, pr.get("periodSeconds", 10) * pr.get("failureThreshold", 3))
        wait_for("%s %s" % (self.name, which), lambda: self.probe(which), timeout=max(timeout, 10))
        log("%s %s passed" % (self.name, which))

    def pre_stop(self):
        hook = self.spec.get("lifecycle", {}).get("preStop", {}).get("exec")
        if hook:
            argv = [self.remap(a) for a in hook["command"]]
            log("preStop %s: %s" % (self.name, " ".join(argv)))
            subprocess.run(argv, env=self.env(), timeout=30)

    def stop(self, grace):
        self.pre_stop()
        clean = stop_group(self.proc, grace)
        self.stopped_at = time.monotonic()
        log("stopped %s (exit %s%s)" % (self.name, self.proc.returncode, "" if clean else ", SIGKILL"))
        if not clean:
            raise Failure("%s did not exit on SIGTERM within %ss" % (self.name, grace))


class Pod:
    def __init__(self, docs, root, entrypoints, issuer):
        self.issuer = issuer
        self.first_token_exp = None
        self.root = root
        self.volumes_dir = os.path.join(root, "volumes")
        self.entrypoints = entrypoints
        workloads = [d for d in docs if d.get("kind") in ("Deployment", "StatefulSet")]
        if len(workloads) != 1:
            raise Failure("the example renders %d Deployments/StatefulSets, expected 1" % len(workloads))
        self.workload = workloads[0]
        self.name = self.workload["metadata"]["name"] + "-0"
        self.spec = self.workload["spec"]["template"]["spec"]
        self.configmaps = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ConfigMap"}
        self.sidecars = [Container(c, "sidecar", self) for c in self.spec.get("initContainers", [])
                         if c.get("restartPolicy") == "Always"]
        if len(self.sidecars) != len(self.spec.get("initContainers", [])):
            raise Failure("only native sidecars are simulated among initContainers")
        self.main = [Container(c, "main", self) for c in self.spec["containers"]]
        self.token_stop = threading.Event()
        self.monitor_stop = threading.Event()
        self.token_rotations = 0
        self.errors = []

    def container(self, name):
        return next(c for c in self.sidecars + self.main if c.name == name)

    def entrypoint(self, image):
        for prefix, argv in self.entrypoints.items():
            if image.split("@")[0].rsplit(":", 1)[0].endswith(prefix):
                return argv
        raise Failure("no local program for image %s (and the container has no command)" % image)

    def make_volumes(self):
        users = {}
        for c in self.sidecars + self.main:
            for m in c.spec.get("volumeMounts", []):
                users.setdefault(m["name"], []).append(c)
        for v in self.spec.get("volumes", []):
            d = os.path.join(self.volumes_dir, v["name"])
            os.makedirs(d)
            if "configMap" in v:
                cm = self.configmaps[v["configMap"]["name"]]
                for c in users.get(v["name"], []):
                    if len({id(x) for x in users[v["name"]]}) > 1:
                        raise Failure("ConfigMap volume %s is shared: its remapping would be ambiguous" % v["name"])
                    for key, text in cm.get("data", {}).items():
                        with open(os.path.join(d, key), "w") as f:
                            f.write(c.remap(text))
            elif "projected" in v:
                for src in v["projected"]["sources"]:
                    if "serviceAccountToken" in src:
                        self.audience = src["serviceAccountToken"].get("audience", "aetherfs")
                        self.token_path = os.path.join(d, src["serviceAccountToken"]["path"])
                        self.write_token()
                    else:
                        raise Failure("projected source %s not simulated" % src)
            elif "emptyDir" in v:
                pass
            else:
                raise Failure("volume %s: kind not simulated" % v)

    def write_token(self):
        # A fresh short-lived token, replaced atomically as the kubelet does
        # (long before expirationSeconds; here every TOKEN_ROTATE seconds).
        token, exp = self.issuer.token(NAMESPACE, ACCOUNT, TOKEN_LIFETIME, self.audience)
        tmp = self.token_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(token)
        os.rename(tmp, self.token_path)
        if self.first_token_exp is None:
            self.first_token, self.first_token_exp = token, exp
        self.token_rotations += 1

    def rotate_tokens(self):
        while not self.token_stop.wait(TOKEN_ROTATE):
            self.write_token()

    def monitor(self):
        """Polls readiness and liveness at their periods while the pod runs."""
        next_at = {}
        while not self.monitor_stop.wait(0.5):
            now = time.monotonic()
            for c in self.sidecars + self.main:
                for which in ("livenessProbe", "readinessProbe"):
                    pr = c.spec.get(which)
                    if not pr or c.stopped_at or now < next_at.get((c.name, which), 0):
                        continue
                    next_at[(c.name, which)] = now + pr.get("periodSeconds", 10)
                    try:
                        ok = c.probe(which)
                    except Exception:  # noqa: BLE001
                        ok = False
                    if not ok and not self.monitor_stop.is_set():
                        if which == "livenessProbe":
                            c.liveness_failures += 1
                            if c.liveness_failures >= pr.get("failureThreshold", 3):
                                self.errors.append("%s failed its liveness probe" % c.name)
                        else:
                            log("%s not ready" % c.name)
                    elif which == "livenessProbe":
                        c.liveness_failures = 0

    def start(self):
        self.make_volumes()
        threading.Thread(target=self.rotate_tokens, daemon=True).start()
        for s in self.sidecars:
            s.start()
            s.wait_probe("startupProbe", default_timeout=120)
        for c in self.main:
            c.start()
        for c in self.main:
            c.wait_probe("startupProbe")
            c.wait_probe("readinessProbe")
        threading.Thread(target=self.monitor, daemon=True).start()

    def stop(self):
        self.monitor_stop.set()
        grace = self.spec.get("terminationGracePeriodSeconds", 30)
        for c in self.main:
            c.stop(grace)
        for s in reversed(self.sidecars):
            s.stop(grace)
        self.token_stop.set()
        first_sidecar = min(s.stopped_at for s in self.sidecars)
        if any(c.stopped_at > first_sidecar for c in self.main):
            raise Failure("a sidecar stopped before a main container")
        left = [c.name for c in self.sidecars + self.main if group_alive(c.proc.pid)]
        if left:
            raise Failure("processes left after stop: %s" % left)
        mounts = our_mounts()
        if mounts:
            raise Failure("mounts left after stop: %s" % mounts)
        if self.errors:
            raise Failure("; ".join(self.errors))
        log("stopped: main first, sidecar last; no process and no mount left; token rotated %d times"
            % self.token_rotations)


# ---------------------------------------------------------------- the issuer

class Issuer:
    """The cluster's service-account issuer, simulated: OpenID discovery and
    JWKS on loopback, RS256 tokens shaped like projected service-account
    tokens (`kubernetes.io` claim), which the hub checks with token_type
    "kubernetes"."""

    PORT = 7071

    def __init__(self):
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.url = "http://127.0.0.1:%d" % self.PORT
        nums = self.key.public_key().public_numbers()
        jwk = {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "sim",
               "n": b64(nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")), "e": b64(nums.e.to_bytes(3, "big"))}
        docs = {"/.well-known/openid-configuration": {"issuer": self.url, "jwks_uri": self.url + "/keys",
                                                       "id_token_signing_alg_values_supported": ["RS256"]},
                "/keys": {"keys": [jwk]}}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                doc = docs.get(self.path)
                if doc is None:
                    self.send_error(404)
                    return
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.PORT), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, namespace, account, lifetime, audience="aetherfs"):
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        now = int(time.time())
        claims = {"iss": self.url, "sub": "system:serviceaccount:%s:%s" % (namespace, account), "aud": [audience],
                  "iat": now, "nbf": now, "exp": now + lifetime,
                  "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": account, "uid": "sim-sa"},
                                    "pod": {"name": "sim-0", "uid": "sim-pod"}}}
        head = b64(json.dumps({"alg": "RS256", "kid": "sim", "typ": "JWT"}).encode())
        body = b64(json.dumps(claims).encode())
        sig = self.key.sign(("%s.%s" % (head, body)).encode(), padding.PKCS1v15(), hashes.SHA256())
        return "%s.%s.%s" % (head, body, b64(sig)), claims["exp"]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# ---------------------------------------------------------------- the scenario

def make_dataset(d, version, rows):
    os.makedirs(d)
    db = sqlite3.connect(os.path.join(d, "db.sqlite"))
    db.execute("CREATE TABLE version (v TEXT)")
    db.execute("INSERT INTO version VALUES (?)", (version,))
    db.execute("CREATE TABLE cities (name TEXT PRIMARY KEY, population INTEGER)")
    db.executemany("INSERT INTO cities VALUES (?, ?)", rows)
    db.commit()
    db.close()
    with open(os.path.join(d, "README"), "w") as f:
        f.write("cities %s\n" % version)


def push(root, issuer, src, ref, tag):
    token, _ = issuer.token("ci", "publisher", 60)
    path = os.path.join(root, "publisher.token")
    with open(path, "w") as f:
        f.write(token)
    subprocess.run([AETHERFS, "--hub", HUB, "--token-file", path, "--quiet", "push", src, ref, "--tag", tag],
                   check=True,
                   stdout=open(os.path.join(root, "push.log"), "ab"), stderr=subprocess.STDOUT)


def agent_mount(pod):
    sidecar = pod.sidecars[0]
    status, body = http_get(sidecar.ports["aetherfs-admin"], "/v1/mounts")
    data = json.loads(body)
    mounts = data["mounts"] if isinstance(data, dict) else data
    return mounts[0]


class Psql:
    """A psql session kept open (stdin a pipe), one query at a time."""

    def __init__(self, port):
        self.p = subprocess.Popen(["psql", "-X", "-q", "-At", "-h", "127.0.0.1", "-p", str(port), "-U", "sim",
                                   "-d", "sim", "-v", "ON_ERROR_STOP=1"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, start_new_session=True)
        PROCS.append(self.p)

    def query(self, sql):
        marker = "--end-%d--" % time.time_ns()
        self.p.stdin.write("%s\n\\echo %s\n" % (sql, marker))
        self.p.stdin.flush()
        lines = []
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise Failure("psql session ended: %s" % "".join(lines))
            if line.strip() == marker:
                return [x.rstrip("\n") for x in lines]
            lines.append(line)

    def close(self):
        self.p.stdin.close()
        self.p.wait(10)


def psql_once(port, sql):
    out = subprocess.run(["psql", "-X", "-At", "-h", "127.0.0.1", "-p", str(port), "-U", "sim", "-d", "sim",
                          "-c", sql], capture_output=True, text=True, timeout=20)
    if out.returncode != 0:
        raise Failure("psql: %s" % out.stderr.strip())
    return out.stdout.strip()


def run(args):
    global ROOT
    root = ROOT = tempfile.mkdtemp(prefix="aetherfs-pod-sim-")
    log("root %s (logs there; POD_SIM_KEEP=1 keeps it)" % root)
    example = os.path.abspath(args.example)
    helm = [HELM, "template", "sim", example, "--set", "aetherfs.agent.hub=" + HUB]
    for f in args.values:
        helm += ["-f", os.path.join(example, f) if not os.path.isabs(f) else f]
    rendered = subprocess.run(helm, check=True, capture_output=True, text=True).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]

    issuer = Issuer()
    with open(os.path.join(root, "auth.toml"), "w") as f:
        f.write("""[[oidc]]
issuer = "%s"
audience = "aetherfs"
token_type = "kubernetes"
leeway_secs = 0

[[rule]]
datasets = "demo/**"
read = ["group:system:serviceaccounts:%s"]
write = ["user:system:serviceaccount:ci:publisher"]
""" % (issuer.url, NAMESPACE))
    hub = spawn([AETHERFS, "hub", "--listen", "127.0.0.1:%d" % HUB_PORT, "--storage",
                 "file://" + os.path.join(root, "hub-data"), "--auth-config", os.path.join(root, "auth.toml")],
                dict(os.environ), os.path.join(root, "hub.log"))
    wait_for("the hub", lambda: hub.poll() is None and http_get(HUB_PORT, "/readyz")[0] == 200)
    make_dataset(os.path.join(root, "v1"), "v1", [("Lyon", 522250), ("Porto", 231800)])
    make_dataset(os.path.join(root, "v2"), "v2", [("Lyon", 522250), ("Porto", 231800), ("Graz", 291072)])
    status, _ = http_get(HUB_PORT, "/v1/datasets/demo/cities/tags/stable")
    if status != 401:
        raise Failure("the hub answered an anonymous read with %s" % status)
    push(root, issuer, os.path.join(root, "v1"), "demo/cities:v1", "stable")
    log("pushed demo/cities:v1, tagged stable")

    pod = Pod(docs, root, {"aetherfs": [AETHERFS]}, issuer)
    agent_toml = next(cm for name, cm in pod.configmaps.items() if name.endswith("-agent"))["data"]["agent.toml"]
    mode, mount_name = re.search(r'^(fuse|materialize) = "/aetherfs/data/([^"/]+)"', agent_toml, re.M).groups()
    log("pod %s, mode %s" % (pod.name, mode))
    pod.start()
    consumer = pod.main[0]
    # The consumer's mountPath of the aetherfs-data volume, remapped.
    data_mount = next(m["mountPath"] for m in consumer.spec["volumeMounts"] if m["name"] == "aetherfs-data")
    data_dir = consumer.remap("%s/%s" % (data_mount, mount_name))
    db_path = os.path.join(data_dir, "current/db.sqlite" if mode == "materialize" else "db.sqlite")

    if "datasette" in consumer.name:
        port = consumer.ports["http"]

        def ask():
            status, body = http_get(port, "/db.json?sql=select+v,(select+count(*)+from+cities)+n+from+version&_shape=array")
            if status != 200:
                raise Failure("datasette %s: %s" % (status, body[:200]))
            row = json.loads(body)[0]
            return "%s|%s" % (row["v"], row["n"])
    else:
        port = consumer.ports["postgres"]

        def ask():
            return psql_once(port, "select v, (select count(*) from cities) from version")

    first = ask()
    if first != "v1|2":
        raise Failure("the database answered %r, expected v1|2" % first)
    log("the database answers from the dataset: %s" % first)

    # Readers opened before the tag move.
    reader = sqlite3.connect("file:%s?mode=ro&immutable=1" % db_path, uri=True)
    held = reader.execute("select v from version").fetchone()[0]
    session = None
    if "datasette" not in consumer.name:
        session = Psql(port)
        if session.query("BEGIN; select v from version;") != ["v1"]:
            raise Failure("the held psql session did not answer v1")
        log("psql session opened inside BEGIN: v1")

    before = agent_mount(pod)["digest"]
    # The token the sidecar started with must have expired: the switch then
    # proves the agent reads the rotated token file.
    wait_for("the sidecar's first token to expire", lambda: time.time() > pod.first_token_exp + 1, timeout=30)
    tag_path = "/v1/datasets/demo/cities/tags/stable"
    status, _ = http_get(HUB_PORT, tag_path, headers={"Authorization": "Bearer " + pod.first_token})
    if status != 401:
        raise Failure("the hub answered the sidecar's expired first token with %s, expected 401" % status)
    with open(pod.token_path) as f:
        status, _ = http_get(HUB_PORT, tag_path, headers={"Authorization": "Bearer " + f.read()})
    if status != 200:
        raise Failure("the hub answered the sidecar's current token with %s, expected 200" % status)
    log("the sidecar's first token has expired (the hub refuses it; the rotated one is accepted)")
    # The agent's readiness must not drop during a follow (docs/agent.md):
    # polled every 50 ms from before the push until the database answers v2.
    drops, watching = [], threading.Event()

    def watch_readiness():
        while not watching.wait(0.05):
            try:
                ok = pod.sidecars[0].probe("readinessProbe")
            except Exception as e:  # noqa: BLE001
                ok = e
            if ok is not True:
                drops.append(ok)

    watcher = threading.Thread(target=watch_readiness, daemon=True)
    watcher.start()
    push(root, issuer, os.path.join(root, "v2"), "demo/cities:v2", "stable")
    log("pushed demo/cities:v2, tagged stable")
    moved = wait_for("the switch and its on_switch hook",
                     lambda: (lambda m: m if m["digest"] != before and (m.get("on_switch") or {}).get("runs", 0) >= 1
                              else None)(agent_mount(pod)), timeout=60)
    hook = moved["on_switch"]
    if hook.get("failures") or not hook.get("last_ok"):
        raise Failure("on_switch failed: %s" % hook)
    log("switched %s -> %s; on_switch ran %d time(s), ok" % (before[:19], moved["digest"][:19], hook["runs"]))
    second = wait_for("the database to answer v2", lambda: (lambda a: a if a.startswith("v2") else None)(ask()), timeout=30)
    if second != "v2|3":
        raise Failure("after the move the database answered %r" % second)
    log("the database answers from the new version: %s" % second)
    watching.set()
    watcher.join()
    if drops:
        raise Failure("the sidecar's readiness dropped during the switch: %s" % drops[:3])
    if "datasette" in consumer.name:
        cmd = consumer.spec["command"]
        status, body = http_get(int(cmd[cmd.index("--listen") + 1].rsplit(":", 1)[1]), "/")
        if json.loads(body)["restarts"] < 1:
            raise Failure("datasette was not restarted by the hook")
    else:
        logf = pod.sidecars[0].remap("/tmp/switches.log")
        with open(logf) as f:
            if moved["digest"] not in f.read():
                raise Failure("the on_switch command did not record %s" % moved["digest"])

    again = reader.execute("select v, (select count(*) from cities) from version").fetchone()
    if held != "v1" or again != ("v1", 2):
        raise Failure("the sqlite3 connection opened before the move answered %r" % (again,))
    log("a sqlite3 connection opened before the move still reads v1")
    reader.close()
    if session:
        if session.query("select v, (select count(*) from cities) from version; COMMIT;") != ["v1|2"]:
            raise Failure("the psql session opened before the move did not keep v1")
        if session.query("select v from version;") != ["v1"]:
            raise Failure("the same session, after its transaction, changed version")
        session.close()
        if psql_once(port, "select v from version") != "v2":
            raise Failure("a new psql session did not see v2")
        log("the psql session opened before the move kept v1 (its file) to its end; a new session sees v2")
    pod.stop()
    hub_clean = stop_group(hub, 10)
    if not hub_clean:
        raise Failure("the hub did not stop on SIGTERM")
    issuer.stop()
    log("OK: %s (%s mode) in %.1fs" % (os.path.relpath(example, REPO), mode, time.monotonic() - STARTED))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("example")
    ap.add_argument("-f", "--values", action="append", default=[])
    args = ap.parse_args()
    if os.geteuid() == 0 and not os.environ.get("POD_SIM_NETNS") and shutil.which("unshare"):
        os.environ["POD_SIM_NETNS"] = "1"
        os.execvp("unshare", ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
                              sys.executable, os.path.abspath(__file__)] + sys.argv[1:])
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    # A hung step (a psql read, a probe) cannot hang CI: the whole run has
    # POD_SIM_TIMEOUT seconds (default 180), then everything is cleaned up.
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(os.environ.get("POD_SIM_TIMEOUT", "180")))
    try:
        run(args)
    except Failure as e:
        log("FAIL: %s" % e)
        for name in sorted(os.listdir(ROOT)) if ROOT else []:
            if name.endswith(".log"):
                with open(os.path.join(ROOT, name), errors="replace") as f:
                    tail = f.read()[-3000:]
                print("---- %s (tail)\n%s" % (name, tail), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
