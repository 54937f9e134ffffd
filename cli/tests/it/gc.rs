//! Garbage collection end to end, with real processes: collections running
//! while pushes of overlapping data run, two hubs collecting one store at
//! once, hubs killed in the middle of a collection, and an agent that reads
//! through a collection which moves its chunks and protects what it serves.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{Agent, Hub, assert_same_tree, random_bytes, require, run_ok};

/// A lifecycle file: keep what tags point at, collect with a grace period
/// of `grace` and a short lock, so killed collectors are outlived quickly.
fn lifecycle_with_grace(dir: &Path, grace: &str, extra: &str) -> Vec<(String, String)> {
    let p = dir.join("lifecycle.toml");
    std::fs::write(&p, format!("[gc]\ngrace = {grace:?}\nlock_ttl = \"2s\"\n{extra}")).unwrap();
    vec![("AETHERFS_LIFECYCLE".to_string(), p.display().to_string())]
}

fn lifecycle(dir: &Path, extra: &str) -> Vec<(String, String)> {
    lifecycle_with_grace(dir, "0s", extra)
}

/// Version `i` of writer `w`: a base file every version shares, a file of
/// the writer's that changes in one region per version, and a small one.
fn version_tree(root: &Path, w: u64, i: u64) {
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(root.join("base.bin"), random_bytes(3 << 20, 7)).unwrap();
    let mut own = random_bytes(2 << 20, 100 + w);
    let at = ((i as usize * 256) << 10) % (own.len() - (256 << 10));
    own[at..at + (256 << 10)].copy_from_slice(&random_bytes(256 << 10, 1000 * w + i));
    std::fs::write(root.join("own.bin"), own).unwrap();
    std::fs::write(root.join("note.txt"), format!("writer {w} version {i}\n")).unwrap();
}

fn gc_json(hub: &Hub, args: &[&str]) -> serde_json::Value {
    let out = run_ok(hub.cmd().args(["gc", "--json"]).args(args));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("gc --json printed {out:?}: {e}"))
}

/// Runs `aetherfs gc` until it is not refused for a running collection (a
/// killed one's lock expiring), and returns its report.
fn gc_until_done(hub: &Hub) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = hub.cmd().args(["gc", "--json"]).output().unwrap();
        if out.status.success() {
            return serde_json::from_slice(&out.stdout).unwrap();
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("gc_running"), "gc failed: {err}");
        assert!(Instant::now() < deadline, "the lock never expired: {err}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn pull_and_compare(hub: &Hub, reference: &str, want: &Path, scratch: &Path) {
    let out = scratch.join(reference.replace(['/', ':', '@'], "_"));
    let _ = std::fs::remove_dir_all(&out);
    run_ok(hub.cmd().args(["pull", "-q", reference]).arg(&out));
    assert_same_tree(want, &out);
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn collections_running_while_pushes_run_lose_no_version() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A short grace period: a push's fresh packs survive the collections that
    // run while it uploads, and what the writers untag is collected soon.
    let hub =
        Hub::start_with_env(&format!("file://{}", data.path().display()), &lifecycle_with_grace(dir.path(), "2s", ""));
    const WRITERS: u64 = 2;
    const VERSIONS: u64 = 5;
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let (stop, url) = (stop.clone(), hub.url.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(Ordering::SeqCst) {
                let out = Command::new(crate::harness::BIN)
                    .args(["gc", "--json"])
                    .env("AETHERFS_HUB", &url)
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                assert!(out.status.success(), "gc failed: {}", String::from_utf8_lossy(&out.stderr));
                runs += 1;
            }
            runs
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (url, root) = (hub.url.clone(), dir.path().join(format!("w{w}")));
            std::thread::spawn(move || {
                for i in 0..VERSIONS {
                    let tree = root.join(format!("v{i}"));
                    version_tree(&tree, w, i);
                    let out = Command::new(crate::harness::BIN)
                        .args(["push", "-q", "--pack-mib", "1"])
                        .arg(&tree)
                        .arg(format!("acme/w{w}:v{i}"))
                        .env("AETHERFS_HUB", &url)
                        .stdin(Stdio::null())
                        .output()
                        .unwrap();
                    assert!(out.status.success(), "push {w}/{i}: {}", String::from_utf8_lossy(&out.stderr));
                    // Older versions become garbage: only the last two stay tagged.
                    if i >= 2 {
                        let old = format!("acme/w{w}:v{}", i - 2);
                        let out = Command::new(crate::harness::BIN)
                            .args(["tag", "rm", &old])
                            .env("AETHERFS_HUB", &url)
                            .stdin(Stdio::null())
                            .output()
                            .unwrap();
                        assert!(out.status.success(), "tag rm {old}: {}", String::from_utf8_lossy(&out.stderr));
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let runs = collector.join().unwrap();
    eprintln!("{runs} collections ran during {} pushes", WRITERS * VERSIONS);
    assert!(runs >= 2, "collections did not overlap the pushes");

    let last = gc_json(&hub, &["--grace", "0s"]);
    for w in 0..WRITERS {
        for i in VERSIONS - 2..VERSIONS {
            let tree = dir.path().join(format!("w{w}/v{i}"));
            pull_and_compare(&hub, &format!("acme/w{w}:v{i}"), &tree, dir.path());
        }
    }
    // Only the last two versions of each writer are live, and the store is
    // not much bigger than they are.
    let stored = last["stored_bytes_after"].as_u64().unwrap();
    let live = last["live_bytes"].as_u64().unwrap();
    assert!(stored as f64 <= live as f64 * 1.2, "{stored} stored for {live} live: {last}");
}

#[test]
fn two_hubs_collecting_one_store_at_once_lose_nothing() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("file://{}", data.path().display());
    let envs = lifecycle(dir.path(), "[[retention]]\ndatasets = \"**\"\nkeep_last = 1\n");
    let a = Hub::start_with_env(&storage, &envs);
    let b = Hub::start_with_env(&storage, &envs);
    let trees: Vec<PathBuf> = (0..4)
        .map(|i| {
            let t = dir.path().join(format!("v{i}"));
            version_tree(&t, 0, i);
            run_ok(a.cmd().args(["push", "-q", "--pack-mib", "1"]).arg(&t).arg("acme/both:latest"));
            t
        })
        .collect();
    let (ua, ub) = (a.url.clone(), b.url.clone());
    let run = |url: String| {
        std::thread::spawn(move || {
            Command::new(crate::harness::BIN)
                .args(["gc", "--json"])
                .env("AETHERFS_HUB", url)
                .stdin(Stdio::null())
                .output()
                .unwrap()
        })
    };
    let (ra, rb) = (run(ua), run(ub));
    let outs = [ra.join().unwrap(), rb.join().unwrap()];
    let mut ran = 0;
    for o in &outs {
        if o.status.success() {
            ran += 1;
        } else {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains("gc_running"), "a collection failed otherwise: {err}");
        }
    }
    assert!(ran >= 1, "neither collection ran");
    for hub in [&a, &b] {
        pull_and_compare(hub, "acme/both:latest", &trees[3], dir.path());
        let again = gc_until_done(hub);
        assert_eq!(again["packs_deleted"], 0, "work was left over: {again}");
        assert_eq!(again["versions_removed"], serde_json::json!([]), "{again}");
    }
}

#[test]
fn collections_killed_at_any_point_are_finished_by_the_next() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("file://{}", data.path().display());
    let envs = lifecycle(dir.path(), "[[retention]]\ndatasets = \"**\"\nkeep_last = 2\n");
    let mut trees = Vec::new();
    let mut round = 0u64;
    // Every step of a collection where a hub can die (see hub/src/gc.rs),
    // and a kill from outside at a random moment.
    let points = ["removed-versions", "wrote-pack", "rewrote-placement", "condemned", "deleted-pack", "random"];
    // New garbage: two more versions (four the first time), so older ones fall out.
    let push_two = |first: bool, trees: &mut Vec<PathBuf>, round: &mut u64| {
        let hub = Hub::start_with_env(&storage, &envs);
        for _ in 0..if first { 4 } else { 2 } {
            let t = dir.path().join(format!("v{round}"));
            version_tree(&t, 1, *round);
            run_ok(hub.cmd().args(["push", "-q", "--pack-mib", "1"]).arg(&t).arg("acme/killed:latest"));
            trees.push(t);
            *round += 1;
        }
    };
    let mut crashed = 0;
    for (i, point) in points.iter().enumerate() {
        push_two(i == 0, &mut trees, &mut round);
        if *point == "random" {
            let mut hub = Hub::start_with_env(&storage, &envs);
            let mut gc = hub.cmd().args(["gc", "--json"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
            std::thread::sleep(Duration::from_millis(rand::random::<u64>() % 60));
            hub.stop();
            let _ = gc.wait();
        } else {
            let mut crashing = envs.clone();
            crashing.push(("AETHERFS_TEST_GC_CRASH_AT".to_string(), (*point).to_string()));
            // A collection that finds nothing to do at this step (the last
            // one's leftovers can do that) is given more garbage and rerun.
            let mut reached = false;
            for _ in 0..3 {
                let hub = Hub::start_with_env(&storage, &crashing);
                wait_lock_expired(data.path());
                let out = hub.cmd().args(["gc", "--json"]).output().unwrap();
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(!err.contains("gc_running"), "{point}: {err}");
                if !out.status.success() {
                    reached = true;
                    break;
                }
                drop(hub);
                push_two(false, &mut trees, &mut round);
            }
            // Whether a step has work depends on what the last crash left;
            // a step not reached here is still covered by the other rounds
            // and by the random kill.
            if reached {
                crashed += 1;
            } else {
                eprintln!("the collection had nothing to do at {point} in three tries");
            }
        }
        // Whatever the collection had done, the last version reads back whole.
        let hub = Hub::start_with_env(&storage, &envs);
        pull_and_compare(&hub, "acme/killed:latest", trees.last().unwrap(), dir.path());
    }
    assert!(crashed >= 3, "only {crashed} of the crash points were reached");
    let hub = Hub::start_with_env(&storage, &envs);
    let done = gc_until_done(&hub);
    eprintln!("after the kills: {done}");
    let steady = gc_until_done(&hub);
    assert_eq!((steady["packs_deleted"].as_u64(), steady["packs_rewritten"].as_u64()), (Some(0), Some(0)), "{steady}");
    let history = run_ok(hub.cmd().args(["ls", "--json", "acme/killed:latest"]));
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    let records = history["records"].as_array().unwrap();
    // The two newest versions (retention keeps the last two of the tag) read back whole.
    let n = records.len();
    for (rec, tree) in records[n - 2..].iter().zip(&trees[trees.len() - 2..]) {
        let digest = rec["digest"].as_str().unwrap();
        pull_and_compare(&hub, &format!("acme/killed@{digest}"), tree, dir.path());
    }
    let stored = steady["stored_bytes_after"].as_u64().unwrap();
    let live = steady["live_bytes"].as_u64().unwrap();
    assert!(stored as f64 <= live as f64 * 1.2, "garbage left after the reruns: {steady}");
}

/// Waits until a killed collector's lock (in a `file://` store) has expired.
fn wait_lock_expired(store: &Path) {
    let lock = store.join("gc/lock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Ok(text) = std::fs::read_to_string(&lock) {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        if v["expires_unix"].as_u64().is_none_or(|e| e < now) {
            return;
        }
        assert!(Instant::now() < deadline, "the lock never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// GET with curl: the status and the body's bytes.
fn fetch(url: &str) -> (u16, Vec<u8>) {
    let out =
        Command::new(require("curl")).args(["-sS", "--max-time", "30", "-w", "\n%{http_code}", url]).output().unwrap();
    assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    let split = out.stdout.iter().rposition(|b| *b == b'\n').unwrap();
    let status = String::from_utf8_lossy(&out.stdout[split + 1..]).parse().unwrap();
    (status, out.stdout[..split].to_vec())
}

/// An agent config with WebDAV mounts.
fn agent_config(dir: &Path, mounts: &[(&str, u16)]) -> PathBuf {
    let mut text = format!(
        "reader = \"gc-test-agent\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [cache]\ndir = {:?}\nmax_size = \"64MiB\"\nmemory_size = \"1MiB\"\n\
         [fetch]\npoll_secs = 5\n",
        dir.join("cache").display().to_string()
    );
    for (reference, port) in mounts {
        text.push_str(&format!("[[mount]]\nref = {reference:?}\nwebdav = \"127.0.0.1:{port}\"\nprefetch = \"none\"\n"));
    }
    let p = dir.join("agent.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn an_agent_reads_through_a_collection_that_moves_its_chunks_and_its_lease_keeps_its_version() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start_with_env(&format!("file://{}", data.path().display()), &lifecycle(dir.path(), ""));
    // v0 holds a big file and a small one in one pack; v1 keeps only the small
    // one, which dedups into v0's pack. Once v0 is untagged that pack is
    // mostly dead, and a collection moves the small file's chunks out of it.
    let v0 = dir.path().join("v0");
    std::fs::create_dir_all(&v0).unwrap();
    std::fs::write(v0.join("big.bin"), random_bytes(6 << 20, 1)).unwrap();
    let small = random_bytes(300 << 10, 2);
    std::fs::write(v0.join("small.bin"), &small).unwrap();
    run_ok(hub.cmd().args(["push", "-q"]).arg(&v0).arg("acme/moved:old"));
    let v1 = dir.path().join("v1");
    std::fs::create_dir_all(&v1).unwrap();
    std::fs::write(v1.join("small.bin"), &small).unwrap();
    run_ok(hub.cmd().args(["push", "-q"]).arg(&v1).arg("acme/moved:latest"));
    // A second dataset whose only version the agent serves by digest, untagged.
    let pinned = dir.path().join("pinned");
    std::fs::create_dir_all(&pinned).unwrap();
    std::fs::write(pinned.join("p.bin"), random_bytes(100 << 10, 3)).unwrap();
    let out = run_ok(hub.cmd().args(["push", "-q"]).arg(&pinned).arg("acme/pinned:tmp"));
    let pinned_digest = out.trim().rsplit('@').next().unwrap().to_string();

    let (p1, p2) = (crate::harness::free_port(), crate::harness::free_port());
    let pinned_ref = format!("acme/pinned@{pinned_digest}");
    let cfg = agent_config(dir.path(), &[("acme/moved:latest", p1), (&pinned_ref, p2)]);
    let mut agent = Agent::start(&hub, &cfg, None, &[], true);
    run_ok(hub.cmd().args(["tag", "rm", "acme/moved:old"]));
    run_ok(hub.cmd().args(["tag", "rm", "acme/pinned:tmp"]));

    // The agent's lease reaches the hub, and keeps the pinned version.
    let deadline = Instant::now() + Duration::from_secs(30);
    let plan = loop {
        let plan = gc_json(&hub, &["--dry-run"]);
        if plan["held_by_leases"].as_array().is_some_and(|h| !h.is_empty()) {
            break plan;
        }
        assert!(Instant::now() < deadline, "no lease reached the hub: {plan}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(plan["held_by_leases"][0]["digest"], pinned_digest.as_str(), "{plan}");
    assert_eq!(plan["held_by_leases"][0]["readers"], serde_json::json!(["gc-test-agent"]));
    let text = run_ok(hub.cmd().args(["gc", "--dry-run"]));
    assert!(text.contains("kept for readers gc-test-agent"), "{text}");

    let done = gc_json(&hub, &[]);
    assert_eq!(done["versions_removed"].as_array().unwrap().len(), 1, "only v0 goes: {done}");
    assert!(done["packs_rewritten"].as_u64().unwrap() >= 1, "v0's pack was not rewritten: {done}");
    // Nothing was cached (no prefetch, nothing read): the reads go to the hub,
    // find the old pack gone, and follow the chunks to where they moved.
    let (status, body) = fetch(&format!("http://127.0.0.1:{p1}/small.bin"));
    assert_eq!(status, 200);
    assert!(body == small, "moved chunks read back differently ({} bytes)", body.len());
    let (status, body) = fetch(&format!("http://127.0.0.1:{p2}/p.bin"));
    assert_eq!((status, body.len()), (200, 100 << 10), "the leased version was collected");
    agent.stop();
    let pulled = dir.path().join("pulled");
    run_ok(hub.cmd().args(["pull", "-q", &pinned_ref]).arg(&pulled));
    assert_same_tree(&pinned, &pulled);
}
