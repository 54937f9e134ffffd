//! A typed client of the hub's REST API.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aetherfs_format::api::{
    DatasetList, ErrorBody, Expected, GcReport, GcRequest, Lease, LeaseList, LeaseRequest, MISSING_QUERY_MAX,
    ManifestStored, MissingChunksRequest, MissingChunksResponse, PackStored, SetTagRequest, TagHistory, TagList,
    TagRecord, VersionList, VersionServed,
};
use aetherfs_format::manifest::MANIFEST_MAX_BYTES;
use aetherfs_format::placement::PLACEMENT_MAX_BYTES;
use aetherfs_format::{ChunkLocation, Digest, Manifest, Name, Placement, Reference, Tag};
use aetherfs_util::range::RangeSpec;
use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::HeaderValue;
use reqwest::{Method, RequestBuilder, Response, StatusCode, header};
use url::Url;

use crate::auth::Credentials;
use crate::error::ClientError;
use crate::tls::{self, Trust};

const MANIFEST_TYPE: &str = "application/vnd.aetherfs.manifest.v1";
const PLACEMENT_TYPE: &str = "application/vnd.aetherfs.placement.v1";
const PACK_TYPE: &str = "application/vnd.aetherfs.pack.v1";
const RETRIES: u32 = 4;
/// Redirects a pack read may follow (the hub's to the store, and the
/// store's own, e.g. to another region), before it is refused.
pub const MAX_REDIRECTS: usize = 4;

/// A cheap-to-clone handle on one hub.
#[derive(Clone)]
pub struct HubClient {
    base: Url,
    http: reqwest::Client,
    /// For presigned store URLs a pack read is redirected to: never sends
    /// the hub's credentials; trusts the platform's roots (and the hub's CA file).
    store_http: reqwest::Client,
    trust: Trust,
    credentials: Option<Arc<dyn Credentials>>,
}

impl std::fmt::Debug for HubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClient")
            .field("base", &self.base.as_str())
            .field("trust", &self.trust)
            .field("credentials", &self.credentials.as_ref().map(|c| c.describe()))
            .finish()
    }
}

/// The canonical form of a hub URL (a trailing slash, no query): the key a
/// login is stored under.
pub fn hub_key(base: &str) -> Result<String, ClientError> {
    Ok(normalize(base)?.to_string())
}

fn normalize(base: &str) -> Result<Url, ClientError> {
    let invalid = |why: &str| ClientError::InvalidUrl { url: base.to_string(), why: why.to_string() };
    let mut url = Url::parse(base).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("use http:// or https://"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("no query or fragment allowed"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("no user or password in the URL: use AETHERFS_USER and AETHERFS_PASSWORD"));
    }
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    Ok(url)
}

fn build_http(base: &str, trust: &Trust) -> Result<reqwest::Client, ClientError> {
    let builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(120))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("aetherfs/", env!("CARGO_PKG_VERSION")));
    trust.apply(builder)?.build().map_err(|e| ClientError::InvalidUrl { url: base.to_string(), why: e.to_string() })
}

impl HubClient {
    /// `base` is the hub's root URL, e.g. `http://127.0.0.1:7070`.
    pub fn new(base: &str) -> Result<Self, ClientError> {
        let url = normalize(base)?;
        let trust = Trust::System;
        let http = build_http(base, &trust)?;
        let store_http = build_http(base, &trust)?;
        Ok(Self { base: url, http, store_http, trust, credentials: None })
    }

    /// Trusts only the CA certificates in `path` (PEM) for an https hub,
    /// instead of the platform's roots.
    pub fn with_ca_file(mut self, path: &Path) -> Result<Self, ClientError> {
        let trust = Trust::Only(path.to_path_buf());
        self.http = build_http(self.base.as_str(), &trust)?;
        self.store_http = build_http(self.base.as_str(), &Trust::Also(path.to_path_buf()))?;
        self.trust = trust;
        Ok(self)
    }

    /// Sends what `credentials` gives with every request; on a 401 they are
    /// invalidated and the request is retried once.
    pub fn with_credentials(mut self, credentials: Arc<dyn Credentials>) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// What the client authenticates with, for messages.
    pub fn credentials_description(&self) -> Option<String> {
        self.credentials.as_ref().map(|c| c.describe())
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> Url {
        // `path` is built from validated names, tags and digests only.
        let mut u = self.base.clone();
        u.set_path(&format!("{}{}", self.base.path(), path));
        u
    }

    fn dataset_path(name: &Name, rest: &str) -> String {
        format!("v1/datasets/{name}/{rest}")
    }

    /// Sends a request built by `build`, retrying transient failures with
    /// exponential backoff. Every call site is idempotent.
    async fn send(&self, build: impl Fn() -> RequestBuilder) -> Result<Response, ClientError> {
        let mut attempt = 0;
        loop {
            match self.send_once_with(&build, false).await {
                Err(e) if e.is_transient() && attempt < RETRIES => {
                    attempt += 1;
                    let backoff = Duration::from_millis(100 << attempt);
                    tracing::debug!(error = %e, attempt, "retrying hub request");
                    tokio::time::sleep(backoff).await;
                }
                other => return other,
            }
        }
    }

    /// Sends one request with credentials; when the hub refuses them (401),
    /// invalidates them and sends it once more with fresh ones. A 401 means
    /// the hub did not act on the request, so the resend is safe even for
    /// requests that are not idempotent.
    async fn send_once(&self, build: &impl Fn() -> RequestBuilder) -> Result<Response, ClientError> {
        self.send_once_with(build, false).await
    }

    /// [`Self::send_once`]; with `redirect`, a redirection answer is
    /// returned as it is, for the caller to follow.
    async fn send_once_with(
        &self,
        build: &impl Fn() -> RequestBuilder,
        redirect: bool,
    ) -> Result<Response, ClientError> {
        let auth = self.authorization().await?;
        let first = self.dispatch(build(), auth.clone(), redirect).await;
        let (Err(e), Some(creds), Some(rejected)) = (&first, &self.credentials, &auth) else {
            return first;
        };
        if !is_unauthorized(e) {
            return first;
        }
        creds.invalidate(rejected);
        let fresh = self.authorization().await?;
        if fresh.as_ref() == Some(rejected) || fresh.is_none() {
            return first;
        }
        tracing::debug!(credentials = %creds.describe(), "the hub refused the credentials; retrying with fresh ones");
        self.dispatch(build(), fresh, redirect).await
    }

    async fn authorization(&self) -> Result<Option<HeaderValue>, ClientError> {
        match &self.credentials {
            Some(c) => c.authorization().await,
            None => Ok(None),
        }
    }

    async fn dispatch(
        &self,
        req: RequestBuilder,
        auth: Option<HeaderValue>,
        redirect: bool,
    ) -> Result<Response, ClientError> {
        let req = match auth {
            Some(h) => req.header(header::AUTHORIZATION, h),
            None => req,
        };
        match req.send().await {
            Ok(resp) if redirect && resp.status().is_redirection() => Ok(resp),
            Ok(resp) => check(resp).await,
            Err(e) => Err(self.connect_error(e)),
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, build: impl Fn() -> RequestBuilder) -> Result<T, ClientError> {
        let resp = self.send(build).await?;
        Ok(resp.json::<T>().await?)
    }

    pub async fn list_datasets(&self) -> Result<DatasetList, ClientError> {
        self.json(|| self.http.get(self.url("v1/datasets"))).await
    }

    pub async fn list_tags(&self, name: &Name) -> Result<TagList, ClientError> {
        let url = self.url(&Self::dataset_path(name, "tags"));
        self.json(|| self.http.get(url.clone())).await
    }

    pub async fn resolve_tag(&self, name: &Name, tag: &Tag) -> Result<TagRecord, ClientError> {
        let url = self.url(&Self::dataset_path(name, &format!("tags/{tag}")));
        self.json(|| self.http.get(url.clone())).await
    }

    /// Long-poll: returns when the tag no longer points at `since`, or after `wait`.
    pub async fn wait_tag(
        &self,
        name: &Name,
        tag: &Tag,
        since: Option<Digest>,
        wait: Duration,
    ) -> Result<TagRecord, ClientError> {
        let url = self.url(&Self::dataset_path(name, &format!("tags/{tag}")));
        let mut query = vec![("wait", wait.as_secs().to_string())];
        if let Some(d) = since {
            query.push(("since", d.to_string()));
        }
        self.json(|| self.http.get(url.clone()).query(&query).timeout(wait + Duration::from_secs(30))).await
    }

    /// Moves a tag; with `expected`, only if the tag is in that state (else a
    /// `tag_conflict` API error).
    pub async fn set_tag(
        &self,
        name: &Name,
        tag: &Tag,
        digest: Digest,
        expected: Option<Expected>,
    ) -> Result<TagRecord, ClientError> {
        let url = self.url(&Self::dataset_path(name, &format!("tags/{tag}")));
        let body = SetTagRequest { digest, expected };
        // Not retried blindly: a retry after a lost response could report a
        // conflict with our own move, so CAS callers see one attempt.
        let resp = self.send_once(&|| self.http.put(url.clone()).json(&body)).await?;
        Ok(resp.json().await?)
    }

    pub async fn delete_tag(&self, name: &Name, tag: &Tag, expected: Option<Digest>) -> Result<TagRecord, ClientError> {
        let url = self.url(&Self::dataset_path(name, &format!("tags/{tag}")));
        let query: Vec<(&str, String)> = expected.map(|d| ("expected", d.to_string())).into_iter().collect();
        let resp = self.send_once(&|| self.http.delete(url.clone()).query(&query)).await?;
        Ok(resp.json().await?)
    }

    /// Every stored version of a dataset, oldest first.
    pub async fn list_versions(&self, name: &Name) -> Result<VersionList, ClientError> {
        let url = self.url(&Self::dataset_path(name, "manifests"));
        self.json(|| self.http.get(url.clone())).await
    }

    /// Deletes a version no tag points at (a `version_tagged` API error otherwise).
    pub async fn delete_version(&self, name: &Name, digest: &Digest) -> Result<(), ClientError> {
        let url = self.url(&Self::dataset_path(name, &format!("manifests/{digest}")));
        self.send_once(&|| self.http.delete(url.clone())).await?;
        Ok(())
    }

    pub async fn tag_history(&self, name: &Name, tag: &Tag) -> Result<TagHistory, ClientError> {
        let url = self.url(&Self::dataset_path(name, &format!("tags/{tag}/history")));
        self.json(|| self.http.get(url.clone())).await
    }

    fn connect_error(&self, e: reqwest::Error) -> ClientError {
        if let Some(line) = tls::explain(&e, "the hub", &self.trust) {
            return ClientError::Tls(line);
        }
        if e.is_connect() {
            ClientError::Unreachable { url: self.base.to_string(), source: e }
        } else {
            ClientError::Http(e)
        }
    }

    /// The digest a reference names: its digest if it has one, else what its
    /// tag (default `latest`) points at.
    pub async fn resolve(&self, reference: &Reference) -> Result<Digest, ClientError> {
        if let Some(d) = reference.digest {
            return Ok(d);
        }
        let rec = self.resolve_tag(&reference.name, &reference.tag_or_latest()).await?;
        rec.digest.ok_or_else(|| ClientError::Invalid(format!("tag {reference} was deleted")))
    }

    /// Fetches a manifest, verified against its digest, and its placement,
    /// and joins them. The bytes returned are the manifest's (what the digest
    /// covers).
    pub async fn get_manifest(&self, name: &Name, digest: &Digest) -> Result<(Manifest, Bytes), ClientError> {
        let url = self.url(&Self::dataset_path(name, &format!("manifests/{digest}")));
        let resp = self.send(|| self.http.get(url.clone()).header(header::ACCEPT, MANIFEST_TYPE)).await?;
        let bytes = read_bounded(resp, MANIFEST_MAX_BYTES).await?;
        if Digest::of(&bytes) != *digest {
            return Err(ClientError::Integrity { path: format!("{name}@{digest}"), what: "manifest", digest: *digest });
        }
        let placement = self.get_placement(name, digest).await?;
        let manifest = Manifest::decode(&bytes, &placement)?;
        Ok((manifest, bytes))
    }

    /// Where a version's chunks are stored now (garbage collection may move
    /// them; the manifest never changes).
    pub async fn get_placement(&self, name: &Name, digest: &Digest) -> Result<Placement, ClientError> {
        let url = self.url(&Self::dataset_path(name, &format!("manifests/{digest}/placement")));
        let resp = self.send(|| self.http.get(url.clone()).header(header::ACCEPT, PLACEMENT_TYPE)).await?;
        let bytes = read_bounded(resp, PLACEMENT_MAX_BYTES).await?;
        let placement = Placement::decode(&bytes)?;
        if placement.manifest != *digest {
            return Err(ClientError::Invalid(format!(
                "the hub sent the placement of {} for {name}@{digest}",
                placement.manifest
            )));
        }
        Ok(placement)
    }

    /// Runs garbage collection on the hub (admin on every dataset). Waits for
    /// it to finish, however long that takes.
    pub async fn gc(&self, req: &GcRequest) -> Result<GcReport, ClientError> {
        let url = self.url("v1/gc");
        // A collection of a large store takes long: no read timeout, and no
        // resend (a second run would wait for the first's lock).
        let resp =
            self.send_once(&|| self.http.post(url.clone()).json(req).timeout(Duration::from_secs(24 * 3600))).await?;
        Ok(resp.json().await?)
    }

    /// Tells the hub which versions of `name` this reader serves, and what
    /// its readers did with them.
    pub async fn put_lease(
        &self,
        name: &Name,
        reader: &str,
        versions: &[Digest],
        served: &[VersionServed],
    ) -> Result<Lease, ClientError> {
        let url = self.url(&Self::dataset_path(name, &format!("leases/{reader}")));
        let body = LeaseRequest { versions: versions.to_vec(), served: served.to_vec() };
        self.json(|| self.http.put(url.clone()).json(&body)).await
    }

    /// Every reader's lease on `name`.
    pub async fn list_leases(&self, name: &Name) -> Result<LeaseList, ClientError> {
        let url = self.url(&Self::dataset_path(name, "leases"));
        self.json(|| self.http.get(url.clone())).await
    }

    /// The manifest rendered as JSON by the hub.
    pub async fn get_manifest_json(&self, name: &Name, digest: &Digest) -> Result<serde_json::Value, ClientError> {
        let url = self.url(&Self::dataset_path(name, &format!("manifests/{digest}")));
        self.json(|| self.http.get(url.clone()).header(header::ACCEPT, "application/json")).await
    }

    pub async fn put_manifest(&self, name: &Name, bytes: Bytes) -> Result<ManifestStored, ClientError> {
        let digest = Digest::of(&bytes);
        let url = self.url(&Self::dataset_path(name, &format!("manifests/{digest}")));
        self.json(|| self.http.put(url.clone()).header(header::CONTENT_TYPE, MANIFEST_TYPE).body(bytes.clone())).await
    }

    /// Which of `digests` a push into `name` must upload, and where the others
    /// live (in packs this caller may read). Batched.
    pub async fn missing_chunks(&self, name: &Name, digests: &[Digest]) -> Result<MissingChunksResponse, ClientError> {
        let mut out = MissingChunksResponse { missing: Vec::new(), present: Vec::new() };
        for batch in digests.chunks(MISSING_QUERY_MAX) {
            let body = MissingChunksRequest { digests: batch.to_vec() };
            let url = self.url(&Self::dataset_path(name, "chunks/missing"));
            let r: MissingChunksResponse = self.json(|| self.http.post(url.clone()).json(&body)).await?;
            out.missing.extend(r.missing);
            out.present.extend(r.present);
        }
        Ok(out)
    }

    /// Uploads a pack named by the digest of its bytes into `name`.
    pub async fn put_pack(&self, name: &Name, digest: &Digest, bytes: Bytes) -> Result<PackStored, ClientError> {
        let url = self.url(&Self::dataset_path(name, &format!("packs/{digest}")));
        self.json(|| {
            self.http.request(Method::PUT, url.clone()).header(header::CONTENT_TYPE, PACK_TYPE).body(bytes.clone())
        })
        .await
    }

    /// Reads `len` bytes of a pack at `offset`, through dataset `name`, with
    /// one HTTP range request; when the hub redirects the read to its object
    /// store (`--redirect-reads`), from the store, with the same `Range`.
    pub async fn read_pack_range(
        &self,
        name: &Name,
        pack: &Digest,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, ClientError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let url = self.url(&Self::dataset_path(name, &format!("packs/{pack}")));
        let range = RangeSpec::FromTo(offset, offset + len - 1).to_string();
        let mut attempt = 0;
        loop {
            match self.read_range_once(&url, &range, pack, len).await {
                Err(e) if e.is_transient() && attempt < RETRIES => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "retrying a pack read");
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn read_range_once(&self, url: &Url, range: &str, pack: &Digest, len: u64) -> Result<Bytes, ClientError> {
        let first = self.send_once_with(&|| self.http.get(url.clone()).header(header::RANGE, range), true).await?;
        let (resp, from) = if first.status().is_redirection() {
            (self.follow_to_store(first, range, pack).await?, "the object store")
        } else {
            (first, "hub")
        };
        if resp.status() != StatusCode::PARTIAL_CONTENT {
            return Err(ClientError::Invalid(format!(
                "{from} answered a range request for pack {pack} with HTTP {}",
                resp.status()
            )));
        }
        let bytes = read_bounded(resp, len as usize).await?;
        if bytes.len() as u64 != len {
            return Err(ClientError::Invalid(format!(
                "{from} returned {} bytes of pack {pack} for a {len}-byte range",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// Follows the hub's redirect of a pack read (and the store's own, at
    /// most [`MAX_REDIRECTS`] in all) with the same `Range` and without the
    /// hub's credentials: a presigned URL carries its own authorization. Only
    /// http(s) targets are followed, and a URL seen twice is a loop.
    async fn follow_to_store(&self, first: Response, range: &str, pack: &Digest) -> Result<Response, ClientError> {
        let refuse = |why: String| ClientError::Redirect(format!("the read of pack {pack} was redirected {why}"));
        let mut resp = first;
        let mut seen: Vec<Url> = vec![resp.url().clone()];
        for _ in 0..MAX_REDIRECTS {
            let location = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| refuse(format!("(HTTP {}) without a usable Location", resp.status())))?;
            let target = resp.url().join(location).map_err(|e| refuse(format!("to an invalid URL: {e}")))?;
            if !matches!(target.scheme(), "http" | "https") {
                return Err(refuse(format!("to a {}: URL; only http(s) is followed", target.scheme())));
            }
            if seen.contains(&target) {
                return Err(refuse("in a loop".to_string()));
            }
            seen.push(target.clone());
            resp = match self.store_http.get(target).header(header::RANGE, range).send().await {
                Ok(r) => r,
                Err(e) => {
                    return Err(match tls::explain(&e, "the object store", &self.trust) {
                        Some(line) => ClientError::Tls(line),
                        None => ClientError::Http(e),
                    });
                }
            };
            if !resp.status().is_redirection() {
                return check_store(resp, pack).await;
            }
        }
        Err(refuse(format!("more than {MAX_REDIRECTS} times")))
    }

    /// Reads one chunk's stored bytes and returns its verified plaintext.
    pub async fn read_chunk(
        &self,
        name: &Name,
        digest: &Digest,
        len: u32,
        loc: &ChunkLocation,
    ) -> Result<Vec<u8>, ClientError> {
        let stored = self.read_pack_range(name, &loc.pack, loc.offset, loc.stored_len.into()).await?;
        Ok(aetherfs_format::pack::decode_chunk(&stored, len, loc.compression, digest)?)
    }
}

fn is_unauthorized(e: &ClientError) -> bool {
    matches!(e, ClientError::Api { status: 401, .. })
}

/// Turns an error status into [`ClientError::Api`] using the hub's JSON body.
async fn check(resp: Response) -> Result<Response, ClientError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = read_bounded(resp, 64 << 10).await.unwrap_or_default();
    Err(match serde_json::from_slice::<ErrorBody>(&text) {
        Ok(b) => ClientError::Api { status: status.as_u16(), code: b.error.code, message: b.error.message },
        Err(_) => ClientError::Api {
            status: status.as_u16(),
            code: "http_error".into(),
            message: format!("HTTP {status} from the hub"),
        },
    })
}

/// An object store's error answer to a redirected read (its body is XML
/// or JSON of the provider's own; only the status is kept).
async fn check_store(resp: Response, pack: &Digest) -> Result<Response, ClientError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    Err(ClientError::Api {
        status: status.as_u16(),
        code: "store_error".into(),
        message: format!("the object store answered HTTP {status} to a redirected read of pack {pack}"),
    })
}

/// Reads a response body, refusing more than `max` bytes.
async fn read_bounded(resp: Response, max: usize) -> Result<Bytes, ClientError> {
    if resp.content_length().is_some_and(|l| l > max as u64) {
        return Err(ClientError::Invalid(format!("hub response larger than {max} bytes")));
    }
    // Sized from Content-Length (bounded above): no regrowth copies.
    let expect = resp.content_length().map_or(0, |l| l as usize);
    let mut stream = resp.bytes_stream();
    let mut buf = bytes::BytesMut::with_capacity(expect);
    while let Some(part) = stream.next().await {
        let part = part?;
        if buf.len() + part.len() > max {
            return Err(ClientError::Invalid(format!("hub response larger than {max} bytes")));
        }
        buf.extend_from_slice(&part);
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;
    use futures::future::BoxFuture;

    use super::*;

    /// A hub that accepts only `Bearer good`, counting requests.
    async fn hub() -> (String, Arc<AtomicUsize>) {
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        let app = Router::new().route(
            "/v1/datasets",
            get(move |headers: HeaderMap| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let ok = headers.get(header::AUTHORIZATION).is_some_and(|h| h == "Bearer good");
                    if ok {
                        (StatusCode::OK, r#"{"datasets":[]}"#)
                    } else {
                        (StatusCode::UNAUTHORIZED, r#"{"error":{"code":"unauthorized","message":"bad token"}}"#)
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), seen)
    }

    /// Gives `tokens` in turn, moving on when told the current one was refused.
    struct Rotating {
        tokens: Vec<&'static str>,
        at: Mutex<usize>,
        invalidated: AtomicUsize,
    }

    impl Rotating {
        fn new(tokens: &[&'static str]) -> Arc<Self> {
            Arc::new(Self { tokens: tokens.to_vec(), at: Mutex::new(0), invalidated: AtomicUsize::new(0) })
        }
        fn current(&self) -> HeaderValue {
            let at = *self.at.lock().unwrap();
            crate::auth::bearer(self.tokens[at.min(self.tokens.len() - 1)]).unwrap()
        }
    }

    impl Credentials for Rotating {
        fn authorization(&self) -> BoxFuture<'_, Result<Option<HeaderValue>, ClientError>> {
            Box::pin(async { Ok(Some(self.current())) })
        }
        fn invalidate(&self, rejected: &HeaderValue) {
            self.invalidated.fetch_add(1, Ordering::SeqCst);
            if *rejected == self.current() {
                *self.at.lock().unwrap() += 1;
            }
        }
        fn describe(&self) -> String {
            "rotating test tokens".into()
        }
    }

    #[tokio::test]
    async fn a_401_refreshes_once_and_retries_once() {
        let (url, seen) = hub().await;

        // Stale, then good: one invalidation, one retry, success.
        let creds = Rotating::new(&["stale", "good"]);
        let client = HubClient::new(&url).unwrap().with_credentials(creds.clone());
        client.list_datasets().await.unwrap();
        assert_eq!((seen.load(Ordering::SeqCst), creds.invalidated.load(Ordering::SeqCst)), (2, 1));
        // The fresh token stays in use.
        client.list_datasets().await.unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 3);

        // Refused twice: the second 401 is the caller's, after one retry only.
        seen.store(0, Ordering::SeqCst);
        let creds = Rotating::new(&["bad", "worse", "good"]);
        let client = HubClient::new(&url).unwrap().with_credentials(creds.clone());
        let err = client.list_datasets().await.unwrap_err();
        assert!(matches!(err, ClientError::Api { status: 401, .. }), "{err}");
        assert_eq!(seen.load(Ordering::SeqCst), 2);

        // Nothing new to offer (a static token): no retry at all.
        seen.store(0, Ordering::SeqCst);
        let client =
            HubClient::new(&url).unwrap().with_credentials(Arc::new(crate::auth::StaticToken::new("bad").unwrap()));
        assert!(client.list_datasets().await.is_err());
        assert_eq!(seen.load(Ordering::SeqCst), 1);

        // No credentials: no header, no retry.
        seen.store(0, Ordering::SeqCst);
        assert!(HubClient::new(&url).unwrap().list_datasets().await.is_err());
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }

    /// A "store" that serves one object's ranges and records the
    /// Authorization header it was sent, and a "hub" that redirects pack
    /// reads to wherever `target` says.
    async fn redirecting_hub(
        target: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> (HubClient, Arc<Mutex<Vec<Option<String>>>>) {
        let object: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let store = Router::new().route(
            "/bucket/obj",
            get(move |headers: HeaderMap| {
                let object = object.clone();
                let log = log.clone();
                async move {
                    let auth = headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap().to_string());
                    log.lock().unwrap().push(auth);
                    let range = headers.get(header::RANGE).unwrap().to_str().unwrap();
                    let (a, b) = range.trim_start_matches("bytes=").split_once('-').unwrap();
                    let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
                    (StatusCode::PARTIAL_CONTENT, object[a..=b].to_vec())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let store_addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, store).await });
        let target = Arc::new(target);
        let hub = Router::new().fallback(move |uri: axum::http::Uri| {
            let target = target.clone();
            async move {
                let to = target(uri.path()).replace("STORE", &format!("http://{store_addr}"));
                (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to)])
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, hub).await });
        let client = HubClient::new(&format!("http://{addr}"))
            .unwrap()
            .with_credentials(Arc::new(crate::auth::StaticToken::new("secret").unwrap()));
        (client, seen)
    }

    #[tokio::test]
    async fn redirected_reads_go_to_the_store_with_the_range_and_without_credentials() {
        let name: Name = "acme/geoip".parse().unwrap();
        let pack = Digest::of(b"p");
        let (client, seen) = redirecting_hub(|_| "STORE/bucket/obj?X-Signature=abc".to_string()).await;
        let got = client.read_pack_range(&name, &pack, 300, 100).await.unwrap();
        let want: Vec<u8> = (0..=255u8).cycle().skip(300).take(100).collect();
        assert_eq!(&got[..], &want[..]);
        assert_eq!(*seen.lock().unwrap(), vec![None], "the hub's token must not reach the store");

        // Refused: another scheme, a loop, too many hops.
        let (client, _) = redirecting_hub(|_| "file:///etc/passwd".to_string()).await;
        let e = client.read_pack_range(&name, &pack, 0, 10).await.unwrap_err();
        assert!(matches!(&e, ClientError::Redirect(m) if m.contains("file:")), "{e}");
        let (client, _) = redirecting_hub(|p| p.to_string()).await;
        let e = client.read_pack_range(&name, &pack, 0, 10).await.unwrap_err();
        assert!(matches!(&e, ClientError::Redirect(m) if m.contains("loop")), "{e}");
        let (client, _) = redirecting_hub(|p| format!("{p}x")).await;
        let e = client.read_pack_range(&name, &pack, 0, 10).await.unwrap_err();
        assert!(matches!(&e, ClientError::Redirect(m) if m.contains("more than")), "{e}");
    }

    #[test]
    fn hub_keys_are_normalised() {
        assert_eq!(hub_key("http://127.0.0.1:7070").unwrap(), "http://127.0.0.1:7070/");
        assert_eq!(hub_key("HTTPS://Hub.Example.com:443/x").unwrap(), "https://hub.example.com/x/");
        assert!(hub_key("http://user:pw@hub/").is_err());
        assert!(hub_key("ftp://hub/").is_err());
    }
}
