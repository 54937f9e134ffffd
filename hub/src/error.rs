//! Errors: [`HubError`] for opening a hub, [`AppError`] for every HTTP answer
//! that is not a success.
//!
//! `AppError` follows axum's error-handling example: one type that knows its
//! status and a stable machine-readable code, renders as [`ErrorBody`] JSON,
//! and never carries internals to the client. Storage failures are logged
//! here with their cause and answered with a generic 503.

use std::fmt::Display;

use aetherfs_format::api::{ErrorBody, ErrorDetail};
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Why a hub could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(
        "unsupported storage URL {0:?}: use file:///DIR, s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX], az://CONTAINER[/PREFIX] or memory://"
    )]
    UnsupportedStorage(String),
    #[error(
        "--redirect-reads needs an object store that presigns URLs (s3://, gs://, az:// without a customer-provided key); {0} cannot"
    )]
    CannotRedirect(String),
    #[error("invalid storage URL {url:?}: {reason}")]
    InvalidStorageUrl { url: String, reason: String },
    #[error("cannot create storage directory {path}: {source}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open storage {url}: {source}")]
    Storage {
        url: String,
        #[source]
        source: object_store::Error,
    },
}

/// An error answer: status, stable code, human message.
#[derive(Debug)]
pub(crate) struct AppError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl AppError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), headers: Vec::new() }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    pub fn route_not_found() -> Self {
        Self::not_found("not_found", "no such route")
    }

    /// 405 with the `Allow` header RFC 9110 asks for: the route's `methods`
    /// (HEAD wherever GET is).
    pub fn method_not_allowed(methods: &[&str]) -> Self {
        let mut allow: Vec<&str> = methods.to_vec();
        if allow.contains(&"GET") && !allow.contains(&"HEAD") {
            allow.push("HEAD");
        }
        let e = Self::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route");
        match HeaderValue::from_str(&allow.join(", ")) {
            Ok(v) => e.with_header(axum::http::header::ALLOW, v),
            Err(_) => e,
        }
    }

    /// A storage call failed: log the cause, tell the client only that storage is unavailable.
    pub fn storage(what: &str, err: impl Display) -> Self {
        tracing::error!(error = %err, "storage failure while {what}");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "the hub's storage is unavailable; try again later",
        )
    }

    /// A bug or a failed background task: log it, answer 500 without details.
    pub fn internal(what: &str, err: impl Display) -> Self {
        tracing::error!(error = %err, "internal error while {what}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the hub's log")
    }

    /// Adds a header; a name may be given several times (several `WWW-Authenticate` challenges).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message } };
        let mut res = (self.status, axum::Json(body)).into_response();
        for (name, value) in self.headers {
            res.headers_mut().append(name, value);
        }
        res
    }
}

impl From<JsonRejection> for AppError {
    fn from(rej: JsonRejection) -> Self {
        match rej {
            JsonRejection::MissingJsonContentType(_) => AppError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a body with Content-Type: application/json",
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                AppError::too_large("request body is too large")
            }
            JsonRejection::BytesRejection(e) => AppError::bad_request("invalid_body", e.body_text()),
            other => AppError::bad_request("invalid_json", other.body_text()),
        }
    }
}

/// Attaches "what we were doing" to a storage result and turns it into an [`AppError`].
pub(crate) trait StorageContext<T> {
    fn ctx(self, what: &str) -> Result<T, AppError>;
}

impl<T> StorageContext<T> for Result<T, object_store::Error> {
    fn ctx(self, what: &str) -> Result<T, AppError> {
        self.map_err(|e| AppError::storage(what, e))
    }
}
