//! A typed client of the hub's REST API.

use std::time::Duration;

use aetherfs_format::api::{
    DatasetList, ErrorBody, Expected, MISSING_QUERY_MAX, ManifestStored, MissingChunksRequest, MissingChunksResponse,
    PackStored, SetTagRequest, TagHistory, TagList, TagRecord,
};
use aetherfs_format::manifest::MANIFEST_MAX_BYTES;
use aetherfs_format::{ChunkLocation, Digest, Manifest, Name, Reference, Tag};
use bytes::Bytes;
use futures::StreamExt;
use reqwest::{Method, RequestBuilder, Response, StatusCode, header};
use url::Url;

use crate::error::ClientError;

const MANIFEST_TYPE: &str = "application/vnd.aetherfs.manifest.v1";
const PACK_TYPE: &str = "application/vnd.aetherfs.pack.v1";
const RETRIES: u32 = 4;

/// A cheap-to-clone handle on one hub.
#[derive(Clone, Debug)]
pub struct HubClient {
    base: Url,
    http: reqwest::Client,
}

impl HubClient {
    /// `base` is the hub's root URL, e.g. `http://127.0.0.1:7070`.
    pub fn new(base: &str) -> Result<Self, ClientError> {
        let invalid = |why: &str| ClientError::InvalidUrl { url: base.to_string(), why: why.to_string() };
        let mut url = Url::parse(base).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("use http:// or https://"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("no query or fragment allowed"));
        }
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("aetherfs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| invalid(&e.to_string()))?;
        Ok(Self { base: url, http })
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
            let result = match build().send().await {
                Ok(resp) => check(resp).await,
                Err(e) if e.is_connect() => Err(ClientError::Unreachable { url: self.base.to_string(), source: e }),
                Err(e) => Err(ClientError::Http(e)),
            };
            match result {
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
        let resp = self.http.put(url).json(&body).send().await.map_err(|e| self.connect_error(e))?;
        Ok(check(resp).await?.json().await?)
    }

    pub async fn delete_tag(&self, name: &Name, tag: &Tag, expected: Option<Digest>) -> Result<TagRecord, ClientError> {
        let url = self.url(&Self::dataset_path(name, &format!("tags/{tag}")));
        let mut req = self.http.delete(url);
        if let Some(d) = expected {
            req = req.query(&[("expected", d.to_string())]);
        }
        let resp = req.send().await.map_err(|e| self.connect_error(e))?;
        Ok(check(resp).await?.json().await?)
    }

    pub async fn tag_history(&self, name: &Name, tag: &Tag) -> Result<TagHistory, ClientError> {
        let url = self.url(&Self::dataset_path(name, &format!("tags/{tag}/history")));
        self.json(|| self.http.get(url.clone())).await
    }

    fn connect_error(&self, e: reqwest::Error) -> ClientError {
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

    /// Fetches a manifest and verifies it against its digest before parsing.
    pub async fn get_manifest(&self, name: &Name, digest: &Digest) -> Result<(Manifest, Bytes), ClientError> {
        let url = self.url(&Self::dataset_path(name, &format!("manifests/{digest}")));
        let resp = self.send(|| self.http.get(url.clone()).header(header::ACCEPT, MANIFEST_TYPE)).await?;
        let bytes = read_bounded(resp, MANIFEST_MAX_BYTES).await?;
        if Digest::of(&bytes) != *digest {
            return Err(ClientError::Integrity { path: format!("{name}@{digest}"), what: "manifest", digest: *digest });
        }
        let manifest = Manifest::decode(&bytes)?;
        Ok((manifest, bytes))
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

    /// Which of `digests` the hub lacks, and where the others live. Batched.
    pub async fn missing_chunks(&self, digests: &[Digest]) -> Result<MissingChunksResponse, ClientError> {
        let mut out = MissingChunksResponse { missing: Vec::new(), present: Vec::new() };
        for batch in digests.chunks(MISSING_QUERY_MAX) {
            let body = MissingChunksRequest { digests: batch.to_vec() };
            let url = self.url("v1/chunks/missing");
            let r: MissingChunksResponse = self.json(|| self.http.post(url.clone()).json(&body)).await?;
            out.missing.extend(r.missing);
            out.present.extend(r.present);
        }
        Ok(out)
    }

    /// Uploads a pack named by the digest of its bytes.
    pub async fn put_pack(&self, digest: &Digest, bytes: Bytes) -> Result<PackStored, ClientError> {
        let url = self.url(&format!("v1/packs/{digest}"));
        self.json(|| {
            self.http.request(Method::PUT, url.clone()).header(header::CONTENT_TYPE, PACK_TYPE).body(bytes.clone())
        })
        .await
    }

    /// Reads `len` bytes of a pack at `offset` with one HTTP range request.
    pub async fn read_pack_range(&self, pack: &Digest, offset: u64, len: u64) -> Result<Bytes, ClientError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let url = self.url(&format!("v1/packs/{pack}"));
        let range = format!("bytes={}-{}", offset, offset + len - 1);
        let resp = self.send(|| self.http.get(url.clone()).header(header::RANGE, range.clone())).await?;
        if resp.status() != StatusCode::PARTIAL_CONTENT {
            return Err(ClientError::Invalid(format!(
                "hub answered a range request for pack {pack} with HTTP {}",
                resp.status()
            )));
        }
        let bytes = read_bounded(resp, len as usize).await?;
        if bytes.len() as u64 != len {
            return Err(ClientError::Invalid(format!(
                "hub returned {} bytes of pack {pack} for a {len}-byte range",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// Reads one chunk's stored bytes and returns its verified plaintext.
    pub async fn read_chunk(&self, digest: &Digest, len: u32, loc: &ChunkLocation) -> Result<Vec<u8>, ClientError> {
        let stored = self.read_pack_range(&loc.pack, loc.offset, loc.stored_len.into()).await?;
        Ok(aetherfs_format::pack::decode_chunk(&stored, len, loc.compression, digest)?)
    }
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

/// Reads a response body, refusing more than `max` bytes.
async fn read_bounded(resp: Response, max: usize) -> Result<Bytes, ClientError> {
    if resp.content_length().is_some_and(|l| l > max as u64) {
        return Err(ClientError::Invalid(format!("hub response larger than {max} bytes")));
    }
    let mut stream = resp.bytes_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(part) = stream.next().await {
        let part = part?;
        if buf.len() + part.len() > max {
            return Err(ClientError::Invalid(format!("hub response larger than {max} bytes")));
        }
        buf.extend_from_slice(&part);
    }
    Ok(buf.freeze())
}
