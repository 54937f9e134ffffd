//! Two hub replicas on one S3 bucket (moto's server): what is published
//! through one is readable through the other at once, concurrent pushes and
//! tag moves through both lose nothing, a long-poll on one wakes for a move
//! made through the other, a replica killed in the middle of a push leaves
//! no partial version and the retry through the other uploads only what is
//! missing, and a replica restarted with nothing local answers the same.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Hub, Moto, assert_same_tree, http_get, metric, random_bytes, run_err, run_ok};

const STORAGE: &str = "s3://aetherfs-replicas/hub";

fn push_json(hub: &Hub, dir: &Path, reference: &str, extra: &[&str]) -> Value {
    let out = run_ok(hub.cmd().args(["push", "--json"]).args(extra).arg(dir).arg(reference));
    serde_json::from_str(&out).unwrap()
}

fn pull(hub: &Hub, reference: &str) -> tempfile::TempDir {
    let dst = tempfile::tempdir().unwrap();
    run_ok(hub.cmd().args(["pull", reference]).arg(dst.path()));
    dst
}

fn get_json(hub: &Hub, path: &str) -> (u16, Value) {
    let (status, body) = http_get(&hub.url, path).expect("hub answers");
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn replicas() -> (Moto, Hub, Hub) {
    let moto = Moto::start("aetherfs-replicas");
    let a = Hub::start_with_env(STORAGE, &moto.env());
    let b = Hub::start_with_env(STORAGE, &moto.env());
    (moto, a, b)
}

#[test]
fn two_replicas_share_versions_tags_and_long_polls() {
    let (_moto, a, mut b) = replicas();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("shared.bin"), random_bytes(6 << 20, 1)).unwrap();
    std::fs::write(src.path().join("a.txt"), b"one\n").unwrap();

    // Published through A, readable through B at once.
    let v1 = push_json(&a, src.path(), "acme/r:latest", &[]);
    let d1 = v1["digest"].as_str().unwrap().to_string();
    assert_same_tree(src.path(), pull(&b, "acme/r:latest").path());

    // Concurrent pushes of overlapping data through both replicas.
    let x = tempfile::tempdir().unwrap();
    let y = tempfile::tempdir().unwrap();
    for (dir, seed) in [(&x, 2), (&y, 3)] {
        std::fs::write(dir.path().join("shared.bin"), random_bytes(6 << 20, 1)).unwrap();
        std::fs::write(dir.path().join("own.bin"), random_bytes(2 << 20, seed)).unwrap();
    }
    let (rx, ry) = std::thread::scope(|s| {
        let px = s.spawn(|| push_json(&a, x.path(), "acme/r:x", &[]));
        let py = s.spawn(|| push_json(&b, y.path(), "acme/r:y", &[]));
        (px.join().unwrap(), py.join().unwrap())
    });
    for r in [&rx, &ry] {
        assert!(r["new_bytes"].as_u64().unwrap() <= 3 << 20, "the shared file was uploaded again: {r}");
    }
    assert_same_tree(x.path(), pull(&b, "acme/r:x").path());
    assert_same_tree(y.path(), pull(&a, "acme/r:y").path());

    // Tag moves through both replicas at once: every move is kept, in one chain.
    let mut versions = Vec::new();
    for i in 0..12 {
        std::fs::write(src.path().join("a.txt"), format!("version {i}\n")).unwrap();
        let v = push_json(&a, src.path(), "acme/r", &[]);
        versions.push(v["digest"].as_str().unwrap().to_string());
    }
    std::thread::scope(|s| {
        for (hub, part) in [(&a, &versions[..6]), (&b, &versions[6..])] {
            s.spawn(move || {
                for d in part {
                    run_ok(hub.cmd().args(["tag", &format!("acme/r@{d}"), "acme/r:moving"]));
                }
            });
        }
    });
    let (status, history) = get_json(&b, "/v1/datasets/acme/r/tags/moving/history");
    assert_eq!(status, 200, "{history}");
    let records = history["records"].as_array().unwrap();
    assert_eq!(records.len(), 12, "a move was lost: {history}");
    let mut seen: Vec<String> = records.iter().map(|r| r["digest"].as_str().unwrap().to_string()).collect();
    for w in records.windows(2) {
        assert_eq!(w[1]["previous"], w[0]["digest"], "the history is not one chain");
    }
    seen.sort();
    let mut all = versions.clone();
    all.sort();
    assert_eq!(seen, all);

    // A long-poll waiting on B answers a move made through A.
    let current = records.last().unwrap()["digest"].as_str().unwrap().to_string();
    let poll = format!("/v1/datasets/acme/r/tags/moving?since={current}&wait=9");
    let (latency, answer) = std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let r = get_json(&b, &poll);
            (Instant::now(), r)
        });
        // The poll is waiting once B counts it.
        let deadline = Instant::now() + Duration::from_secs(30);
        while metric(&http_get(&b.url, "/metrics").unwrap().1, "aetherfs_hub_long_polls_waiting") != Some(1.0) {
            assert!(Instant::now() < deadline, "the long-poll never waited");
            std::thread::sleep(Duration::from_millis(10));
        }
        run_ok(a.cmd().args(["tag", &format!("acme/r@{d1}"), "acme/r:moving"]));
        let moved = Instant::now();
        let (answered, r) = waiter.join().unwrap();
        (answered.saturating_duration_since(moved), r)
    });
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(answer.1["digest"], d1, "the poll did not see the move: {}", answer.1);
    eprintln!("long-poll on replica B answered {} ms after the move through A", latency.as_millis());

    // B keeps only caches: restarted with nothing, it answers the same.
    let before = run_ok(b.cmd().args(["ls", "acme/r"]));
    b.restart();
    assert_eq!(run_ok(b.cmd().args(["ls", "acme/r"])), before);
    let again = push_json(&b, x.path(), "acme/r:x", &[]);
    assert_eq!(again["new_bytes"], 0, "{again}");
    assert_same_tree(src.path().join("shared.bin").parent().unwrap(), pull(&b, "acme/r:latest").path());
}

#[test]
fn a_replica_killed_mid_push_leaves_nothing_half_done() {
    let (_moto, mut a, b) = replicas();
    let src = tempfile::tempdir().unwrap();
    let total = 48u64 << 20;
    std::fs::write(src.path().join("big.bin"), random_bytes(total as usize, 7)).unwrap();

    // Small packs, one at a time: the push is still uploading when A dies.
    let mut push = a.cmd();
    push.args(["push", "--json", "--pack-mib", "2", "--uploads", "1"]).arg(src.path()).arg("acme/k:latest");
    push.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let child = push.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored_by_a = loop {
        let m = http_get(&a.url, "/metrics").map(|r| r.1).unwrap_or_default();
        let bytes = metric(&m, "aetherfs_hub_pack_received_bytes_total").unwrap_or(0.0);
        if bytes >= (6 << 20) as f64 {
            break bytes as u64;
        }
        assert!(Instant::now() < deadline, "the push stored nothing");
        std::thread::sleep(Duration::from_millis(5));
    };
    a.stop(); // SIGKILL
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "the push finished before the replica died; make it bigger");

    // Nothing of it is visible through B.
    let (status, body) = get_json(&b, "/v1/datasets/acme/k/tags/latest");
    assert_eq!(status, 404, "{body}");
    let (_, versions) = get_json(&b, "/v1/datasets/acme/k/manifests");
    assert!(versions["versions"].as_array().is_none_or(|v| v.is_empty()), "{versions}");
    run_err(b.cmd().args(["pull", "acme/k:latest"]).arg(tempfile::tempdir().unwrap().path()));

    // The retry through B uploads only what A had not stored.
    let retry = push_json(&b, src.path(), "acme/k:latest", &["--pack-mib", "2"]);
    let sent = retry["new_bytes"].as_u64().unwrap();
    assert!(sent + stored_by_a <= total + (1 << 20), "the retry sent {sent} bytes; A had stored {stored_by_a}");
    eprintln!(
        "retry through B uploaded {} MiB of {} MiB (A had stored {} MiB)",
        sent >> 20,
        total >> 20,
        stored_by_a >> 20
    );
    assert_same_tree(src.path(), pull(&b, "acme/k:latest").path());
}
