//! The sidecar agent end to end: a hub process, `aetherfs agent` serving
//! through FUSE with its encrypted disk cache, and real readers.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Agent, Hub, assert_same_tree, http_get, metric, random_bytes, require, run_ok, sqlite};

/// A config for one FUSE mount.
fn config(
    dir: &Path,
    reference: &str,
    mnt: &Path,
    prefetch: &str,
    cache_size: &str,
    key: Option<&Path>,
    timeout: u64,
) -> PathBuf {
    let key = key.map(|k| format!("key_file = {:?}\n", k.display().to_string())).unwrap_or_default();
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\
         [cache]\ndir = {:?}\nmax_size = {cache_size:?}\nmemory_size = \"1MiB\"\n{key}\
         [fetch]\ntimeout_secs = {timeout}\npoll_secs = 5\n\
         [[mount]]\nref = {reference:?}\nfuse = {:?}\nprefetch = {prefetch:?}\n",
        dir.join("cache").display().to_string(),
        mnt.display().to_string()
    );
    let p = dir.join("agent.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// `mib` MiB of random data in four files, and a small text file.
fn dataset(root: &Path, seed: u64, mib: usize) {
    std::fs::create_dir_all(root.join("data")).unwrap();
    for i in 0..4 {
        std::fs::write(root.join(format!("data/part-{i}.bin")), random_bytes((mib << 20) / 4, seed * 10 + i)).unwrap();
    }
    std::fs::write(root.join("small.txt"), format!("version seed {seed}\n")).unwrap();
}

fn key_file(dir: &Path) -> PathBuf {
    let p = dir.join("cache.key");
    std::fs::write(&p, hex_of(&random_bytes(32, 99))).unwrap();
    p
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn cache_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("cache")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn cache_bytes(dir: &Path) -> u64 {
    cache_files(dir).iter().filter_map(|p| p.metadata().ok()).map(|m| m.len()).sum()
}

#[test]
fn a_restart_with_a_key_reuses_the_cache_and_without_one_leaves_nothing() {
    require("fusermount3");
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let src = tempfile::tempdir().unwrap();
    dataset(src.path(), 1, 4);
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/side:v1"));
    let work = tempfile::tempdir().unwrap();
    let mnt = work.path().join("mnt");
    let key = key_file(work.path());
    let cfg = config(work.path(), "acme/side:v1", &mnt, "all", "1GiB", Some(&key), 10);

    let mut agent = Agent::start(&hub, &cfg, Some(&mnt), &[], true);
    let first = agent.metric("aetherfs_fetched_bytes_total");
    assert!(first >= (4 << 20) as f64, "prefetch fetched {first}");
    assert_same_tree(src.path(), &mnt);
    agent.stop();

    // Same key: everything comes from the disk cache.
    let mut agent = Agent::start(&hub, &cfg, Some(&mnt), &[], true);
    assert_same_tree(src.path(), &mnt);
    assert_eq!(agent.metric("aetherfs_fetched_bytes_total"), 0.0, "chunks were fetched again");
    assert!(agent.metric("aetherfs_cache_disk_hits_total") > 0.0);
    agent.stop();

    // No key: the cache starts empty, and nothing readable is left behind.
    let cfg = config(work.path(), "acme/side:v1", &mnt, "all", "1GiB", None, 10);
    let mut agent = Agent::start(&hub, &cfg, Some(&mnt), &[], true);
    assert!(agent.metric("aetherfs_fetched_bytes_total") >= (4 << 20) as f64, "an ephemeral cache reused old data");
    assert_same_tree(src.path(), &mnt);
    agent.stop();
    let left = cache_bytes(work.path());
    assert!(left < 4096, "{left} bytes left in the ephemeral cache: {:?}", cache_files(work.path()));
}

#[test]
fn kill_9_while_fetching_never_breaks_the_cache() {
    require("fusermount3");
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let src = tempfile::tempdir().unwrap();
    dataset(src.path(), 2, 96);
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/killed:v1"));
    let work = tempfile::tempdir().unwrap();
    let mnt = work.path().join("mnt");
    let key = key_file(work.path());
    let cfg = config(work.path(), "acme/killed:v1", &mnt, "all", "1GiB", Some(&key), 10);
    for round in 0..3 {
        let mut agent = Agent::start(&hub, &cfg, Some(&mnt), &[], false);
        // Wait until fetching is under way, then kill at once.
        let deadline = Instant::now() + Duration::from_secs(60);
        while metric(&agent.metrics(), "aetherfs_fetched_bytes_total").unwrap_or(0.0) == 0.0
            && http_get(&agent.admin, "/readyz").map(|r| r.0) != Some(200)
        {
            assert!(Instant::now() < deadline, "round {round}: no fetching seen");
            std::thread::sleep(Duration::from_millis(5));
        }
        agent.kill9();
    }
    // A stale FUSE mount is left by the kills; the next start clears it.
    let mut agent = Agent::start(&hub, &cfg, Some(&mnt), &[], true);
    assert_same_tree(src.path(), &mnt);
    agent.stop();
}

#[test]
fn corrupt_or_truncated_cache_entries_are_refetched() {
    require("fusermount3");
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let src = tempfile::tempdir().unwrap();
    dataset(src.path(), 3, 4);
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/rot:v1"));
    let work = tempfile::tempdir().unwrap();
    let mnt = work.path().join("mnt");
    let key = key_file(work.path());
    let cfg = config(work.path(), "acme/rot:v1", &mnt, "all", "1GiB", Some(&key), 10);
    let mut agent = Agent::start(&hub, &cfg, Some(&mnt), &[], true);
    agent.stop();

    // Flip bytes all over the cache's data files, and truncate the largest.
    let mut files: Vec<PathBuf> = cache_files(work.path())
        .into_iter()
        .filter(|p| p.metadata().map(|m| m.len() > 64 << 10).unwrap_or(false))
        .collect();
    assert!(!files.is_empty(), "no cache data files found");
    files.sort_by_key(|p| std::cmp::Reverse(p.metadata().unwrap().len()));
    for f in &files {
        let mut fh = std::fs::OpenOptions::new().read(true).write(true).open(f).unwrap();
        let len = fh.metadata().unwrap().len();
        for i in 1..40u64 {
            let at = len * i / 40;
            let mut b = [0u8; 1];
            fh.seek(SeekFrom::Start(at)).unwrap();
            fh.read_exact(&mut b).unwrap();
            fh.seek(SeekFrom::Start(at)).unwrap();
            fh.write_all(&[b[0] ^ 0x5a]).unwrap();
        }
    }
    let biggest = &files[0];
    let len = biggest.metadata().unwrap().len();
    std::fs::OpenOptions::new().write(true).open(biggest).unwrap().set_len(len * 2 / 3).unwrap();

    let mut agent = Agent::start(&hub, &cfg, Some(&mnt), &[], true);
    assert_same_tree(src.path(), &mnt);
    let refetched = agent.metric("aetherfs_fetched_bytes_total");
    assert!(refetched > 0.0, "corrupt entries were not refetched");
    agent.stop();
}

#[test]
fn a_stopped_hub_bounds_uncached_reads_and_service_resumes() {
    require("fusermount3");
    let data = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(&format!("file://{}", data.path().display()));
    let src = tempfile::tempdir().unwrap();
    dataset(src.path(), 4, 4);
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/offline:v1"));
    let work = tempfile::tempdir().unwrap();
    let mnt = work.path().join("mnt");
    let cfg = config(work.path(), "acme/offline:v1", &mnt, "metadata", "1GiB", None, 2);
    let mut agent = Agent::start(&hub, &cfg, Some(&mnt), &[], true);
    let cached = std::fs::read(mnt.join("data/part-0.bin")).unwrap();
    assert_eq!(cached, std::fs::read(src.path().join("data/part-0.bin")).unwrap());

    hub.stop();
    // Cached data still reads (drop the kernel's copy so the agent serves it).
    run_ok(Command::new("sh").args(["-c", "echo 3 > /proc/sys/vm/drop_caches || true"]));
    assert_eq!(std::fs::read(mnt.join("data/part-0.bin")).unwrap(), cached);
    // An uncached read fails, and within the bound.
    let started = Instant::now();
    let err = std::fs::read(mnt.join("data/part-1.bin")).unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.raw_os_error(), Some(5), "expected EIO, got {err}");
    assert!(took < Duration::from_secs(15), "uncached read took {took:?} with a 2 s timeout");

    // The hub returns on the same address: reads work again, no agent restart.
    hub.start_again();
    assert_eq!(
        std::fs::read(mnt.join("data/part-1.bin")).unwrap(),
        std::fs::read(src.path().join("data/part-1.bin")).unwrap()
    );
    agent.stop();
}

#[test]
fn a_tag_move_switches_new_opens_while_open_files_keep_their_version() {
    require("fusermount3");
    let sqlite_bin = require("sqlite3");
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let src = tempfile::tempdir().unwrap();
    dataset(src.path(), 5, 1);
    sqlite(&src.path().join("db.sqlite"), "CREATE TABLE t(v TEXT); INSERT INTO t VALUES ('one');");
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/chan:latest"));
    let v1_small = std::fs::read(src.path().join("small.txt")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let mnt = work.path().join("mnt");
    let cfg = config(work.path(), "acme/chan:latest", &mnt, "all", "1GiB", None, 10);
    let mut agent = Agent::start(&hub, &cfg, Some(&mnt), &[], true);
    let v1_digest = agent.mounts()["mounts"][0]["digest"].as_str().unwrap().to_string();

    // Readiness is watched for the whole switch.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (stop, admin) = (stop.clone(), agent.admin.clone());
        std::thread::spawn(move || {
            let mut not_ready = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if http_get(&admin, "/readyz").map(|r| r.0) != Some(200) {
                    not_ready += 1;
                }
            }
            not_ready
        })
    };

    // Hold a file and a sqlite3 connection open on v1.
    let mut held = std::fs::File::open(mnt.join("small.txt")).unwrap();
    let mut sql = Command::new(&sqlite_bin)
        .arg(mnt.join("db.sqlite"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sql_in = sql.stdin.take().unwrap();
    let mut sql_out = BufReader::new(sql.stdout.take().unwrap());
    let mut ask = |q: &str| {
        writeln!(sql_in, "BEGIN; {q}").unwrap();
        sql_in.flush().unwrap();
        let mut line = String::new();
        sql_out.read_line(&mut line).unwrap();
        writeln!(sql_in, "COMMIT;").unwrap();
        line.trim().to_string()
    };
    assert_eq!(ask("SELECT group_concat(v) FROM t;"), "one");

    // Move the tag: v2 changes small.txt and the database.
    std::fs::write(src.path().join("small.txt"), b"version two, longer than before\n").unwrap();
    sqlite(&src.path().join("db.sqlite"), "INSERT INTO t VALUES ('two');");
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/chan:latest"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while agent.mounts()["mounts"][0]["digest"].as_str() == Some(v1_digest.as_str()) {
        assert!(Instant::now() < deadline, "the agent never switched");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(watcher.join().unwrap(), 0, "readiness dropped during the switch");
    assert_eq!(agent.metric("aetherfs_mount_switches_total"), 1.0);

    // The held handle still reads v1; a new open reads v2.
    let mut old = Vec::new();
    held.read_to_end(&mut old).unwrap();
    assert_eq!(old, v1_small);
    assert_eq!(std::fs::read(mnt.join("small.txt")).unwrap(), b"version two, longer than before\n");
    // The connection opened before the switch keeps its consistent snapshot.
    assert_eq!(ask("SELECT group_concat(v) FROM t;"), "one");
    drop(sql_in);
    let _ = sql.wait();
    assert_eq!(sqlite(&mnt.join("db.sqlite"), "SELECT group_concat(v) FROM t;").trim(), "one,two");
    assert_same_tree(src.path(), &mnt);
    agent.stop();
}

#[test]
fn a_working_set_three_times_the_cache_stays_within_the_bound() {
    require("fusermount3");
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let src = tempfile::tempdir().unwrap();
    dataset(src.path(), 6, 48);
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/big:v1"));
    let work = tempfile::tempdir().unwrap();
    let mnt = work.path().join("mnt");
    let key = key_file(work.path());
    let cfg = config(work.path(), "acme/big:v1", &mnt, "none", "16MiB", Some(&key), 10);
    let mut agent = Agent::start(&hub, &cfg, Some(&mnt), &[], true);
    for round in 0..2 {
        assert_same_tree(src.path(), &mnt);
        run_ok(Command::new("sh").args(["-c", "echo 3 > /proc/sys/vm/drop_caches || true"]));
        let on_disk = cache_bytes(work.path());
        let bound = agent.metric("aetherfs_cache_disk_max_bytes");
        // One segment of slack is allowed (see docs/cache.md).
        assert!(
            (on_disk as f64) <= bound * 1.25 + (4 << 20) as f64,
            "round {round}: cache holds {on_disk} bytes, bound {bound}"
        );
    }
    assert!(agent.metric("aetherfs_cache_disk_evicted_bytes_total") > 0.0);
    agent.stop();
}

/// What readers do, through the agent's `/v1/stats` and `aetherfs
/// agent-stats`: the file read most with its bytes, chunks fetched from the
/// hub, latency; after a tag move the new version comes first and the old
/// one keeps its counts, and the per-mount metrics add both.
#[test]
fn agent_stats_tell_which_files_are_read_and_what_a_switch_fetched() {
    require("fusermount3");
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let src = tempfile::tempdir().unwrap();
    dataset(src.path(), 11, 4);
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/stats:latest"));
    let work = tempfile::tempdir().unwrap();
    let mnt = work.path().join("mnt");
    let cfg = config(work.path(), "acme/stats:latest", &mnt, "none", "1GiB", None, 10);
    let mut agent = Agent::start(&hub, &cfg, Some(&mnt), &[], true);
    let v1 = agent.mounts()["mounts"][0]["digest"].as_str().unwrap().to_string();
    let part = std::fs::read(mnt.join("data/part-2.bin")).unwrap();
    assert_eq!(part.len(), 1 << 20);
    std::fs::read(mnt.join("small.txt")).unwrap();

    let stats = |agent: &Agent| -> serde_json::Value {
        let out = run_ok(Command::new(crate::harness::BIN).args(["agent-stats", "--json", "--top", "5", &agent.admin]));
        serde_json::from_str(&out).unwrap()
    };
    let s = stats(&agent);
    let m = &s["mounts"][0];
    assert_eq!(m["reference"], "acme/stats:latest");
    let v = &m["versions"][0];
    assert_eq!(v["digest"].as_str(), Some(v1.as_str()), "{s}");
    let top = &v["top_files"][0];
    assert_eq!(top["path"], "data/part-2.bin", "{s}");
    assert!(top["bytes"].as_u64().unwrap() >= 1 << 20, "{s}");
    assert_eq!(v["files_read"], 2, "{s}");
    let fetched = v["fetched_bytes"].as_u64().unwrap() + v["readahead_bytes"].as_u64().unwrap();
    assert!(fetched >= 1 << 20, "nothing was prefetched, so the file came from the hub: {s}");
    assert!(v["fetched_chunks"].as_u64().unwrap() >= 1, "{s}");
    assert!(v["latency"]["p99_ms"].as_f64().is_some() && v["reads"].as_u64().unwrap() >= 1, "{s}");

    // Move the tag; the new version's reads are counted apart.
    std::fs::write(src.path().join("small.txt"), b"version two\n").unwrap();
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/stats:latest"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while agent.mounts()["mounts"][0]["digest"].as_str() == Some(v1.as_str()) {
        assert!(Instant::now() < deadline, "the agent never switched");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::read(mnt.join("small.txt")).unwrap(), b"version two\n");
    let s = stats(&agent);
    let versions = s["mounts"][0]["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{s}");
    assert_ne!(versions[0]["digest"].as_str(), Some(v1.as_str()));
    assert_eq!(versions[0]["top_files"][0]["path"], "small.txt", "{s}");
    assert_eq!(versions[0]["top_files"][0]["bytes"], 12, "{s}");
    assert_eq!(versions[1]["digest"].as_str(), Some(v1.as_str()));
    assert_eq!(versions[1]["top_files"][0]["path"], "data/part-2.bin", "the old version keeps its counts: {s}");

    let read_bytes: u64 = versions.iter().map(|v| v["bytes_read"].as_u64().unwrap()).sum();
    assert_eq!(agent.metric("aetherfs_mount_read_bytes_total"), read_bytes as f64);
    let metrics = agent.metrics();
    assert!(metrics.contains("aetherfs_mount_chunks_total{ref=\"acme/stats:latest\",from=\"hub\"}"), "{metrics}");
    assert!(metrics.contains("aetherfs_mount_read_duration_seconds_bucket{"), "{metrics}");
    // The agent reports its own memory, and its tree's.
    let rss = agent.metric("process_resident_memory_bytes");
    assert!(rss > 1e6 && agent.metric("aetherfs_process_peak_resident_memory_bytes") >= rss, "{metrics}");
    assert!(agent.metric("aetherfs_mount_tree_bytes") > 0.0, "{metrics}");

    let table = run_ok(Command::new(crate::harness::BIN).args(["agent-stats", &agent.admin]));
    assert!(table.starts_with("acme/stats:latest\n"), "{table}");
    assert!(table.contains("(current)") && table.contains("data/part-2.bin"), "{table}");

    // The hub learns the same from the agent's lease, renewed at the switch:
    // `aetherfs usage` names the reader, the version it serves, and what was read.
    let v2 = versions[0]["digest"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let usage = loop {
        let u: serde_json::Value =
            serde_json::from_str(&run_ok(hub.cmd().args(["usage", "--json", "acme/stats"]))).unwrap();
        let rows = u["readers"].as_array().unwrap().clone();
        if rows.iter().any(|r| r["version"] == v2.as_str() && r["serving"] == true) {
            break rows;
        }
        assert!(Instant::now() < deadline, "the lease never named the new version: {u}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let old = usage.iter().find(|r| r["version"] == v1.as_str()).expect("the old version's row");
    assert!(old["bytes_read"].as_u64().unwrap() >= 1 << 20, "{usage:?}");
    assert!(old["fetched_bytes"].as_u64().unwrap() >= 1 << 20, "{usage:?}");
    assert!(usage.iter().all(|r| r["in_force"] == true), "{usage:?}");
    let new = usage.iter().find(|r| r["version"] == v2.as_str()).unwrap();
    assert_eq!(new["tags"], serde_json::json!(["latest"]));
    let table = run_ok(hub.cmd().args(["usage", "acme/stats"]));
    assert!(table.starts_with("READER") && table.contains("in force") && table.contains("latest"), "{table}");
    // And the web page's usage panel, from the same leases: the reader, both
    // versions it serves, and bytes per version.
    let reader = old["reader"].as_str().unwrap();
    let (status, page) = crate::harness::http_get(&hub.url, "/web/datasets/acme/stats").unwrap();
    assert_eq!(status, 200, "{page}");
    let usage = &page[page.find("id=\"usage\"").expect("a usage section")..];
    assert!(usage.contains("Agents serving this dataset") && usage.contains(reader), "{usage}");
    assert!(usage.contains("in force") && usage.contains("Bytes served per version"), "{usage}");
    for v in [&v1, &v2] {
        assert!(usage.contains(&v[7..19]), "{v} missing from {usage}");
    }
    agent.stop();
}
