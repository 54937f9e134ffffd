#!/usr/bin/env python3
"""Mounts benchmark: reading a dataset version through `aetherfs mount` (FUSE)
and `aetherfs serve` (NFSv3, WebDAV) against native reads, rclone mount,
nfs-ganesha, wsgidav and rclone serve webdav, on the same bytes.

Run it through bench/mounts.sh, which installs the peers, builds the release
binary and cleans up after a crash. See bench/README.md ("Mounts").

  python3 bench/mounts.py                 # the benchmark
  python3 bench/mounts.py --cleanup       # unmount / kill / delete what a dead run left (state file)
  python3 bench/mounts.py --sqlite-lookups DB KEYS   # the SQLite client the benchmark times
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import common
from common import (BENCH_DIR, GIB, MB, MIB, RUNS, SCALE, SEED, VERIFY, BenchError, Hub, Run, env_int,
                    gen_db, gen_random_file, log, median_run, page_cache_summary, quiet_summary,
                    rm, samples_of, sqlite_rows, tool_version, tree_size)
from common import Resources, dd, f1, f2, kill_pid, mount_entry, unmount

HERE = Path(__file__).resolve().parent
BIN = common.BUILT_BIN  # replaced by a private copy in bench()
GEN_VERSION = 1  # bump when the generator changes: invalidates cached datasets
DATASET = "bench/mounts"
REF = f"{DATASET}:v1"
EXPORT = "mounts"  # NFS export name (aetherfs) and pseudo path (ganesha)
CACHE_MIB = env_int("BENCH_CACHE_MIB", 1536)  # the agent's memory cache: the 1 GiB file (and the db) fit
STATE_FILE = Path(os.environ.get("BENCH_MOUNTS_STATE") or (BENCH_DIR / "mounts.state.json"))
PROFILE = os.environ.get("BENCH_PROFILE", "1") != "0"
TRACE = os.environ.get("BENCH_TRACE", "1") != "0"
STEP_TIMEOUT = 600.0
GANESHA_PORTS = {"nfs": 12049, "mnt": 12050}
READ_OP = "FUSE_READ"


def scaled(n: int, lo: int) -> int:
    return max(lo, round(n * SCALE))


RANDOM_READS = env_int("BENCH_RANDOM_READS", scaled(20000, 500))
SQL_QUERIES = env_int("BENCH_SQL_QUERIES", scaled(20000, 500))


# --------------------------------------------------------------------------
# Resources: every process, mount, namespace and trace instance we create is
# recorded in a state file, so that `--cleanup` (the shell trap) can undo it
# even if this driver was killed.
# --------------------------------------------------------------------------


def undo(item: dict) -> None:
    kind = item["kind"]
    if kind == "proc":
        kill_pid(item["pid"], item["token"])
    elif kind == "mount":  # a FUSE daemon: SIGTERM unmounts; fusermount3 -u / -uz as fallbacks
        kill_pid(item["pid"], item["token"])
        unmount(item["path"])
    elif kind == "netns":
        name = item["name"]
        out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        for pid in out:  # only processes we started live in our private namespace
            try:
                os.kill(int(pid), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        time.sleep(0.5)
        for pid in subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elif kind == "trace":
        inst = Path(item["path"])
        try:
            (inst / "events" / "fuse" / "enable").write_text("0")
        except OSError:
            pass
        try:
            inst.rmdir()
        except OSError:
            pass


RES = Resources(STATE_FILE, undo)


# --------------------------------------------------------------------------
# Processes: servers and FUSE daemons
# --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            pass
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            raise BenchError(f"nothing listens on 127.0.0.1:{port}")
        time.sleep(0.05)


class Server:
    """A background process with its output in a log file, registered for cleanup."""

    def __init__(self, name: str, cmd: list[str], log_path: Path, token: str, env: dict | None = None):
        self.name, self.cmd, self.log_path, self.token, self.env = name, cmd, log_path, token, env
        self.proc: subprocess.Popen | None = None
        self.item: dict | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def start(self) -> None:
        logf = open(self.log_path, "a")
        logf.write(f"\n--- {time.strftime('%H:%M:%S')} {' '.join(self.cmd)}\n")
        logf.flush()
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(self.env or {})})
        logf.close()
        self.item = RES.add({"kind": "proc", "pid": self.proc.pid, "token": self.token, "name": self.name})

    def check(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            tail = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
            raise BenchError(f"{self.name} exited ({self.proc.returncode if self.proc else '?'}); log:\n{tail}")

    def stop(self) -> None:
        common.stop_process(self.proc)
        if self.item:
            RES.drop(self.item)
            self.item = None


class FuseMount(Server):
    """A FUSE daemon (aetherfs mount or rclone mount) on `mnt`. Ready when the
    mount shows in /proc/self/mountinfo (and, for aetherfs, /readyz answers)."""

    def __init__(self, name: str, cmd: list[str], mnt: Path, log_path: Path, token: str,
                 admin: str | None = None, env: dict | None = None):
        super().__init__(name, cmd, log_path, token, env)
        self.mnt, self.admin = mnt, admin
        self.conn: int | None = None

    def start(self) -> None:
        self.mnt.mkdir(parents=True, exist_ok=True)
        if mount_entry(self.mnt):
            unmount(str(self.mnt))
        logf = open(self.log_path, "a")
        logf.write(f"\n--- {time.strftime('%H:%M:%S')} {' '.join(self.cmd)}\n")
        logf.flush()
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(self.env or {})})
        logf.close()
        self.item = RES.add({"kind": "mount", "pid": self.proc.pid, "token": self.token, "path": str(self.mnt),
                             "name": self.name})
        deadline = time.monotonic() + 60
        while True:
            e = mount_entry(self.mnt)
            if e and e["fstype"].startswith("fuse"):
                self.conn = e["conn"]
                break
            self.check()
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: {self.mnt} not mounted after 60 s")
            time.sleep(0.02)
        if self.admin:
            common.wait_http_ok(self.admin + "/readyz", 60, self.proc)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        unmount(str(self.mnt))
        if self.item:
            RES.drop(self.item)
            self.item = None

    def metrics(self) -> dict:
        return metrics(self.admin) if self.admin else {}


def metrics(admin: str | None) -> dict:
    """The agent's Prometheus counters (unlabelled ones)."""
    if not admin:
        return {}
    out = {}
    try:
        with urllib.request.urlopen(admin + "/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("#") or "{" in line:
                    continue
                parts = line.split()
                if len(parts) == 2:
                    try:
                        out[parts[0]] = float(parts[1])
                    except ValueError:
                        pass
    except OSError:
        pass
    return out


def metrics_delta(a: dict, b: dict) -> dict:
    d = {}
    for k, v in b.items():
        short = k.removeprefix("aetherfs_")
        if k.endswith(("_total", "_sum", "_count")):
            d[short] = round(v - a.get(k, 0.0), 4)
        else:
            d[short] = v
    return d


def afs_mount(mnt: Path, work: Path, hub: Hub, readahead_mib: int | None = None) -> FuseMount:
    port = free_port()
    admin = f"http://127.0.0.1:{port}"
    ra = ["--readahead-mib", str(readahead_mib)] if readahead_mib is not None else []
    m = FuseMount("aetherfs mount", [str(BIN), "mount", REF, str(mnt), "--hub", hub.url, "--cache-mib", str(CACHE_MIB),
                                     "--admin", f"127.0.0.1:{port}", "-q", *ra],
                  mnt, work / "aetherfs-mount.log", "aetherfs", admin=admin)
    m.start()
    return m


def rclone_mount(src: Path, mnt: Path, cache: Path, work: Path) -> FuseMount:
    rm(cache)
    cache.mkdir(parents=True)
    m = FuseMount("rclone mount", ["rclone", "mount", str(src), str(mnt), "--read-only", "--vfs-cache-mode", "full",
                                   "--cache-dir", str(cache)],
                  mnt, work / "rclone-mount.log", "rclone", env={"RCLONE_CONFIG": "/dev/null"})
    m.start()
    return m


class AfsServe(Server):
    def __init__(self, work: Path, hub: Hub, nfs: bool, webdav: bool, readahead_mib: int | None = None):
        self.admin_port = free_port()
        self.nfs_port = free_port() if nfs else None
        self.dav_port = free_port() if webdav else None
        cmd = [str(BIN), "serve", REF, "--hub", hub.url, "--cache-mib", str(CACHE_MIB),
               "--admin", f"127.0.0.1:{self.admin_port}", "-q"]
        if readahead_mib is not None:
            cmd += ["--readahead-mib", str(readahead_mib)]
        if nfs:
            cmd += ["--nfs", f"127.0.0.1:{self.nfs_port}", "--export", EXPORT]
        if webdav:
            cmd += ["--webdav", f"127.0.0.1:{self.dav_port}"]
        super().__init__("aetherfs serve", cmd, work / "aetherfs-serve.log", "aetherfs")
        self.admin = f"http://127.0.0.1:{self.admin_port}"

    def start(self) -> None:
        super().start()
        common.wait_http_ok(self.admin + "/readyz", 60, self.proc)
        for p in (self.nfs_port, self.dav_port):
            if p:
                wait_port(p, 60, self.proc)

    def nfs_url(self, rel: str) -> str:
        return f"nfs://127.0.0.1/{EXPORT}/{rel}?nfsport={self.nfs_port}&mountport={self.nfs_port}&version=3"

    def dav_url(self, rel: str) -> str:
        return f"http://127.0.0.1:{self.dav_port}/{rel}"


class Ganesha:
    """rpcbind + ganesha.nfsd (VFS FSAL) in a private network namespace."""

    def __init__(self, work: Path, export_path: Path):
        self.ns = f"afsbench{os.getpid()}"
        self.work, self.export_path = work, export_path
        self.conf = work / "ganesha.conf"
        self.rpcbind: Server | None = None
        self.ganesha: Server | None = None
        self.item: dict | None = None

    @property
    def pid(self) -> int | None:
        return self.ganesha.pid if self.ganesha else None

    def url(self, rel: str) -> str:
        return (f"nfs://127.0.0.1/{EXPORT}/{rel}?nfsport={GANESHA_PORTS['nfs']}"
                f"&mountport={GANESHA_PORTS['mnt']}&version=3")

    def netns(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *cmd]

    def start(self) -> None:
        tmpl = (HERE / "ganesha-mounts.conf").read_text()
        self.conf.write_text(tmpl.replace("@EXPORT_PATH@", str(self.export_path)).replace("@PSEUDO@", f"/{EXPORT}"))
        subprocess.run(["ip", "netns", "del", self.ns], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        self.item = RES.add({"kind": "netns", "name": self.ns})
        subprocess.run(self.netns("ip", "link", "set", "lo", "up"), check=True)
        self.rpcbind = Server("rpcbind", self.netns("rpcbind", "-f", "-w"), self.work / "rpcbind.log", "rpcbind")
        self.rpcbind.start()
        wait_in_ns(self, 111, 30, self.rpcbind)
        gl = self.work / "ganesha.log"
        self.ganesha = Server("ganesha.nfsd", self.netns("ganesha.nfsd", "-F", "-f", str(self.conf), "-L", str(gl),
                                                         "-p", str(self.work / "ganesha.pid")),
                              self.work / "ganesha.out", "ganesha")
        self.ganesha.start()
        deadline = time.monotonic() + 90
        while True:  # ready when a real client can list the export
            r = subprocess.run(self.netns("nfs-ls", self.url("")), capture_output=True, text=True)
            if r.returncode == 0:
                break
            self.ganesha.check()
            if time.monotonic() > deadline:
                raise BenchError(f"ganesha never served {self.url('')}: {r.stderr.strip()}; see {gl}")
            time.sleep(0.2)
        log(f"ganesha: ready in netns {self.ns} (pid {self.ganesha.pid})")

    def stop(self) -> None:
        for s in (self.ganesha, self.rpcbind):
            if s:
                s.stop()
        if self.item:
            undo(self.item)
            RES.drop(self.item)
            self.item = None


def wait_in_ns(g: Ganesha, port: int, timeout: float, srv: Server) -> None:
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(g.netns("ss", "-ltn"), capture_output=True, text=True).stdout
        if re.search(rf":{port}\b", out):
            return
        srv.check()
        if time.monotonic() > deadline:
            raise BenchError(f"nothing listens on port {port} in netns {g.ns}")
        time.sleep(0.05)


class Wsgidav(Server):
    def __init__(self, work: Path, root: Path):
        self.port = free_port()
        conf = work / "wsgidav.yaml"
        conf.write_text((HERE / "wsgidav-mounts.yaml").read_text().replace("@PORT@", str(self.port))
                        .replace("@ROOT@", str(root)))
        exe = shutil.which("wsgidav") or "wsgidav"
        super().__init__("wsgidav", [exe, "-c", str(conf)], work / "wsgidav.log", "wsgidav")

    def start(self) -> None:
        super().start()
        wait_port(self.port, 60, self.proc)
        common.wait_http_ok(self.url(""), 60, self.proc, method="PROPFIND", headers={"Depth": "0"})

    def url(self, rel: str) -> str:
        return f"http://127.0.0.1:{self.port}/{rel}"


class RcloneDav(Server):
    def __init__(self, work: Path, root: Path):
        self.port = free_port()
        super().__init__("rclone serve webdav",
                         ["rclone", "serve", "webdav", str(root), "--addr", f"127.0.0.1:{self.port}", "--read-only"],
                         work / "rclone-webdav.log", "rclone", env={"RCLONE_CONFIG": "/dev/null"})

    def start(self) -> None:
        super().start()
        wait_port(self.port, 60, self.proc)
        common.wait_http_ok(self.url(""), 60, self.proc, method="PROPFIND", headers={"Depth": "0"})

    def url(self, rel: str) -> str:
        return f"http://127.0.0.1:{self.port}/{rel}"


# --------------------------------------------------------------------------
# FUSE request tracing (the kernel's fuse:fuse_request_send/_end tracepoints,
# in a private tracefs instance): requests per opcode, READ sizes, latency.
# --------------------------------------------------------------------------

class FuseTrace:
    LINE = re.compile(r"\s(\d+\.\d+): fuse_request_(send|end): connection (\d+) req (\d+) "
                      r"(?:opcode \d+ \((\w+)\) len (\d+)|len (\d+) error (-?\d+))")

    def __init__(self):
        self.inst: Path | None = None
        self.item: dict | None = None
        self.reason = ""
        base = Path("/sys/kernel/tracing")
        if not TRACE:
            self.reason = "disabled (BENCH_TRACE=0)"
            return
        if not (base / "events").exists():
            subprocess.run(["mount", "-t", "tracefs", "nodev", str(base)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        if not (base / "events" / "fuse" / "fuse_request_send").exists():
            self.reason = "no fuse tracepoints in this kernel (or tracefs not available)"
            return
        inst = base / "instances" / f"aetherfs-bench-{os.getpid()}"
        try:
            inst.mkdir()
            (inst / "buffer_size_kb").write_text("65536")
        except OSError as e:
            self.reason = f"cannot create a tracefs instance: {e}"
            return
        self.inst = inst
        self.item = RES.add({"kind": "trace", "path": str(inst)})

    @property
    def ok(self) -> bool:
        return self.inst is not None

    def start(self) -> None:
        if not self.inst:
            return
        (self.inst / "trace").write_text("")
        (self.inst / "events" / "fuse" / "enable").write_text("1")

    def stop(self, conn: int | None) -> dict | None:
        if not self.inst:
            return None
        (self.inst / "events" / "fuse" / "enable").write_text("0")
        overrun = 0
        for st in (self.inst / "per_cpu").glob("cpu*/stats"):
            m = re.search(r"overrun: (\d+)", st.read_text())
            overrun += int(m.group(1)) if m else 0
        sends: dict[int, tuple[float, str]] = {}
        ops: dict[str, dict] = {}
        read_sizes: list[int] = []
        with open(self.inst / "trace") as f:
            for line in f:
                m = self.LINE.search(line)
                if not m or (conn is not None and int(m.group(3)) != conn):
                    continue
                ts, kind, req = float(m.group(1)), m.group(2), int(m.group(4))
                if kind == "send":
                    sends[req] = (ts, m.group(5))
                else:
                    s = sends.pop(req, None)
                    if s is None:
                        continue
                    op = s[1]
                    o = ops.setdefault(op, {"count": 0, "lat_us": []})
                    o["count"] += 1
                    o["lat_us"].append((ts - s[0]) * 1e6)
                    if op == READ_OP and int(m.group(8)) == 0:
                        read_sizes.append(int(m.group(7)) - 16)  # reply = 16-byte header + data
        (self.inst / "trace").write_text("")
        out = {"overrun_events": overrun, "ops": {}}
        for op, o in sorted(ops.items(), key=lambda kv: -kv[1]["count"]):
            lat = sorted(o["lat_us"])
            out["ops"][op] = {"count": o["count"], "lat_us_mean": round(statistics.fmean(lat), 1),
                              "lat_us_p50": round(lat[len(lat) // 2], 1),
                              "lat_us_p99": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1),
                              "lat_s_total": round(sum(lat) / 1e6, 3)}
        if read_sizes:
            buckets = [4096, 16384, 65536, 131072, 262144, 1048576, 1 << 40]
            names = ["<=4K", "<=16K", "<=64K", "<=128K", "<=256K", "<=1M", ">1M"]
            hist = {n: 0 for n in names}
            for s in read_sizes:
                for b, n in zip(buckets, names):
                    if s <= b:
                        hist[n] += 1
                        break
            out["read"] = {"count": len(read_sizes), "bytes": sum(read_sizes),
                           "mean_bytes": round(statistics.fmean(read_sizes)),
                           "median_bytes": int(statistics.median(read_sizes)),
                           "hist": {k: v for k, v in hist.items() if v}}
        return out

    def close(self) -> None:
        if self.item:
            undo(self.item)
            RES.drop(self.item)
            self.item = None


TRACER: FuseTrace | None = None


# --------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------

def dataset_params() -> dict:
    return {
        "gen_version": GEN_VERSION, "scale": SCALE, "seed": SEED,
        "big_bytes": max(MIB, int(GIB * SCALE) // MIB * MIB),
        "sqlite_rows": sqlite_rows(SCALE),
        "meta_dirs": 100, "meta_files_per_dir": scaled(1000, 10),
        "flat_files": scaled(10000, 100),
        "lookup_keys": SQL_QUERIES,
    }


def gen_small_tree(root: Path, dirs: int, per_dir: int, seed: int) -> None:
    rng = random.Random(seed)
    for d in range(dirs):
        dd = root / f"d{d:03d}"
        dd.mkdir(parents=True, exist_ok=True)
        for i in range(per_dir):
            n = rng.randint(16, 512)
            (dd / f"f{i:04d}.txt").write_bytes(rng.randbytes(n // 2).hex().encode()[:n] + b"\n")


def gen_flat(root: Path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / f"e{i:05d}.json").write_text(json.dumps({"id": i, "v": rng.random()}) + "\n")


def pick_keys(db: Path, rows: int, n: int, seed: int, out: Path) -> None:
    rng = random.Random(seed)
    ids = [rng.randint(1, rows) for _ in range(n)]
    con = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    keys = [con.execute("SELECT key FROM items WHERE id = ?", (i,)).fetchone()[0] for i in ids]
    con.close()
    out.write_text("\n".join(keys) + "\n")


def ensure_dataset() -> tuple[Path, dict]:
    params = dataset_params()
    root = BENCH_DIR / f"mounts-dataset-g{GEN_VERSION}-s{SCALE:g}-seed{SEED}"
    stamp = root / "STAMP.json"
    tree = root / "tree"
    if stamp.exists() and json.loads(stamp.read_text()).get("params") == params:
        log(f"dataset: cached at {root}")
        return tree, json.loads(stamp.read_text())
    if root.exists():
        shutil.rmtree(root)
    log(f"dataset: generating at {root} (scale {SCALE:g}, seed {SEED})")
    t0 = time.perf_counter()
    gen_random_file(tree / "big" / "random.bin", params["big_bytes"], SEED + 200)
    gen_db(tree / "db" / "catalog.sqlite", params["sqlite_rows"], SEED)
    gen_small_tree(tree / "meta", params["meta_dirs"], params["meta_files_per_dir"], SEED + 300)
    gen_flat(tree / "flat", params["flat_files"], SEED + 400)
    pick_keys(tree / "db" / "catalog.sqlite", params["sqlite_rows"], params["lookup_keys"], SEED + 500,
              root / "keys.txt")
    files, size = tree_size(tree)
    meta = {"params": params, "files": files, "bytes": size,
            "big_bytes": (tree / "big" / "random.bin").stat().st_size,
            "db_bytes": (tree / "db" / "catalog.sqlite").stat().st_size,
            "meta_files": params["meta_dirs"] * params["meta_files_per_dir"], "meta_dirs": params["meta_dirs"],
            "flat_files": params["flat_files"], "keys_file": str(root / "keys.txt"),
            "generate_seconds": round(time.perf_counter() - t0, 1)}
    stamp.write_text(json.dumps(meta, indent=1))
    log(f"dataset: {files} files, {size / MIB:.0f} MiB in {meta['generate_seconds']} s")
    return tree, meta


# --------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------

class Step:
    """Repeated samples of one measurement; the median run is reported."""

    def __init__(self, name: str):
        self.name = name
        self.runs: list[Run] = []

    def add(self, r: Run) -> Run:
        self.runs.append(r)
        return r

    def med(self) -> Run:
        return median_run(self.runs)

    def summary(self, nbytes: int | None = None) -> dict:
        m = self.med()
        d = {**m.summary(), "samples_s": samples_of(self.runs)}
        if nbytes:
            d["mb_per_s"] = round(nbytes / MB / m.wall, 1)
        rate = [r.extra["rate"] for r in self.runs if "rate" in r.extra]
        if rate:
            d["rate_median"] = round(statistics.median(rate), 1)
            d["rate_samples"] = [round(x, 1) for x in rate]
        traced = next((r.extra["fuse_trace"] for r in self.runs if r.extra.get("fuse_trace")), None)
        if traced:
            d["fuse_trace"] = traced
        return d


PREV_RUN: list[Run] = []  # the previous timed step, for the warm-step check
REPEATS: list[str] = []  # warm steps repeated after a drop_caches by another process


def timed(label: str, cmd: list[str], *, cold: bool, watch: dict | None = None, trace_conn: int | None = None,
          metrics_from: str | None = None, stdout=subprocess.DEVNULL) -> Run:
    """run_timed plus, optionally, a FUSE request trace of connection
    `trace_conn` and the agent's metrics deltas during the run. A warm step
    is repeated (up to twice) if another process dropped the page cache
    since the previous step started: it would not have been warm."""
    for attempt in range(3):
        tracing = TRACER is not None and TRACER.ok and trace_conn is not None
        m0 = metrics(metrics_from) if metrics_from else None
        r = common.run_timed(label, cmd, cold=cold, watch={k: v for k, v in (watch or {}).items() if v},
                             stdout=stdout, timeout=STEP_TIMEOUT, before=TRACER.start if tracing else None)
        if tracing:
            r.extra["fuse_trace"] = TRACER.stop(trace_conn)
        if m0 is not None:
            r.extra["agent_metrics"] = metrics_delta(m0, metrics(metrics_from))
        prev_ext = PREV_RUN[-1].external_drops_during if PREV_RUN else 0
        PREV_RUN[:] = [r]
        if cold or not (prev_ext or r.external_drops_before or r.external_drops_during):
            break
        if attempt < 2:
            log(f"{label}: another process dropped the page cache around this warm step; repeating it")
            REPEATS.append(label)
    return r


def fio_cmd(path: Path, size: int, n: int) -> list[str]:
    return ["fio", "--name=randread", f"--filename={path}", "--readonly", "--rw=randread", "--bs=4k",
            f"--size={size}", f"--number_ios={n}", f"--randseed={SEED}", "--ioengine=psync", "--iodepth=1",
            "--invalidate=0", "--output-format=json"]


def fio_result(r: Run) -> Run:
    j = json.loads(r.stdout[r.stdout.index("{"):])
    rd = j["jobs"][0]["read"]
    pct = rd.get("clat_ns", {}).get("percentile", {})
    r.extra.update({"rate": rd["iops"], "ios": rd["total_ios"], "fio_runtime_ms": rd["runtime"],
                    "clat_us_mean": round(rd["clat_ns"]["mean"] / 1000, 1),
                    "clat_us_p50": round(pct.get("50.000000", 0) / 1000, 1),
                    "clat_us_p99": round(pct.get("99.000000", 0) / 1000, 1)})
    r.stdout = ""
    return r


def sqlite_cmd(db: Path, keys: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--sqlite-lookups", str(db), keys]


def sqlite_result(r: Run, expect: int) -> Run:
    j = json.loads(r.stdout)
    if j["found"] != expect:
        raise BenchError(f"{r.label}: found {j['found']} of {expect} keys")
    r.extra.update({"rate": j["qps"], "queries": j["queries"], "query_seconds": j["seconds"]})
    r.stdout = ""
    return r


def sqlite_lookups(db: str, keys_file: str) -> int:
    """The SQLite client: one process, one connection, random point queries."""
    keys = Path(keys_file).read_text().split()
    t0 = time.perf_counter()
    con = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    cur = con.cursor()
    found = nbytes = 0
    for k in keys:
        row = cur.execute("SELECT id, city, note, price, payload FROM items WHERE key = ?", (k,)).fetchone()
        if row:
            found += 1
            nbytes += len(row[4])
    dt = time.perf_counter() - t0
    con.close()
    print(json.dumps({"queries": len(keys), "found": found, "payload_bytes": nbytes, "seconds": round(dt, 4),
                      "qps": round(len(keys) / dt, 1), "sqlite_version": sqlite3.sqlite_version}))
    return 0


def find_cmd(d: Path) -> list[str]:
    return ["sh", "-c", 'find "$1" | wc -l', "sh", str(d)]


def curl_get(url: str) -> list[str]:
    return ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url]


def curl_propfind(url: str, out: Path) -> list[str]:
    return ["curl", "-sS", "-o", str(out), "-w", "%{http_code} %{size_download}", "-X", "PROPFIND",
            "-H", "Depth: 1", url]


def check_http(r: Run, code: str, size: int | None = None) -> Run:
    parts = r.stdout.split()
    if not parts or parts[0] != code or (size is not None and int(parts[1]) != size):
        raise BenchError(f"{r.label}: expected HTTP {code}{f' and {size} bytes' if size else ''}, got {r.stdout!r}")
    r.extra["http_bytes"] = int(parts[1])
    return r


def count_propfind(r: Run, out: Path, expect: int) -> Run:
    n = len(re.findall(r"<(?:\w+:)?response[\s>]", out.read_text(errors="replace")))
    r.extra["propfind_entries"] = n
    if n != expect:
        raise BenchError(f"{r.label}: {n} entries in the PROPFIND answer, expected {expect}")
    return r


def check_find(r: Run, expect: int) -> Run:
    n = int(r.stdout.strip() or 0)
    if n != expect:
        raise BenchError(f"{r.label}: find printed {n} lines, expected {expect}")
    r.stdout = ""
    return r


def verify_same(label: str, cmd: list[str], ref: Path) -> None:
    """Streams `cmd`'s stdout through cmp against `ref` (untimed)."""
    p1 = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    r = subprocess.run(["cmp", "-", str(ref)], stdin=p1.stdout, capture_output=True, text=True)
    p1.stdout.close()
    p1.wait()
    if r.returncode != 0 or p1.returncode != 0:
        raise BenchError(f"verify {label}: differs from {ref}: {r.stdout.strip()} {r.stderr.strip()}")
    log(f"verify {label}: identical to {ref.name}")


# --------------------------------------------------------------------------
# Profiles (diagnostic, untimed): `perf record -a` around one command.
# --------------------------------------------------------------------------

def perf_profile(name: str, cmd: list[str], work: Path, cold: bool, servers: dict) -> dict:
    """System-wide `perf record` while `cmd` runs; the report keeps only the
    client and `servers` (name -> pid), so other work on the machine is left out."""
    if not shutil.which("perf"):
        return {"error": "perf not installed"}
    if cold:
        common.drop_caches()
    data = work / f"perf-{name}.data"
    pidf = work / f"perf-{name}.pid"
    wrapped = ["sh", "-c", 'echo $$ > "$0"; exec "$@"', str(pidf), *cmd]
    t0 = time.perf_counter()
    r = subprocess.run(["perf", "record", "-a", "-F", "999", "-o", str(data), "--", *wrapped],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        return {"error": r.stderr.strip()[-500:]}
    pids = {"client": int(pidf.read_text().strip()), **{k: v for k, v in servers.items() if v}}
    out = {"cmd": " ".join(cmd), "cold": cold, "wall_s": round(wall, 2), "pids": pids}
    pid_list = ",".join(str(p) for p in pids.values())
    rep = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children", "--no-inline",
                          "--pid", pid_list, "--sort", "comm,dso,sym", "--percent-limit", "0.7"],
                         capture_output=True, text=True, timeout=300)
    out["by_symbol"] = [" ".join(ln.split()) for ln in rep.stdout.splitlines()
                        if ln.strip() and not ln.startswith("#")][:40]
    # CPU seconds per process: samples of each pid (all its threads), at 999 Hz.
    script = subprocess.run(["perf", "script", "-i", str(data), "-F", "pid"], capture_output=True, text=True, timeout=300)
    counts: dict[int, int] = {}
    for ln in script.stdout.split():
        if ln.isdigit():
            counts[int(ln)] = counts.get(int(ln), 0) + 1
    total = sum(counts.values())
    out["samples_all_processes"] = total
    out["cpu_s_by_process"] = {k: round(counts.get(p, 0) / 999, 2) for k, p in pids.items()}
    out["cpu_s_other_processes"] = round((total - sum(counts.get(p, 0) for p in pids.values())) / 999, 2)
    data.unlink(missing_ok=True)
    pidf.unlink(missing_ok=True)
    log(f"profile {name}: {wall:.2f} s, top: {out['by_symbol'][:3]}")
    return out


# --------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------

def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if a and b else None


def bench() -> dict:
    global BIN, TRACER
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    BIN = common.private_binary(BENCH_DIR)
    if common.QUIET_STATE["budget_s"] == 0:
        common.QUIET_STATE["budget_s"] = common.env_float("BENCH_QUIET_BUDGET", 600.0)
    facts = common.machine_facts(BIN, {
        "rclone": tool_version(["rclone", "version"]),
        "fio": tool_version(["fio", "--version"]),
        "sqlite3": sqlite3.sqlite_version,
        "nfs-ganesha": tool_version(["dpkg-query", "-W", "-f", "${Version}", "nfs-ganesha"]),
        "libnfs-utils": tool_version(["dpkg-query", "-W", "-f", "${Version}", "libnfs-utils"]),
        "wsgidav": tool_version(["wsgidav", "--version"]),
        "cheroot": tool_version([sys.executable, "-c", "import cheroot; print(cheroot.__version__)"]),
        "fuse3": tool_version(["fusermount3", "--version"]),
        "curl": tool_version(["curl", "--version"]),
    })
    tree, ds = ensure_dataset()
    work = BENCH_DIR / "mounts-work"
    for m in ("mnt-afs", "mnt-rclone"):
        if mount_entry(work / m):
            unmount(str(work / m))
    rm(work)
    work.mkdir(parents=True)
    big, db, meta_dir = tree / "big" / "random.bin", tree / "db" / "catalog.sqlite", tree / "meta"
    big_rel, db_rel = "big/random.bin", "db/catalog.sqlite"
    nbig = ds["big_bytes"]
    meta_lines = 1 + ds["meta_dirs"] + ds["meta_files"]
    keys = ds["keys_file"]
    nkeys = ds["params"]["lookup_keys"]
    mnt, rmnt, rcache = work / "mnt-afs", work / "mnt-rclone", work / "rclone-cache"
    res: dict = {"machine": facts, "dataset": {**ds, "path": str(tree)}, "settings": {
        "cache_mib": CACHE_MIB, "random_reads": RANDOM_READS, "sql_queries": nkeys, "trace": TRACE, "profile": PROFILE}}
    common.external_drops_since_mark()
    TRACER = FuseTrace()
    res["settings"]["fuse_trace"] = "on (first run of each FUSE step)" if TRACER.ok else f"off: {TRACER.reason}"

    hub = Hub(BIN, BENCH_DIR / "mounts-hub-data", work / "hub.log", None)
    hub.fresh()
    hub_item = RES.add({"kind": "proc", "pid": hub.proc.pid, "token": "aetherfs", "name": "hub"})
    r = common.run_timed("push the dataset", [str(BIN), "push", "--json", str(tree), REF], env={"AETHERFS_HUB": hub.url},
                         stdout=subprocess.PIPE, timeout=STEP_TIMEOUT, quiet_wait=False)
    res["push"] = {**r.summary(), "report": r.json()}

    def afs_watch(m: FuseMount) -> dict:
        return {"mount": m.pid, "hub": hub.pid}

    # 1. Sequential read of the 1 GiB file ------------------------------------
    log("== 1. sequential read")
    S = {k: Step(k) for k in ("native_cold", "native_warm", "afs_first", "afs_cached_cold", "afs_warm", "afs_first_ra0",
                              "rclone_first", "rclone_filled_cold", "rclone_warm")}
    afs = None
    for i in range(RUNS):
        tag = f"[{i + 1}/{RUNS}]"
        tr = i == 0
        afs = afs_mount(mnt, work, hub)
        f = mnt / big_rel
        S["afs_first"].add(timed(f"seq: aetherfs mount, first read (chunks from the hub) {tag}", dd(f), cold=True,
                                 watch=afs_watch(afs), trace_conn=afs.conn if tr else None, metrics_from=afs.admin))
        S["afs_cached_cold"].add(timed(f"seq: aetherfs mount, chunks cached, cold page cache {tag}", dd(f), cold=True,
                                       watch=afs_watch(afs), trace_conn=afs.conn if tr else None, metrics_from=afs.admin))
        S["afs_warm"].add(timed(f"seq: aetherfs mount, warm page cache {tag}", dd(f), cold=False,
                                watch=afs_watch(afs), trace_conn=afs.conn if tr else None, metrics_from=afs.admin))
        if i == 0 and VERIFY:
            verify_same("aetherfs mount", ["cat", str(f)], big)
        afs.stop()
        # The same first read with the agent's own read-ahead off (diagnostic: what the read-ahead costs).
        afs = afs_mount(mnt, work, hub, readahead_mib=0)
        S["afs_first_ra0"].add(timed(f"seq: aetherfs mount --readahead-mib 0, first read {tag}", dd(f), cold=True,
                                     watch=afs_watch(afs), trace_conn=afs.conn if tr else None, metrics_from=afs.admin))
        if i < RUNS - 1:
            afs.stop()
        S["native_cold"].add(timed(f"seq: native, cold page cache {tag}", dd(big), cold=True))
        S["native_warm"].add(timed(f"seq: native, warm page cache {tag}", dd(big), cold=False))
        rc = rclone_mount(tree, rmnt, rcache, work)
        rf = rmnt / big_rel
        S["rclone_first"].add(timed(f"seq: rclone mount, first read (fills its VFS cache) {tag}", dd(rf), cold=True,
                                    watch={"rclone": rc.pid}, trace_conn=rc.conn if tr else None))
        S["rclone_filled_cold"].add(timed(f"seq: rclone mount, VFS cache filled, cold page cache {tag}", dd(rf),
                                          cold=True, watch={"rclone": rc.pid}, trace_conn=rc.conn if tr else None))
        S["rclone_warm"].add(timed(f"seq: rclone mount, warm page cache {tag}", dd(rf), cold=False,
                                   watch={"rclone": rc.pid}, trace_conn=rc.conn if tr else None))
        if i == 0 and VERIFY:
            verify_same("rclone mount", ["cat", str(rf)], big)
        rc.stop()
        rm(rcache)
    seq = {k: s.summary(nbig) for k, s in S.items()}
    mbs = {k: v["mb_per_s"] for k, v in seq.items()}
    seq["ratios"] = {
        "afs_first_vs_native_cold": ratio(mbs["afs_first"], mbs["native_cold"]),
        "afs_first_vs_rclone_first": ratio(mbs["afs_first"], mbs["rclone_first"]),
        "afs_first_ra0_vs_native_cold": ratio(mbs["afs_first_ra0"], mbs["native_cold"]),
        "afs_first_ra0_vs_rclone_first": ratio(mbs["afs_first_ra0"], mbs["rclone_first"]),
        "afs_cached_cold_vs_native_cold": ratio(mbs["afs_cached_cold"], mbs["native_cold"]),
        "afs_cached_cold_vs_rclone_filled_cold": ratio(mbs["afs_cached_cold"], mbs["rclone_filled_cold"]),
        "afs_warm_vs_native_warm": ratio(mbs["afs_warm"], mbs["native_warm"]),
        "afs_warm_vs_rclone_warm": ratio(mbs["afs_warm"], mbs["rclone_warm"]),
    }
    res["seq_read"] = seq

    # 2. Random 4 KiB reads (fio) ---------------------------------------------
    log("== 2. random 4 KiB reads")
    S = {k: Step(k) for k in ("native_cold", "native_warm", "afs_first", "afs_cached_cold", "afs_warm")}
    for i in range(RUNS):
        tag = f"[{i + 1}/{RUNS}]"
        tr = i == 0
        afs.stop()
        afs = afs_mount(mnt, work, hub)
        f = mnt / big_rel
        S["afs_first"].add(fio_result(timed(f"rand: aetherfs mount, fresh mount (chunks from the hub) {tag}",
                                            fio_cmd(f, nbig, RANDOM_READS), cold=True, watch=afs_watch(afs),
                                            trace_conn=afs.conn if tr else None, metrics_from=afs.admin,
                                            stdout=subprocess.PIPE)))
        subprocess.run(dd(f), check=True, capture_output=True)  # all chunks into the agent's cache (untimed)
        S["afs_cached_cold"].add(fio_result(timed(f"rand: aetherfs mount, chunks cached, cold page cache {tag}",
                                                  fio_cmd(f, nbig, RANDOM_READS), cold=True, watch=afs_watch(afs),
                                                  trace_conn=afs.conn if tr else None, metrics_from=afs.admin,
                                                  stdout=subprocess.PIPE)))
        S["afs_warm"].add(fio_result(timed(f"rand: aetherfs mount, warm page cache {tag}",
                                           fio_cmd(f, nbig, RANDOM_READS), cold=False, watch=afs_watch(afs),
                                           trace_conn=afs.conn if tr else None, metrics_from=afs.admin,
                                           stdout=subprocess.PIPE)))
        S["native_cold"].add(fio_result(timed(f"rand: native, cold page cache {tag}", fio_cmd(big, nbig, RANDOM_READS),
                                              cold=True, stdout=subprocess.PIPE)))
        S["native_warm"].add(fio_result(timed(f"rand: native, warm page cache {tag}", fio_cmd(big, nbig, RANDOM_READS),
                                              cold=False, stdout=subprocess.PIPE)))
    rnd = {k: s.summary() for k, s in S.items()}
    iops = {k: v["rate_median"] for k, v in rnd.items()}
    rnd["ratios"] = {
        "afs_first_vs_native_cold": ratio(iops["afs_first"], iops["native_cold"]),
        "afs_cached_cold_vs_native_cold": ratio(iops["afs_cached_cold"], iops["native_cold"]),
        "afs_warm_vs_native_warm": ratio(iops["afs_warm"], iops["native_warm"]),
    }
    res["random_read"] = rnd

    # 3. SQLite point queries ------------------------------------------------
    log("== 3. SQLite point queries")
    S = {k: Step(k) for k in ("native_cold", "native_warm", "afs_first", "afs_cached_cold", "afs_warm")}
    for i in range(RUNS):
        tag = f"[{i + 1}/{RUNS}]"
        tr = i == 0
        afs.stop()
        afs = afs_mount(mnt, work, hub)
        f = mnt / db_rel
        S["afs_first"].add(sqlite_result(timed(f"sqlite: aetherfs mount, fresh mount (chunks from the hub) {tag}",
                                               sqlite_cmd(f, keys), cold=True, watch=afs_watch(afs),
                                               trace_conn=afs.conn if tr else None, metrics_from=afs.admin,
                                               stdout=subprocess.PIPE), nkeys))
        subprocess.run(dd(f), check=True, capture_output=True)  # the whole db into the agent's cache (untimed)
        S["afs_cached_cold"].add(sqlite_result(timed(f"sqlite: aetherfs mount, chunks cached, cold page cache {tag}",
                                                     sqlite_cmd(f, keys), cold=True, watch=afs_watch(afs),
                                                     trace_conn=afs.conn if tr else None, metrics_from=afs.admin,
                                                     stdout=subprocess.PIPE), nkeys))
        S["afs_warm"].add(sqlite_result(timed(f"sqlite: aetherfs mount, warm page cache {tag}", sqlite_cmd(f, keys),
                                              cold=False, watch=afs_watch(afs), trace_conn=afs.conn if tr else None,
                                              metrics_from=afs.admin, stdout=subprocess.PIPE), nkeys))
        S["native_cold"].add(sqlite_result(timed(f"sqlite: native, cold page cache {tag}", sqlite_cmd(db, keys),
                                                 cold=True, stdout=subprocess.PIPE), nkeys))
        S["native_warm"].add(sqlite_result(timed(f"sqlite: native, warm page cache {tag}", sqlite_cmd(db, keys),
                                                 cold=False, stdout=subprocess.PIPE), nkeys))
    sq = {k: s.summary() for k, s in S.items()}
    qps = {k: v["rate_median"] for k, v in sq.items()}
    sq["ratios"] = {
        "afs_first_vs_native_cold": ratio(qps["afs_first"], qps["native_cold"]),
        "afs_cached_cold_vs_native_cold": ratio(qps["afs_cached_cold"], qps["native_cold"]),
        "afs_warm_vs_native_warm": ratio(qps["afs_warm"], qps["native_warm"]),
    }
    res["sqlite"] = sq

    # 4. Metadata: find and ls -lR over 100 x 1,000 files ------------------
    log("== 4. metadata")
    names = [f"{tool}_{op}_{state}" for tool in ("native", "afs", "rclone") for op in ("find", "ls") for state in ("cold", "warm")]
    S = {k: Step(k) for k in names}
    for i in range(RUNS):
        tag = f"[{i + 1}/{RUNS}]"
        tr = i == 0
        afs.stop()
        afs = afs_mount(mnt, work, hub)
        rc = rclone_mount(tree, rmnt, rcache, work)
        for tool, root, w, conn in (("native", meta_dir, {}, None),
                                    ("afs", mnt / "meta", afs_watch(afs), afs.conn),
                                    ("rclone", rmnt / "meta", {"rclone": rc.pid}, rc.conn)):
            for state in ("cold", "warm"):
                S[f"{tool}_find_{state}"].add(check_find(timed(
                    f"meta: {tool} find | wc -l, {state} {tag}", find_cmd(root), cold=state == "cold", watch=w,
                    trace_conn=conn if tr else None, stdout=subprocess.PIPE), meta_lines))
            for state in ("cold", "warm"):
                S[f"{tool}_ls_{state}"].add(timed(f"meta: {tool} ls -lR, {state} {tag}", ["ls", "-lR", str(root)],
                                                  cold=state == "cold", watch=w, trace_conn=conn if tr else None))
        rc.stop()
        rm(rcache)
    md = {k: s.summary() for k, s in S.items()}
    t = {k: v["seconds"] for k, v in md.items()}
    md["ratios"] = {f"afs_{op}_{state}_vs_{peer}": ratio(t[f"{peer}_{op}_{state}"], t[f"afs_{op}_{state}"])
                    for op in ("find", "ls") for state in ("cold", "warm") for peer in ("native", "rclone")}
    md["lines"] = meta_lines
    res["metadata"] = md

    # 5. NFSv3: nfs-cat of the 1 GiB file --------------------------------------
    log("== 5. NFSv3")
    afs.stop()
    afs = None
    g = Ganesha(work, tree)
    g.start()
    S = {k: Step(k) for k in ("afs_first", "afs_warm", "afs_first_ra0", "ganesha_cold", "ganesha_warm")}
    for i in range(RUNS):
        tag = f"[{i + 1}/{RUNS}]"
        sv = AfsServe(work, hub, nfs=True, webdav=False)
        sv.start()
        u = sv.nfs_url(big_rel)
        w = {"serve": sv.pid, "hub": hub.pid}
        S["afs_first"].add(timed(f"nfs: aetherfs serve, first read (chunks from the hub) {tag}", ["nfs-cat", u],
                                 cold=True, watch=w, metrics_from=sv.admin))
        S["afs_warm"].add(timed(f"nfs: aetherfs serve, chunks cached {tag}", ["nfs-cat", u], cold=False, watch=w,
                                metrics_from=sv.admin))
        if i == 0 and VERIFY:
            verify_same("aetherfs serve --nfs", ["nfs-cat", u], big)
        sv.stop()
        sv = AfsServe(work, hub, nfs=True, webdav=False, readahead_mib=0)
        sv.start()
        S["afs_first_ra0"].add(timed(f"nfs: aetherfs serve --readahead-mib 0, first read {tag}",
                                     ["nfs-cat", sv.nfs_url(big_rel)], cold=True, watch={"serve": sv.pid, "hub": hub.pid},
                                     metrics_from=sv.admin))
        sv.stop()
        gu = g.url(big_rel)
        S["ganesha_cold"].add(timed(f"nfs: ganesha, cold page cache {tag}", g.netns("nfs-cat", gu), cold=True,
                                    watch={"ganesha": g.pid}))
        S["ganesha_warm"].add(timed(f"nfs: ganesha, warm page cache {tag}", g.netns("nfs-cat", gu), cold=False,
                                    watch={"ganesha": g.pid}))
        if i == 0 and VERIFY:
            verify_same("ganesha", g.netns("nfs-cat", gu), big)
    nfs = {k: s.summary(nbig) for k, s in S.items()}
    nfs["ratios"] = {"afs_first_vs_ganesha_cold": ratio(nfs["afs_first"]["mb_per_s"], nfs["ganesha_cold"]["mb_per_s"]),
                     "afs_first_ra0_vs_ganesha_cold": ratio(nfs["afs_first_ra0"]["mb_per_s"],
                                                            nfs["ganesha_cold"]["mb_per_s"]),
                     "afs_warm_vs_ganesha_warm": ratio(nfs["afs_warm"]["mb_per_s"], nfs["ganesha_warm"]["mb_per_s"])}
    res["nfs"] = nfs

    # 6. WebDAV: GET of the 1 GiB file, PROPFIND Depth 1 of a 10,000-entry dir -
    log("== 6. WebDAV")
    wd, rd = Wsgidav(work, tree), RcloneDav(work, tree)
    wd.start()
    rd.start()
    S = {f"{tool}_{op}_{state}": Step("") for tool in ("afs", "wsgidav", "rclone") for op in ("get", "propfind")
         for state in ("cold", "warm")}
    pf_out = work / "propfind.xml"
    for i in range(RUNS):
        tag = f"[{i + 1}/{RUNS}]"
        sv = AfsServe(work, hub, nfs=False, webdav=True)
        sv.start()
        for tool, url, w, adm in (("afs", sv.dav_url, {"serve": sv.pid, "hub": hub.pid}, sv.admin),
                                  ("wsgidav", wd.url, {"wsgidav": wd.pid}, None),
                                  ("rclone", rd.url, {"rclone": rd.pid}, None)):
            for state in ("cold", "warm"):
                S[f"{tool}_get_{state}"].add(check_http(timed(
                    f"dav: {tool} GET, {state}{' (chunks from the hub)' if tool == 'afs' and state == 'cold' else ''} {tag}",
                    curl_get(url(big_rel)), cold=state == "cold", watch=w, metrics_from=adm, stdout=subprocess.PIPE),
                    "200", nbig))
            for state in ("cold", "warm"):
                S[f"{tool}_propfind_{state}"].add(count_propfind(check_http(timed(
                    f"dav: {tool} PROPFIND Depth 1 ({ds['flat_files']} entries), {state} {tag}",
                    curl_propfind(url("flat/"), pf_out), cold=state == "cold", watch=w, stdout=subprocess.PIPE),
                    "207"), pf_out, ds["flat_files"] + 1))
            if i == 0 and VERIFY:
                verify_same(f"{tool} GET", ["curl", "-sS", url(big_rel)], big)
        sv.stop()
    wd.stop()
    rd.stop()
    dav = {k: s.summary(nbig if "_get_" in k else None) for k, s in S.items()}
    dav["ratios"] = {}
    for peer in ("wsgidav", "rclone"):
        for state in ("cold", "warm"):
            dav["ratios"][f"afs_get_{state}_vs_{peer}"] = ratio(dav[f"afs_get_{state}"]["mb_per_s"],
                                                                dav[f"{peer}_get_{state}"]["mb_per_s"])
            dav["ratios"][f"afs_propfind_{state}_vs_{peer}"] = ratio(dav[f"{peer}_propfind_{state}"]["seconds"],
                                                                     dav[f"afs_propfind_{state}"]["seconds"])
    res["webdav"] = dav

    # Profiles (untimed diagnostics) -------------------------------------------
    if PROFILE:
        log("== profiles (perf record -a)")
        prof = {}
        afs = afs_mount(mnt, work, hub)
        w = afs_watch(afs)
        prof["fuse_seq_first_read"] = perf_profile("fuse-first", dd(mnt / big_rel), work, True, w)
        prof["fuse_seq_cached_cold_page_cache"] = perf_profile("fuse-cached", dd(mnt / big_rel), work, True, w)
        prof["fuse_rand_cached_cold_page_cache"] = perf_profile("fuse-rand", fio_cmd(mnt / big_rel, nbig, RANDOM_READS),
                                                                work, True, w)
        prof["fuse_ls_lR_cold"] = perf_profile("fuse-ls", ["ls", "-lR", str(mnt / "meta")], work, True, w)
        afs.stop()
        afs = None
        sv = AfsServe(work, hub, nfs=True, webdav=True)
        sv.start()
        subprocess.run(["nfs-cat", sv.nfs_url(big_rel)], stdout=subprocess.DEVNULL, check=True)
        w = {"serve": sv.pid, "hub": hub.pid}
        prof["nfs_afs_warm"] = perf_profile("nfs-afs", ["nfs-cat", sv.nfs_url(big_rel)], work, False, w)
        prof["nfs_ganesha_warm"] = perf_profile("nfs-ganesha", g.netns("nfs-cat", g.url(big_rel)), work, False,
                                                {"ganesha": g.pid})
        prof["webdav_afs_get_warm"] = perf_profile("dav-afs", curl_get(sv.dav_url(big_rel)), work, False, w)
        sv.stop()
        res["profiles"] = prof
    g.stop()
    if afs:
        afs.stop()
    hub.stop()
    RES.drop(hub_item)

    res["page_cache"] = {**page_cache_summary(), "warm_steps_repeated": len(REPEATS), "repeated": REPEATS}
    res["machine"]["disk_free_bytes_at_end"] = shutil.disk_usage(BENCH_DIR).free
    res["machine"]["loadavg_at_end"] = os.getloadavg()
    res["quiet_wait"] = quiet_summary()
    return res


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def f3(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def cpu(x: dict, *keys: str) -> str:
    parts = [f"{x['cpu_user_s'] + x['cpu_sys_s']:.2f}"]
    for k in keys:
        v = x.get(f"{k}_cpu_s") if k != "hub" else x.get("hub_cpu_s")
        if v is not None:
            parts.append(f"{k} {v:.2f}")
    return " / ".join(parts)


def trace_s(x: dict) -> str:
    t = x.get("fuse_trace")
    if not t:
        return ""
    if not t.get("ops"):
        return "none"
    ops = t["ops"]
    parts = []
    rd = t.get("read")
    if rd:
        parts.append(f"{rd['count']:,} READs, mean {rd['mean_bytes'] / 1024:.0f} KiB, "
                     f"{ops[READ_OP]['lat_us_mean']:.0f} µs each")
    for op, o in ops.items():
        if op != READ_OP and o["count"] >= 50:
            parts.append(f"{o['count']:,} {op.removeprefix('FUSE_')} ({o['lat_us_mean']:.0f} µs)")
    return "; ".join(parts[:4])


def fetched_s(x: dict) -> str:
    m = x.get("agent_metrics") or {}
    if "fetched_bytes_total" not in m:
        return ""
    reqs = m.get("fetch_requests_total", m.get("fetch_duration_seconds_count"))
    out = f"fetched {m['fetched_bytes_total'] / MIB:,.1f} MiB" + (f" in {reqs:,.0f} requests" if reqs is not None else "")
    hits = m.get("cache_hits_total", m.get("cache_memory_hits_total", 0) + m.get("cache_disk_hits_total", 0))
    if m.get("cache_misses_total"):
        out += f"; {m['cache_misses_total']:,.0f} chunk misses, {hits:,.0f} hits"
    return out


def markdown(res: dict) -> str:
    m, d = res["machine"], res["dataset"]
    pc, q = res["page_cache"], res["quiet_wait"]
    v = m["versions"]
    L: list[str] = []
    L.append(f"# Mounts benchmark — {m['date']}\n")
    L.append(f"Command: `{m['command']}`\n")
    cache_note = ("dropped before every cold run (`sync; echo 3 > /proc/sys/vm/drop_caches`: page cache, dentries, inodes)"
                  if pc["cold_runs_really_cold"] else
                  f"NOT dropped ({pc['drops_succeeded']}/{pc['drops_attempted']} drops succeeded): 'cold' runs may be warm")
    cache_note += (f"; other processes dropped it {pc.get('drops_by_other_processes', 0)} time(s) during the run "
                   f"(counted from /proc/vmstat); {pc.get('warm_steps_repeated', 0)} warm step(s) hit by one were "
                   f"repeated")
    L.append(f"Machine: {m['nproc']} cores ({m['cpu']}), {m['mem_total_bytes'] / 2**30:.1f} GiB RAM, kernel {m['kernel']}, "
             f"work dir {m['bench_dir']} on {m['bench_dir_fs']}. Page cache: {cache_note}. Everything on one machine "
             f"over loopback; the hub stores on local disk (`file://`).\n")
    bsrc = m.get("binary_source")
    L.append(f"Versions: {v['aetherfs']} (workspace {m['git_commit']}"
             + (f"; binary {bsrc}" + (f" built from commit {m['binary_commit']}" if m.get('binary_commit') else "")
                if bsrc and bsrc != "target/release/aetherfs" else "")
             + f", sha256 {v['aetherfs_sha256']}), {v['rclone']}, {v['fio']}, nfs-ganesha {v['nfs-ganesha']}, "
             f"libnfs-utils {v['libnfs-utils']}, wsgidav {v['wsgidav']} (cheroot {v['cheroot']}), "
             f"SQLite {v['sqlite3']}, {v['fuse3']}.\n")
    L.append(f"Dataset (scale {m['scale']:g}, seed {m['seed']}), pushed once as `{REF}` "
             f"({res['push']['seconds']:.1f} s): a {d['big_bytes'] / MIB:,.0f} MiB random file, a "
             f"{d['db_bytes'] / MIB:,.1f} MiB SQLite db ({d['params']['sqlite_rows']:,} rows, index on a random key), "
             f"{d['meta_files']:,} small files in {d['meta_dirs']} directories, one directory of {d['flat_files']:,} "
             f"files; {d['files']:,} files in all. The agent runs with `--cache-mib {res['settings']['cache_mib']}`. "
             f"Medians of {m['runs_per_step']} run(s); MB = 10^6 bytes; ratios are aetherfs speed / peer speed "
             f"(>1 = aetherfs faster).\n")
    L.append(f"Other load: before each timed step the script waited (up to {q['max_wait_s']:.0f} s, "
             f"{q.get('budget_s') or 'no'} s budget in all) for the machine to be idle (< {q['idle_below_cores']} cores "
             f"busy for 2 × {q.get('interval_s', 1)} s); it waited {q['total_waited_s']} s in total and measured "
             f"{q['steps_measured_while_busy']} of {q['steps']} steps while still busy. FUSE request statistics come "
             f"from the kernel's `fuse:fuse_request_send/end` tracepoints ({res['settings']['fuse_trace']}).\n")

    s = res["seq_read"]
    L.append(f"## 1. Sequential read of the {d['big_bytes'] / MIB:,.0f} MiB file (`dd bs=1M`)\n")
    L.append("| | MB/s | time (s) | runs (s) | CPU s: dd / servers | other (cores) | FUSE requests (1st run) | agent |")
    L.append("|---|---:|---:|---|---|---:|---|---|")
    rows = [("native, cold page cache", "native_cold", ()), ("native, warm page cache", "native_warm", ()),
            ("aetherfs mount, first read (chunks from the hub)", "afs_first", ("mount", "hub")),
            ("aetherfs mount, chunks cached, cold page cache", "afs_cached_cold", ("mount", "hub")),
            ("aetherfs mount, warm page cache", "afs_warm", ("mount", "hub")),
            ("aetherfs mount --readahead-mib 0, first read (diagnostic)", "afs_first_ra0", ("mount", "hub")),
            ("rclone mount, first read (fills its VFS cache)", "rclone_first", ("rclone",)),
            ("rclone mount, VFS cache filled, cold page cache", "rclone_filled_cold", ("rclone",)),
            ("rclone mount, warm page cache", "rclone_warm", ("rclone",))]
    for name, k, ks in rows:
        x = s[k]
        L.append(f"| {name} | {f1(x['mb_per_s'])} | {f2(x['seconds'])} | {runs(x)} | {cpu(x, *ks)} | "
                 f"{x['other_load_cores']} | {trace_s(x)} | {fetched_s(x)} |")
    r = s["ratios"]
    L.append(f"\nRatios (MB/s): first read vs native cold **{f3(r['afs_first_vs_native_cold'])}**, vs rclone first read "
             f"**{f3(r['afs_first_vs_rclone_first'])}** (with `--readahead-mib 0`: **{f3(r['afs_first_ra0_vs_native_cold'])}** "
             f"and **{f3(r['afs_first_ra0_vs_rclone_first'])}**); chunks cached + cold page cache vs native cold "
             f"**{f3(r['afs_cached_cold_vs_native_cold'])}**, vs rclone (VFS cache filled, cold page cache) "
             f"**{f3(r['afs_cached_cold_vs_rclone_filled_cold'])}**; warm vs native warm **{f3(r['afs_warm_vs_native_warm'])}**, "
             f"vs rclone warm **{f3(r['afs_warm_vs_rclone_warm'])}**.\n")

    def rate_table(title: str, sec: dict, unit: str, extra_cols: bool) -> None:
        L.append(title)
        L.append(f"| | {unit} | runs ({unit}) | time (s) | CPU s: client / servers | other (cores) |"
                 + (" latency µs mean / p99 |" if extra_cols else "") + " FUSE requests (1st run) | agent |")
        L.append("|---|---:|---|---:|---|---:|" + ("---:|" if extra_cols else "") + "---|---|")
        for name, k, ks in (("native, cold page cache", "native_cold", ()), ("native, warm page cache", "native_warm", ()),
                            ("aetherfs mount, fresh mount (chunks fetched on demand)", "afs_first", ("mount", "hub")),
                            ("aetherfs mount, chunks cached, cold page cache", "afs_cached_cold", ("mount", "hub")),
                            ("aetherfs mount, warm page cache", "afs_warm", ("mount", "hub"))):
            x = sec[k]
            rr = ", ".join(f"{y:,.0f}" for y in x.get("rate_samples", []))
            lat = f" {f1(x.get('clat_us_mean'))} / {f1(x.get('clat_us_p99'))} |" if extra_cols else ""
            L.append(f"| {name} | {x['rate_median']:,.0f} | {rr} | {f2(x['seconds'])} | {cpu(x, *ks)} | "
                     f"{x['other_load_cores']} |{lat} {trace_s(x)} | {fetched_s(x)} |")
        r = sec["ratios"]
        L.append(f"\nRatios ({unit}): fresh mount vs native cold **{f3(r['afs_first_vs_native_cold'])}**; chunks cached + "
                 f"cold page cache vs native cold **{f3(r['afs_cached_cold_vs_native_cold'])}**; warm vs native warm "
                 f"**{f3(r['afs_warm_vs_native_warm'])}**.\n")

    rate_table(f"## 2. Random 4 KiB reads (fio, {res['settings']['random_reads']:,} reads at random offsets, seed "
               f"{m['seed']}, psync, iodepth 1)\n", res["random_read"], "IOPS", True)
    rate_table(f"## 3. SQLite point queries ({res['settings']['sql_queries']:,} random `SELECT ... WHERE key = ?` in one "
               f"process, `immutable=1`)\n", res["sqlite"], "queries/s", False)

    md = res["metadata"]
    L.append(f"## 4. Metadata: {d['meta_files']:,} files in {d['meta_dirs']} directories\n")
    L.append("| | find \\| wc -l, cold (s) | find, warm (s) | ls -lR, cold (s) | ls -lR, warm (s) | FUSE requests: ls -lR cold (1st run) | ls -lR warm |")
    L.append("|---|---:|---:|---:|---:|---|---|")
    for tool, name in (("native", "native"), ("afs", "aetherfs mount"), ("rclone", "rclone mount")):
        L.append(f"| {name} | {f2(md[f'{tool}_find_cold']['seconds'])} | {f2(md[f'{tool}_find_warm']['seconds'])} | "
                 f"{f2(md[f'{tool}_ls_cold']['seconds'])} | {f2(md[f'{tool}_ls_warm']['seconds'])} | "
                 f"{trace_s(md[f'{tool}_ls_cold'])} | {trace_s(md[f'{tool}_ls_warm'])} |")
    r = md["ratios"]
    L.append("\nSpeed ratios (peer time / aetherfs time): " + "; ".join(
        f"{op} {state} vs native **{f3(r[f'afs_{op}_{state}_vs_native'])}**, vs rclone **{f3(r[f'afs_{op}_{state}_vs_rclone'])}**"
        for op in ("find", "ls") for state in ("cold", "warm")) + ".\n")

    n = res["nfs"]
    L.append(f"## 5. NFSv3: `nfs-cat` of the {d['big_bytes'] / MIB:,.0f} MiB file (libnfs, 1 MiB READs, one at a time)\n")
    L.append("| | MB/s | time (s) | runs (s) | CPU s: client / servers | other (cores) | agent |")
    L.append("|---|---:|---:|---|---|---:|---|")
    for name, k, ks in (("aetherfs serve --nfs, first read (chunks from the hub)", "afs_first", ("serve", "hub")),
                        ("aetherfs serve --nfs, chunks cached", "afs_warm", ("serve", "hub")),
                        ("aetherfs serve --nfs --readahead-mib 0, first read (diagnostic)", "afs_first_ra0", ("serve", "hub")),
                        ("nfs-ganesha (VFS), cold page cache", "ganesha_cold", ("ganesha",)),
                        ("nfs-ganesha (VFS), warm page cache", "ganesha_warm", ("ganesha",))):
        x = n[k]
        L.append(f"| {name} | {f1(x['mb_per_s'])} | {f2(x['seconds'])} | {runs(x)} | {cpu(x, *ks)} | "
                 f"{x['other_load_cores']} | {fetched_s(x)} |")
    r = n["ratios"]
    L.append(f"\nRatios (MB/s): first read vs ganesha cold **{f3(r['afs_first_vs_ganesha_cold'])}** (with `--readahead-mib 0`: "
             f"**{f3(r['afs_first_ra0_vs_ganesha_cold'])}**); chunks cached vs "
             f"ganesha warm **{f3(r['afs_warm_vs_ganesha_warm'])}**.\n")

    w = res["webdav"]
    L.append(f"## 6. WebDAV: GET of the {d['big_bytes'] / MIB:,.0f} MiB file, PROPFIND Depth 1 of {d['flat_files']:,} "
             f"entries (curl)\n")
    L.append("| | GET cold MB/s | GET warm MB/s | GET CPU s (warm): curl / server | PROPFIND cold (s) | PROPFIND warm (s) | PROPFIND server CPU s (warm) |")
    L.append("|---|---:|---:|---|---:|---:|---:|")
    for tool, name, ks in (("afs", "aetherfs serve --webdav", ("serve",)), ("wsgidav", "wsgidav (cheroot)", ("wsgidav",)),
                           ("rclone", "rclone serve webdav", ("rclone",))):
        pw = w[f"{tool}_propfind_warm"]
        sk = ks[0]
        L.append(f"| {name} | {f1(w[f'{tool}_get_cold']['mb_per_s'])} | {f1(w[f'{tool}_get_warm']['mb_per_s'])} | "
                 f"{cpu(w[f'{tool}_get_warm'], *ks)} | {f3(w[f'{tool}_propfind_cold']['seconds'])} | "
                 f"{f3(pw['seconds'])} | {f2(pw.get(f'{sk}_cpu_s'))} |")
    r = w["ratios"]
    L.append("\nRatios (>1 = aetherfs faster): " + "; ".join(
        f"{what} {state} vs {peer} **{f3(r[f'afs_{what}_{state}_vs_{peer}'])}**"
        for what in ("get", "propfind") for peer in ("wsgidav", "rclone") for state in ("cold", "warm")) + ". "
        "Cold = page cache dropped (and, for aetherfs, a fresh `serve` process whose chunks come from the hub).\n")

    if res.get("profiles"):
        L.append("## Profiles (`perf record -a -F 999`, untimed diagnostic runs of the same commands)\n")
        for k, p in res["profiles"].items():
            if "error" in p:
                L.append(f"- {k}: {p['error']}")
                continue
            cpus = ", ".join(f"{n} {c:.2f}" for n, c in p["cpu_s_by_process"].items())
            top = "; ".join(p["by_symbol"][:4])
            L.append(f"- **{k}** ({p['wall_s']} s incl. perf start-up; CPU s: {cpus}; other processes "
                     f"{p['cpu_s_other_processes']:.2f}): top symbols: {top}")
        L.append("\nTop symbols for each profile are in the .json (`profiles.*.by_symbol`).\n")
    return "\n".join(L) + "\n"


def runs(x: dict) -> str:
    return ", ".join(f"{v:.2f}" for v in x.get("samples_s", []))


def main() -> int:
    if len(sys.argv) >= 2 and sys.argv[1] == "--sqlite-lookups":
        return sqlite_lookups(sys.argv[2], sys.argv[3])
    if len(sys.argv) >= 2 and sys.argv[1] == "--cleanup":
        r = Resources.load(STATE_FILE, undo)
        if r.items:
            log(f"cleanup: {len(r.items)} leftover resource(s) from {STATE_FILE}")
        r.cleanup()
        return 0

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    old = Resources.load(STATE_FILE, undo)
    if old.items:
        log(f"cleaning up {len(old.items)} resource(s) left by an earlier run")
        old.cleanup()
    try:
        res = bench()
    except (BenchError, subprocess.CalledProcessError) as e:
        log(f"FAILED: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        RES.cleanup()
    md = markdown(res)
    path = common.write_results("mounts", md, res)
    print(md)
    log(f"results: {path} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
