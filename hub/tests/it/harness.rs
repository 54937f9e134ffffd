//! What the hub's tests share: one request through the router in process,
//! and the answer with the assertions every test makes on it.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

/// Sends `req` through `router` and reads the whole answer.
pub async fn send(router: &Router, req: Request<Body>) -> Resp {
    let res = router.clone().oneshot(req).await.expect("router is infallible");
    let status = res.status();
    let headers = res.headers().clone();
    let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.expect("body");
    Resp { status, headers, body }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The JSON body of a success.
    pub fn ok(&self) -> Value {
        assert!(self.status.is_success(), "HTTP {}: {}", self.status, self.text());
        self.value()
    }

    /// Asserts an error answer's status and code; returns its message.
    #[track_caller]
    pub fn err(&self, status: StatusCode, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.value();
        assert_eq!(v["error"]["code"], code, "{}", self.text());
        v["error"]["message"].as_str().expect("message").to_string()
    }

    pub fn header(&self, name: header::HeaderName) -> &str {
        self.headers.get(&name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    pub fn challenges(&self) -> Vec<String> {
        self.headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .collect()
    }
}
