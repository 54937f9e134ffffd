use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt;

use super::session::{Keys, same_origin};
use super::*;
use crate::HubOptions;

fn hub() -> Hub {
    Hub::from_store(std::sync::Arc::new(object_store::memory::InMemory::new()), HubOptions::default())
}

#[test]
fn shapes() {
    let s = |r: &str| shape(r).map(|(n, _, t)| (n.to_string(), t));
    assert_eq!(s("acme/geoip"), Some(("acme/geoip".into(), DATASET)));
    assert_eq!(s("acme/geoip/-/tree/blake3:00"), Some(("acme/geoip".into(), TREE)));
    assert_eq!(s("a/-/file/x"), Some(("a".into(), FILE)));
    assert_eq!(s("a/-/preview/x"), Some(("a".into(), PREVIEW)));
    assert_eq!(s("a/-/diff"), Some(("a".into(), DIFF)));
    assert_eq!(s("a/-/tags/latest"), Some(("a".into(), TAG)));
    for none in ["", "a/-/tree", "a/-/tree/x/y", "a/-/diff/x", "a/-/nope/x", "a/-/tags/"] {
        assert!(s(none).is_none(), "{none}");
    }
}

#[test]
fn sealed_values_refuse_tampering() {
    let k = Keys::new(Some(vec![7; 32]));
    let v = k.seal(b"p", &serde_json::json!({"sub": "alice"})).expect("fits");
    assert_eq!(k.open::<serde_json::Value>(b"p", &v), Some(serde_json::json!({"sub": "alice"})));
    // Another purpose, another key, a changed payload: refused.
    assert!(k.open::<serde_json::Value>(b"q", &v).is_none());
    assert!(Keys::new(Some(vec![8; 32])).open::<serde_json::Value>(b"p", &v).is_none());
    let (body, tag) = v.split_once('.').expect("two parts");
    use base64::Engine;
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"root"}"#);
    assert!(k.open::<serde_json::Value>(b"p", &format!("{forged}.{tag}")).is_none());
    assert!(k.open::<serde_json::Value>(b"p", body).is_none());
}

#[test]
fn origin_must_name_this_hub() {
    let hub = hub();
    let req = |origin: Option<&str>, referer: Option<&str>| {
        let mut b = Request::builder().method("POST").uri("/web/logout").header(header::HOST, "127.0.0.1:8080");
        if let Some(o) = origin {
            b = b.header(header::ORIGIN, o);
        }
        if let Some(r) = referer {
            b = b.header(header::REFERER, r);
        }
        b.body(Body::empty()).expect("request").into_parts().0
    };
    assert!(same_origin(&hub, &req(Some("http://127.0.0.1:8080"), None)));
    assert!(same_origin(&hub, &req(None, Some("http://127.0.0.1:8080/web/datasets/a"))));
    assert!(!same_origin(&hub, &req(Some("http://evil.example"), Some("http://127.0.0.1:8080/"))));
    assert!(!same_origin(&hub, &req(Some("null"), None)));
    assert!(!same_origin(&hub, &req(None, None)));
    assert!(!same_origin(&hub, &req(Some("http://127.0.0.1:9999"), None)));
}

async fn get(hub: &Hub, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let req = Request::builder().uri(uri).header(header::HOST, "127.0.0.1").body(Body::empty()).expect("request");
    let res = hub.router().oneshot(req).await.expect("infallible");
    let (parts, body) = res.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.expect("body");
    (parts.status, parts.headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn pages_answer_html_with_a_strict_policy() {
    let hub = hub();
    let (status, headers, body) = get(&hub, "/?q=%3Cscript%3E").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE].to_str().expect("ascii").starts_with("text/html"));
    assert!(headers[header::CONTENT_SECURITY_POLICY].to_str().expect("ascii").contains("default-src 'none'"));
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(headers.get(header::SET_COOKIE).is_some_and(|c| c.to_str().expect("ascii").contains("HttpOnly")));
    assert!(!body.contains("<script>") && body.contains("&lt;script&gt;"), "{body}");
    for (uri, want) in [
        ("/web/datasets/no/such", StatusCode::NOT_FOUND),
        ("/web/datasets/no/-/tree/blake3:00", StatusCode::NOT_FOUND),
        ("/web/datasets/Bad%20Name", StatusCode::NOT_FOUND),
        ("/web/datasets/a/-/diff", StatusCode::BAD_REQUEST),
        ("/web/datasets/a/-/nope/x", StatusCode::NOT_FOUND),
        ("/?page=0", StatusCode::BAD_REQUEST),
        ("/web/login/oidc", StatusCode::NOT_FOUND),
        ("/web/callback", StatusCode::BAD_REQUEST),
    ] {
        let (status, headers, _) = get(&hub, uri).await;
        assert_eq!(status, want, "{uri}");
        assert!(headers[header::CONTENT_TYPE].to_str().expect("ascii").starts_with("text/html"), "{uri}");
    }
    let (status, headers, css) = get(&hub, "/web/style.css").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE].to_str().expect("ascii").starts_with("text/css"));
    assert!(css.contains("body"));
}

#[tokio::test]
async fn a_post_without_the_token_or_from_elsewhere_is_refused() {
    let hub = hub();
    let post = |origin: &'static str, body: &'static str| {
        Request::builder()
            .method("POST")
            .uri("/web/datasets/a/-/tags/latest")
            .header(header::HOST, "127.0.0.1")
            .header(header::ORIGIN, origin)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .expect("request")
    };
    for req in [post("http://evil.example", "action=delete"), post("http://127.0.0.1", "action=delete&csrf=x")] {
        let res = hub.router().oneshot(req).await.expect("infallible");
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        // No new session: a cross-site form must not replace the person's.
        assert!(res.headers().get(header::SET_COOKIE).is_none());
    }
}
