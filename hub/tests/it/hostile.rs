//! Hostile clients at a small, bounded scale: what one of them can make the
//! hub ask of its store is bounded, whatever it sends.

use std::time::Duration;

use aetherfs_format::{
    ChunkLocation, ChunkParams, ChunkRef, Compression, Digest, Entry, EntryKind, FileEntry, Manifest,
};
use aetherfs_hub::HubOptions;
use axum::body::Body;
use axum::http::StatusCode;
use serde_json::json;

use crate::harness::{build_pack, counted_hub, file_chunks, gauge, manifest};

/// Finding 7: many waiters on one tag share one watcher, so the store sees
/// one read per recheck interval however many wait; a move wakes them all.
#[tokio::test(flavor = "multi_thread")]
async fn long_polls_on_one_tag_share_one_watcher() {
    let (h, requests) = counted_hub(HubOptions::default()).await;
    const WAITERS: usize = 200;
    let uri = "/v1/datasets/acme/geoip/tags/next?since=absent&wait=6";
    let polls: Vec<_> = (0..WAITERS)
        .map(|_| {
            let router = h.router.clone();
            tokio::spawn(async move {
                let req = axum::http::Request::builder().uri(uri).body(Body::empty()).expect("request");
                crate::harness::send(&router, req).await
            })
        })
        .collect();
    // Every waiter is waiting (the hub's own gauge says so).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gauge(&h.get("/metrics").await.text(), "aetherfs_hub_long_polls_waiting") < WAITERS as f64 {
        assert!(tokio::time::Instant::now() < deadline, "the waiters never all waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = requests.snapshot();
    // Two recheck intervals with everyone waiting.
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let during = requests.since(before);
    assert!(during <= 12, "{WAITERS} waiters made {during} store requests in 4 s");

    // A move through this replica answers every waiter with it.
    let chunks = file_chunks(3);
    let pack = build_pack(&chunks);
    assert!(h.put_pack(&pack).await.status.is_success());
    let m = manifest(&[("f", &chunks)], &pack, "next");
    assert!(h.put_manifest("acme/geoip", &m).await.status.is_success());
    let digest = Digest::of(&m);
    h.set_tag("acme/geoip", "next", &digest, None).await.ok();
    for p in polls {
        let r = p.await.expect("poll task");
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.value()["digest"], json!(digest));
    }
    // The watcher goes with its last waiter.
    let metrics = h.get("/metrics").await.text();
    assert_eq!(gauge(&metrics, "aetherfs_hub_long_polls_waiting"), 0.0);
}

/// Finding 6: a manifest naming 100,000 chunks the hub does not have costs
/// the store no per-chunk or per-pack read: the hub places chunks from its
/// index, and re-reads the pack listing at most once per interval.
#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_of_unknown_chunks_costs_the_store_nothing_per_chunk() {
    let (h, requests) = counted_hub(HubOptions::default()).await;
    let mut m = Manifest::new(ChunkParams::default());
    for i in 0..100_000u32 {
        let data = i.to_le_bytes();
        let c = ChunkRef {
            digest: Digest::of(&data),
            len: 4,
            location: ChunkLocation {
                pack: Digest::of(b"nowhere"),
                offset: 0,
                stored_len: 4,
                compression: Compression::None,
            },
        };
        m.entries.push(Entry {
            path: format!("f/{i:06}"),
            mode: 0o644,
            kind: EntryKind::File(FileEntry::new(vec![c])),
        });
    }
    m.sort();
    let bytes = m.encode().expect("valid");
    let before = requests.snapshot();
    let r = h.put_manifest("acme/geoip", &bytes).await;
    let msg = r.err(StatusCode::UNPROCESSABLE_ENTITY, "missing_chunks");
    assert!(msg.starts_with("100000 chunk(s)"), "{msg}");
    let first = requests.since(before);
    assert!(first <= 4, "one publish of 100,000 unknown chunks made {first} store requests");
    let again = requests.snapshot();
    h.put_manifest("acme/geoip", &bytes).await.err(StatusCode::UNPROCESSABLE_ENTITY, "missing_chunks");
    let second = requests.since(again);
    assert!(second <= 2, "the second publish re-read the listing: {second} requests");
}

/// Finding 5: an open hub answers only to its addresses, `localhost` and the
/// names it is given, so a web page cannot reach it through DNS rebinding; a
/// hub with authentication is not reachable that way without credentials.
#[tokio::test]
async fn an_open_hub_refuses_unknown_host_names() {
    let get = |h: &crate::harness::TestHub, host: &'static str| {
        let router = h.router.clone();
        async move {
            let req = axum::http::Request::builder()
                .uri("/v1/datasets")
                .header("host", host)
                .body(Body::empty())
                .expect("request");
            crate::harness::send(&router, req).await
        }
    };
    let opts = HubOptions { allowed_hosts: vec!["hub.internal".into()], ..HubOptions::default() };
    let (h, _) = counted_hub(opts).await;
    for host in ["evil.example", "evil.example:7070", "127.0.0.1.evil.example", "localhost.evil.example:80"] {
        let msg = get(&h, host).await.err(StatusCode::FORBIDDEN, "host_not_allowed");
        assert!(msg.contains("--allowed-hosts"), "{msg}");
    }
    for host in ["127.0.0.1:7070", "localhost:7070", "[::1]:7070", "hub.internal", "HUB.INTERNAL:7070"] {
        assert_eq!(get(&h, host).await.status, StatusCode::OK, "{host}");
    }
    let auth = aetherfs_hub::Auth::from_toml(
        "[[rule]]\ndatasets = \"**\"\nread = [\"anonymous\"]\n",
        std::path::Path::new("."),
    )
    .expect("auth");
    let (h, _) = counted_hub(HubOptions { auth, ..HubOptions::default() }).await;
    assert_eq!(get(&h, "evil.example").await.status, StatusCode::OK, "a hub with access rules checks callers instead");
}

/// Finding 2: the JSON view of a manifest is served in pages of bounded
/// size (and a few at a time), never rendered whole.
#[tokio::test]
async fn the_json_view_of_a_manifest_comes_in_bounded_pages() {
    let (h, _) = counted_hub(HubOptions::default()).await;
    let mut m = Manifest::new(ChunkParams::default());
    for i in 0..12_500 {
        m.entries.push(Entry { path: format!("d/{i:06}"), mode: 0o700, kind: EntryKind::Dir });
    }
    m.sort();
    let bytes = m.encode().expect("valid");
    assert_eq!(h.put_manifest("acme/geoip", &bytes).await.status, StatusCode::CREATED);
    let view = |q: &'static str| {
        let uri = format!("/v1/datasets/acme/geoip/manifests/{}{q}", Digest::of(&bytes));
        let router = h.router.clone();
        async move {
            let req = axum::http::Request::builder()
                .uri(uri)
                .header("accept", "application/json")
                .body(Body::empty())
                .expect("request");
            crate::harness::send(&router, req).await
        }
    };
    let first = view("").await.ok();
    assert_eq!(first["entries"].as_array().expect("entries").len(), 1000);
    assert_eq!((first["total_entries"].as_u64(), first["next_offset"].as_u64()), (Some(12_500), Some(1000)));
    assert_eq!(first["stats"]["dirs"], 12_500);
    let last = view("?offset=12000&limit=1000").await.ok();
    assert_eq!(last["entries"].as_array().expect("entries").len(), 500);
    assert_eq!(last["entries"][0]["path"], "d/012000");
    assert!(last["next_offset"].is_null());
    let big = view("?limit=1000000").await.ok();
    assert_eq!(big["entries"].as_array().expect("entries").len(), 10_000, "the page size is capped");
    let past = view("?offset=99999").await.ok();
    assert_eq!(past["entries"], json!([]));
    view("?limit=lots").await.err(StatusCode::BAD_REQUEST, "invalid_query");
}

/// Finding 3: a pack of tiny chunks would cost every replica index memory
/// at every start; a pack may hold at most `PACK_MAX_CHUNKS`.
#[tokio::test]
async fn a_pack_of_too_many_tiny_chunks_is_refused() {
    use aetherfs_format::pack::{PACK_MAX_CHUNKS, PackBuilder};
    let (h, _) = counted_hub(HubOptions::default()).await;
    let mut b = PackBuilder::new();
    for i in 0..=PACK_MAX_CHUNKS as u32 {
        let c = i.to_le_bytes();
        b.add(Digest::of(&c), &c, false);
    }
    let pack = b.finish();
    let msg = h.put_pack(&pack).await.err(StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    assert!(msg.contains("more than 65536 chunks"), "{msg}");
    assert!(h.keys().await.is_empty(), "something was stored");
}

/// Finding 3, by bytes: the chunk index has a bound in bytes and makes room
/// (the oldest recent pack goes) instead of growing or refusing uploads, so
/// memory does not grow with what clients store.
#[tokio::test]
async fn the_chunk_index_is_bounded_in_bytes() {
    use aetherfs_format::pack::PackBuilder;
    let pack_of = |n: u32, salt: u32| {
        let mut b = PackBuilder::new();
        for i in 0..n {
            let c = [i.to_le_bytes(), salt.to_le_bytes()].concat();
            b.add(Digest::of(&c), &c, false);
        }
        b.finish()
    };
    // Room for a few hundred chunks, whatever an entry takes (50 to 200 bytes).
    let (h, _) = counted_hub(HubOptions { max_index_bytes: 40_000, ..HubOptions::default() }).await;
    let small = pack_of(100, 1);
    assert_eq!(h.put_pack(&small).await.status, StatusCode::CREATED);
    for salt in 2..6 {
        assert_eq!(h.put_pack(&pack_of(100, salt)).await.status, StatusCode::CREATED);
    }
    let big = pack_of(1000, 9);
    assert_eq!(h.put_pack(&big).await.status, StatusCode::CREATED);
    assert_eq!(h.put_pack(&small).await.status, StatusCode::OK);
    let m = h.get("/metrics").await.text();
    let bytes = gauge(&m, "aetherfs_hub_chunk_index_bytes");
    assert!(bytes > 0.0 && bytes <= 40_000.0, "{bytes}");
}
