//! Malformed input gets the right 4xx (or a one-line CLI error) and stores nothing.

use aetherfs_format::{
    ChunkLocation, ChunkParams, ChunkRef, Compression, Digest, Entry, EntryKind, FileEntry, Manifest,
};
use serde_json::Value;

use crate::harness::{Hub, run_err};

fn empty_file(path: &str) -> Entry {
    Entry { path: path.into(), mode: 0o644, kind: EntryKind::File(FileEntry::new(vec![])) }
}

/// A valid manifest's bytes with one path rewritten (same length), as a
/// hostile client would send it.
fn patched(paths: &[&str], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut m = Manifest::new(ChunkParams::default());
    m.entries = paths.iter().map(|p| empty_file(p)).collect();
    m.sort();
    let mut bytes = m.encode().unwrap();
    let pos = bytes.windows(from.len()).position(|w| w == from.as_bytes()).unwrap();
    bytes[pos..pos + from.len()].copy_from_slice(to.as_bytes());
    bytes
}

async fn put_manifest(hub: &Hub, name: &str, body: Vec<u8>) -> (u16, Value) {
    let digest = Digest::of(&body);
    let r = reqwest::Client::new()
        .put(format!("{}/v1/datasets/{name}/manifests/{digest}", hub.url))
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_get_clear_4xx_and_store_nothing() {
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let http = reqwest::Client::new();

    for (paths, from, to) in [
        (&["ab/x"][..], "ab/x", "../x"),
        (&["aetc/passwd"][..], "aetc/passwd", "/etc/passwd"),
        (&["a1", "a2"][..], "a2", "a1"),
        (&["a/b/c"][..], "a/b/c", "a//bc"),
    ] {
        let (status, body) = put_manifest(&hub, "acme/x", patched(paths, from, to)).await;
        assert_eq!(status, 400, "{to}: {body}");
        assert_eq!(body["error"]["code"], "invalid_manifest", "{to}: {body}");
    }

    // A manifest naming a chunk the hub does not have.
    let mut m = Manifest::new(ChunkParams::default());
    let ghost = Digest::of(b"ghost");
    m.entries = vec![Entry {
        path: "f".into(),
        mode: 0o644,
        kind: EntryKind::File(FileEntry::new(vec![ChunkRef {
            digest: ghost,
            len: 5,
            location: ChunkLocation {
                pack: Digest::of(b"p"),
                offset: 8,
                stored_len: 5,
                compression: Compression::None,
            },
        }])),
    }];
    let (status, body) = put_manifest(&hub, "acme/x", m.encode().unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("missing_chunks")), "{body}");

    // Body digest not matching the URL.
    let good = patched(&["ok"], "ok", "ok");
    let r = http
        .put(format!("{}/v1/datasets/acme/x/manifests/{}", hub.url, Digest::of(b"other")))
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Malformed names, tags, digests and bodies.
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (http.get(format!("{}/v1/datasets/Bad_Name/tags", hub.url)), 400, "invalid_name"),
        (http.get(format!("{}/v1/datasets/acme/x/tags/-bad", hub.url)), 400, "invalid_tag"),
        (http.get(format!("{}/v1/datasets/acme/x/manifests/blake3:zz", hub.url)), 400, "invalid_digest"),
        (http.get(format!("{}/v1/datasets/acme/x/packs/sha256:00", hub.url)), 400, "invalid_digest"),
        (
            http.get(format!("{}/v1/datasets/acme/x/manifests/{}", hub.url, Digest::of(b"none"))),
            404,
            "manifest_not_found",
        ),
        (http.get(format!("{}/v1/datasets/acme/x/packs/{}", hub.url, Digest::of(b"none"))), 404, "pack_not_found"),
        (http.get(format!("{}/v1/datasets/acme/x/tags/latest", hub.url)), 404, "tag_not_found"),
        (
            http.put(format!("{}/v1/datasets/acme/x/tags/latest", hub.url))
                .json(&serde_json::json!({"digest": Digest::of(b"none").to_string()})),
            404,
            "manifest_not_found",
        ),
        (
            http.put(format!("{}/v1/datasets/acme/x/tags/latest", hub.url))
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "invalid_json",
        ),
        (
            http.post(format!("{}/v1/datasets/acme/x/chunks/missing", hub.url))
                .json(&serde_json::json!({"digests": ["blake3:nope"]})),
            400,
            "invalid_json",
        ),
        (http.get(format!("{}/v1/nothing-here", hub.url)), 404, "not_found"),
    ];
    for (req, status, code) in cases {
        let r = req.send().await.unwrap();
        let got = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    // An oversized pack is refused before it is stored.
    let big = vec![0u8; 129 << 20];
    let r = http.put(format!("{}/v1/datasets/acme/x/packs/{}", hub.url, Digest::of(&big))).body(big).send().await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }

    // Nothing of the above was stored.
    let list: Value = http.get(format!("{}/v1/datasets", hub.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["datasets"], serde_json::json!([]), "{list}");
    assert!(
        !data.path().join("packs").exists() || std::fs::read_dir(data.path().join("packs")).unwrap().next().is_none()
    );
}

#[test]
fn the_cli_rejects_malformed_references_with_one_line() {
    let hub = Hub::start("memory://");
    let src = tempfile::tempdir().unwrap();
    for args in [
        vec!["push", src.path().to_str().unwrap(), "Bad/Name"],
        vec!["push", src.path().to_str().unwrap(), "acme/x:-tag"],
        vec!["push", src.path().to_str().unwrap(), "acme/x", "--tag", "a/b"],
        vec!["pull", "acme/x@blake3:123", "/tmp/never"],
        vec!["tag", "acme/x:v1", "acme/x"],
        vec!["inspect", "acme//x"],
    ] {
        let out = run_err(hub.cmd().args(&args));
        let msg = String::from_utf8_lossy(&out.stderr);
        assert_eq!(msg.trim().lines().count(), 1, "{args:?}: {msg}");
        assert!(msg.starts_with("error: "), "{args:?}: {msg}");
    }
    // A directory that does not exist.
    let out = run_err(hub.cmd().args(["push", "/nonexistent/dir", "acme/x"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dir"));
}

/// Findings 1 and 2, measured from `/proc`: made-up methods and JSON views
/// of a manifest that lists hundreds of thousands of chunks (rendered whole,
/// each view took many times the manifest's size) leave the hub's peak
/// memory within a small bound, and `/metrics` small.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_readers_cannot_grow_the_hubs_memory() {
    use crate::harness::{proc_memory_kib, reset_peak_memory};
    use aetherfs_format::pack::PackBuilder;
    const CHUNKS: usize = 400_000;
    const VIEWS: usize = 4;
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let http = reqwest::Client::new();

    // One stored chunk, listed 400,000 times by one file (a valid, if odd, file).
    let chunk = b"x";
    let mut b = PackBuilder::new();
    b.add(Digest::of(chunk), chunk, false);
    let pack = b.finish();
    let r = http
        .put(format!("{}/v1/datasets/acme/big/packs/{}", hub.url, pack.digest))
        .body(pack.bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let one = ChunkRef { digest: Digest::of(chunk), len: 1, location: pack.entries[0].location(pack.digest) };
    let mut m = Manifest::new(ChunkParams::default());
    m.entries = vec![Entry { path: "f".into(), mode: 0o644, kind: EntryKind::File(FileEntry::new(vec![one; CHUNKS])) }];
    let bytes = m.encode().unwrap();
    let digest = Digest::of(&bytes);
    let (status, body) = put_manifest(&hub, "acme/big", bytes.clone()).await;
    assert_eq!(status, 201, "{body}");

    let pid = hub.pid();
    reset_peak_memory(pid);
    let before = proc_memory_kib(pid, "VmRSS");

    // Finding 1: 300 requests with 50 KB made-up methods.
    let method = reqwest::Method::from_bytes("X".repeat(50_000).as_bytes()).unwrap();
    for _ in 0..300 {
        let r = http.request(method.clone(), format!("{}/v1/datasets", hub.url)).send().await.unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    let metrics = http.get(format!("{}/metrics", hub.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.len() < 256 << 10, "/metrics grew to {} bytes", metrics.len());

    // Finding 2: JSON views of the manifest, several at once, each read whole.
    let url = format!("{}/v1/datasets/acme/big/manifests/{digest}", hub.url);
    let views: Vec<_> = (0..VIEWS)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let mut r = http.get(url).header("accept", "application/json").send().await.unwrap();
                assert_eq!(r.status(), 200);
                let mut body = Vec::new();
                while let Some(piece) = r.chunk().await.unwrap() {
                    body.extend_from_slice(&piece);
                }
                body
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for v in views {
        bodies.push(v.await.unwrap());
    }
    let peak = proc_memory_kib(pid, "VmHWM");
    let first: Value = serde_json::from_slice(&bodies[0]).unwrap();
    assert_eq!(first["entries"][0]["chunks"].as_array().map(Vec::len), Some(CHUNKS));
    let rendered = bodies[0].len() as u64 / 1024;
    // Rendered whole, the views took 1.5 GB here (several times their
    // `rendered` JSON each); streamed, the two views decoded at once hold only
    // their decoded manifests (about 60 MiB each at this size).
    let grown = peak.saturating_sub(before);
    assert!(grown < 2 * rendered, "peak memory grew by {grown} KiB for {VIEWS} views of {rendered} KiB each");
    assert_eq!(crate::harness::http_status(&hub.url, "/healthz"), Some(200));
}

/// Slowloris: a request head that never completes, or an idle kept-alive
/// connection, is closed after the header timeout; an upload whose body
/// stops arriving is refused after the body timeout; past the connection
/// cap, more connections wait in the kernel's backlog and cost the hub no
/// file descriptor (counted in `/proc`). The hub keeps serving.
#[test]
fn half_sent_requests_and_idle_connections_are_closed() {
    use std::io::{Read, Write};
    let data = tempfile::tempdir().unwrap();
    let storage = format!("file://{}", data.path().display());
    const CAP: usize = 64;
    let hub = crate::harness::AuthHub::start(
        &storage,
        &["--header-timeout-secs", "1", "--body-timeout-secs", "1", "--max-connections", &CAP.to_string()],
    );
    let addr = hub.url.trim_start_matches("http://").to_string();
    let closed_by_hub = |mut s: std::net::TcpStream| {
        // Far longer than the timeout, only so a broken hub fails the test instead of hanging it.
        s.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    };
    let mut half = std::net::TcpStream::connect(&addr).unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n").unwrap();
    assert!(closed_by_hub(half), "a half-sent request stayed open");
    let idle = std::net::TcpStream::connect(&addr).unwrap();
    assert!(closed_by_hub(idle), "an idle connection stayed open");

    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    let digest = Digest::of(b"never sent");
    write!(
        stalled,
        "PUT /v1/datasets/acme/x/packs/{digest} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\nAFSP"
    )
    .unwrap();
    stalled.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let mut answer = String::new();
    let _ = stalled.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "a stalled upload got: {answer}");
    assert!(answer.contains("body_timeout"), "{answer}");

    let pid = hub.pid();
    let before = crate::harness::open_fds(pid);
    let flood: Vec<_> = (0..4 * CAP).map(|_| std::net::TcpStream::connect(&addr).unwrap()).collect();
    // The hub takes them a cap at a time and closes each after the header
    // timeout; the peak of its descriptors is sampled until it closed them all.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(crate::harness::open_fds(pid));
                std::thread::yield_now();
            }
            peak
        })
    };
    for s in flood {
        assert!(closed_by_hub(s), "a connection past the cap was never closed");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    assert!(peak <= before + CAP + 2, "{} connections took {} descriptors (cap {CAP})", 4 * CAP, peak - before);
    assert_eq!(crate::harness::http_status(&hub.url, "/healthz"), Some(200));
}

/// Finding 9: names that would fool a terminal. Control characters are not
/// part of any dataset (a push names the file and stops); a right-to-left
/// override is kept but printed quoted, so `inspect --files` never shows a
/// name that reads as another.
#[test]
fn paths_that_would_fool_a_terminal_are_refused_or_printed_quoted() {
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("evil\n\x1b[31mname"), b"x").unwrap();
    let out = run_err(hub.cmd().arg("push").arg(src.path()).arg("acme/names:v1"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("control character") && !err.contains('\x1b'), "{err}");

    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("invoice\u{202e}fdp.exe"), b"x").unwrap();
    crate::harness::run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/names:v2"));
    let listing = crate::harness::run_ok(hub.cmd().args(["inspect", "--files", "acme/names:v2"]));
    assert!(listing.contains("\"invoice\\u{202e}fdp.exe\""), "{listing}");
    assert!(!listing.contains('\u{202e}'), "the override reached the terminal: {listing:?}");
}

/// A push of more tiny files than a pack may hold chunks splits them over
/// several packs (the hub refuses bigger ones), and pulls back whole.
#[test]
fn a_push_of_many_tiny_files_stays_within_the_chunks_per_pack_bound() {
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let src = tempfile::tempdir().unwrap();
    let n = aetherfs_format::pack::PACK_MAX_CHUNKS + 500;
    for d in 0..(n / 1000 + 1) {
        std::fs::create_dir(src.path().join(format!("d{d:03}"))).unwrap();
    }
    for i in 0..n {
        std::fs::write(src.path().join(format!("d{:03}/{i:06}", i / 1000)), i.to_le_bytes()).unwrap();
    }
    let out = crate::harness::run_ok(hub.cmd().args(["push", "--json"]).arg(src.path()).arg("acme/tiny:v1"));
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["new_chunks"].as_u64(), Some(n as u64), "{report}");
    assert!(report["packs_uploaded"].as_u64().unwrap() >= 2, "{report}");
    let dst = tempfile::tempdir().unwrap();
    crate::harness::run_ok(hub.cmd().args(["pull", "-q", "acme/tiny:v1"]).arg(dst.path().join("out")));
    crate::harness::assert_same_tree(src.path(), &dst.path().join("out"));
}
