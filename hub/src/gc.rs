//! Garbage collection: remove the versions nothing keeps, then reclaim the
//! space of chunks nothing references, rewriting packs that are mostly dead.
//!
//! One run, holding the store-wide lock (`gc/lock`, renewed while it runs, so
//! two hubs on one store never collect at once):
//!
//! 1. **Decide.** List everything under `datasets/`; per dataset read the tag
//!    histories and leases, and apply the retention rule (lifecycle.rs). A
//!    version is kept if a tag points at it, the rule keeps it (last N of a
//!    tag's history, younger than a duration), it is younger than the grace
//!    period, or a reader's lease names it. The rest is removed (manifest,
//!    then placement), each behind a `_doomed` marker that a concurrent tag
//!    move checks after writing (see [`remove_versions`]).
//! 2. **Mark.** Read the placement of every kept version and of every
//!    placement without a manifest that is still young (a publish in flight,
//!    whose packs are also pinned: never moved or deleted this run), and of
//!    `_pending` records older hubs wrote: their chunks are live.
//! 3. **Choose.** A pack with nothing live and older than the grace period is
//!    deleted. Packs with live chunks are rewritten, least-live first, until
//!    at most `max_unused` of the stored bytes would be dead; packs are
//!    grouped by the datasets linked to them (link objects and the uploader
//!    its record names), so a new pack is linked to exactly those; the
//!    rewritten placements let their datasets read it, as before.
//! 4. **Move.** Copy the live chunks of chosen packs into new packs (verified
//!    before they are stored), then rewrite every placement that pointed into
//!    them. Versions keep their digests: only placements change.
//! 5. **Condemn, re-check, delete.** Write `gc/condemned/<pack>` for every
//!    pack to delete, then list placements and pending publishes again and
//!    re-read what changed since step 2: a pack someone started using is
//!    rescued. The rest is deleted (record, pack, links). Moved-from packs are
//!    deleted only once condemned for the grace period, so readers holding
//!    the old placement keep working until they refetch it.
//!
//! A publish does the mirror image (routes/manifests.rs): it stores its
//! placement, then lists `gc/condemned/` and checks every pack it uses is
//! still stored; only then does it store the manifest. With a linearizable
//! store (S3, local files), either the publish sees the marker (and refuses
//! with `missing_chunks`; the client uploads again), or this run's re-check
//! sees the new placement (and rescues the pack). A run killed at any point leaves every published
//! version readable; the next run finishes the job.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aetherfs_format::api::{GcDataset, GcHeld, GcReport, GcRequest, GcVersion, Lease};
use aetherfs_format::pack::{PackBuilder, verify_pack};
use aetherfs_format::{ChunkLocation, Compression, Digest, Name, Placement, Tag};
use axum::http::StatusCode;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutPayload};

use crate::Hub;
use crate::chunk_index::log::{PackRecord, commit};
use crate::error::{AppError, StorageContext};
use crate::storage::{self, get_bytes};

/// A pending publish (or a placement without its manifest) older than this
/// is a publish that crashed: it no longer keeps anything alive.
pub(crate) const PENDING_MAX_AGE: Duration = Duration::from_secs(3600);
/// Objects read at once.
const PARALLELISM: usize = 16;
/// Plaintext bytes per pack written by a rewrite.
const REPACK_TARGET: usize = 32 << 20;
/// Live chunks closer than this are read in one range request.
const COALESCE_GAP: u64 = 1 << 20;
/// Leases expired longer than this are deleted.
const LEASE_KEEP: Duration = Duration::from_secs(7 * 86_400);

/// Where a test may make the hub die mid-collection: with
/// `AETHERFS_TEST_GC_CRASH_AT=<point>` in its environment, the hub aborts
/// there, as a kill -9 would stop it. The points: `removed-versions`,
/// `wrote-pack`, `rewrote-placement`, `condemned`, `deleted-pack`.
fn crash_point(point: &str) {
    if std::env::var("AETHERFS_TEST_GC_CRASH_AT").is_ok_and(|p| p == point) {
        eprintln!("aetherfs hub: crashing at gc point {point} (AETHERFS_TEST_GC_CRASH_AT)");
        std::process::abort();
    }
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn age(meta_modified: i64, now: u64) -> Duration {
    Duration::from_secs(now.saturating_sub(u64::try_from(meta_modified).unwrap_or(0)))
}

/// Every pack under `gc/condemned/`, with when it was condemned (unix seconds).
pub(crate) async fn condemned(store: &dyn ObjectStore) -> Result<HashMap<Digest, i64>, AppError> {
    let metas: Vec<ObjectMeta> =
        store.list(Some(&storage::condemned_dir())).try_collect().await.ctx("listing condemned packs")?;
    Ok(metas.iter().filter_map(|m| Some((storage::parse_hex_key(&m.location)?, m.last_modified.timestamp()))).collect())
}

pub(crate) async fn condemned_packs(store: &dyn ObjectStore) -> Result<HashSet<Digest>, AppError> {
    Ok(condemned(store).await?.into_keys().collect())
}

fn gc_running(why: String) -> AppError {
    AppError::conflict("gc_running", why)
}

/// The store-wide lock: created if absent, renewed by a task while held.
struct Lock {
    store: Arc<dyn ObjectStore>,
    owner: String,
    ttl: Duration,
    /// Unix milliseconds of the last successful renewal.
    renewed: Arc<AtomicU64>,
    renewer: tokio::task::JoinHandle<()>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct LockBody {
    owner: String,
    expires_unix: u64,
}

impl Lock {
    async fn acquire(store: Arc<dyn ObjectStore>, ttl: Duration) -> Result<Lock, AppError> {
        let owner = format!("{:016x}", rand::random::<u64>());
        let body = |owner: &str| {
            serde_json::to_vec(&LockBody { owner: owner.to_string(), expires_unix: now_unix() + ttl.as_secs() })
                .unwrap_or_default()
        };
        for _ in 0..2 {
            let put = store.put_opts(&storage::gc_lock(), PutPayload::from(body(&owner)), PutMode::Create.into()).await;
            match put {
                Ok(_) => {
                    let renewed = Arc::new(AtomicU64::new(now_millis()));
                    let renewer = tokio::spawn(renew(store.clone(), owner.clone(), renewed.clone(), ttl));
                    return Ok(Lock { store, owner, ttl, renewed, renewer });
                }
                Err(object_store::Error::AlreadyExists { .. }) => {
                    let held = get_bytes(&*store, &storage::gc_lock()).await.ctx("reading the gc lock")?;
                    let held: Option<LockBody> = held.and_then(|b| serde_json::from_slice(&b).ok());
                    match held {
                        Some(h) if h.expires_unix > now_unix() => {
                            return Err(gc_running(format!(
                                "another garbage collection is running (lock {} held for {} more seconds)",
                                h.owner,
                                h.expires_unix - now_unix()
                            )));
                        }
                        // Expired (its holder died) or unreadable: break it and retry once.
                        _ => {
                            tracing::warn!("breaking an expired gc lock");
                            let _ = store.delete(&storage::gc_lock()).await;
                        }
                    }
                }
                Err(e) => return Err(AppError::storage("taking the gc lock", e)),
            }
        }
        Err(gc_running("another garbage collection took the lock first".into()))
    }

    /// Fails unless the lock was renewed recently enough that no one else
    /// can have broken it: checked before every destructive step.
    fn check(&self) -> Result<(), AppError> {
        let since = now_millis().saturating_sub(self.renewed.load(Ordering::SeqCst));
        if since * 2 >= self.ttl.as_millis() as u64 {
            return Err(gc_running(format!("lost the gc lock (not renewed for {since} ms); stopping")));
        }
        Ok(())
    }

    async fn release(self) {
        self.renewer.abort();
        if let Ok(Some(b)) = get_bytes(&*self.store, &storage::gc_lock()).await
            && serde_json::from_slice::<LockBody>(&b).is_ok_and(|h| h.owner == self.owner)
        {
            let _ = self.store.delete(&storage::gc_lock()).await;
        }
    }
}

async fn renew(store: Arc<dyn ObjectStore>, owner: String, renewed: Arc<AtomicU64>, ttl: Duration) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        // Renew only a lock that is still ours.
        let ours = matches!(get_bytes(&*store, &storage::gc_lock()).await, Ok(Some(b))
            if serde_json::from_slice::<LockBody>(&b).is_ok_and(|h| h.owner == owner));
        if !ours {
            return;
        }
        let body = LockBody { owner: owner.clone(), expires_unix: now_unix() + ttl.as_secs() };
        let Ok(bytes) = serde_json::to_vec(&body) else { return };
        if store.put(&storage::gc_lock(), PutPayload::from(bytes)).await.is_ok() {
            renewed.store(now_millis(), Ordering::SeqCst);
        }
    }
}

/// What one listing of `datasets/` holds for one dataset.
#[derive(Default)]
struct DatasetInv {
    manifests: HashMap<Digest, i64>,
    /// Placement key → (modified, e_tag), for the re-check.
    placements: HashMap<Digest, (i64, Option<String>)>,
    pending: HashMap<Digest, i64>,
    tags: BTreeSet<Tag>,
    leases: Vec<Path>,
    doomed: Vec<Digest>,
}

async fn inventory(store: &dyn ObjectStore) -> Result<HashMap<Name, DatasetInv>, AppError> {
    let metas: Vec<ObjectMeta> =
        store.list(Some(&storage::datasets_dir())).try_collect().await.ctx("listing datasets")?;
    let mut out: HashMap<Name, DatasetInv> = HashMap::new();
    for m in metas {
        let parts: Vec<String> = m.location.parts().map(|p| p.as_ref().to_string()).collect();
        let Some(i) = parts.iter().position(|p| p.starts_with('_')) else { continue };
        if i < 2 || parts.len() < i + 2 {
            continue;
        }
        let Ok(name) = parts[1..i].join("/").parse::<Name>() else { continue };
        let inv = out.entry(name).or_default();
        let modified = m.last_modified.timestamp();
        let digest = || Digest::from_hex(&parts[i + 1]).ok();
        match parts[i].as_str() {
            storage::MANIFESTS_DIR => {
                if let Some(d) = digest() {
                    inv.manifests.insert(d, modified);
                }
            }
            storage::PLACEMENTS_DIR => {
                if let Some(d) = digest() {
                    inv.placements.insert(d, (modified, m.e_tag.clone()));
                }
            }
            storage::PENDING_DIR => {
                if let Some(d) = digest() {
                    inv.pending.insert(d, modified);
                }
            }
            storage::DOOMED_DIR => {
                if let Some(d) = digest() {
                    inv.doomed.push(d);
                }
            }
            storage::TAGS_DIR => {
                if let Ok(t) = parts[i + 1].parse() {
                    inv.tags.insert(t);
                }
            }
            storage::LEASES_DIR => inv.leases.push(m.location.clone()),
            _ => {}
        }
    }
    Ok(out)
}

/// Why a version stays.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    Tagged,
    History,
    Young,
    Grace,
    Leased,
}

struct Decision {
    keep: HashMap<Digest, Keep>,
    remove: Vec<GcVersion>,
    held: Vec<GcHeld>,
}

/// Applies retention to one dataset.
async fn decide(
    hub: &Hub,
    name: &Name,
    inv: &DatasetInv,
    grace: Duration,
    now: u64,
) -> Result<(Decision, Vec<Lease>), AppError> {
    let lifecycle = &hub.inner.opts.lifecycle;
    let rule = lifecycle.rule_for(name.as_str());
    let rule_text = rule.map_or_else(|| "default".to_string(), |(i, r)| format!("rule {i} ({})", r.datasets));
    let mut heads = HashSet::new();
    let mut history = HashSet::new();
    let keep_last = rule.and_then(|(_, r)| r.keep_last);
    for tag in &inv.tags {
        let records = hub.inner.tags.history(name, tag).await?;
        if let Some(d) = records.last().and_then(|r| r.digest) {
            heads.insert(d);
        }
        if let Some(n) = keep_last {
            let mut distinct = Vec::new();
            for d in records.iter().rev().filter_map(|r| r.digest) {
                if !distinct.contains(&d) {
                    distinct.push(d);
                }
                if distinct.len() == n {
                    break;
                }
            }
            history.extend(distinct);
        }
    }
    let leases = read_leases(hub, &inv.leases).await?;
    let mut leased: HashMap<Digest, Vec<String>> = HashMap::new();
    let mut expired: HashMap<Digest, Vec<String>> = HashMap::new();
    for l in &leases {
        let map = if l.expires_unix > now { &mut leased } else { &mut expired };
        for d in &l.versions {
            map.entry(*d).or_default().push(l.reader.clone());
        }
    }
    let young = rule.and_then(|(_, r)| r.keep_younger_than);
    let mut d = Decision { keep: HashMap::new(), remove: Vec::new(), held: Vec::new() };
    let mut digests: Vec<(&Digest, &i64)> = inv.manifests.iter().collect();
    digests.sort();
    for (digest, modified) in digests {
        let a = age(*modified, now);
        let keep = if heads.contains(digest) {
            Some(Keep::Tagged)
        } else if history.contains(digest) {
            Some(Keep::History)
        } else if young.is_some_and(|y| a < y) {
            Some(Keep::Young)
        } else if a < grace {
            Some(Keep::Grace)
        } else if let Some(readers) = leased.get(digest) {
            d.held.push(GcHeld { name: name.clone(), digest: *digest, readers: readers.clone() });
            Some(Keep::Leased)
        } else {
            None
        };
        match keep {
            Some(k) => {
                d.keep.insert(*digest, k);
            }
            None => {
                let reason = match (keep_last, young) {
                    (Some(n), Some(y)) => format!(
                        "untagged, not among the last {n} of any tag, older than {}",
                        aetherfs_util::format_duration(y)
                    ),
                    (Some(n), None) => format!("untagged and not among the last {n} of any tag"),
                    (None, Some(y)) => format!("untagged and older than {}", aetherfs_util::format_duration(y)),
                    (None, None) => "no tag points at it".to_string(),
                };
                d.remove.push(GcVersion {
                    name: name.clone(),
                    digest: *digest,
                    rule: rule_text.clone(),
                    reason,
                    readers: expired.get(digest).cloned().unwrap_or_default(),
                });
            }
        }
    }
    Ok((d, leases))
}

async fn read_leases(hub: &Hub, keys: &[Path]) -> Result<Vec<Lease>, AppError> {
    let store = &hub.inner.store;
    let leases: Vec<Option<Bytes>> = futures::stream::iter(keys.iter().cloned())
        .map(|k| async move { get_bytes(&**store, &k).await.ctx("reading a lease") })
        .buffered(PARALLELISM)
        .try_collect()
        .await?;
    Ok(leases.into_iter().flatten().filter_map(|b| serde_json::from_slice(&b).ok()).collect())
}

/// Removes versions behind `_doomed` markers, re-reading the tags after
/// writing them: a version a tag points at by then is kept. A tag move does
/// the mirror image (it checks for the marker after writing its record), so a
/// tag never ends up on a removed version. Returns the versions removed.
pub(crate) async fn remove_versions(hub: &Hub, name: &Name, digests: &[Digest]) -> Result<Vec<Digest>, AppError> {
    let store = &hub.inner.store;
    for d in digests {
        store.put(&storage::doomed(name, d), PutPayload::default()).await.ctx("marking a version for removal")?;
    }
    let tagged: HashSet<Digest> = hub.inner.tags.list(name).await?.into_iter().filter_map(|r| r.digest).collect();
    let mut removed = Vec::new();
    for d in digests {
        if !tagged.contains(d) {
            store.delete(&storage::manifest(name, d)).await.ctx("deleting a manifest")?;
            delete_if_present(&**store, &storage::placement(name, d)).await?;
            removed.push(*d);
        }
        delete_if_present(&**store, &storage::doomed(name, d)).await?;
    }
    Ok(removed)
}

async fn delete_if_present(store: &dyn ObjectStore, key: &Path) -> Result<(), AppError> {
    match store.delete(key).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(AppError::storage("deleting", e)),
    }
}

/// One live chunk of a pack.
#[derive(Clone, Copy)]
struct LiveChunk {
    digest: Digest,
    len: u32,
    offset: u64,
    stored_len: u32,
    compression: Compression,
}

/// Placements read during the mark, to rewrite and to re-check.
struct Marked {
    /// (dataset, version) → (placement, e_tag it had).
    placements: HashMap<(Name, Digest), (Placement, Option<String>)>,
    /// Pack → live chunks by offset.
    live: HashMap<Digest, HashMap<u64, LiveChunk>>,
    /// Packs a pending publish uses: never moved or deleted this run.
    pinned: HashSet<Digest>,
}

impl Marked {
    fn add(&mut self, p: &Placement) {
        for c in p.chunks() {
            let l = c.location;
            self.live.entry(l.pack).or_default().insert(
                l.offset,
                LiveChunk {
                    digest: c.digest,
                    len: c.len,
                    offset: l.offset,
                    stored_len: l.stored_len,
                    compression: l.compression,
                },
            );
        }
    }
}

async fn read_placement(store: &dyn ObjectStore, key: &Path) -> Result<Option<Placement>, AppError> {
    let Some(bytes) = get_bytes(store, key).await.ctx("reading a placement")? else { return Ok(None) };
    match Placement::decode(&bytes) {
        Ok(p) => Ok(Some(p)),
        Err(e) => Err(AppError::internal(
            "decoding a stored placement",
            format!("{key} is corrupt ({e}); refusing to collect anything until it is repaired"),
        )),
    }
}

async fn mark(
    hub: &Hub,
    inv: &HashMap<Name, DatasetInv>,
    kept: &HashMap<Name, HashSet<Digest>>,
    now: u64,
) -> Result<Marked, AppError> {
    let store = &hub.inner.store;
    let mut marked = Marked { placements: HashMap::new(), live: HashMap::new(), pinned: HashSet::new() };
    // Kept versions, and young placements without a manifest (a publish that
    // has stored its placement but not yet its manifest).
    let mut todo: Vec<(Name, Digest, Option<String>, bool)> = Vec::new();
    let mut pending: Vec<(Name, Digest)> = Vec::new();
    for (name, i) in inv {
        let keep = kept.get(name);
        for (d, (modified, etag)) in &i.placements {
            let in_flight = !i.manifests.contains_key(d) && age(*modified, now) < PENDING_MAX_AGE;
            if keep.is_some_and(|k| k.contains(d)) || in_flight {
                todo.push((name.clone(), *d, etag.clone(), in_flight));
            }
        }
        for (d, modified) in &i.pending {
            if age(*modified, now) < PENDING_MAX_AGE {
                pending.push((name.clone(), *d));
            }
        }
        if let Some(k) = keep {
            for d in k {
                if !i.placements.contains_key(d) {
                    return Err(AppError::internal(
                        "marking",
                        format!("{name}@{d} has no placement; refusing to collect until it is repaired"),
                    ));
                }
            }
        }
    }
    type Read = (Name, Digest, Option<String>, bool, Option<Placement>);
    let read: Vec<Read> = futures::stream::iter(todo)
        .map(|(name, d, etag, in_flight)| async move {
            let p = read_placement(&**store, &storage::placement(&name, &d)).await?;
            Ok::<_, AppError>((name, d, etag, in_flight, p))
        })
        .buffer_unordered(PARALLELISM)
        .try_collect()
        .await?;
    for (name, d, etag, in_flight, p) in read {
        if let Some(p) = p {
            if in_flight {
                // A publish checking its packs: none may move under it.
                marked.pinned.extend(p.packs());
            }
            marked.add(&p);
            marked.placements.insert((name, d), (p, etag));
        }
    }
    for (name, d) in pending {
        if let Some(p) = read_placement(&**store, &storage::pending(&name, &d)).await? {
            marked.pinned.extend(p.packs());
            marked.add(&p);
        }
    }
    Ok(marked)
}

/// A pack as listed.
struct PackInv {
    size: Option<u64>,
    modified: i64,
    indexed: bool,
    /// Link objects.
    links: Vec<Name>,
    /// Its records in the pack log (a retried upload may have written two).
    records: Vec<Path>,
}

impl PackInv {
    /// Every dataset linked to the pack: link objects and the uploaders its
    /// records name (read from the store: only for packs being rewritten).
    async fn readers(&self, store: &dyn ObjectStore) -> Result<Vec<Name>, AppError> {
        let mut out = self.links.clone();
        for key in &self.records {
            let Some(body) = get_bytes(store, key).await.ctx("reading a pack record")? else { continue };
            if let Ok(Some(r)) = PackRecord::decode(&body) {
                out.extend(r.uploader);
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

async fn pack_inventory(store: &dyn ObjectStore) -> Result<HashMap<Digest, PackInv>, AppError> {
    let mut metas: Vec<ObjectMeta> =
        store.list(Some(&storage::packs_dir())).try_collect().await.ctx("listing packs")?;
    let log: Vec<ObjectMeta> =
        store.list(Some(&storage::pack_log_dir())).try_collect().await.ctx("listing the pack log")?;
    metas.extend(log);
    let mut out: HashMap<Digest, PackInv> = HashMap::new();
    let blank = || PackInv { size: None, modified: 0, indexed: false, links: Vec::new(), records: Vec::new() };
    for m in metas {
        if let Some((_, d)) = storage::parse_pack_log(&m.location) {
            let p = out.entry(d).or_insert_with(blank);
            p.indexed = true;
            p.modified = p.modified.max(m.last_modified.timestamp());
            p.records.push(m.location);
            continue;
        }
        if let Some((pack, name)) = storage::parse_pack_link(&m.location) {
            out.entry(pack).or_insert_with(blank).links.push(name);
        } else if let Some(d) = storage::parse_pack(&m.location) {
            let p = out.entry(d).or_insert_with(blank);
            p.size = Some(m.size);
            p.modified = p.modified.max(m.last_modified.timestamp());
        } else if let Some(d) = storage::parse_pack_index(&m.location) {
            let p = out.entry(d).or_insert_with(blank);
            p.indexed = true;
            p.modified = p.modified.max(m.last_modified.timestamp());
        }
    }
    for p in out.values_mut() {
        p.links.sort();
    }
    Ok(out)
}

/// Runs one collection; see the module docs.
pub(crate) async fn run(hub: &Hub, req: GcRequest) -> Result<GcReport, AppError> {
    let started = Instant::now();
    let settings = &hub.inner.opts.lifecycle.gc;
    let grace = req.grace_secs.map_or(settings.grace, Duration::from_secs);
    let store = hub.inner.store.clone();
    let lock = if req.dry_run { None } else { Some(Lock::acquire(store.clone(), settings.lock_ttl).await?) };
    let res = collect(hub, &req, grace, lock.as_ref()).await;
    if let Some(l) = lock {
        l.release().await;
    }
    let mut report = res?;
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

async fn collect(hub: &Hub, req: &GcRequest, grace: Duration, lock: Option<&Lock>) -> Result<GcReport, AppError> {
    let store = hub.inner.store.clone();
    let now = now_unix();
    let check = || lock.map_or(Ok(()), Lock::check);
    let mut report = GcReport { dry_run: req.dry_run, grace_secs: grace.as_secs(), ..GcReport::default() };

    // 1. Decide.
    let mut inv = inventory(&*store).await?;
    let mut kept: HashMap<Name, HashSet<Digest>> = HashMap::new();
    let mut names: Vec<Name> = inv.keys().cloned().collect();
    names.sort();
    let mut expired_leases = Vec::new();
    let mut leases_held: HashMap<Name, u64> = HashMap::new();
    for name in &names {
        let i = &inv[name];
        let (d, leases) = decide(hub, name, i, grace, now).await?;
        leases_held.insert(name.clone(), leases.iter().filter(|l| l.expires_unix > now).count() as u64);
        for l in leases {
            if l.expires_unix + LEASE_KEEP.as_secs() < now {
                expired_leases.push(storage::lease(name, &l.reader));
            }
        }
        let mut keep: HashSet<Digest> = d.keep.keys().copied().collect();
        if !req.dry_run && !d.remove.is_empty() {
            check()?;
            let digests: Vec<Digest> = d.remove.iter().map(|v| v.digest).collect();
            let removed = remove_versions(hub, name, &digests).await?;
            crash_point("removed-versions");
            // A tag moved onto one of them meanwhile: it stays.
            keep.extend(digests.iter().filter(|d| !removed.contains(d)));
            report.versions_removed.extend(d.remove.into_iter().filter(|v| removed.contains(&v.digest)));
        } else {
            report.versions_removed.extend(d.remove);
        }
        report.held_by_leases.extend(d.held);
        kept.insert(name.clone(), keep);
    }
    if !req.dry_run {
        for key in expired_leases {
            delete_if_present(&*store, &key).await?;
        }
        // Leftover markers of an interrupted run.
        for (name, i) in &mut inv {
            for d in i.doomed.drain(..) {
                delete_if_present(&*store, &storage::doomed(name, &d)).await?;
            }
        }
    }

    // 2. Mark.
    let marked = mark(hub, &inv, &kept, now).await?;
    let mut datasets = Vec::new();
    for name in &names {
        let keep = &kept[name];
        let mut seen: HashSet<(Digest, u64)> = HashSet::new();
        let mut live_bytes = 0u64;
        for d in keep {
            if let Some((p, _)) = marked.placements.get(&(name.clone(), *d)) {
                for c in p.chunks() {
                    if seen.insert((c.location.pack, c.location.offset)) {
                        live_bytes += u64::from(c.location.stored_len);
                    }
                }
            }
        }
        let removed = report.versions_removed.iter().filter(|v| v.name == *name).count() as u64;
        datasets.push(GcDataset {
            name: name.clone(),
            versions_kept: keep.len() as u64,
            versions_removed: removed,
            live_bytes,
            leases_held: leases_held.get(name).copied().unwrap_or(0),
        });
    }
    report.datasets = datasets;

    // 3. Choose.
    let packs = pack_inventory(&*store).await?;
    let condemned_before = condemned(&*store).await?;
    let mut delete_now: Vec<Digest> = Vec::new();
    let mut candidates: Vec<(Digest, u64, u64)> = Vec::new(); // pack, size, live
    let mut unpin: Vec<Digest> = Vec::new();
    let (mut stored, mut dead) = (0u64, 0u64);
    for (pack, p) in &packs {
        let size = p.size.unwrap_or(0);
        stored += size;
        let live: u64 = marked.live.get(pack).map_or(0, |m| m.values().map(|c| u64::from(c.stored_len)).sum());
        let a = age(p.modified, now);
        if let Some(at) = condemned_before.get(pack) {
            if live > 0 || marked.pinned.contains(pack) {
                // Used again (a publish raced a killed run): no longer condemned.
                unpin.push(*pack);
            } else {
                if age(*at, now) >= grace {
                    delete_now.push(*pack);
                } else {
                    report.packs_waiting += 1;
                }
                dead += size;
                continue;
            }
        }
        if marked.pinned.contains(pack) {
            continue;
        }
        if live == 0 {
            if a >= grace {
                delete_now.push(*pack);
            }
            dead += size;
        } else if p.indexed && a >= grace {
            dead += size.saturating_sub(live);
            candidates.push((*pack, size, live));
        } else {
            dead += size.saturating_sub(live);
        }
    }
    report.stored_bytes_before = stored;
    report.live_bytes = marked.live.values().flat_map(|m| m.values()).map(|c| u64::from(c.stored_len)).sum();
    // Least live first, until the dead fraction of what stays is low enough.
    candidates.sort_by(|a, b| (a.2 as f64 / a.1.max(1) as f64).total_cmp(&(b.2 as f64 / b.1.max(1) as f64)));
    let deleted_dead: u64 = delete_now.iter().filter_map(|p| packs.get(p).and_then(|i| i.size)).sum();
    let mut remaining_stored = stored.saturating_sub(deleted_dead);
    let mut remaining_dead = dead.saturating_sub(deleted_dead);
    let max_unused = hub.inner.opts.lifecycle.gc.max_unused;
    let mut rewrite: Vec<Digest> = Vec::new();
    for (pack, size, live) in candidates {
        if remaining_dead as f64 <= max_unused * remaining_stored as f64 {
            break;
        }
        let d = size.saturating_sub(live);
        remaining_dead -= d.min(remaining_dead);
        remaining_stored -= d.min(remaining_stored);
        rewrite.push(pack);
    }
    report.packs_rewritten = rewrite.len() as u64;
    report.packs_deleted = delete_now.len() as u64;
    report.bytes_deleted = deleted_dead;
    if req.dry_run {
        report.stored_bytes_after = remaining_stored;
        return Ok(report);
    }
    for p in &unpin {
        delete_if_present(&*store, &storage::condemned(p)).await?;
    }

    // 4. Move.
    let mut moved: HashMap<(Digest, Digest), ChunkLocation> = HashMap::new();
    let mut groups: HashMap<Vec<Name>, Vec<Digest>> = HashMap::new();
    for p in &rewrite {
        groups.entry(packs[p].readers(&*store).await?).or_default().push(*p);
    }
    for (links, sources) in groups {
        check()?;
        let (written, bytes) = repack(hub, &links, &sources, &marked, &mut moved).await?;
        report.packs_written += written;
        report.bytes_written += bytes;
    }
    let rewritten: HashSet<Digest> = rewrite.iter().copied().collect();
    let mut our_placements: HashSet<(Name, Digest)> = HashSet::new();
    for ((name, d), (p, _)) in &marked.placements {
        if !p.packs().iter().any(|x| rewritten.contains(x)) {
            continue;
        }
        let mut p = p.clone();
        let map: HashMap<Digest, ChunkLocation> = p
            .chunks()
            .iter()
            .filter_map(|c| moved.get(&(c.location.pack, c.digest)).map(|to| (c.digest, *to)))
            .collect();
        p.relocate(&map);
        check()?;
        store.put(&storage::placement(name, d), PutPayload::from(p.encode())).await.ctx("rewriting a placement")?;
        crash_point("rewrote-placement");
        our_placements.insert((name.clone(), *d));
    }

    // 5. Condemn, re-check, delete.
    let mut doomed: HashSet<Digest> = delete_now.iter().copied().collect();
    for p in rewritten.iter().chain(&delete_now) {
        if !condemned_before.contains_key(p) {
            store.put(&storage::condemned(p), PutPayload::default()).await.ctx("condemning a pack")?;
        }
    }
    crash_point("condemned");
    let mut all_condemned: HashSet<Digest> = condemned_before.keys().copied().collect();
    all_condemned.extend(rewritten.iter().copied());
    all_condemned.extend(delete_now.iter().copied());
    all_condemned.retain(|p| !unpin.contains(p));
    hub.inner.chunks.set_condemned(all_condemned.clone());
    let used = recheck(hub, &marked, &our_placements, now).await?;
    let mut rescued = 0;
    for p in used.intersection(&all_condemned) {
        delete_if_present(&*store, &storage::condemned(p)).await?;
        doomed.remove(p);
        rescued += 1;
    }
    report.packs_rescued = rescued;
    if rescued > 0 {
        all_condemned.retain(|p| !used.contains(p));
        hub.inner.chunks.set_condemned(all_condemned);
    }
    // Moved-from packs wait out the grace period (readers with the old
    // placement); a later run deletes them.
    if grace.is_zero() {
        doomed.extend(rewritten.iter().filter(|p| !used.contains(p)));
    } else {
        report.packs_waiting += rewritten.iter().filter(|p| !used.contains(p)).count() as u64;
    }
    let mut bytes_deleted = 0;
    for p in &doomed {
        check()?;
        delete_pack(&*store, p, &packs).await?;
        crash_point("deleted-pack");
        bytes_deleted += packs.get(p).and_then(|i| i.size).unwrap_or(0);
    }
    hub.inner.chunks.forget_packs(&doomed);
    report.packs_deleted = doomed.len() as u64;
    report.bytes_deleted = bytes_deleted;
    report.stored_bytes_after = stored.saturating_sub(bytes_deleted) + report.bytes_written;
    Ok(report)
}

/// Copies the live chunks of `sources` (packs linked to exactly `links`)
/// into new packs linked to the same datasets. Returns (packs, bytes) written.
async fn repack(
    hub: &Hub,
    links: &[Name],
    sources: &[Digest],
    marked: &Marked,
    moved: &mut HashMap<(Digest, Digest), ChunkLocation>,
) -> Result<(u64, u64), AppError> {
    let store = &hub.inner.store;
    let mut builder = PackBuilder::new();
    // Chunks in the open builder: (source pack, digest).
    let mut open: Vec<(Digest, Digest)> = Vec::new();
    // Digests already in the open builder.
    let mut copied: HashSet<Digest> = HashSet::new();
    let (mut packs, mut bytes) = (0u64, 0u64);
    for src in sources {
        let mut chunks: Vec<LiveChunk> =
            marked.live.get(src).map(|m| m.values().copied().collect()).unwrap_or_default();
        chunks.sort_by_key(|c| c.offset);
        let data = read_ranges(&**store, src, &chunks).await?;
        for (c, stored) in chunks.iter().zip(data) {
            // The same chunk from another source: one copy serves both.
            open.push((*src, c.digest));
            if !copied.insert(c.digest) {
                continue;
            }
            builder.add_stored(c.digest, &stored, c.len, c.compression);
            if builder.len() >= REPACK_TARGET || builder.is_full() {
                let b = std::mem::take(&mut builder);
                let (n, w) = store_pack(hub, b, links, &mut open, moved).await?;
                packs += n;
                bytes += w;
                copied.clear();
            }
        }
    }
    if !builder.is_empty() {
        let (n, w) = store_pack(hub, builder, links, &mut open, moved).await?;
        packs += n;
        bytes += w;
    }
    Ok((packs, bytes))
}

/// Finishes, verifies and stores a rewritten pack; records where each chunk
/// of `open` went.
async fn store_pack(
    hub: &Hub,
    builder: PackBuilder,
    links: &[Name],
    open: &mut Vec<(Digest, Digest)>,
    moved: &mut HashMap<(Digest, Digest), ChunkLocation>,
) -> Result<(u64, u64), AppError> {
    let built = builder.finish();
    let digest = built.digest;
    let bytes = Bytes::from(built.bytes);
    let (range, entries, bytes) = crate::routes::blocking("verifying a rewritten pack", move || {
        // Copied bytes are checked like an upload: never store a wrong pack.
        let (range, entries) =
            verify_pack(&bytes).map_err(|e| AppError::internal("verifying a rewritten pack", e.to_string()))?;
        Ok((range, entries, bytes))
    })
    .await?;
    let store = &hub.inner.store;
    let size = bytes.len() as u64;
    let index = bytes.slice(range);
    store.put(&storage::pack(&digest), PutPayload::from(bytes)).await.ctx("storing a rewritten pack")?;
    // The record names the first dataset; link objects the others.
    let record = PackRecord { uploader: links.first().cloned(), index };
    commit(&**store, &digest, &record).await.ctx("recording a rewritten pack")?;
    for (i, name) in links.iter().enumerate() {
        if i > 0 {
            store
                .put(&storage::pack_link(&digest, name), PutPayload::default())
                .await
                .ctx("linking a rewritten pack")?;
        }
        hub.inner.chunks.add_link(digest, name.clone());
    }
    hub.inner.chunks.add_pack(digest, size, &entries);
    let at: HashMap<Digest, ChunkLocation> = entries.iter().map(|e| (e.digest, e.location(digest))).collect();
    for (src, d) in open.drain(..) {
        if let Some(l) = at.get(&d) {
            moved.insert((src, d), *l);
        }
    }
    tracing::info!(pack = %digest, chunks = entries.len(), bytes = size, "gc wrote a pack");
    crash_point("wrote-pack");
    Ok((1, size))
}

/// The stored bytes of `chunks` (sorted by offset) of `pack`, reading nearby
/// chunks in one range request.
async fn read_ranges(store: &dyn ObjectStore, pack: &Digest, chunks: &[LiveChunk]) -> Result<Vec<Bytes>, AppError> {
    let key = storage::pack(pack);
    let mut out = Vec::with_capacity(chunks.len());
    let mut i = 0;
    while i < chunks.len() {
        let start = chunks[i].offset;
        let mut end = start + u64::from(chunks[i].stored_len);
        let mut j = i + 1;
        while j < chunks.len() && chunks[j].offset <= end + COALESCE_GAP && chunks[j].offset - start < 64 << 20 {
            end = end.max(chunks[j].offset + u64::from(chunks[j].stored_len));
            j += 1;
        }
        let data = store.get_range(&key, start..end).await.ctx("reading a pack to rewrite")?;
        if (data.len() as u64) < end - start {
            return Err(AppError::internal(
                "reading a pack to rewrite",
                format!("pack {pack} is shorter than its index"),
            ));
        }
        for c in &chunks[i..j] {
            let from = (c.offset - start) as usize;
            out.push(data.slice(from..from + c.stored_len as usize));
        }
        i = j;
    }
    Ok(out)
}

/// Lists placements and pending publishes again and re-reads what changed
/// since the mark: the packs they use now.
async fn recheck(
    hub: &Hub,
    marked: &Marked,
    ours: &HashSet<(Name, Digest)>,
    now: u64,
) -> Result<HashSet<Digest>, AppError> {
    let store = &hub.inner.store;
    let inv = inventory(&**store).await?;
    let mut keys: Vec<Path> = Vec::new();
    for (name, i) in &inv {
        for (d, (_, etag)) in &i.placements {
            let k = (name.clone(), *d);
            let unchanged =
                marked.placements.get(&k).is_some_and(|(_, seen)| seen.is_some() && seen == etag) && !ours.contains(&k);
            if !unchanged {
                keys.push(storage::placement(name, d));
            }
        }
        for (d, modified) in &i.pending {
            if age(*modified, now) < PENDING_MAX_AGE {
                keys.push(storage::pending(name, d));
            }
        }
    }
    let read: Vec<Option<Placement>> = futures::stream::iter(keys)
        .map(|k| async move { read_placement(&**store, &k).await })
        .buffer_unordered(PARALLELISM)
        .try_collect()
        .await?;
    let mut used: HashSet<Digest> = HashSet::new();
    for p in read.into_iter().flatten() {
        used.extend(p.packs());
    }
    // Unchanged placements point where the mark saw them.
    for (k, (p, _)) in &marked.placements {
        if !ours.contains(k) {
            used.extend(p.packs());
        }
    }
    Ok(used)
}

/// Deletes a pack: its records first (it stops being visible; this trims
/// the pack log too), then an older hub's index, the bytes, the links and
/// the marker.
async fn delete_pack(store: &dyn ObjectStore, pack: &Digest, packs: &HashMap<Digest, PackInv>) -> Result<(), AppError> {
    for key in packs.get(pack).map(|p| p.records.as_slice()).unwrap_or_default() {
        delete_if_present(store, key).await?;
    }
    delete_if_present(store, &storage::pack_index(pack)).await?;
    delete_if_present(store, &storage::pack(pack)).await?;
    if let Some(p) = packs.get(pack) {
        for name in &p.links {
            delete_if_present(store, &storage::pack_link(pack, name)).await?;
        }
    }
    delete_if_present(store, &storage::condemned(pack)).await?;
    tracing::info!(%pack, "gc deleted a pack");
    Ok(())
}

/// Runs collections on the configured schedule, logging each result.
pub(crate) fn spawn_schedule(hub: &Hub) {
    let Some(every) = hub.inner.opts.lifecycle.gc.interval else { return };
    let weak = Arc::downgrade(&hub.inner);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(inner) = weak.upgrade() else { return };
            let hub = Hub { inner };
            let res = run(&hub, GcRequest::default()).await;
            hub.inner.metrics.record_gc(&res);
            match res {
                Ok(r) => tracing::info!(
                    versions_removed = r.versions_removed.len(),
                    packs_deleted = r.packs_deleted,
                    bytes_reclaimed = r.stored_bytes_before.saturating_sub(r.stored_bytes_after),
                    duration_ms = r.duration_ms,
                    "scheduled gc finished"
                ),
                Err(e) if e.status == StatusCode::CONFLICT => tracing::info!("scheduled gc skipped: {}", e.message),
                Err(e) => tracing::warn!(error = %e.message, "scheduled gc failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_never_underflow() {
        assert_eq!(age(100, 50), Duration::ZERO);
        assert_eq!(age(-5, 10), Duration::from_secs(10));
    }
}
