//! `PUT|GET|HEAD /v1/datasets/{name}/packs/{digest}`.
//!
//! Packs are stored once (`packs/<hex>.pack`) whatever dataset uploads them,
//! but read through a dataset: a dataset may read a pack it uploaded (the
//! pack's record names it), one a placement of its versions uses, or one
//! linked to it (`packs/<hex>.links/<name>`: a second dataset uploading a
//! stored pack). A pack the dataset may not read answers exactly as one that
//! does not exist.
//!
//! An upload is bounded while it is read, hashed, and verified chunk by chunk
//! (off the async workers) before a byte is stored. The pack is written
//! first and its record (its index and uploader, in the pack log) second, so
//! a record always names a complete pack: two writes per new pack. Reads
//! support one byte range (what the agent's fetcher sends) and stream the
//! bytes from the store.

use std::ops::Range;

use aetherfs_format::Name;
use aetherfs_format::api::PackStored;
use aetherfs_format::pack::verify_pack;
use aetherfs_format::{Digest, FormatError};
use aetherfs_util::range::parse_range;
use axum::Json;
use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{self, HeaderValue};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use object_store::{GetOptions, GetRange, GetResult, ObjectStoreExt, PutPayload};

use super::{blocking, read_body};
use crate::Hub;
use crate::chunk_index::log::{PackRecord, commit};
use crate::error::AppError;
use crate::storage;

fn parse_digest(s: &str) -> Result<Digest, AppError> {
    s.parse().map_err(|e: FormatError| AppError::bad_request("invalid_digest", e.to_string()))
}

fn pack_not_found(d: &Digest) -> AppError {
    AppError::not_found("pack_not_found", format!("pack {d} is not stored"))
}

/// Makes `pack` readable through `name` (idempotent).
pub(crate) async fn link(hub: &Hub, pack: Digest, name: &Name) -> Result<(), AppError> {
    if hub.inner.chunks.is_linked(&pack, name) {
        return Ok(());
    }
    hub.inner
        .store
        .put(&storage::pack_link(&pack, name), PutPayload::default())
        .await
        .map_err(|e| AppError::storage("linking a pack", e))?;
    hub.inner.chunks.add_link(pack, name.clone());
    Ok(())
}

/// Whether `name` may read `pack` (see the module docs); asks the store
/// when this replica does not know.
pub(crate) async fn is_linked(hub: &Hub, pack: &Digest, name: &Name) -> Result<bool, AppError> {
    hub.inner.chunks.may_read(pack, name).await
}

/// `PUT …/packs/{digest}`: stores the pack (once) and links it to `name`.
pub(crate) async fn put(hub: &Hub, name: Name, digest: &str, req: Request) -> Result<Response, AppError> {
    let digest = parse_digest(digest)?;
    // Each upload holds up to max_pack_bytes in memory: bound how many run at once.
    let _permit = hub.inner.uploads.acquire().await.map_err(|e| AppError::internal("waiting to upload", e))?;
    let (parts, body) = req.into_parts();
    let body =
        read_body(body, &parts.headers, hub.inner.opts.max_pack_bytes, hub.inner.opts.body_stall, "pack").await?;
    let stored = store_pack(hub, name, digest, body).await?;
    let status = if stored.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(stored)).into_response())
}

/// Verifies and stores a pack, and links it to `name` (REST and gRPC; the
/// caller holds an upload slot).
pub(crate) async fn store_pack(
    hub: &Hub,
    name: Name,
    digest: Digest,
    body: bytes::Bytes,
) -> Result<PackStored, AppError> {
    if body.len() > hub.inner.opts.max_pack_bytes {
        return Err(AppError::too_large(format!("pack larger than {} bytes", hub.inner.opts.max_pack_bytes)));
    }
    let (index_range, entries, body) = blocking("verifying a pack", move || {
        let actual = Digest::of(&body);
        if actual != digest {
            return Err(AppError::bad_request(
                "digest_mismatch",
                format!("the body's digest is {actual}, the URL says {digest}"),
            ));
        }
        match verify_pack(&body) {
            Ok((range, entries)) => Ok((range, entries, body)),
            Err(e @ (FormatError::TooLarge { .. } | FormatError::TooManyChunks { .. })) => {
                Err(AppError::too_large(e.to_string()))
            }
            Err(e) => Err(AppError::bad_request("invalid_pack", format!("invalid pack: {e}"))),
        }
    })
    .await?;
    let size = body.len() as u64;
    let stored = |created| PackStored { pack: digest, chunks: entries.len() as u32, bytes: size, created };

    if hub.inner.chunks.has_pack(&digest) {
        hub.inner.chunks.add_pack(digest, size, &entries);
        // The uploader sent every byte: it may read the pack from now on.
        link(hub, digest, &name).await?;
        return Ok(stored(false));
    }

    // Stored by a replica that did not tell this one, or by an upload that
    // died before its record: the bytes stay, the record is written.
    let store = &hub.inner.store;
    let bytes_there = match store.head(&storage::pack(&digest)).await {
        Ok(meta) => meta.size == size,
        Err(object_store::Error::NotFound { .. }) => false,
        Err(e) => return Err(AppError::storage("looking up a pack", e)),
    };
    let index = body.slice(index_range);
    if !bytes_there {
        store
            .put(&storage::pack(&digest), PutPayload::from(body))
            .await
            .map_err(|e| AppError::storage("storing a pack", e))?;
    }
    // Only now that the pack is complete does its record make it visible.
    let record = PackRecord { uploader: Some(name.clone()), index };
    commit(&**store, &digest, &record).await.map_err(|e| AppError::storage("recording a pack", e))?;
    hub.inner.chunks.add_pack(digest, size, &entries);
    hub.inner.chunks.add_link(digest, name);
    if bytes_there {
        return Ok(stored(false));
    }
    let m = &hub.inner.metrics;
    m.packs_stored.inc();
    m.pack_bytes_received.inc_by(size);
    tracing::info!(pack = %digest, chunks = entries.len(), bytes = size, "pack stored");
    Ok(stored(true))
}

/// Largest read answered from one buffer rather than streamed.
const BUFFERED_READ_MAX: u64 = 32 << 20;

/// `GET|HEAD …/packs/{digest}`, whole or one `Range`, if linked to `name`.
pub(crate) async fn get(hub: &Hub, name: Name, digest: &str, req: Request) -> Result<Response, AppError> {
    let digest = parse_digest(digest)?;
    if !is_linked(hub, &digest, &name).await? {
        return Err(pack_not_found(&digest));
    }
    if let (&Method::GET, Some(expiry), Some(presigner)) =
        (req.method(), hub.inner.opts.redirect_reads, &hub.inner.presigner)
    {
        return redirect(hub, &digest, presigner, expiry).await;
    }
    read_pack(hub, digest, req.method(), req.headers()).await
}

/// `307` to a presigned URL of the pack (`--redirect-reads`): the reader
/// sends its `Range` to the store, and the bytes never cross the hub. The
/// access check is done; the URL grants only this pack, only for `expiry`.
async fn redirect(
    hub: &Hub,
    digest: &Digest,
    presigner: &storage::Presigner,
    expiry: std::time::Duration,
) -> Result<Response, AppError> {
    // A pack garbage collection removed answers as always (readers refetch
    // the placement on `pack_not_found`), not with a URL the store refuses.
    if hub.inner.chunks.pack_size(digest).is_none() {
        stored_size(hub, digest).await?;
    }
    let url = presigner
        .get_url(&storage::pack(digest), expiry)
        .await
        .map_err(|e| AppError::storage("presigning a pack read", e))?;
    let location = HeaderValue::from_str(url.as_str()).map_err(|e| AppError::internal("presigning a pack read", e))?;
    hub.inner.metrics.pack_reads_redirected.inc();
    let mut headers = HeaderMap::new();
    headers.insert(header::LOCATION, location);
    // The URL expires: no cache may keep this answer.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok((StatusCode::TEMPORARY_REDIRECT, headers).into_response())
}

async fn read_pack(hub: &Hub, digest: Digest, method: &Method, headers: &HeaderMap) -> Result<Response, AppError> {
    let head = method == Method::HEAD;
    let range_header = headers.get(header::RANGE).map(|v| v.to_str().unwrap_or("invalid"));
    let spec = match range_header {
        Some(h) => parse_range(h).map_err(|e| bad_range(&e.to_string()))?,
        None => None,
    };

    // HEAD and ranged reads need the size first; the chunk index usually knows it.
    let known = if head { None } else { hub.inner.chunks.pack_size(&digest) };
    let size = match (known, head || spec.is_some()) {
        (Some(s), _) => Some(s),
        (None, true) => Some(stored_size(hub, &digest).await?),
        (None, false) => None,
    };
    let range = match (spec, size) {
        (Some(spec), Some(size)) => Some(spec.resolve(size).ok_or_else(|| unsatisfiable(size))?),
        _ => None,
    };

    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    if let Ok(tag) = HeaderValue::from_str(&format!("\"{digest}\"")) {
        headers.insert(header::ETAG, tag);
    }
    let status = if range.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
    if let (Some(r), Some(size)) = (&range, size)
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{size}", r.start, r.end - 1))
    {
        headers.insert(header::CONTENT_RANGE, v);
    }

    if head {
        let len = range.as_ref().map_or(size.unwrap_or(0), |r| r.end - r.start);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        return Ok((status, headers, Body::empty()).into_response());
    }

    let served = hub.inner.metrics.pack_bytes_served.clone();
    if let (Some(r), Some(size)) = (&range, size)
        && let Some(bytes) = from_blocks(hub, &digest, size, r).await?
    {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len() as u64));
        served.inc_by(bytes.len() as u64);
        return Ok((status, headers, Body::from(bytes)).into_response());
    }
    let result = open(hub, &digest, range).await?;
    let len = result.range.end - result.range.start;
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    // Ranges (at most a few MiB each) are read in one piece: streaming a local
    // file in small pieces costs more in thread hand-offs than in reading.
    if len <= BUFFERED_READ_MAX {
        let bytes = result.bytes().await.map_err(|e| AppError::storage("reading a pack", e))?;
        served.inc_by(bytes.len() as u64);
        return Ok((status, headers, Body::from(bytes)).into_response());
    }
    let stream = result
        .into_stream()
        .inspect_ok(move |b| {
            served.inc_by(b.len() as u64);
        })
        .inspect_err(move |e| tracing::error!(pack = %digest, error = %e, "pack stream failed"));
    Ok((status, headers, Body::from_stream(stream)).into_response())
}

/// `range` from the pack blocks held for readers, when they serve it.
async fn from_blocks(
    hub: &Hub,
    digest: &Digest,
    size: u64,
    range: &Range<u64>,
) -> Result<Option<bytes::Bytes>, AppError> {
    let Some(blocks) = &hub.inner.blocks else { return Ok(None) };
    match blocks.read(digest, size, range).await {
        Ok(b) => Ok(b),
        Err(object_store::Error::NotFound { .. }) => Err(pack_not_found(digest)),
        Err(e) => Err(AppError::storage("reading a pack", e)),
    }
}

/// A stored pack's size, from the store.
async fn stored_size(hub: &Hub, digest: &Digest) -> Result<u64, AppError> {
    match hub.inner.store.head(&storage::pack(digest)).await {
        Ok(meta) => Ok(meta.size),
        Err(object_store::Error::NotFound { .. }) => Err(pack_not_found(digest)),
        Err(e) => Err(AppError::storage("looking up a pack", e)),
    }
}

/// Opens a pack (or `range` of it) for reading; a store that answers
/// another range than asked is an error, never bytes from the wrong place.
async fn open(hub: &Hub, digest: &Digest, range: Option<Range<u64>>) -> Result<GetResult, AppError> {
    let opts = GetOptions { range: range.clone().map(GetRange::Bounded), ..Default::default() };
    let result = match hub.inner.store.get_opts(&storage::pack(digest), opts).await {
        Ok(r) => r,
        Err(object_store::Error::NotFound { .. }) => return Err(pack_not_found(digest)),
        Err(e) => return Err(AppError::storage("reading a pack", e)),
    };
    if let Some(r) = &range
        && result.range != *r
    {
        return Err(AppError::storage("reading a pack", format!("asked for {r:?}, got {:?}", result.range)));
    }
    Ok(result)
}

fn bad_range(msg: &str) -> AppError {
    AppError::new(StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable", msg)
}

fn unsatisfiable(size: u64) -> AppError {
    let e = bad_range(&format!("the range selects no byte of this {size}-byte pack"));
    match HeaderValue::from_str(&format!("bytes */{size}")) {
        Ok(v) => e.with_header(header::CONTENT_RANGE, v),
        Err(_) => e,
    }
}

/// Bytes `[offset, offset + length)` of a pack linked to `name` (`length`
/// 0: to the end), as a stream from the store (gRPC's `ReadPack`).
pub(crate) async fn read_range(
    hub: &Hub,
    name: &Name,
    digest: Digest,
    offset: u64,
    length: u64,
) -> Result<(u64, futures::stream::BoxStream<'static, Result<bytes::Bytes, AppError>>), AppError> {
    if !is_linked(hub, &digest, name).await? {
        return Err(pack_not_found(&digest));
    }
    let size = match hub.inner.chunks.pack_size(&digest) {
        Some(s) => s,
        None => stored_size(hub, &digest).await?,
    };
    let end = if length == 0 { size } else { offset.saturating_add(length).min(size) };
    if offset >= end {
        return Err(unsatisfiable(size));
    }
    if let Some(bytes) = from_blocks(hub, &digest, size, &(offset..end)).await? {
        hub.inner.metrics.pack_bytes_served.inc_by(bytes.len() as u64);
        return Ok((offset, Box::pin(futures::stream::once(async move { Ok(bytes) }))));
    }
    let result = open(hub, &digest, Some(offset..end)).await?;
    let served = hub.inner.metrics.pack_bytes_served.clone();
    let stream = result
        .into_stream()
        .inspect_ok(move |b| {
            served.inc_by(b.len() as u64);
        })
        .map_err(|e| AppError::storage("reading a pack", e));
    Ok((offset, Box::pin(stream)))
}
