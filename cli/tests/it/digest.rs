//! `aetherfs digest` prints, for a local file, the digest `inspect --files`
//! shows for the same file in a version (derived from its chunks, not its
//! BLAKE3), so a user can check a file against a version without a pull.

use std::collections::BTreeMap;
use std::process::Stdio;

use aetherfs_format::Digest;
use serde_json::Value;

use crate::harness::{Hub, random_bytes, run_err, run_ok};

#[test]
fn digest_matches_inspect_files_and_not_b3sum() {
    let hub = Hub::start("memory://");
    let src = tempfile::tempdir().unwrap();
    let big = random_bytes(3 << 20, 41);
    std::fs::create_dir_all(src.path().join("dir")).unwrap();
    std::fs::write(src.path().join("big.bin"), &big).unwrap();
    std::fs::write(src.path().join("dir/small b.txt"), b"small\n").unwrap();
    std::fs::write(src.path().join("empty"), b"").unwrap();
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/digest:v1"));

    let inspect: Value =
        serde_json::from_str(&run_ok(hub.cmd().args(["inspect", "acme/digest:v1", "--files", "--json"]))).unwrap();
    let listed: BTreeMap<String, (String, u64, usize)> = inspect["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "file")
        .map(|e| {
            let chunks = e["chunks"].as_array().unwrap().len();
            (
                e["path"].as_str().unwrap().into(),
                (e["digest"].as_str().unwrap().into(), e["size"].as_u64().unwrap(), chunks),
            )
        })
        .collect();
    assert_eq!(listed.len(), 3);
    assert!(listed["big.bin"].2 > 10, "a multi-chunk file: {:?}", listed["big.bin"]);

    // Text: b3sum's layout, one line per path, in the order given.
    let paths = ["big.bin", "dir/small b.txt", "empty"];
    let text = run_ok(hub.cmd().arg("digest").args(paths).current_dir(src.path()));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (line, path) in lines.iter().zip(paths) {
        assert_eq!(*line, format!("{}  {path}", listed[path].0));
    }
    // JSON: an array of objects with the same digests, sizes and chunk counts.
    let json: Value =
        serde_json::from_str(&run_ok(hub.cmd().args(["digest", "--json"]).args(paths).current_dir(src.path())))
            .unwrap();
    for (row, path) in json.as_array().unwrap().iter().zip(paths) {
        let (digest, size, chunks) = &listed[path];
        assert_eq!(row["path"], path);
        assert_eq!(row["digest"], digest.as_str(), "{row}");
        assert_eq!((row["size"].as_u64(), row["chunks"].as_u64()), (Some(*size), Some(*chunks as u64)), "{row}");
    }
    // The text listing of inspect shows the same digest.
    let files = run_ok(hub.cmd().args(["inspect", "acme/digest:v1", "--files"]));
    assert!(files.lines().any(|l| l.contains(&listed["big.bin"].0) && l.ends_with("big.bin")), "{files}");

    // Not the BLAKE3 of the bytes (what b3sum prints).
    assert_ne!(listed["big.bin"].0, Digest::of(&big).to_string());
    assert_ne!(listed["empty"].0, Digest::of(b"").to_string());

    // A pulled copy has the same digest; a changed file another one.
    let dst = tempfile::tempdir().unwrap();
    run_ok(hub.cmd().args(["pull", "acme/digest:v1"]).arg(dst.path()));
    let pulled = run_ok(hub.cmd().arg("digest").arg(dst.path().join("big.bin")));
    assert!(pulled.starts_with(&format!("{}  ", listed["big.bin"].0)), "{pulled}");
    let mut changed = big.clone();
    changed[2_000_000] ^= 1;
    std::fs::write(dst.path().join("big.bin"), &changed).unwrap();
    let after = run_ok(hub.cmd().arg("digest").arg(dst.path().join("big.bin")));
    assert!(!after.starts_with(&listed["big.bin"].0), "{after}");

    // Standard input.
    let mut child = hub.cmd().args(["digest", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &big).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{}  -\n", listed["big.bin"].0));

    // A directory or a missing file: one line on stderr, non-zero.
    for bad in ["dir", "nope"] {
        let err = run_err(hub.cmd().args(["digest", bad]).current_dir(src.path()));
        let msg = String::from_utf8_lossy(&err.stderr);
        assert_eq!(msg.trim().lines().count(), 1, "{msg}");
        assert!(msg.contains(bad), "{msg}");
    }
    run_err(hub.cmd().arg("digest"));
    let help = run_ok(hub.cmd().args(["digest", "--help"]));
    assert!(help.contains("b3sum") && help.contains("inspect --files"), "{help}");
}
