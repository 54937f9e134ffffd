//! Garbage collection in process: retention, repacking, and each half of the
//! handshakes that keep it safe next to publishes, tag moves and readers.

use std::sync::Arc;

use aetherfs_format::pack::{BuiltPack, decode_chunk};
use aetherfs_format::{Digest, EntryKind, Manifest, Placement};
use aetherfs_hub::{HubOptions, Lifecycle};
use axum::body::Body;
use axum::http::{Method, StatusCode};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::{Value, json};

use crate::harness::{TestHub, build_pack, file_chunks, manifest};

const NAME: &str = "acme/geoip";

async fn hub_with(lifecycle: &str) -> TestHub {
    let lifecycle = Lifecycle::from_toml(lifecycle).expect("lifecycle");
    TestHub::over(Arc::new(InMemory::new()), HubOptions { lifecycle, ..HubOptions::default() }).await
}

async fn gc(h: &TestHub, dry_run: bool) -> Value {
    h.json(Method::POST, "/v1/gc", &json!({ "dry_run": dry_run, "grace_secs": 0 })).await.ok()
}

/// Publishes one file made of `chunks` (all stored in `pack`) and tags it latest.
async fn publish(h: &TestHub, chunks: &[Vec<u8>], pack: &BuiltPack, note: &str) -> Digest {
    let m = manifest(&[("f", chunks)], pack, note);
    let r = h.put_manifest(NAME, &m).await;
    assert!(r.status.is_success(), "{}", r.text());
    let d = Digest::of(&m);
    h.set_tag(NAME, "latest", &d, None).await.ok();
    d
}

/// Reads a version back the way a client does: manifest, placement, and
/// each chunk from its pack, verified.
async fn read_back(h: &TestHub, digest: &Digest) -> Vec<u8> {
    let m = h.get(&format!("/v1/datasets/{NAME}/manifests/{digest}")).await;
    assert_eq!(m.status, StatusCode::OK, "{}", m.text());
    assert_eq!(Digest::of(&m.body), *digest, "the manifest changed");
    let p = h.get(&format!("/v1/datasets/{NAME}/manifests/{digest}/placement")).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.text());
    let placement = Placement::decode(&p.body).expect("placement");
    let manifest = Manifest::decode(&m.body, &placement).expect("joined");
    let mut out = Vec::new();
    for e in &manifest.entries {
        let EntryKind::File(f) = &e.kind else { continue };
        for c in f.chunks() {
            let l = c.location;
            let range = format!("bytes={}-{}", l.offset, l.offset + u64::from(l.stored_len) - 1);
            let uri = format!("/v1/datasets/{NAME}/packs/{}", l.pack);
            let r = h.call(Method::GET, &uri, &[("range", &range)], Body::empty()).await;
            assert!(r.status.is_success(), "chunk {} in {}: {}", c.digest, l.pack, r.text());
            out.extend(decode_chunk(&r.body, c.len, l.compression, &c.digest).expect("chunk verifies"));
        }
    }
    out
}

async fn put(store: &Arc<dyn ObjectStore>, key: &str, body: Vec<u8>) {
    store.put(&Path::from(key), PutPayload::from(body)).await.expect("put");
}

async fn exists(store: &Arc<dyn ObjectStore>, key: &str) -> bool {
    store.head(&Path::from(key)).await.is_ok()
}

#[tokio::test]
async fn retention_keeps_the_last_versions_and_the_space_of_the_rest_is_reclaimed() {
    retention_scenario(&hub_with("[[retention]]\ndatasets = \"**\"\nkeep_last = 2\n").await).await;
}

/// Four versions sharing a base, a rule keeping the last two: collection
/// removes two, rewrites the mostly dead first pack, and the kept versions
/// read back. `h` keeps the last 2 versions of every dataset. (Also part of
/// the scenario suite over every store, api.rs.)
pub async fn retention_scenario(h: &TestHub) {
    // Each version shares a large base with the others and adds its own chunks.
    let base: Vec<Vec<u8>> = (0..4).flat_map(file_chunks).collect();
    let mut versions = Vec::new();
    let mut contents = Vec::new();
    let mut first_pack = None;
    for v in 1..=4u64 {
        let own = file_chunks(100 + v);
        let chunks: Vec<Vec<u8>> = base.iter().chain(&own).cloned().collect();
        // The first pack holds the base; later ones only what is new.
        let pack = if v == 1 { build_pack(&chunks) } else { build_pack(&own) };
        assert!(h.put_pack(&pack).await.status.is_success());
        let full = match &first_pack {
            None => merged(&pack, &pack),
            Some(first) => merged(first, &pack),
        };
        versions.push(publish(h, &chunks, &full, &format!("v{v}")).await);
        contents.push(chunks.concat());
        first_pack.get_or_insert(pack);
    }
    let first = first_pack.expect("first pack");

    let plan = gc(h, true).await;
    let mut planned: Vec<String> =
        plan["versions_removed"].as_array().expect("list").iter().map(|v| v["digest"].to_string()).collect();
    let mut want: Vec<String> = versions[..2].iter().map(|d| json!(d).to_string()).collect();
    planned.sort();
    want.sort();
    assert_eq!(planned, want, "{plan}");
    assert_eq!(plan["versions_removed"][0]["rule"], "rule 1 (**)");
    let keys_before = h.keys().await;
    assert!(keys_before.iter().any(|k| k.ends_with(&versions[0].hex())), "a dry run removed something");

    let done = gc(h, false).await;
    assert_eq!(done["versions_removed"].as_array().expect("list").len(), 2, "{done}");
    assert!(done["packs_deleted"].as_u64().expect("n") >= 2, "{done}");
    assert_eq!(done["packs_rewritten"], 1, "the mostly dead first pack is rewritten: {done}");
    assert!(done["stored_bytes_after"].as_u64() < done["stored_bytes_before"].as_u64(), "{done}");
    for (v, want) in versions.iter().zip(&contents).skip(2) {
        assert_eq!(read_back(h, v).await, *want, "{v} reads back differently");
    }
    for v in &versions[..2] {
        let r = h.get(&format!("/v1/datasets/{NAME}/manifests/{v}")).await;
        r.err(StatusCode::NOT_FOUND, "manifest_not_found");
    }
    let keys = h.keys().await;
    // (The pack log may still name it: followers skip logged packs that are gone.)
    let stored = |k: &&String| k.starts_with("packs/") && k.contains(&first.digest.hex());
    assert!(!keys.iter().any(|k| stored(&k)), "the rewritten pack is still there: {keys:?}");
    assert!(!keys.iter().any(|k| k.starts_with("gc/")), "markers or the lock left behind: {keys:?}");
    // History stays readable after its versions are gone.
    let history = h.get(&format!("/v1/datasets/{NAME}/tags/latest/history")).await.ok();
    assert_eq!(history["records"].as_array().expect("records").len(), 4);

    let again = gc(h, false).await;
    assert_eq!((again["packs_deleted"].as_u64(), again["packs_rewritten"].as_u64()), (Some(0), Some(0)), "{again}");
    assert_eq!(again["stored_bytes_after"], done["stored_bytes_after"]);

    let metrics = h.get("/metrics").await.text();
    let sample = |name: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {metrics}"));
        line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("value")
    };
    assert_eq!(sample("aetherfs_hub_gc_runs_total{outcome=\"ok\"}"), 3.0, "dry runs count as runs");
    assert_eq!(sample("aetherfs_hub_gc_versions_removed_total"), 2.0);
    assert!(sample("aetherfs_hub_gc_deleted_bytes_total") > 0.0);
    assert_eq!(sample("aetherfs_hub_stored_bytes"), done["stored_bytes_after"].as_f64().expect("n"));
    let live = format!("aetherfs_hub_dataset_live_bytes{{dataset=\"{NAME}\"}}");
    assert_eq!(sample(&live), again["datasets"][0]["live_bytes"].as_f64().expect("n"));
    assert!(sample("aetherfs_hub_gc_last_success_timestamp_seconds") > 1.7e9);
}

/// A pack holding `a`'s and `b`'s entries, for building a manifest whose
/// chunks live in two packs (only the locations matter to `manifest`).
fn merged(a: &BuiltPack, b: &BuiltPack) -> BuiltPack {
    let mut entries = a.entries.clone();
    entries.extend(b.entries.iter().copied());
    BuiltPack { bytes: Vec::new(), digest: a.digest, entries, plain_bytes: 0 }
}

#[tokio::test]
async fn a_publish_never_lands_on_a_condemned_or_vanished_pack() {
    let h = hub_with("").await;
    let chunks = file_chunks(7);
    let pack = build_pack(&chunks);
    assert!(h.put_pack(&pack).await.status.is_success());
    // Garbage collection condemns the pack between the push's query and its publish.
    put(&h.store, &format!("gc/condemned/{}", pack.digest.hex()), Vec::new()).await;
    let m = manifest(&[("f", &chunks)], &pack, "one");
    let msg = h.put_manifest(NAME, &m).await.err(StatusCode::UNPROCESSABLE_ENTITY, "missing_chunks");
    assert!(msg.contains("garbage collection"), "{msg}");
    let keys = h.keys().await;
    assert!(
        !keys.iter().any(|k| k.contains("_manifests") || k.contains("_placements") || k.contains("_pending")),
        "a refused publish left {keys:?}"
    );
    // The client asks again: the chunks are now missing, so it uploads them anew.
    let digests: Vec<Digest> = chunks.iter().map(|c| Digest::of(c)).collect();
    assert_eq!(h.missing(&digests).await["missing"].as_array().expect("list").len(), chunks.len());
    let reordered: Vec<Vec<u8>> = chunks.iter().rev().cloned().collect();
    let again = build_pack(&reordered);
    assert!(h.put_pack(&again).await.status.is_success());
    let r = h.put_manifest(NAME, &m).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let placement = h.get(&format!("/v1/datasets/{NAME}/manifests/{}/placement", Digest::of(&m))).await;
    let placement = Placement::decode(&placement.body).expect("placement");
    assert_eq!(placement.packs().into_iter().collect::<Vec<_>>(), vec![again.digest]);

    // A pack that vanished (another replica collected it) is refused too.
    h.store.delete(&Path::from(format!("packs/{}.pack", again.digest.hex()))).await.expect("delete");
    let other = manifest(&[("g", &reordered)], &again, "two");
    h.put_manifest(NAME, &other).await.err(StatusCode::UNPROCESSABLE_ENTITY, "missing_chunks");
    assert_eq!(h.missing(&digests).await["missing"].as_array().expect("list").len(), chunks.len(), "still offered");
}

#[tokio::test]
async fn a_publish_in_flight_keeps_its_packs() {
    let h = hub_with("").await;
    let chunks = file_chunks(8);
    let pack = build_pack(&chunks);
    assert!(h.put_pack(&pack).await.status.is_success());
    // A publish has announced itself (its placement) but not yet stored its manifest.
    let m = manifest(&[("f", &chunks)], &pack, "pending");
    let digest = Digest::of(&m);
    let parsed = Manifest::decode_placed_by(&m, |d, _| {
        pack.entries.iter().find(|e| e.digest == *d).map(|e| e.location(pack.digest))
    })
    .expect("decode");
    let pending = format!("datasets/{NAME}/_placements/{}", digest.hex());
    put(&h.store, &pending, Placement::of(&parsed, digest).encode()).await;
    let r = gc(&h, false).await;
    assert_eq!(r["packs_deleted"], 0, "{r}");
    assert!(exists(&h.store, &format!("packs/{}.pack", pack.digest.hex())).await);
    // Once the publish is gone (it failed), nothing keeps the pack.
    h.store.delete(&Path::from(pending)).await.expect("delete");
    let r = gc(&h, false).await;
    assert_eq!(r["packs_deleted"], 1, "{r}");
    assert!(!exists(&h.store, &format!("packs/{}.pack", pack.digest.hex())).await);
}

#[tokio::test]
async fn a_tag_never_lands_on_a_version_being_removed() {
    let h = hub_with("").await;
    let chunks = file_chunks(9);
    let pack = build_pack(&chunks);
    assert!(h.put_pack(&pack).await.status.is_success());
    let kept = publish(&h, &chunks, &pack, "kept").await;
    let m = manifest(&[("f", &chunks)], &pack, "old");
    assert!(h.put_manifest(NAME, &m).await.status.is_success());
    let old = Digest::of(&m);
    // Collection has marked `old` for removal when a writer moves the tag onto it.
    put(&h.store, &format!("datasets/{NAME}/_doomed/{}", old.hex()), Vec::new()).await;
    h.set_tag(NAME, "latest", &old, None).await.err(StatusCode::CONFLICT, "version_removed");
    let now = h.get(&format!("/v1/datasets/{NAME}/tags/latest")).await.ok();
    assert_eq!(now["digest"], kept.to_string(), "the tag was not put back");
}

#[tokio::test]
async fn one_collection_at_a_time_and_a_dead_holder_is_outlived() {
    let h = hub_with("").await;
    let far = u64::MAX / 2;
    put(&h.store, "gc/lock", json!({ "owner": "other", "expires_unix": far }).to_string().into_bytes()).await;
    let r = h.json(Method::POST, "/v1/gc", &json!({})).await;
    r.err(StatusCode::CONFLICT, "gc_running");
    // A dry run changes nothing, so it needs no lock.
    assert!(h.json(Method::POST, "/v1/gc", &json!({ "dry_run": true })).await.status.is_success());
    put(&h.store, "gc/lock", json!({ "owner": "dead", "expires_unix": 1 }).to_string().into_bytes()).await;
    let r = h.json(Method::POST, "/v1/gc", &json!({})).await;
    assert!(r.status.is_success(), "an expired lock was not broken: {}", r.text());
    assert!(!exists(&h.store, "gc/lock").await, "the lock was not released");
}

#[tokio::test]
async fn leases_keep_what_readers_serve_and_dry_runs_name_them() {
    let h = hub_with("").await;
    let chunks = file_chunks(10);
    let pack = build_pack(&chunks);
    assert!(h.put_pack(&pack).await.status.is_success());
    let old = publish(&h, &chunks, &pack, "old").await;
    let new = publish(&h, &chunks, &pack, "new").await;
    let lease = h.json(Method::PUT, &format!("/v1/datasets/{NAME}/leases/pod-1"), &json!({ "versions": [old] })).await;
    let lease = lease.ok();
    assert_eq!(lease["lease_secs"], 600);
    let plan = gc(&h, true).await;
    assert_eq!(plan["versions_removed"], json!([]), "{plan}");
    assert_eq!(plan["held_by_leases"][0]["digest"], old.to_string());
    assert_eq!(plan["held_by_leases"][0]["readers"], json!(["pod-1"]));
    assert_eq!(plan["datasets"][0]["leases_held"], 1);
    // The reader stopped renewing: its lease has run out.
    let mut expired = lease.clone();
    expired["expires_unix"] = json!(1);
    put(&h.store, &format!("datasets/{NAME}/_leases/pod-1"), expired.to_string().into_bytes()).await;
    let plan = gc(&h, true).await;
    assert_eq!(plan["versions_removed"][0]["digest"], old.to_string(), "{plan}");
    assert_eq!(plan["versions_removed"][0]["readers"], json!(["pod-1"]));
    let done = gc(&h, false).await;
    assert_eq!(done["versions_removed"].as_array().expect("list").len(), 1);
    assert_eq!(read_back(&h, &new).await, chunks.concat());
    for bad in ["../x", ".hidden", "a b"] {
        let uri = format!("/v1/datasets/{NAME}/leases/{}", bad.replace(' ', "%20"));
        let r = h.json(Method::PUT, &uri, &json!({ "versions": [] })).await;
        assert!(r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::NOT_FOUND, "{bad}: {}", r.text());
    }
}
