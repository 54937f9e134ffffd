//! Push reads each file once, and the stat cache makes an unchanged re-push
//! (and a pull into an up-to-date directory) read nothing; what changed is
//! still picked up. Counted by the reports (`read_bytes`, `hashed_bytes`,
//! `indexed_bytes`), never timed.

use std::path::Path;
use std::process::Command;

use aetherfs_hub_client::stat_cache::{is_racy, now_ns};
use aetherfs_hub_client::walk::{FileStat, LocalKind, Strictness, walk};
use serde_json::Value;

use crate::harness::{Hub, assert_same_tree, make_tree, run_ok};

/// (regular files, non-empty ones, their bytes) under `root`.
fn files_of(root: &Path) -> (u64, u64, u64) {
    let mut out = (0, 0, 0);
    for e in walk(root, Strictness::Fail).unwrap() {
        if let LocalKind::File { size } = e.kind {
            out.0 += 1;
            out.1 += u64::from(size > 0);
            out.2 += size;
        }
    }
    out
}

/// Waits until no file under `root` is racy (changed so recently that a
/// later change could keep its stat): such files are hashed again by
/// design. This waits on the clock passing a point, not on a duration.
fn wait_until_not_racy(root: &Path) {
    let stats: Vec<FileStat> = walk(root, Strictness::Fail).unwrap().into_iter().map(|e| e.stat).collect();
    while stats.iter().any(|s| is_racy(s, now_ns())) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn json(cmd: &mut Command) -> Value {
    serde_json::from_str(&run_ok(cmd)).unwrap()
}

fn tree(root: &Path) {
    make_tree(root, 3 << 20);
    for d in 0..3 {
        for f in 0..100 {
            let p = root.join(format!("small/d{d}/f{f}.txt"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, format!("small file {d}/{f}\n").repeat(f + 1)).unwrap();
        }
    }
}

#[test]
fn first_push_reads_once_and_an_unchanged_repush_reads_nothing() {
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let src = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    tree(src.path());
    let (files, _, bytes) = files_of(src.path());
    wait_until_not_racy(src.path());
    let push = |reference: &str, hub: &Hub, extra: &[&str]| {
        json(
            hub.cmd()
                .env("AETHERFS_STAT_CACHE_DIR", cache.path())
                // A fixed creation time: equal trees give equal version digests.
                .args(["push", "--json", "--annotation", "created=2026-01-01T00:00:00Z"])
                .args(extra)
                .arg(src.path())
                .arg(reference),
        )
    };

    // The first push reads every byte exactly once (no second read to pack).
    let first = push("acme/speed:v1", &hub, &[]);
    assert_eq!(first["read_bytes"], bytes, "{first}");
    assert_eq!(first["hashed_bytes"], bytes);
    assert_eq!(first["files_hashed"], files);
    assert_eq!(first["stat_cache_hits"], 0);

    // Unchanged: nothing is read or hashed, and the version is the same.
    let again = push("acme/speed:v1", &hub, &[]);
    assert_eq!(again["read_bytes"], 0, "{again}");
    assert_eq!(again["hashed_bytes"], 0);
    assert_eq!(again["files_hashed"], 0);
    assert_eq!(again["stat_cache_hits"], files);
    assert_eq!(again["digest"], first["digest"]);
    assert_eq!(again["new_chunks"], 0);

    // --no-stat-cache reads everything again, and agrees.
    let rehash = push("acme/speed:v1", &hub, &["--no-stat-cache"]);
    assert_eq!(rehash["hashed_bytes"], bytes);
    assert_eq!(rehash["digest"], first["digest"]);

    // A file rewritten in place with the same size is picked up.
    let changed = src.path().join("small/d1/f7.txt");
    let old = std::fs::read(&changed).unwrap();
    std::fs::write(&changed, old.to_ascii_uppercase()).unwrap();
    let v2 = push("acme/speed:v2", &hub, &[]);
    assert_eq!(v2["files_hashed"], 1, "{v2}");
    assert_eq!(v2["hashed_bytes"], old.len());
    assert_ne!(v2["digest"], first["digest"]);
    let out = tempfile::tempdir().unwrap();
    run_ok(hub.cmd().args(["pull", "acme/speed:v2"]).arg(out.path().join("v2")));
    assert_same_tree(src.path(), &out.path().join("v2"));

    // A hub that lacks the chunks of cached files: they are read (and
    // checked against their digests) to be uploaded, and nothing is hashed
    // to find them.
    let other_data = tempfile::tempdir().unwrap();
    let other = Hub::start(&format!("file://{}", other_data.path().display()));
    wait_until_not_racy(src.path());
    push("acme/speed:v2", &hub, &[]); // caches the changed file once it is no longer racy
    let fresh = push("acme/speed:v2", &other, &[]);
    assert_eq!(fresh["hashed_bytes"], 0, "{fresh}");
    assert_eq!(fresh["read_bytes"], bytes);
    assert_eq!(fresh["digest"], v2["digest"]);
    run_ok(other.cmd().args(["pull", "acme/speed:v2"]).arg(out.path().join("other")));
    assert_same_tree(src.path(), &out.path().join("other"));
}

#[test]
fn a_pull_into_an_up_to_date_directory_hashes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let src = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    tree(src.path());
    run_ok(hub.cmd().args(["push", "--no-stat-cache"]).arg(src.path()).arg("acme/speed:v1"));
    let dst = tempfile::tempdir().unwrap();
    let target = dst.path().join("v1");
    let pull = || {
        json(
            hub.cmd()
                .env("AETHERFS_STAT_CACHE_DIR", cache.path())
                .args(["pull", "--json", "acme/speed:v1"])
                .arg(&target),
        )
    };
    pull();
    let (_, non_empty, bytes) = files_of(&target);
    wait_until_not_racy(&target);

    // Files the pull wrote are indexed once (they were never hashed where
    // they lie), then remembered.
    let first = pull();
    assert_eq!(first["indexed_bytes"], bytes, "{first}");
    assert_eq!(first["files_written"], 0);
    let second = pull();
    assert_eq!(second["indexed_bytes"], 0, "{second}");
    assert_eq!(second["stat_cache_hits"], non_empty);
    assert_eq!(second["files_written"], 0);
    assert_eq!(second["fetched_bytes"], 0);

    // A damaged file is noticed and repaired.
    let f = target.join("small/d2/f3.txt");
    let old = std::fs::read(&f).unwrap();
    std::fs::write(&f, vec![b'x'; old.len()]).unwrap();
    let repair = pull();
    assert_eq!(repair["files_written"], 1, "{repair}");
    assert_same_tree(src.path(), &target);
}
