//! What a pull does to a directory that already holds things.

use serde_json::Value;

use crate::harness::{Hub, assert_same_tree, run_ok};

#[test]
fn pull_replaces_changed_entries_and_deletes_only_when_asked() {
    let hub = Hub::start("memory://");
    let v1 = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(v1.path().join("a")).unwrap();
    std::fs::write(v1.path().join("a/keep.txt"), b"same in both").unwrap();
    std::fs::write(v1.path().join("a/gone.txt"), b"only in v1").unwrap();
    std::fs::write(v1.path().join("becomes-dir"), b"a file in v1").unwrap();
    run_ok(hub.cmd().arg("push").arg(v1.path()).arg("acme/sem:v1"));

    let v2 = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(v2.path().join("a")).unwrap();
    std::fs::create_dir_all(v2.path().join("becomes-dir")).unwrap();
    std::fs::write(v2.path().join("a/keep.txt"), b"same in both").unwrap();
    std::fs::write(v2.path().join("becomes-dir/inner.txt"), b"now a directory").unwrap();
    std::os::unix::fs::symlink("keep.txt", v2.path().join("a/new-link")).unwrap();
    run_ok(hub.cmd().arg("push").arg(v2.path()).arg("acme/sem:v2"));

    let dst = tempfile::tempdir().unwrap();
    run_ok(hub.cmd().args(["pull", "acme/sem:v1"]).arg(dst.path()));
    assert_same_tree(v1.path(), dst.path());

    // Without --delete, extraneous files stay and are reported.
    let r: Value =
        serde_json::from_str(&run_ok(hub.cmd().args(["pull", "--json", "acme/sem:v2"]).arg(dst.path()))).unwrap();
    assert_eq!(r["extraneous"], 1, "{r}");
    assert_eq!(r["files_unchanged"], 1, "{r}");
    assert!(dst.path().join("a/gone.txt").exists());
    assert_eq!(std::fs::read(dst.path().join("becomes-dir/inner.txt")).unwrap(), b"now a directory");

    // With --delete, the directory becomes exactly v2.
    let r: Value =
        serde_json::from_str(&run_ok(hub.cmd().args(["pull", "--json", "--delete", "acme/sem:v2"]).arg(dst.path())))
            .unwrap();
    assert_eq!(r["removed"], 1, "{r}");
    assert_same_tree(v2.path(), dst.path());
}

#[test]
fn pull_never_writes_through_a_symlink_in_the_target() {
    let hub = Hub::start("memory://");
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("sub")).unwrap();
    std::fs::write(src.path().join("sub/file.txt"), b"dataset bytes").unwrap();
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/links:v1"));

    // The target's `sub` is a symlink to a directory outside it.
    let outside = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), dst.path().join("sub")).unwrap();
    run_ok(hub.cmd().args(["pull", "acme/links:v1"]).arg(dst.path()));
    assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none(), "pull wrote outside its directory");
    assert!(std::fs::symlink_metadata(dst.path().join("sub")).unwrap().is_dir());
    assert_same_tree(src.path(), dst.path());
}
