//! `/v1/datasets…`: listing datasets, tags (resolve with long-poll, move,
//! delete, history) and the dispatch of everything below a dataset name.
//!
//! A name such as `acme/geoip` contains '/', so the router hands the whole
//! rest of the path to [`dispatch`], which matches the fixed suffixes from the
//! right: `…/tags/{tag}/history`, `…/tags/{tag}`, `…/tags`,
//! `…/manifests/{digest}`, `…/manifests`, trying them in that order. A dataset whose name
//! itself ends in `tags` or `manifests` segments is therefore shadowed for the
//! ambiguous shapes, as in the Docker registry API.

use std::str::FromStr;
use std::time::Duration;

use aetherfs_format::api::{
    DatasetList, DatasetSummary, Expected, SetTagRequest, TagHistory, TagList, TagRecord, VersionEntry, VersionList,
};
use aetherfs_format::{Digest, FormatError, Name, Tag};
use axum::extract::{FromRequest, Request, State};
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use prometheus_client::metrics::gauge::Gauge;

use super::{AppJson, RouteSpec, chunks, leases, manifests, packs, principal, query};
use crate::Hub;
use crate::auth::{Caller, Permission};
use crate::error::{AppError, StorageContext};
use crate::metrics::RouteTemplate;
use crate::storage;
use crate::tags::{Move, tag_not_found};

const TAGS: &str = "/v1/datasets/{name}/tags";
const TAG: &str = "/v1/datasets/{name}/tags/{tag}";
const HISTORY: &str = "/v1/datasets/{name}/tags/{tag}/history";
const MANIFEST: &str = "/v1/datasets/{name}/manifests/{digest}";
const MANIFESTS: &str = "/v1/datasets/{name}/manifests";
const PLACEMENT: &str = "/v1/datasets/{name}/manifests/{digest}/placement";
const LEASE: &str = "/v1/datasets/{name}/leases/{reader}";
const LEASES: &str = "/v1/datasets/{name}/leases";
const PACK: &str = "/v1/datasets/{name}/packs/{digest}";
const MISSING: &str = "/v1/datasets/{name}/chunks/missing";

/// The routes [`dispatch`] serves.
pub(crate) const ROUTES: &[RouteSpec] = &[
    RouteSpec { path: TAGS, methods: &["GET"] },
    RouteSpec { path: TAG, methods: &["GET", "PUT", "DELETE"] },
    RouteSpec { path: HISTORY, methods: &["GET"] },
    RouteSpec { path: MANIFEST, methods: &["GET", "HEAD", "PUT", "DELETE"] },
    RouteSpec { path: MANIFESTS, methods: &["GET"] },
    RouteSpec { path: PLACEMENT, methods: &["GET"] },
    RouteSpec { path: LEASE, methods: &["PUT"] },
    RouteSpec { path: LEASES, methods: &["GET"] },
    RouteSpec { path: PACK, methods: &["GET", "HEAD", "PUT"] },
    RouteSpec { path: MISSING, methods: &["POST"] },
];

/// Datasets whose tags are read at once when listing.
const LIST_PARALLELISM: usize = 8;

/// The shape of a path below `/v1/datasets/`, its parts not yet validated.
enum Shape<'a> {
    Tags { name: &'a str },
    Tag { name: &'a str, tag: &'a str },
    History { name: &'a str, tag: &'a str },
    Manifest { name: &'a str, digest: &'a str },
    Manifests { name: &'a str },
    Placement { name: &'a str, digest: &'a str },
    Lease { name: &'a str, reader: &'a str },
    Leases { name: &'a str },
    Pack { name: &'a str, digest: &'a str },
    Missing { name: &'a str },
}

impl Shape<'_> {
    fn template(&self) -> &'static str {
        match self {
            Shape::Tags { .. } => TAGS,
            Shape::Tag { .. } => TAG,
            Shape::History { .. } => HISTORY,
            Shape::Manifest { .. } => MANIFEST,
            Shape::Manifests { .. } => MANIFESTS,
            Shape::Placement { .. } => PLACEMENT,
            Shape::Lease { .. } => LEASE,
            Shape::Leases { .. } => LEASES,
            Shape::Pack { .. } => PACK,
            Shape::Missing { .. } => MISSING,
        }
    }
}

fn shape(rest: &str) -> Option<Shape<'_>> {
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    // The name is everything before the suffix; an empty one matches nothing.
    let name = |k: usize| {
        let end = segs[..n - k].iter().map(|s| s.len() + 1).sum::<usize>().saturating_sub(1);
        let name = &rest[..end];
        (!name.is_empty()).then_some(name)
    };
    if n >= 4 && segs[n - 3] == "tags" && segs[n - 1] == "history" {
        return Some(Shape::History { name: name(3)?, tag: segs[n - 2] });
    }
    if n >= 3 && segs[n - 2] == "tags" {
        return Some(Shape::Tag { name: name(2)?, tag: segs[n - 1] });
    }
    if n >= 2 && segs[n - 1] == "tags" {
        return Some(Shape::Tags { name: name(1)? });
    }
    if n >= 4 && segs[n - 3] == "manifests" && segs[n - 1] == "placement" {
        return Some(Shape::Placement { name: name(3)?, digest: segs[n - 2] });
    }
    if n >= 3 && segs[n - 2] == "leases" {
        return Some(Shape::Lease { name: name(2)?, reader: segs[n - 1] });
    }
    if n >= 2 && segs[n - 1] == "leases" {
        return Some(Shape::Leases { name: name(1)? });
    }
    if n >= 3 && segs[n - 2] == "manifests" {
        return Some(Shape::Manifest { name: name(2)?, digest: segs[n - 1] });
    }
    if n >= 2 && segs[n - 1] == "manifests" {
        return Some(Shape::Manifests { name: name(1)? });
    }
    if n >= 3 && segs[n - 2] == "packs" {
        return Some(Shape::Pack { name: name(2)?, digest: segs[n - 1] });
    }
    if n >= 3 && segs[n - 2] == "chunks" && segs[n - 1] == "missing" {
        return Some(Shape::Missing { name: name(2)? });
    }
    None
}

/// The dataset name in a path below `/v1/datasets/`, as [`dispatch`] will
/// read it (raw, not yet validated); `None` where it routes nowhere.
pub(crate) fn dataset_in_path(rest: &str) -> Option<&str> {
    shape(rest).map(|s| match s {
        Shape::Tags { name }
        | Shape::Tag { name, .. }
        | Shape::History { name, .. }
        | Shape::Manifest { name, .. }
        | Shape::Manifests { name }
        | Shape::Placement { name, .. }
        | Shape::Lease { name, .. }
        | Shape::Leases { name }
        | Shape::Pack { name, .. }
        | Shape::Missing { name } => name,
    })
}

/// Whether a path below `/v1/` is a lease (`…/leases/{reader}`), which a
/// reader may write.
pub(crate) fn is_lease_path(path: &str) -> bool {
    path.strip_prefix("/v1/datasets/").and_then(shape).is_some_and(|s| matches!(s, Shape::Lease { .. }))
}

pub(crate) fn parse<T: FromStr<Err = FormatError>>(s: &str, code: &'static str) -> Result<T, AppError> {
    s.parse().map_err(|e: FormatError| AppError::bad_request(code, e.to_string()))
}

/// Everything below `/v1/datasets/`.
pub(crate) async fn dispatch(State(hub): State<Hub>, req: Request) -> Response {
    // Clients may percent-encode any character of a segment (`blake3%3A…`,
    // `acme%2Fgeo`): routes and names are matched on the decoded path.
    let Ok(path) = percent_encoding::percent_decode_str(req.uri().path()).decode_utf8() else {
        return AppError::bad_request("invalid_name", "the path is not UTF-8 once percent-decoded").into_response();
    };
    let path = path.into_owned();
    let rest = path.strip_prefix("/v1/datasets/").unwrap_or_default();
    let Some(shape) = shape(rest) else {
        return AppError::route_not_found().into_response();
    };
    let template = shape.template();
    // axum strips the body of HEAD answers after setting their Content-Length.
    let mut res = match handle(&hub, shape, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    res.extensions_mut().insert(RouteTemplate(template));
    res
}

async fn handle(hub: &Hub, shape: Shape<'_>, req: Request) -> Result<Response, AppError> {
    let method = req.method().clone();
    let methods = ROUTES.iter().find(|r| r.path == shape.template()).map_or(&[][..], |r| r.methods);
    let allowed = methods.contains(&method.as_str()) || (method == Method::HEAD && methods.contains(&"GET"));
    if !allowed {
        return Err(AppError::method_not_allowed(methods));
    }
    match shape {
        Shape::Tags { name } => {
            let name: Name = parse(name, "invalid_name")?;
            list_tags(hub, name).await
        }
        Shape::Tag { name, tag } => {
            let name: Name = parse(name, "invalid_name")?;
            let tag: Tag = parse(tag, "invalid_tag")?;
            match method {
                Method::PUT => set_tag(hub, name, tag, req).await,
                Method::DELETE => delete_tag(hub, name, tag, req).await,
                _ => get_tag(hub, name, tag, req).await,
            }
        }
        Shape::History { name, tag } => {
            let name: Name = parse(name, "invalid_name")?;
            let tag: Tag = parse(tag, "invalid_tag")?;
            history(hub, name, tag).await
        }
        Shape::Manifest { name, digest } => {
            let name: Name = parse(name, "invalid_name")?;
            let digest: Digest = parse(digest, "invalid_digest")?;
            match method {
                Method::PUT => manifests::put(hub, name, digest, req).await,
                Method::DELETE => delete_version(hub, name, digest, req).await,
                _ => manifests::get(hub, name, digest, req).await,
            }
        }
        Shape::Manifests { name } => {
            let name: Name = parse(name, "invalid_name")?;
            list_versions(hub, name).await
        }
        Shape::Placement { name, digest } => {
            let name: Name = parse(name, "invalid_name")?;
            let digest: Digest = parse(digest, "invalid_digest")?;
            manifests::get_placement(hub, name, digest, req).await
        }
        Shape::Lease { name, reader } => {
            let name: Name = parse(name, "invalid_name")?;
            leases::put(hub, name, reader, req).await
        }
        Shape::Leases { name } => {
            let name: Name = parse(name, "invalid_name")?;
            leases::list(hub, name).await
        }
        Shape::Pack { name, digest } => {
            let name: Name = parse(name, "invalid_name")?;
            match method {
                Method::PUT => packs::put(hub, name, digest, req).await,
                _ => packs::get(hub, name, digest, req).await,
            }
        }
        Shape::Missing { name } => {
            let name: Name = parse(name, "invalid_name")?;
            chunks::missing(hub, name, req).await
        }
    }
}

/// `GET /v1/datasets`: every prefix under `datasets/` with a `_tags` or
/// `_manifests` child is a dataset; with access control on, only those the
/// caller may read are listed.
pub(crate) async fn list(State(hub): State<Hub>, caller: Option<Extension<Caller>>) -> Response {
    super::respond(list_datasets(&hub, caller.map(|c| c.0)).await.map(Json))
}

/// Every dataset the caller may read, with its tags (REST and gRPC).
pub(crate) async fn list_datasets(hub: &Hub, caller: Option<Caller>) -> Result<DatasetList, AppError> {
    let names = dataset_names(hub, caller.as_ref()).await?;
    let tags = &hub.inner.tags;
    let datasets = futures::stream::iter(names)
        .map(|name| async move {
            let records = tags.list(&name).await?;
            Ok::<_, AppError>(DatasetSummary { name, tags: records.into_iter().map(|r| r.tag).collect() })
        })
        .buffered(LIST_PARALLELISM)
        .try_collect()
        .await?;
    Ok(DatasetList { datasets })
}

/// Every dataset the caller may read (all of them without access control), sorted.
pub(crate) async fn dataset_names(hub: &Hub, caller: Option<&Caller>) -> Result<Vec<Name>, AppError> {
    let store = &hub.inner.store;
    let mut names = Vec::new();
    let mut stack = vec![storage::datasets_dir()];
    while let Some(prefix) = stack.pop() {
        let listing = store.list_with_delimiter(Some(&prefix)).await.ctx("listing datasets")?;
        let mut is_dataset = false;
        for child in listing.common_prefixes {
            match child.filename() {
                Some(storage::TAGS_DIR | storage::MANIFESTS_DIR) => is_dataset = true,
                Some(f) if !f.starts_with('_') => stack.push(child),
                _ => {}
            }
        }
        if is_dataset && let Some(name) = storage::name_of_dataset_prefix(&prefix) {
            names.push(name);
        }
    }
    if let Some(c) = caller {
        names.retain(|n| c.can(Permission::Read, n.as_str()));
    }
    names.sort();
    Ok(names)
}

async fn dataset_exists(hub: &Hub, name: &Name) -> Result<bool, AppError> {
    let listing =
        hub.inner.store.list_with_delimiter(Some(&storage::dataset(name))).await.ctx("looking up a dataset")?;
    Ok(listing.common_prefixes.iter().any(|p| matches!(p.filename(), Some(storage::TAGS_DIR | storage::MANIFESTS_DIR))))
}

async fn list_tags(hub: &Hub, name: Name) -> Result<Response, AppError> {
    let tags = tags_of(hub, &name).await?;
    Ok(Json(TagList { name, tags }).into_response())
}

/// The current tags of an existing dataset (REST and gRPC).
pub(crate) async fn tags_of(hub: &Hub, name: &Name) -> Result<Vec<TagRecord>, AppError> {
    if !dataset_exists(hub, name).await? {
        return Err(AppError::not_found("dataset_not_found", format!("dataset {name} does not exist")));
    }
    hub.inner.tags.list(name).await
}

/// Decrements a gauge when dropped, also when the client goes away mid-wait.
struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn inc(g: &Gauge) -> Self {
        g.inc();
        Self(g.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `GET …/tags/{tag}[?wait=SECONDS&since=DIGEST|absent]`.
async fn get_tag(hub: &Hub, name: Name, tag: Tag, req: Request) -> Result<Response, AppError> {
    let q = query(req.uri())?;
    let wait = match q.get("wait") {
        None => 0,
        Some(s) => s
            .parse::<u64>()
            .map_err(|_| AppError::bad_request("invalid_query", format!("wait={s:?}: expected whole seconds")))?
            .min(hub.inner.opts.long_poll_max.as_secs()),
    };
    let since = q.get("since").map(|s| parse::<Expected>(s, "invalid_digest")).transpose()?;
    let tags = &hub.inner.tags;
    let record = match since {
        Some(since) if wait > 0 => {
            let _waiting = GaugeGuard::inc(&hub.inner.metrics.long_polls_waiting);
            tags.wait(&name, &tag, since, Duration::from_secs(wait)).await?
        }
        _ => return Ok(Json(current_tag(hub, &name, &tag).await?).into_response()),
    };
    match record {
        Some(r) if r.digest.is_some() => Ok(Json(r).into_response()),
        _ => Err(tag_not_found(&name, &tag)),
    }
}

/// Where a tag points now; a deleted tag is not found (REST and gRPC).
pub(crate) async fn current_tag(hub: &Hub, name: &Name, tag: &Tag) -> Result<TagRecord, AppError> {
    match hub.inner.tags.current(name, tag).await? {
        Some(r) if r.digest.is_some() => Ok(r),
        _ => Err(tag_not_found(name, tag)),
    }
}

/// `PUT …/tags/{tag}` with a [`SetTagRequest`].
async fn set_tag(hub: &Hub, name: Name, tag: Tag, req: Request) -> Result<Response, AppError> {
    let by = principal(&req);
    let AppJson(body) = AppJson::<SetTagRequest>::from_request(req, &()).await?;
    let record = move_tag(hub, &name, &tag, body.digest, body.expected, &by).await?;
    Ok(Json(record).into_response())
}

/// Moves `tag` to `digest` (compare-and-swap with `expected`) on behalf of
/// `by`: the tag move of REST, the web page and gRPC.
pub(crate) async fn move_tag(
    hub: &Hub,
    name: &Name,
    tag: &Tag,
    digest: Digest,
    expected: Option<Expected>,
    by: &str,
) -> Result<TagRecord, AppError> {
    let body = SetTagRequest { digest, expected };
    let (name, tag) = (name.clone(), tag.clone());
    match hub.inner.store.head(&storage::manifest(&name, &body.digest)).await {
        Ok(_) => {}
        Err(object_store::Error::NotFound { .. }) => {
            return Err(AppError::not_found(
                "manifest_not_found",
                format!("manifest {} is not stored in dataset {name}; publish it first", body.digest),
            ));
        }
        Err(e) => return Err(AppError::storage("looking up a manifest", e)),
    }
    let applied = hub.inner.tags.apply(&name, &tag, Move::Set(body.digest), body.expected, by).await?;
    if applied.moved && being_removed(hub, &name, &body.digest).await? {
        // The tag move's half of the handshake in gc::remove_versions: the
        // version went (or is going) away while the tag moved. Put the tag
        // back, so no tag ever points at a removed version.
        let record = &applied.record;
        let back = record.previous.map_or(Move::Delete, Move::Set);
        let expected = Some(Expected::Digest(body.digest));
        if let Err(e) = hub.inner.tags.apply(&name, &tag, back, expected, by).await {
            tracing::warn!(%name, %tag, error = %e.message, "could not undo a tag move onto a removed version");
        }
        return Err(AppError::conflict(
            "version_removed",
            format!("{name}@{} was removed while the tag moved; the tag was left where it was", body.digest),
        ));
    }
    if applied.moved {
        hub.inner.chunks.tag_moved(&name).await;
        hub.inner.metrics.tag_moves.inc();
        tracing::info!(%name, %tag, digest = %body.digest, %by, "tag moved");
    }
    Ok(applied.record)
}

/// Whether a version is marked for removal or already gone.
async fn being_removed(hub: &Hub, name: &Name, digest: &Digest) -> Result<bool, AppError> {
    let exists = |key: object_store::path::Path| async move {
        match hub.inner.store.head(&key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(AppError::storage("looking up a version", e)),
        }
    };
    Ok(exists(storage::doomed(name, digest)).await? || !exists(storage::manifest(name, digest)).await?)
}

/// `DELETE …/tags/{tag}[?expected=DIGEST]`: appends a deletion record.
async fn delete_tag(hub: &Hub, name: Name, tag: Tag, req: Request) -> Result<Response, AppError> {
    let by = principal(&req);
    let q = query(req.uri())?;
    let expected = q.get("expected").map(|s| parse::<Expected>(s, "invalid_digest")).transpose()?;
    Ok(Json(remove_tag(hub, &name, &tag, expected, &by).await?).into_response())
}

/// Deletes `tag` (compare-and-swap with `expected`): REST, the web page and gRPC.
pub(crate) async fn remove_tag(
    hub: &Hub,
    name: &Name,
    tag: &Tag,
    expected: Option<Expected>,
    by: &str,
) -> Result<TagRecord, AppError> {
    let applied = hub.inner.tags.apply(name, tag, Move::Delete, expected, by).await?;
    hub.inner.metrics.tag_moves.inc();
    tracing::info!(%name, %tag, %by, "tag deleted");
    Ok(applied.record)
}

/// `GET …/manifests`: every stored version, oldest first.
async fn list_versions(hub: &Hub, name: Name) -> Result<Response, AppError> {
    let versions = versions_of(hub, &name).await?;
    Ok(Json(VersionList { name, versions }).into_response())
}

/// Every stored version of an existing dataset (REST and gRPC).
pub(crate) async fn versions_of(hub: &Hub, name: &Name) -> Result<Vec<VersionEntry>, AppError> {
    if !dataset_exists(hub, name).await? {
        return Err(AppError::not_found("dataset_not_found", format!("dataset {name} does not exist")));
    }
    stored_versions(hub, name).await
}

/// Every stored version of `name`, oldest first.
pub(crate) async fn stored_versions(hub: &Hub, name: &Name) -> Result<Vec<VersionEntry>, AppError> {
    let metas: Vec<object_store::ObjectMeta> =
        hub.inner.store.list(Some(&storage::manifests_dir(name))).try_collect().await.ctx("listing versions")?;
    let mut versions: Vec<VersionEntry> = metas
        .into_iter()
        .filter_map(|m| {
            let digest = storage::parse_manifest(&m.location)?;
            Some(VersionEntry { digest, size: m.size, stored_at: stored_at(&m) })
        })
        .collect();
    versions.sort_by(|a, b| (&a.stored_at, a.digest.hex()).cmp(&(&b.stored_at, b.digest.hex())));
    Ok(versions)
}

/// An object's modification time, as RFC 3339.
fn stored_at(m: &object_store::ObjectMeta) -> String {
    let nanos = i128::from(m.last_modified.timestamp_nanos_opt().unwrap_or(0));
    crate::tags::rfc3339(
        time::OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
    )
}

/// `DELETE …/manifests/{digest}`: removes a version no tag points at. Its
/// chunks stay until garbage collection; tag histories that name it stay.
async fn delete_version(hub: &Hub, name: Name, digest: Digest, req: Request) -> Result<Response, AppError> {
    remove_version(hub, &name, digest, &principal(&req)).await?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// Removes a version no tag points at (REST and gRPC).
pub(crate) async fn remove_version(hub: &Hub, name: &Name, digest: Digest, by: &str) -> Result<(), AppError> {
    let name = name.clone();
    let key = storage::manifest(&name, &digest);
    match hub.inner.store.head(&key).await {
        Ok(_) => {}
        Err(object_store::Error::NotFound { .. }) => {
            return Err(AppError::not_found("manifest_not_found", format!("{name}@{digest} does not exist")));
        }
        Err(e) => return Err(AppError::storage("looking up a manifest", e)),
    }
    let holding: Vec<String> = hub
        .inner
        .tags
        .list(&name)
        .await?
        .into_iter()
        .filter(|r| r.digest == Some(digest))
        .map(|r| r.tag.to_string())
        .collect();
    if !holding.is_empty() {
        return Err(AppError::conflict(
            "version_tagged",
            format!("{name}@{digest} is tagged {}: remove or move those tags first", holding.join(", ")),
        ));
    }
    if crate::gc::remove_versions(hub, &name, &[digest]).await?.is_empty() {
        return Err(AppError::conflict("version_tagged", format!("{name}@{digest} was tagged meanwhile; it stays")));
    }
    hub.inner.metrics.versions_deleted.inc();
    tracing::info!(%name, %digest, %by, "version deleted");
    Ok(())
}

/// `GET …/tags/{tag}/history`, oldest first.
async fn history(hub: &Hub, name: Name, tag: Tag) -> Result<Response, AppError> {
    let records = tag_history(hub, &name, &tag).await?;
    let mut res = Json(TagHistory { name, tag, records }).into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    Ok(res)
}

/// Every move of a tag that exists or existed, oldest first (REST and gRPC).
pub(crate) async fn tag_history(hub: &Hub, name: &Name, tag: &Tag) -> Result<Vec<TagRecord>, AppError> {
    let records = hub.inner.tags.history(name, tag).await?;
    if records.is_empty() {
        return Err(tag_not_found(name, tag));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(rest: &str) -> Option<(&'static str, Vec<&str>)> {
        shape(rest).map(|s| {
            let t = s.template();
            let v = match s {
                Shape::Tags { name } => vec![name],
                Shape::Tag { name, tag } | Shape::History { name, tag } => vec![name, tag],
                Shape::Manifest { name, digest } => vec![name, digest],
                Shape::Manifests { name } | Shape::Missing { name } | Shape::Leases { name } => vec![name],
                Shape::Pack { name, digest } | Shape::Placement { name, digest } => vec![name, digest],
                Shape::Lease { name, reader } => vec![name, reader],
            };
            (t, v)
        })
    }

    #[test]
    fn parses_from_the_right() {
        assert_eq!(parts("acme/geoip/tags"), Some((TAGS, vec!["acme/geoip"])));
        assert_eq!(parts("acme/geoip/tags/latest"), Some((TAG, vec!["acme/geoip", "latest"])));
        assert_eq!(parts("a/tags/v1/history"), Some((HISTORY, vec!["a", "v1"])));
        assert_eq!(parts("a/tags/history"), Some((TAG, vec!["a", "history"])));
        assert_eq!(parts("a/b/c/manifests/xyz"), Some((MANIFEST, vec!["a/b/c", "xyz"])));
        assert_eq!(parts("a/b/manifests"), Some((MANIFESTS, vec!["a/b"])));
        assert_eq!(parts("manifests"), None);
        assert_eq!(parts("a/b/packs/xyz"), Some((PACK, vec!["a/b", "xyz"])));
        assert_eq!(parts("a/chunks/missing"), Some((MISSING, vec!["a"])));
        assert_eq!(parts("a/b/leases"), Some((LEASES, vec!["a/b"])));
        assert_eq!(parts("a/b/manifests/xyz/placement"), Some((PLACEMENT, vec!["a/b", "xyz"])));
        assert_eq!(parts("a/leases/pod-1"), Some((LEASE, vec!["a", "pod-1"])));
        assert_eq!(parts("tags/tags"), Some((TAGS, vec!["tags"])));
        assert_eq!(parts("tags"), None);
        assert_eq!(parts("/tags"), None);
        assert_eq!(parts("acme"), None);
        assert_eq!(parts("acme/geoip"), None);
        assert_eq!(parts(""), None);
    }
}
