//! Push a tree, pull it elsewhere, compare: one scenario over every storage backend.

use serde_json::Value;

use crate::harness::{Hub, Moto, assert_same_tree, make_tree, run_err, run_ok, sqlite};

fn round_trip(hub: &Hub) {
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), 100 << 20);

    let out = run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/geoip:2026.11").args(["--tag", "latest"]));
    let last = out.lines().last().unwrap();
    let (name, digest) = last.split_once('@').expect("push prints NAME@DIGEST last");
    assert_eq!(name, "acme/geoip");
    assert!(digest.starts_with("blake3:"), "{last}");

    let dst = tempfile::tempdir().unwrap();
    let target = dst.path().join("pulled");
    let out = run_ok(hub.cmd().args(["pull", "acme/geoip:latest"]).arg(&target));
    assert_eq!(out.trim(), last);
    assert_same_tree(src.path(), &target);
    assert_eq!(
        sqlite(&target.join("db/example.sqlite"), "SELECT count(*), sum(v) FROM t;"),
        sqlite(&src.path().join("db/example.sqlite"), "SELECT count(*), sum(v) FROM t;")
    );

    // By digest too, and the tags and listings agree.
    let by_digest = dst.path().join("by-digest");
    run_ok(hub.cmd().arg("pull").arg(last).arg(&by_digest));
    assert_same_tree(src.path(), &by_digest);
    let tags: Value = serde_json::from_str(&run_ok(hub.cmd().args(["ls", "acme/geoip", "--json"]))).unwrap();
    let mut names: Vec<&str> = tags["tags"].as_array().unwrap().iter().map(|t| t["tag"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["2026.11", "latest"]);
    let list: Value = serde_json::from_str(&run_ok(hub.cmd().args(["ls", "--json"]))).unwrap();
    assert_eq!(list["datasets"][0]["name"], "acme/geoip");
    let inspect: Value =
        serde_json::from_str(&run_ok(hub.cmd().args(["inspect", "acme/geoip:2026.11", "--files", "--json"]))).unwrap();
    assert_eq!(inspect["digest"], digest);
    assert_eq!(inspect["stats"]["files"], 8);
    assert_eq!(inspect["stats"]["symlinks"], 2);

    // Pulling again into the same directory changes nothing and fetches nothing.
    let again: Value =
        serde_json::from_str(&run_ok(hub.cmd().args(["pull", "acme/geoip:latest", "--json"]).arg(&target))).unwrap();
    assert_eq!(again["fetched_bytes"], 0);
    assert_eq!(again["files_written"], 0);
    assert_same_tree(src.path(), &target);

    // A tag that does not exist is a clear error.
    let err = run_err(hub.cmd().args(["pull", "acme/geoip:nope"]).arg(dst.path().join("x")));
    let msg = String::from_utf8_lossy(&err.stderr);
    assert_eq!(msg.lines().count(), 1, "one line: {msg}");
    assert!(msg.contains("tag_not_found") || msg.contains("not found"), "{msg}");
}

#[test]
fn round_trip_on_local_storage() {
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    round_trip(&hub);
}

#[test]
fn round_trip_on_memory_storage() {
    let hub = Hub::start("memory://");
    round_trip(&hub);
}

#[test]
fn round_trip_on_s3() {
    let moto = Moto::start("aetherfs-test");
    let mut hub = Hub::start_with_env("s3://aetherfs-test/some/prefix", &moto.env());
    round_trip(&hub);
    // Durable state lives in the bucket: a new hub serves what the old one stored.
    hub.restart();
    let dst = tempfile::tempdir().unwrap();
    run_ok(hub.cmd().args(["pull", "acme/geoip:2026.11"]).arg(dst.path()));
    assert!(dst.path().join("big/random.bin").metadata().unwrap().len() == 100 << 20);
}

#[test]
fn tag_rm_and_rm_delete_tags_versions_and_whole_datasets() {
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let src = tempfile::tempdir().unwrap();
    let push = |reference: &str| -> String {
        let out: serde_json::Value =
            serde_json::from_str(&run_ok(hub.cmd().args(["push", "--json"]).arg(src.path()).arg(reference))).unwrap();
        out["digest"].as_str().unwrap().to_string()
    };
    std::fs::write(src.path().join("a.txt"), b"one\n").unwrap();
    let d1 = push("acme/del:v1");
    std::fs::write(src.path().join("a.txt"), b"two\n").unwrap();
    let d2 = push("acme/del:v2");

    // A tagged version is refused, with one line naming the tag.
    let out = run_err(hub.cmd().arg("rm").arg(format!("acme/del@{d2}")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("v2") && err.trim().lines().count() == 1, "{err}");
    // Untag, then delete; the tag's history stays readable.
    let rec: serde_json::Value =
        serde_json::from_str(&run_ok(hub.cmd().args(["--json", "tag", "rm", "acme/del:v2"]))).unwrap();
    assert_eq!(rec["digest"], serde_json::Value::Null);
    assert_eq!(rec["previous"], d2);
    run_ok(hub.cmd().arg("rm").arg(format!("acme/del@{d2}")));
    run_err(hub.cmd().args(["pull", "acme/del:v2"]).arg(tempfile::tempdir().unwrap().path()));
    assert!(run_ok(hub.cmd().args(["ls", "acme/del:v2"])).contains(&d2));

    // The whole dataset: its tags, then its versions.
    let removed: serde_json::Value =
        serde_json::from_str(&run_ok(hub.cmd().args(["--json", "rm", "acme/del", "--all"]))).unwrap();
    assert_eq!(removed["tags_deleted"], serde_json::json!(["v1"]));
    assert_eq!(removed["versions_deleted"], serde_json::json!([d1]));
    run_err(hub.cmd().args(["pull", "acme/del:v1"]).arg(tempfile::tempdir().unwrap().path()));
    // Bad shapes get a clear error.
    let out = run_err(hub.cmd().args(["rm", "acme/del"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--all"));
    run_err(hub.cmd().args(["rm", "acme/del:v1"]));
}
