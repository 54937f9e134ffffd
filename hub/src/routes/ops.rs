//! Operations endpoints: liveness, readiness, metrics, the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};
use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::Hub;
use crate::chunk_index::not_ready;
use crate::error::AppError;

/// The OpenAPI 3.1 description of this API (a test keeps it in step with the router).
pub(crate) const OPENAPI: &str = include_str!("../openapi.json");

/// A key that never exists: looking it up proves storage answers, cheaply.
const PROBE_KEY: &str = "_readyz";

pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Ready once the chunk index is loaded and storage answers.
pub(crate) async fn readyz(State(hub): State<Hub>) -> Response {
    if !hub.inner.chunks.is_ready() {
        return not_ready().into_response();
    }
    match hub.inner.store.head(&Path::from(PROBE_KEY)).await {
        Ok(_) | Err(object_store::Error::NotFound { .. }) => {
            Json(serde_json::json!({ "status": "ready" })).into_response()
        }
        Err(e) => AppError::storage("checking readiness", e).into_response(),
    }
}

pub(crate) async fn metrics(State(hub): State<Hub>) -> Response {
    match hub.inner.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            )],
            text,
        )
            .into_response(),
        Err(e) => AppError::internal("encoding metrics", e).into_response(),
    }
}

pub(crate) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], OPENAPI).into_response()
}
