#!/usr/bin/env python3
"""The chunk-index benchmark: does the hub's start and memory stay flat as the store grows?

A synthetic store of 10,000 packs and 5,000,000 chunks in the real layout
(hub/examples/synth_store.rs: real pack indexes, manifests, placements,
links, tags and pack log; sparse pack bodies) over 100 datasets. Measured:
the hub's time from spawn to `/readyz` 200 and its resident memory once
ready (targets: < 2 s, < 128 MiB). Then, on the same store, a 256 MiB SQLite
database (BENCH_SCALE scales it) is pushed as `bench/db:latest`, the hub is
restarted (no local state survives), a clustered 1% update (gc.py's) is
pushed, and the second push must upload about 1% of the database: dedup
finds the base version's chunks through its tag, not through an index of
every chunk (the restarted hub reads 1 s of the pack log, so the first
push's packs are not among its recent ones). BENCH_RECENT=N logs the newest N packs within the last hour
(a busy day), to show the start reading them up to the index bound.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import (BENCH_DIR, CMDLINE, MIB, ROOT, SCALE, SEED, BenchError, Hub, clustered_update, env_int, gen_db,
                    log, machine_facts, private_binary, proc_status, rm, sqlite_rows, store_size, tool_version,
                    write_results)

PACKS = env_int("BENCH_PACKS", 10_000)
CHUNKS_PER_PACK = env_int("BENCH_CHUNKS_PER_PACK", 500)
RECENT = env_int("BENCH_RECENT", 0)
READY_TARGET_S = 2.0
RSS_TARGET = 128 * MIB


def push(bin_: Path, hub: Hub, src: Path) -> dict:
    r = subprocess.run([str(bin_), "--hub", hub.url, "push", "--json", str(src), "bench/db:latest"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError(f"push failed: {r.stderr.strip()}")
    return json.loads(r.stdout)


def start(hub: Hub) -> float:
    t = time.monotonic()
    hub.start()
    return time.monotonic() - t


def main() -> int:
    work = BENCH_DIR / "index"
    rm(work)
    work.mkdir(parents=True)
    bin_ = private_binary()
    synth = Path(os.environ.get("BENCH_SYNTH_BIN") or ROOT / "target" / "release" / "examples" / "synth_store")
    data = work / "hub"
    log(f"writing a synthetic store: {PACKS} packs x {CHUNKS_PER_PACK} chunks")
    t = time.monotonic()
    r = subprocess.run([str(synth), str(data), "--packs", str(PACKS), "--chunks", str(CHUNKS_PER_PACK),
                        "--recent", str(RECENT)], capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError(f"synth_store failed: {r.stderr.strip()}")
    synth_facts = json.loads(r.stdout)
    gen_secs = time.monotonic() - t
    stored = store_size(data)
    log(f"store written in {gen_secs:.1f} s: {synth_facts}")

    hub = Hub(bin_, data, work / "hub.log")
    ready_cold = start(hub)
    mem_ready = proc_status(hub.proc.pid)
    log(f"ready in {ready_cold:.2f} s, {mem_ready['VmRSS'] / MIB:.1f} MiB resident")

    src = work / "src"
    db = src / "db.sqlite"
    rows = sqlite_rows(SCALE)
    log(f"generating a {rows}-row SQLite database")
    gen_db(db, rows, SEED)
    db_bytes = db.stat().st_size
    try:
        first = push(bin_, hub, src)
        mem_first = proc_status(hub.proc.pid)
        hub.stop()
        # Restarted with a 1 s log window (and 2 s later), so the first push's
        # packs are not among the recent ones: dedup must come from the tag.
        time.sleep(2)
        hub.extra_args = ["--index-window-secs", "1"]
        ready_again = start(hub)
        mem_restart = proc_status(hub.proc.pid)
        clustered_update(db, rows, 2)
        second = push(bin_, hub, src)
        mem_second = proc_status(hub.proc.pid)
    finally:
        hub.stop()
    share = second["new_bytes"] / db_bytes
    sent_share = second["uploaded_bytes"] / db_bytes
    ok = ready_cold < READY_TARGET_S and mem_ready["VmRSS"] < RSS_TARGET and share < 0.03
    res = {
        "packs": PACKS, "chunks_per_pack": CHUNKS_PER_PACK, "recent": RECENT, "synth": synth_facts,
        "synth_seconds": gen_secs, "store": stored, "ready_seconds_cold": ready_cold,
        "ready_seconds_after_restart": ready_again, "memory_ready": mem_ready, "memory_after_first_push": mem_first,
        "memory_after_restart": mem_restart, "memory_after_second_push": mem_second, "db_bytes": db_bytes,
        "rows": rows, "first_push": first, "second_push": second, "second_new_share": share,
        "second_uploaded_share": sent_share, "ok": ok, "cmdline": CMDLINE,
        "machine": machine_facts(bin_, {"sqlite3": tool_version(["sqlite3", "--version"])}),
    }
    mib = lambda b: f"{b / MIB:.1f} MiB"
    md = f"""# The chunk index at scale: {synth_facts['packs']} packs, {synth_facts['chunks']} chunks

Command: `{CMDLINE}`

Store: {synth_facts['packs']} packs of {CHUNKS_PER_PACK} chunks ({synth_facts['chunks']} chunks) over
{synth_facts['datasets']} datasets, {RECENT} packs logged in the last hour; {mib(stored['file_bytes'])} of files
(pack bodies sparse).

| what | measured | target |
|---|---|---|
| spawn to `/readyz` 200 | {ready_cold:.2f} s | < {READY_TARGET_S} s |
| resident memory once ready | {mib(mem_ready['VmRSS'])} | < {mib(RSS_TARGET)} |
| spawn to ready after a restart (+ the db's packs) | {ready_again:.2f} s | |
| resident after the first push / peak so far | {mib(mem_first['VmRSS'])} / {mib(mem_first['VmHWM'])} | |
| resident after restart + 1% push / peak since restart | {mib(mem_second['VmRSS'])} / {mib(mem_second['VmHWM'])} | |

The {mib(db_bytes)} database ({rows} rows): the first push uploaded {mib(first['new_bytes'])} of chunks
({mib(first['uploaded_bytes'])} sent). After a restart of the hub (`--index-window-secs 1`: the first push's
packs are not among its recent packs) and a clustered 1% update, the second push
found {second['chunks'] - second['new_chunks']} of {second['chunks']} chunks stored and uploaded
**{mib(second['new_bytes'])} ({share:.2%} of the database)**, {mib(second['uploaded_bytes'])} sent
({sent_share:.2%}); target: about 1% (< 3%).

Result: **{'pass' if ok else 'FAIL'}**.
"""
    path = write_results("index" + (f"-recent{RECENT}" if RECENT else ""), md, res)
    print(md)
    log(f"results in {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        log(f"error: {e}")
        sys.exit(2)
