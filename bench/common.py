"""Shared helpers of the benchmarks (bench/push_pull.py, bench/mounts.py).

Settings from the environment (see bench/README.md), logging, the seeded data
generators, page-cache drops, waiting for an idle machine, timing a command
with its CPU and the CPU of the servers it talks to, the hub's lifecycle, the
private copy of the binary, machine facts and the results files.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILT_BIN = ROOT / "target" / "release" / "aetherfs"

MIB = 1 << 20
GIB = 1 << 30
MB = 1e6
CLK_TCK = os.sysconf("SC_CLK_TCK")


def env_float(name: str, default: float) -> float:
    v = os.environ.get(name, "")
    return float(v) if v else default


def env_int(name: str, default: int) -> int:
    v = os.environ.get(name, "")
    return int(v) if v else default


BENCH_DIR = Path(os.environ.get("BENCH_DIR") or "/tmp/aetherfs-bench").resolve()
SCALE = env_float("BENCH_SCALE", 1.0)
SEED = env_int("BENCH_SEED", 20251121)
RUNS = max(1, env_int("BENCH_RUNS", 3))
RESULTS_DIR = Path(os.environ.get("BENCH_RESULTS") or (ROOT / "bench" / "results"))
WANT_DROP = os.environ.get("BENCH_DROP_CACHES", "1") != "0"
VERIFY = os.environ.get("BENCH_VERIFY", "1") != "0"
# Before each timed step, wait up to this many seconds for the machine to be
# idle (other processes using < QUIET_CORES cores), so that a concurrent build
# does not end up in the figures; the other load seen during each step is reported.
QUIET_WAIT = env_float("BENCH_QUIET_WAIT", 180.0)
QUIET_CORES = env_float("BENCH_QUIET_CORES", 0.15)
# Idle means two sampling intervals in a row below QUIET_CORES.
QUIET_INTERVAL = env_float("BENCH_QUIET_INTERVAL", 1.0)
# Total seconds all the waits of one run may take (0 = no limit); once spent,
# steps are measured without waiting (and counted as measured while busy).
QUIET_BUDGET = env_float("BENCH_QUIET_BUDGET", 0.0)
CMDLINE = os.environ.get("BENCH_CMDLINE") or " ".join([sys.argv[0], *sys.argv[1:]])


class BenchError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def private_binary(bench_dir: Path = BENCH_DIR) -> Path:
    """Copies the aetherfs binary aside, so that a rebuild by someone else
    cannot swap it mid-run. BENCH_BIN names another binary to use instead of
    target/release/aetherfs."""
    src = Path(os.environ.get("BENCH_BIN") or BUILT_BIN)
    if not src.exists():
        raise BenchError(f"{src} is missing: run `cargo build --release -p aetherfs` (the bench scripts do)")
    (bench_dir / "bin").mkdir(parents=True, exist_ok=True)
    dst = bench_dir / "bin" / "aetherfs"
    tmp = dst.with_suffix(".tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)  # a running copy is never overwritten in place
    return dst


# --------------------------------------------------------------------------
# Dataset generation (deterministic, seeded)
# --------------------------------------------------------------------------

CITIES = ["amsterdam", "berlin", "chicago", "delhi", "lagos", "lima", "oslo", "paris",
          "quito", "seoul", "tokyo", "zurich", "nairobi", "austin", "hanoi", "porto"]


def sqlite_rows(scale: float) -> int:
    # ~1384 bytes of database per row with the schema below (measured).
    return max(1000, int(256 * MIB * scale / 1384))


def db_insert_sql(first: int, last: int) -> str:
    cities = json.dumps(CITIES)
    return f"""
WITH RECURSIVE n(i) AS (SELECT {first} UNION ALL SELECT i+1 FROM n WHERE i<{last})
INSERT INTO items(id, key, city, note, price, payload)
SELECT i,
  lower(hex(randomblob(8))),
  json_extract('{cities}', '$[' || (abs(random()) % {len(CITIES)}) || ']'),
  printf('order %d shipped in %d parcels; status %s; priority %s', i, 1 + abs(random()) % 9,
         CASE abs(random()) % 3 WHEN 0 THEN 'delivered' WHEN 1 THEN 'in transit' ELSE 'pending' END,
         CASE abs(random()) % 2 WHEN 0 THEN 'normal' ELSE 'express' END),
  round((abs(random()) % 100000) / 100.0, 2),
  randomblob(256 + abs(random()) % 1537)
FROM n;
"""


def run_sqlite(db: Path, script: str) -> None:
    r = subprocess.run(["sqlite3", "-bail", str(db)], input=script, text=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise BenchError(f"sqlite3 {db} failed: {r.stderr.strip()}")


def proc_status(pid: int) -> dict:
    """VmRSS, VmHWM (and a few more) of a process, in bytes."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "VmSize", "Threads"):
                parts = v.split()
                out[k] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    except OSError:
        pass
    return out


def clustered_update(db: Path, rows: int, version: int) -> None:
    """A clustered 1% update: a contiguous run of rows gets new payloads of the same length."""
    n = max(1, rows // 100)
    start = random.Random(SEED * 1000 + version).randrange(1, rows - n)
    run_sqlite(db, f""".testctrl prng_seed {(SEED + version) % 2_000_000_000}
PRAGMA journal_mode=OFF;
UPDATE items SET payload = randomblob(length(payload)) WHERE id BETWEEN {start} AND {start + n - 1};
""")


def gen_db(path: Path, rows: int, seed: int) -> None:
    # sqlite3's randomblob()/random() are seeded through the shell's
    # `.testctrl prng_seed`, so the file is byte-for-byte reproducible.
    path.parent.mkdir(parents=True, exist_ok=True)
    script = f""".testctrl prng_seed {seed % 2_000_000_000}
PRAGMA page_size=4096;
PRAGMA journal_mode=OFF;
PRAGMA synchronous=OFF;
CREATE TABLE items(id INTEGER PRIMARY KEY, key TEXT NOT NULL, city TEXT NOT NULL,
                   note TEXT NOT NULL, price REAL NOT NULL, payload BLOB NOT NULL);
{db_insert_sql(1, rows)}
CREATE INDEX items_key ON items(key);
"""
    run_sqlite(path, script)


def gen_random_file(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 8 * MIB)
            f.write(rng.randbytes(n))
            left -= n


def tree_size(root: Path) -> tuple[int, int]:
    files = size = 0
    for dp, _dn, fns in os.walk(root):
        for fn in fns:
            st = os.lstat(os.path.join(dp, fn))
            if not os.path.islink(os.path.join(dp, fn)):
                files += 1
                size += st.st_size
    return files, size


def store_size(root: Path) -> dict:
    """Bytes a store occupies: regular-file sizes summed, and allocated blocks (du -s -B1)."""
    files, size = tree_size(root) if root.exists() else (0, 0)
    alloc = 0
    if root.exists():
        out = subprocess.run(["du", "-s", "-B1", str(root)], capture_output=True, text=True, check=True).stdout
        alloc = int(out.split()[0])
    return {"files": files, "file_bytes": size, "du_alloc_bytes": alloc}


def rm(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


# --------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------

DROP_STATE = {"attempted": 0, "succeeded": 0}


def drop_caches() -> bool:
    """`sync; echo 3 > /proc/sys/vm/drop_caches`: page cache, dentries and inodes."""
    if not WANT_DROP:
        return False
    os.sync()
    DROP_STATE["attempted"] += 1
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        DROP_STATE["succeeded"] += 1
        return True
    except OSError:
        return False


def vm_drop_count() -> int | None:
    """The kernel's count of writes to drop_caches (/proc/vmstat drop_pagecache), by anyone."""
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                if line.startswith("drop_pagecache "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


# Page-cache drops done by *other* processes (e.g. a concurrent benchmark or
# test) make a "warm" step cold: counted here, per step and in all.
EXTERNAL_DROPS = {"vm": None, "own": 0, "total": 0}


def external_drops_since_mark() -> int:
    """Drops by other processes since the last call (the first call only marks)."""
    vm, own = vm_drop_count(), DROP_STATE["succeeded"]
    if vm is None:
        return 0
    n = 0 if EXTERNAL_DROPS["vm"] is None else max(0, (vm - EXTERNAL_DROPS["vm"]) - (own - EXTERNAL_DROPS["own"]))
    EXTERNAL_DROPS.update(vm=vm, own=own)
    EXTERNAL_DROPS["total"] += n
    return n


def page_cache_summary() -> dict:
    return {"requested": WANT_DROP, "drops_attempted": DROP_STATE["attempted"],
            "drops_succeeded": DROP_STATE["succeeded"],
            "drops_by_other_processes": EXTERNAL_DROPS["total"],
            "cold_runs_really_cold": DROP_STATE["attempted"] > 0 and DROP_STATE["attempted"] == DROP_STATE["succeeded"]}


def proc_cpu(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


def proc_io(pid: int) -> dict | None:
    try:
        with open(f"/proc/{pid}/io") as f:
            return {k: int(v) for k, v in (line.split(":") for line in f)}
    except (OSError, ValueError):
        return None


def sys_cpu() -> list[int]:
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


class Sampler(threading.Thread):
    """Samples a process's CPU and I/O counters (and the hub's CPU) every 0.1 s."""

    def __init__(self, pid: int, hub_pid: int | None):
        super().__init__(daemon=True)
        self.pid, self.hub_pid = pid, hub_pid
        self.samples: list[dict] = []
        self.stop_evt = threading.Event()
        self.t0 = time.perf_counter()

    def run(self) -> None:
        while not self.stop_evt.is_set():
            cpu, io = proc_cpu(self.pid), proc_io(self.pid)
            if cpu is not None and io is not None:
                self.samples.append({"t": time.perf_counter() - self.t0, "cpu": cpu,
                                     "wchar": io.get("wchar", 0), "rchar": io.get("rchar", 0),
                                     "read_bytes": io.get("read_bytes", 0),
                                     "hub_cpu": proc_cpu(self.hub_pid) if self.hub_pid else None})
            self.stop_evt.wait(0.1)


class Run:
    def __init__(self, label: str, wall: float, user: float, sys_: float, stdout: str, stderr: str,
                 samples: list[dict], hub_cpu: float | None, sys_busy: float, sys_iowait: float,
                 watch_cpu: dict | None = None):
        self.label, self.wall, self.user, self.sys = label, wall, user, sys_
        self.stdout, self.stderr, self.samples = stdout, stderr, samples
        self.hub_cpu, self.sys_busy, self.sys_iowait = hub_cpu, sys_busy, sys_iowait
        self.watch_cpu = watch_cpu or {}  # name -> CPU seconds of a watched server process during the run
        self.cold = False
        self.other_cores = 0.0
        self.external_drops_before = 0  # drop_caches by other processes since the previous step ended
        self.external_drops_during = 0
        self.extra: dict = {}

    def json(self) -> dict | list | None:
        return parse_json_output(self.stdout)

    def summary(self) -> dict:
        d = {"seconds": round(self.wall, 3), "cpu_user_s": round(self.user, 2),
             "cpu_sys_s": round(self.sys, 2),
             "cpu_cores_avg": round((self.user + self.sys) / self.wall, 2) if self.wall else None,
             "hub_cpu_s": round(self.hub_cpu, 2) if self.hub_cpu is not None else None,
             "system_busy_pct": round(self.sys_busy, 1), "system_iowait_pct": round(self.sys_iowait, 1),
             "other_load_cores": round(self.other_cores, 2),
             "cold_cache": self.cold}
        if self.external_drops_before or self.external_drops_during:
            d["external_drops"] = {"before": self.external_drops_before, "during": self.external_drops_during}
        for k, v in self.watch_cpu.items():
            if k != "hub":
                d[f"{k}_cpu_s"] = round(v, 2) if v is not None else None
        d.update(self.extra)
        return d


def parse_json_output(text: str):
    text = text.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    last = None
    for line in text.splitlines():  # JSON lines (restic): keep the last object
        line = line.strip()
        if line.startswith("{"):
            try:
                last = json.loads(line)
            except json.JSONDecodeError:
                continue
    return last


QUIET_STATE = {"waits": 0, "waited_s": 0.0, "gave_up": 0, "budget_s": QUIET_BUDGET}


def busy_cores(interval: float) -> float:
    a = sys_cpu()
    time.sleep(interval)
    b = sys_cpu()
    d = [y - x for x, y in zip(a, b)]
    idle = d[3] + (d[4] if len(d) > 4 else 0)
    return (sum(d) - idle) / CLK_TCK / interval


def wait_quiet() -> None:
    """Waits until the machine is idle apart from us (idle servers use ~0)."""
    if QUIET_WAIT <= 0:
        return
    budget = QUIET_STATE["budget_s"]
    limit = QUIET_WAIT
    if budget > 0:
        limit = min(limit, max(0.0, budget - QUIET_STATE["waited_s"]))
    t0 = time.monotonic()
    warned, quiet = False, 0
    while True:
        b = busy_cores(QUIET_INTERVAL)
        quiet = quiet + 1 if b < QUIET_CORES else 0
        if quiet >= 2:  # idle twice in a row: not just a gap between two compiler jobs
            break
        if time.monotonic() - t0 > limit:
            QUIET_STATE["gave_up"] += 1
            log(f"machine still busy ({b:.2f} cores) after {time.monotonic() - t0:.0f} s; measuring anyway")
            break
        if not warned and b >= QUIET_CORES:
            log(f"waiting for the machine to go idle ({b:.2f} cores busy by other processes)")
            warned = True
    waited = time.monotonic() - t0
    QUIET_STATE["waits"] += 1
    QUIET_STATE["waited_s"] += waited


def quiet_summary() -> dict:
    return {"max_wait_s": QUIET_WAIT, "idle_below_cores": QUIET_CORES, "interval_s": QUIET_INTERVAL,
            "budget_s": QUIET_STATE["budget_s"] or None,
            "steps": QUIET_STATE["waits"], "total_waited_s": round(QUIET_STATE["waited_s"], 1),
            "steps_measured_while_busy": QUIET_STATE["gave_up"]}


def run_timed(label: str, cmd: list[str], *, env: dict | None = None, cold: bool = False,
              cwd: Path | None = None, hub_pid: int | None = None, watch: dict | None = None,
              stdout=subprocess.PIPE, timeout: float | None = None, quiet_wait: bool = True,
              before=None) -> Run:
    """Runs `cmd` to completion and times it (wall clock, process start to exit).

    cold: drop the page cache first. hub_pid: a hub whose CPU is sampled (push
    phases). watch: name -> pid of server processes whose CPU during the run
    is reported. stdout: subprocess.PIPE (kept in Run.stdout) or DEVNULL.
    before: a callable run after the cache drop, just before the clock starts.
    """
    if quiet_wait:
        wait_quiet()
    dropped = drop_caches() if cold else False
    ext_before = external_drops_since_mark()
    if before:
        before()
    watch = dict(watch or {})
    if hub_pid and "hub" not in watch:
        watch["hub"] = hub_pid
    w0 = {k: proc_cpu(p) for k, p in watch.items()}
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    s0 = sys_cpu()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, **(env or {})}, cwd=cwd, stdin=subprocess.DEVNULL)
    sampler = Sampler(p.pid, hub_pid)
    sampler.start()
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        sampler.stop_evt.set()
        raise BenchError(f"{label}: `{' '.join(cmd)}` did not finish within {timeout} s")
    wall = time.perf_counter() - t0
    sampler.stop_evt.set()
    sampler.join()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    s1 = sys_cpu()
    w1 = {k: proc_cpu(p_) for k, p_ in watch.items()}
    if p.returncode != 0:
        raise BenchError(f"{label}: `{' '.join(cmd)}` exited with {p.returncode}:\n{(err or '')[-3000:]}")
    d = [b - a for a, b in zip(s0, s1)]
    total = sum(d) or 1
    idle, iowait = d[3], d[4] if len(d) > 4 else 0
    wcpu = {k: (w1[k] - w0[k]) if w0.get(k) is not None and w1.get(k) is not None else None for k in watch}
    r = Run(label, wall, ru1.ru_utime - ru0.ru_utime, ru1.ru_stime - ru0.ru_stime, out or "", err or "",
            sampler.samples, wcpu.get("hub"),
            100.0 * (total - idle - iowait) / total, 100.0 * iowait / total, wcpu)
    r.cold = dropped
    r.external_drops_before, r.external_drops_during = ext_before, external_drops_since_mark()
    own = r.user + r.sys + sum(v for v in wcpu.values() if v is not None)
    busy_s = (total - idle - iowait) / CLK_TCK
    r.other_cores = max(0.0, (busy_s - own) / wall) if wall > 0 else 0.0
    servers = "".join(f", {k} {v:.1f} s" for k, v in wcpu.items() if v is not None)
    ext = (f", {ext_before}+{r.external_drops_during} drop_caches by other processes"
           if ext_before or r.external_drops_during else "")
    log(f"{label}: {wall:.2f} s (cpu {r.user + r.sys:.1f} s{servers}{', cold cache' if dropped else ''}"
        f", other load {r.other_cores:.2f} cores{ext})")
    return r


def sync_seconds() -> float:
    t0 = time.perf_counter()
    os.sync()
    return time.perf_counter() - t0


def median_run(runs: list[Run]) -> Run:
    s = sorted(runs, key=lambda r: r.wall)
    return s[(len(s) - 1) // 2]


def samples_of(runs: list[Run]) -> list[float]:
    return [round(r.wall, 3) for r in runs]


def pid_is(pid: int, token: str) -> bool:
    """True if `pid` is alive and its command line contains `token` (guards
    against killing a recycled pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return token.encode() in f.read()
    except OSError:
        return False


def stop_process(proc: subprocess.Popen | None, timeout: float = 15) -> None:
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------
# The hub
# --------------------------------------------------------------------------

class Hub:
    """`aetherfs hub` on 127.0.0.1:0 with file:// storage: address parsed from its
    `listening on` line, readiness by polling GET /readyz. Its pid goes to
    `pidfile` so the shell wrapper's trap can kill it if the driver dies."""

    def __init__(self, bin_: Path, data: Path, log_path: Path, pidfile: Path | None = None,
                 extra_args: list[str] | None = None):
        self.bin, self.data, self.log_path, self.pidfile = bin_, data, log_path, pidfile
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [str(self.bin), "hub", "--listen", "127.0.0.1:0", "--storage", f"file://{self.data}", *self.extra_args],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.PIPE, text=True)
        if self.pidfile:
            self.pidfile.write_text(str(self.proc.pid))
        self.url = wait_for_line(self.proc, r"aetherfs hub: listening on (http://\S+)", self.log, 60)
        if not self.url:
            self.stop()
            raise BenchError(f"the hub did not report its address; see {self.log_path}")
        try:
            wait_http_ok(self.url + "/readyz", 60, self.proc)
        except BenchError:
            self.stop()
            raise BenchError(f"the hub at {self.url} never became ready; see {self.log_path}")
        log(f"hub: ready at {self.url} (pid {self.proc.pid}, storage {self.data})")

    def stop(self) -> None:
        stop_process(self.proc)
        if self.pidfile and self.pidfile.exists():
            self.pidfile.unlink()

    def fresh(self) -> None:
        self.stop()
        if self.data.exists():
            shutil.rmtree(self.data)
        self.start()


def wait_for_line(proc: subprocess.Popen, pattern: str, log_file, timeout: float) -> str | None:
    """Copies proc's stderr to log_file in a thread; returns the first group of
    the first line matching `pattern` (None if the process exits first)."""
    found = threading.Event()
    box: list[str] = []

    def drain() -> None:
        for line in proc.stderr:
            log_file.write(line)
            log_file.flush()
            m = re.search(pattern, line)
            if m and not found.is_set():
                box.append(m.group(1))
                found.set()
        found.set()

    threading.Thread(target=drain, daemon=True).start()
    found.wait(timeout)
    return box[0] if box else None


def wait_http_ok(url: str, timeout: float, proc: subprocess.Popen | None = None, method: str = "GET",
                 headers: dict | None = None) -> None:
    """Polls `url` until it answers 2xx (or 207)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            req = urllib.request.Request(url, method=method, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as resp:
                if 200 <= resp.status < 300:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            raise BenchError(f"{url} never answered 2xx")
        time.sleep(0.05)


# --------------------------------------------------------------------------
# Facts and results
# --------------------------------------------------------------------------

def tool_version(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return " ".join((r.stdout or r.stderr).strip().splitlines()[0].split())
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def machine_facts(bin_: Path, versions: dict) -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    du = shutil.disk_usage(BENCH_DIR)
    fstype = subprocess.run(["stat", "-f", "-c", "%T", str(BENCH_DIR)], capture_output=True, text=True).stdout.strip()
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": CMDLINE,
        "nproc": os.cpu_count(), "cpu": cpu, "mem_total_bytes": mem,
        "kernel": platform.release(), "os": platform.platform(),
        "bench_dir": str(BENCH_DIR), "bench_dir_fs": fstype,
        "disk_free_bytes_at_start": du.free, "disk_total_bytes": du.total,
        "git_commit": git + ("-dirty" if dirty else ""),
        "binary_source": os.environ.get("BENCH_BIN") or str(BUILT_BIN.relative_to(ROOT)),
        "binary_commit": os.environ.get("BENCH_BIN_COMMIT") or None,
        "versions": {
            "aetherfs": tool_version([str(bin_), "--version"]),
            "aetherfs_sha256": hashlib.sha256(bin_.read_bytes()).hexdigest()[:16],
            **versions,
            "python": platform.python_version(),
            "rustc": tool_version(["rustc", "--version"]),
        },
        "scale": SCALE, "seed": SEED, "runs_per_step": RUNS,
        "loadavg_at_start": os.getloadavg(),
    }


def write_results(name: str, md: str, res: dict) -> Path:
    """Writes RESULTS_DIR/<name>-<date>[-scale<S>].md and .json; returns the .md path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{datetime.date.today().isoformat()}" + ("" if SCALE == 1 else f"-scale{SCALE:g}")
    (RESULTS_DIR / f"{stem}.md").write_text(md)
    (RESULTS_DIR / f"{stem}.json").write_text(json.dumps(res, indent=1) + "\n")
    return RESULTS_DIR / f"{stem}.md"


# Shared by mounts.py and agent.py.

class Resources:
    """A crash-safe list of things to undo (mounts, processes, namespaces),
    persisted so a later run can clean up after a killed one. `undo` knows
    how to undo one item."""

    def __init__(self, path: Path, undo=None):
        self.path = path
        self.undo = undo
        self.items: list[dict] = []

    def add(self, item: dict) -> dict:
        self.items.append(item)
        self.save()
        return item

    def drop(self, item: dict) -> None:
        if item in self.items:
            self.items.remove(item)
            self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.items, indent=1))
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, path: Path, undo=None) -> "Resources":
        r = cls(path, undo)
        try:
            r.items = json.loads(path.read_text())
        except (OSError, ValueError):
            r.items = []
        return r

    def cleanup(self) -> None:
        for item in reversed(list(self.items)):
            try:
                if self.undo is not None:
                    self.undo(item)
            except Exception as e:  # keep going: clean up everything else
                log(f"cleanup of {item}: {e}")
            self.drop(item)
        if self.path.exists():
            self.path.unlink()

def reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass

def dd(path: Path) -> list[str]:
    return ["dd", f"if={path}", "of=/dev/null", "bs=1M"]

def f1(x) -> str:
    return "n/a" if x is None else f"{x:,.1f}"

def f2(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def mount_entry(path: Path) -> dict | None:
    """The entry of `path` in /proc/self/mountinfo (None if not a mount point)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        f = line.split()
        if f[4].replace("\\040", " ") == str(path):
            sep = f.index("-")
            major, minor = (int(x) for x in f[2].split(":"))
            # `conn` is the FUSE connection number (/sys/fs/fuse/connections/N).
            return {"dev": f[2], "conn": (major << 20) | minor, "fstype": f[sep + 1]}
    return None


def kill_pid(pid: int, token: str, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL, to one pid, only while it still runs `token`."""
    if not pid_is(pid, token):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_is(pid, token):
        reap(pid)
        time.sleep(0.05)
    if pid_is(pid, token):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(0.1)
    reap(pid)


def unmount(path: str) -> None:
    for args in (["fusermount3", "-u", path], ["fusermount3", "-uz", path]):
        if not mount_entry(Path(path)):
            return
        subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.2)
    if mount_entry(Path(path)):
        subprocess.run(["umount", "-l", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
