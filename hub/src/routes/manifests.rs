//! `GET|HEAD|PUT /v1/datasets/{name}/manifests/{digest}`.
//!
//! Publishing checks, in order, before anything is stored: the size bound
//! (while reading), the digest of the exact bytes, a full decode (paths,
//! sizes, order, conflicts), and every chunk reference against the index of
//! the pack it names, on digest, offset, stored length, length and
//! compression. A manifest that is published can therefore be read back
//! completely.

use std::collections::{HashMap, HashSet};

use aetherfs_format::api::ManifestStored;
use aetherfs_format::{Digest, EntryKind, Manifest, Name};
use axum::Json;
use axum::extract::Request;
use axum::http::header::{self, HeaderValue};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};

use super::{blocking, packs, read_body};
use crate::Hub;
use crate::auth::{Caller, Permission};
use crate::chunk_index::{EntryKey, ref_key};
use crate::error::{AppError, StorageContext};
use crate::storage::{self, get_bytes};

pub(crate) const MANIFEST_CONTENT_TYPE: &str = "application/vnd.aetherfs.manifest.v1";
/// Pack indexes read at once while checking a manifest's chunk references.
const CHECK_PARALLELISM: usize = 8;
/// Missing chunks named in a refusal message.
const MISSING_SHOWN: usize = 10;

fn manifest_not_found(name: &Name, digest: &Digest) -> AppError {
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
        let value = blocking("rendering a manifest", move || {
            let m = Manifest::decode(&bytes).map_err(|e| AppError::internal("decoding a stored manifest", e))?;
            Ok(m.to_json(&digest, true))
        })
        .await?;
        return Ok((cache, Json(value)).into_response());
    }
    Ok((cache, [(header::CONTENT_TYPE, HeaderValue::from_static(MANIFEST_CONTENT_TYPE))], bytes).into_response())
}

/// Publishes a manifest; see the module docs for the checks.
pub(crate) async fn put(hub: &Hub, name: Name, digest: Digest, req: Request) -> Result<Response, AppError> {
    let caller = req.extensions().get::<Caller>().cloned();
    let (parts, body) = req.into_parts();
    let body = read_body(body, &parts.headers, hub.inner.opts.max_manifest_bytes, "manifest").await?;
    let (stats, refs, body) = blocking("checking a manifest", move || {
        let actual = Digest::of(&body);
        if actual != digest {
            return Err(AppError::bad_request(
                "digest_mismatch",
                format!("the body's digest is {actual}, the URL says {digest}"),
            ));
        }
        let m = Manifest::decode(&body).map_err(|e| AppError::bad_request("invalid_manifest", e.to_string()))?;
        // Every distinct reference, grouped by the pack it points into.
        let mut refs: HashMap<Digest, HashSet<EntryKey>> = HashMap::new();
        for e in &m.entries {
            if let EntryKind::File { chunks, .. } = &e.kind {
                for c in chunks {
                    refs.entry(c.location.pack).or_default().insert(ref_key(c));
                }
            }
        }
        Ok((m.stats(), refs, body))
    })
    .await?;

    let key = storage::manifest(&name, &digest);
    match hub.inner.store.head(&key).await {
        Ok(_) => {
            let stored = ManifestStored { name, digest, stats, created: false };
            return Ok((StatusCode::OK, Json(stored)).into_response());
        }
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(AppError::storage("looking up a manifest", e)),
    }

    // Only packs this dataset may read count; one the caller may read through
    // another dataset is linked here (a cross-dataset mount). Any other pack is,
    // to this caller, not there, whether or not it exists.
    let can_read = |n: &Name| *n == name || caller.as_ref().is_none_or(|c| c.can(Permission::Read, n.as_str()));
    let mut refs = refs;
    let mut unreadable = Vec::new();
    for pack in refs.keys().copied().collect::<Vec<_>>() {
        if packs::is_linked(hub, &pack, &name).await? {
            continue;
        }
        if hub.inner.chunks.visible(&pack, &can_read) {
            packs::link(hub, pack, &name).await?;
        } else if let Some(keys) = refs.remove(&pack) {
            unreadable.extend(keys.into_iter().map(|k| k.0));
        }
    }
    let mut missing = missing_refs(hub, refs).await?;
    if !unreadable.is_empty() {
        missing.extend(unreadable);
        missing.sort_unstable();
        missing.dedup();
    }
    if !missing.is_empty() {
        let shown: Vec<String> = missing.iter().take(MISSING_SHOWN).map(|d| d.to_string()).collect();
        let more = missing.len().saturating_sub(MISSING_SHOWN);
        let tail = if more > 0 { format!(" and {more} more") } else { String::new() };
        return Err(AppError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_chunks",
            format!(
                "{} chunk(s) are not stored where the manifest says; upload their packs first: {}{tail}",
                missing.len(),
                shown.join(", ")
            ),
        ));
    }

    hub.inner.store.put(&key, PutPayload::from(body)).await.ctx("storing a manifest")?;
    hub.inner.metrics.manifests_published.inc();
    tracing::info!(%name, %digest, files = stats.files, bytes = stats.bytes, "manifest published");
    let stored = ManifestStored { name, digest, stats, created: true };
    Ok((StatusCode::CREATED, Json(stored)).into_response())
}

/// The chunks (sorted, distinct) whose reference matches no entry of the
/// referenced pack's index, or whose pack is not stored at all.
async fn missing_refs(hub: &Hub, refs: HashMap<Digest, HashSet<EntryKey>>) -> Result<Vec<Digest>, AppError> {
    let chunks = &hub.inner.chunks;
    let mut checks = futures::stream::iter(refs)
        .map(|(pack, keys)| async move {
            let entries = chunks.pack_entries(&pack).await?;
            let missing: Vec<Digest> = match entries {
                Some(set) => keys.iter().filter(|k| !set.contains(k)).map(|k| k.0).collect(),
                None => keys.iter().map(|k| k.0).collect(),
            };
            Ok::<_, AppError>(missing)
        })
        .buffer_unordered(CHECK_PARALLELISM);
    let mut missing = Vec::new();
    while let Some(m) = checks.next().await {
        missing.extend(m?);
    }
    missing.sort_unstable();
    missing.dedup();
    Ok(missing)
}
