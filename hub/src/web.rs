//! The hub's web page: server-rendered HTML for people, beside the REST API.
//!
//! ```text
//!   /                                   datasets the viewer may read (?q= searches names)
//!   /web/datasets/NAME                  tags, each tag's history, sizes (du), usage (leases), versions
//!   …/NAME/-/tree/DIGEST?path=&page=    a directory of a version, 500 entries a page
//!   …/NAME/-/file/DIGEST?path=          a file's bytes (Range answered)
//!   …/NAME/-/preview/DIGEST?path=       text, CSV as a table, JSON pretty, SQLite's tables
//!   …/NAME/-/diff?from=&to=             files added, removed, changed; new vs reused bytes
//!   POST …/NAME/-/tags/TAG              move or delete a tag (form with CSRF token)
//!   /web/login, /web/login/oidc, /web/callback, POST /web/logout    signing in and out
//! ```
//!
//! Dataset names contain `/` but never a `-` segment, so `/-/` separates a
//! name from what follows (as GitLab does). Pages are plain HTML built with
//! the escaping writer of `html.rs`; the style sheet is compiled in; there
//! is no script, and the Content-Security-Policy says so.
//!
//! Access: the auth middleware lets `/` and `/web/…` through ([`Need::Web`]);
//! each page builds a [`session::Viewer`] from the session cookie and asks
//! the policy through [`Caller::can`] for each dataset, exactly as the REST
//! API does for a bearer token. An open hub (no auth configuration) shows
//! everything. State-changing forms carry a per-session CSRF token and are
//! refused unless Origin (or Referer) names this hub.
//!
//! [`Need::Web`]: crate::auth::Need::Web
//! [`Caller::can`]: crate::auth::Caller::can

mod files;
mod html;
mod login;
mod pages;
pub(crate) mod session;
mod sqlite;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

use crate::Hub;
use crate::error::AppError;
use crate::metrics::RouteTemplate;
use crate::routes::RouteSpec;

const STYLE: &str = include_str!("web/style.css");

/// Largest form body.
const FORM_MAX: usize = 16 << 10;

const DATASET: &str = "/web/datasets/{name}";
const TREE: &str = "/web/datasets/{name}/-/tree/{digest}";
const FILE: &str = "/web/datasets/{name}/-/file/{digest}";
const PREVIEW: &str = "/web/datasets/{name}/-/preview/{digest}";
const DIFF: &str = "/web/datasets/{name}/-/diff";
const TAG: &str = "/web/datasets/{name}/-/tags/{tag}";

/// Every route of the web page (checked against openapi.json with the rest).
pub(crate) const ROUTES: &[RouteSpec] = &[
    RouteSpec { path: "/", methods: &["GET"] },
    RouteSpec { path: "/web/style.css", methods: &["GET"] },
    RouteSpec { path: "/web/login", methods: &["GET", "POST"] },
    RouteSpec { path: "/web/login/oidc", methods: &["GET"] },
    RouteSpec { path: "/web/callback", methods: &["GET"] },
    RouteSpec { path: "/web/logout", methods: &["POST"] },
    RouteSpec { path: DATASET, methods: &["GET"] },
    RouteSpec { path: TREE, methods: &["GET"] },
    RouteSpec { path: FILE, methods: &["GET"] },
    RouteSpec { path: PREVIEW, methods: &["GET"] },
    RouteSpec { path: DIFF, methods: &["GET"] },
    RouteSpec { path: TAG, methods: &["POST"] },
];

/// What the web page keeps between requests.
pub(crate) struct WebState {
    pub keys: session::Keys,
    /// Cookies are Secure (the hub serves HTTPS).
    pub secure: bool,
    pub session_secs: u64,
    /// Each version's distinct chunks, for the size table (du).
    pub chunks: moka::future::Cache<
        (aetherfs_format::Name, aetherfs_format::Digest),
        std::sync::Arc<aetherfs_format::diff::VersionChunks>,
    >,
}

/// Versions' chunk lists kept, weighed by their files.
const CHUNK_LISTS_WEIGHT: u64 = 2_000_000;

impl WebState {
    pub(crate) fn new(opts: &crate::HubOptions) -> WebState {
        let cfg = opts.auth.web_config();
        let chunks = moka::future::Cache::builder()
            .max_capacity(CHUNK_LISTS_WEIGHT)
            .weigher(
                |_: &(aetherfs_format::Name, aetherfs_format::Digest),
                 v: &std::sync::Arc<aetherfs_format::diff::VersionChunks>| {
                    u32::try_from(v.files.saturating_add(1)).unwrap_or(u32::MAX)
                },
            )
            .build();
        WebState {
            keys: session::Keys::new(cfg.session_key),
            secure: opts.tls,
            session_secs: cfg.session_secs.unwrap_or(session::SESSION_SECS),
            chunks,
        }
    }
}

/// Whether a path belongs to the web page (for the auth middleware).
pub(crate) fn is_web_path(path: &str) -> bool {
    path == "/" || path == "/web" || path.starts_with("/web/")
}

/// The web page's routes.
pub(crate) fn router() -> Router<Hub> {
    Router::new()
        .route("/", get(pages::index))
        .route("/web/style.css", get(style))
        .route("/web/login", get(login::form).post(login::password))
        .route("/web/login/oidc", get(login::oidc_start))
        .route("/web/callback", get(login::callback))
        .route("/web/logout", axum::routing::post(login::logout))
        .route("/web/datasets/{*rest}", any(dispatch))
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        STYLE,
    )
        .into_response()
}

/// What follows a dataset name.
enum Shape<'a> {
    Dataset,
    Tree(&'a str),
    File(&'a str),
    Preview(&'a str),
    Diff,
    Tag(&'a str),
}

fn shape(rest: &str) -> Option<(&str, Shape<'_>, &'static str)> {
    let Some((name, tail)) = rest.split_once("/-/") else {
        return (!rest.is_empty()).then_some((rest, Shape::Dataset, DATASET));
    };
    let (what, arg) = tail.split_once('/').unwrap_or((tail, ""));
    let one = |s: &str| !s.is_empty() && !s.contains('/');
    match what {
        "tree" if one(arg) => Some((name, Shape::Tree(arg), TREE)),
        "file" if one(arg) => Some((name, Shape::File(arg), FILE)),
        "preview" if one(arg) => Some((name, Shape::Preview(arg), PREVIEW)),
        "diff" if arg.is_empty() => Some((name, Shape::Diff, DIFF)),
        "tags" if one(arg) => Some((name, Shape::Tag(arg), TAG)),
        _ => None,
    }
}

/// Everything below `/web/datasets/`.
async fn dispatch(State(hub): State<Hub>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let rest = path.strip_prefix("/web/datasets/").unwrap_or_default();
    let Some((name, shape, template)) = shape(rest) else {
        return html::error_page(&hub, &req, StatusCode::NOT_FOUND, "There is no such page.");
    };
    let post = matches!(shape, Shape::Tag(_));
    let method = req.method().clone();
    let allowed = if post { method == Method::POST } else { method == Method::GET || method == Method::HEAD };
    let mut res = if !allowed {
        AppError::method_not_allowed(if post { &["POST"] } else { &["GET"] }).into_response()
    } else {
        let name = name.to_string();
        match shape {
            Shape::Dataset => pages::dataset(&hub, &name, req).await,
            Shape::Tree(d) => pages::tree(&hub, &name, d, req).await,
            Shape::File(d) => files::download(&hub, &name, d, req).await,
            Shape::Preview(d) => files::preview(&hub, &name, d, req).await,
            Shape::Diff => pages::diff(&hub, &name, req).await,
            Shape::Tag(t) => pages::tag_form(&hub, &name, t, req).await,
        }
    };
    res.extensions_mut().insert(RouteTemplate(template));
    res
}

/// The query string as pairs; a malformed one is a 400 page.
pub(crate) fn query(uri: &axum::http::Uri) -> Result<std::collections::HashMap<String, String>, String> {
    crate::routes::query(uri).map_err(|e| e.message)
}

#[cfg(test)]
mod tests;
