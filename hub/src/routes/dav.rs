//! `/dav/…`: read-only WebDAV of every dataset the caller may read, by tag
//! and by digest (`/dav/<name…>/<tag>/…`, `/dav/<name…>/@<digest>/…`), with
//! the levels above browsable, so Finder, Explorer, rclone or davfs2 open
//! the hub itself, no agent needed. The tree is
//! [`aetherfs_mounts::catalog`]'s; this module says what exists (the
//! caller's readable datasets, their tags and versions) and reads chunks
//! from the store, verified, through a bounded memory cache.
//!
//! Authentication is the hub's (the route needs a caller who may read
//! something); each dataset is then checked against the caller's read
//! permission, so one the caller may not read is not listed and is 404.

use std::sync::Arc;

use aetherfs_format::pack::decode_chunk;
use aetherfs_format::{ChunkRef, Digest, Manifest, Name, Placement, Tag};
use aetherfs_mounts::catalog::{Catalog, CatalogFs};
use aetherfs_mounts::{ChunkSource, DatasetFs, SourceError, Version};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dav_server::fs::{FsError as DavError, FsResult};
use dav_server::{DavConfig, DavHandler, DavMethodSet};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::{GetOptions, GetRange, ObjectStore};

use super::datasets::{dataset_names, stored_versions};
use super::manifests::read_placement;
use crate::Hub;
use crate::auth::Caller;
use crate::storage;

/// Plaintext chunks kept in memory for WebDAV readers.
const CHUNK_CACHE_BYTES: u64 = 128 << 20;
/// Versions kept decoded, weighed by their nodes.
const VERSION_CACHE_NODES: u64 = 2_000_000;
/// Range requests to the store at once per read.
const READ_PARALLELISM: usize = 8;
/// Bytes dav-server asks a file for at a time while streaming a GET.
const READ_BUF: usize = 256 << 10;

/// What the WebDAV front end keeps between requests.
pub(crate) struct DavState {
    handler: DavHandler,
    source: Arc<StoreChunks>,
    versions: moka::future::Cache<(Name, Digest), Arc<DatasetFs>>,
}

impl DavState {
    pub(crate) fn new(store: Arc<dyn ObjectStore>) -> Self {
        let handler = DavHandler::builder()
            .methods(DavMethodSet::WEBDAV_RO)
            .autoindex(true)
            .read_buf_size(READ_BUF)
            .strip_prefix("/dav")
            .build_handler();
        let chunks = moka::future::Cache::builder()
            .max_capacity(CHUNK_CACHE_BYTES)
            .weigher(|_: &Digest, v: &Bytes| u32::try_from(v.len()).unwrap_or(u32::MAX))
            .build();
        let versions = moka::future::Cache::builder()
            .max_capacity(VERSION_CACHE_NODES)
            .weigher(|_: &(Name, Digest), fs: &Arc<DatasetFs>| u32::try_from(fs.current().len()).unwrap_or(u32::MAX))
            .build();
        Self { handler, source: Arc::new(StoreChunks { store, chunks }), versions }
    }
}

/// Largest request body (a PROPFIND's XML).
const BODY_MAX: usize = 64 << 10;

/// `/dav` and everything below it.
pub(crate) async fn serve(State(hub): State<Hub>, req: Request) -> Response {
    use axum::http::{Method, StatusCode, header};
    let read_only = matches!(req.method().as_str(), "GET" | "HEAD" | "OPTIONS" | "PROPFIND");
    if !read_only {
        return (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "GET, HEAD, OPTIONS, PROPFIND")], "read-only\n")
            .into_response();
    }
    // Bounded before dav-server reads it.
    let (parts, body) = req.into_parts();
    let body = if parts.method == Method::GET || parts.method == Method::HEAD {
        axum::body::Body::empty()
    } else {
        match axum::body::to_bytes(body, BODY_MAX).await {
            Ok(b) => axum::body::Body::from(b),
            Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response(),
        }
    };
    let req = Request::from_parts(parts, body);
    let caller = req.extensions().get::<Caller>().cloned();
    let catalog = Arc::new(HubCatalog { hub: hub.clone(), caller });
    let config = DavConfig::new().filesystem(CatalogFs::new(catalog));
    hub.inner.dav.handler.handle_with(config, req).await.into_response()
}

/// One version's tree and file reads (through the cache the WebDAV views
/// share), for the web page; the caller's permission is checked before.
pub(crate) async fn version_fs(hub: &Hub, name: &Name, digest: Digest) -> FsResult<Arc<DatasetFs>> {
    let cache = &hub.inner.dav.versions;
    if let Some(fs) = cache.get(&(name.clone(), digest)).await {
        return Ok(fs);
    }
    let fs = HubCatalog { hub: hub.clone(), caller: None }.open_version(name, digest).await?;
    cache.insert((name.clone(), digest), fs.clone()).await;
    Ok(fs)
}

/// The datasets one caller may read.
struct HubCatalog {
    hub: Hub,
    caller: Option<Caller>,
}

fn failed(what: &str, e: impl std::fmt::Debug) -> DavError {
    tracing::warn!(error = ?e, "WebDAV: {what} failed");
    DavError::GeneralFailure
}

impl HubCatalog {
    /// `name` if the caller may read it (the catalog only asks for names it listed).
    fn name(&self, name: &str) -> FsResult<Name> {
        let name: Name = name.parse().map_err(|_| DavError::NotFound)?;
        match &self.caller {
            Some(c) if !c.can(crate::auth::Permission::Read, name.as_str()) => Err(DavError::NotFound),
            _ => Ok(name),
        }
    }

    async fn digest_of(&self, name: &Name, reference: &str) -> FsResult<Digest> {
        if let Some(d) = reference.strip_prefix('@') {
            return d.parse().map_err(|_| DavError::NotFound);
        }
        let tag: Tag = reference.parse().map_err(|_| DavError::NotFound)?;
        let rec = self.hub.inner.tags.current(name, &tag).await.map_err(|e| failed("reading a tag", e))?;
        rec.and_then(|r| r.digest).ok_or(DavError::NotFound)
    }

    async fn open_version(&self, name: &Name, digest: Digest) -> FsResult<Arc<DatasetFs>> {
        let hub = &self.hub;
        let store = &hub.inner.store;
        let manifest = storage::get_bytes(&**store, &storage::manifest(name, &digest))
            .await
            .map_err(|e| failed("reading a manifest", e))?
            .ok_or(DavError::NotFound)?;
        let placement = read_placement(hub, name, &digest).await.map_err(|_| DavError::NotFound)?;
        let version = tokio::task::spawn_blocking(move || {
            let placement = Placement::decode(&placement).map_err(|e| failed("decoding a placement", e))?;
            let m = Manifest::decode(&manifest, &placement).map_err(|e| failed("decoding a manifest", e))?;
            Ok::<_, DavError>(Version::new(digest, &m))
        })
        .await
        .map_err(|e| failed("decoding a manifest", e))??;
        let source: Arc<dyn ChunkSource> = hub.inner.dav.source.clone();
        Ok(Arc::new(DatasetFs::new(version, source)))
    }
}

impl Catalog for HubCatalog {
    fn datasets(&self) -> BoxFuture<'_, FsResult<Vec<String>>> {
        async move {
            let names =
                dataset_names(&self.hub, self.caller.as_ref()).await.map_err(|e| failed("listing datasets", e))?;
            Ok(names.into_iter().map(|n| n.to_string()).collect())
        }
        .boxed()
    }

    fn references<'a>(&'a self, name: &'a str) -> BoxFuture<'a, FsResult<Vec<String>>> {
        async move {
            let name = self.name(name)?;
            let tags = self.hub.inner.tags.list(&name).await.map_err(|e| failed("listing tags", e))?;
            let mut refs: Vec<String> =
                tags.into_iter().filter(|t| t.digest.is_some()).map(|t| t.tag.to_string()).collect();
            let versions = stored_versions(&self.hub, &name).await.map_err(|e| failed("listing versions", e))?;
            refs.extend(versions.into_iter().map(|v| format!("@{}", v.digest)));
            Ok(refs)
        }
        .boxed()
    }

    fn forbidden<'a>(&'a self, names: &'a [&'a str]) -> BoxFuture<'a, bool> {
        async move {
            let Some(caller) = &self.caller else { return false };
            let Ok(all) = dataset_names(&self.hub, None).await else { return false };
            (1..=names.len()).any(|k| {
                let name = names[..k].join("/");
                !caller.can(crate::auth::Permission::Read, &name) && all.iter().any(|n| n.as_str() == name)
            })
        }
        .boxed()
    }

    fn version<'a>(&'a self, name: &'a str, reference: &'a str) -> BoxFuture<'a, FsResult<Arc<DatasetFs>>> {
        async move {
            let name = self.name(name)?;
            let digest = self.digest_of(&name, reference).await?;
            version_fs(&self.hub, &name, digest).await
        }
        .boxed()
    }
}

/// Chunks read from the store's packs, verified, kept in memory a while.
pub(crate) struct StoreChunks {
    store: Arc<dyn ObjectStore>,
    chunks: moka::future::Cache<Digest, Bytes>,
}

impl StoreChunks {
    /// Reads `run` (chunks lying back to back in one pack) with one range request.
    async fn fetch(&self, run: &[ChunkRef]) -> Result<Vec<Bytes>, SourceError> {
        let (Some(first), Some(last)) = (run.first(), run.last()) else { return Ok(Vec::new()) };
        let start = first.location.offset;
        let end = last.location.offset + u64::from(last.location.stored_len);
        let opts = GetOptions { range: Some(GetRange::Bounded(start..end)), ..Default::default() };
        let got =
            self.store.get_opts(&storage::pack(&first.location.pack), opts).await.map_err(SourceError::unavailable)?;
        let bytes = got.bytes().await.map_err(SourceError::unavailable)?;
        let mut out = Vec::with_capacity(run.len());
        for c in run {
            let at = usize::try_from(c.location.offset - start).map_err(|_| SourceError::Corrupt(c.digest))?;
            let stored = bytes.get(at..at + c.location.stored_len as usize).ok_or(SourceError::Corrupt(c.digest))?;
            let plain = decode_chunk(stored, c.len, c.location.compression, &c.digest)
                .map_err(|_| SourceError::Corrupt(c.digest))?;
            let plain = Bytes::from(plain);
            self.chunks.insert(c.digest, plain.clone()).await;
            out.push(plain);
        }
        Ok(out)
    }
}

/// Splits chunks into runs that one range request reads.
fn runs(want: &[ChunkRef]) -> Vec<&[ChunkRef]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=want.len() {
        let breaks = i == want.len() || {
            let (a, b) = (&want[i - 1].location, &want[i].location);
            a.pack != b.pack || a.offset + u64::from(a.stored_len) != b.offset
        };
        if breaks {
            out.push(&want[start..i]);
            start = i;
        }
    }
    out
}

impl ChunkSource for StoreChunks {
    fn read<'a>(
        &'a self,
        want: &'a [ChunkRef],
        _ahead: &'a [ChunkRef],
    ) -> BoxFuture<'a, Result<Vec<Bytes>, SourceError>> {
        async move {
            let mut cached = Vec::with_capacity(want.len());
            for c in want {
                cached.push(self.chunks.get(&c.digest).await);
            }
            if cached.iter().all(Option::is_some) {
                return Ok(cached.into_iter().flatten().collect());
            }
            let fetches: Vec<_> = runs(want).into_iter().map(|r| self.fetch(r)).collect();
            let parts: Vec<Vec<Bytes>> =
                futures::stream::iter(fetches).buffered(READ_PARALLELISM).try_collect().await?;
            Ok(parts.into_iter().flatten().collect())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use aetherfs_format::{ChunkLocation, Compression};

    use super::*;

    fn at(pack: &[u8], offset: u64, len: u32) -> ChunkRef {
        let location =
            ChunkLocation { pack: Digest::of(pack), offset, stored_len: len, compression: Compression::None };
        ChunkRef { digest: Digest::of(&offset.to_le_bytes()), len, location }
    }

    #[test]
    fn back_to_back_chunks_of_one_pack_are_one_range() {
        let want = [at(b"p", 0, 10), at(b"p", 10, 5), at(b"q", 15, 5), at(b"q", 30, 1), at(b"q", 31, 1)];
        let lens: Vec<usize> = runs(&want).iter().map(|r| r.len()).collect();
        assert_eq!(lens, [2, 1, 2]);
        assert!(runs(&[]).is_empty());
    }
}
