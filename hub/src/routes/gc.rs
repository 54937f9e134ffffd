//! `POST /v1/gc`: run garbage collection now (admin on every dataset).

use aetherfs_format::api::GcRequest;
use axum::Json;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

use super::{SMALL_BODY_MAX, principal, read_body};
use crate::Hub;
use crate::error::AppError;

pub(crate) async fn run(State(hub): State<Hub>, req: Request) -> Response {
    super::respond(handle(&hub, req).await)
}

async fn handle(hub: &Hub, req: Request) -> Result<Response, AppError> {
    let by = principal(&req);
    let (parts, body) = req.into_parts();
    let body = read_body(body, &parts.headers, SMALL_BODY_MAX, hub.inner.opts.body_stall, "request").await?;
    let gc: GcRequest = if body.is_empty() {
        GcRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| AppError::bad_request("invalid_json", e.to_string()))?
    };
    tracing::info!(%by, dry_run = gc.dry_run, grace_secs = ?gc.grace_secs, "gc requested");
    let res = crate::gc::run(hub, gc).await;
    hub.inner.metrics.record_gc(&res);
    Ok(Json(res?).into_response())
}
