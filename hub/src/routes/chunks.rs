//! `POST /v1/chunks/missing`: which of these chunks does the hub lack?

use std::collections::HashSet;

use aetherfs_format::Digest;
use aetherfs_format::api::{MISSING_QUERY_MAX, MissingChunksRequest, MissingChunksResponse};
use axum::Json;
use axum::extract::State;
use axum::response::Response;

use super::{AppJson, respond};
use crate::Hub;
use crate::error::AppError;

pub(crate) async fn missing(State(hub): State<Hub>, AppJson(req): AppJson<MissingChunksRequest>) -> Response {
    respond(query(&hub, req).await)
}

async fn query(hub: &Hub, req: MissingChunksRequest) -> Result<Json<MissingChunksResponse>, AppError> {
    if req.digests.len() > MISSING_QUERY_MAX {
        return Err(AppError::too_large(format!(
            "{} digests in one query; at most {MISSING_QUERY_MAX} are allowed",
            req.digests.len()
        )));
    }
    // Duplicates would only repeat work and answers.
    let mut seen = HashSet::with_capacity(req.digests.len());
    let digests: Vec<Digest> = req.digests.into_iter().filter(|d| seen.insert(*d)).collect();
    let chunks = &hub.inner.chunks;
    chunks.wait_ready().await?;
    let (mut present, mut missing) = chunks.lookup(&digests);
    if !missing.is_empty() {
        // Another replica may have stored them since we last looked.
        chunks.rescan_if_due().await?;
        let (found, still) = chunks.lookup(&missing);
        present.extend(found);
        missing = still;
    }
    Ok(Json(MissingChunksResponse { missing, present }))
}
