//! Which chunks the hub holds, and where, without holding every chunk.
//!
//! A push asks which of its chunks the hub lacks, and a publish places every
//! chunk of a version in a stored pack. Neither needs every stored chunk: a
//! push into a dataset shares its chunks with that dataset's recent versions
//! and with what was just uploaded. So a lookup for dataset `D` consults,
//! in order:
//!
//! 1. **Recent packs** ([`recent`]): the chunks of packs stored lately by
//!    any replica, bounded in bytes (the oldest pack goes first). A replica
//!    learns them from the pack log ([`log`]): at start it lists the log's
//!    last day (`--index-window-secs`; newest first, until the bound is full), and when a
//!    lookup misses it lists what was logged since (at most once every
//!    [`RESCAN_INTERVAL`], concurrent callers sharing one listing). Any
//!    dataset's pack counts, if the caller may read it: through the dataset
//!    its record names, or a link object.
//! 2. **Base versions** ([`bases`]): the placements of the versions `D`'s
//!    tags point at (the newest [`bases::BASES_MAX`]), read on demand and
//!    cached with a bound. A placement of `D` lets `D` read every pack it
//!    uses, so these need no link check.
//!
//! Start reads no pack index but the recent ones, and memory is bounded by
//! `--max-index-mib` whatever the store holds. What is lost: dedup against
//! chunks that are neither recent nor in a tagged version of the dataset
//! pushed into (an untagged old version, another dataset's old packs); such
//! chunks are uploaded again (docs/storage-layout.md, "The chunk index").
//!
//! The index is a cache, the store the truth: publishing checks against the
//! store that every pack it chose still exists and is not being collected
//! (see gc.rs). Packs garbage collection removes, or that a publish finds
//! gone, are forgotten at once.

mod bases;
pub(crate) mod log;
mod recent;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use aetherfs_format::api::PresentChunk;
use aetherfs_format::pack::{PackEntry, decode_index};
use aetherfs_format::placement::PlacedChunk;
use aetherfs_format::{ChunkLocation, Digest, Name, Placement};
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};
use parking_lot::RwLock;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use crate::error::{AppError, StorageContext};
use crate::storage;
use crate::tags::TagStore;

/// Pack indexes read at once while following the log.
const LOAD_PARALLELISM: usize = 16;
/// Least time between two listings of the pack log after a miss.
pub(crate) const RESCAN_INTERVAL: Duration = Duration::from_secs(1);
/// How far back the log is read at start, by default.
pub(crate) const WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Clock skew between replicas the log follower allows: each listing starts
/// this long before the newest entry seen.
const SKEW: Duration = Duration::from_secs(120);
/// Packs read from the log in one listing at most (newest first).
const FOLLOW_MAX: usize = 4096;
/// Packs whose links one lookup asks the store about at most.
const LINK_CHECKS_MAX: usize = 64;
/// Links remembered for packs that are not recent, at most.
const LINKS_MAX: usize = 100_000;
/// Packs found gone remembered, at most (base placements may still name them).
const GONE_MAX: usize = 100_000;
/// Longest a request waits for the initial load before answering 503.
const READY_WAIT: Duration = Duration::from_secs(30);
const RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub(crate) struct ChunkIndex {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn ObjectStore>,
    tags: TagStore,
    sizes: Arc<log::PackSizes>,
    state: RwLock<State>,
    bases: bases::Bases,
    ready: watch::Sender<bool>,
    started: AtomicBool,
    follow: tokio::sync::Mutex<Follow>,
    /// How far back the log is read at start.
    window: Duration,
    gauge: Gauge,
    /// [`ChunkIndex::estimated_bytes`], for metrics.
    bytes_gauge: Gauge,
}

/// Where the log follower is.
#[derive(Default)]
struct Follow {
    /// When the last listing after a miss ran (the start's does not count).
    last: Option<Instant>,
    /// The newest log entry seen (Unix ms).
    newest_ms: u64,
    /// Where the start's listing began: later listings never reach back past it.
    floor_ms: u64,
}

struct State {
    recent: recent::Recent,
    /// Indexes that failed to decode: logged once, not re-read.
    bad: HashSet<Digest>,
    /// The datasets that may read each pack (`packs/<hex>.links/<name>`),
    /// as far as this replica knows.
    links: HashMap<Digest, Vec<Name>>,
    /// Packs garbage collection is removing (`gc/condemned/<hex>`): never
    /// offered to a push or a publish.
    condemned: HashSet<Digest>,
    /// Packs found gone.
    gone: HashSet<Digest>,
}

/// What a lookup found for one chunk.
enum Found {
    /// Length and location, and whether a base version's placement said so.
    At(u32, ChunkLocation, bool),
    /// In a recent pack no dataset the caller may read is known to be linked to.
    Unlinked(Digest),
    Missing,
}

impl ChunkIndex {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        tags: TagStore,
        sizes: Arc<log::PackSizes>,
        max_bytes: u64,
        window: Duration,
        gauge: Gauge,
        bytes_gauge: Gauge,
    ) -> Self {
        let (ready, _) = watch::channel(false);
        // Three quarters for recent packs, the rest for base placements.
        let recent_cap = max_bytes / 4 * 3;
        Self {
            shared: Arc::new(Shared {
                store,
                tags,
                sizes,
                state: RwLock::new(State {
                    recent: recent::Recent::new(recent_cap),
                    bad: HashSet::new(),
                    links: HashMap::new(),
                    condemned: HashSet::new(),
                    gone: HashSet::new(),
                }),
                bases: bases::Bases::new(max_bytes - recent_cap),
                ready,
                started: AtomicBool::new(false),
                follow: tokio::sync::Mutex::new(Follow::default()),
                window,
                gauge,
                bytes_gauge,
            }),
        }
    }

    /// Starts the background load once. Needs a tokio runtime; without one it
    /// does nothing and the next call from inside a runtime starts it.
    pub fn start(&self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        if self.shared.started.swap(true, Ordering::SeqCst) {
            return;
        }
        tokio::spawn(load_until_done(Arc::downgrade(&self.shared)));
    }

    pub fn is_ready(&self) -> bool {
        *self.shared.ready.borrow()
    }

    pub async fn wait_ready(&self) -> Result<(), AppError> {
        self.start();
        let mut rx = self.shared.ready.subscribe();
        match tokio::time::timeout(READY_WAIT, rx.wait_for(|r| *r)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(not_ready()),
        }
    }

    /// Splits `digests` into the present ones (at a location a push into
    /// `name` by a caller who `can_read` may use) and the missing ones.
    pub async fn lookup(
        &self,
        name: &Name,
        digests: &[Digest],
        can_read: &CanRead<'_>,
    ) -> Result<(Vec<PresentChunk>, Vec<Digest>), AppError> {
        let wanted: Vec<(Digest, Option<u32>)> = digests.iter().map(|d| (*d, None)).collect();
        let found = self.resolve(name, &wanted, can_read).await?;
        let mut present = Vec::new();
        let mut missing = Vec::new();
        for (d, f) in digests.iter().zip(found) {
            match f {
                Some((len, location)) => present.push(PresentChunk { digest: *d, len, location }),
                None => missing.push(*d),
            }
        }
        Ok((present, missing))
    }

    /// Places chunks (digest, plaintext length) of a version published into
    /// `name`; returns the placed ones and the rest.
    pub async fn place(
        &self,
        name: &Name,
        chunks: &[(Digest, u32)],
        can_read: &CanRead<'_>,
    ) -> Result<(Vec<PlacedChunk>, Vec<(Digest, u32)>), AppError> {
        let wanted: Vec<(Digest, Option<u32>)> = chunks.iter().map(|&(d, len)| (d, Some(len))).collect();
        let found = self.resolve(name, &wanted, can_read).await?;
        let mut placed = Vec::with_capacity(chunks.len());
        let mut missing = Vec::new();
        for (&(digest, len), f) in chunks.iter().zip(found) {
            match f {
                Some((_, location)) => placed.push(PlacedChunk { digest, len, location }),
                None => missing.push((digest, len)),
            }
        }
        Ok((placed, missing))
    }

    /// Every source in turn (see the module docs); `len`, when given, must match.
    async fn resolve(
        &self,
        name: &Name,
        wanted: &[(Digest, Option<u32>)],
        can_read: &CanRead<'_>,
    ) -> Result<Vec<Option<(u32, ChunkLocation)>>, AppError> {
        self.wait_ready().await?;
        let bases = self.shared.bases.of(&self.shared.tags, &self.shared.store, name).await?;
        let mut out: Vec<Option<(u32, ChunkLocation)>> = vec![None; wanted.len()];
        let mut open: Vec<usize> = (0..wanted.len()).collect();
        let mut from_bases = HashSet::new();
        // Recent packs whose links must be asked for, then one more pass;
        // then the log is followed, then one last pass.
        for round in 0..3 {
            let mut unlinked = HashSet::new();
            {
                let state = self.shared.state.read();
                open.retain(|&i| {
                    let (d, len) = wanted[i];
                    match find(&state, &bases, &d, len, can_read) {
                        Found::At(l, at, base) => {
                            if base {
                                from_bases.insert(at.pack);
                            }
                            out[i] = Some((l, at));
                            false
                        }
                        Found::Unlinked(p) => {
                            unlinked.insert(p);
                            true
                        }
                        Found::Missing => true,
                    }
                });
            }
            if open.is_empty() {
                break;
            }
            match round {
                0 if !unlinked.is_empty() => self.check_links(name, unlinked).await?,
                0 | 1 => self.rescan_if_due().await?,
                _ => {}
            }
        }
        // Publishing a placement linked its packs to `name`: remembered, so
        // publishing the next version writes no link again.
        if !from_bases.is_empty() {
            let mut state = self.shared.state.write();
            for p in from_bases {
                add_link(&mut state, p, name.clone());
            }
        }
        Ok(out)
    }

    /// Asks the store whether recent packs are linked to `name` (their link
    /// may have been written after this replica read the log).
    async fn check_links(&self, name: &Name, packs: HashSet<Digest>) -> Result<(), AppError> {
        let store = &self.shared.store;
        let found: Vec<Option<Digest>> = futures::stream::iter(packs.into_iter().take(LINK_CHECKS_MAX))
            .map(|p| async move {
                match store.head(&storage::pack_link(&p, name)).await {
                    Ok(_) => Ok(Some(p)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(AppError::storage("looking up a pack link", e)),
                }
            })
            .buffer_unordered(LOAD_PARALLELISM)
            .try_collect()
            .await?;
        let mut state = self.shared.state.write();
        for p in found.into_iter().flatten() {
            add_link(&mut state, p, name.clone());
        }
        Ok(())
    }

    /// A tag of `name` moved through this replica: its bases are read again.
    pub async fn tag_moved(&self, name: &Name) {
        self.shared.bases.forget(name).await;
    }

    /// Replaces the set of packs being collected, as just listed from the store.
    pub fn set_condemned(&self, condemned: HashSet<Digest>) {
        self.shared.state.write().condemned = condemned;
    }

    /// Forgets packs that are gone (or going): their chunks are located
    /// elsewhere or reported missing from now on.
    pub fn forget_packs(&self, gone: &HashSet<Digest>) {
        if gone.is_empty() {
            return;
        }
        {
            let mut state = self.shared.state.write();
            state.recent.forget(gone);
            if state.gone.len() + gone.len() > GONE_MAX {
                state.gone.clear();
            }
            for p in gone {
                state.links.remove(p);
                state.gone.insert(*p);
                self.shared.sizes.remove(p);
            }
            publish_size(&self.shared, &state);
        }
        // Base placements may name them until they are read again.
        self.shared.bases.invalidate();
    }

    /// Lists the pack log since the last listing, unless one ran less than
    /// [`RESCAN_INTERVAL`] ago. Concurrent callers wait for the listing in
    /// progress instead of starting their own.
    pub async fn rescan_if_due(&self) -> Result<(), AppError> {
        let mut follow = self.shared.follow.lock().await;
        if follow.last.is_some_and(|t| t.elapsed() < RESCAN_INTERVAL) {
            return Ok(());
        }
        let from = follow.newest_ms.saturating_sub(SKEW.as_millis() as u64).max(follow.floor_ms);
        let (added, newest) = follow_log(&self.shared, from, false).await.ctx("following the pack log")?;
        if added > 0 {
            tracing::info!(packs = added, "picked up packs stored by other replicas");
        }
        follow.newest_ms = follow.newest_ms.max(newest);
        follow.last = Some(Instant::now());
        Ok(())
    }

    /// Records a pack this replica just stored.
    pub fn add_pack(&self, pack: Digest, size: u64, entries: &[PackEntry]) {
        self.shared.sizes.insert(pack, size);
        insert(&self.shared, pack, Some(size), entries, true);
    }

    /// Whether `name` may read `pack`: it uploaded it (the pack's record), a
    /// placement of one of its versions uses it, or a link object says so.
    /// Asks the store, in that order of cost, when this replica does not know.
    pub async fn may_read(&self, pack: &Digest, name: &Name) -> Result<bool, AppError> {
        if self.is_linked(pack, name) {
            return Ok(true);
        }
        let uses = |p: &Placement| p.chunks().iter().any(|c| c.location.pack == *pack);
        let shared = &self.shared;
        let bases = shared.bases.of(&shared.tags, &shared.store, name).await?;
        let found = bases.iter().any(|p| uses(p))
            || match shared.store.head(&storage::pack_link(pack, name)).await {
                Ok(_) => true,
                Err(object_store::Error::NotFound { .. }) => false,
                Err(e) => return Err(AppError::storage("looking up a pack link", e)),
            }
            || shared.bases.placed(&shared.store, name).await?.contains(pack);
        if found {
            self.add_link(*pack, name.clone());
        }
        Ok(found)
    }

    /// Whether `name` may read `pack`, as far as this replica knows.
    pub fn is_linked(&self, pack: &Digest, name: &Name) -> bool {
        self.shared.state.read().links.get(pack).is_some_and(|l| l.contains(name))
    }

    /// Lets `name` read `pack` (the link object is already stored).
    pub fn add_link(&self, pack: Digest, name: Name) {
        add_link(&mut self.shared.state.write(), pack, name);
    }

    /// Whether this replica knows `pack` is stored (a recent pack).
    pub fn has_pack(&self, pack: &Digest) -> bool {
        self.shared.state.read().recent.has_pack(pack)
    }

    /// The size of a stored pack, when known.
    pub fn pack_size(&self, pack: &Digest) -> Option<u64> {
        self.shared.sizes.get(pack).or_else(|| self.shared.state.read().recent.pack_size(pack))
    }
}

/// Which datasets a caller may read.
pub(crate) type CanRead<'a> = dyn Fn(&Name) -> bool + Sync + 'a;

fn find(state: &State, bases: &[Arc<Placement>], d: &Digest, len: Option<u32>, can_read: &CanRead<'_>) -> Found {
    let fits = |l: u32| len.is_none_or(|want| want == l);
    let mut unlinked = None;
    if let Some(c) = state.recent.get(d).filter(|c| fits(c.len)) {
        for l in c.all().filter(|l| !state.condemned.contains(&l.pack)) {
            match state.links.get(&l.pack) {
                Some(names) if names.iter().any(can_read) => return Found::At(c.len, *l, false),
                _ => unlinked = unlinked.or(Some(l.pack)),
            }
        }
    }
    for p in bases {
        if let Some(c) = bases::locate(p, d).filter(|c| fits(c.len))
            && !state.condemned.contains(&c.location.pack)
            && !state.gone.contains(&c.location.pack)
        {
            return Found::At(c.len, c.location, true);
        }
    }
    unlinked.map_or(Found::Missing, Found::Unlinked)
}

pub(crate) fn not_ready() -> AppError {
    AppError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        "the hub is still loading its chunk index; try again shortly",
    )
}

/// The initial load: retried with backoff until it succeeds or the hub is dropped.
async fn load_until_done(weak: Weak<Shared>) {
    let mut delay = Duration::from_secs(1);
    loop {
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let started = Instant::now();
        let now = log::now_ms();
        let from = now.saturating_sub(shared.window.as_millis() as u64);
        match follow_log(&shared, from, true).await {
            Ok((packs, newest)) => {
                let mut follow = shared.follow.lock().await;
                // Read up to now: the next listing starts from here (less the skew).
                follow.newest_ms = newest.max(now);
                follow.floor_ms = from;
                drop(follow);
                let chunks = shared.state.read().recent.chunks();
                tracing::info!(packs, chunks, elapsed_ms = started.elapsed().as_millis() as u64, "chunk index loaded");
                shared.ready.send_replace(true);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_s = delay.as_secs(), "loading the chunk index failed");
            }
        }
        drop(shared);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// Lists the pack log from `from_ms` and reads the packs it names that are
/// not held yet, newest first (at start: while they fit). Returns how many packs it
/// added and the newest entry's time.
async fn follow_log(shared: &Shared, from_ms: u64, at_start: bool) -> Result<(usize, u64), object_store::Error> {
    // One listing per day of the log from `from_ms` until now (and the
    // next day, if another replica's clock may be there already).
    let last_day = (log::now_ms() + SKEW.as_millis() as u64) / storage::LOG_DAY_MS;
    let mut listing: Vec<object_store::ObjectMeta> = Vec::new();
    for day in from_ms / storage::LOG_DAY_MS..=last_day {
        let offset = storage::pack_log_from(from_ms);
        let more: Vec<object_store::ObjectMeta> =
            shared.store.list_with_offset(Some(&storage::pack_log_day(day)), &offset).try_collect().await?;
        listing.extend(more);
    }
    let mut logged: Vec<(u64, Digest, object_store::path::Path)> = listing
        .into_iter()
        .filter_map(|m| storage::parse_pack_log(&m.location).map(|(ms, d)| (ms, d, m.location)))
        .collect();
    let newest = logged.iter().map(|l| l.0).max().unwrap_or(0);
    logged.sort_unstable_by_key(|l| std::cmp::Reverse((l.0, l.1)));
    let unknown: Vec<(Digest, object_store::path::Path)> = {
        let state = shared.state.read();
        let mut seen = HashSet::new();
        logged
            .into_iter()
            .filter(|(_, d, _)| {
                seen.insert(*d) && !state.recent.has_pack(d) && !state.bad.contains(d) && !state.gone.contains(d)
            })
            .map(|(_, d, key)| (d, key))
            .take(FOLLOW_MAX)
            .collect()
    };
    let store = shared.store.clone();
    // `buffered` keeps the log's order: newest first, each older than the last.
    let mut fetches = futures::stream::iter(unknown)
        .map(|(d, key)| {
            let store = store.clone();
            async move { Ok::<_, object_store::Error>((d, read_record(&*store, &d, &key).await?)) }
        })
        .buffered(LOAD_PARALLELISM);
    let mut added = 0;
    // Followed later, the packs are newer than any held: gathered, then
    // added oldest first so the oldest goes first again.
    let mut later = Vec::new();
    while let Some(res) = fetches.next().await {
        let (pack, record) = res?;
        // Gone since it was logged (collected): nothing to hold.
        let Some((bytes, links)) = record else { continue };
        let entries = match bytes.and_then(|b| decode_index(&b, None).map_err(|e| e.to_string())) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::error!(pack = %pack, error = %e, "skipping corrupt pack index");
                shared.state.write().bad.insert(pack);
                continue;
            }
        };
        {
            let mut state = shared.state.write();
            for name in links {
                add_link(&mut state, pack, name);
            }
        }
        if at_start {
            if added > 0 && !shared.state.read().recent.has_room(entries.len()) {
                break; // full: the older packs are not read at all
            }
            insert(shared, pack, None, &entries, false);
        } else {
            later.push((pack, entries));
        }
        added += 1;
    }
    for (pack, entries) in later.into_iter().rev() {
        insert(shared, pack, None, &entries, true);
    }
    Ok((added, newest))
}

/// A logged pack's index section and the datasets known to read it: from
/// its record, or for an older hub's empty record from `packs/<hex>.idx` and
/// the link objects. `None` when it is gone (collected since it was logged).
async fn read_record(
    store: &dyn ObjectStore,
    pack: &Digest,
    key: &object_store::path::Path,
) -> Result<Option<(Result<bytes::Bytes, String>, Vec<Name>)>, object_store::Error> {
    let Some(body) = storage::get_bytes(store, key).await? else { return Ok(None) };
    match log::PackRecord::decode(&body) {
        Ok(Some(r)) => Ok(Some((Ok(r.index), r.uploader.into_iter().collect()))),
        Err(e) => Ok(Some((Err(format!("pack record: {e}")), Vec::new()))),
        Ok(None) => {
            let Some(index) = storage::get_bytes(store, &storage::pack_index(pack)).await? else { return Ok(None) };
            let links: Vec<object_store::ObjectMeta> =
                store.list(Some(&storage::pack_links(pack))).try_collect().await?;
            let names = links.iter().filter_map(|l| storage::parse_pack_link(&l.location)).map(|(_, n)| n).collect();
            Ok(Some((Ok(index), names)))
        }
    }
}

fn add_link(state: &mut State, pack: Digest, name: Name) {
    if state.links.len() >= LINKS_MAX && !state.links.contains_key(&pack) {
        let State { links, recent, .. } = state;
        links.retain(|p, _| recent.has_pack(p));
    }
    let l = state.links.entry(pack).or_default();
    if !l.contains(&name) {
        l.push(name);
    }
}

fn insert(shared: &Shared, pack: Digest, size: Option<u64>, entries: &[PackEntry], newest: bool) {
    let mut state = shared.state.write();
    let evicted = state.recent.insert(pack, size, entries, newest);
    for p in &evicted {
        state.links.remove(p);
    }
    state.bad.remove(&pack);
    publish_size(shared, &state);
}

fn publish_size(shared: &Shared, state: &State) {
    shared.gauge.set(state.recent.chunks() as i64);
    let bytes = state.recent.bytes() + shared.bases.bytes();
    shared.bytes_gauge.set(i64::try_from(bytes).unwrap_or(i64::MAX));
}

#[cfg(test)]
mod tests {
    use aetherfs_format::Compression;

    use super::*;

    #[tokio::test]
    async fn lookups_skip_packs_the_caller_cannot_use_or_that_are_condemned() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let tags = TagStore::new(store.clone());
        let index = ChunkIndex::new(store, tags, Arc::default(), 1 << 20, WINDOW, Gauge::default(), Gauge::default());
        let (p1, p2) = (Digest::of(b"p1"), Digest::of(b"p2"));
        let d = Digest::of(b"chunk");
        let e = PackEntry { digest: d, offset: 8, stored_len: 3, len: 3, compression: Compression::None };
        index.add_pack(p1, 100, std::slice::from_ref(&e));
        index.add_pack(p2, 100, std::slice::from_ref(&e));
        let (a, b): (Name, Name) = ("team-a/x".parse().unwrap(), "team-b/y".parse().unwrap());
        let target: Name = "team-c/z".parse().unwrap();
        index.add_link(p1, a.clone());
        index.add_link(p2, b.clone());
        let locate = async |len, can_read: &CanRead<'_>| {
            index.place(&target, &[(d, len)], can_read).await.unwrap().0.first().map(|c| c.location.pack)
        };
        assert_eq!(locate(3, &|n: &Name| *n == b).await, Some(p2));
        assert_eq!(locate(4, &|_: &Name| true).await, None, "a length mismatch is no match");
        index.set_condemned(HashSet::from([p1]));
        assert_eq!(locate(3, &|_: &Name| true).await, Some(p2));
        let (present, missing) = index.lookup(&target, &[d], &|n: &Name| *n == a).await.unwrap();
        assert!(present.is_empty() && missing == vec![d], "a condemned pack was offered");
        index.forget_packs(&HashSet::from([p2]));
        assert_eq!(locate(3, &|_: &Name| true).await, None);
    }
}
