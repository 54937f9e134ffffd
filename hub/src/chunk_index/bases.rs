//! The base versions of a dataset: the versions its tags point at, with
//! their placements (where every chunk of the version is stored). A push
//! into a dataset almost always starts from one of them, so their chunks are
//! what dedup must find, whatever else the store holds.
//!
//! Both are caches over the store: the tag list for a few seconds, the
//! placements (immutable but for garbage collection's rewrites, which only
//! move chunks out of packs it then condemns) bounded in bytes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use aetherfs_format::placement::PlacedChunk;
use aetherfs_format::{Digest, Name, Placement};
use axum::http::StatusCode;
use futures::{StreamExt, TryStreamExt};

use crate::error::{AppError, StorageContext};
use crate::storage;
use crate::tags::TagStore;

/// Versions of one dataset that count as bases: the newest tag moves first.
pub(super) const BASES_MAX: usize = 8;
/// How long a dataset's list of bases is reused before the tags are read again.
const BASES_TTL: Duration = Duration::from_secs(5);
/// Longest a placement is reused before it is read again.
const PLACEMENT_TTL: Duration = Duration::from_secs(600);
/// How long the packs of all of a dataset's placements are reused.
const PLACED_TTL: Duration = Duration::from_secs(5);
/// Placements read at once for [`Bases::placed`].
const PLACED_PARALLELISM: usize = 16;
/// Memory for [`Bases::placed`] sets, all datasets together.
const PLACED_CAP_BYTES: u64 = 16 << 20;

pub(super) struct Bases {
    versions: moka::future::Cache<Name, Arc<Vec<Digest>>>,
    placements: moka::future::Cache<(Name, Digest), Arc<Placement>>,
    placed: moka::future::Cache<Name, Arc<HashSet<Digest>>>,
}

/// Memory one placement takes, estimated.
fn weight(p: &Placement) -> u32 {
    let bytes = 64 + p.len() * std::mem::size_of::<PlacedChunk>();
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl Bases {
    pub fn new(cap_bytes: u64) -> Self {
        Self {
            versions: moka::future::Cache::builder().max_capacity(10_000).time_to_live(BASES_TTL).build(),
            placements: moka::future::Cache::builder()
                .max_capacity(cap_bytes)
                .weigher(|_, p: &Arc<Placement>| weight(p))
                .time_to_live(PLACEMENT_TTL)
                .build(),
            placed: moka::future::Cache::builder()
                .max_capacity(PLACED_CAP_BYTES)
                .weigher(|_, s: &Arc<HashSet<Digest>>| u32::try_from(64 + s.len() * 40).unwrap_or(u32::MAX))
                .time_to_live(PLACED_TTL)
                .build(),
        }
    }

    /// Every pack a placement of `name` uses, its versions tagged or not
    /// (one LIST and a GET per placement; concurrent callers share one read,
    /// reused for [`PLACED_TTL`]). The last way a replica that knows neither
    /// the pack's record nor a link learns that `name` may read the pack.
    pub async fn placed(
        &self,
        store: &Arc<dyn object_store::ObjectStore>,
        name: &Name,
    ) -> Result<Arc<HashSet<Digest>>, AppError> {
        self.placed
            .try_get_with(name.clone(), async {
                let metas: Vec<object_store::ObjectMeta> =
                    store.list(Some(&storage::placements_dir(name))).try_collect().await.ctx("listing placements")?;
                let sets: Vec<Vec<Digest>> = futures::stream::iter(metas)
                    .map(|m| async move {
                        let Some(bytes) = storage::get_bytes(&**store, &m.location).await.ctx("reading a placement")?
                        else {
                            return Ok(Vec::new());
                        };
                        crate::routes::blocking("decoding a placement", move || {
                            let p = Placement::decode(&bytes)
                                .map_err(|e| AppError::internal("decoding a stored placement", e))?;
                            Ok(p.packs().into_iter().collect())
                        })
                        .await
                    })
                    .buffer_unordered(PLACED_PARALLELISM)
                    .try_collect()
                    .await?;
                Ok::<_, AppError>(Arc::new(sets.into_iter().flatten().collect()))
            })
            .await
            .map_err(|e| AppError::new(e.status, e.code, e.message.clone()))
    }

    /// The placements of `name`'s base versions, newest first.
    pub async fn of(
        &self,
        tags: &TagStore,
        store: &Arc<dyn object_store::ObjectStore>,
        name: &Name,
    ) -> Result<Vec<Arc<Placement>>, AppError> {
        let versions = self
            .versions
            .try_get_with(name.clone(), async {
                let mut records = tags.list(name).await?;
                // RFC 3339 UTC times of one format: text order is time order.
                records.sort_by(|a, b| b.at.cmp(&a.at));
                let mut out: Vec<Digest> = Vec::new();
                for d in records.iter().filter_map(|r| r.digest) {
                    if !out.contains(&d) && out.len() < BASES_MAX {
                        out.push(d);
                    }
                }
                Ok::<_, AppError>(Arc::new(out))
            })
            .await
            .map_err(|e| AppError::new(e.status, e.code, e.message.clone()))?;
        let mut out = Vec::with_capacity(versions.len());
        for d in versions.iter() {
            let key = (name.clone(), *d);
            let loaded = self
                .placements
                .try_get_with(key, async {
                    let bytes = storage::get_bytes(&**store, &storage::placement(name, d))
                        .await
                        .ctx("reading a placement")?
                        .ok_or_else(|| AppError::not_found("placement_not_found", "deleted since it was tagged"))?;
                    let p = crate::routes::blocking("decoding a placement", move || {
                        Placement::decode(&bytes).map_err(|e| AppError::internal("decoding a stored placement", e))
                    })
                    .await?;
                    Ok::<_, AppError>(Arc::new(p))
                })
                .await;
            match loaded {
                Ok(p) => out.push(p),
                // A deleted or broken base costs dedup, not the push.
                Err(e) if e.status == StatusCode::NOT_FOUND => {}
                Err(e) => tracing::warn!(%name, version = %d, error = %e.message, "skipping a base version"),
            }
        }
        Ok(out)
    }

    /// Reads `name`'s tags again next time.
    pub async fn forget(&self, name: &Name) {
        self.versions.invalidate(name).await;
    }

    /// Drops what may name packs that garbage collection moved chunks out of.
    pub fn invalidate(&self) {
        self.placements.invalidate_all();
        self.versions.invalidate_all();
        self.placed.invalidate_all();
    }

    pub fn bytes(&self) -> u64 {
        self.placements.weighted_size()
    }
}

/// Where `d` is in a placement, with its plaintext length.
pub(super) fn locate(p: &Placement, d: &Digest) -> Option<PlacedChunk> {
    let chunks = p.chunks();
    chunks.binary_search_by_key(d, |c| c.digest).ok().map(|i| chunks[i])
}
