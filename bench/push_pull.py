#!/usr/bin/env python3
"""Push/pull benchmark of AetherFS against restic, rsync, casync and cp.

Run it through bench/push-pull.sh, which installs the peers and builds the
release binary first. See bench/README.md for what each step measures.
"""

from __future__ import annotations

import filecmp
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import common
from common import (BENCH_DIR, CITIES, MB, MIB, RUNS, SCALE, SEED, VERIFY, BenchError, Hub, Run,
                    db_insert_sql, gen_db, gen_random_file, log, median_run, page_cache_summary, quiet_summary,
                    rm, run_sqlite, samples_of, sqlite_rows, store_size, sync_seconds, tool_version, tree_size)

BIN = common.BUILT_BIN  # replaced by a private copy in bench(), so a concurrent rebuild cannot swap it mid-run

GEN_VERSION = 3  # bump when the generator changes: invalidates cached datasets
# "issue" (default): issue 12's shape, a 1 GiB random file, a 71 MB SQLite
# database, 100,000 small files in 100 directories and a 1,000-entry
# directory (~1.5 GiB at scale 1). "classic": the earlier ~1 GiB mix (5,000
# small files, four model files, a CSV).
DATASET_KIND = os.environ.get("BENCH_DATASET", "issue")
if DATASET_KIND not in ("issue", "classic"):
    raise SystemExit(f"BENCH_DATASET must be issue or classic, not {DATASET_KIND!r}")
HUB_PIDFILE = Path(os.environ.get("BENCH_HUB_PIDFILE") or (BENCH_DIR / "hub.pid"))

DATASET = "bench/data"
RESTIC_PASSWORD = "aetherfs-bench"  # a throwaway local repository
CHUNK_SPEC = "16384:65536:262144"  # casync, matched to AetherFS's FastCDC min:avg:max


# --------------------------------------------------------------------------
# Dataset generation (deterministic, seeded, cached)
# --------------------------------------------------------------------------


def make_words(rng: random.Random, n: int) -> list[str]:
    syll = ["ka", "to", "ri", "mo", "ne", "sa", "lu", "vi", "de", "po", "an", "er", "in",
            "ul", "ch", "st", "ra", "el", "or", "ma", "ti", "ge", "bo", "fa"]
    words = set()
    while len(words) < n:
        words.add("".join(rng.choice(syll) for _ in range(rng.randint(1, 4))))
    return sorted(words)


def refresh_plan(rows: int) -> dict:
    k = max(1, rows // 100)
    first = int(rows * 0.37)
    return {"rows": rows, "update_first_id": first, "update_last_id": first + k - 1,
            "updated_rows": k, "insert_first_id": rows + 1, "insert_last_id": rows + k,
            "inserted_rows": k}


def gen_refresh(old: Path, new: Path, plan: dict, seed: int) -> None:
    """The 1% refresh: new payloads for a contiguous 1% of rows, 1% new rows."""
    shutil.copyfile(old, new)
    script = f""".testctrl prng_seed {(seed + 1) % 2_000_000_000}
BEGIN;
UPDATE items SET payload = randomblob(length(payload)), price = round(price * 1.01, 2)
 WHERE id BETWEEN {plan['update_first_id']} AND {plan['update_last_id']};
{db_insert_sql(plan['insert_first_id'], plan['insert_last_id'])}
COMMIT;
"""
    run_sqlite(new, script)


def text_blob(rng: random.Random, words: list[str], size: int) -> str:
    out, n = [], 0
    while n < size:
        line = " ".join(rng.choices(words, k=rng.randint(6, 16))) + ".\n"
        out.append(line)
        n += len(line)
    return "".join(out)[:size]


def csv_blob(rng: random.Random, words: list[str], size: int, start: int = 0) -> str:
    out, n, i = ["id,ts,city,qty,price,label\n"], 0, start
    while n < size:
        line = (f"{i},2025-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z,"
                f"{CITIES[rng.randrange(len(CITIES))]},{rng.randrange(1000)},"
                f"{rng.randrange(100000) / 100:.2f},{rng.choice(words)} {rng.choice(words)}\n")
        out.append(line)
        n += len(line)
        i += 1
    return "".join(out)


def json_blob(rng: random.Random, words: list[str], size: int) -> str:
    recs, n = [], 0
    while n < size:
        rec = {"id": rng.randrange(10**9), "name": rng.choice(words), "city": rng.choice(CITIES),
               "tags": rng.sample(words, 3), "score": round(rng.random() * 100, 3),
               "active": rng.random() < 0.5}
        recs.append(rec)
        n += 120
    return json.dumps(recs, indent=1) + "\n"


def gen_small_files(root: Path, count: int, rng: random.Random, words: list[str]) -> None:
    kinds = [("tables", "csv"), ("docs", "txt"), ("meta", "json")]
    for i in range(count):
        kind, ext = kinds[i % 3]
        parts = [kind, f"g{rng.randrange(8):02d}", f"s{rng.randrange(6):02d}"]
        if rng.random() < 0.4:
            parts.append(f"t{rng.randrange(4)}")
        size = int(min(256 * 1024, max(64, rng.lognormvariate(8.7, 1.0))))  # median ~6 KiB
        if ext == "csv":
            body = csv_blob(rng, words, size, start=i * 1000)
        elif ext == "txt":
            body = text_blob(rng, words, size)
        else:
            body = json_blob(rng, words, size)
        d = root.joinpath(*parts)
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{kind[:-1] if kind != 'meta' else 'rec'}-{i:05d}.{ext}").write_text(body)


def gen_big_csv(path: Path, size: int, seed: int, words: list[str]) -> None:
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        written, start = 0, 0
        while written < size:
            block = csv_blob(rng, words, min(4 * MIB, size - written), start)
            if start:
                block = block.split("\n", 1)[1]  # the header only once
            f.write(block)
            written += len(block)
            start += 40_000


def gen_issue_small_files(root: Path, count: int, dirs: int, rng: random.Random, words: list[str]) -> None:
    """`count` text files spread over `dirs` directories, ~3 KiB median
    (lognormal, 64 B to 64 KiB): slices of one text corpus, each with its own
    first line, so no two files are alike."""
    corpus = text_blob(rng, words, 4 * MIB)
    for d in range(dirs):
        (root / f"d{d:03d}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        size = int(min(64 * 1024, max(64, rng.lognormvariate(8.0, 0.8))))
        at = rng.randrange(len(corpus) - size)
        body = f"file {i} seed {rng.randrange(10**9)}\n" + corpus[at:at + size]
        (root / f"d{i % dirs:03d}" / f"f{i:06d}.txt").write_text(body)


def issue_params() -> dict:
    rows = max(1000, int(71e6 * SCALE / 1384))
    return {
        "kind": "issue", "gen_version": GEN_VERSION, "scale": SCALE, "seed": SEED,
        "sqlite_rows": rows, "small_files": max(100, round(100_000 * SCALE)), "small_dirs": 100,
        "wide_entries": max(10, round(1000 * SCALE)), "random_bytes": int(1024 * MIB * SCALE),
        "refresh": refresh_plan(rows),
    }


def dataset_params() -> dict:
    if DATASET_KIND == "issue":
        return issue_params()
    rows = sqlite_rows(SCALE)
    return {
        "gen_version": GEN_VERSION, "scale": SCALE, "seed": SEED,
        "sqlite_rows": rows, "small_files": max(30, round(5000 * SCALE)),
        "models": 4, "model_bytes": int(128 * MIB * SCALE),
        "big_csv_bytes": int(160 * MIB * SCALE),
        "refresh": refresh_plan(rows),
    }


def ensure_dataset() -> tuple[Path, Path, dict]:
    """Returns (v1 tree, refreshed db, params), generating them unless cached."""
    params = dataset_params()
    key = f"dataset-g{GEN_VERSION}-s{SCALE:g}-seed{SEED}" + ("-issue" if DATASET_KIND == "issue" else "")
    root = BENCH_DIR / key
    stamp = root / "STAMP.json"
    v1, new_db = root / "v1", root / "refresh" / "catalog.sqlite"
    if stamp.exists() and json.loads(stamp.read_text()).get("params") == params:
        log(f"dataset: cached at {root}")
        return v1, new_db, json.loads(stamp.read_text())
    if root.exists():
        shutil.rmtree(root)
    log(f"dataset: generating at {root} (scale {SCALE:g}, seed {SEED})")
    t0 = time.perf_counter()
    rng = random.Random(SEED)
    words = make_words(rng, 3000)
    gen_db(v1 / "db" / "catalog.sqlite", params["sqlite_rows"], SEED)
    log(f"dataset: sqlite db {os.path.getsize(v1 / 'db' / 'catalog.sqlite') / MIB:.1f} MiB")
    if DATASET_KIND == "issue":
        gen_random_file(v1 / "models" / "random.bin", params["random_bytes"], SEED + 100)
        gen_issue_small_files(v1 / "small", params["small_files"], params["small_dirs"], random.Random(SEED + 1), words)
        wide = v1 / "wide"
        wide.mkdir(parents=True)
        wrng = random.Random(SEED + 3)
        for i in range(params["wide_entries"]):
            (wide / f"entry-{i:04d}.json").write_text(json_blob(wrng, words, 600))
    else:
        gen_small_files(v1 / "small", params["small_files"], random.Random(SEED + 1), words)
        for i in range(params["models"]):
            gen_random_file(v1 / "models" / f"model-{i}.bin", params["model_bytes"], SEED + 100 + i)
        gen_big_csv(v1 / "tables" / "events.csv", params["big_csv_bytes"], SEED + 2, words)
    new_db.parent.mkdir(parents=True, exist_ok=True)
    gen_refresh(v1 / "db" / "catalog.sqlite", new_db, params["refresh"], SEED)
    files, size = tree_size(v1)
    meta = {"params": params, "files": files, "bytes": size,
            "db_bytes": os.path.getsize(v1 / "db" / "catalog.sqlite"),
            "new_db_bytes": os.path.getsize(new_db),
            "generate_seconds": round(time.perf_counter() - t0, 1)}
    stamp.write_text(json.dumps(meta, indent=1))
    log(f"dataset: {files} files, {size / MIB:.0f} MiB in {meta['generate_seconds']} s")
    return v1, new_db, meta


# --------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------


HUB = None  # the running Hub, for the samplers


def run_timed(label: str, cmd: list[str], *, env: dict | None = None, cold: bool = False,
              cwd: Path | None = None) -> Run:
    hub_pid = HUB.pid if HUB else None
    return common.run_timed(label, cmd, env=env, cold=cold, cwd=cwd, hub_pid=hub_pid)


def push_phases(r: Run, threshold: int = MIB) -> dict:
    """Splits a push at its first upload: before it the client walks, chunks and
    hashes (and builds the first pack); after it, it packs and uploads."""
    s = r.samples
    if len(s) < 2:
        return {}
    w0 = s[0]["wchar"]
    first = next((x for x in s if x["wchar"] - w0 > threshold), None)
    if first is None:
        return {"hash_phase_s": round(r.wall, 2), "upload_phase_s": 0.0}
    t = first["t"]
    c0, c1, c2 = s[0]["cpu"], first["cpu"], s[-1]["cpu"]
    h0, h1, h2 = s[0]["hub_cpu"], first["hub_cpu"], s[-1]["hub_cpu"]
    up_wall = max(1e-9, s[-1]["t"] - t)
    out = {"hash_phase_s": round(t, 2), "upload_phase_s": round(r.wall - t, 2),
           "hash_phase_client_cores": round((c1 - c0) / t, 2) if t > 0 else None,
           "upload_phase_client_cores": round((c2 - c1) / up_wall, 2)}
    if h0 is not None and h1 is not None and h2 is not None:
        out["upload_phase_hub_cores"] = round((h2 - h1) / up_wall, 2)
    return out


# --------------------------------------------------------------------------
# The hub
# --------------------------------------------------------------------------


def afs(*args: str) -> list[str]:
    return [str(BIN), *args]


STAT_CACHE = BENCH_DIR / "work" / "stat-cache"  # the push's stat cache, emptied before every first push


def afs_env() -> dict:
    return {"AETHERFS_HUB": HUB.url, "AETHERFS_STAT_CACHE_DIR": str(STAT_CACHE)}


# --------------------------------------------------------------------------
# restic, casync, rsync
# --------------------------------------------------------------------------

def restic_env(repo: Path) -> dict:
    return {"RESTIC_PASSWORD": RESTIC_PASSWORD, "RESTIC_REPOSITORY": str(repo)}


def restic_fresh(repo: Path, cache: Path) -> None:
    for d in (repo, cache):
        if d.exists():
            shutil.rmtree(d)
    subprocess.run(["restic", "init", "--repository-version", "2", "-q"],
                   env={**os.environ, **restic_env(repo)}, check=True, stdout=subprocess.DEVNULL)


def restic_summary(r: Run) -> dict:
    out = None
    for line in r.stdout.splitlines():
        if '"summary"' in line:
            try:
                out = json.loads(line)
            except json.JSONDecodeError:
                pass
    if out is None:
        raise BenchError(f"{r.label}: no summary in restic's --json output")
    return out


def read_caibx(path: Path) -> list[tuple[bytes, int]]:
    """(chunk id, length) of every chunk in a casync blob index (.caibx)."""
    data = path.read_bytes()
    # CaFormatIndex: size, type, feature flags, chunk size min/avg/max (6 x u64).
    size, = struct.unpack_from("<Q", data, 0)
    off = size
    # CaFormatTable header: size (u64, UINT64_MAX), type (u64); then items of
    # (end offset u64, chunk id 32 bytes); the tail starts with offset 0.
    off += 16
    chunks, prev = [], 0
    while off + 40 <= len(data):
        end, = struct.unpack_from("<Q", data, off)
        if end == 0:
            break
        chunks.append((data[off + 8:off + 40], end - prev))
        prev = end
        off += 40
    return chunks


# --------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------


def machine_facts() -> dict:
    return common.machine_facts(BIN, {
        "restic": tool_version(["restic", "version"]),
        "casync": tool_version(["casync", "--version"]),
        "rsync": tool_version(["rsync", "--version"]),
        "sqlite3": tool_version(["sqlite3", "--version"]).split(" ")[0],
    })


def hardlink_tree(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    subprocess.run(["cp", "-al", str(src), str(dst)], check=True)


def verify_tree(a: Path, b: Path) -> dict:
    """Compares two trees file by file (content, not only size)."""
    fa, sa = tree_size(a)
    fb, sb = tree_size(b)
    mismatched = []
    for dp, _dn, fns in os.walk(a):
        for fn in fns:
            pa = Path(dp) / fn
            pb = b / pa.relative_to(a)
            if not pb.exists() or not filecmp.cmp(pa, pb, shallow=False):
                mismatched.append(str(pa.relative_to(a)))
    return {"files": [fa, fb], "bytes": [sa, sb], "mismatched": mismatched[:20],
            "identical": fa == fb and sa == sb and not mismatched}


def bench() -> dict:
    global HUB
    global BIN
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    (BENCH_DIR / "bin").mkdir(exist_ok=True)
    BIN = common.private_binary(BENCH_DIR)
    facts = machine_facts()
    v1_src, new_db_src, dsmeta = ensure_dataset()
    work = BENCH_DIR / "work"
    rm(work)
    work.mkdir(parents=True)
    stage = work / "stage" / "data"  # one path for v1 and v2, as a CI job would have
    stage.parent.mkdir(parents=True)
    hardlink_tree(v1_src, stage)
    db_rel = Path("db") / "catalog.sqlite"
    files, data_bytes = tree_size(stage)
    res: dict = {"machine": facts, "dataset": {**dsmeta, "path": str(stage)}}
    ds = res["dataset"]
    log(f"stage: {files} files, {data_bytes / MIB:.0f} MiB at {stage}")

    HUB = Hub(BIN, BENCH_DIR / "hub-data", work / "hub.log", HUB_PIDFILE)
    repo, rcache = work / "restic-repo", work / "restic-cache"

    # 1. Initial push vs restic backup (cold page cache, fresh stores) ------------
    pushes, backups = [], []
    for i in range(RUNS):
        HUB.fresh()
        rm(STAT_CACHE)
        r = run_timed(f"push v1 [{i + 1}/{RUNS}]", afs("push", "--json", str(stage), f"{DATASET}:v1"),
                      env=afs_env(), cold=True)
        r.extra.update(push_phases(r))
        pushes.append(r)
        restic_fresh(repo, rcache)
        b = run_timed(f"restic backup [{i + 1}/{RUNS}]",
                      ["restic", "backup", "--json", "--cache-dir", str(rcache), str(stage)],
                      env=restic_env(repo), cold=True)
        backups.append(b)
    push1, backup1 = median_run(pushes), median_run(backups)
    # The stores as the last run left them (every run starts from empty, so they are alike).
    hub_store = store_size(HUB.data)
    restic_store = store_size(repo)
    rs = restic_summary(backups[-1])
    res["push"] = {
        "aetherfs": {**push1.summary(), "samples_s": samples_of(pushes), "report": pushes[-1].json(),
                     "store": hub_store, "mb_per_s": round(data_bytes / MB / push1.wall, 1)},
        "restic": {**backup1.summary(), "samples_s": samples_of(backups), "summary": rs,
                   "store": restic_store, "mb_per_s": round(data_bytes / MB / backup1.wall, 1)},
    }
    res["push"]["mbps_ratio_aetherfs_over_restic"] = round(backup1.wall / push1.wall, 3)
    res["push"]["stored_ratio_aetherfs_over_restic"] = round(hub_store["file_bytes"] / max(1, restic_store["file_bytes"]), 3)

    # 2. Re-push / re-backup of unchanged data ----------------------------------
    repush_cold, repush_warm, rebackup, rebackup_force, repush_rehash = [], [], [], [], []
    for i in range(RUNS):
        repush_rehash.append(run_timed(f"re-push unchanged --no-stat-cache, cold [{i + 1}/{RUNS}]",
                                       afs("push", "--json", "--no-stat-cache", str(stage), f"{DATASET}:v1"),
                                       env=afs_env(), cold=True))
        repush_cold.append(run_timed(f"re-push unchanged, cold [{i + 1}/{RUNS}]",
                                     afs("push", "--json", str(stage), f"{DATASET}:v1"), env=afs_env(), cold=True))
        repush_warm.append(run_timed(f"re-push unchanged, warm [{i + 1}/{RUNS}]",
                                     afs("push", "--json", str(stage), f"{DATASET}:v1"), env=afs_env()))
        rebackup.append(run_timed(f"restic re-backup, cold [{i + 1}/{RUNS}]",
                                  ["restic", "backup", "--json", "--cache-dir", str(rcache), str(stage)],
                                  env=restic_env(repo), cold=True))
        rebackup_force.append(run_timed(f"restic re-backup --force, cold [{i + 1}/{RUNS}]",
                                        ["restic", "backup", "--json", "--force", "--cache-dir", str(rcache), str(stage)],
                                        env=restic_env(repo), cold=True))
    rpc, rpw, rb, rbf, rph = (median_run(x) for x in (repush_cold, repush_warm, rebackup, rebackup_force, repush_rehash))
    res["repush"] = {
        "aetherfs_rehash_cold": {**rph.summary(), "samples_s": samples_of(repush_rehash), "report": rph.json()},
        "speedup_aetherfs_over_restic": round(rb.wall / rpc.wall, 3),
        "aetherfs_cold": {**rpc.summary(), "samples_s": samples_of(repush_cold), "report": rpc.json()},
        "aetherfs_warm": {**rpw.summary(), "samples_s": samples_of(repush_warm), "report": rpw.json()},
        "restic_cold": {**rb.summary(), "samples_s": samples_of(rebackup), "summary": restic_summary(rb)},
        "restic_force_cold": {**rbf.summary(), "samples_s": samples_of(rebackup_force), "summary": restic_summary(rbf)},
        "time_ratio_aetherfs_over_restic": round(rpc.wall / rb.wall, 3),
        "time_ratio_aetherfs_over_restic_force": round(rpc.wall / rbf.wall, 3),
    }

    # 3. Pull into an empty dir vs cp -r (and restic restore) ------------------
    pull_fsync, pull_nofsync, cps, restores = [], [], [], []
    out_pull = work / "pull-v1"
    out_cp = work / "cp-v1"
    out_restore = work / "restic-restore"
    for i in range(RUNS):
        rm(out_pull)
        r = run_timed(f"pull v1 (fsync) [{i + 1}/{RUNS}]", afs("pull", "--json", f"{DATASET}:v1", str(out_pull)),
                      env=afs_env(), cold=True)
        r.extra["sync_after_s"] = round(sync_seconds(), 3)
        pull_fsync.append(r)
        rm(out_pull)
        r = run_timed(f"pull v1 --no-fsync [{i + 1}/{RUNS}]",
                      afs("pull", "--json", "--no-fsync", f"{DATASET}:v1", str(out_pull)), env=afs_env(), cold=True)
        r.extra["sync_after_s"] = round(sync_seconds(), 3)
        pull_nofsync.append(r)
        rm(out_cp)
        r = run_timed(f"cp -r [{i + 1}/{RUNS}]", ["cp", "-r", str(stage), str(out_cp)], cold=True)
        r.extra["sync_after_s"] = round(sync_seconds(), 3)
        cps.append(r)
        rm(out_restore)
        r = run_timed(f"restic restore [{i + 1}/{RUNS}]",
                      ["restic", "restore", "latest", "--cache-dir", str(rcache), "--target", str(out_restore)],
                      env=restic_env(repo), cold=True)
        r.extra["sync_after_s"] = round(sync_seconds(), 3)
        restores.append(r)
        rm(out_restore)
    rm(out_cp)
    pf, pn, cpm, rr = (median_run(x) for x in (pull_fsync, pull_nofsync, cps, restores))
    # Leave a v1 tree in out_pull for the refresh (the last pull was --no-fsync; same bytes).
    verify = verify_tree(stage, out_pull) if VERIFY else None
    if verify is not None and not verify["identical"]:
        raise BenchError(f"pulled tree differs from the source: {verify}")

    def with_rate(r: Run, runs: list[Run]) -> dict:
        return {**r.summary(), "samples_s": samples_of(runs), "mb_per_s": round(data_bytes / MB / r.wall, 1),
                "mb_per_s_incl_sync": round(data_bytes / MB / (r.wall + r.extra.get("sync_after_s", 0)), 1)}

    res["pull"] = {
        "aetherfs_fsync": {**with_rate(pf, pull_fsync), "report": pf.json()},
        "aetherfs_no_fsync": {**with_rate(pn, pull_nofsync), "report": pn.json()},
        "cp_r": with_rate(cpm, cps),
        "restic_restore": with_rate(rr, restores),
        "verified_identical": verify["identical"] if verify else None,
        "time_ratio_fsync_over_cp": round(pf.wall / cpm.wall, 3),
        "time_ratio_no_fsync_over_cp": round(pn.wall / cpm.wall, 3),
        "time_ratio_fsync_over_cp_plus_sync": round(pf.wall / (cpm.wall + cpm.extra["sync_after_s"]), 3),
    }

    # 4. The 1% SQLite refresh ---------------------------------------------------
    old_db = v1_src / db_rel
    old_size, new_size = old_db.stat().st_size, new_db_src.stat().st_size
    # A real copy of v1 (mtimes kept) for the whole-tree rsync comparison.
    rtree = work / "rsync-tree"
    rtree.mkdir()
    subprocess.run(["cp", "-a", f"{stage}/.", str(rtree)], check=True)
    # Swap the refreshed database into the staged tree (same path, as CI would).
    (stage / db_rel).unlink()
    os.link(new_db_src, stage / db_rel)
    v2 = run_timed("push v2 (1% refresh)", afs("push", "--json", str(stage), f"{DATASET}:v2"),
                   env=afs_env(), cold=True)
    v2.extra.update(push_phases(v2))
    v2r = v2.json()
    hub_before = hub_store
    hub_after = store_size(HUB.data)
    rb2 = run_timed("restic backup v2", ["restic", "backup", "--json", "--cache-dir", str(rcache), str(stage)],
                    env=restic_env(repo), cold=True)
    restic_after = store_size(repo)
    # Pull v2 into the directory holding v1, and the rsync equivalents. Each run
    # first puts the v1 database back (the other files are identical in v1 and v2).
    pulls_v2, rsyncs_db, rsyncs_tree = [], [], []
    rdir = work / "rsync"
    rdir.mkdir()
    for i in range(RUNS):
        if i:
            shutil.copyfile(old_db, out_pull / db_rel)
        pulls_v2.append(run_timed(f"pull v2 into v1 dir [{i + 1}/{RUNS}]",
                                  afs("pull", "--json", f"{DATASET}:v2", str(out_pull)), env=afs_env(), cold=True))
        # rsync's delta algorithm, db only (local copies default to --whole-file).
        shutil.copyfile(old_db, rdir / "catalog.sqlite")
        rsyncs_db.append(run_timed(f"rsync --no-whole-file (db) [{i + 1}/{RUNS}]",
                                   ["rsync", "--stats", "--no-whole-file", str(new_db_src), str(rdir / "catalog.sqlite")],
                                   cold=True))
        # The same update as a whole-tree rsync: size+mtime quick check skips the
        # unchanged files, the delta algorithm moves the database.
        subprocess.run(["cp", "-a", str(old_db), str(rtree / db_rel)], check=True)
        rsyncs_tree.append(run_timed(f"rsync -a --no-whole-file (tree) [{i + 1}/{RUNS}]",
                                     ["rsync", "-a", "--stats", "--no-whole-file", f"{stage}/", f"{rtree}/"], cold=True))
    pv2, rsr, rst = median_run(pulls_v2), median_run(rsyncs_db), median_run(rsyncs_tree)
    pv2r = pv2.json()
    if VERIFY:
        vv = verify_tree(stage, out_pull)
        if not vv["identical"]:
            raise BenchError(f"pulled v2 differs from the source: {vv}")
        vv = verify_tree(stage, rtree)
        if not vv["identical"]:
            raise BenchError(f"rsync's tree differs from the source: {vv}")
    lit = re.search(r"Literal data: ([\d,]+) bytes", rsr.stdout)
    matched = re.search(r"Matched data: ([\d,]+) bytes", rsr.stdout)
    sent = re.search(r"Total bytes sent: ([\d,]+)", rsr.stdout)
    tlit = re.search(r"Literal data: ([\d,]+) bytes", rst.stdout)
    if not lit:
        raise BenchError(f"no 'Literal data' in rsync's output:\n{rsr.stdout}")
    if not filecmp.cmp(new_db_src, rdir / "catalog.sqlite", shallow=False):
        raise BenchError("rsync did not reproduce the new database")
    literal = int(lit.group(1).replace(",", ""))

    # casync: store growth from old.db to new.db, same chunk size parameters.
    cdir = work / "casync"
    store = cdir / "store"
    cdir.mkdir()
    ca_old = run_timed("casync make old.db",
                       ["casync", "make", f"--store={store}", f"--chunk-size={CHUNK_SPEC}", "--compression=zstd",
                        str(cdir / "old.caibx"), str(old_db)], cold=True)
    s_old = store_size(store)
    ca_new = run_timed("casync make new.db",
                       ["casync", "make", f"--store={store}", f"--chunk-size={CHUNK_SPEC}", "--compression=zstd",
                        str(cdir / "new.caibx"), str(new_db_src)], cold=True)
    s_new = store_size(store)
    try:
        old_chunks, new_chunks = read_caibx(cdir / "old.caibx"), read_caibx(cdir / "new.caibx")
        have = {c for c, _ in old_chunks}
        fresh, seen = [], set()
        for c, n in new_chunks:
            if c not in have and c not in seen:
                seen.add(c)
                fresh.append(n)
        ca_chunks = {"old_chunks": len(old_chunks), "new_chunks_total": len(new_chunks),
                     "new_unique_chunks": len(fresh), "new_plain_bytes": sum(fresh),
                     "index_covers_new_db": sum(n for _, n in new_chunks) == new_size}
    except (OSError, struct.error) as e:
        ca_chunks = {"error": str(e)}

    # AetherFS's own view of the database: chunks of the db file in v1 and v2.
    def pct(x: float) -> float:
        return round(100.0 * x / new_size, 3)

    growth_files = s_new["file_bytes"] - s_old["file_bytes"]
    res["refresh"] = {
        "plan": dsmeta["params"]["refresh"],
        "db_bytes_old": old_size, "db_bytes_new": new_size,
        "aetherfs_push": {**v2.summary(), "report": v2r,
                          "new_bytes_pct_db": pct(v2r["new_bytes"]),
                          "uploaded_bytes_pct_db": pct(v2r["uploaded_bytes"]),
                          "hub_store_growth_file_bytes": hub_after["file_bytes"] - hub_before["file_bytes"]},
        "aetherfs_pull": {**pv2.summary(), "samples_s": samples_of(pulls_v2), "report": pv2r,
                          "fetched_bytes_pct_db": pct(pv2r["fetched_bytes"])},
        "rsync_tree": {**rst.summary(), "samples_s": samples_of(rsyncs_tree),
                       "literal_bytes": int(tlit.group(1).replace(",", "")) if tlit else None},
        "restic_backup": {**rb2.summary(), "summary": restic_summary(rb2),
                          "repo_growth_file_bytes": restic_after["file_bytes"] - restic_store["file_bytes"]},
        "rsync": {**rsr.summary(), "samples_s": samples_of(rsyncs_db), "literal_bytes": literal, "literal_pct_db": pct(literal),
                  "matched_bytes": int(matched.group(1).replace(",", "")) if matched else None,
                  "total_bytes_sent": int(sent.group(1).replace(",", "")) if sent else None},
        "casync": {"make_old": ca_old.summary(), "make_new": ca_new.summary(),
                   "store_old": s_old, "store_new": s_new,
                   "store_growth_file_bytes": growth_files,
                   "store_growth_du_alloc_bytes": s_new["du_alloc_bytes"] - s_old["du_alloc_bytes"],
                   "store_growth_pct_db": pct(growth_files), **ca_chunks},
    }
    rf = res["refresh"]
    rf["ratio_new_bytes_aetherfs_over_rsync_literal"] = round(v2r["new_bytes"] / max(1, literal), 3)
    rf["ratio_fetched_aetherfs_over_rsync_literal"] = round(pv2r["fetched_bytes"] / max(1, literal), 3)
    rf["ratio_uploaded_aetherfs_over_casync_store_growth"] = round(v2r["uploaded_bytes"] / max(1, growth_files), 3)
    if "new_plain_bytes" in ca_chunks:
        rf["ratio_new_bytes_aetherfs_over_casync_new_plain"] = round(v2r["new_bytes"] / max(1, ca_chunks["new_plain_bytes"]), 3)

    res["page_cache"] = page_cache_summary()
    res["machine"]["disk_free_bytes_at_end"] = shutil.disk_usage(BENCH_DIR).free
    res["machine"]["loadavg_at_end"] = os.getloadavg()
    res["quiet_wait"] = quiet_summary()
    HUB.stop()
    return res


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def mib(n: int | float | None) -> str:
    return "n/a" if n is None else f"{n / MIB:,.1f} MiB"


def secs(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def markdown(res: dict) -> str:
    m, d = res["machine"], res["dataset"]
    p, rp, pl, rf = res["push"], res["repush"], res["pull"], res["refresh"]
    pc = res["page_cache"]
    a, r = p["aetherfs"], p["restic"]
    cache_note = ("dropped before every cold run (`sync; echo 3 > /proc/sys/vm/drop_caches`)"
                  if pc["cold_runs_really_cold"] else
                  f"NOT dropped ({pc['drops_succeeded']}/{pc['drops_attempted']} drops succeeded): 'cold' runs may be warm")
    L: list[str] = []
    L.append(f"# Push/pull benchmark — {m['date']}\n")
    L.append(f"Command: `{m['command']}`\n")
    L.append(f"Machine: {m['nproc']} cores ({m['cpu']}), {m['mem_total_bytes'] / 2**30:.1f} GiB RAM, "
             f"kernel {m['kernel']}, work dir {m['bench_dir']} on {m['bench_dir_fs']} "
             f"({m['disk_free_bytes_at_start'] / 2**30:.1f} GiB free at start). Page cache: {cache_note}. "
             f"Everything on one machine over loopback; the hub stores on local disk (`file://`).\n")
    v = m["versions"]
    L.append(f"Versions: {v['aetherfs']} (workspace {m['git_commit']}), {v['restic']}, {v['casync']}, "
             f"{v['rsync']}, sqlite3 {v['sqlite3']}, {v['rustc']}.\n")
    dp = d["params"]
    if dp.get("kind") == "issue":
        shape = (f"SQLite db {mib(d['db_bytes'])} ({dp['sqlite_rows']:,} rows, index on a random key), a "
                 f"{mib(dp['random_bytes'])} random file, {dp['small_files']:,} small text files in "
                 f"{dp['small_dirs']} directories, a {dp['wide_entries']:,}-entry directory (issue 12's shape)")
    else:
        shape = (f"SQLite db {mib(d['db_bytes'])} ({dp['sqlite_rows']:,} rows, index on a random key), "
                 f"{dp['small_files']:,} small CSV/TXT/JSON files, {dp['models']} random model files of "
                 f"{mib(dp['model_bytes'])}, a {mib(dp['big_csv_bytes'])} CSV")
    L.append(f"Dataset (scale {m['scale']:g}, seed {m['seed']}): {d['files']:,} files, {mib(d['bytes'])} "
             f"({d['bytes']:,} bytes): {shape}. Timings are the median of {m['runs_per_step']} run(s); "
             f"MB = 10^6 bytes.\n")
    q = res.get("quiet_wait", {})
    L.append(f"Other load: before each timed step the script waited (up to {q.get('max_wait_s', 0):.0f} s) for the machine "
             f"to be idle (< {q.get('idle_below_cores', 0)} cores busy); it waited {q.get('total_waited_s', 0)} s in total and "
             f"measured {q.get('steps_measured_while_busy', 0)} of {q.get('steps', 0)} steps while still busy. "
             f"The 'other' columns give the CPU that processes other than the measured ones used during each step "
             f"(in cores; includes kernel writeback threads).\n")

    L.append("## Push of the whole dataset (empty stores, cold cache)\n")
    L.append("| | time (s) | runs (s) | MB/s | client CPU (s) | hub CPU (s) | other (cores) | stored (sum of files) | stored (du, allocated) |")
    L.append("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    L.append(f"| aetherfs push | {secs(a['seconds'])} | {runs_s(a)} | {a['mb_per_s']} | {a['cpu_user_s'] + a['cpu_sys_s']:.1f} | "
             f"{secs(a['hub_cpu_s'])} | {a['other_load_cores']} | {mib(a['store']['file_bytes'])} | {mib(a['store']['du_alloc_bytes'])} |")
    L.append(f"| restic backup | {secs(r['seconds'])} | {runs_s(r)} | {r['mb_per_s']} | {r['cpu_user_s'] + r['cpu_sys_s']:.1f} | – | "
             f"{r['other_load_cores']} | {mib(r['store']['file_bytes'])} | {mib(r['store']['du_alloc_bytes'])} |")
    L.append(f"\nMB/s ratio aetherfs/restic: **{p['mbps_ratio_aetherfs_over_restic']}** (>1 = aetherfs faster; goal ≥ 2); "
             f"stored bytes ratio aetherfs/restic: **{p['stored_ratio_aetherfs_over_restic']}**. ")
    ar = a.get("report") or {}
    if ar:
        L.append(f"aetherfs report: {ar.get('files')} files, {ar.get('chunks')} chunks, {ar.get('new_chunks')} new, "
                 f"{ar.get('packs_uploaded')} packs, {mib(ar.get('uploaded_bytes'))} uploaded, {mib(ar.get('read_bytes'))} of files read "
                 f"({100 * ar.get('uploaded_bytes', 0) / max(1, ar.get('bytes', 1)):.1f}% of plain).")
    if "hash_phase_s" in a:
        L.append(f" Phases (from the client's I/O counters): walk+chunk+hash {a['hash_phase_s']} s "
                 f"({a.get('hash_phase_client_cores')} cores busy), pack+upload {a['upload_phase_s']} s "
                 f"(client {a.get('upload_phase_client_cores')} cores, hub {a.get('upload_phase_hub_cores')} cores).")
    L.append("")

    L.append("## Re-push of unchanged data\n")
    L.append("| | time (s) | runs (s) | CPU (s) | other (cores) | note |")
    L.append("|---|---:|---|---:|---:|---|")
    for key, name, note in (("aetherfs_cold", "aetherfs push (cold)", "stat cache: reads no file data"),
                            ("aetherfs_warm", "aetherfs push (warm)", "same, metadata already cached"),
                            ("aetherfs_rehash_cold", "aetherfs push --no-stat-cache (cold)", "re-reads and re-hashes every byte"),
                            ("restic_cold", "restic backup (cold)", "skips files whose metadata matches the parent snapshot"),
                            ("restic_force_cold", "restic backup --force (cold)", "re-reads every byte")):
        x = rp[key]
        L.append(f"| {name} | {secs(x['seconds'])} | {runs_s(x)} | {x['cpu_user_s'] + x['cpu_sys_s']:.1f} | "
                 f"{x['other_load_cores']} | {note} |")
    rc = rp["aetherfs_cold"].get("report") or {}
    L.append(f"\nSpeed-up over restic's re-backup: **{rp['speedup_aetherfs_over_restic']}×** (goal ≥ 4×); the re-push "
             f"read {rc.get('read_bytes', 'n/a')} bytes of file data, {rc.get('stat_cache_hits', 'n/a')} files from the stat cache.")
    L.append(f"\nTime ratio aetherfs/restic: **{rp['time_ratio_aetherfs_over_restic']}** (vs restic default), "
             f"**{rp['time_ratio_aetherfs_over_restic_force']}** (vs restic --force); <1 = aetherfs faster.\n")

    L.append("## Pull into an empty directory (cold cache)\n")
    L.append("| | time (s) | runs (s) | MB/s | sync after (s) | MB/s incl. sync | CPU (s) | hub CPU (s) | other (cores) | iowait % |")
    L.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for key, name in (("aetherfs_fsync", "aetherfs pull (fsync per file, default)"),
                      ("aetherfs_no_fsync", "aetherfs pull --no-fsync"),
                      ("cp_r", "cp -r"), ("restic_restore", "restic restore")):
        x = pl[key]
        L.append(f"| {name} | {secs(x['seconds'])} | {runs_s(x)} | {x['mb_per_s']} | {secs(x.get('sync_after_s'))} | "
                 f"{x['mb_per_s_incl_sync']} | {x['cpu_user_s'] + x['cpu_sys_s']:.1f} | "
                 f"{secs(x['hub_cpu_s']) if key.startswith('aetherfs') else '–'} | {x['other_load_cores']} | "
                 f"{x['system_iowait_pct']} |")
    L.append(f"\nTime ratio aetherfs/cp -r: **{pl['time_ratio_fsync_over_cp']}** (fsync), "
             f"**{pl['time_ratio_no_fsync_over_cp']}** (--no-fsync); fsync pull vs cp -r + sync: "
             f"**{pl['time_ratio_fsync_over_cp_plus_sync']}**. Pulled tree identical to source: {pl['verified_identical']}.\n")

    a2, p2 = rf["aetherfs_push"], rf["aetherfs_pull"]
    rs2, ca = rf["rsync"], rf["casync"]
    plan = rf["plan"]
    L.append("## The 1% SQLite refresh\n")
    L.append(f"Rows {plan['update_first_id']}–{plan['update_last_id']} ({plan['updated_rows']:,}, contiguous) get new "
             f"random payloads of the same length; {plan['inserted_rows']:,} rows are inserted (index on a random key). "
             f"Database {old_size_s(rf)} → {mib(rf['db_bytes_new'])}. Percentages are of the new database size.\n")
    L.append("| | bytes | % of db | time (s) | runs (s) |")
    L.append("|---|---:|---:|---:|---|")
    L.append(f"| aetherfs push v2 (whole tree): new_bytes (plain chunks) | {a2['report']['new_bytes']:,} | {a2['new_bytes_pct_db']}% | {secs(a2['seconds'])} | 1 run |")
    L.append(f"| aetherfs push v2: uploaded_bytes (compressed packs) | {a2['report']['uploaded_bytes']:,} | {a2['uploaded_bytes_pct_db']}% | | |")
    L.append(f"| aetherfs pull v2 into the v1 dir (whole tree): fetched_bytes | {p2['report']['fetched_bytes']:,} | {p2['fetched_bytes_pct_db']}% | {secs(p2['seconds'])} | {runs_s(p2)} |")
    L.append(f"| rsync --no-whole-file old.db ← new.db: Literal data | {rs2['literal_bytes']:,} | {rs2['literal_pct_db']}% | {secs(rs2['seconds'])} | {runs_s(rs2)} |")
    rt = rf["rsync_tree"]
    L.append(f"| rsync -a --no-whole-file v1 tree ← v2 tree: Literal data | {rt['literal_bytes']:,} | "
             f"{round(100 * (rt['literal_bytes'] or 0) / rf['db_bytes_new'], 3)}% | {secs(rt['seconds'])} | {runs_s(rt)} |")
    L.append(f"| casync make new.db: store growth (sum of .cacnk file sizes, zstd) | {ca['store_growth_file_bytes']:,} | {ca['store_growth_pct_db']}% | {secs(ca['make_new']['seconds'])} | 1 run |")
    L.append(f"| casync make new.db: store growth (du -s -B1, allocated blocks) | {ca['store_growth_du_alloc_bytes']:,} | "
             f"{round(100 * ca['store_growth_du_alloc_bytes'] / rf['db_bytes_new'], 3)}% | | |")
    if "new_plain_bytes" in ca:
        L.append(f"| casync: new chunks, plain bytes (from the .caibx indexes) | {ca['new_plain_bytes']:,} | "
                 f"{round(100 * ca['new_plain_bytes'] / rf['db_bytes_new'], 3)}% | | |")
    rsum = rf["restic_backup"]["summary"]
    L.append(f"| restic backup v2: data_added / repo growth (sum of files) | {rsum.get('data_added', 0):,} / "
             f"{rf['restic_backup']['repo_growth_file_bytes']:,} | "
             f"{round(100 * rsum.get('data_added', 0) / rf['db_bytes_new'], 3)}% | {secs(rf['restic_backup']['seconds'])} | 1 run |")
    L.append(f"\nRatios: aetherfs new_bytes / rsync literal **{rf['ratio_new_bytes_aetherfs_over_rsync_literal']}**; "
             f"aetherfs fetched / rsync literal **{rf['ratio_fetched_aetherfs_over_rsync_literal']}**; "
             f"aetherfs uploaded / casync store growth **{rf['ratio_uploaded_aetherfs_over_casync_store_growth']}**"
             + (f"; aetherfs new_bytes / casync new plain bytes **{rf['ratio_new_bytes_aetherfs_over_casync_new_plain']}**"
                if "ratio_new_bytes_aetherfs_over_casync_new_plain" in rf else "")
             + " (<1 = aetherfs moves fewer bytes).")
    L.append(f"aetherfs v2 push: {a2['report']['new_chunks']} new chunks in {a2['report']['packs_uploaded']} pack(s), "
             f"manifest {a2['report'].get('manifest_bytes', 0):,} bytes; of the {mib(a2['report']['bytes'])} tree the push "
             f"hashed {mib(a2['report'].get('hashed_bytes'))} ({a2['report'].get('stat_cache_hits', 0)} files from the stat cache). Pull v2: {p2['report']['files_written']} file(s) written, "
             f"{p2['report']['files_unchanged']} unchanged, reused {mib(p2['report']['reused_bytes'])} from the directory, "
             f"{p2['report']['range_requests']} range request(s).\n")
    return "\n".join(L) + "\n"


def runs_s(x: dict) -> str:
    return ", ".join(f"{v:.2f}" for v in x.get("samples_s", []))


def old_size_s(rf: dict) -> str:
    return mib(rf["db_bytes_old"])


def main() -> int:
    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        res = bench()
    except (BenchError, subprocess.CalledProcessError) as e:
        log(f"FAILED: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        if HUB:
            HUB.stop()
    md = markdown(res)
    path = common.write_results("push-pull", md, res)
    print(md)
    log(f"results: {path} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
