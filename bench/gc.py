#!/usr/bin/env python3
"""The garbage-collection benchmark: does `aetherfs gc` really give the space back?

20 successive versions of a 256 MiB SQLite database (BENCH_SCALE scales it),
each with a clustered 1% update (a contiguous 1% of the rows get new random
payloads), pushed to one hub as `bench/db:latest`. The hub's retention keeps
the last 2 versions of the tag. After `aetherfs gc`, the store must hold at
most 1.15x the bytes of a fresh hub to which only those 2 versions were
pushed, and both must pull back byte-identical. Also reported: the store
before collection, what the collection deleted, copied and how long it took.
"""

import filecmp
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import (BENCH_DIR, CMDLINE, MIB, SCALE, SEED, BenchError, Hub, clustered_update, gen_db, log,
                    machine_facts, private_binary, rm, sqlite_rows, store_size, tool_version, write_results)

VERSIONS = 20
KEEP = 2
TARGET = 1.15


def aetherfs(bin_: Path, hub: Hub, *args: str) -> str:
    r = subprocess.run([str(bin_), "--hub", hub.url, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError(f"aetherfs {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


def main() -> int:
    work = BENCH_DIR / "gc"
    rm(work)
    work.mkdir(parents=True)
    bin_ = private_binary()
    rows = sqlite_rows(SCALE)
    src = work / "src"
    db = src / "db.sqlite"
    log(f"generating a {rows}-row SQLite database")
    gen_db(db, rows, SEED)
    life = work / "lifecycle.toml"
    life.write_text(f'[gc]\ngrace = "0s"\n[[retention]]\ndatasets = "**"\nkeep_last = {KEEP}\n')
    hub = Hub(bin_, work / "hub", work / "hub.log", extra_args=["--lifecycle", str(life)])
    hub.start()
    kept: list[tuple[str, Path]] = []
    push_secs = []
    try:
        for v in range(1, VERSIONS + 1):
            if v > 1:
                clustered_update(db, rows, v)
            t = time.monotonic()
            out = aetherfs(bin_, hub, "push", "-q", str(src), "bench/db:latest")
            push_secs.append(time.monotonic() - t)
            digest = out.strip().rsplit("@", 1)[1]
            if v > VERSIONS - KEEP:
                copy = work / f"v{v}"
                shutil.copytree(src, copy)
                kept.append((digest, copy))
            log(f"pushed v{v} ({digest[:19]}) in {push_secs[-1]:.2f} s")
        before = store_size(hub.data)
        t = time.monotonic()
        report = json.loads(aetherfs(bin_, hub, "gc", "--json"))
        gc_secs = time.monotonic() - t
        after = store_size(hub.data)
        log(f"gc in {gc_secs:.2f} s: {before['file_bytes']} -> {after['file_bytes']} bytes")
        identical = True
        for digest, copy in kept:
            out = work / f"pulled-{digest[7:19]}"
            aetherfs(bin_, hub, "pull", "-q", f"bench/db@{digest}", str(out))
            same = filecmp.cmp(out / "db.sqlite", copy / "db.sqlite", shallow=False)
            identical &= same
            log(f"pull of {digest[:19]}: {'identical' if same else 'DIFFERENT'}")
            rm(out)
    finally:
        hub.stop()

    fresh = Hub(bin_, work / "fresh", work / "fresh.log")
    fresh.start()
    try:
        for _digest, copy in kept:
            aetherfs(bin_, fresh, "push", "-q", str(copy), "bench/db:latest")
        baseline = store_size(fresh.data)
    finally:
        fresh.stop()

    ratio = after["file_bytes"] / baseline["file_bytes"]
    ok = ratio <= TARGET and identical
    res = {
        "versions": VERSIONS, "keep": KEEP, "rows": rows, "db_bytes": db.stat().st_size,
        "store_before_gc": before, "store_after_gc": after, "fresh_hub_with_kept_versions": baseline,
        "ratio_after_gc_to_fresh": ratio, "target": TARGET, "pulls_identical": identical, "gc_seconds": gc_secs,
        "gc_report": report, "push_seconds": push_secs, "cmdline": CMDLINE,
        "machine": machine_facts(bin_, {"sqlite3": tool_version(["sqlite3", "--version"])}),
    }
    mib = lambda b: f"{b / MIB:.1f} MiB"
    md = f"""# Garbage collection: {VERSIONS} versions of a {mib(db.stat().st_size)} SQLite database, keep the last {KEEP}

Command: `{CMDLINE}`

| what | bytes |
|---|---|
| store after {VERSIONS} pushes, before `gc` | {mib(before['file_bytes'])} |
| store after `gc` | {mib(after['file_bytes'])} |
| fresh hub holding only the last {KEEP} versions | {mib(baseline['file_bytes'])} |
| **ratio after `gc` / fresh** | **{ratio:.3f}** (target <= {TARGET}) |

`gc` took {gc_secs:.2f} s: removed {len(report['versions_removed'])} versions, deleted {report['packs_deleted']} packs
({mib(report['bytes_deleted'])}), rewrote {report['packs_rewritten']} packs into {report['packs_written']}
({mib(report['bytes_written'])} copied). Live bytes after: {mib(report['live_bytes'])}.
The last {KEEP} versions pull back byte-identical: **{'yes' if identical else 'NO'}**.

Median push of a 1% update: {sorted(push_secs[1:])[len(push_secs[1:]) // 2]:.2f} s.
"""
    path = write_results("gc", md, res)
    print(md)
    log(f"results in {path}")
    if not ok:
        log(f"FAILED: ratio {ratio:.3f} (target {TARGET}), identical pulls: {identical}")
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        log(f"error: {e}")
        sys.exit(2)
