//! Which chunks the hub holds, and where: an in-memory cache of the store.
//!
//! The truth is the set of `packs/<hex>.idx` objects: an index is written
//! only after its pack, so each one names a complete, verified pack. At start
//! a background task lists `packs/` and reads every index (bounded
//! parallelism) into one map `chunk digest -> (len, location)`; until it is
//! done `/readyz` answers 503 and queries that need the map wait for it
//! (bounded). Uploads through this replica add to the map at once.
//!
//! Other replicas may store packs too. Their indexes are picked up lazily: when
//! a missing-chunks query finds misses, the listing is re-read for indexes not
//! yet known, at most once every [`RESCAN_INTERVAL`], so a burst of queries
//! costs one listing.
//!
//! A chunk may be stored in several packs (two datasets that cannot read each
//! other's packs each upload it), so the map keeps every location; queries
//! take the first one the caller may read. Publishing places a version's
//! chunks from this map and then checks, against the store, that every pack
//! it chose still exists and is not being collected (see gc.rs): the map is a
//! cache, the store is the truth. Packs garbage collection removes, or that a
//! publish finds gone, are forgotten at once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use aetherfs_format::api::PresentChunk;
use aetherfs_format::pack::{PackEntry, decode_index};
use aetherfs_format::placement::PlacedChunk;
use aetherfs_format::{ChunkLocation, Digest, Name};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use parking_lot::RwLock;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use crate::error::{AppError, StorageContext};
use crate::storage;

/// Pack indexes read at once while loading.
const LOAD_PARALLELISM: usize = 16;
/// Least time between two rescans of the pack listing.
pub(crate) const RESCAN_INTERVAL: Duration = Duration::from_secs(5);
/// Longest a request waits for the initial load before answering 503.
const READY_WAIT: Duration = Duration::from_secs(30);
const RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub(crate) struct ChunkIndex {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn ObjectStore>,
    state: RwLock<State>,
    ready: watch::Sender<bool>,
    started: AtomicBool,
    last_rescan: tokio::sync::Mutex<Option<Instant>>,
    gauge: Gauge,
    /// [`ChunkIndex::estimated_bytes`], for metrics.
    bytes_gauge: Gauge,
}

/// Where one chunk is stored: usually one place, rarely more.
struct Located {
    len: u32,
    at: ChunkLocation,
    /// Rare, so a boxed slice (two words) rather than a `Vec` (three).
    also: Option<Box<[ChunkLocation]>>,
}

impl Located {
    fn all(&self) -> impl Iterator<Item = &ChunkLocation> {
        std::iter::once(&self.at).chain(self.also.iter().flat_map(|v| v.iter()))
    }

    fn add(&mut self, l: ChunkLocation) {
        if self.all().any(|x| x.pack == l.pack) {
            return;
        }
        let mut more: Vec<ChunkLocation> = self.also.take().map(Vec::from).unwrap_or_default();
        more.push(l);
        self.also = Some(more.into_boxed_slice());
    }

    /// Drops the locations in `gone`; `false` when none is left.
    fn forget(&mut self, gone: &HashSet<Digest>) -> bool {
        let mut left: Vec<ChunkLocation> = self.all().filter(|l| !gone.contains(&l.pack)).copied().collect();
        if left.is_empty() {
            return false;
        }
        self.at = left.remove(0);
        self.also = (!left.is_empty()).then(|| left.into_boxed_slice());
        true
    }
}

#[derive(Default)]
struct State {
    chunks: HashMap<Digest, Located>,
    /// Every indexed pack, with its size when the listing or upload told us.
    packs: HashMap<Digest, Option<u64>>,
    /// Indexes that failed to decode: logged once, not re-read on every rescan.
    bad: HashSet<Digest>,
    /// The datasets that may read each pack (`packs/<hex>.links/<name>`).
    links: HashMap<Digest, Vec<Name>>,
    /// Packs garbage collection is removing (`gc/condemned/<hex>`): never
    /// offered to a push or a publish.
    condemned: HashSet<Digest>,
}

impl ChunkIndex {
    pub fn new(store: Arc<dyn ObjectStore>, gauge: Gauge, bytes_gauge: Gauge) -> Self {
        let (ready, _) = watch::channel(false);
        Self {
            shared: Arc::new(Shared {
                store,
                state: RwLock::new(State::default()),
                ready,
                started: AtomicBool::new(false),
                last_rescan: tokio::sync::Mutex::new(None),
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

    /// Splits `digests` into the present ones (at their first location in a
    /// pack some dataset `can_read` accepts is linked to) and the missing ones.
    pub fn lookup(&self, digests: &[Digest], can_read: &CanRead<'_>) -> (Vec<PresentChunk>, Vec<Digest>) {
        // One read guard for the whole query, and no call back into `self`
        // under it: a recursive read would deadlock behind a waiting writer.
        let state = self.shared.state.read();
        let mut present = Vec::new();
        let mut missing = Vec::new();
        for d in digests {
            let found = state
                .chunks
                .get(d)
                .and_then(|c| c.all().find(|l| usable(&state, &l.pack, can_read)).map(|l| (c.len, *l)));
            match found {
                Some((len, location)) => present.push(PresentChunk { digest: *d, len, location }),
                None => missing.push(*d),
            }
        }
        (present, missing)
    }

    /// Places chunks (digest, plaintext length) in packs some dataset
    /// `can_read` accepts is linked to; returns the placed ones and the rest.
    pub fn place(&self, chunks: &[(Digest, u32)], can_read: &CanRead<'_>) -> (Vec<PlacedChunk>, Vec<(Digest, u32)>) {
        let state = self.shared.state.read();
        let mut placed = Vec::with_capacity(chunks.len());
        let mut missing = Vec::new();
        for &(digest, len) in chunks {
            let found = state
                .chunks
                .get(&digest)
                .filter(|c| c.len == len)
                .and_then(|c| c.all().find(|l| usable(&state, &l.pack, can_read)).copied());
            match found {
                Some(location) => placed.push(PlacedChunk { digest, len, location }),
                None => missing.push((digest, len)),
            }
        }
        (placed, missing)
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
        let mut state = self.shared.state.write();
        state.chunks.retain(|_, c| c.forget(gone));
        for p in gone {
            state.packs.remove(p);
            state.links.remove(p);
        }
        publish_size(&self.shared, &state);
    }

    /// Reads indexes other replicas added since the last scan, unless a scan
    /// ran less than [`RESCAN_INTERVAL`] ago. Concurrent callers wait for the
    /// scan in progress instead of starting their own.
    pub async fn rescan_if_due(&self) -> Result<(), AppError> {
        let mut last = self.shared.last_rescan.lock().await;
        if last.is_some_and(|t| t.elapsed() < RESCAN_INTERVAL) {
            return Ok(());
        }
        let added = scan(&self.shared).await.ctx("rescanning pack indexes")?;
        if added > 0 {
            tracing::info!(packs = added, "picked up packs stored by other replicas");
        }
        *last = Some(Instant::now());
        Ok(())
    }

    /// Records a pack this replica just stored.
    pub fn add_pack(&self, pack: Digest, size: u64, entries: &[PackEntry]) {
        insert(&self.shared, pack, Some(size), entries);
    }

    /// The index's memory, estimated ([`entry_bytes`] per chunk).
    pub fn estimated_bytes(&self) -> u64 {
        self.shared.state.read().chunks.len() as u64 * entry_bytes()
    }

    /// How many of `entries` the index does not hold yet.
    pub fn unknown(&self, entries: &[PackEntry]) -> usize {
        let state = self.shared.state.read();
        entries.iter().filter(|e| !state.chunks.contains_key(&e.digest)).count()
    }

    /// Whether `name` may read `pack`, as far as this replica knows.
    pub fn is_linked(&self, pack: &Digest, name: &Name) -> bool {
        self.shared.state.read().links.get(pack).is_some_and(|l| l.contains(name))
    }

    /// Lets `name` read `pack` (the link object is already stored).
    pub fn add_link(&self, pack: Digest, name: Name) {
        add_link(&mut self.shared.state.write().links, pack, name);
    }

    pub fn has_pack(&self, pack: &Digest) -> bool {
        self.shared.state.read().packs.contains_key(pack)
    }

    /// The size of an indexed pack, when known.
    pub fn pack_size(&self, pack: &Digest) -> Option<u64> {
        self.shared.state.read().packs.get(pack).copied().flatten()
    }
}

/// Which datasets a caller may read.
pub(crate) type CanRead<'a> = dyn Fn(&Name) -> bool + Sync + 'a;

/// A pack a query may answer with: linked to a dataset the caller may read,
/// and not being collected.
fn usable(state: &State, pack: &Digest, can_read: &CanRead<'_>) -> bool {
    !state.condemned.contains(pack) && state.links.get(pack).is_some_and(|l| l.iter().any(can_read))
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
        match scan(&shared).await {
            Ok(packs) => {
                let chunks = shared.state.read().chunks.len();
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

/// Lists `packs/` and reads every index not yet known. Returns how many packs it added.
async fn scan(shared: &Shared) -> Result<usize, object_store::Error> {
    let listing: Vec<object_store::ObjectMeta> = shared.store.list(Some(&storage::packs_dir())).try_collect().await?;
    let mut sizes = HashMap::new();
    let mut indexes = Vec::new();
    for meta in &listing {
        if let Some((pack, name)) = storage::parse_pack_link(&meta.location) {
            add_link(&mut shared.state.write().links, pack, name);
        } else if let Some(d) = storage::parse_pack(&meta.location) {
            sizes.insert(d, meta.size);
        } else if let Some(d) = storage::parse_pack_index(&meta.location) {
            indexes.push(d);
        }
    }
    let unknown: Vec<Digest> = {
        let state = shared.state.read();
        indexes.into_iter().filter(|d| !state.packs.contains_key(d) && !state.bad.contains(d)).collect()
    };
    let store = shared.store.clone();
    let mut fetches = futures::stream::iter(unknown)
        .map(|d| {
            let store = store.clone();
            async move { (d, storage::get_bytes(&*store, &storage::pack_index(&d)).await) }
        })
        .buffer_unordered(LOAD_PARALLELISM);
    let mut added = 0;
    while let Some((pack, res)) = fetches.next().await {
        // Gone between listing and reading (deleted): nothing to index.
        let Some(bytes) = res? else { continue };
        match decode_index(&bytes, None) {
            Ok(entries) => {
                insert(shared, pack, sizes.get(&pack).copied(), &entries);
                added += 1;
            }
            Err(e) => {
                tracing::error!(pack = %pack, error = %e, "skipping corrupt pack index");
                shared.state.write().bad.insert(pack);
            }
        }
    }
    Ok(added)
}

fn add_link(links: &mut HashMap<Digest, Vec<Name>>, pack: Digest, name: Name) {
    let l = links.entry(pack).or_default();
    if !l.contains(&name) {
        l.push(name);
    }
}

fn insert(shared: &Shared, pack: Digest, size: Option<u64>, entries: &[PackEntry]) {
    let mut state = shared.state.write();
    for e in entries {
        let at = e.location(pack);
        match state.chunks.entry(e.digest) {
            std::collections::hash_map::Entry::Occupied(mut o) => o.get_mut().add(at),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Located { len: e.len, at, also: None });
            }
        }
    }
    let known = state.packs.entry(pack).or_insert(None);
    if size.is_some() {
        *known = size;
    }
    state.bad.remove(&pack);
    publish_size(shared, &state);
}

/// Memory one indexed chunk takes, estimated: the map's entry (digest and
/// location) over its load factor (7/8), plus a control byte.
pub(crate) fn entry_bytes() -> u64 {
    (std::mem::size_of::<(Digest, Located)>() as u64) * 8 / 7 + 1
}

fn publish_size(shared: &Shared, state: &State) {
    shared.gauge.set(state.chunks.len() as i64);
    shared.bytes_gauge.set(i64::try_from(state.chunks.len() as u64 * entry_bytes()).unwrap_or(i64::MAX));
}

#[cfg(test)]
mod tests {
    use aetherfs_format::Compression;

    use super::*;

    fn at(pack: &Digest) -> ChunkLocation {
        ChunkLocation { pack: *pack, offset: 8, stored_len: 3, compression: Compression::None }
    }

    #[test]
    fn a_chunk_keeps_every_location_until_its_packs_are_forgotten() {
        let (p1, p2) = (Digest::of(b"p1"), Digest::of(b"p2"));
        let mut c = Located { len: 3, at: at(&p1), also: None };
        c.add(at(&p2));
        c.add(at(&p2));
        assert_eq!(c.all().count(), 2, "the same pack is recorded once");
        assert!(c.forget(&HashSet::from([p1])));
        assert_eq!(c.all().map(|l| l.pack).collect::<Vec<_>>(), vec![p2]);
        assert!(!c.forget(&HashSet::from([p2])), "no location left");
    }

    #[tokio::test]
    async fn lookups_skip_packs_the_caller_cannot_use_or_that_are_condemned() {
        let index =
            ChunkIndex::new(Arc::new(object_store::memory::InMemory::new()), Gauge::default(), Gauge::default());
        let (p1, p2) = (Digest::of(b"p1"), Digest::of(b"p2"));
        let d = Digest::of(b"chunk");
        let e = PackEntry { digest: d, offset: 8, stored_len: 3, len: 3, compression: Compression::None };
        index.add_pack(p1, 100, std::slice::from_ref(&e));
        index.add_pack(p2, 100, std::slice::from_ref(&e));
        let (a, b): (Name, Name) = ("team-a/x".parse().unwrap(), "team-b/y".parse().unwrap());
        index.add_link(p1, a.clone());
        index.add_link(p2, b.clone());
        let locate =
            |len, can_read: &CanRead<'_>| index.place(&[(d, len)], can_read).0.first().map(|c| c.location.pack);
        assert_eq!(locate(3, &|n: &Name| *n == b), Some(p2));
        assert_eq!(locate(4, &|_: &Name| true), None, "a length mismatch is no match");
        index.set_condemned(HashSet::from([p1]));
        assert_eq!(locate(3, &|_: &Name| true), Some(p2));
        let (present, missing) = index.lookup(&[d], &|n: &Name| *n == a);
        assert!(present.is_empty() && missing == vec![d], "a condemned pack was offered");
        index.forget_packs(&HashSet::from([p2]));
        assert_eq!(locate(3, &|_: &Name| true), None);
    }
}
