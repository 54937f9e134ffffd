//! `GET|HEAD|PUT /v1/datasets/{name}/manifests/{digest}` and
//! `GET …/manifests/{digest}/placement`.
//!
//! A client publishes only what a version is (its manifest); the hub places
//! it. Publishing checks, in order, before anything is stored: the size bound
//! (while reading), the digest of the exact bytes, a full decode (paths,
//! sizes, order, conflicts); then it finds every chunk in a pack this dataset
//! may read (or one the caller may read through another dataset: the
//! placement then lets this dataset read it too), and refuses with
//! `missing_chunks` whatever it cannot find, so the client uploads it.
//! Against garbage collection it then runs its half of the handshake
//! described in gc.rs: it stores the placement (a publish in flight until
//! its manifest exists), and only if none of the packs it chose is condemned
//! or gone does it store the manifest. A published version can therefore
//! always be read back completely. Two writes: placement and manifest.

use std::collections::HashSet;

use aetherfs_format::api::ManifestStored;
use aetherfs_format::{Digest, Manifest, Name, Placement};
use axum::Json;
use axum::extract::Request;
use axum::http::header::{self, HeaderValue};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};

use super::{blocking, json_stream, read_body};
use crate::Hub;
use crate::auth::{Caller, Permission};
use crate::error::{AppError, StorageContext};
use crate::gc;
use crate::storage::{self, get_bytes};

pub(crate) const MANIFEST_CONTENT_TYPE: &str = "application/vnd.aetherfs.manifest.v1";
pub(crate) const PLACEMENT_CONTENT_TYPE: &str = "application/vnd.aetherfs.placement.v1";
/// Packs looked up at once while checking a publish.
const CHECK_PARALLELISM: usize = 16;
/// Missing chunks named in a refusal message.
const MISSING_SHOWN: usize = 10;

pub(crate) fn manifest_not_found(name: &Name, digest: &Digest) -> AppError {
    AppError::not_found("manifest_not_found", format!("manifest {digest} is not stored in dataset {name}"))
}

fn etag(digest: &Digest) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{digest}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("application/json"))
}

fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == "*" || t.trim().as_bytes() == etag.as_bytes()))
}

/// The manifest's exact bytes, or its JSON rendering with `Accept: application/json`.
pub(crate) async fn get(hub: &Hub, name: Name, digest: Digest, req: Request) -> Result<Response, AppError> {
    let key = storage::manifest(&name, &digest);
    let tag = etag(&digest);
    let json = wants_json(req.headers());
    // `offset`/`limit` page the JSON view; bad values are refused in every view.
    let page = Page::of(req.uri())?;
    // Manifests are immutable: the digest is a perfect validator.
    let cache = [
        (header::ETAG, tag.clone()),
        (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
        (header::VARY, HeaderValue::from_static("accept")),
    ];
    if not_modified(req.headers(), &tag) {
        hub.inner.store.head(&key).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => manifest_not_found(&name, &digest),
            e => AppError::storage("looking up a manifest", e),
        })?;
        return Ok((StatusCode::NOT_MODIFIED, cache).into_response());
    }
    if req.method() == Method::HEAD && !json {
        let meta = hub.inner.store.head(&key).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => manifest_not_found(&name, &digest),
            e => AppError::storage("looking up a manifest", e),
        })?;
        let mut res =
            (cache, [(header::CONTENT_TYPE, HeaderValue::from_static(MANIFEST_CONTENT_TYPE))]).into_response();
        res.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
        return Ok(res);
    }
    let bytes = get_bytes(&*hub.inner.store, &key)
        .await
        .ctx("reading a manifest")?
        .ok_or_else(|| manifest_not_found(&name, &digest))?;
    if json {
        // Each view holds a whole decoded manifest until its last byte is
        // sent: a few at a time bound the memory.
        let permit = hub
            .inner
            .json_views
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| AppError::internal("waiting to render", e))?;
        let placement = read_placement(hub, &name, &digest).await?;
        let m = blocking("decoding a manifest", move || {
            let placement =
                Placement::decode(&placement).map_err(|e| AppError::internal("decoding a stored placement", e))?;
            Manifest::decode(&bytes, &placement).map_err(|e| AppError::internal("decoding a stored manifest", e))
        })
        .await?;
        // One page holds at most `PAGE_MAX` entries, but one file may list
        // millions of chunks: the page is serialized straight into the
        // response, a piece at a time, never whole in memory.
        let body = json_stream::body(move |out| {
            let _permit = permit;
            let total = m.entries.len();
            let end = page.offset.saturating_add(page.limit).min(total);
            let view = PageView {
                head: m.to_json(&digest, false),
                entries: m.entries.get(page.offset.min(total)..end).unwrap_or_default(),
                total_entries: total,
                offset: page.offset,
                next_offset: (end < total).then_some(end),
            };
            serde_json::to_writer(out, &view).map_err(std::io::Error::from)
        });
        let json_type = [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
        return Ok((cache, json_type, body).into_response());
    }
    Ok((cache, [(header::CONTENT_TYPE, HeaderValue::from_static(MANIFEST_CONTENT_TYPE))], bytes).into_response())
}

pub(crate) async fn read_placement(hub: &Hub, name: &Name, digest: &Digest) -> Result<bytes::Bytes, AppError> {
    get_bytes(&*hub.inner.store, &storage::placement(name, digest))
        .await
        .ctx("reading a placement")?
        .ok_or_else(|| manifest_not_found(name, digest))
}

/// `GET …/manifests/{digest}/placement`: where the version's chunks are.
/// Unlike the manifest it may change (garbage collection moves chunks), so
/// it is served for revalidation, with the digest of its bytes as ETag.
pub(crate) async fn get_placement(hub: &Hub, name: Name, digest: Digest, req: Request) -> Result<Response, AppError> {
    let bytes = read_placement(hub, &name, &digest).await?;
    let tag = etag(&Digest::of(&bytes));
    let headers = [
        (header::ETAG, tag.clone()),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::CONTENT_TYPE, HeaderValue::from_static(PLACEMENT_CONTENT_TYPE)),
    ];
    if not_modified(req.headers(), &tag) {
        return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    Ok((headers, bytes).into_response())
}

/// One page of the JSON view: the manifest's header fields, then entries.
#[derive(serde::Serialize)]
struct PageView<'a> {
    #[serde(flatten)]
    head: serde_json::Value,
    entries: &'a [aetherfs_format::Entry],
    total_entries: usize,
    offset: usize,
    next_offset: Option<usize>,
}

/// Entries per page of the JSON view, unless asked for fewer.
const PAGE_DEFAULT: usize = 1000;
/// Most entries one page of the JSON view holds.
const PAGE_MAX: usize = 10_000;

/// `?offset=N&limit=M` of the JSON view.
struct Page {
    offset: usize,
    limit: usize,
}

impl Page {
    fn of(uri: &axum::http::Uri) -> Result<Page, AppError> {
        let q = super::query(uri)?;
        let num = |k: &str, default: usize| -> Result<usize, AppError> {
            q.get(k).map_or(Ok(default), |v| {
                v.parse()
                    .map_err(|_| AppError::bad_request("invalid_query", format!("{k}={v:?}: expected a whole number")))
            })
        };
        let limit = num("limit", PAGE_DEFAULT)?;
        if limit == 0 {
            return Err(AppError::bad_request("invalid_query", "limit=0: a page holds at least one entry"));
        }
        Ok(Page { offset: num("offset", 0)?, limit: limit.min(PAGE_MAX) })
    }
}

/// Publishes a manifest; see the module docs for the checks.
pub(crate) async fn put(hub: &Hub, name: Name, digest: Digest, req: Request) -> Result<Response, AppError> {
    let caller = req.extensions().get::<Caller>().cloned();
    // Bodies held at once are bounded with the pack uploads'.
    let _permit = hub.inner.uploads.acquire().await.map_err(|e| AppError::internal("waiting to upload", e))?;
    let (parts, body) = req.into_parts();
    let body =
        read_body(body, &parts.headers, hub.inner.opts.max_manifest_bytes, hub.inner.opts.body_stall, "manifest")
            .await?;
    let stored = publish(hub, name, digest, body, caller).await?;
    let status = if stored.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(stored)).into_response())
}

/// Checks and publishes a manifest's bytes (REST and gRPC; the caller holds
/// an upload slot).
pub(crate) async fn publish(
    hub: &Hub,
    name: Name,
    digest: Digest,
    body: bytes::Bytes,
    caller: Option<Caller>,
) -> Result<ManifestStored, AppError> {
    if body.len() > hub.inner.opts.max_manifest_bytes {
        return Err(AppError::too_large(format!("manifest larger than {} bytes", hub.inner.opts.max_manifest_bytes)));
    }
    let (unplaced, body) = blocking("checking a manifest", move || {
        let actual = Digest::of(&body);
        if actual != digest {
            return Err(AppError::bad_request(
                "digest_mismatch",
                format!("the body's digest is {actual}, the URL says {digest}"),
            ));
        }
        let u =
            Manifest::decode_unplaced(&body).map_err(|e| AppError::bad_request("invalid_manifest", e.to_string()))?;
        Ok((u, body))
    })
    .await?;
    let stats = unplaced.stats;

    let key = storage::manifest(&name, &digest);
    match hub.inner.store.head(&key).await {
        Ok(_) => {
            return Ok(ManifestStored { name, digest, stats, created: false });
        }
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(AppError::storage("looking up a manifest", e)),
    }

    // Only packs this dataset may read count; one the caller may read through
    // another dataset is linked here (a cross-dataset mount). Any other pack is,
    // to this caller, not there, whether or not it exists.
    let can_read = |n: &Name| *n == name || caller.as_ref().is_none_or(|c| c.can(Permission::Read, n.as_str()));
    let (placed, missing) = hub.inner.chunks.place(&name, &unplaced.chunks, &can_read).await?;
    if !missing.is_empty() {
        let digests: Vec<Digest> = missing.iter().map(|m| m.0).collect();
        return Err(missing_chunks(&digests, "are not stored in a pack this dataset may read; upload them first"));
    }
    let placement = Placement::new(digest, placed);
    let packs = placement.packs();
    // The placement is what lets `name` read these packs from now on
    // (routes/packs.rs): no link object per pack.
    for pack in &packs {
        hub.inner.chunks.add_link(*pack, name.clone());
    }

    // The publish's half of the handshake with garbage collection (gc.rs):
    // announce (the placement, stored before its manifest, is a publish in
    // flight), then look for condemned or vanished packs.
    let encoded = bytes::Bytes::from(placement.encode());
    if encoded.len() > aetherfs_format::placement::PLACEMENT_MAX_BYTES {
        return Err(AppError::too_large("this version has too many chunks for one placement"));
    }
    let placement_key = storage::placement(&name, &digest);
    let store = &hub.inner.store;
    store.put(&placement_key, PutPayload::from(encoded)).await.ctx("storing a placement")?;
    let gone = match unusable_packs(hub, &packs).await {
        Ok(g) => g,
        Err(e) => {
            let _ = store.delete(&placement_key).await;
            return Err(e);
        }
    };
    if !gone.is_empty() {
        // Without its manifest the placement is no version: gone with it.
        let _ = store.delete(&placement_key).await;
        let lost: Vec<Digest> =
            placement.chunks().iter().filter(|c| gone.contains(&c.location.pack)).map(|c| c.digest).collect();
        tracing::info!(%name, %digest, packs = gone.len(), chunks = lost.len(), "publish refused: packs were collected");
        return Err(missing_chunks(
            &lost,
            "were in packs garbage collection has just removed; upload them again (the client does this itself)",
        ));
    }
    // A crash before this leaves a placement without a manifest: invisible,
    // and garbage collection stops counting it after an hour.
    store.put(&key, PutPayload::from(body)).await.ctx("storing a manifest")?;
    hub.inner.metrics.manifests_published.inc();
    tracing::info!(%name, %digest, files = stats.files, bytes = stats.bytes, "manifest published");
    Ok(ManifestStored { name, digest, stats, created: true })
}

fn missing_chunks(missing: &[Digest], why: &str) -> AppError {
    let shown: Vec<String> = missing.iter().take(MISSING_SHOWN).map(|d| d.to_string()).collect();
    let more = missing.len().saturating_sub(MISSING_SHOWN);
    let tail = if more > 0 { format!(" and {more} more") } else { String::new() };
    AppError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "missing_chunks",
        format!("{} chunk(s) {why}: {}{tail}", missing.len(), shown.join(", ")),
    )
}

/// Which of `packs` a publish may not use: condemned by garbage collection,
/// or no longer stored. Both are forgotten by the chunk index, so the
/// client's next missing-chunks query reports their chunks missing.
async fn unusable_packs(hub: &Hub, packs: &std::collections::BTreeSet<Digest>) -> Result<HashSet<Digest>, AppError> {
    let condemned = gc::condemned_packs(&*hub.inner.store).await?;
    let mut gone: HashSet<Digest> = packs.iter().filter(|p| condemned.contains(p)).copied().collect();
    hub.inner.chunks.set_condemned(condemned);
    let store = &hub.inner.store;
    let to_check: Vec<Digest> = packs.iter().filter(|p| !gone.contains(p)).copied().collect();
    let mut heads = futures::stream::iter(to_check)
        .map(|p| async move {
            match store.head(&storage::pack(&p)).await {
                Ok(_) => Ok(None),
                Err(object_store::Error::NotFound { .. }) => Ok(Some(p)),
                Err(e) => Err(AppError::storage("looking up a pack", e)),
            }
        })
        .buffer_unordered(CHECK_PARALLELISM);
    let mut vanished = HashSet::new();
    while let Some(r) = heads.next().await {
        if let Some(p) = r? {
            vanished.insert(p);
        }
    }
    hub.inner.chunks.forget_packs(&vanished);
    gone.extend(vanished);
    Ok(gone)
}
