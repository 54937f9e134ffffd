//! The hub's HTTP API, in-process: each request goes through the real router
//! with `tower::ServiceExt::oneshot`, over `memory://`, a local directory, and
//! one scenario suite over every store (a directory, S3 on moto, Azure on
//! Azurite; GCS on fake-gcs-server for what it can do; see `stores`). Packs and manifests are built with the format crate, so they are the
//! bytes real clients send.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aetherfs_format::{
    ChunkLocation, ChunkParams, Compression, Digest, Entry, EntryKind, FileEntry, Manifest, file_digest,
};
use aetherfs_hub::{Hub, HubOptions};
use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode, header};
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::{Value, json};

use crate::harness::{TestHub, build_pack, empty_manifest, file_chunks, manifest, random_bytes};
use crate::stores::{self, Backend};

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Raw manifest bytes, unchecked: how a hostile client would write `../x`.
/// A file is its path, the 32-byte file digest version 2 stated after the
/// size (if any), and its chunks.
type RawFile<'a> = (&'a str, Option<Digest>, &'a [(Digest, u32)]);

fn raw(version: u16, files: &[RawFile]) -> Vec<u8> {
    let mut out = b"AFSM".to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.push(1);
    let p = ChunkParams::default();
    for v in [p.min, p.avg, p.max] {
        put_varint(&mut out, v.into());
    }
    put_varint(&mut out, 0); // annotations
    put_varint(&mut out, files.len() as u64);
    for (path, stated, chunks) in files {
        out.push(0);
        put_varint(&mut out, path.len() as u64);
        out.extend_from_slice(path.as_bytes());
        put_varint(&mut out, 0o644);
        put_varint(&mut out, chunks.iter().map(|c| u64::from(c.1)).sum());
        if let Some(d) = stated {
            out.extend_from_slice(d.as_bytes());
        }
        put_varint(&mut out, chunks.len() as u64);
        for (d, len) in *chunks {
            out.extend_from_slice(d.as_bytes());
            put_varint(&mut out, (*len).into());
        }
    }
    out
}

/// Empty files at `paths`.
fn raw_manifest(paths: &[&str]) -> Vec<u8> {
    let files: Vec<RawFile> = paths.iter().map(|p| (*p, None, &[][..])).collect();
    raw(3, &files)
}

async fn with_each_backend<F, Fut>(scenario: F)
where
    F: Fn(TestHub) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    scenario(TestHub::memory().await).await;
    let dir = tempfile::tempdir().expect("tempdir");
    scenario(TestHub::dir(dir.path()).await).await;
}

// ------------------------------------------------------------------ tests

async fn round_trip(h: TestHub) {
    let name = "acme/geoip";
    let a = file_chunks(1);
    let b = file_chunks(2);
    let pack = build_pack(&[a.clone(), b.clone()].concat());

    // An empty hub.
    assert_eq!(h.get("/v1/datasets").await.ok(), json!({ "datasets": [] }));
    h.get(&format!("/v1/datasets/{name}/tags")).await.err(StatusCode::NOT_FOUND, "dataset_not_found");
    h.get(&format!("/v1/datasets/{name}/tags/latest/history")).await.err(StatusCode::NOT_FOUND, "tag_not_found");

    // Upload, twice: the second is a no-op.
    let stored = h.put_pack(&pack).await;
    assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.text());
    let v = stored.value();
    assert_eq!(v["pack"], pack.digest.to_string());
    assert_eq!(v["chunks"], 6);
    assert_eq!(v["created"], true);
    assert_eq!(v["bytes"], pack.bytes.len());
    let again = h.put_pack(&pack).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.value()["created"], false);

    // The missing-chunks query knows where every chunk is.
    let unknown = Digest::of(b"never stored");
    let mut asked: Vec<Digest> = pack.entries.iter().map(|e| e.digest).collect();
    asked.push(unknown);
    let v = h.missing(&asked).await;
    assert_eq!(v["missing"], json!([unknown]));
    let present = v["present"].as_array().expect("present");
    assert_eq!(present.len(), pack.entries.len());
    for e in &pack.entries {
        let p = present.iter().find(|p| p["digest"] == e.digest.to_string()).expect("present chunk");
        assert_eq!(p["pack"], pack.digest.to_string());
        assert_eq!(p["offset"], e.offset);
        assert_eq!(p["stored_len"], e.stored_len);
        assert_eq!(p["len"], e.len);
        assert_eq!(p["compression"], serde_json::to_value(e.compression).expect("json"));
    }
    assert!(present.iter().any(|p| p["compression"] == "zstd"));

    // Publish a manifest, twice.
    let m1 = manifest(&[("data/a.bin", &a), ("b.bin", &b)], &pack, "one");
    let d1 = Digest::of(&m1);
    let r = h.put_manifest(name, &m1).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let v = r.value();
    assert_eq!(v["digest"], d1.to_string());
    assert_eq!(v["name"], name);
    assert_eq!(v["stats"]["files"], 2);
    assert_eq!(v["stats"]["chunks"], 6);
    assert_eq!(v["created"], true);
    let r = h.put_manifest(name, &m1).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.value()["created"], false);

    // Read it back: exact bytes, then JSON.
    let uri = format!("/v1/datasets/{name}/manifests/{d1}");
    let r = h.get(&uri).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], &m1[..]);
    assert_eq!(r.header(header::CONTENT_TYPE), "application/vnd.aetherfs.manifest.v1");
    assert_eq!(r.header(header::ETAG), format!("\"{d1}\""));
    let r = h.call(Method::GET, &uri, &[("accept", "application/json")], Body::empty()).await;
    let v = r.ok();
    assert_eq!(v["digest"], d1.to_string());
    assert_eq!(v["stats"]["files"], 2);
    assert_eq!(v["entries"][0]["path"], "b.bin");
    assert_eq!(v["entries"][1]["path"], "data/a.bin");
    assert_eq!(v["entries"][1]["type"], "file");
    let r = h.call(Method::HEAD, &uri, &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header(header::CONTENT_LENGTH), m1.len().to_string());
    assert!(r.body.is_empty());
    let r = h.call(Method::GET, &uri, &[("if-none-match", &format!("\"{d1}\""))], Body::empty()).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);

    // Tag it, resolve it, list it.
    let r = h.set_tag(name, "latest", &d1, Some("absent")).await;
    let rec = r.ok();
    assert_eq!(rec["digest"], d1.to_string());
    assert_eq!(rec["previous"], Value::Null);
    assert_eq!(rec["seq"], 1);
    assert_eq!(rec["by"], "anonymous");
    assert!(
        time::OffsetDateTime::parse(rec["at"].as_str().expect("at"), &time::format_description::well_known::Rfc3339)
            .is_ok()
    );
    let v = h.get(&format!("/v1/datasets/{name}/tags/latest")).await.ok();
    assert_eq!(v["digest"], d1.to_string());
    // Setting it to where it is appends nothing.
    let v = h.set_tag(name, "latest", &d1, None).await.ok();
    assert_eq!(v["seq"], 1);

    let m2 = manifest(&[("b.bin", &b)], &pack, "two");
    let d2 = Digest::of(&m2);
    assert_eq!(h.put_manifest(name, &m2).await.status, StatusCode::CREATED);
    h.set_tag(name, "v2", &d2, None).await.ok();
    let v = h.set_tag(name, "latest", &d2, Some(&d1.to_string())).await.ok();
    assert_eq!(v["previous"], d1.to_string());
    assert_eq!(v["seq"], 2);

    let v = h.get("/v1/datasets").await.ok();
    assert_eq!(v, json!({ "datasets": [{ "name": name, "tags": ["latest", "v2"] }] }));
    let v = h.get(&format!("/v1/datasets/{name}/tags")).await.ok();
    let tags = v["tags"].as_array().expect("tags");
    assert_eq!(tags.len(), 2);
    assert_eq!(tags[0]["tag"], "latest");
    assert_eq!(tags[0]["digest"], d2.to_string());
    assert_eq!(tags[1]["tag"], "v2");

    // Delete: a stale expectation conflicts; the right one appends a tombstone.
    let uri = format!("/v1/datasets/{name}/tags/latest");
    let r = h.call(Method::DELETE, &format!("{uri}?expected={d1}"), &[], Body::empty()).await;
    let msg = r.err(StatusCode::CONFLICT, "tag_conflict");
    assert!(msg.contains(&d2.to_string()), "{msg}");
    let v = h.call(Method::DELETE, &format!("{uri}?expected={d2}"), &[], Body::empty()).await.ok();
    assert_eq!(v["digest"], Value::Null);
    assert_eq!(v["previous"], d2.to_string());
    assert_eq!(v["seq"], 3);
    h.get(&uri).await.err(StatusCode::NOT_FOUND, "tag_not_found");
    h.call(Method::DELETE, &uri, &[], Body::empty()).await.err(StatusCode::NOT_FOUND, "tag_not_found");
    let v = h.get(&format!("{uri}/history")).await.ok();
    let digests: Vec<&Value> = v["records"].as_array().expect("records").iter().map(|r| &r["digest"]).collect();
    assert_eq!(digests, [&json!(d1), &json!(d2), &Value::Null]);
    let v = h.get("/v1/datasets").await.ok();
    assert_eq!(v["datasets"][0]["tags"], json!(["v2"]));
    // After a deletion, `absent` is the expectation that holds.
    h.set_tag(name, "latest", &d1, Some(&d2.to_string())).await.err(StatusCode::CONFLICT, "tag_conflict");
    let v = h.set_tag(name, "latest", &d1, Some("absent")).await.ok();
    assert_eq!(v["previous"], Value::Null);
    assert_eq!(v["seq"], 4);

    // A tag can only point at a manifest of its own dataset.
    h.set_tag("other/ds", "latest", &d1, None).await.err(StatusCode::NOT_FOUND, "manifest_not_found");

    let text = h.get("/metrics").await.text();
    for needle in [
        "aetherfs_hub_packs_stored_total 1",
        "aetherfs_hub_manifests_published_total 2",
        "aetherfs_hub_tag_moves_total 5",
        "aetherfs_hub_chunks_indexed 6",
        "aetherfs_hub_long_polls_waiting 0",
        "aetherfs_hub_http_requests_total{route=\"/v1/datasets/{name}/tags/{tag}\",method=\"PUT\",status=\"200\"}",
        "aetherfs_hub_http_requests_total{route=\"/v1/datasets/{name}/packs/{digest}\",method=\"PUT\",status=\"201\"} 1",
        "aetherfs_hub_http_request_duration_seconds_bucket",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    assert!(text.contains(&format!("aetherfs_hub_pack_received_bytes_total {}", pack.bytes.len())), "{text}");

    // Versions: both listed; a tagged one cannot be deleted.
    let listed = |v: Value| -> Vec<String> {
        let mut d: Vec<String> =
            v["versions"].as_array().expect("versions").iter().map(|v| v["digest"].to_string()).collect();
        d.sort();
        d
    };
    let mut both = vec![json!(d1).to_string(), json!(d2).to_string()];
    both.sort();
    assert_eq!(listed(h.get(&format!("/v1/datasets/{name}/manifests")).await.ok()), both);
    let version = format!("/v1/datasets/{name}/manifests/{d2}");
    let msg = h.call(Method::DELETE, &version, &[], Body::empty()).await.err(StatusCode::CONFLICT, "version_tagged");
    assert!(msg.contains("v2"), "{msg}");
    // Untagged, it goes; its tag's history still names it.
    h.call(Method::DELETE, &format!("/v1/datasets/{name}/tags/v2"), &[], Body::empty()).await.ok();
    let r = h.call(Method::DELETE, &version, &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    h.get(&version).await.err(StatusCode::NOT_FOUND, "manifest_not_found");
    h.call(Method::DELETE, &version, &[], Body::empty()).await.err(StatusCode::NOT_FOUND, "manifest_not_found");
    assert_eq!(listed(h.get(&format!("/v1/datasets/{name}/manifests")).await.ok()), vec![json!(d1).to_string()]);
    let history = h.get(&format!("/v1/datasets/{name}/tags/v2/history")).await.ok();
    assert_eq!(history["records"][0]["digest"], d2.to_string());
    h.set_tag(name, "v2", &d2, None).await.err(StatusCode::NOT_FOUND, "manifest_not_found");
    h.get("/v1/datasets/nobody/manifests").await.err(StatusCode::NOT_FOUND, "dataset_not_found");
    assert!(h.get("/metrics").await.text().contains("aetherfs_hub_versions_deleted_total 1"));
}

#[tokio::test]
async fn round_trip_over_each_backend() {
    with_each_backend(round_trip).await;
}

async fn corrupt_chunk_is_refused(h: TestHub) {
    let chunks = file_chunks(7);
    let pack = build_pack(&chunks);
    let raw = pack.entries.iter().find(|e| e.compression == aetherfs_format::Compression::None).expect("raw chunk");
    let mut bytes = pack.bytes.clone();
    bytes[raw.offset as usize + 10] ^= 0x40;
    // The URL digest matches the bytes sent: only the chunk check can catch it.
    let digest = Digest::of(&bytes);
    let r = h.call(Method::PUT, &format!("/v1/datasets/acme/geoip/packs/{digest}"), &[], bytes).await;
    let msg = r.err(StatusCode::BAD_REQUEST, "invalid_pack");
    assert!(msg.contains(&raw.digest.to_string()), "{msg}");
    assert!(h.keys().await.is_empty(), "something was stored: {:?}", h.keys().await);
    let v = h.missing(&[raw.digest]).await;
    assert_eq!(v["missing"], json!([raw.digest]));
    h.get(&format!("/v1/datasets/acme/geoip/packs/{digest}")).await.err(StatusCode::NOT_FOUND, "pack_not_found");

    // A truncated pack is refused the same way.
    let cut = &pack.bytes[..pack.bytes.len() - 3];
    let r = h.call(Method::PUT, &format!("/v1/datasets/acme/geoip/packs/{}", Digest::of(cut)), &[], cut.to_vec()).await;
    r.err(StatusCode::BAD_REQUEST, "invalid_pack");
    assert!(h.keys().await.is_empty());
}

#[tokio::test]
async fn corrupt_packs_are_refused_and_nothing_is_stored() {
    with_each_backend(corrupt_chunk_is_refused).await;
}

#[tokio::test]
async fn pack_digest_mismatch_and_size_limit() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let h = TestHub::over(store, HubOptions { max_pack_bytes: 4096, ..HubOptions::default() }).await;
    let small = build_pack(&[b"tiny chunk".to_vec()]);
    let other = Digest::of(b"other");
    let r = h.call(Method::PUT, &format!("/v1/datasets/acme/geoip/packs/{other}"), &[], small.bytes.clone()).await;
    r.err(StatusCode::BAD_REQUEST, "digest_mismatch");

    let big = build_pack(&[random_bytes(3, 6000)]);
    h.put_pack(&big).await.err(StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    // Without a Content-Length the limit holds while streaming.
    let stream = futures::stream::iter(
        big.bytes.chunks(1000).map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c))).collect::<Vec<_>>(),
    );
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("/v1/datasets/acme/geoip/packs/{}", big.digest))
        .body(Body::from_stream(stream))
        .expect("request");
    h.send(req).await.err(StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    // A lying Content-Length is refused up front.
    let r = h
        .call(
            Method::PUT,
            &format!("/v1/datasets/acme/geoip/packs/{}", small.digest),
            &[("content-length", "999999999")],
            Body::empty(),
        )
        .await;
    r.err(StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    assert!(h.keys().await.is_empty());
    assert_eq!(h.put_pack(&small).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn manifests_are_checked_before_anything_is_stored() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let h = TestHub::over(store, HubOptions { max_manifest_bytes: 1 << 20, ..HubOptions::default() }).await;
    let name = "acme/checks";
    let chunks = file_chunks(11);
    let pack = build_pack(&chunks);
    let good = manifest(&[("f", &chunks)], &pack, "good");

    // Chunks not stored (the pack was never uploaded).
    let r = h.put_manifest(name, &good).await;
    let msg = r.err(StatusCode::UNPROCESSABLE_ENTITY, "missing_chunks");
    assert!(msg.contains(&Digest::of(&chunks[0]).to_string()), "{msg}");
    assert!(h.keys().await.is_empty());

    // The pack is stored, but the manifest lies about a chunk's length: no
    // stored chunk is that, so it is missing.
    assert_eq!(h.put_pack(&pack).await.status, StatusCode::CREATED);
    let mut m = Manifest::decode_placed_by(&good, |d, len| {
        Some(ChunkLocation { pack: *d, offset: 0, stored_len: len, compression: Compression::None })
    })
    .expect("decode");
    if let EntryKind::File(f) = &mut m.entries[0].kind {
        let mut chunks = f.chunks().to_vec();
        chunks[1].len -= 1;
        chunks[1].location.stored_len -= 1;
        *f = FileEntry::new(chunks);
    }
    let lying = m.encode().expect("still well-formed");
    let msg = h.put_manifest(name, &lying).await.err(StatusCode::UNPROCESSABLE_ENTITY, "missing_chunks");
    assert!(msg.contains(&Digest::of(&chunks[1]).to_string()), "{msg}");
    let manifests: Vec<String> = h.keys().await.into_iter().filter(|k| k.contains("_manifests")).collect();
    assert!(manifests.is_empty(), "{manifests:?}");

    // Digest in the URL must be the body's.
    let uri = format!("/v1/datasets/{name}/manifests/{}", Digest::of(b"other"));
    h.call(Method::PUT, &uri, &[], good.clone()).await.err(StatusCode::BAD_REQUEST, "digest_mismatch");

    // Hostile paths and duplicates, and garbage.
    assert!(Manifest::decode_unplaced(&raw_manifest(&["a", "b"])).is_ok(), "the raw encoder is right");
    for (paths, why) in [
        (&["../x"][..], "'..' segment"),
        (&["/etc/passwd"][..], "absolute path"),
        (&["a", "a"][..], "duplicate path"),
        (&["a/./b"][..], "'.' segment"),
    ] {
        let msg = h.put_manifest(name, &raw_manifest(paths)).await.err(StatusCode::BAD_REQUEST, "invalid_manifest");
        assert!(msg.contains(why), "{paths:?}: {msg}");
    }
    let msg = h.put_manifest(name, &raw_manifest(&["../x"])).await.err(StatusCode::BAD_REQUEST, "invalid_manifest");
    assert!(msg.contains(r#"invalid path "../x": '..' segment"#), "{msg}");
    h.put_manifest(name, b"not a manifest").await.err(StatusCode::BAD_REQUEST, "invalid_manifest");

    // Too large.
    let huge = vec![0u8; (1 << 20) + 1];
    h.put_manifest(name, &huge).await.err(StatusCode::PAYLOAD_TOO_LARGE, "too_large");

    let manifests: Vec<String> = h.keys().await.into_iter().filter(|k| k.contains("_manifests")).collect();
    assert!(manifests.is_empty(), "{manifests:?}");
    assert_eq!(h.put_manifest(name, &good).await.status, StatusCode::CREATED);

    // A large valid manifest is not caught by the small-JSON body limit.
    let mut m = Manifest::new(ChunkParams::default());
    for i in 0..8000 {
        m.entries.push(Entry { path: format!("dir/{i:08}"), mode: 0o755, kind: EntryKind::Dir });
    }
    m.sort();
    let big = m.encode().expect("valid");
    assert!(big.len() > 100_000);
    let r = h.put_manifest(name, &big).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.value()["stats"]["dirs"], 8000);
}

/// Finding #8 of issue 11: a manifest used to state each file's digest, and
/// the hub stored whatever it said (pulls then failed on a "corrupt" file,
/// WebDAV served the false digest as an ETag). Version 3 states none: the
/// digest is derived from the chunk list, so there is nothing to lie with.
#[tokio::test]
async fn a_manifest_cannot_state_a_false_file_digest() {
    let h = TestHub::memory().await;
    let name = "acme/digests";
    let data = file_chunks(21);
    let pack = build_pack(&data);
    assert_eq!(h.put_pack(&pack).await.status, StatusCode::CREATED);
    let chunks: Vec<(Digest, u32)> = data.iter().map(|c| (Digest::of(c), c.len() as u32)).collect();
    let size: u64 = chunks.iter().map(|c| u64::from(c.1)).sum();
    let lie = Some(Digest::of(b"not this file"));
    let truth = file_digest(size, chunks.iter().copied());

    // The old layout, false digest and all: a client error, stored nowhere.
    let msg =
        h.put_manifest(name, &raw(2, &[("f", lie, &chunks)])).await.err(StatusCode::BAD_REQUEST, "invalid_manifest");
    assert!(msg.contains("unsupported manifest version 2"), "{msg}");
    // The field smuggled into version 3, false or true: it does not parse.
    for stated in [lie, Some(truth)] {
        let r = h.put_manifest(name, &raw(3, &[("f", stated, &chunks)])).await;
        r.err(StatusCode::BAD_REQUEST, "invalid_manifest");
    }
    let manifests: Vec<String> = h.keys().await.into_iter().filter(|k| k.contains("_manifests")).collect();
    assert!(manifests.is_empty(), "{manifests:?}");

    // Without it, published; what the hub shows is the derived digest.
    let good = raw(3, &[("f", None, &chunks)]);
    let r = h.put_manifest(name, &good).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let uri = format!("/v1/datasets/{name}/manifests/{}", Digest::of(&good));
    let v = h.call(Method::GET, &uri, &[("accept", "application/json")], Body::empty()).await.ok();
    assert_eq!(v["version"], 3);
    assert_eq!(v["entries"][0]["digest"], truth.to_string(), "{v}");
    assert_eq!(v["entries"][0]["size"], size);
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let h = TestHub::memory().await;
    let d = Digest::of(b"x");
    let bad = StatusCode::BAD_REQUEST;
    let cases: Vec<(Method, String, StatusCode, &str)> = vec![
        (Method::GET, "/v1/datasets/Acme/tags".into(), bad, "invalid_name"),
        (Method::GET, "/v1/datasets/a..b/tags/latest".into(), bad, "invalid_name"),
        (Method::GET, "/v1/datasets/acme//x/tags".into(), bad, "invalid_name"),
        (Method::GET, "/v1/datasets/acme/tags/-x".into(), bad, "invalid_tag"),
        (Method::GET, "/v1/datasets/acme/tags/a%20b".into(), bad, "invalid_tag"),
        (Method::GET, "/v1/datasets/acme/tags/x/history".into(), StatusCode::NOT_FOUND, "tag_not_found"),
        (Method::GET, "/v1/datasets/acme/manifests/sha256:00".into(), bad, "invalid_digest"),
        (Method::GET, format!("/v1/datasets/acme/manifests/{}", d.hex()), bad, "invalid_digest"),
        (Method::GET, "/v1/datasets/acme/geoip/packs/blake3:xyz".into(), bad, "invalid_digest"),
        (Method::PUT, "/v1/datasets/acme/geoip/packs/nope".into(), bad, "invalid_digest"),
        (Method::GET, "/v1/datasets/acme/tags/latest?since=nope&wait=1".into(), bad, "invalid_digest"),
        (Method::GET, format!("/v1/datasets/acme/tags/latest?since={d}&wait=soon"), bad, "invalid_query"),
        (Method::DELETE, "/v1/datasets/acme/tags/latest?expected=x".into(), bad, "invalid_digest"),
        (Method::GET, format!("/v1/datasets/acme/manifests/{d}"), StatusCode::NOT_FOUND, "manifest_not_found"),
        (Method::HEAD, format!("/v1/datasets/acme/geoip/packs/{d}"), StatusCode::NOT_FOUND, ""),
        (Method::GET, format!("/v1/datasets/acme/geoip/packs/{d}"), StatusCode::NOT_FOUND, "pack_not_found"),
        (Method::GET, "/v1/datasets/acme/tags/latest".into(), StatusCode::NOT_FOUND, "tag_not_found"),
        (Method::GET, "/v1/datasets/acme/tags".into(), StatusCode::NOT_FOUND, "dataset_not_found"),
        (Method::GET, "/v1/nothing".into(), StatusCode::NOT_FOUND, "not_found"),
        (Method::GET, "/v1/datasets/acme".into(), StatusCode::NOT_FOUND, "not_found"),
        (Method::GET, "/v1/datasets/acme/tags/x/y".into(), StatusCode::NOT_FOUND, "not_found"),
        (
            Method::DELETE,
            format!("/v1/datasets/acme/geoip/packs/{d}"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (Method::POST, "/v1/datasets/acme/tags/x".into(), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        (Method::PUT, "/v1/datasets/acme/tags".into(), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        (
            Method::GET,
            "/v1/datasets/acme/geoip/chunks/missing".into(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (method, uri, status, code) in cases {
        let r = h.call(method.clone(), &uri, &[], Body::empty()).await;
        assert_eq!(r.status, status, "{method} {uri}: {}", r.text());
        if method != Method::HEAD {
            assert_eq!(r.value()["error"]["code"], code, "{method} {uri}: {}", r.text());
            assert!(!r.value()["error"]["message"].as_str().unwrap_or_default().is_empty());
        }
    }

    // Malformed JSON bodies.
    let tag_uri = "/v1/datasets/acme/tags/latest";
    let ct = [("content-type", "application/json")];
    h.call(Method::PUT, tag_uri, &ct, "{").await.err(StatusCode::BAD_REQUEST, "invalid_json");
    h.call(Method::PUT, tag_uri, &ct, r#"{"digest":"nope"}"#).await.err(StatusCode::BAD_REQUEST, "invalid_json");
    let body = format!(r#"{{"digest":"{d}","surprise":1}}"#);
    h.call(Method::PUT, tag_uri, &ct, body).await.err(StatusCode::BAD_REQUEST, "invalid_json");
    h.call(Method::PUT, tag_uri, &[], format!(r#"{{"digest":"{d}"}}"#))
        .await
        .err(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    h.call(Method::POST, "/v1/datasets/acme/geoip/chunks/missing", &ct, r#"{"digests":["blake3:00"]}"#)
        .await
        .err(StatusCode::BAD_REQUEST, "invalid_json");
    h.call(Method::POST, "/v1/datasets/acme/geoip/chunks/missing", &ct, "[]")
        .await
        .err(StatusCode::BAD_REQUEST, "invalid_json");

    // Too many digests in one query.
    let many: Vec<Digest> = (0..aetherfs_format::api::MISSING_QUERY_MAX as u32 + 1)
        .map(|i| {
            Digest::from_bytes({
                let mut b = [0u8; 32];
                b[..4].copy_from_slice(&i.to_le_bytes());
                b
            })
        })
        .collect();
    let r = h.json(Method::POST, "/v1/datasets/acme/geoip/chunks/missing", &json!({ "digests": many })).await;
    r.err(StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    let r = h.json(Method::POST, "/v1/datasets/acme/geoip/chunks/missing", &json!({ "digests": many[..50_000] })).await;
    assert_eq!(r.ok()["missing"].as_array().map(Vec::len), Some(50_000));

    // Nothing above was stored.
    assert!(h.keys().await.is_empty(), "{:?}", h.keys().await);
    assert_eq!(h.get("/healthz").await.status, StatusCode::OK);
    let doc = h.get("/openapi.json").await.ok();
    assert_eq!(doc["openapi"], "3.1.0");
}

#[tokio::test]
async fn pack_ranges() {
    let h = TestHub::memory().await;
    let pack = build_pack(&file_chunks(5));
    assert_eq!(h.put_pack(&pack).await.status, StatusCode::CREATED);
    let uri = format!("/v1/datasets/acme/geoip/packs/{}", pack.digest);
    let len = pack.bytes.len();
    let range = |r: &str| {
        let uri = uri.clone();
        let r = r.to_string();
        let h = &h;
        async move { h.call(Method::GET, &uri, &[("range", &r)], Body::empty()).await }
    };

    let whole = h.get(&uri).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(&whole.body[..], &pack.bytes[..]);
    assert_eq!(whole.header(header::ACCEPT_RANGES), "bytes");
    assert_eq!(whole.header(header::CONTENT_LENGTH), len.to_string());

    let e = &pack.entries[1];
    let (a, b) = (e.offset as usize, (e.offset + u64::from(e.stored_len)) as usize - 1);
    let r = range(&format!("bytes={a}-{b}")).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.body[..], &pack.bytes[a..=b]);
    assert_eq!(r.header(header::CONTENT_RANGE), format!("bytes {a}-{b}/{len}"));
    assert_eq!(r.header(header::CONTENT_LENGTH), (b - a + 1).to_string());

    let r = range("bytes=-16").await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.body[..], &pack.bytes[len - 16..]);
    assert_eq!(r.header(header::CONTENT_RANGE), format!("bytes {}-{}/{len}", len - 16, len - 1));

    let r = range(&format!("bytes={}-", len - 5)).await;
    assert_eq!(&r.body[..], &pack.bytes[len - 5..]);
    let r = range(&format!("bytes=10-{}", len * 2)).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.body[..], &pack.bytes[10..]);

    let r = range(&format!("bytes={len}-")).await;
    r.err(StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable");
    assert_eq!(r.header(header::CONTENT_RANGE), format!("bytes */{len}"));
    range("bytes=0-1,5-6").await.err(StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable");
    range("bytes=9-3").await.err(StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable");
    range("bytes=-0").await.err(StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable");

    let r = h.call(Method::HEAD, &uri, &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header(header::CONTENT_LENGTH), len.to_string());
    assert!(r.body.is_empty());
    let r = h.call(Method::HEAD, &uri, &[("range", "bytes=0-9")], Body::empty()).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.header(header::CONTENT_LENGTH), "10");

    let text = h.get("/metrics").await.text();
    let served = len + (b - a + 1) + 16 + 5 + (len - 10);
    assert!(text.contains(&format!("aetherfs_hub_pack_served_bytes_total {served}")), "{text}");
}

/// 32 writers race to move one tag, each through its own manifests, with
/// read-then-compare-and-swap loops. No move may be lost.
async fn cas_race(h: TestHub) {
    const WRITERS: usize = 32;
    const MOVES: usize = 3;
    let name = "acme/race";
    let h = Arc::new(h);
    let initial = empty_manifest("initial");
    let d0 = Digest::of(&initial);
    assert_eq!(h.put_manifest(name, &initial).await.status, StatusCode::CREATED);
    h.set_tag(name, "latest", &d0, Some("absent")).await.ok();
    let mut targets = Vec::new();
    for w in 0..WRITERS {
        let mut mine = Vec::new();
        for m in 0..MOVES {
            let bytes = empty_manifest(&format!("writer {w} move {m}"));
            assert_eq!(h.put_manifest(name, &bytes).await.status, StatusCode::CREATED);
            mine.push(Digest::of(&bytes));
        }
        targets.push(mine);
    }

    let tasks: Vec<_> = targets
        .into_iter()
        .map(|mine| {
            let h = h.clone();
            tokio::spawn(async move {
                let (mut moved, mut conflicts) = (Vec::new(), 0);
                for target in mine {
                    loop {
                        let cur = h.get(&format!("/v1/datasets/{name}/tags/latest")).await.ok();
                        let cur = cur["digest"].as_str().expect("digest").to_string();
                        let r = h.set_tag(name, "latest", &target, Some(&cur)).await;
                        match r.status {
                            StatusCode::OK => {
                                assert_eq!(r.value()["previous"], cur);
                                moved.push(target);
                                break;
                            }
                            StatusCode::CONFLICT => {
                                r.err(StatusCode::CONFLICT, "tag_conflict");
                                conflicts += 1;
                            }
                            s => panic!("unexpected {s}: {}", r.text()),
                        }
                    }
                }
                (moved, conflicts)
            })
        })
        .collect();
    let mut moved = Vec::new();
    let mut conflicts = 0;
    for t in tasks {
        let (m, c) = t.await.expect("task");
        moved.extend(m);
        conflicts += c;
    }
    assert_eq!(moved.len(), WRITERS * MOVES);

    let v = h.get(&format!("/v1/datasets/{name}/tags/latest/history")).await.ok();
    let records = v["records"].as_array().expect("records");
    assert_eq!(records.len(), moved.len() + 1, "a move was lost");
    assert_eq!(records[0]["digest"], d0.to_string());
    for (i, pair) in records.windows(2).enumerate() {
        assert_eq!(pair[1]["previous"], pair[0]["digest"], "record {} does not follow {}", i + 2, i + 1);
    }
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["seq"], i + 1);
    }
    let in_history: HashSet<String> =
        records[1..].iter().map(|r| r["digest"].as_str().expect("d").to_string()).collect();
    let expected: HashSet<String> = moved.iter().map(|d| d.to_string()).collect();
    assert_eq!(in_history, expected);
    eprintln!("cas race: {} moves, {conflicts} conflicts retried", moved.len());

    // A stale expectation is refused and names the current digest.
    let last = records.last().expect("last")["digest"].as_str().expect("d").to_string();
    let msg = h.set_tag(name, "latest", &d0, Some(&d0.to_string())).await.err(StatusCode::CONFLICT, "tag_conflict");
    assert!(msg.contains(&last), "{msg}");
    h.set_tag(name, "latest", &d0, Some("absent")).await.err(StatusCode::CONFLICT, "tag_conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_compare_and_swap_loses_no_update() {
    with_each_backend(cas_race).await;
}

#[tokio::test]
async fn restart_rebuilds_everything_from_the_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = "acme/restart";
    let chunks = file_chunks(21);
    let pack = build_pack(&chunks);
    let m = manifest(&[("f.bin", &chunks)], &pack, "restart");
    let d = Digest::of(&m);
    {
        let h = TestHub::dir(dir.path()).await;
        assert_eq!(h.put_pack(&pack).await.status, StatusCode::CREATED);
        assert_eq!(h.put_manifest(name, &m).await.status, StatusCode::CREATED);
        h.set_tag(name, "latest", &d, None).await.ok();
        let uri = format!("/v1/datasets/{name}/tags/latest");
        h.call(Method::DELETE, &uri, &[], Body::empty()).await.ok();
        h.set_tag(name, "latest", &d, Some("absent")).await.ok();
    }
    let h = TestHub::dir(dir.path()).await;
    let digests: Vec<Digest> = pack.entries.iter().map(|e| e.digest).collect();
    let v = h.missing(&digests).await;
    assert_eq!(v["missing"], json!([]), "chunk index not rebuilt");
    assert_eq!(v["present"].as_array().map(Vec::len), Some(digests.len()));
    let v = h.get(&format!("/v1/datasets/{name}/tags/latest")).await.ok();
    assert_eq!(v["digest"], d.to_string());
    assert_eq!(v["seq"], 3);
    let r = h.get(&format!("/v1/datasets/{name}/manifests/{d}")).await;
    assert_eq!(&r.body[..], &m[..]);
    let v = h.get(&format!("/v1/datasets/{name}/tags/latest/history")).await.ok();
    assert_eq!(v["records"].as_array().map(Vec::len), Some(3));
    let v = h.get("/v1/datasets").await.ok();
    assert_eq!(v, json!({ "datasets": [{ "name": name, "tags": ["latest"] }] }));
    // The pack reads back, and re-uploading it is a no-op.
    assert_eq!(&h.get(&format!("/v1/datasets/acme/geoip/packs/{}", pack.digest)).await.body[..], &pack.bytes[..]);
    assert_eq!(h.put_pack(&pack).await.value()["created"], false);
    // The next move continues the history.
    let m2 = empty_manifest("after restart");
    assert_eq!(h.put_manifest(name, &m2).await.status, StatusCode::CREATED);
    let v = h.set_tag(name, "latest", &Digest::of(&m2), Some(&d.to_string())).await.ok();
    assert_eq!(v["seq"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_answers_on_move_or_at_timeout() {
    let h = Arc::new(TestHub::memory().await);
    let name = "acme/poll";
    let (m1, m2) = (empty_manifest("one"), empty_manifest("two"));
    let (d1, d2) = (Digest::of(&m1), Digest::of(&m2));
    h.put_manifest(name, &m1).await.ok();
    h.put_manifest(name, &m2).await.ok();
    h.set_tag(name, "latest", &d1, None).await.ok();
    let uri = format!("/v1/datasets/{name}/tags/latest");

    // Timeout: answers after about `wait` with the unchanged record.
    let start = Instant::now();
    let v = h.get(&format!("{uri}?since={d1}&wait=1")).await.ok();
    let took = start.elapsed();
    assert_eq!(v["digest"], d1.to_string());
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "{took:?}");

    // Without `since`, at once.
    let start = Instant::now();
    h.get(&format!("{uri}?wait=30")).await.ok();
    assert!(start.elapsed() < Duration::from_secs(1));
    // `since` already stale: at once.
    let start = Instant::now();
    let v = h.get(&format!("{uri}?since={d2}&wait=30")).await.ok();
    assert_eq!(v["digest"], d1.to_string());
    assert!(start.elapsed() < Duration::from_secs(1));

    // A move answers the waiter promptly.
    let waiter = {
        let h = h.clone();
        let uri = format!("{uri}?since={d1}&wait=20");
        tokio::spawn(async move {
            let start = Instant::now();
            let v = h.get(&uri).await.ok();
            (v, start.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = h.get("/metrics").await.text();
    assert!(metrics.contains("aetherfs_hub_long_polls_waiting 1"), "{metrics}");
    h.set_tag(name, "latest", &d2, Some(&d1.to_string())).await.ok();
    let (v, took) = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("waiter answered").expect("task");
    assert_eq!(v["digest"], d2.to_string());
    assert!(took < Duration::from_secs(3), "{took:?}");
    let metrics = h.get("/metrics").await.text();
    assert!(metrics.contains("aetherfs_hub_long_polls_waiting 0"), "{metrics}");
}

/// Two replicas over one store: each sees what the other stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_store() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let a = Arc::new(TestHub::over(store.clone(), HubOptions::default()).await);
    let b = TestHub::over(store, HubOptions::default()).await;
    let name = "acme/shared";
    let chunks = file_chunks(31);
    let pack = build_pack(&chunks);
    assert_eq!(a.put_pack(&pack).await.status, StatusCode::CREATED);
    // B loaded its index before the upload: a miss makes it rescan.
    let v = b.missing(&[pack.entries[0].digest]).await;
    assert_eq!(v["missing"], json!([]));
    let m1 = manifest(&[("f", &chunks)], &pack, "shared");
    let d1 = Digest::of(&m1);
    assert_eq!(b.put_manifest(name, &m1).await.status, StatusCode::CREATED);
    a.set_tag(name, "latest", &d1, Some("absent")).await.ok();
    assert_eq!(b.get(&format!("/v1/datasets/{name}/tags/latest")).await.ok()["digest"], d1.to_string());

    // B long-polls; A moves the tag; B notices within its storage re-check.
    let m2 = empty_manifest("moved by a");
    let d2 = Digest::of(&m2);
    a.put_manifest(name, &m2).await.ok();
    let mover = {
        let a = a.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            a.set_tag(name, "latest", &d2, None).await.ok();
        })
    };
    let start = Instant::now();
    let v = b.get(&format!("/v1/datasets/{name}/tags/latest?since={d1}&wait=20")).await.ok();
    assert_eq!(v["digest"], d2.to_string());
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    mover.await.expect("mover");
    // B's view of the history continues A's.
    let m3 = empty_manifest("moved by b");
    b.put_manifest(name, &m3).await.ok();
    let v = b.set_tag(name, "latest", &Digest::of(&m3), Some(&d2.to_string())).await.ok();
    assert_eq!(v["seq"], 3);
}

#[tokio::test]
async fn readiness_and_storage_description() {
    let hub = Hub::open(HubOptions::default()).await.expect("memory hub");
    assert_eq!(hub.storage_description(), "memory://");
    for bad in ["ftp://x", "s3://", "nonsense"] {
        let Err(e) = Hub::open(HubOptions { storage: bad.into(), ..HubOptions::default() }).await else {
            panic!("{bad} accepted");
        };
        assert!(!e.to_string().is_empty());
    }
    let t = TestHub::memory().await;
    assert_eq!(t.get("/readyz").await.ok()["status"], "ready");
    drop(t.hub);
}

// ------------------------------------------------- every store, one suite

/// The scenarios every store runs, each under its own prefix: push and read
/// back, refusals, tags with compare-and-swap, long-polls, garbage
/// collection, presigned redirects (where the store signs URLs), and the
/// requests each operation costs.
async fn suite(b: &Backend) {
    eprintln!("scenario suite over {}", b.name);
    round_trip(b.hub("round-trip", HubOptions::default()).await).await;
    corrupt_chunk_is_refused(b.hub("corrupt", HubOptions::default()).await).await;
    cas_race(b.hub("race", HubOptions::default()).await).await;
    long_poll_without_a_move_lists_nothing(b.hub("poll", HubOptions::default()).await).await;
    let lifecycle =
        aetherfs_hub::Lifecycle::from_toml("[[retention]]\ndatasets = \"**\"\nkeep_last = 2\n").expect("lifecycle");
    crate::gc::retention_scenario(&b.hub("gc", HubOptions { lifecycle, ..HubOptions::default() }).await).await;
    request_economy(b.hub("economy", HubOptions::default()).await).await;
    redirects(b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scenario_suite_over_a_directory() {
    suite(&stores::file()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scenario_suite_over_s3() {
    let Some(b) = stores::s3().await else { return };
    suite(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scenario_suite_over_azure() {
    let Some(b) = stores::azure().await else { return };
    suite(&b).await;
}

/// fake-gcs-server implements GCS's JSON API and signed-URL reads, but not
/// the XML API object_store writes with (`PUT /BUCKET/KEY` answers 400
/// "invalid uploadType") nor generation preconditions (create-if-absent
/// overwrites), so the hub cannot write to it. What a hub over GCS reads,
/// it reads here: a store written by a hub elsewhere, copied object by
/// object through the emulator's upload API, is served (chunk index, tags,
/// manifests, pack ranges) and its pack reads redirect to signed URLs the
/// emulator answers with the right bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gcs_serves_a_store_and_redirects_its_reads() {
    let Some((b, endpoint)) = stores::gcs().await else { return };
    let name = "acme/geoip";
    let source = TestHub::memory().await;
    let chunks = file_chunks(61);
    let pack = build_pack(&chunks);
    assert_eq!(source.put_pack(&pack).await.status, StatusCode::CREATED);
    let m = manifest(&[("f.bin", &chunks)], &pack, "gcs");
    let d = Digest::of(&m);
    assert_eq!(source.put_manifest(name, &m).await.status, StatusCode::CREATED);
    source.set_tag(name, "latest", &d, Some("absent")).await.ok();
    for key in source.keys().await {
        let body = source.store.get(&object_store::path::Path::from(key.as_str())).await.expect("get");
        let body = body.bytes().await.expect("bytes");
        stores::gcs_seed(&endpoint, &format!("seeded/{key}"), body).await;
    }

    let opts = HubOptions { redirect_reads: Some(Duration::from_secs(60)), ..HubOptions::default() };
    for h in [b.hub("seeded", HubOptions::default()).await, b.hub("seeded", opts).await] {
        let digests: Vec<Digest> = pack.entries.iter().map(|e| e.digest).collect();
        assert_eq!(h.missing(&digests).await["missing"], json!([]), "the chunk index did not load");
        assert_eq!(h.get(&format!("/v1/datasets/{name}/tags/latest")).await.ok()["digest"], d.to_string());
        assert_eq!(&h.get(&format!("/v1/datasets/{name}/manifests/{d}")).await.body[..], &m[..]);
        let got = read_pack_range(&h, &pack.digest, 8, 100).await;
        assert_eq!(got, pack.bytes[8..108]);
    }
}

/// GETs a pack range through the hub, following a redirect to the store
/// the way clients do (same Range, no credentials).
async fn read_pack_range(h: &TestHub, pack: &Digest, offset: usize, len: usize) -> Vec<u8> {
    let uri = format!("/v1/datasets/acme/geoip/packs/{pack}");
    let range = format!("bytes={offset}-{}", offset + len - 1);
    let r = h.call(Method::GET, &uri, &[("range", &range)], Body::empty()).await;
    if r.status == StatusCode::PARTIAL_CONTENT {
        return r.body.to_vec();
    }
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT, "{}", r.text());
    let location = r.header(header::LOCATION).to_string();
    assert!(location.starts_with("http://") || location.starts_with("https://"), "{location}");
    let got = reqwest::Client::new().get(&location).header("range", range).send().await.expect("store answers");
    assert_eq!(got.status().as_u16(), 206, "{location}: {}", got.text().await.unwrap_or_default());
    got.bytes().await.expect("body").to_vec()
}

/// With `redirect_reads`, a pack read the access check allows answers 307
/// to a presigned URL the store serves (with the reader's Range); the hub
/// serves no pack bytes. Stores that cannot sign refuse the option at start.
async fn redirects(b: &Backend) {
    let opts = HubOptions { redirect_reads: Some(Duration::from_secs(60)), ..HubOptions::default() };
    if !b.signs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = format!("file://{}", dir.path().display());
        let Err(e) = Hub::open(HubOptions { storage, ..opts.clone() }).await else {
            panic!("--redirect-reads accepted over a directory");
        };
        assert!(e.to_string().contains("--redirect-reads"), "{e}");
        let Err(e) = Hub::open(HubOptions { storage: "memory://".into(), ..opts }).await else {
            panic!("--redirect-reads accepted over memory");
        };
        assert!(e.to_string().contains("memory://"), "{e}");
        return;
    }
    let h = b.hub("redirects", opts).await;
    let pack = build_pack(&file_chunks(71));
    assert_eq!(h.put_pack(&pack).await.status, StatusCode::CREATED);
    let uri = format!("/v1/datasets/acme/geoip/packs/{}", pack.digest);
    let r = h.call(Method::GET, &uri, &[("range", "bytes=8-107")], Body::empty()).await;
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT, "{}", r.text());
    assert_eq!(r.header(header::CACHE_CONTROL), "no-store");
    assert_eq!(read_pack_range(&h, &pack.digest, 8, 100).await, pack.bytes[8..108]);
    // HEAD is answered by the hub; a pack the dataset may not read is not there, never redirected.
    let head = h.call(Method::HEAD, &uri, &[], Body::empty()).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header(header::CONTENT_LENGTH), pack.bytes.len().to_string());
    let other = format!("/v1/datasets/other/ds/packs/{}", pack.digest);
    h.get(&other).await.err(StatusCode::NOT_FOUND, "pack_not_found");
    assert_eq!(h.metric("aetherfs_hub_pack_served_bytes_total").await, 0.0, "the hub served pack bytes");
    assert_eq!(h.metric("aetherfs_hub_pack_reads_redirected_total").await, 2.0);
    // Without the option, the same store's reads stream through the hub.
    let (store, _) = b.under("redirects");
    let plain = TestHub::over(store, HubOptions::default()).await;
    let r = plain.call(Method::GET, &uri, &[("range", "bytes=8-107")], Body::empty()).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.body[..], &pack.bytes[8..108]);
}

/// A long-poll that ends at its timeout, with the tag unmoved, reads the
/// tag by HEAD probes and lists nothing; a move wakes a waiter.
async fn long_poll_without_a_move_lists_nothing(h: TestHub) {
    let name = "acme/poll";
    let (m1, m2) = (empty_manifest("one"), empty_manifest("two"));
    let (d1, d2) = (Digest::of(&m1), Digest::of(&m2));
    h.put_manifest(name, &m1).await.ok();
    h.put_manifest(name, &m2).await.ok();
    h.set_tag(name, "latest", &d1, Some("absent")).await.ok();
    let uri = format!("/v1/datasets/{name}/tags/latest");
    let lists = h.store_requests("list").await;
    let v = h.get(&format!("{uri}?since={d1}&wait=1")).await.ok();
    assert_eq!(v["digest"], d1.to_string());
    assert_eq!(h.store_requests("list").await, lists, "a long-poll that ended without a move listed");

    let h = Arc::new(h);
    let waiter = {
        let h = h.clone();
        let uri = format!("{uri}?since={d1}&wait=60");
        tokio::spawn(async move { h.get(&uri).await.ok() })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.metric("aetherfs_hub_long_polls_waiting").await < 1.0 {
        assert!(Instant::now() < deadline, "the long-poll never started waiting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.set_tag(name, "latest", &d2, Some(&d1.to_string())).await.ok();
    let v = waiter.await.expect("waiter");
    assert_eq!(v["digest"], d2.to_string());
}

/// What each operation costs in object-store requests, from the metered
/// store (upper bounds: the operator pays for each request).
async fn request_economy(h: TestHub) {
    let name = "acme/geoip";
    let chunks = file_chunks(81);
    let pack = build_pack(&chunks);
    let before = (h.store_requests("put").await, h.store_requests("put_conditional").await);
    assert_eq!(h.put_pack(&pack).await.status, StatusCode::CREATED);
    let pack_puts = h.store_requests("put").await - before.0;
    assert_eq!(pack_puts, 2, "a new pack takes 2 PUTs (the pack, its record)");
    assert_eq!(h.store_requests("put_conditional").await, before.1);
    // Uploading it again stores nothing.
    let again = h.store_requests("put").await;
    assert_eq!(h.put_pack(&pack).await.status, StatusCode::OK);
    assert_eq!(h.store_requests("put").await, again, "a known pack was written again");

    let m = manifest(&[("f.bin", &chunks)], &pack, "economy");
    let d = Digest::of(&m);
    let before = (h.store_requests("put").await, h.store_requests("delete").await);
    assert_eq!(h.put_manifest(name, &m).await.status, StatusCode::CREATED);
    let publish_puts = h.store_requests("put").await - before.0;
    assert_eq!(publish_puts, 2, "a publish takes 2 PUTs (placement, manifest)");
    assert_eq!(h.store_requests("delete").await, before.1, "a publish deletes nothing");

    let before = (h.store_requests("put").await, h.store_requests("put_conditional").await);
    h.set_tag(name, "latest", &d, Some("absent")).await.ok();
    assert_eq!(h.store_requests("put_conditional").await - before.1, 1, "a tag move is one create-if-absent");
    assert!(h.store_requests("put").await - before.0 <= 1, "a tag move writes at most its hint");

    // A range read of a known pack is one ranged GET, and no listing.
    let (gets, lists) = (h.store_requests("get_range").await, h.store_requests("list").await);
    let uri = format!("/v1/datasets/{name}/packs/{}", pack.digest);
    let r = h.call(Method::GET, &uri, &[("range", "bytes=8-107")], Body::empty()).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(h.store_requests("get_range").await - gets, 1);
    assert_eq!(h.store_requests("list").await, lists);
    let bytes = h.metric("aetherfs_hub_store_bytes_total{op=\"get_range\"}").await;
    assert!(bytes >= 100.0, "{bytes}");
}

/// A reader going through a pack in small ranges costs the store one GET
/// for its first range and one for the block; the rest is served from
/// memory, for it and for a second reader. With the cache off, every range
/// is a GET.
#[tokio::test]
async fn small_sequential_reads_cost_one_get_per_block() {
    let chunks: Vec<Vec<u8>> = (0..24).map(|i| random_bytes(900 + i, 48 << 10)).collect();
    let pack = build_pack(&chunks);
    let ranges: Vec<(usize, usize)> =
        (0..pack.bytes.len()).step_by(64 << 10).map(|s| (s, (s + (64 << 10)).min(pack.bytes.len()))).collect();
    assert!(ranges.len() > 10);
    for (cache, gets_wanted) in [(true, 2), (false, 2 * ranges.len() as u64)] {
        let opts = HubOptions { read_cache_bytes: if cache { 64 << 20 } else { 0 }, ..HubOptions::default() };
        let h = TestHub::over(Arc::new(InMemory::new()), opts).await;
        assert_eq!(h.put_pack(&pack).await.status, StatusCode::CREATED);
        let before = h.store_requests("get_range").await + h.store_requests("get").await;
        let uri = format!("/v1/datasets/acme/geoip/packs/{}", pack.digest);
        for _reader in 0..2 {
            for &(s, e) in &ranges {
                let range = format!("bytes={s}-{}", e - 1);
                let r = h.call(Method::GET, &uri, &[("range", range.as_str())], Body::empty()).await;
                assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
                assert_eq!(&r.body[..], &pack.bytes[s..e], "bytes {s}..{e}");
            }
        }
        let gets = h.store_requests("get_range").await + h.store_requests("get").await - before;
        assert_eq!(gets, gets_wanted, "store GETs with the block cache {}", if cache { "on" } else { "off" });
    }
}

/// The same router behind a real socket: framing of streamed bodies, HEAD and
/// ranges as hyper sends them.
#[tokio::test]
async fn served_over_a_real_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = TestHub::memory().await;
    let pack = build_pack(&file_chunks(41));
    assert_eq!(h.put_pack(&pack).await.status, StatusCode::CREATED);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(axum::serve(listener, h.router.clone()).into_future());

    let raw = |req: String| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read");
        let split = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
        (String::from_utf8_lossy(&buf[..split]).to_lowercase(), buf[split..].to_vec())
    };
    let path = format!("/v1/datasets/acme/geoip/packs/{}", pack.digest);
    let len = pack.bytes.len();

    let (head, body) = raw(format!("HEAD {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains(&format!("content-length: {len}\r\n")), "{head}");
    assert!(body.is_empty());

    let (head, body) = raw(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")).await;
    assert!(head.contains(&format!("content-length: {len}\r\n")), "{head}");
    assert_eq!(body, pack.bytes);

    let (head, body) =
        raw(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nRange: bytes=8-107\r\nConnection: close\r\n\r\n")).await;
    assert!(head.starts_with("http/1.1 206"), "{head}");
    assert!(head.contains(&format!("content-range: bytes 8-107/{len}\r\n")), "{head}");
    assert_eq!(body, pack.bytes[8..108]);

    let (head, body) = raw("GET /nope HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_string()).await;
    assert!(head.starts_with("http/1.1 404"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["error"]["code"], "not_found");
    server.abort();
}

/// Made-up methods and paths cannot grow the metrics: every label value comes
/// from a fixed set.
#[tokio::test]
async fn metric_labels_stay_bounded_under_made_up_methods_and_paths() {
    let h = TestHub::memory().await;
    let before = h.get("/metrics").await.text().len();
    for i in 0..200 {
        let method = Method::from_bytes(format!("X{}{i}", "Y".repeat(5_000)).as_bytes()).unwrap();
        h.call(method, &format!("/nowhere/{i}/{}", "z".repeat(2_000)), &[], Body::empty()).await;
        let method = Method::from_bytes(format!("Q{i}").as_bytes()).unwrap();
        h.call(method, "/v1/datasets", &[], Body::empty()).await;
    }
    let text = h.get("/metrics").await.text();
    assert!(text.contains("method=\"other\""), "{text}");
    assert!(!text.contains("YYYY") && !text.contains("zzzz") && !text.contains("Q1"), "a label as sent");
    // A handful of new series (route × method × status), not hundreds.
    assert!(text.len() < before + 8_000, "metrics grew from {before} to {} bytes", text.len());
}
