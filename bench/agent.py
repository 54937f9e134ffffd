#!/usr/bin/env python3
"""Agent benchmark: the `aetherfs agent` sidecar (FUSE front end, encrypted
disk cache under a memory tier, tag following) against the costs a user would
otherwise pay: curl of the packs from the hub, native reads, rclone mount,
rsync of the new database.

Run it through bench/agent.sh, which checks the tools, builds the release
binary and cleans up after a crash. See bench/README.md ("Agent").

  python3 bench/agent.py              # the benchmark
  python3 bench/agent.py --cleanup    # unmount / kill what a dead run left (state file)

Measured, in one run:
  1. cold read of a 1 GiB random file through the agent (prefetch = "none",
     empty cache, cold page cache) vs curl of the file's packs from the hub;
  2. warm read from the encrypted disk cache (memory tier 64 MiB, agent
     restarted with the same key, cold page cache) vs native dd and rclone
     mount --vfs-cache-mode full with its cache filled; warm page cache re-read;
  3. the agent's RSS serving a 100,000-file dataset: idle, after find, after ls -lR;
  4. tag move -> switch for a 1% update of a 256 MiB SQLite database
     (prefetch = "all"), 3 successive updates, vs rsync --no-whole-file.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import common
from common import (BENCH_DIR, GIB, MB, MIB, RUNS, SCALE, SEED, VERIFY, BenchError, Hub, Run, db_insert_sql,
                    env_float, gen_db, gen_random_file, log, median_run, page_cache_summary, quiet_summary,
                    rm, run_sqlite, samples_of, sqlite_rows, tool_version, tree_size)
from common import Resources, proc_status, dd, f1, f2, kill_pid, mount_entry, unmount

BIN = common.BUILT_BIN  # replaced by a private copy in bench()
GEN_VERSION = 1  # bump when the generator changes: invalidates cached datasets
WORK = BENCH_DIR / "agent-work"
STATE_FILE = Path(os.environ.get("BENCH_AGENT_STATE") or (BENCH_DIR / "agent.state.json"))
PROFILE = os.environ.get("BENCH_PROFILE", "1") != "0"
STEP_TIMEOUT = 600.0
MEMORY_TIER = os.environ.get("BENCH_AGENT_MEMORY") or "64MiB"
DISK_MAX = "4GiB"
UPDATES = 3  # successive 1% updates of the database
POLL_S = 0.010  # /v1/mounts polling period while waiting for a switch
SWITCH_TIMEOUT = env_float("BENCH_SWITCH_TIMEOUT", 300.0)

DS_BIG, DS_SMALL, DS_DB = "bench/agent-big", "bench/agent-small", "bench/agent-db"
# "all", or "read": only the sequential reads of the 1 GiB file (sections 1-2,
# rclone left out unless BENCH_AGENT_RCLONE=1), on a dataset of that file alone.
PARTS = os.environ.get("BENCH_AGENT_PARTS", "all")
if PARTS not in ("all", "read"):
    raise SystemExit(f"BENCH_AGENT_PARTS={PARTS!r}: expected all or read")
RCLONE = os.environ.get("BENCH_AGENT_RCLONE", "1" if PARTS == "all" else "0") != "0"


def scaled(n: int, lo: int) -> int:
    return max(lo, round(n * SCALE))


# --------------------------------------------------------------------------
# Resources: every process and mount we create is recorded in a state file,
# so that `--cleanup` (the shell trap) can undo it even if this driver died.
# --------------------------------------------------------------------------


def undo(item: dict) -> None:
    if item["kind"] == "proc":
        kill_pid(item["pid"], item["token"])
        for p in item.get("mounts", []):  # a FUSE daemon: SIGTERM unmounts; fusermount3 -u / -uz as fallbacks
            unmount(p)


RES = Resources(STATE_FILE, undo)


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------

def http_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def parse_metrics(text: str) -> dict:
    """Prometheus text -> {"name" or "name{labels}": value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, val = line.rpartition(" ")
        try:
            out[key] = float(val)
        except ValueError:
            pass
    return out


def metric(m: dict, name: str) -> float:
    """An unlabelled metric, or the sum over a labelled one's series."""
    if name in m:
        return m[name]
    return sum(v for k, v in m.items() if k.startswith(name + "{"))


class Agent:
    """`aetherfs agent --config FILE` with one FUSE mount. Ready when the admin
    address is printed, GET /readyz answers 200 and the mount shows in
    /proc/self/mountinfo."""

    def __init__(self, name: str, ref: str, mnt: Path, hub: Hub, prefetch: str, cache: Path, key: Path,
                 memory: str = MEMORY_TIER, readahead: str | None = None):
        self.name, self.ref, self.mnt, self.hub, self.prefetch = name, ref, mnt, hub, prefetch
        self.cache, self.key, self.memory, self.readahead = cache, key, memory, readahead
        self.conf = WORK / f"agent-{name}.toml"
        self.log_path = WORK / f"agent-{name}.log"
        self.proc: subprocess.Popen | None = None
        self.item: dict | None = None
        self.admin: str | None = None
        self.logf = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def write_config(self) -> None:
        self.conf.write_text(f"""# written by bench/agent.py
hub = "{self.hub.url}"

[admin]
listen = "127.0.0.1:0"

[cache]
dir = "{self.cache}"
max_size = "{DISK_MAX}"
memory_size = "{self.memory}"
key_file = "{self.key}"

[fetch]
poll_secs = 60
{f'readahead = "{self.readahead}"' if self.readahead is not None else ""}

[[mount]]
ref = "{self.ref}"
fuse = "{self.mnt}"
prefetch = "{self.prefetch}"
""")

    def start(self) -> float:
        """Starts the agent; returns the seconds until it was ready."""
        self.mnt.mkdir(parents=True, exist_ok=True)
        if mount_entry(self.mnt):
            unmount(str(self.mnt))
        self.write_config()
        self.logf = open(self.log_path, "a")
        self.logf.write(f"\n--- {time.strftime('%H:%M:%S')} {BIN} agent --config {self.conf}\n")
        self.logf.flush()
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([str(BIN), "agent", "--config", str(self.conf)], stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=subprocess.PIPE, text=True)
        self.item = RES.add({"kind": "proc", "pid": self.proc.pid, "token": "aetherfs", "name": f"agent {self.name}",
                             "mounts": [str(self.mnt)]})
        self.admin = common.wait_for_line(self.proc, r"aetherfs agent: admin on (http://\S+)", self.logf, 60)
        if not self.admin:
            raise BenchError(f"agent {self.name} did not report its admin address; see {self.log_path}")
        common.wait_http_ok(self.admin + "/readyz", 600, self.proc)
        deadline = time.monotonic() + 60
        while True:
            e = mount_entry(self.mnt)
            if e and e["fstype"].startswith("fuse"):
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"agent {self.name}: {self.mnt} is not mounted; see {self.log_path}")
            time.sleep(0.02)
        dt = time.perf_counter() - t0
        log(f"agent {self.name}: ready in {dt:.2f} s (pid {self.proc.pid}, admin {self.admin}, {self.ref} on {self.mnt})")
        return dt

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
        if self.logf:
            self.logf.close()
            self.logf = None

    def metrics(self) -> dict:
        with urllib.request.urlopen(self.admin + "/metrics", timeout=5) as r:
            return parse_metrics(r.read().decode())

    def digest(self) -> str:
        return http_json(self.admin + "/v1/mounts")["mounts"][0]["digest"]


class RcloneMount:
    def __init__(self, src: Path, mnt: Path, cache: Path):
        self.src, self.mnt, self.cache = src, mnt, cache
        self.proc: subprocess.Popen | None = None
        self.item: dict | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def start(self) -> None:
        rm(self.cache)
        self.cache.mkdir(parents=True)
        self.mnt.mkdir(parents=True, exist_ok=True)
        if mount_entry(self.mnt):
            unmount(str(self.mnt))
        logf = open(WORK / "rclone-mount.log", "a")
        cmd = ["rclone", "mount", str(self.src), str(self.mnt), "--read-only", "--vfs-cache-mode", "full",
               "--cache-dir", str(self.cache)]
        logf.write(f"\n--- {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n")
        logf.flush()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                     env={**os.environ, "RCLONE_CONFIG": "/dev/null"})
        logf.close()
        self.item = RES.add({"kind": "proc", "pid": self.proc.pid, "token": "rclone", "name": "rclone mount",
                             "mounts": [str(self.mnt)]})
        deadline = time.monotonic() + 60
        while True:
            e = mount_entry(self.mnt)
            if e and e["fstype"].startswith("fuse"):
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"rclone mount: {self.mnt} is not mounted; see {WORK / 'rclone-mount.log'}")
            time.sleep(0.02)
        log(f"rclone mount: {self.src} on {self.mnt} (pid {self.proc.pid})")

    def stop(self) -> None:
        common.stop_process(self.proc)
        unmount(str(self.mnt))
        if self.item:
            RES.drop(self.item)
            self.item = None

    def cached_bytes(self, rel: str) -> int:
        """Allocated bytes of rclone's VFS cache copy of `rel`."""
        p = self.cache / "vfs" / "local" / str(self.src).lstrip("/") / rel
        try:
            return p.stat().st_blocks * 512
        except OSError:
            return 0


# --------------------------------------------------------------------------
# Dataset (deterministic, seeded, cached)
# --------------------------------------------------------------------------

def dataset_params() -> dict:
    rows = sqlite_rows(SCALE)
    k = max(1, rows // 100)
    updates = []
    for i in range(UPDATES):
        first = int(rows * (0.30 + 0.20 * i))
        updates.append({"update_first_id": first, "update_last_id": first + k - 1, "updated_rows": k,
                        "insert_first_id": rows + i * k + 1, "insert_last_id": rows + (i + 1) * k,
                        "inserted_rows": k})
    return {
        "gen_version": GEN_VERSION, "scale": SCALE, "seed": SEED,
        "big_bytes": max(MIB, int(GIB * SCALE) // MIB * MIB),
        "small_dirs": 100, "small_files_per_dir": scaled(1000, 10),
        "sqlite_rows": rows, "updates": updates,
    }


def gen_small_tree(root: Path, dirs: int, per_dir: int, seed: int) -> None:
    """dirs x per_dir unique small text files (16-512 bytes)."""
    rng = random.Random(seed)
    for d in range(dirs):
        dd = root / f"d{d:03d}"
        dd.mkdir(parents=True, exist_ok=True)
        for i in range(per_dir):
            n = rng.randint(16, 512)
            (dd / f"f{i:04d}.txt").write_bytes(rng.randbytes(n // 2 + 1).hex().encode()[:n - 1] + b"\n")


def gen_update(old: Path, new: Path, u: dict, seed: int) -> None:
    """A 1% update: new payloads for a contiguous 1% of rows, 1% new rows."""
    shutil.copyfile(old, new)
    run_sqlite(new, f""".testctrl prng_seed {seed % 2_000_000_000}
BEGIN;
UPDATE items SET payload = randomblob(length(payload)), price = round(price * 1.01, 2)
 WHERE id BETWEEN {u['update_first_id']} AND {u['update_last_id']};
{db_insert_sql(u['insert_first_id'], u['insert_last_id'])}
COMMIT;
""")


def ensure_dataset() -> tuple[Path, dict]:
    params = dataset_params()
    if PARTS == "read":
        return ensure_big_only(params)
    root = BENCH_DIR / f"agent-dataset-g{GEN_VERSION}-s{SCALE:g}-seed{SEED}"
    stamp = root / "STAMP.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("params") == params:
        log(f"dataset: cached at {root}")
        return root, json.loads(stamp.read_text())
    if root.exists():
        shutil.rmtree(root)
    log(f"dataset: generating at {root} (scale {SCALE:g}, seed {SEED})")
    t0 = time.perf_counter()
    gen_random_file(root / "big" / "random.bin", params["big_bytes"], SEED + 200)
    gen_small_tree(root / "small", params["small_dirs"], params["small_files_per_dir"], SEED + 300)
    dbs = root / "dbs"
    gen_db(dbs / "v1.sqlite", params["sqlite_rows"], SEED)
    for i, u in enumerate(params["updates"]):
        gen_update(dbs / f"v{i + 1}.sqlite", dbs / f"v{i + 2}.sqlite", u, SEED + 10 + i)
    meta = {"params": params,
            "big_bytes": (root / "big" / "random.bin").stat().st_size,
            "small_files": params["small_dirs"] * params["small_files_per_dir"],
            "small_bytes": tree_size(root / "small")[1],
            "db_bytes": [(dbs / f"v{i + 1}.sqlite").stat().st_size for i in range(UPDATES + 1)],
            "generate_seconds": round(time.perf_counter() - t0, 1)}
    stamp.write_text(json.dumps(meta, indent=1))
    log(f"dataset: generated in {meta['generate_seconds']} s")
    return root, meta


def ensure_big_only(params: dict) -> tuple[Path, dict]:
    """The 1 GiB random file alone (the same bytes as in the full dataset)."""
    root = BENCH_DIR / f"agent-big-g{GEN_VERSION}-s{SCALE:g}-seed{SEED}"
    big = root / "big" / "random.bin"
    stamp = root / "STAMP.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("big_bytes") == params["big_bytes"]:
        log(f"dataset (big file only): cached at {root}")
        return root, json.loads(stamp.read_text())
    rm(root)
    gen_random_file(big, params["big_bytes"], SEED + 200)
    meta = {"params": params, "big_bytes": big.stat().st_size}
    stamp.write_text(json.dumps(meta, indent=1))
    return root, meta


# --------------------------------------------------------------------------
# Measurement helpers
# --------------------------------------------------------------------------

def timed(label: str, cmd: list[str], *, cold: bool, watch: dict | None = None, agent: Agent | None = None,
          stdout=subprocess.PIPE) -> Run:
    """common.run_timed plus the agent's metric deltas during the run."""
    m0 = agent.metrics() if agent else None
    r = common.run_timed(label, cmd, cold=cold, watch={k: v for k, v in (watch or {}).items() if v},
                         stdout=stdout, timeout=STEP_TIMEOUT)
    if agent:
        m1 = agent.metrics()
        r.extra["agent_metrics"] = {
            k.removeprefix("aetherfs_"): round(metric(m1, k) - metric(m0, k), 3)
            for k in ("aetherfs_fetched_bytes_total", "aetherfs_cache_memory_hits_total",
                      "aetherfs_cache_disk_hits_total", "aetherfs_cache_misses_total",
                      "aetherfs_fetch_duration_seconds_count")}
    return r


def dd_bytes(r: Run) -> int:
    m = re.search(r"^(\d+) bytes", r.stderr, re.M)
    if not m:
        raise BenchError(f"{r.label}: no byte count in dd's output: {r.stderr.strip()}")
    return int(m.group(1))


def check_dd(r: Run, size: int) -> Run:
    n = dd_bytes(r)
    if n != size:
        raise BenchError(f"{r.label}: dd read {n} bytes, expected {size}")
    return r


def verify_same(label: str, path: Path, ref: Path) -> None:
    r = subprocess.run(["cmp", str(path), str(ref)], capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError(f"verify {label}: {path} differs from {ref}: {r.stdout.strip()} {r.stderr.strip()}")
    log(f"verify {label}: {path.name} identical to {ref}")


def wait_disk_cache(agent: Agent, entries: int, timeout: float = 120.0) -> dict:
    """Waits until the disk cache holds `entries` chunks (puts run in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        m = agent.metrics()
        n = metric(m, "aetherfs_cache_disk_entries")
        if n >= entries:
            return {"entries": int(n), "bytes": int(metric(m, "aetherfs_cache_disk_bytes"))}
        if time.monotonic() > deadline:
            raise BenchError(f"agent {agent.name}: disk cache has {n} of {entries} chunks after {timeout} s")
        time.sleep(0.05)


class Step:
    """Repeated samples of one measurement; the median run is reported."""

    def __init__(self):
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
            d["mb_per_s_samples"] = [round(nbytes / MB / r.wall, 1) for r in self.runs]
        ext = [[getattr(r, "external_drops_before", 0), getattr(r, "external_drops_during", 0)] for r in self.runs]
        if any(a or b for a, b in ext):
            d["external_drops_per_run"] = ext  # drop_caches by other processes: [before, during] each run
        return d


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


# --------------------------------------------------------------------------
# Profiles (diagnostic, untimed): `perf record -a` around one command.
# --------------------------------------------------------------------------

KERNEL_CATEGORIES = [  # (category, regex on the symbol), first match wins; "[k]" rows only
    ("kernel: copy to/from user", r"copy_user|_copy_to_iter|_copy_from_iter|copy_page_to_iter|copy_page_from_iter|"
                                  r"rep_movs|memcpy|memmove|memset|fault_in|copyout|copyin"),
    ("kernel: FUSE", r"fuse"),
    ("kernel: block / ext4 / virtio", r"ext4|jbd2|blk|bio_|virtio|vring|iomap|mpage|submit_bio|scsi|nvme"),
    ("kernel: network (loopback TCP)", r"tcp|ip_|skb|sock|net|loopback|inet|dev_queue|napi|softirq|sk_"),
    ("kernel: page cache / memory", r"filemap|folio|page|alloc|lru|memcg|free_unref|release_pages|readahead|"
                                    r"mm_|mmap|munmap|vma|zap_|rmqueue|pte|tlb|kmem|slab|charge"),
    ("kernel: locks, scheduling, syscalls", r"spin|lock|futex|sched|switch|wake|idle|syscall|entry_|irq|hrtimer|"
                                            r"rcu|epoll|ep_|poll|task|timer|ttwu|enqueue|dequeue"),
]
USER_CATEGORIES = [  # "[.]" rows
    ("AES-GCM", r"aes|Aes|gcm|Gcm|ghash|GHash|polyval|Polyval|gf128"),
    ("BLAKE3", r"blake3"),
    ("zstd", r"ZSTD|zstd|HUF_|FSE_"),
    ("memcpy/memset (user)", r"mem(cpy|move|set|clr)|memclr"),
    ("malloc/free", r"malloc|free|_int_|realloc|tcache|unlink_chunk|arena|sysmalloc|cfree"),
    ("Go runtime / GC", r"runtime\."),
    ("tokio / futures / moka", r"tokio|mio::|futures|moka|crossbeam|parking_lot|std::sync|std::thread"),
    ("HTTP (hyper/reqwest/axum)", r"hyper|reqwest|h2::|axum|http::"),
    ("fuser", r"fuser"),
]


def categorize(lines: list[tuple[float, str]]) -> dict:
    out: dict[str, float] = {}
    for pct, text in lines:
        sym = text.split("] ", 2)[-1] if "] " in text else text
        if "[k]" in text:
            cat = next((c for c, rx in KERNEL_CATEGORIES if re.search(rx, sym)), "kernel: other")
        else:
            cat = next((c for c, rx in USER_CATEGORIES if re.search(rx, sym)), "user: other")
        out[cat] = out.get(cat, 0.0) + pct
    return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


def perf_profile(name: str, cmd: list[str], cold: bool, servers: dict) -> dict:
    """System-wide `perf record` (999 Hz) while `cmd` runs; per process (the
    client and `servers`: name -> pid), CPU seconds, its top symbols and the
    share of its samples by category."""
    if not shutil.which("perf"):
        return {"error": "perf not installed"}
    if cold:
        common.drop_caches()
    data = WORK / f"perf-{name}.data"
    pidf = WORK / f"perf-{name}.pid"
    wrapped = ["sh", "-c", 'echo $$ > "$0"; exec "$@"', str(pidf), *cmd]
    t0 = time.perf_counter()
    r = subprocess.run(["perf", "record", "-a", "-F", "999", "-o", str(data), "--", *wrapped],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        return {"error": r.stderr.strip()[-500:]}
    pids = {"client": int(pidf.read_text().strip()), **{k: v for k, v in servers.items() if v}}
    out: dict = {"cmd": " ".join(cmd), "cold": cold, "wall_s": round(wall, 2), "processes": {}}
    script = subprocess.run(["perf", "script", "-i", str(data), "-F", "pid"], capture_output=True, text=True,
                            timeout=300)
    counts: dict[int, int] = {}
    for tok in script.stdout.split():
        if tok.isdigit():
            counts[int(tok)] = counts.get(int(tok), 0) + 1
    for pname, pid in pids.items():
        rep = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children", "--no-inline",
                              "--pid", str(pid), "--percentage", "relative", "--sort", "dso,sym",
                              "--percent-limit", "0.05"], capture_output=True, text=True, timeout=300)
        rows: list[tuple[float, str]] = []
        for ln in rep.stdout.splitlines():
            m = re.match(r"\s*([\d.]+)%\s+(.*)$", ln)
            if m and not ln.lstrip().startswith("#"):
                rows.append((float(m.group(1)), " ".join(m.group(2).split())))
        out["processes"][pname] = {
            "pid": pid, "cpu_s": round(counts.get(pid, 0) / 999, 2),
            "categories_pct": categorize(rows),
            "top_symbols": [f"{p:.1f}% {t}" for p, t in rows[:15]],
        }
    out["cpu_s_other_processes"] = round((sum(counts.values()) - sum(counts.get(p, 0) for p in pids.values())) / 999, 2)
    data.unlink(missing_ok=True)
    pidf.unlink(missing_ok=True)
    log(f"profile {name}: {wall:.2f} s; " + "; ".join(
        f"{k} {v['cpu_s']} s: {list(v['categories_pct'].items())[:3]}" for k, v in out["processes"].items()))
    return out


# --------------------------------------------------------------------------
# Tag follow: moments of the tag move and of the switch
# --------------------------------------------------------------------------

def wait_long_polls(hub: Hub, n: int, timeout: float = 30.0) -> None:
    """Waits until at least `n` tag long-polls are parked on the hub."""
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(hub.url + "/metrics", timeout=5) as r:
            got = metric(parse_metrics(r.read().decode()), "aetherfs_hub_long_polls_waiting")
        if got >= n:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"only {got} tag long-polls waiting on the hub, expected {n}")
        time.sleep(0.005)


class TagWatcher(threading.Thread):
    """Long-polls the hub's tag like the agent does; records when the hub
    answered with a new digest (the tag move as a follower sees it)."""

    def __init__(self, hub_url: str, name: str, tag: str, since: str):
        super().__init__(daemon=True)
        self.url = f"{hub_url}/v1/datasets/{name}/tags/{tag}?wait=120&since={since}"
        self.since = since
        self.t: float | None = None
        self.digest: str | None = None
        self.error: str | None = None

    def run(self) -> None:
        deadline = time.monotonic() + SWITCH_TIMEOUT
        while time.monotonic() < deadline:
            try:
                rec = http_json(self.url, timeout=150)
            except (OSError, ValueError) as e:
                self.error = str(e)
                time.sleep(0.05)
                continue
            d = rec.get("digest")
            if d and d != self.since:
                self.t, self.digest = time.perf_counter(), d
                return


class MountPoller(threading.Thread):
    """Polls the agent's /v1/mounts every POLL_S; records the first answer
    showing a digest other than `old`."""

    def __init__(self, admin: str, old: str):
        super().__init__(daemon=True)
        self.admin, self.old = admin, old
        self.t: float | None = None
        self.t_prev: float | None = None
        self.digest: str | None = None
        self.polls = 0
        self.stop_evt = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + SWITCH_TIMEOUT
        nxt = time.perf_counter()
        last = None
        while not self.stop_evt.is_set() and time.monotonic() < deadline:
            try:
                d = http_json(self.admin + "/v1/mounts", timeout=5)["mounts"][0]["digest"]
            except (OSError, ValueError, KeyError, IndexError):
                d = None
            now = time.perf_counter()
            self.polls += 1
            if d and d != self.old:
                self.t, self.t_prev, self.digest = now, last, d
                return
            last = now
            nxt += POLL_S
            time.sleep(max(0.0, nxt - time.perf_counter()))


# --------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------

def afs(*args: str) -> list[str]:
    return [str(BIN), *args]


def push(hub: Hub, src: Path, ref: str, label: str, cold: bool = True) -> Run:
    r = common.run_timed(label, afs("push", "--json", "--hub", hub.url, str(src), ref), cold=cold,
                         watch={"hub": hub.pid}, timeout=STEP_TIMEOUT)
    return r


def inspect_files(hub: Hub, ref: str) -> dict:
    out = subprocess.run(afs("inspect", "--json", "--hub", hub.url, "--files", ref), capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def file_entry(manifest: dict, path: str) -> dict:
    for e in manifest.get("entries", []):
        if e.get("path") == path:
            return e
    raise BenchError(f"{path} not in the manifest: {list(manifest)}")


def chunk_loc(c: dict) -> tuple[str, int, int, str]:
    loc = c.get("location", c)
    return loc["pack"], int(loc["offset"]), int(loc["stored_len"]), str(loc.get("compression", "?"))


def pack_url(hub: Hub, dataset: str, pack: str) -> str:
    # Packs are read through a dataset that may read them.
    return f"{hub.url}/v1/datasets/{dataset}/packs/{pack}"


def pack_sizes(hub: Hub, dataset: str, packs: list[str]) -> dict:
    out = {}
    for p in packs:
        req = urllib.request.Request(pack_url(hub, dataset, p), method="HEAD")
        with urllib.request.urlopen(req, timeout=10) as r:
            out[p] = int(r.headers["Content-Length"])
    return out


def curl_packs(hub: Hub, dataset: str, packs: list[str], parallel: int = 0) -> list[str]:
    cmd = ["curl", "-sS", "--fail", "-w", "%{size_download}\\n"]
    if parallel:
        cmd += ["--parallel", "--parallel-max", str(parallel)]
    for p in packs:
        cmd += ["-o", "/dev/null", pack_url(hub, dataset, p)]
    return cmd


def check_curl(r: Run, expect: int) -> Run:
    got = sum(int(x) for x in r.stdout.split() if x.isdigit())
    if got != expect:
        raise BenchError(f"{r.label}: curl downloaded {got} bytes, expected {expect}")
    r.extra["downloaded_bytes"] = got
    r.stdout = ""
    return r


def plain_mount_rss(hub: Hub, ref: str, mnt: Path) -> dict:
    mnt.mkdir(parents=True, exist_ok=True)
    logf = open(WORK / "aetherfs-mount.log", "a")
    p = subprocess.Popen(afs("mount", ref, str(mnt), "--hub", hub.url, "--cache-mib", "64"), stdin=subprocess.DEVNULL,
                         stdout=logf, stderr=subprocess.PIPE, text=True)
    item = RES.add({"kind": "proc", "pid": p.pid, "token": "aetherfs", "name": "aetherfs mount", "mounts": [str(mnt)]})
    out: dict = {}
    try:
        if not common.wait_for_line(p, r"aetherfs mount: (.*) mounted at", logf, 120):
            raise BenchError(f"aetherfs mount did not mount {ref}; see {WORK / 'aetherfs-mount.log'}")
        if not (mount_entry(mnt) or {}).get("fstype", "").startswith("fuse"):
            raise BenchError(f"aetherfs mount: {mnt} is not a FUSE mount")
        common.wait_quiet()
        out["idle"] = proc_status(p.pid)
        subprocess.run(["ls", "-lR", str(mnt)], stdout=subprocess.DEVNULL, check=True)
        out["after_ls"] = proc_status(p.pid)
        log(f"aetherfs mount {ref}: VmRSS idle {out['idle']['VmRSS'] / MIB:.1f} MiB, "
            f"after ls -lR {out['after_ls']['VmRSS'] / MIB:.1f} MiB")
    finally:
        common.stop_process(p)
        unmount(str(mnt))
        RES.drop(item)
        logf.close()
    return out


def new_key(path: Path) -> None:
    path.write_bytes(os.urandom(32))
    path.chmod(0o600)


def bench() -> dict:
    global BIN
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    agent_bin_dir = BENCH_DIR / "agent-bin"  # our own copy: the other benchmarks copy theirs to BENCH_DIR/bin
    BIN = common.private_binary(agent_bin_dir)
    facts = common.machine_facts(BIN, {
        "rclone": tool_version(["rclone", "version"]),
        "rsync": tool_version(["rsync", "--version"]),
        "curl": tool_version(["curl", "--version"]),
        "sqlite3": tool_version(["sqlite3", "--version"]).split(" ")[0],
        "fuse3": tool_version(["fusermount3", "--version"]),
        "perf": tool_version(["perf", "--version"]) if shutil.which("perf") else "not installed",
    })
    facts["binary"] = str(BIN)
    facts["memory_tier"] = MEMORY_TIER
    root, dsmeta = ensure_dataset()
    for m in ("mnt-big", "mnt-small", "mnt-db", "mnt-rclone"):
        if mount_entry(WORK / m):
            unmount(str(WORK / m))
    rm(WORK)
    WORK.mkdir(parents=True)
    res: dict = {"machine": facts, "dataset": {**dsmeta, "path": str(root)}, "errors": []}

    hub = Hub(BIN, WORK / "hub-data", WORK / "hub.log")
    hub.start()
    hub_item = RES.add({"kind": "proc", "pid": hub.proc.pid, "token": "aetherfs", "name": "hub"})
    key = WORK / "cache.key"
    new_key(key)

    # ---------------------------------------------------------------- 1 + 2
    big_dir = root / "big"
    big = big_dir / "random.bin"
    size = big.stat().st_size
    p_big = push(hub, big_dir, f"{DS_BIG}:v1", "push big file (1 file)")
    man = inspect_files(hub, f"{DS_BIG}:v1")
    ent = file_entry(man, "random.bin")
    chunks = ent.get("chunks") or ent.get("kind", {}).get("chunks") or []
    locs = [chunk_loc(c) for c in chunks]
    packs = list(dict.fromkeys(p for p, *_ in locs))
    psize = pack_sizes(hub, DS_BIG, packs)
    stored = sum(n for _, _, n, _ in locs)
    comp = sorted({c for *_, c in locs})
    nchunks = len({c["digest"] for c in chunks})
    all_packs_bytes = sum(psize.values())
    log(f"big file: {size:,} bytes, {len(chunks)} chunks ({nchunks} unique), stored {stored:,} bytes "
        f"({comp}), in {len(packs)} packs of {all_packs_bytes:,} bytes")
    res["big"] = {"bytes": size, "chunks": len(chunks), "unique_chunks": nchunks, "stored_bytes": stored,
                  "compression": comp, "packs": len(packs), "packs_bytes": all_packs_bytes,
                  "push": {**p_big.summary(), "report": p_big.json()}}

    mnt = WORK / "mnt-big"
    cache = WORK / "cache-big"
    ag = Agent("big", f"{DS_BIG}:v1", mnt, hub, "none", cache, key)
    S = {k: Step() for k in ("afs_cold", "curl_seq", "curl_par8", "afs_disk_cold", "afs_warm_pc", "native_cold",
                             "rclone_first", "rclone_filled_cold", "rclone_warm_pc", "afs_cold_ra0",
                             "native_warm")}
    afs_file = mnt / "random.bin"
    idle_rss_1file = None
    start_s = []
    cold_rss: list[dict] = []
    try:
        # 1. cold: a fresh agent on an empty cache for every run.
        for i in range(RUNS):
            tag = f"[{i + 1}/{RUNS}]"
            ag.stop()
            rm(cache)
            start_s.append(ag.start())
            if idle_rss_1file is None:
                common.wait_quiet()
                idle_rss_1file = proc_status(ag.pid)
            r = S["afs_cold"].add(check_dd(timed(f"agent cold read (empty cache) {tag}", dd(afs_file), cold=True,
                                                 watch={"agent": ag.pid, "hub": hub.pid}, agent=ag), size))
            r.extra["disk_cache_after"] = wait_disk_cache(ag, nchunks)
            cold_rss.append(proc_status(ag.pid))  # a fresh agent per run: VmHWM is this read's peak
            S["curl_seq"].add(check_curl(timed(f"curl packs, sequential {tag}", curl_packs(hub, DS_BIG, packs), cold=True,
                                               watch={"hub": hub.pid}), all_packs_bytes))
            S["curl_par8"].add(check_curl(timed(f"curl packs, 8 parallel {tag}", curl_packs(hub, DS_BIG, packs, 8),
                                                cold=True, watch={"hub": hub.pid}), all_packs_bytes))
        # 2. warm from the encrypted disk cache: restart (same key: the memory tier is empty).
        for i in range(RUNS):
            tag = f"[{i + 1}/{RUNS}]"
            ag.stop()
            ag.start()
            r = S["afs_disk_cold"].add(check_dd(timed(f"agent read from disk cache, cold page cache {tag}",
                                                      dd(afs_file), cold=True, watch={"agent": ag.pid, "hub": hub.pid},
                                                      agent=ag), size))
            if r.extra["agent_metrics"]["fetched_bytes_total"] != 0:
                res["errors"].append(f"{r.label}: fetched {r.extra['agent_metrics']['fetched_bytes_total']} bytes "
                                     f"from the hub (expected 0)")
            S["afs_warm_pc"].add(check_dd(timed(f"agent re-read, warm page cache {tag}", dd(afs_file), cold=False,
                                                watch={"agent": ag.pid}, agent=ag), size))
        if VERIFY:
            verify_same("agent mount", afs_file, big)
        res["agent_big_cache"] = {"disk": wait_disk_cache(ag, nchunks), "start_seconds": start_s,
                                  "rss_idle_1_file": idle_rss_1file, "rss_after_reads": proc_status(ag.pid),
                                  "rss_after_cold_reads": cold_rss}
        prof = {}
        if PROFILE:
            ag.stop()
            ag.start()
            prof["warm_disk_cache"] = perf_profile("agent-disk-cold", dd(afs_file), True,
                                                   {"agent": ag.pid, "hub": hub.pid})
            ag.stop()
            rm(cache)
            ag.start()
            prof["cold_empty_cache"] = perf_profile("agent-cold", dd(afs_file), True, {"agent": ag.pid, "hub": hub.pid})
            wait_disk_cache(ag, nchunks)
        ag.stop()
        # Diagnostic: the same cold read with the agent's own readahead off
        # (the kernel's 1 MiB readahead still runs), to see what readahead costs and brings.
        ag0 = Agent("big-ra0", f"{DS_BIG}:v1", mnt, hub, "none", WORK / "cache-big-ra0", key, readahead="0")
        try:
            ag0.start()
            S["afs_cold_ra0"].add(check_dd(timed("agent cold read, fetch.readahead = 0 (diagnostic)", dd(afs_file),
                                                 cold=True, watch={"agent": ag0.pid, "hub": hub.pid}, agent=ag0), size))
        finally:
            ag0.stop()
            rm(WORK / "cache-big-ra0")
        # native and rclone
        for i in range(RUNS):
            S["native_cold"].add(check_dd(timed(f"native dd, cold page cache [{i + 1}/{RUNS}]", dd(big), cold=True),
                                          size))
            S["native_warm"].add(check_dd(timed(f"native dd, warm page cache [{i + 1}/{RUNS}]", dd(big), cold=False),
                                          size))
        if PROFILE:
            ag.start()
            dd_file(afs_file)  # fills the page cache
            prof["agent_warm_page_cache"] = perf_profile("agent-warm-pc", dd(afs_file), False, {"agent": ag.pid})
            dd_file(big)
            prof["native_warm_page_cache"] = perf_profile("native-warm-pc", dd(big), False, {})
            ag.stop()
        if RCLONE:
            rclone_steps(S, res, big_dir, size, prof)
    finally:
        ag.stop()
    rm(cache)
    sm = {k: v.summary(size) for k, v in S.items() if v.runs}
    mbs = {k: v["mb_per_s"] for k, v in sm.items()}
    res["read"] = {"steps": sm, "profiles": prof, "ratios": {
        "afs_cold_vs_curl_seq": ratio(mbs.get("afs_cold"), mbs.get("curl_seq")),
        "afs_cold_vs_curl_par8": ratio(mbs.get("afs_cold"), mbs.get("curl_par8")),
        "afs_disk_cold_vs_native_cold": ratio(mbs.get("afs_disk_cold"), mbs.get("native_cold")),
        "afs_warm_pc_vs_native_warm": ratio(mbs.get("afs_warm_pc"), mbs.get("native_warm")),
        "afs_disk_cold_vs_rclone_filled_cold": ratio(mbs.get("afs_disk_cold"), mbs.get("rclone_filled_cold")),
        "afs_warm_pc_vs_rclone_warm_pc": ratio(mbs.get("afs_warm_pc"), mbs.get("rclone_warm_pc")),
        "afs_cold_vs_afs_disk_cold": ratio(mbs.get("afs_cold"), mbs.get("afs_disk_cold")),
        "afs_cold_ra0_vs_curl_seq": ratio(mbs.get("afs_cold_ra0"), mbs.get("curl_seq")),
    }}
    for k in ("afs_cold", "afs_cold_ra0"):
        am = sm[k].get("agent_metrics", {})
        sm[k]["fetched_over_file_bytes"] = round(am.get("fetched_bytes_total", 0) / size, 3)
    if PARTS == "read":
        return finish(res, hub, hub_item)
    return bench_rest(res, hub, hub_item, root, dsmeta, key, idle_rss_1file)


def dd_file(path: Path) -> None:
    """An untimed sequential read (to fill the page cache)."""
    subprocess.run(dd(path), check=True, capture_output=True)


def rclone_steps(S: dict, res: dict, big_dir: Path, size: int, prof: dict) -> None:
    """rclone mount --vfs-cache-mode full of the plain file: first read, then cache filled."""
    rc = RcloneMount(big_dir, WORK / "mnt-rclone", WORK / "rclone-cache")
    rc.start()
    try:
        _rclone_reads(rc, S, res, size, prof)
    finally:
        rc.stop()


def _rclone_reads(rc: "RcloneMount", S: dict, res: dict, size: int, prof: dict) -> None:
    rfile = rc.mnt / "random.bin"
    S["rclone_first"].add(check_dd(timed("rclone mount, first read (fills its VFS cache)", dd(rfile), cold=True,
                                         watch={"rclone": rc.pid}), size))
    deadline = time.monotonic() + 120
    while rc.cached_bytes("random.bin") < size and time.monotonic() < deadline:
        time.sleep(0.1)
    res["rclone_cache_bytes"] = rc.cached_bytes("random.bin")
    if res["rclone_cache_bytes"] < size:
        res["errors"].append(f"rclone's VFS cache holds {res['rclone_cache_bytes']} of {size} bytes")
    for i in range(RUNS):
        tag = f"[{i + 1}/{RUNS}]"
        S["rclone_filled_cold"].add(check_dd(timed(f"rclone mount, VFS cache filled, cold page cache {tag}",
                                                   dd(rfile), cold=True, watch={"rclone": rc.pid}), size))
        S["rclone_warm_pc"].add(check_dd(timed(f"rclone mount, warm page cache {tag}", dd(rfile), cold=False,
                                               watch={"rclone": rc.pid}), size))
    if PROFILE:
        prof["rclone_filled_cold"] = perf_profile("rclone-cold", dd(rfile), True, {"rclone": rc.pid})


def bench_rest(res: dict, hub: Hub, hub_item: dict, root: Path, dsmeta: dict, key: Path, idle_rss_1file) -> dict:
    # ---------------------------------------------------------------- 3
    small = root / "small"
    nfiles, small_bytes = tree_size(small)
    ndirs = dsmeta["params"]["small_dirs"]
    p_small = push(hub, small, f"{DS_SMALL}:v1", f"push {nfiles:,} small files")
    insp = json.loads(subprocess.run(afs("inspect", "--json", "--hub", hub.url, f"{DS_SMALL}:v1"),
                                     capture_output=True, text=True, check=True).stdout)
    ags = Agent("small", f"{DS_SMALL}:v1", WORK / "mnt-small", hub, "metadata", WORK / "cache-small", key)
    mem: dict = {"files": nfiles, "dirs": ndirs, "bytes": small_bytes, "manifest_bytes": insp.get("manifest_bytes"),
                 "push": {**p_small.summary(), "report": p_small.json()}}
    try:
        mem["start_seconds"] = ags.start()
        common.wait_quiet()
        mem["idle"] = proc_status(ags.pid)
        expect = nfiles + ndirs + 1
        r = timed("find MNT | wc -l (fresh mount)", ["sh", "-c", 'find "$1" | wc -l', "sh", str(ags.mnt)],
                  cold=False, watch={"agent": ags.pid})
        n = int(r.stdout.strip() or 0)
        if n != expect:
            raise BenchError(f"find printed {n} lines, expected {expect}")
        mem["find"] = {**r.summary(), "lines": n}
        mem["after_find"] = proc_status(ags.pid)
        r = timed("ls -lR MNT", ["ls", "-lR", str(ags.mnt)], cold=False, watch={"agent": ags.pid},
                  stdout=subprocess.DEVNULL)
        mem["ls"] = r.summary()
        mem["after_ls"] = proc_status(ags.pid)
        mem["metrics"] = {k.removeprefix("aetherfs_"): v for k, v in ags.metrics().items()
                          if k.startswith("aetherfs_cache_") or k.startswith("aetherfs_fetched")}
    finally:
        ags.stop()
    # Diagnostic: `aetherfs mount` (same FUSE front end and tree, memory-only
    # cache, no agent) on the same version, idle and after ls -lR.
    mem["plain_mount"] = plain_mount_rss(hub, f"{DS_SMALL}:v1", WORK / "mnt-small")
    base = (idle_rss_1file or {}).get("VmRSS")
    for k in ("idle", "after_find", "after_ls"):
        st = mem[k]
        st["rss_bytes_per_file"] = round(st["VmRSS"] / nfiles)
        st["hwm_bytes_per_file"] = round(st["VmHWM"] / nfiles)
        if base:
            st["rss_over_1file_agent_bytes_per_file"] = round((st["VmRSS"] - base) / nfiles)
    mem["rss_1file_agent"] = idle_rss_1file
    res["memory"] = mem

    # ---------------------------------------------------------------- 4
    dbs = root / "dbs"
    stage = WORK / "stage-db"
    stage.mkdir()
    db_name = "catalog.sqlite"
    os.link(dbs / "v1.sqlite", stage / db_name)
    p_db1 = push(hub, stage, f"{DS_DB}:latest", "push db v1")
    agd = Agent("db", f"{DS_DB}:latest", WORK / "mnt-db", hub, "all", WORK / "cache-db", key)
    sw: dict = {"db_bytes": dsmeta["db_bytes"], "push_v1": {**p_db1.summary(), "report": p_db1.json()},
                "updates": []}
    rdir = WORK / "rsync"
    rdir.mkdir()
    try:
        sw["agent_start_seconds"] = agd.start()  # prefetch = all: ready once every chunk is cached
        m_init = agd.metrics()
        sw["agent_initial_fetched_bytes"] = metric(m_init, "aetherfs_fetched_bytes_total")
        sw["agent_initial_range_requests"] = int(metric(m_init, "aetherfs_fetch_duration_seconds_count"))
        for i in range(UPDATES):
            tag = f"[{i + 1}/{UPDATES}]"
            new_db = dbs / f"v{i + 2}.sqlite"
            (stage / db_name).unlink()
            os.link(new_db, stage / db_name)
            common.wait_quiet()
            common.drop_caches()
            old = agd.digest()
            m0 = agd.metrics()
            a0 = common.proc_cpu(agd.pid)
            watcher = TagWatcher(hub.url, DS_DB, "latest", old)
            poller = MountPoller(agd.admin, old)
            watcher.start()
            poller.start()
            wait_long_polls(hub, 2)  # the agent's and the watcher's long-polls are parked on the hub
            ru0 = common.resource.getrusage(common.resource.RUSAGE_CHILDREN)
            h0 = common.proc_cpu(hub.pid)
            t0 = time.perf_counter()
            pp = subprocess.Popen(afs("push", "--json", "--hub", hub.url, str(stage), f"{DS_DB}:latest"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            out, err = pp.communicate(timeout=STEP_TIMEOUT)
            t_exit = time.perf_counter()
            ru1 = common.resource.getrusage(common.resource.RUSAGE_CHILDREN)
            h1 = common.proc_cpu(hub.pid)
            if pp.returncode != 0:
                raise BenchError(f"push v{i + 2} failed: {err[-2000:]}")
            report = json.loads(out)
            poller.join(SWITCH_TIMEOUT)
            watcher.join(5)
            if poller.t is None:
                raise BenchError(f"the agent did not switch to {report.get('digest')} within {SWITCH_TIMEOUT} s")
            # /metrics is updated right after the digest: wait for the switch count.
            deadline = time.monotonic() + 10
            while True:
                m1 = agd.metrics()
                if metric(m1, "aetherfs_mount_switches_total") >= metric(m0, "aetherfs_mount_switches_total") + 1:
                    break
                if time.monotonic() > deadline:
                    raise BenchError("aetherfs_mount_switches_total did not move")
                time.sleep(0.01)
            a1 = common.proc_cpu(agd.pid)
            if poller.digest != report.get("digest"):
                res["errors"].append(f"update {i + 1}: agent switched to {poller.digest}, push made {report.get('digest')}")
            u = {
                "push_seconds": round(t_exit - t0, 3),
                "push_cpu_s": round(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime, 2),
                "push_hub_cpu_s": round(h1 - h0, 2) if h0 is not None and h1 is not None else None,
                "push_report": report,
                "switch_after_push_exit_s": round(poller.t - t_exit, 4),
                "switch_after_push_exit_lower_bound_s": round((poller.t_prev or t_exit) - t_exit, 4),
                "tag_seen_by_watcher_after_push_exit_s": round(watcher.t - t_exit, 4) if watcher.t else None,
                "switch_after_watcher_saw_tag_s": round(poller.t - watcher.t, 4) if watcher.t else None,
                "agent_last_switch_seconds": metric(m1, "aetherfs_mount_last_switch_seconds"),
                "fetched_bytes": int(metric(m1, "aetherfs_fetched_bytes_total") - metric(m0, "aetherfs_fetched_bytes_total")),
                "range_requests": int(metric(m1, "aetherfs_fetch_duration_seconds_count")
                                      - metric(m0, "aetherfs_fetch_duration_seconds_count")),
                "agent_cpu_s": round(a1 - a0, 2) if a0 is not None and a1 is not None else None,
                "polls": poller.polls,
                "db_bytes_new": new_db.stat().st_size,
            }
            u["fetched_pct_db"] = round(100 * u["fetched_bytes"] / u["db_bytes_new"], 3)
            log(f"update {tag}: push {u['push_seconds']:.2f} s; switch {u['switch_after_push_exit_s'] * 1000:.0f} ms "
                f"after the push exited (agent's own measure {u['agent_last_switch_seconds'] * 1000:.0f} ms); "
                f"fetched {u['fetched_bytes']:,} bytes ({u['fetched_pct_db']}% of the db)")
            # rsync baseline: the new db over a copy of the old one.
            shutil.copyfile(dbs / f"v{i + 1}.sqlite", rdir / db_name)
            rr = common.run_timed(f"rsync --no-whole-file {tag}",
                                  ["rsync", "--stats", "--no-whole-file", str(new_db), str(rdir / db_name)],
                                  cold=True, timeout=STEP_TIMEOUT)
            lit = re.search(r"Literal data: ([\d,]+) bytes", rr.stdout)
            matched = re.search(r"Matched data: ([\d,]+) bytes", rr.stdout)
            if not lit:
                raise BenchError(f"no 'Literal data' in rsync's output:\n{rr.stdout}")
            u["rsync"] = {**rr.summary(), "literal_bytes": int(lit.group(1).replace(",", "")),
                          "matched_bytes": int(matched.group(1).replace(",", "")) if matched else None}
            u["rsync"]["literal_pct_db"] = round(100 * u["rsync"]["literal_bytes"] / u["db_bytes_new"], 3)
            sw["updates"].append(u)
        if VERIFY:
            verify_same("agent db mount", agd.mnt / db_name, dbs / f"v{UPDATES + 1}.sqlite")
            q = subprocess.run(["sqlite3", f"file:{agd.mnt / db_name}?immutable=1", "SELECT count(*) FROM items"],
                               capture_output=True, text=True)
            sw["rows_via_mount"] = q.stdout.strip()
        sw["agent_rss_end"] = proc_status(agd.pid)
    finally:
        agd.stop()

    def med(key, sub=None):
        vals = [(u[sub][key] if sub else u[key]) for u in sw["updates"]]
        vals = [v for v in vals if v is not None]
        return statistics.median(vals) if vals else None

    sw["median"] = {k: med(k) for k in ("push_seconds", "switch_after_push_exit_s", "switch_after_watcher_saw_tag_s",
                                        "agent_last_switch_seconds", "fetched_bytes", "fetched_pct_db",
                                        "agent_cpu_s", "tag_seen_by_watcher_after_push_exit_s")}
    sw["median"]["rsync_seconds"] = med("seconds", "rsync")
    sw["median"]["rsync_literal_bytes"] = med("literal_bytes", "rsync")
    sw["median"]["new_bytes"] = statistics.median(u["push_report"]["new_bytes"] for u in sw["updates"])
    sw["median"]["uploaded_bytes"] = statistics.median(u["push_report"]["uploaded_bytes"] for u in sw["updates"])
    mm = sw["median"]
    sw["ratios"] = {
        "fetched_over_rsync_literal": ratio(mm["fetched_bytes"], mm["rsync_literal_bytes"]),
        "switch_over_rsync_time": ratio(mm["switch_after_push_exit_s"], mm["rsync_seconds"]),
    }
    res["switch"] = sw
    return finish(res, hub, hub_item)


def finish(res: dict, hub: Hub, hub_item: dict) -> dict:
    res["page_cache"] = page_cache_summary()
    res["machine"]["disk_free_bytes_at_end"] = shutil.disk_usage(BENCH_DIR).free
    res["machine"]["loadavg_at_end"] = os.getloadavg()
    res["quiet_wait"] = quiet_summary()
    hub.stop()
    RES.drop(hub_item)
    return res


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """Bytes in a size such as `64MiB` or `1GiB` (the agent config's binary units)."""
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "B": 1}
    for u, mult in units.items():
        if text.endswith(u):
            return int(float(text[: -len(u)]) * mult)
    return int(text)


def mib(n) -> str:
    return "n/a" if n is None else f"{n / MIB:,.1f} MiB"


def cpu(x: dict, key: str) -> str:
    v = x.get(f"{key}_cpu_s")
    return "–" if v is None else f"{v:.2f}"


def markdown(res: dict) -> str:
    m, d = res["machine"], res["dataset"]
    pc = res["page_cache"]
    v = m["versions"]
    q = res.get("quiet_wait", {})
    L: list[str] = []
    L.append(f"# Agent benchmark — {m['date']}\n")
    L.append(f"Command: `{m['command']}`\n")
    cache_note = ("dropped before every cold step (`sync; echo 3 > /proc/sys/vm/drop_caches`)"
                  if pc["cold_runs_really_cold"] else
                  f"NOT dropped ({pc['drops_succeeded']}/{pc['drops_attempted']} drops succeeded): 'cold' steps may be warm")
    L.append(f"Machine: {m['nproc']} cores ({m['cpu']}), {m['mem_total_bytes'] / GIB:.1f} GiB RAM, kernel {m['kernel']}, "
             f"work dir {m['bench_dir']} on {m['bench_dir_fs']}. Page cache: {cache_note}. One machine, loopback; "
             f"the hub stores on local disk (`file://`).\n")
    L.append(f"Versions: {v['aetherfs']} (workspace {m['git_commit']}, binary sha256 {v['aetherfs_sha256']}), "
             f"{v['rclone']}, {v['rsync']}, {v['curl']}, sqlite3 {v['sqlite3']}, {v['fuse3']}, {v['rustc']}.\n")
    L.append(f"Scale {m['scale']:g}, seed {m['seed']}; {m['runs_per_step']} run(s) per read step, median reported; "
             f"MB = 10^6 bytes. Agent: `cache.memory_size = \"{m['memory_tier']}\"`, `max_size = \"{DISK_MAX}\"`, "
             f"a key file, other settings default (fetch.readahead 8 MiB, concurrency 8).\n")
    L.append(f"Other load: before each timed step the script waited (up to {q.get('max_wait_s', 0):.0f} s each) for the "
             f"machine to be idle (< {q.get('idle_below_cores')} cores busy); it waited {q.get('total_waited_s', 0)} s "
             f"in total and measured {q.get('steps_measured_while_busy', 0)} of {q.get('steps', 0)} steps while still busy. "
             f"'other' = cores used by processes other than the measured ones during the step.\n")
    if res.get("errors"):
        L.append("**Problems seen:** " + "; ".join(res["errors"]) + "\n")

    b, rd = res["big"], res["read"]
    S, R = rd["steps"], rd["ratios"]
    L.append("## 1–2. Sequential read of a 1 GiB random file\n")
    L.append(f"`{b['bytes']:,}` bytes, {b['chunks']:,} chunks, stored {b['compression']} in {b['packs']} packs "
             f"({b['packs_bytes']:,} bytes with pack headers; the file's chunks: {b['stored_bytes']:,}). The dataset "
             f"holds only this file, so curl of all its packs whole moves the file's stored bytes plus pack headers. "
             f"`dd bs=1M`; MB/s are of the file's bytes.\n")
    L.append("| | time (s) | runs (s) | MB/s | client CPU (s) | agent / rclone CPU (s) | hub CPU (s) | other (cores) | fetched from hub (range requests) |")
    L.append("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    rows = [
        ("afs_cold", "agent, cold: empty cache, cold page cache (prefetch none)"),
        ("curl_seq", "curl of the file's packs, one connection, cold"),
        ("curl_par8", "curl of the file's packs, 8 in parallel, cold"),
        ("afs_disk_cold", "agent, from the encrypted disk cache (restarted: memory tier empty), cold page cache"),
        ("native_cold", "native dd of the plain file, cold page cache"),
        ("native_warm", "native dd of the plain file, warm page cache"),
        ("rclone_filled_cold", "rclone mount --vfs-cache-mode full, cache filled, cold page cache"),
        ("rclone_first", "rclone mount, first read (fills its cache; 1 run)"),
        ("afs_warm_pc", "agent, warm page cache re-read"),
        ("rclone_warm_pc", "rclone mount, warm page cache re-read"),
        ("afs_cold_ra0", "diagnostic: agent cold with `fetch.readahead = 0` (1 run)"),
    ]
    for k, name in rows:
        x = S.get(k)
        if x is None:
            continue
        server = cpu(x, "agent") if k.startswith("afs") else (cpu(x, "rclone") if k.startswith("rclone") else "–")
        am = x.get("agent_metrics", {})
        fetched = am.get("fetched_bytes_total")
        fetched_s = "–" if fetched is None else (f"{int(fetched):,}" + (
            f" = {fetched / b['bytes']:.2f}× the file ({int(am.get('fetch_duration_seconds_count', 0)):,})" if fetched else ""))
        L.append(f"| {name} | {f2(x['seconds'])} | {', '.join(f'{s:.2f}' for s in x['samples_s'])} | "
                 f"**{f1(x['mb_per_s'])}** | {x['cpu_user_s'] + x['cpu_sys_s']:.2f} | {server} | {cpu(x, 'hub')} | "
                 f"{x['other_load_cores']} | {fetched_s} |")
    L.append("")
    L.append("**Goal rows** (issue 12, same run, MB/s ratios, >1 = agent faster): "
             f"FUSE cold read from disk cache vs native cold **{R['afs_disk_cold_vs_native_cold']}** (goal ≥ 1.0); "
             f"FUSE warm re-read vs native warm **{R['afs_warm_pc_vs_native_warm']}** (goal ≥ 0.9); "
             f"first read vs curl 8 connections **{R['afs_cold_vs_curl_par8']}** (goal ≥ 1.0).\n")
    L.append(f"Ratios (MB/s, >1 = agent faster): cold agent / curl sequential **{R['afs_cold_vs_curl_seq']}**, "
             f"/ curl 8 parallel **{R['afs_cold_vs_curl_par8']}**; disk-cache read / native dd "
             f"**{R['afs_disk_cold_vs_native_cold']}**, / rclone (cache filled) **{R['afs_disk_cold_vs_rclone_filled_cold']}**; "
             f"warm page cache agent / rclone **{R['afs_warm_pc_vs_rclone_warm_pc']}**; cold agent with readahead 0 / "
             f"curl sequential **{R['afs_cold_ra0_vs_curl_seq']}**.\n")
    ac = res["agent_big_cache"]
    L.append(f"Disk cache after the read: {ac['disk']['entries']:,} entries, {mib(ac['disk']['bytes'])}. "
             f"Agent start to ready (empty cache): {', '.join(f'{s:.2f}' for s in ac['start_seconds'])} s.\n")
    tier = parse_size(MEMORY_TIER)
    cold_hwm = [x["VmHWM"] for x in ac.get("rss_after_cold_reads", [])]
    disk_hwm = ac["rss_after_reads"]["VmHWM"]
    if cold_hwm:
        L.append(f"**Agent peak memory** (VmHWM, memory tier {mib(tier)}; goal ≤ tier + 48 MiB): cold read from the hub "
                 f"{', '.join(mib(h) for h in cold_hwm)} (tier + {mib(max(cold_hwm) - tier)} at most); disk-cache "
                 f"reads and warm re-reads {mib(disk_hwm)} (tier + {mib(disk_hwm - tier)}); idle with the 1-file version "
                 f"{mib(ac['rss_idle_1_file']['VmRSS'])}.\n")
    prof = rd.get("profiles") or {}
    if prof:
        L.append("**Where the CPU goes** (`perf record -a -F 999` around one extra dd; CPU seconds per process "
                 "and share of its samples by category):\n")
        L.append("| read | process | CPU (s) | categories (% of the process's samples) |")
        L.append("|---|---|---:|---|")
        for pk, pv in prof.items():
            if "error" in pv:
                L.append(f"| {pk} | – | – | {pv['error']} |")
                continue
            for pn, px in pv["processes"].items():
                cats = ", ".join(f"{c} {p}%" for c, p in list(px["categories_pct"].items())[:6])
                L.append(f"| {pk} ({pv['wall_s']} s) | {pn} | {px['cpu_s']} | {cats} |")
        L.append("")

    if "memory" not in res:  # BENCH_AGENT_PARTS=read
        return "\n".join(L) + "\n"
    mem = res["memory"]
    L.append(f"## 3. Agent memory with {mem['files']:,} files mounted\n")
    L.append(f"{mem['dirs']} dirs × {mem['files'] // mem['dirs']:,} files of 16–512 bytes ({mib(mem['bytes'])}); "
             f"manifest {mem['manifest_bytes']:,} bytes ({mem['manifest_bytes'] / mem['files']:.0f} bytes/file); "
             f"`prefetch = \"metadata\"`. Ready {mem['start_seconds']:.2f} s after start. A baseline agent serving "
             f"the 1-file dataset had VmRSS {mib(mem['rss_1file_agent']['VmRSS'])} idle.\n")
    L.append("| state | VmRSS | VmHWM | RSS bytes/file | RSS above the 1-file agent, bytes/file | time (s) |")
    L.append("|---|---:|---:|---:|---:|---:|")
    for k, name, t in (("idle", "idle after ready", None), ("after_find", "after `find MNT \\| wc -l`", mem["find"]["seconds"]),
                       ("after_ls", "after `ls -lR MNT`", mem["ls"]["seconds"])):
        st = mem[k]
        L.append(f"| {name} | {mib(st['VmRSS'])} | {mib(st['VmHWM'])} | {st['rss_bytes_per_file']:,} | "
                 f"{st.get('rss_over_1file_agent_bytes_per_file', 'n/a'):,} | {f2(t)} |")
    pm = mem.get("plain_mount") or {}
    if pm.get("idle"):
        L.append(f"| diagnostic: `aetherfs mount` (no agent), idle | {mib(pm['idle']['VmRSS'])} | {mib(pm['idle']['VmHWM'])} | "
                 f"{round(pm['idle']['VmRSS'] / mem['files']):,} | | |")
        L.append(f"| diagnostic: `aetherfs mount`, after `ls -lR` | {mib(pm['after_ls']['VmRSS'])} | "
                 f"{mib(pm['after_ls']['VmHWM'])} | {round(pm['after_ls']['VmRSS'] / mem['files']):,} | | |")
    L.append(f"\nfind listed {mem['find']['lines']:,} entries (agent CPU {cpu(mem['find'], 'agent')} s); ls -lR agent "
             f"CPU {cpu(mem['ls'], 'agent')} s. Push of the tree took {mem['push']['seconds']:.2f} s.\n")

    sw = res["switch"]
    mm = sw["median"]
    L.append(f"## 4. Tag move → switch, 1% updates of a {mib(sw['db_bytes'][0])} SQLite database\n")
    L.append("The agent follows `bench/agent-db:latest` with `prefetch = \"all\"`. Each update rewrites the payloads "
             "of a contiguous 1% of the rows and inserts 1% new rows; the new database is pushed to `latest` (page "
             "cache dropped first). Switch time = from the `aetherfs push` process's exit (it tags, then exits) to the "
             f"first `/v1/mounts` answer (polled every {POLL_S * 1000:.0f} ms) showing the new digest. The agent's own "
             "measure (`aetherfs_mount_last_switch_seconds`) runs from its long-poll returning to the switch. Bytes "
             "fetched = delta of `aetherfs_fetched_bytes_total` (compressed pack bytes).\n")
    L.append("| update | push (s) | switch after push exit (ms) | agent's own measure (ms) | fetched from hub (range requests) | % of db | "
             "push new / uploaded bytes | rsync (s) | rsync literal data | % of db |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, u in enumerate(sw["updates"]):
        pr = u["push_report"]
        L.append(f"| {i + 1} | {u['push_seconds']:.2f} | {u['switch_after_push_exit_s'] * 1000:.0f} | "
                 f"{u['agent_last_switch_seconds'] * 1000:.0f} | {u['fetched_bytes']:,} ({u['range_requests']}) | {u['fetched_pct_db']}% | "
                 f"{pr['new_bytes']:,} / {pr['uploaded_bytes']:,} | {u['rsync']['seconds']:.2f} | "
                 f"{u['rsync']['literal_bytes']:,} | {u['rsync']['literal_pct_db']}% |")
    L.append(f"| **median** | **{mm['push_seconds']:.2f}** | **{mm['switch_after_push_exit_s'] * 1000:.0f}** | "
             f"**{mm['agent_last_switch_seconds'] * 1000:.0f}** | **{int(mm['fetched_bytes']):,}** | "
             f"**{mm['fetched_pct_db']}%** | {int(mm['new_bytes']):,} / {int(mm['uploaded_bytes']):,} | "
             f"**{mm['rsync_seconds']:.2f}** | **{int(mm['rsync_literal_bytes']):,}** | |")
    L.append(f"\nRatios: fetched / rsync literal data **{sw['ratios']['fetched_over_rsync_literal']}**; switch time / "
             f"rsync time **{sw['ratios']['switch_over_rsync_time']}**. A long-poll watcher on the hub saw the tag move "
             f"{f2((mm['tag_seen_by_watcher_after_push_exit_s'] or 0) * 1000)} ms after the push exited (median; "
             f"negative = before); the switch came {f2((mm['switch_after_watcher_saw_tag_s'] or 0) * 1000)} ms after "
             f"that. Agent CPU per switch: {f2(mm['agent_cpu_s'])} s. Initial prefetch of v1: "
             f"{int(sw['agent_initial_fetched_bytes']):,} bytes in {sw['agent_initial_range_requests']:,} range requests "
             f"(the push uploaded {sw['push_v1']['report']['uploaded_bytes']:,}), ready {sw['agent_start_seconds']:.2f} s after start."
             + (f" Rows read through the mount after the last switch: {sw.get('rows_via_mount')}." if sw.get('rows_via_mount') else "")
             + "\n")
    return "\n".join(L) + "\n"


def main() -> int:
    if "--cleanup" in sys.argv[1:]:
        Resources.load(STATE_FILE, undo).cleanup()
        return 0

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        res = bench()
    except (BenchError, subprocess.CalledProcessError, OSError) as e:
        log(f"FAILED: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        RES.cleanup()
    md = markdown(res)
    path = common.write_results("agent", md, res)
    print(md)
    log(f"results: {path} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
