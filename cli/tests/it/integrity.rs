//! Corrupt stored data is caught: on pull (naming the file, leaving the good
//! copy in place) and on upload.

use std::path::{Path, PathBuf};

use aetherfs_format::Digest;
use aetherfs_format::pack::PackBuilder;

use crate::harness::{Hub, random_bytes, run_err, run_ok};

fn packs(storage: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(storage.join("packs"))
        .map(|rd| rd.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "pack")).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_flipped_byte_in_a_stored_pack_fails_the_pull_and_keeps_the_good_file() {
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("data")).unwrap();
    let v1 = random_bytes(3 << 20, 1);
    std::fs::write(src.path().join("data/a.bin"), &v1).unwrap();
    std::fs::write(src.path().join("data/b.txt"), b"unchanged\n").unwrap();
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/integrity:v1"));
    let dst = tempfile::tempdir().unwrap();
    run_ok(hub.cmd().args(["pull", "acme/integrity:v1"]).arg(dst.path()));

    let before = packs(data.path());
    std::fs::write(src.path().join("data/a.bin"), random_bytes(3 << 20, 2)).unwrap();
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/integrity:v2"));
    let new: Vec<PathBuf> = packs(data.path()).into_iter().filter(|p| !before.contains(p)).collect();
    assert_eq!(new.len(), 1, "one new pack");
    let mut bytes = std::fs::read(&new[0]).unwrap();
    bytes[1000] ^= 0x40; // inside the first chunk's data
    std::fs::write(&new[0], &bytes).unwrap();

    let err = run_err(hub.cmd().args(["pull", "acme/integrity:v2"]).arg(dst.path()));
    let msg = String::from_utf8_lossy(&err.stderr);
    assert_eq!(msg.trim().lines().count(), 1, "one line: {msg}");
    assert!(msg.contains("data/a.bin") && msg.contains("corrupt"), "error must name the file: {msg}");
    assert_eq!(std::fs::read(dst.path().join("data/a.bin")).unwrap(), v1, "the good file was replaced");
    let leftovers: Vec<_> = std::fs::read_dir(dst.path().join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".aetherfs-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pack_that_does_not_match_its_chunks_is_refused_on_upload() {
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let chunk = random_bytes(100_000, 3);
    let mut b = PackBuilder::new();
    b.add(Digest::of(&chunk), &chunk, false);
    let mut pack = b.finish().bytes;
    pack[500] ^= 1;
    let digest = Digest::of(&pack); // the pack's name matches; its chunk does not
    let resp = reqwest::Client::new()
        .put(format!("{}/v1/datasets/acme/x/packs/{digest}", hub.url))
        .body(pack)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_pack", "{body}");
    assert!(packs(data.path()).is_empty(), "nothing may be stored");
    let missing = hub.client().missing_chunks(&"acme/x".parse().unwrap(), &[Digest::of(&chunk)]).await.unwrap();
    assert_eq!(missing.missing.len(), 1);
}
