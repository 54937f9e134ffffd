//! The HTTP API: the router, the table of routes it serves (checked against
//! openapi.json by a test), and helpers shared by the handlers.

pub(crate) mod chunks;
pub(crate) mod datasets;
pub(crate) mod dav;
mod gc;
mod json_stream;
pub(crate) mod leases;
pub(crate) mod manifests;
mod ops;
pub(crate) mod packs;

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Query, Request};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get};
use futures::StreamExt;
use serde::de::DeserializeOwned;

use crate::auth::{Need, Permission};
use crate::error::AppError;
use crate::{Hub, Principal, auth, metrics};

/// One path the API serves and the methods it accepts there. `HEAD` is
/// listed where it is documented; every `GET` route also answers `HEAD`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RouteSpec {
    pub path: &'static str,
    pub methods: &'static [&'static str],
}

/// Largest other JSON body (a tag move).
const SMALL_BODY_MAX: usize = 64 << 10;

/// The methods of read-only WebDAV the route table records (dav-server also
/// answers OPTIONS and PROPFIND, which OpenAPI cannot describe).
const DAV_METHODS: &[&str] = &["GET"];

/// Records each route as it is added, so the served set is known exactly.
struct Builder {
    router: Router<Hub>,
    specs: Vec<RouteSpec>,
}

impl Builder {
    fn route(mut self, spec: RouteSpec, mr: MethodRouter<Hub>) -> Self {
        self.router = self.router.route(spec.path, mr);
        self.specs.push(spec);
        self
    }
}

/// The router and the routes it serves.
pub(crate) fn build(hub: Hub) -> (Router, Vec<RouteSpec>) {
    let spec = |path, methods| RouteSpec { path, methods };
    let mut b = Builder { router: Router::new(), specs: Vec::new() }
        .route(spec("/healthz", &["GET"]), get(ops::healthz))
        .route(spec("/readyz", &["GET"]), get(ops::readyz))
        .route(spec("/metrics", &["GET"]), get(ops::metrics))
        .route(spec("/openapi.json", &["GET"]), get(ops::openapi))
        .route(spec("/v1/datasets", &["GET"]), get(datasets::list))
        .route(spec("/v1/gc", &["POST"]), axum::routing::post(gc::run));
    // Dataset names contain '/', so one wildcard route takes everything below
    // /v1/datasets/ and the dispatcher parses from the right (as the Docker
    // registry does); its sub-routes are listed in `datasets::ROUTES`.
    b.router =
        b.router.route("/v1/datasets/{*rest}", any(datasets::dispatch).layer(DefaultBodyLimit::max(SMALL_BODY_MAX)));
    b.specs.extend_from_slice(datasets::ROUTES);
    // WebDAV of every readable dataset (dav.rs); dav-server answers each method.
    b = b.route(spec("/dav", DAV_METHODS), any(dav::serve)).route(spec("/dav/", DAV_METHODS), any(dav::serve));
    b.router = b.router.route("/dav/{*path}", any(dav::serve));
    b.specs.push(spec("/dav/{path}", DAV_METHODS));
    // The web page for people (web.rs); its dataset pages share one wildcard
    // route, as the API's do.
    b.router = b.router.merge(crate::web::router().layer(DefaultBodyLimit::max(SMALL_BODY_MAX)));
    b.specs.extend_from_slice(crate::web::ROUTES);
    // The top-level routes' methods, for the `Allow` header of a 405.
    let top: Vec<RouteSpec> = b.specs.clone();
    let router = b
        .router
        .fallback(|| async { AppError::route_not_found() })
        .method_not_allowed_fallback(move |uri: Uri| {
            let methods = top.iter().find(|s| s.path == uri.path()).map_or(&[][..], |s| s.methods);
            let e = AppError::method_not_allowed(methods);
            async move { e }
        })
        // Inside the metrics layer, so refusals are counted and timed too.
        .layer(axum::middleware::from_fn_with_state(auth::Guard { hub: hub.clone(), need }, auth::enforce))
        .layer(axum::middleware::from_fn_with_state(hub.clone(), check_host))
        .layer(axum::middleware::from_fn_with_state(hub.clone(), metrics::track))
        // Failures that matter are logged where they happen (AppError::storage,
        // ::internal); a 503 from /readyz while the index loads is expected.
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .with_state(hub);
    (router, b.specs)
}

/// What a request needs, from its method and the raw path the router matches
/// on (so the name checked is the name the handler uses). Every route in
/// [`build`] is covered here; a test checks each one.
pub(crate) fn need(method: &Method, path: &str) -> Need {
    if crate::web::is_web_path(path) {
        return Need::Web;
    }
    match path {
        "/healthz" | "/readyz" | "/openapi.json" => return Need::Open,
        "/metrics" => return Need::Metrics,
        "/v1/datasets" => return Need::Listing,
        "/v1/gc" => return Need::Everywhere(Permission::Admin),
        // Any caller who may read something; the tree shows only what they may read.
        "/dav" => return Need::Listing,
        p if p.starts_with("/dav/") => return Need::Listing,
        _ => {}
    }
    if let Some(name) = path.strip_prefix("/v1/datasets/").and_then(datasets::dataset_in_path) {
        let lease = datasets::is_lease_path(path);
        let p = match *method {
            // A reader protects what it reads with a lease.
            Method::PUT if lease => Permission::Read,
            // Uploads, publishes, tag moves, and the missing-chunks query of a push.
            Method::PUT | Method::POST => Permission::Write,
            Method::DELETE => Permission::Admin,
            _ => Permission::Read,
        };
        return Need::Dataset(name.to_string(), p);
    }
    Need::Authenticated
}

/// Refuses requests whose Host is not an address, `localhost` or an allowed
/// name, when the hub has no authentication (DNS rebinding; see
/// [`aetherfs_util::host_allowed`]). With authentication a rebound page has
/// no credentials to send, so every Host is served.
async fn check_host(
    axum::extract::State(hub): axum::extract::State<Hub>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    if hub.inner.opts.auth.is_open()
        && let Some(host) = request_host(&req)
        && !aetherfs_util::host_allowed(&host, &hub.inner.opts.allowed_hosts)
    {
        tracing::info!(host = %aetherfs_util::quote(&host), "refused a request for an unknown host");
        return AppError::new(
            axum::http::StatusCode::FORBIDDEN,
            "host_not_allowed",
            "this hub has no authentication and answers only to its addresses, localhost and the names given with --allowed-hosts",
        )
        .into_response();
    }
    next.run(req).await
}

/// The host a request names: its URI authority (HTTP/2) or its Host header.
pub(crate) fn request_host(req: &Request) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_string());
    }
    req.headers().get(header::HOST).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// `Json` whose rejections become [`AppError`]s (`invalid_json`, `too_large`, …).
pub(crate) struct AppJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AppJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let axum::Json(v) = axum::Json::<T>::from_request(req, state).await?;
        Ok(AppJson(v))
    }
}

/// Reads a request body of at most `max` bytes, refusing as soon as it is
/// exceeded (or announced by Content-Length) instead of buffering more.
/// Reads a request body of at most `max` bytes that never pauses longer than `stall`.
pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    max: usize,
    stall: Duration,
    what: &str,
) -> Result<Bytes, AppError> {
    let too_large = || AppError::too_large(format!("{what} larger than {max} bytes"));
    let announced =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    // Trust the announced length only for a bounded pre-allocation.
    let mut buf = Vec::with_capacity(announced.unwrap_or(0).min(16 << 20) as usize);
    let mut stream = body.into_data_stream();
    // An upload holds one of the few upload slots (and its buffer) while it
    // is read: a client that stops sending loses it, as nginx's
    // `client_body_timeout` does.
    let stalled = || {
        AppError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("the {what} body stopped arriving for {} s", stall.as_secs()),
        )
    };
    while let Some(chunk) = tokio::time::timeout(stall, stream.next()).await.map_err(|_| stalled())? {
        let chunk =
            chunk.map_err(|e| AppError::bad_request("invalid_body", format!("could not read the body: {e}")))?;
        if buf.len() + chunk.len() > max {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// The query string as a map; repeated keys keep the last value.
pub(crate) fn query(uri: &Uri) -> Result<HashMap<String, String>, AppError> {
    Query::<HashMap<String, String>>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| AppError::bad_request("invalid_query", e.body_text()))
}

/// Who is asking; see [`Principal`].
pub(crate) fn principal(req: &Request) -> String {
    req.extensions().get::<Principal>().map_or_else(|| "anonymous".to_string(), |p| p.0.clone())
}

/// Runs CPU-heavy work (hashing, verifying, decoding) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| AppError::internal(what, e))?
}

/// Shorthand for handlers that end in `Result<impl IntoResponse, AppError>`.
pub(crate) fn respond<R: IntoResponse>(r: Result<R, AppError>) -> Response {
    match r {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use aetherfs_format::Digest;
    use axum::http::{Method, Request, StatusCode};
    use tower::ServiceExt;

    use super::*;
    use crate::HubOptions;

    const METHODS: [&str; 6] = ["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH"];

    fn openapi_routes() -> BTreeMap<String, BTreeSet<String>> {
        let doc: serde_json::Value = serde_json::from_str(ops::OPENAPI).expect("openapi.json parses");
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        paths
            .iter()
            .map(|(path, item)| {
                let methods = item
                    .as_object()
                    .expect("path item")
                    .keys()
                    .filter(|k| METHODS.iter().any(|m| m.eq_ignore_ascii_case(k)))
                    .map(|k| k.to_ascii_uppercase())
                    .collect();
                (path.clone(), methods)
            })
            .collect()
    }

    fn instantiate(path: &str) -> String {
        path.replace("{name}", "acme/geoip")
            .replace("{reader}", "pod-1")
            .replace("{tag}", "latest")
            .replace("{digest}", &Digest::of(b"x").to_string())
            .replace("{path}", "acme/geoip/latest/x.csv")
    }

    /// What each route needs; the name checked is the raw name the handler reads.
    #[test]
    fn needs() {
        use Permission::*;
        let n = |m: Method, p: &str| need(&m, p);
        for open in ["/healthz", "/readyz", "/openapi.json"] {
            assert_eq!(n(Method::GET, open), Need::Open);
        }
        assert_eq!(n(Method::GET, "/metrics"), Need::Metrics);
        assert_eq!(n(Method::GET, "/v1/datasets"), Need::Listing);
        assert_eq!(n(Method::POST, "/v1/gc"), Need::Everywhere(Admin));
        for web in ["/", "/web/login", "/web/datasets/a/b/-/tree/x", "/web/datasets/a/-/tags/t"] {
            assert_eq!(n(Method::GET, web), Need::Web, "{web}");
            assert_eq!(n(Method::POST, web), Need::Web, "{web}");
        }
        let ds = |name: &str, p| Need::Dataset(name.to_string(), p);
        assert_eq!(n(Method::POST, "/v1/datasets/a/b/chunks/missing"), ds("a/b", Write));
        assert_eq!(n(Method::PUT, "/v1/datasets/a/packs/blake3:00"), ds("a", Write));
        assert_eq!(n(Method::GET, "/v1/datasets/a/packs/blake3:00"), ds("a", Read));
        assert_eq!(n(Method::HEAD, "/v1/datasets/a/packs/blake3:00"), ds("a", Read));
        for gone in ["/v1/packs/blake3:00", "/v1/chunks/missing"] {
            assert_eq!(n(Method::GET, gone), Need::Authenticated, "{gone}");
        }
        assert_eq!(n(Method::GET, "/v1/datasets/a/b/tags"), ds("a/b", Read));
        assert_eq!(n(Method::GET, "/v1/datasets/a/tags/t/history"), ds("a", Read));
        assert_eq!(n(Method::PUT, "/v1/datasets/a/b/tags/latest"), ds("a/b", Write));
        assert_eq!(n(Method::DELETE, "/v1/datasets/a/b/tags/latest"), ds("a/b", Admin));
        assert_eq!(n(Method::HEAD, "/v1/datasets/a/manifests/x"), ds("a", Read));
        assert_eq!(n(Method::PUT, "/v1/datasets/a/manifests/x"), ds("a", Write));
        assert_eq!(n(Method::GET, "/v1/datasets/a/b/manifests/x/placement"), ds("a/b", Read));
        assert_eq!(n(Method::PUT, "/v1/datasets/a/b/leases/pod-1"), ds("a/b", Read));
        assert_eq!(n(Method::GET, "/v1/datasets/a/b/leases"), ds("a/b", Read));
        // Encoded separators stay encoded: the name fails validation later, never matches a/b.
        assert_eq!(n(Method::GET, "/v1/datasets/a%2Fb/tags"), ds("a%2Fb", Read));
        for nowhere in ["/v1/datasets/a", "/v1/datasets/", "/v1", "/healthz/x", "/metrics/", "/v1/datasets/tags"] {
            assert_eq!(n(Method::GET, nowhere), Need::Authenticated, "{nowhere}");
        }
    }

    /// Every route the router serves is documented with exactly its methods,
    /// and every documented route is served; probing each method on each
    /// path checks that the recorded table is what the router really does.
    #[tokio::test]
    async fn openapi_matches_the_router() {
        let hub = Hub::from_store(std::sync::Arc::new(object_store::memory::InMemory::new()), HubOptions::default());
        let (router, specs) = build(hub);
        let served: BTreeMap<String, BTreeSet<String>> =
            specs.iter().map(|s| (s.path.to_string(), s.methods.iter().map(|m| m.to_string()).collect())).collect();
        assert_eq!(served.len(), specs.len(), "a path is registered twice");
        assert_eq!(served, openapi_routes(), "openapi.json and the router differ");

        for (path, methods) in &served {
            for m in METHODS {
                let req = Request::builder()
                    .method(Method::from_bytes(m.as_bytes()).expect("method"))
                    .uri(instantiate(path))
                    .body(Body::empty())
                    .expect("request");
                let res = router.clone().oneshot(req).await.expect("infallible");
                let allowed = methods.contains(m) || (m == "HEAD" && methods.contains("GET"));
                let status = res.status();
                if allowed {
                    assert!(status != StatusCode::METHOD_NOT_ALLOWED, "{m} {path} is documented but refused");
                    // WebDAV answers in WebDAV and the web page in HTML, not in the API's JSON errors.
                    let api = !path.starts_with("/dav") && !crate::web::is_web_path(path);
                    if status == StatusCode::NOT_FOUND && m != "HEAD" && api {
                        let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.expect("body");
                        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
                        assert_ne!(v["error"]["code"], "not_found", "{m} {path} is not routed");
                    }
                } else {
                    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{m} {path} is served but not documented");
                    let allow = res.headers().get(header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or_default();
                    let listed: BTreeSet<String> = allow.split(", ").map(str::to_string).collect();
                    assert!(methods.is_subset(&listed), "{m} {path}: Allow {allow:?} misses one of {methods:?}");
                }
            }
        }
    }
}
