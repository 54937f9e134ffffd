//! The pages: datasets, one dataset (tags, history, sizes, usage,
//! versions), a version's tree, a diff, and the tag form's POST.

use std::collections::BTreeMap;
use std::sync::Arc;

use aetherfs_format::api::{Expected, TagRecord};
use aetherfs_format::diff::{Change, VersionChunks};
use aetherfs_format::{Digest, Manifest, Name, Placement, Tag};
use aetherfs_mounts::NodeKind;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};

use super::html::{Html, bytes, esc, message_page, page, q};
use super::session::{Viewer, same_origin};
use crate::Hub;
use crate::auth::Permission;
use crate::error::AppError;
use crate::routes::datasets::{dataset_names, move_tag, remove_tag, stored_versions};
use crate::routes::{leases, manifests};
use crate::storage;

/// Entries on one page of a directory or a diff.
pub(crate) const PAGE: usize = 500;
/// Datasets on one page of the list.
const DATASETS_PAGE: usize = 100;
/// Longest search.
const QUERY_MAX: usize = 200;
/// Versions the size table reads (the newest).
const SIZED_VERSIONS_MAX: usize = 50;
/// Records shown of a tag's history (the newest).
const HISTORY_SHOWN: usize = 50;
/// Manifests read at once for the size table.
const PARALLEL: usize = 4;

/// A page that could not be shown: its status and what to tell the person.
pub(crate) struct Fail(pub StatusCode, pub String);

impl From<AppError> for Fail {
    fn from(e: AppError) -> Self {
        Fail(e.status, e.message)
    }
}

pub(crate) type PageResult = Result<Response, Fail>;

pub(crate) fn finish(viewer: &Viewer, r: PageResult) -> Response {
    r.unwrap_or_else(|Fail(status, message)| message_page(viewer, status, &message))
}

fn bad(message: impl Into<String>) -> Fail {
    Fail(StatusCode::BAD_REQUEST, message.into())
}

fn not_found(message: impl Into<String>) -> Fail {
    Fail(StatusCode::NOT_FOUND, message.into())
}

/// The dataset `raw` if the viewer may do `p` on it: 401 for an anonymous
/// viewer who could sign in, 403 otherwise; 404 for a malformed name.
pub(crate) fn allowed(viewer: &Viewer, raw: &str, p: Permission) -> Result<Name, Fail> {
    if !viewer.can(p, raw) {
        if viewer.is_anonymous() && viewer.can_sign_in() {
            return Err(Fail(StatusCode::UNAUTHORIZED, format!("Sign in to see {raw}.")));
        }
        let who = viewer.who().unwrap_or("anonymous");
        return Err(Fail(StatusCode::FORBIDDEN, format!("{who} may not {p} dataset {raw}.")));
    }
    raw.parse().map_err(|_| not_found(format!("There is no dataset {raw}.")))
}

/// A version named by digest or by tag.
pub(crate) async fn resolve(hub: &Hub, name: &Name, reference: &str) -> Result<Digest, Fail> {
    if let Ok(d) = reference.parse::<Digest>() {
        return Ok(d);
    }
    let tag: Tag = reference.parse().map_err(|_| not_found(format!("There is no version {reference}.")))?;
    let rec = hub.inner.tags.current(name, &tag).await?;
    rec.and_then(|r| r.digest).ok_or_else(|| not_found(format!("{name} has no tag {tag}.")))
}

/// A stored version, decoded.
pub(crate) async fn load_manifest(hub: &Hub, name: &Name, digest: Digest) -> Result<Manifest, Fail> {
    let key = storage::manifest(name, &digest);
    let bytes = storage::get_bytes(&*hub.inner.store, &key)
        .await
        .map_err(|e| AppError::storage("reading a manifest", e))?
        .ok_or_else(|| not_found(format!("{name}@{digest} does not exist.")))?;
    let placement = manifests::read_placement(hub, name, &digest).await?;
    // A few at a time: each holds a whole decoded manifest.
    let _permit =
        hub.inner.json_views.clone().acquire_owned().await.map_err(|e| AppError::internal("waiting to decode", e))?;
    let m = crate::routes::blocking("decoding a manifest", move || {
        let placement = Placement::decode(&placement).map_err(|e| AppError::internal("decoding a placement", e))?;
        Manifest::decode(&bytes, &placement).map_err(|e| AppError::internal("decoding a manifest", e))
    })
    .await?;
    Ok(m)
}

fn short(d: &Digest) -> String {
    let s = d.to_string();
    let hex = s.split_once(':').map_or(s.as_str(), |(_, h)| h);
    hex.chars().take(12).collect()
}

fn dataset_href(name: &Name) -> String {
    format!("/web/datasets/{name}")
}

fn crumbs(name: &Name) -> Vec<(String, String)> {
    vec![(dataset_href(name), name.to_string())]
}

fn page_number(qs: &std::collections::HashMap<String, String>) -> Result<usize, Fail> {
    match qs.get("page") {
        None => Ok(1),
        Some(p) => p
            .parse::<usize>()
            .ok()
            .filter(|p| (1..=1_000_000).contains(p))
            .ok_or_else(|| bad("page: a whole number from 1 to 1000000")),
    }
}

/// `GET /`: the datasets the viewer may read, `?q=` filtering names.
pub(crate) async fn index(State(hub): State<Hub>, req: Request) -> Response {
    let viewer = Viewer::of(&hub, req.headers());
    let (parts, _) = req.into_parts();
    let r = index_page(&hub, &viewer, &parts).await;
    finish(&viewer, r)
}

async fn index_page(hub: &Hub, viewer: &Viewer, req: &Parts) -> PageResult {
    let qs = super::query(&req.uri).map_err(bad)?;
    let search = qs.get("q").map(|s| s.trim().to_string()).unwrap_or_default();
    if search.len() > QUERY_MAX {
        return Err(bad(format!("a search of at most {QUERY_MAX} bytes")));
    }
    let pageno = page_number(&qs)?;
    let mut h = Html::new();
    if !viewer.reads_somewhere() {
        h.raw("<p class=\"message\">Sign in to see the datasets you may read.</p><p><a href=\"/web/login\">Sign in</a></p>");
        return Ok(page(viewer, StatusCode::OK, "Datasets", &[], &h.into_string()));
    }
    let mut names = dataset_names(hub, viewer.caller()).await?;
    let needle = search.to_lowercase();
    names.retain(|n| n.as_str().contains(&needle));
    h.raw(
        "<form class=\"search\" method=\"get\" action=\"/\" role=\"search\"><label for=\"q\">Search datasets</label> ",
    )
    .fmt(format_args!("<input id=\"q\" name=\"q\" type=\"search\" value=\"{}\"> ", esc(&search)))
    .raw("<button type=\"submit\">Search</button></form>");
    let total = names.len();
    let start = (pageno - 1).saturating_mul(DATASETS_PAGE).min(total);
    let shown: Vec<Name> = names.into_iter().skip(start).take(DATASETS_PAGE).collect();
    if total == 0 {
        h.raw("<p>No dataset").raw(if search.is_empty() { " yet" } else { " matches" }).raw(".</p>");
    } else {
        let tags = &hub.inner.tags;
        let rows: Vec<(Name, Vec<TagRecord>)> = futures::stream::iter(shown)
            .map(|n| async move { tags.list(&n).await.map(|t| (n, t)) })
            .buffered(8)
            .try_collect()
            .await?;
        h.raw("<table><caption>Datasets you may read</caption><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Tags</th></tr></thead><tbody>");
        for (n, recs) in &rows {
            h.fmt(format_args!("<tr><td><a href=\"{}\">{}</a></td><td>", esc(&dataset_href(n)), esc(n.as_str())));
            for r in recs.iter().filter(|r| r.digest.is_some()).take(20) {
                h.fmt(format_args!("<span class=\"tag\">{}</span> ", esc(r.tag.as_str())));
            }
            h.raw("</td></tr>");
        }
        h.raw("</tbody></table>");
        pager(&mut h, &format!("/?q={}", q(&search)), pageno, start, rows.len(), total);
    }
    Ok(page(viewer, StatusCode::OK, "Datasets", &[], &h.into_string()))
}

/// "Entries a–b of n" with previous and next links; `base` has a query already.
fn pager(h: &mut Html, base: &str, pageno: usize, start: usize, shown: usize, total: usize) {
    if total <= shown && pageno == 1 {
        return;
    }
    h.fmt(format_args!(
        "<nav class=\"pager\" aria-label=\"pages\"><span>{}–{} of {}</span>",
        (start + 1).min(total),
        start + shown,
        total
    ));
    if pageno > 1 {
        h.fmt(format_args!(" <a rel=\"prev\" href=\"{}&amp;page={}\">Previous</a>", esc(base), pageno - 1));
    }
    if start + shown < total {
        h.fmt(format_args!(" <a rel=\"next\" href=\"{}&amp;page={}\">Next</a>", esc(base), pageno + 1));
    }
    h.raw("</nav>");
}

/// `GET /web/datasets/NAME`.
pub(crate) async fn dataset(hub: &Hub, raw: &str, req: Request) -> Response {
    let viewer = Viewer::of(hub, req.headers());
    let r = dataset_page(hub, &viewer, raw).await;
    finish(&viewer, r)
}

async fn dataset_page(hub: &Hub, viewer: &Viewer, raw: &str) -> PageResult {
    let name = allowed(viewer, raw, Permission::Read)?;
    let versions = stored_versions(hub, &name).await?;
    let tags = hub.inner.tags.list(&name).await?;
    if versions.is_empty() && tags.is_empty() {
        return Err(not_found(format!("There is no dataset {name}.")));
    }
    let mut tagged: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
    for t in &tags {
        if let Some(d) = t.digest {
            tagged.entry(d).or_default().push(t.tag.to_string());
        }
    }
    let may_write = viewer.can(Permission::Write, name.as_str());
    let may_admin = viewer.can(Permission::Admin, name.as_str());
    let csrf = viewer.csrf();
    let mut h = Html::new();

    // Tags, with their history and the forms the viewer may use.
    h.raw("<section aria-labelledby=\"tags\"><h2 id=\"tags\">Tags</h2>");
    if tags.iter().all(|t| t.digest.is_none()) {
        h.raw("<p>No tags.</p>");
    }
    for t in tags.iter().filter(|t| t.digest.is_some()) {
        let Some(d) = t.digest else { continue };
        h.fmt(format_args!(
            "<article class=\"tagbox\"><h3><span class=\"tag\">{}</span> → <a href=\"{}/-/tree/{}\"><code>{}</code></a></h3>",
            esc(t.tag.as_str()),
            esc(&dataset_href(&name)),
            d,
            esc(&short(&d))
        ));
        let history = hub.inner.tags.history(&name, &t.tag).await?;
        h.fmt(format_args!(
            "<table><caption>History of {} (newest first)</caption><thead><tr><th scope=\"col\">#</th><th scope=\"col\">When</th><th scope=\"col\">Who</th><th scope=\"col\">From</th><th scope=\"col\">To</th></tr></thead><tbody>",
            esc(t.tag.as_str())
        ));
        for r in history.iter().rev().take(HISTORY_SHOWN) {
            let cell =
                |d: Option<Digest>| d.map_or_else(|| "—".to_string(), |d| format!("<code>{}</code>", esc(&short(&d))));
            h.fmt(format_args!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                r.seq,
                esc(&r.at),
                esc(&r.by),
                cell(r.previous),
                if r.digest.is_none() { "deleted".to_string() } else { cell(r.digest) }
            ));
        }
        h.raw("</tbody></table>");
        let action = format!("{}/-/tags/{}", dataset_href(&name), t.tag);
        if may_write && !versions.is_empty() {
            let id = format!("to-{}", t.tag);
            h.fmt(format_args!(
                "<form class=\"inline\" method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <input type=\"hidden\" name=\"action\" value=\"move\"><input type=\"hidden\" name=\"expected\" value=\"{}\">\
                 <label for=\"{}\">Move {} to</label> <select id=\"{}\" name=\"digest\">",
                esc(&action),
                esc(&csrf),
                d,
                esc(&id),
                esc(t.tag.as_str()),
                esc(&id)
            ));
            for v in versions.iter().rev() {
                let sel = if v.digest == d { " selected" } else { "" };
                h.fmt(format_args!(
                    "<option value=\"{}\"{}>{} ({})</option>",
                    v.digest,
                    sel,
                    esc(&short(&v.digest)),
                    esc(&v.stored_at)
                ));
            }
            h.raw("</select> <button type=\"submit\">Move</button></form>");
        }
        if may_admin {
            h.fmt(format_args!(
                "<form class=\"inline\" method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <input type=\"hidden\" name=\"action\" value=\"delete\"><input type=\"hidden\" name=\"expected\" value=\"{}\">\
                 <button type=\"submit\" class=\"danger\">Delete tag {}</button></form>",
                esc(&action),
                esc(&csrf),
                d,
                esc(t.tag.as_str())
            ));
        }
        h.raw("</article>");
    }
    h.raw("</section>");

    // Versions, with their sizes (the logic of `aetherfs du`).
    let sized: Vec<Digest> = versions.iter().rev().take(SIZED_VERSIONS_MAX).map(|v| v.digest).collect();
    let chunks: Vec<Arc<VersionChunks>> = futures::stream::iter(sized.iter().copied())
        .map(|d| version_chunks(hub, &name, d))
        .buffered(PARALLEL)
        .try_collect()
        .await?;
    let lists: Vec<VersionChunks> = chunks.iter().map(|c| (**c).clone()).collect();
    let usage = aetherfs_format::diff::usage(&lists);
    h.raw("<section aria-labelledby=\"sizes\"><h2 id=\"sizes\">Versions and sizes</h2>");
    h.fmt(format_args!(
        "<p class=\"totals\">Logical <strong>{}</strong> · stored <strong>{}</strong> · saved by deduplication and compression <strong>{:.1}%</strong></p>",
        bytes(usage.logical_bytes),
        bytes(usage.stored_bytes),
        usage.saving * 100.0
    ));
    if versions.len() > SIZED_VERSIONS_MAX {
        h.fmt(format_args!("<p>Sizes of the newest {SIZED_VERSIONS_MAX} of {} versions.</p>", versions.len()));
    }
    h.raw("<table><caption>Versions (newest first)</caption><thead><tr><th scope=\"col\">Version</th><th scope=\"col\">Stored at</th><th scope=\"col\">Tags</th><th scope=\"col\">Files</th><th scope=\"col\">Logical</th><th scope=\"col\">Stored</th><th scope=\"col\">Shared</th></tr></thead><tbody>");
    let by_digest: BTreeMap<Digest, &aetherfs_format::diff::VersionUsage> =
        usage.versions.iter().map(|u| (u.digest, u)).collect();
    for v in versions.iter().rev() {
        h.fmt(format_args!(
            "<tr><td><a href=\"{}/-/tree/{}\"><code>{}</code></a></td><td>{}</td><td>",
            esc(&dataset_href(&name)),
            v.digest,
            esc(&short(&v.digest)),
            esc(&v.stored_at)
        ));
        for t in tagged.get(&v.digest).into_iter().flatten() {
            h.fmt(format_args!("<span class=\"tag\">{}</span> ", esc(t)));
        }
        match by_digest.get(&v.digest) {
            Some(u) => h.fmt(format_args!(
                "</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                u.files,
                bytes(u.logical_bytes),
                bytes(u.stored_bytes),
                bytes(u.shared_bytes)
            )),
            None => h.raw("</td><td colspan=\"4\">—</td></tr>"),
        };
    }
    h.raw("</tbody></table>");
    if versions.len() >= 2 {
        let (older, newer) = (versions[versions.len() - 2].digest, versions[versions.len() - 1].digest);
        h.fmt(format_args!("<form class=\"inline\" method=\"get\" action=\"{}/-/diff\">", esc(&dataset_href(&name))));
        for (field, label, pick) in [("from", "Compare", older), ("to", "with", newer)] {
            h.fmt(format_args!("<label for=\"{field}\">{label}</label> <select id=\"{field}\" name=\"{field}\">"));
            for v in versions.iter().rev() {
                let sel = if v.digest == pick { " selected" } else { "" };
                h.fmt(format_args!("<option value=\"{}\"{sel}>{}</option>", v.digest, esc(&short(&v.digest))));
            }
            h.raw("</select> ");
        }
        h.raw("<button type=\"submit\">Show the diff</button></form>");
    }
    h.raw("</section>");

    // Usage: who serves which version (reader leases), and bytes read.
    let leases = leases::read(hub, &name).await?;
    h.raw("<section aria-labelledby=\"usage\"><h2 id=\"usage\">Usage</h2>");
    if leases.is_empty() {
        h.raw("<p>No agent has reported serving this dataset.</p>");
    } else {
        let now = super::session::now();
        let mut served: BTreeMap<Digest, (u64, u64)> = BTreeMap::new();
        h.raw("<table><caption>Agents serving this dataset</caption><thead><tr><th scope=\"col\">Reader</th><th scope=\"col\">Versions</th><th scope=\"col\">Bytes read</th><th scope=\"col\">Renewed</th><th scope=\"col\">Lease</th></tr></thead><tbody>");
        for l in &leases {
            let read: u64 = l.served.iter().map(|s| s.bytes_read).sum();
            for s in &l.served {
                let e = served.entry(s.version).or_default();
                e.0 += s.bytes_read;
                e.1 += s.fetched_bytes;
            }
            let vs: Vec<String> = l.versions.iter().map(|d| format!("<code>{}</code>", esc(&short(d)))).collect();
            h.fmt(format_args!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&l.reader),
                vs.join(" "),
                bytes(read),
                esc(&l.renewed_at),
                if l.expires_unix > now { "in force" } else { "expired" }
            ));
        }
        h.raw("</tbody></table>");
        if !served.is_empty() {
            h.raw("<table><caption>Bytes served per version</caption><thead><tr><th scope=\"col\">Version</th><th scope=\"col\">Read by readers</th><th scope=\"col\">Fetched from the hub</th></tr></thead><tbody>");
            for (d, (read, fetched)) in &served {
                h.fmt(format_args!(
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                    esc(&short(d)),
                    bytes(*read),
                    bytes(*fetched)
                ));
            }
            h.raw("</tbody></table>");
        }
    }
    h.raw("</section>");
    Ok(page(viewer, StatusCode::OK, name.as_str(), &crumbs(&name), &h.into_string()))
}

/// A version's distinct chunks, cached (versions never change).
async fn version_chunks(hub: &Hub, name: &Name, digest: Digest) -> Result<Arc<VersionChunks>, Fail> {
    let cache = &hub.inner.web.chunks;
    if let Some(c) = cache.get(&(name.clone(), digest)).await {
        return Ok(c);
    }
    let m = load_manifest(hub, name, digest).await?;
    let c = Arc::new(VersionChunks::of(digest, &m));
    cache.insert((name.clone(), digest), c.clone()).await;
    Ok(c)
}

/// `GET …/-/tree/REF?path=&page=`: one directory of a version, or one file's facts.
pub(crate) async fn tree(hub: &Hub, raw: &str, reference: &str, req: Request) -> Response {
    let viewer = Viewer::of(hub, req.headers());
    let (parts, _) = req.into_parts();
    let r = tree_page(hub, &viewer, raw, reference, &parts).await;
    finish(&viewer, r)
}

/// The version's tree, or 404.
pub(crate) async fn open_version(
    hub: &Hub,
    name: &Name,
    digest: Digest,
) -> Result<Arc<aetherfs_mounts::DatasetFs>, Fail> {
    crate::routes::dav::version_fs(hub, name, digest).await.map_err(|e| match e {
        dav_server::fs::FsError::NotFound => not_found(format!("{name}@{digest} does not exist.")),
        _ => Fail(StatusCode::SERVICE_UNAVAILABLE, "The version cannot be read right now.".into()),
    })
}

async fn tree_page(hub: &Hub, viewer: &Viewer, raw: &str, reference: &str, req: &Parts) -> PageResult {
    let name = allowed(viewer, raw, Permission::Read)?;
    let qs = super::query(&req.uri).map_err(bad)?;
    let digest = resolve(hub, &name, reference).await?;
    let path = qs.get("path").map(|p| p.trim_matches('/').to_string()).unwrap_or_default();
    let pageno = page_number(&qs)?;
    let fs = open_version(hub, &name, digest).await?;
    let v = fs.current();
    let node = v.find(&path).ok_or_else(|| not_found(format!("{path} is not in {name}@{}.", short(&digest))))?;
    let base = format!("{}/-/tree/{digest}", dataset_href(&name));
    let mut crumbs = crumbs(&name);
    crumbs.push((base.clone(), short(&digest)));
    let mut acc = String::new();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(seg);
        crumbs.push((format!("{base}?path={}", q(&acc)), seg.to_string()));
    }
    let mut h = Html::new();
    let title = if path.is_empty() { format!("{name}@{}", short(&digest)) } else { path.clone() };
    match v.kind(node) {
        NodeKind::Dir { children, .. } => {
            let total = children.len();
            let start = (pageno - 1).saturating_mul(PAGE).min(total);
            let shown = &children[start..(start + PAGE).min(total)];
            h.fmt(format_args!("<p>Version <code>{}</code></p>", digest));
            h.raw("<table class=\"tree\"><caption>Entries</caption><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Size</th><th scope=\"col\">Digest</th></tr></thead><tbody>");
            for &c in shown {
                let href = format!("{base}?path={}", q(&v.path(c)));
                match v.kind(c) {
                    NodeKind::Dir { children, .. } => h.fmt(format_args!(
                        "<tr><td><a href=\"{}\">{}/</a></td><td>{} entries</td><td></td></tr>",
                        esc(&href),
                        esc(v.name(c)),
                        children.len()
                    )),
                    NodeKind::File(f) => h.fmt(format_args!(
                        "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td><code>{}</code></td></tr>",
                        esc(&href),
                        esc(v.name(c)),
                        bytes(f.size),
                        esc(&short(&f.digest))
                    )),
                    NodeKind::Symlink { target } => {
                        h.fmt(format_args!("<tr><td>{} → {}</td><td></td><td></td></tr>", esc(v.name(c)), esc(target)))
                    }
                };
            }
            h.raw("</tbody></table>");
            pager(&mut h, &format!("{base}?path={}", q(&path)), pageno, start, shown.len(), total);
        }
        NodeKind::File(f) => {
            let file = format!("{}/-/file/{digest}?path={}", dataset_href(&name), q(&path));
            let preview = format!("{}/-/preview/{digest}?path={}", dataset_href(&name), q(&path));
            h.fmt(format_args!(
                "<dl><dt>Size</dt><dd>{} ({} bytes)</dd><dt>Digest</dt><dd><code>{}</code></dd></dl>\
                 <p><a href=\"{}\" download>Download</a> · <a href=\"{}\">Preview</a></p>",
                bytes(f.size),
                f.size,
                f.digest,
                esc(&file),
                esc(&preview)
            ));
        }
        NodeKind::Symlink { target } => {
            h.raw("<p>A symbolic link to <code>").text(target).raw("</code>.</p>");
        }
    }
    Ok(page(viewer, StatusCode::OK, &title, &crumbs, &h.into_string()))
}

/// `GET …/-/diff?from=REF&to=REF&page=`.
pub(crate) async fn diff(hub: &Hub, raw: &str, req: Request) -> Response {
    let viewer = Viewer::of(hub, req.headers());
    let (parts, _) = req.into_parts();
    let r = diff_page(hub, &viewer, raw, &parts).await;
    finish(&viewer, r)
}

async fn diff_page(hub: &Hub, viewer: &Viewer, raw: &str, req: &Parts) -> PageResult {
    let name = allowed(viewer, raw, Permission::Read)?;
    let qs = super::query(&req.uri).map_err(bad)?;
    let (Some(from), Some(to)) = (qs.get("from"), qs.get("to")) else {
        return Err(bad("a diff needs from= and to= (a digest or a tag each)"));
    };
    let pageno = page_number(&qs)?;
    let (a, b) = (resolve(hub, &name, from).await?, resolve(hub, &name, to).await?);
    let (old, new) = (load_manifest(hub, &name, a).await?, load_manifest(hub, &name, b).await?);
    let d = crate::routes::blocking("comparing versions", move || Ok(aetherfs_format::diff::diff(&old, &new))).await?;
    let t = d.totals;
    let mut h = Html::new();
    let saving =
        if t.new_version_bytes == 0 { 0.0 } else { t.reused_bytes as f64 / t.new_version_bytes as f64 * 100.0 };
    h.fmt(format_args!(
        "<p>From <code>{a}</code><br>to <code>{b}</code></p>\
         <p class=\"totals\"><strong>{}</strong> added · <strong>{}</strong> removed · <strong>{}</strong> changed · {} unchanged</p>\
         <p class=\"totals\">New bytes <strong>{}</strong> ({} stored, {} chunks) · reused <strong>{}</strong> of {} ({saving:.1}% not sent again)</p>",
        t.added,
        t.removed,
        t.changed,
        t.unchanged,
        bytes(t.new_bytes),
        bytes(t.new_stored_bytes),
        t.new_chunks,
        bytes(t.reused_bytes),
        bytes(t.new_version_bytes)
    ));
    let total = d.paths.len();
    let start = (pageno - 1).saturating_mul(PAGE).min(total);
    let shown = &d.paths[start..(start + PAGE).min(total)];
    if total > 0 {
        h.raw("<table><caption>Paths that differ</caption><thead><tr><th scope=\"col\">Path</th><th scope=\"col\">Change</th><th scope=\"col\">Old size</th><th scope=\"col\">New size</th><th scope=\"col\">New bytes</th><th scope=\"col\">Reused bytes</th></tr></thead><tbody>");
        for p in shown {
            let change = match p.change {
                Change::Added => "added",
                Change::Removed => "removed",
                Change::Changed => "changed",
            };
            let size = |s: Option<u64>| s.map_or_else(String::new, bytes);
            h.fmt(format_args!(
                "<tr><td>{}</td><td class=\"{change}\">{change}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.path),
                size(p.old_size),
                size(p.new_size),
                bytes(p.new_bytes),
                bytes(p.reused_bytes)
            ));
        }
        h.raw("</tbody></table>");
        let base = format!("{}/-/diff?from={}&to={}", dataset_href(&name), q(from), q(to));
        pager(&mut h, &base, pageno, start, shown.len(), total);
    }
    Ok(page(viewer, StatusCode::OK, "Diff", &crumbs(&name), &h.into_string()))
}

/// `POST …/-/tags/TAG`: the tag form (move or delete), CSRF-checked.
pub(crate) async fn tag_form(hub: &Hub, raw: &str, tag: &str, req: Request) -> Response {
    let viewer = Viewer::of(hub, req.headers()).for_post();
    let r = tag_post(hub, &viewer, raw, tag, req).await;
    finish(&viewer, r)
}

/// The fields of a form POST, after the Origin and CSRF checks.
pub(crate) async fn form_fields(hub: &Hub, viewer: &Viewer, req: Request) -> Result<BTreeMap<String, String>, Fail> {
    let (parts, body) = req.into_parts();
    if !same_origin(hub, &parts) {
        return Err(Fail(StatusCode::FORBIDDEN, "Refused: the form was not sent from this hub's pages.".into()));
    }
    let body = axum::body::to_bytes(body, super::FORM_MAX)
        .await
        .map_err(|_| bad(format!("a form of at most {} bytes", super::FORM_MAX)))?;
    let fields: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if !fields.get("csrf").is_some_and(|t| viewer.csrf_ok(t)) {
        return Err(Fail(
            StatusCode::FORBIDDEN,
            "Refused: the form's token is missing or stale; reload the page.".into(),
        ));
    }
    Ok(fields)
}

async fn tag_post(hub: &Hub, viewer: &Viewer, raw: &str, tag: &str, req: Request) -> PageResult {
    let fields = form_fields(hub, viewer, req).await?;
    let action = fields.get("action").map(String::as_str).unwrap_or_default();
    let need = match action {
        "move" => Permission::Write,
        "delete" => Permission::Admin,
        _ => return Err(bad("action: move or delete")),
    };
    let name = allowed(viewer, raw, need)?;
    let tag: Tag = tag.parse().map_err(|_| not_found(format!("There is no tag {tag}.")))?;
    let expected = match fields.get("expected").map(String::as_str) {
        None | Some("") => None,
        Some(e) => Some(e.parse::<Expected>().map_err(|_| bad("expected: a digest or absent"))?),
    };
    let by = viewer.who().unwrap_or("anonymous").to_string();
    if action == "move" {
        let digest: Digest = fields
            .get("digest")
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| bad("digest: the version to move the tag to"))?;
        move_tag(hub, &name, &tag, digest, expected, &by).await?;
    } else {
        remove_tag(hub, &name, &tag, expected, &by).await?;
    }
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&dataset_href(&name)) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}
