//! What the hub's tests share: one request through the router in process,
//! the answer with the assertions every test makes on it, a hub under test,
//! and test data (packs and manifests built with the real encoders).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aetherfs_format::pack::{BuiltPack, PackBuilder};
use aetherfs_format::{ChunkParams, ChunkRef, Digest, Entry, EntryKind, FileEntry, Manifest};
use aetherfs_hub::{Hub, HubOptions};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::memory::InMemory;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Sends `req` through `router` and reads the whole answer.
pub async fn send(router: &Router, req: Request<Body>) -> Resp {
    let res = router.clone().oneshot(req).await.expect("router is infallible");
    let status = res.status();
    let headers = res.headers().clone();
    let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.expect("body");
    Resp { status, headers, body }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The JSON body of a success.
    pub fn ok(&self) -> Value {
        assert!(self.status.is_success(), "HTTP {}: {}", self.status, self.text());
        self.value()
    }

    /// Asserts an error answer's status and code; returns its message.
    #[track_caller]
    pub fn err(&self, status: StatusCode, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.value();
        assert_eq!(v["error"]["code"], code, "{}", self.text());
        v["error"]["message"].as_str().expect("message").to_string()
    }

    pub fn header(&self, name: header::HeaderName) -> &str {
        self.headers.get(&name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    pub fn challenges(&self) -> Vec<String> {
        self.headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .collect()
    }
}

// ---------------------------------------------------------------- harness

pub struct TestHub {
    pub hub: Hub,
    pub router: Router,
    pub store: Arc<dyn ObjectStore>,
}

impl TestHub {
    pub async fn over(store: Arc<dyn ObjectStore>, opts: HubOptions) -> Self {
        let hub = Hub::from_store(store.clone(), opts);
        let router = hub.router();
        let t = Self { hub, router, store };
        t.wait_ready().await;
        t
    }

    /// A hub over `store` that redirects reads when `opts.redirect_reads` is set.
    pub async fn over_signed(
        store: Arc<dyn ObjectStore>,
        presigner: aetherfs_hub::Presigner,
        opts: HubOptions,
    ) -> Self {
        let hub = Hub::from_signed_store(store.clone(), presigner, opts);
        let router = hub.router();
        let t = Self { hub, router, store };
        t.wait_ready().await;
        t
    }

    /// One sample of the hub's `/metrics` (0 when the series does not exist yet).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").await.text();
        text.lines()
            .find(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// The object-store requests of one operation this hub made so far.
    pub async fn store_requests(&self, op: &str) -> u64 {
        self.metric(&format!("aetherfs_hub_store_requests_total{{op=\"{op}\"}}")).await as u64
    }

    pub async fn memory() -> Self {
        Self::over(Arc::new(InMemory::new()), HubOptions::default()).await
    }

    pub async fn dir(dir: &std::path::Path) -> Self {
        let opts = HubOptions { storage: format!("file://{}", dir.display()), ..HubOptions::default() };
        let hub = Hub::open(opts).await.expect("open file hub");
        assert!(hub.storage_description().starts_with("file:///"));
        let router = hub.router();
        let store: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).expect("local store"));
        let t = Self { hub, router, store };
        t.wait_ready().await;
        t
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.get("/readyz").await;
            if r.status == StatusCode::OK {
                return;
            }
            assert!(Instant::now() < deadline, "hub never became ready: {}", r.text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        send(&self.router, req).await
    }

    pub async fn call(&self, method: Method, uri: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Resp {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(body.into()).expect("request")).await
    }

    pub async fn get(&self, uri: &str) -> Resp {
        self.call(Method::GET, uri, &[], Body::empty()).await
    }

    pub async fn json(&self, method: Method, uri: &str, body: &Value) -> Resp {
        self.call(method, uri, &[("content-type", "application/json")], body.to_string()).await
    }

    pub async fn put_pack(&self, pack: &BuiltPack) -> Resp {
        self.call(Method::PUT, &format!("/v1/datasets/acme/geoip/packs/{}", pack.digest), &[], pack.bytes.clone()).await
    }

    pub async fn put_manifest(&self, name: &str, bytes: &[u8]) -> Resp {
        let uri = format!("/v1/datasets/{name}/manifests/{}", Digest::of(bytes));
        self.call(Method::PUT, &uri, &[], bytes.to_vec()).await
    }

    pub async fn set_tag(&self, name: &str, tag: &str, digest: &Digest, expected: Option<&str>) -> Resp {
        let mut body = json!({ "digest": digest });
        if let Some(e) = expected {
            body["expected"] = json!(e);
        }
        self.json(Method::PUT, &format!("/v1/datasets/{name}/tags/{tag}"), &body).await
    }

    pub async fn missing(&self, digests: &[Digest]) -> Value {
        let r = self.json(Method::POST, "/v1/datasets/acme/geoip/chunks/missing", &json!({ "digests": digests })).await;
        r.ok()
    }

    /// Every key in the store.
    pub async fn keys(&self) -> Vec<String> {
        let metas: Vec<object_store::ObjectMeta> = self.store.list(None).try_collect().await.expect("list");
        metas.into_iter().map(|m| m.location.to_string()).collect()
    }
}

// ------------------------------------------------------------- test data

pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    aetherfs_util::pseudo_random(len, seed)
}

/// A file's chunks, distinct for each seed: two random (stored raw), one
/// repetitive (stored zstd).
pub fn file_chunks(seed: u64) -> Vec<Vec<u8>> {
    let mut repetitive = vec![b'z'; 5000];
    repetitive[..8].copy_from_slice(&seed.to_le_bytes());
    vec![random_bytes(seed * 2, 3000), repetitive, random_bytes(seed * 2 + 1, 1234)]
}

pub fn build_pack(chunks: &[Vec<u8>]) -> BuiltPack {
    let mut b = PackBuilder::new();
    for c in chunks {
        b.add(Digest::of(c), c, true);
    }
    b.finish()
}

/// One file per `(path, chunks)`, every chunk found in `pack`.
pub fn manifest(files: &[(&str, &[Vec<u8>])], pack: &BuiltPack, note: &str) -> Vec<u8> {
    let mut m = Manifest::new(ChunkParams::default());
    m.annotations.insert("note".into(), note.into());
    for (path, chunks) in files {
        let refs: Vec<ChunkRef> = chunks
            .iter()
            .map(|c| {
                let d = Digest::of(c);
                let e = pack.entries.iter().find(|e| e.digest == d).expect("chunk in pack");
                ChunkRef { digest: d, len: e.len, location: e.location(pack.digest) }
            })
            .collect();
        m.entries.push(Entry { path: path.to_string(), mode: 0o644, kind: EntryKind::File(FileEntry::new(refs)) });
    }
    m.sort();
    m.encode().expect("valid manifest")
}

/// A manifest with no chunks, made distinct by its annotation.
pub fn empty_manifest(note: &str) -> Vec<u8> {
    let mut m = Manifest::new(ChunkParams::default());
    m.annotations.insert("note".into(), note.into());
    m.entries.push(Entry { path: "empty".into(), mode: 0o755, kind: EntryKind::Dir });
    m.encode().expect("valid manifest")
}

// ----------------------------------------------------------- counting store

/// Requests made to a [`CountingStore`], by kind.
#[derive(Default, Debug)]
pub struct Requests {
    /// GET and HEAD.
    pub gets: std::sync::atomic::AtomicU64,
    pub puts: std::sync::atomic::AtomicU64,
    pub lists: std::sync::atomic::AtomicU64,
    pub deletes: std::sync::atomic::AtomicU64,
}

impl Requests {
    pub fn snapshot(&self) -> [u64; 4] {
        use std::sync::atomic::Ordering::SeqCst;
        [self.gets.load(SeqCst), self.puts.load(SeqCst), self.lists.load(SeqCst), self.deletes.load(SeqCst)]
    }

    /// Every request since `before` (a [`Requests::snapshot`]).
    pub fn since(&self, before: [u64; 4]) -> u64 {
        self.snapshot().iter().zip(before).map(|(n, b)| n - b).sum()
    }
}

/// An object store that counts what is asked of the one it wraps: how the
/// tests bound the requests a hostile client can cause.
#[derive(Debug)]
pub struct CountingStore {
    pub inner: Arc<dyn ObjectStore>,
    pub requests: Arc<Requests>,
}

impl std::fmt::Display for CountingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.requests.puts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.requests.puts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.requests.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.requests.deletes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.requests.lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.requests.lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.requests.puts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.copy_opts(from, to, options).await
    }
}

/// A hub over a counting in-memory store.
pub async fn counted_hub(opts: HubOptions) -> (TestHub, Arc<Requests>) {
    let requests = Arc::new(Requests::default());
    let store: Arc<dyn ObjectStore> =
        Arc::new(CountingStore { inner: Arc::new(InMemory::new()), requests: requests.clone() });
    (TestHub::over(store, opts).await, requests)
}

/// The value of a metric without labels in Prometheus text.
pub fn gauge(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}
