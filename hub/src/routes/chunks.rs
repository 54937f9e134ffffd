//! `POST /v1/datasets/{name}/chunks/missing`: which of these chunks must a
//! push into `name` upload?
//!
//! A chunk counts as present only in a pack the caller may read through some
//! dataset (the target included): a caller learns nothing of what other
//! tenants store, and a chunk it cannot prove it may read is reported missing
//! and simply uploaded again. Where the hub looks (recent packs, the
//! dataset's tagged versions) is chunk_index.rs's business.

use std::collections::HashSet;

use aetherfs_format::api::{MISSING_QUERY_MAX, MissingChunksRequest, MissingChunksResponse};
use aetherfs_format::{Digest, Name};
use axum::Json;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};

use super::read_body;
use crate::Hub;
use crate::auth::{Caller, Permission};
use crate::error::AppError;

/// Largest query body: 50,000 digests as JSON strings, with room to spare.
const MISSING_BODY_MAX: usize = 8 << 20;

pub(crate) async fn missing(hub: &Hub, name: Name, req: Request) -> Result<Response, AppError> {
    let caller = req.extensions().get::<Caller>().cloned();
    let (parts, body) = req.into_parts();
    let body = read_body(body, &parts.headers, MISSING_BODY_MAX, hub.inner.opts.body_stall, "query").await?;
    let q: MissingChunksRequest =
        serde_json::from_slice(&body).map_err(|e| AppError::bad_request("invalid_json", e.to_string()))?;
    Ok(Json(query(hub, &name, q, caller.as_ref()).await?).into_response())
}

/// Which chunks a push into `name` must upload (REST and gRPC).
pub(crate) async fn query(
    hub: &Hub,
    name: &Name,
    req: MissingChunksRequest,
    caller: Option<&Caller>,
) -> Result<MissingChunksResponse, AppError> {
    // Open hubs (no access control) let everyone read everything.
    let can_read = |n: &Name| n == name || caller.is_none_or(|c| c.can(Permission::Read, n.as_str()));
    let can_read: &(dyn Fn(&Name) -> bool + Sync) = &can_read;
    if req.digests.len() > MISSING_QUERY_MAX {
        return Err(AppError::too_large(format!(
            "{} digests in one query; at most {MISSING_QUERY_MAX} are allowed",
            req.digests.len()
        )));
    }
    // Duplicates would only repeat work and answers.
    let mut seen = HashSet::with_capacity(req.digests.len());
    let digests: Vec<Digest> = req.digests.into_iter().filter(|d| seen.insert(*d)).collect();
    // What the caller may not read is, to the caller, not there: the answer
    // keeps the query's order, so it shows no trace of what was hidden.
    let (present, _) = hub.inner.chunks.lookup(name, &digests, can_read).await?;
    let shown: HashSet<Digest> = present.iter().map(|p| p.digest).collect();
    let missing: Vec<Digest> = digests.into_iter().filter(|d| !shown.contains(d)).collect();
    Ok(MissingChunksResponse { missing, present })
}
