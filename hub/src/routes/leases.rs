//! `PUT /v1/datasets/{name}/leases/{reader}`: a reader (an agent) says which
//! versions of `name` it serves. Garbage collection keeps every version a
//! lease in force names, whatever retention says; `gc --dry-run` lists them
//! with their readers. Needs only read permission: whoever may read a
//! version may protect it while reading.
//!
//! `GET /v1/datasets/{name}/leases` lists them (read permission): who reads
//! which version, and what they read, for `aetherfs usage`.

use aetherfs_format::Name;
use aetherfs_format::api::{LEASE_VERSIONS_MAX, Lease, LeaseList, LeaseRequest, valid_reader};
use axum::Json;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use object_store::{ObjectStoreExt, PutPayload};

use super::AppJson;
use crate::Hub;
use crate::error::{AppError, StorageContext};
use crate::storage;

pub(crate) async fn put(hub: &Hub, name: Name, reader: &str, req: Request) -> Result<Response, AppError> {
    if !valid_reader(reader) {
        return Err(AppError::bad_request(
            "invalid_reader",
            "a reader id is 1-128 of [A-Za-z0-9._-], not starting with '.' or '-'",
        ));
    }
    let AppJson(body) = AppJson::<LeaseRequest>::from_request(req, &()).await?;
    if body.versions.len() > LEASE_VERSIONS_MAX || body.served.len() > LEASE_VERSIONS_MAX {
        return Err(AppError::bad_request(
            "too_many_versions",
            format!("a lease names at most {LEASE_VERSIONS_MAX} versions"),
        ));
    }
    let mut versions = body.versions;
    versions.sort();
    versions.dedup();
    let now = time::OffsetDateTime::now_utc();
    let lease_secs = hub.inner.opts.lifecycle.gc.lease.as_secs();
    let lease = Lease {
        name: name.clone(),
        reader: reader.to_string(),
        versions,
        renewed_at: crate::tags::rfc3339(now),
        expires_unix: u64::try_from(now.unix_timestamp()).unwrap_or(0) + lease_secs,
        lease_secs,
        served: body.served,
    };
    let bytes = serde_json::to_vec(&lease).map_err(|e| AppError::internal("encoding a lease", e))?;
    hub.inner.store.put(&storage::lease(&name, reader), PutPayload::from(bytes)).await.ctx("storing a lease")?;
    hub.inner.metrics.lease_renewals.inc();
    Ok(Json(lease).into_response())
}

/// Leases read for one listing: a dataset with more readers lists these.
pub(crate) const LEASES_LISTED_MAX: usize = 10_000;
/// Leases read at once.
const LIST_PARALLELISM: usize = 16;

/// `GET /v1/datasets/{name}/leases`: every stored lease, by reader. An
/// unreadable or foreign object under the prefix is skipped.
pub(crate) async fn list(hub: &Hub, name: Name) -> Result<Response, AppError> {
    let leases = read(hub, &name).await?;
    Ok(Json(LeaseList { name, leases }).into_response())
}

/// Every stored lease of `name`, by reader (the listing and the web page).
pub(crate) async fn read(hub: &Hub, name: &Name) -> Result<Vec<Lease>, AppError> {
    use futures::{StreamExt, TryStreamExt};
    let store = &hub.inner.store;
    let prefix = storage::leases_prefix(name);
    let keys: Vec<object_store::path::Path> = store
        .list(Some(&prefix))
        .map_ok(|m| m.location)
        .take(LEASES_LISTED_MAX)
        .try_collect()
        .await
        .ctx("listing leases")?;
    let mut leases: Vec<Lease> = futures::stream::iter(keys)
        .map(|k| async move { storage::get_bytes(&**store, &k).await.ctx("reading a lease") })
        .buffer_unordered(LIST_PARALLELISM)
        .try_collect::<Vec<_>>()
        .await?
        .into_iter()
        .flatten()
        .filter_map(|b| serde_json::from_slice::<Lease>(&b).ok())
        .filter(|l| &l.name == name)
        .collect();
    leases.sort_by(|a, b| a.reader.cmp(&b.reader));
    Ok(leases)
}
