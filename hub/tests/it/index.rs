//! The chunk index at scale, in process: dedup finds a dataset's tagged
//! versions without holding every chunk, a replica with no local state
//! answers the same, and start reads nothing but the recent part of the pack
//! log, whatever the store holds.

use std::sync::Arc;

use aetherfs_format::Digest;
use aetherfs_format::pack::{BuiltPack, PackBuilder};
use aetherfs_hub::HubOptions;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parking_lot::Mutex;
use serde_json::Value;

use crate::harness::{TestHub, build_pack, file_chunks, manifest};

const NAME: &str = "acme/geoip";

/// A pack of `n` small distinct chunks.
fn pack_of(n: u32, salt: u32) -> (Vec<Vec<u8>>, BuiltPack) {
    let chunks: Vec<Vec<u8>> = (0..n).map(|i| [i.to_le_bytes(), salt.to_le_bytes()].concat()).collect();
    let mut b = PackBuilder::new();
    for c in &chunks {
        b.add(Digest::of(c), c, false);
    }
    (chunks, b.finish())
}

/// Uploads `pack`, publishes one file of `chunks` and tags it latest.
async fn push(h: &TestHub, chunks: &[Vec<u8>], pack: &BuiltPack, note: &str) -> Digest {
    assert!(h.put_pack(pack).await.status.is_success());
    let m = manifest(&[("f", chunks)], pack, note);
    let r = h.put_manifest(NAME, &m).await;
    assert!(r.status.is_success(), "{}", r.text());
    let d = Digest::of(&m);
    h.set_tag(NAME, "latest", &d, None).await.ok();
    d
}

fn digests(chunks: &[Vec<u8>]) -> Vec<Digest> {
    chunks.iter().map(|c| Digest::of(c)).collect()
}

/// The answer to a missing-chunks query, in a comparable form.
fn answer(v: &Value) -> (Vec<String>, Vec<String>) {
    let list = |k: &str| -> Vec<String> {
        let mut l: Vec<String> = v[k].as_array().expect(k).iter().map(|x| x.to_string()).collect();
        l.sort();
        l
    };
    (list("missing"), list("present"))
}

/// Room for about a dozen recent chunks, whatever an entry takes.
fn tiny() -> HubOptions {
    HubOptions { max_index_bytes: 2400, ..HubOptions::default() }
}

#[tokio::test]
async fn dedup_finds_the_tagged_version_after_its_packs_left_the_index() {
    let h = TestHub::over(Arc::new(InMemory::new()), tiny()).await;
    let v1 = file_chunks(1);
    let p1 = build_pack(&v1);
    push(&h, &v1, &p1, "v1").await;
    // Packs stored since push p1's chunks out of the recent ones.
    for salt in 0..3 {
        let (_, p) = pack_of(8, salt);
        assert!(h.put_pack(&p).await.status.is_success());
    }
    let m = h.get("/metrics").await.text();
    let bytes = crate::harness::gauge(&m, "aetherfs_hub_chunk_index_bytes");
    assert!(bytes <= 2400.0, "the index took {bytes} bytes");

    // The next push of the dataset: v1's chunks are found through the tag.
    let (new, p2) = pack_of(2, 99);
    let mut ask = digests(&v1);
    ask.extend(digests(&new));
    let (missing, present) = answer(&h.missing(&ask).await);
    assert_eq!(missing.len(), 2, "only the new chunks are missing: {missing:?}");
    assert_eq!(present.len(), 3);
    // And published from there.
    assert!(h.put_pack(&p2).await.status.is_success());
    let mut all = v1.clone();
    all.extend(new);
    let merged = {
        let mut b = PackBuilder::new();
        for c in &all {
            b.add(Digest::of(c), c, false);
        }
        b.finish()
    };
    let m = manifest(&[("f", &all)], &merged, "v2");
    let r = h.put_manifest(NAME, &m).await;
    assert!(r.status.is_success(), "{}", r.text());
}

#[tokio::test]
async fn a_replica_without_local_state_gives_the_same_answers() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let a = TestHub::over(store.clone(), HubOptions::default()).await;
    let v1 = file_chunks(1);
    let p1 = build_pack(&v1);
    push(&a, &v1, &p1, "v1").await;
    // Stored but in no version yet (a push under way).
    let (loose, p2) = pack_of(4, 7);
    assert!(a.put_pack(&p2).await.status.is_success());
    let mut ask = digests(&v1);
    ask.extend(digests(&loose));
    ask.extend(digests(&file_chunks(9)));
    let before = answer(&a.missing(&ask).await);
    assert_eq!(before.0.len(), 3, "{before:?}");

    for opts in [HubOptions::default(), tiny()] {
        let b = TestHub::over(store.clone(), opts).await;
        assert_eq!(answer(&b.missing(&ask).await), before);
    }
}

/// Every key a store is asked to read or list, in order.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ObjectStore>,
    asked: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Display for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recording({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Recording {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.asked.lock().push(format!("get {location}"));
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<Path>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.asked.lock().push(format!("list {}", prefix.map(|p| p.to_string()).unwrap_or_default()));
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.asked.lock().push(format!("list {} from {offset}", prefix.map(|p| p.to_string()).unwrap_or_default()));
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<object_store::ListResult> {
        self.asked.lock().push(format!("list {}/", prefix.map(|p| p.to_string()).unwrap_or_default()));
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: object_store::CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[tokio::test]
async fn start_reads_only_the_recent_log_whatever_the_store_holds() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let v1 = file_chunks(1);
    let p1 = build_pack(&v1);
    let (v0, p0) = pack_of(2, 1000);
    let old = {
        let a = TestHub::over(store.clone(), HubOptions::default()).await;
        // An untagged version: its pack is readable only through its placement.
        assert!(a.put_pack(&p0).await.status.is_success());
        assert!(a.put_manifest(NAME, &manifest(&[("f", &v0)], &p0, "v0")).await.status.is_success());
        push(&a, &v1, &p1, "v1").await;
        for salt in 0..40 {
            let (_, p) = pack_of(3, salt);
            assert!(a.put_pack(&p).await.status.is_success());
        }
        a.keys().await
    };
    // Make it an old store: its log entries are past the window.
    let log: Vec<&String> = old.iter().filter(|k| k.starts_with("index/log/")).collect();
    assert_eq!(log.len(), 42, "one log entry per stored pack");
    assert!(!old.iter().any(|k| k.ends_with(".idx") || k.contains(".links/")), "more than a record per pack: {old:?}");
    for k in log {
        let file = k.rsplit('/').next().expect("log key");
        let (ms, hex) = file.split_once('-').expect("log key");
        let aged = ms.parse::<u64>().expect("ms") - 2 * 86_400_000;
        let key = format!("index/log/{:08}/{aged:020}-{hex}", aged / 86_400_000);
        let record = store.get(&Path::from(k.as_str())).await.expect("get").bytes().await.expect("body");
        store.put(&Path::from(key), PutPayload::from(record)).await.expect("put");
        store.delete(&Path::from(k.as_str())).await.expect("delete");
    }

    let asked = Arc::new(Mutex::new(Vec::new()));
    let recording: Arc<dyn ObjectStore> = Arc::new(Recording { inner: store.clone(), asked: asked.clone() });
    let b = TestHub::over(recording, HubOptions::default()).await;
    // (`/readyz` itself checks that the store answers.)
    let at_start: Vec<String> = asked.lock().iter().filter(|k| !k.contains("_readyz")).cloned().collect();
    // One listing per day of the window (two, or three near midnight).
    assert!(at_start.iter().all(|k| k.starts_with("list index/log/")), "start asked for {at_start:?}");
    assert!(at_start.len() <= 3, "{at_start:?}");

    // The dataset's next push still dedups against v1 (through its tag),
    // without listing or reading any pack index.
    let (missing, present) = answer(&b.missing(&digests(&v1)).await);
    assert!(missing.is_empty() && present.len() == 3, "{missing:?}");
    let asked = asked.lock().clone();
    assert!(
        !asked.iter().any(|k| k.ends_with(".idx") || k == "list packs" || k == "list packs/"),
        "a lookup read pack indexes: {asked:?}"
    );

    // The replica knows neither pack's record now: the dataset still reads
    // the tagged version's pack (its placement is a base) and the untagged
    // one's (found in its placements); another dataset reads neither.
    let read = async |name: &str, pack: &BuiltPack| {
        let uri = format!("/v1/datasets/{name}/packs/{}", pack.digest);
        b.call(axum::http::Method::GET, &uri, &[("range", "bytes=0-9")], axum::body::Body::empty()).await.status
    };
    assert_eq!(read(NAME, &p1).await, axum::http::StatusCode::PARTIAL_CONTENT);
    assert_eq!(read(NAME, &p0).await, axum::http::StatusCode::PARTIAL_CONTENT);
    assert_eq!(read("acme/other", &p0).await, axum::http::StatusCode::NOT_FOUND);
    assert_eq!(read("acme/other", &p1).await, axum::http::StatusCode::NOT_FOUND);
}

/// A store an older hub wrote (an empty log entry, the index in
/// `packs/<hex>.idx`, the uploader as a link object) reads as before.
#[tokio::test]
async fn a_store_an_older_hub_wrote_still_serves() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (chunks, pack) = pack_of(4, 7);
    let hex = pack.digest.hex();
    let (range, _) = aetherfs_format::pack::verify_pack(&pack.bytes).expect("a valid pack");
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64;
    let put =
        async |key: String, body: Vec<u8>| store.put(&Path::from(key), PutPayload::from(body)).await.expect("put");
    put(format!("packs/{hex}.pack"), pack.bytes.clone()).await;
    put(format!("packs/{hex}.idx"), pack.bytes[range].to_vec()).await;
    put(format!("packs/{hex}.links/{NAME}"), Vec::new()).await;
    put(format!("index/log/{:08}/{ms:020}-{hex}", ms / 86_400_000), Vec::new()).await;

    let h = TestHub::over(store.clone(), HubOptions::default()).await;
    let (missing, present) = answer(&h.missing(&digests(&chunks)).await);
    assert!(missing.is_empty() && present.len() == 4, "{missing:?}");
    let m = manifest(&[("f", &chunks)], &pack, "old");
    assert_eq!(h.put_manifest(NAME, &m).await.status, axum::http::StatusCode::CREATED);
    let uri = format!("/v1/datasets/{NAME}/packs/{}", pack.digest);
    let r = h.call(axum::http::Method::GET, &uri, &[], axum::body::Body::empty()).await;
    assert_eq!(r.status, axum::http::StatusCode::OK);
    assert_eq!(r.body.len(), pack.bytes.len());
}
