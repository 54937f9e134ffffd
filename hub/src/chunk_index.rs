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
//! Publishing a manifest does not trust this map: it checks each chunk
//! reference against the referenced pack's own index ([`ChunkIndex::pack_entries`],
//! cached in a small LRU), so a manifest can only point at bytes that are
//! really where it says.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use aetherfs_format::api::PresentChunk;
use aetherfs_format::pack::{PackEntry, decode_index};
use aetherfs_format::{ChunkLocation, ChunkRef, Compression, Digest, Name};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use parking_lot::{Mutex, RwLock};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use crate::error::{AppError, StorageContext};
use crate::storage;

/// Pack indexes read at once while loading.
const LOAD_PARALLELISM: usize = 16;
/// Least time between two rescans of the pack listing.
pub(crate) const RESCAN_INTERVAL: Duration = Duration::from_secs(5);
/// Parsed pack indexes kept for publish checks.
const PACK_INDEX_CACHE: usize = 1024;
/// Longest a request waits for the initial load before answering 503.
const READY_WAIT: Duration = Duration::from_secs(30);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Everything that identifies a chunk's place in a pack; a manifest's chunk
/// reference must match a pack index entry on all of it.
pub(crate) type EntryKey = (Digest, u64, u32, u32, Compression);
pub(crate) type PackEntrySet = HashSet<EntryKey>;

pub(crate) fn entry_key(e: &PackEntry) -> EntryKey {
    (e.digest, e.offset, e.stored_len, e.len, e.compression)
}

pub(crate) fn ref_key(c: &ChunkRef) -> EntryKey {
    (c.digest, c.location.offset, c.location.stored_len, c.len, c.location.compression)
}

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
    pack_indexes: Mutex<Lru>,
    gauge: Gauge,
}

#[derive(Default)]
struct State {
    chunks: HashMap<Digest, (u32, ChunkLocation)>,
    /// Every indexed pack, with its size when the listing or upload told us.
    packs: HashMap<Digest, Option<u64>>,
    /// Indexes that failed to decode: logged once, not re-read on every rescan.
    bad: HashSet<Digest>,
    /// The datasets that may read each pack (`packs/<hex>.links/<name>`).
    links: HashMap<Digest, Vec<Name>>,
}

impl ChunkIndex {
    pub fn new(store: Arc<dyn ObjectStore>, gauge: Gauge) -> Self {
        let (ready, _) = watch::channel(false);
        Self {
            shared: Arc::new(Shared {
                store,
                state: RwLock::new(State::default()),
                ready,
                started: AtomicBool::new(false),
                last_rescan: tokio::sync::Mutex::new(None),
                pack_indexes: Mutex::new(Lru::default()),
                gauge,
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

    /// Splits `digests` into the present ones (with their location) and the missing ones.
    pub fn lookup(&self, digests: &[Digest]) -> (Vec<PresentChunk>, Vec<Digest>) {
        let state = self.shared.state.read();
        let mut present = Vec::new();
        let mut missing = Vec::new();
        for d in digests {
            match state.chunks.get(d) {
                Some(&(len, location)) => present.push(PresentChunk { digest: *d, len, location }),
                None => missing.push(*d),
            }
        }
        (present, missing)
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
        let set: PackEntrySet = entries.iter().map(entry_key).collect();
        self.shared.pack_indexes.lock().insert(pack, Arc::new(set));
    }

    /// Whether `name` may read `pack`, as far as this replica knows.
    pub fn is_linked(&self, pack: &Digest, name: &Name) -> bool {
        self.shared.state.read().links.get(pack).is_some_and(|l| l.contains(name))
    }

    /// Whether some dataset that `can_read` accepts may read `pack`.
    pub fn visible(&self, pack: &Digest, can_read: &(dyn Fn(&Name) -> bool + Sync)) -> bool {
        self.shared.state.read().links.get(pack).is_some_and(|l| l.iter().any(can_read))
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

    /// The entries of one pack's index, read from `packs/<hex>.idx`
    /// (cached). `None` when the pack is not stored (or its index is corrupt).
    pub async fn pack_entries(&self, pack: &Digest) -> Result<Option<Arc<PackEntrySet>>, AppError> {
        if let Some(set) = self.shared.pack_indexes.lock().get(pack) {
            return Ok(Some(set));
        }
        let bytes = match storage::get_bytes(&*self.shared.store, &storage::pack_index(pack)).await {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(None),
            Err(e) => return Err(AppError::storage("reading a pack index", e)),
        };
        let entries = match decode_index(&bytes, None) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(pack = %pack, error = %e, "stored pack index is corrupt");
                return Ok(None);
            }
        };
        let set = Arc::new(entries.iter().map(entry_key).collect::<PackEntrySet>());
        self.shared.pack_indexes.lock().insert(*pack, set.clone());
        Ok(Some(set))
    }
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
        state.chunks.entry(e.digest).or_insert((e.len, e.location(pack)));
    }
    let known = state.packs.entry(pack).or_insert(None);
    if size.is_some() {
        *known = size;
    }
    state.bad.remove(&pack);
    shared.gauge.set(state.chunks.len() as i64);
}

/// A small least-recently-used map of parsed pack indexes. Eviction scans the
/// map, which is fine at this size and keeps the code obvious.
#[derive(Default)]
struct Lru {
    map: HashMap<Digest, (Arc<PackEntrySet>, u64)>,
    tick: u64,
}

impl Lru {
    fn get(&mut self, pack: &Digest) -> Option<Arc<PackEntrySet>> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(pack).map(|(set, used)| {
            *used = tick;
            set.clone()
        })
    }

    fn insert(&mut self, pack: Digest, set: Arc<PackEntrySet>) {
        self.tick += 1;
        if self.map.len() >= PACK_INDEX_CACHE
            && !self.map.contains_key(&pack)
            && let Some(oldest) = self.map.iter().min_by_key(|(_, (_, used))| *used).map(|(d, _)| *d)
        {
            self.map.remove(&oldest);
        }
        self.map.insert(pack, (set, self.tick));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut lru = Lru::default();
        let set = Arc::new(PackEntrySet::new());
        for i in 0..PACK_INDEX_CACHE as u32 {
            lru.insert(Digest::of(&i.to_le_bytes()), set.clone());
        }
        let first = Digest::of(&0u32.to_le_bytes());
        let second = Digest::of(&1u32.to_le_bytes());
        assert!(lru.get(&first).is_some());
        lru.insert(Digest::of(b"new"), set);
        assert_eq!(lru.map.len(), PACK_INDEX_CACHE);
        assert!(lru.get(&first).is_some(), "recently used entry was evicted");
        assert!(lru.get(&second).is_none(), "oldest entry was kept");
    }
}
