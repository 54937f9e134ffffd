//! The chunk source mounts read through: memory, then the encrypted disk
//! cache, then the hub.
//!
//! - Hot plaintext chunks live in a `moka` cache weighed in bytes. Loads of
//!   one chunk are merged: concurrent readers of a missing chunk wait for
//!   one load.
//! - Below it, a [`ChunkCache`] (the encrypted disk cache) when
//!   the agent has one: it survives restarts and is the whole-version
//!   prefetch target. A disk-cache failure is a miss, never a failed read.
//! - Chunks on neither tier are coalesced into few HTTP range reads of packs
//!   (adjacent chunks in a pack become one request), each shared by the
//!   loads of the chunks it carries, with at most `concurrency` requests in
//!   flight.
//! - Chunks the filesystem expects next (sequential reads) ride along in the
//!   same requests and are loaded in the background. Those on the disk cache
//!   are read ahead too, in parallel (at most [`DISK_READS_IN_FLIGHT`] disk
//!   reads at once, each on a blocking thread), so the next chunks are being
//!   read and decrypted on every core while the kernel waits for this one.
//! - Garbage collection may move chunks into new packs; a version's
//!   manifest never changes, only its placement. A range read that finds its
//!   pack gone asks the [`PackReader`] where the chunks went (the hub client
//!   refetches the placements of the versions using that pack), and reads
//!   each chunk from its new place from then on.
//! - Every fetched chunk is decompressed and verified against its digest
//!   before it enters either tier; a fetch slower than the timeout fails the
//!   read with EIO instead of hanging the reader, and the next read tries
//!   the hub again, so service resumes by itself when the hub returns.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aetherfs_format::pack::decode_chunk;
use aetherfs_format::{ChunkLocation, ChunkRef, Digest, Manifest, Name};
use aetherfs_hub_client::fetch::{ChunkWant, RangeRead, coalesce};
use aetherfs_hub_client::{ClientError, HubClient};
use aetherfs_mounts::stats::ReadAccount;
use aetherfs_mounts::{ChunkSource, SourceError};
use bytes::Bytes;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt};
use tokio::sync::Semaphore;

use aetherfs_cache::ChunkCache;

type RangeFuture = Shared<BoxFuture<'static, Result<Bytes, SourceError>>>;
type Load = BoxFuture<'static, Result<Bytes, SourceError>>;
/// A range read and the plan it was made from.
type Fetch = (RangeFuture, RangeRead);

/// Upper bounds (seconds) of the fetch-latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// Plaintext bytes queued for the disk cache at most: part of the agent's
/// memory bound beside the memory tier (docs/agent.md, "Memory").
pub const DISK_WRITE_BUDGET: u32 = 16 << 20;

/// Counters a daemon exports as metrics.
#[derive(Default)]
pub struct SourceStats {
    pub memory_hits: AtomicU64,
    pub disk_hits: AtomicU64,
    pub misses: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub range_requests: AtomicU64,
    pub fetch_errors: AtomicU64,
    /// Sum of range-request latencies, in microseconds.
    pub fetch_micros: AtomicU64,
    /// Requests at or under each bucket of [`LATENCY_BUCKETS`] (cumulative on export).
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    pub prefetched_bytes: AtomicU64,
}

impl SourceStats {
    fn observe(&self, secs: f64) {
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| secs <= b) {
            self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.fetch_micros.fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
    }
}

/// Why a ranged pack read failed; kept as the cause of [`SourceError::Unavailable`].
pub type PackError = Box<dyn std::error::Error + Send + Sync>;

/// What a [`HubSource`] needs from the hub: ranged reads of packs. A seam so
/// tests (see [`crate::testing`]) can serve packs from memory and inject faults.
pub trait PackReader: Send + Sync {
    /// `len` bytes of `pack` at `offset`, exactly as stored.
    fn read_pack_range(&self, pack: Digest, offset: u64, len: u64) -> BoxFuture<'_, Result<Bytes, PackError>>;

    /// Whether `e` says the pack no longer exists (garbage collection moved
    /// its chunks), rather than that the hub failed.
    fn is_gone(&self, _e: &PackError) -> bool {
        false
    }

    /// Where the chunks of the versions that used `pack` are now, by chunk digest.
    fn relocate(&self, _pack: Digest) -> BoxFuture<'_, Result<HashMap<Digest, ChunkLocation>, PackError>> {
        async { Ok(HashMap::new()) }.boxed()
    }
}

/// The hub as a [`PackReader`]. The hub serves a pack only through a
/// dataset allowed to read it, so each pack is read through the dataset whose
/// version uses it: [`HubPacks::register`] records that for every manifest
/// before its chunks are read.
pub struct HubPacks {
    client: HubClient,
    datasets: parking_lot::RwLock<HashMap<Digest, Name>>,
    /// The versions (dataset, digest) that use each pack, to find where
    /// their chunks went when the pack is gone.
    users: parking_lot::RwLock<HashMap<Digest, Vec<(Name, Digest)>>>,
}

impl HubPacks {
    pub fn new(client: HubClient) -> Arc<Self> {
        Arc::new(Self { client, datasets: Default::default(), users: Default::default() })
    }

    pub fn client(&self) -> &HubClient {
        &self.client
    }

    /// Reads the packs `manifest` (version `digest` of `name`) uses through `name`.
    pub fn register(&self, name: &Name, digest: &Digest, manifest: &Manifest) {
        let packs: HashSet<Digest> = manifest.unique_chunks().into_values().map(|c| c.location.pack).collect();
        self.add_packs(name, digest, packs);
    }

    fn add_packs(&self, name: &Name, digest: &Digest, packs: impl IntoIterator<Item = Digest>) {
        let (mut d, mut u) = (self.datasets.write(), self.users.write());
        for p in packs {
            d.entry(p).or_insert_with(|| name.clone());
            let users = u.entry(p).or_default();
            if !users.iter().any(|(n, v)| n == name && v == digest) {
                users.push((name.clone(), *digest));
            }
        }
    }
}

impl PackReader for HubPacks {
    fn read_pack_range(&self, pack: Digest, offset: u64, len: u64) -> BoxFuture<'_, Result<Bytes, PackError>> {
        async move {
            let name = self.datasets.read().get(&pack).cloned();
            let name = name.ok_or_else(|| PackError::from(format!("pack {pack} is used by no dataset served here")))?;
            self.client.read_pack_range(&name, &pack, offset, len).await.map_err(PackError::from)
        }
        .boxed()
    }

    fn is_gone(&self, e: &PackError) -> bool {
        matches!(e.downcast_ref::<ClientError>(), Some(ClientError::Api { status: 404, code, .. }) if code == "pack_not_found")
    }

    fn relocate(&self, pack: Digest) -> BoxFuture<'_, Result<HashMap<Digest, ChunkLocation>, PackError>> {
        async move {
            let users = self.users.read().get(&pack).cloned().unwrap_or_default();
            let mut moved = HashMap::new();
            for (name, version) in users {
                let placement = self.client.get_placement(&name, &version).await.map_err(PackError::from)?;
                self.add_packs(&name, &version, placement.packs());
                moved.extend(placement.chunks().iter().map(|c| (c.digest, c.location)));
            }
            tracing::info!(%pack, chunks = moved.len(), "a pack was collected; read its chunks from where they moved");
            Ok(moved)
        }
        .boxed()
    }
}

/// Range requests in flight to the hub at once, unless configured.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// Disk-cache reads (pread + decrypt, each on a blocking thread) in flight at
/// once, wanted and read-ahead together: enough to keep every core of a small
/// machine decrypting and the disk's queue fed; each holds one chunk.
pub const DISK_READS_IN_FLIGHT: usize = 8;

/// How a [`HubSource`] fetches.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    pub memory_bytes: u64,
    pub timeout: Duration,
    pub concurrency: usize,
}

#[derive(Clone)]
pub struct HubSource {
    client: Arc<dyn PackReader>,
    memory: moka::future::Cache<Digest, Bytes>,
    /// Chunks some range request is already fetching, with that request. New
    /// ranges leave them out and later loads join that request, so a
    /// sequential reader's moving read-ahead window fetches each chunk once
    /// (without this, every read re-requested most of the window).
    in_flight: Arc<parking_lot::Mutex<HashMap<Digest, Fetch>>>,
    disk: Option<Arc<dyn ChunkCache>>,
    /// Bounds the disk-cache reads in flight ([`DISK_READS_IN_FLIGHT`]).
    disk_permits: Arc<Semaphore>,
    /// Chunks a background load is reading from the disk cache: read-ahead
    /// leaves them out instead of starting a second load.
    disk_loading: Arc<parking_lot::Mutex<HashSet<Digest>>>,
    timeout: Duration,
    permits: Arc<Semaphore>,
    /// Bytes of plaintext waiting to be written to the disk cache.
    disk_writes: Arc<Semaphore>,
    /// Packs found gone, and where their chunks are now.
    relocated: Arc<Relocated>,
    pub stats: Arc<SourceStats>,
}

#[derive(Default)]
struct Relocated {
    gone: parking_lot::RwLock<HashSet<Digest>>,
    to: parking_lot::RwLock<HashMap<Digest, ChunkLocation>>,
    /// One relocation at a time: the second caller finds the first one's answer.
    busy: tokio::sync::Mutex<()>,
}

impl HubSource {
    /// A source reading through `client` (the hub: a [`HubPacks`]).
    pub fn new(client: Arc<dyn PackReader>, disk: Option<Arc<dyn ChunkCache>>, opts: &SourceOptions) -> Arc<Self> {
        let memory = moka::future::Cache::builder()
            .max_capacity(opts.memory_bytes)
            .weigher(|_k: &Digest, v: &Bytes| u32::try_from(v.len()).unwrap_or(u32::MAX))
            .build();
        Arc::new(Self {
            client,
            memory,
            in_flight: Arc::default(),
            disk,
            disk_permits: Arc::new(Semaphore::new(DISK_READS_IN_FLIGHT)),
            disk_loading: Arc::default(),
            timeout: opts.timeout,
            permits: Arc::new(Semaphore::new(opts.concurrency.max(1))),
            disk_writes: Arc::new(Semaphore::new(DISK_WRITE_BUDGET as usize)),
            relocated: Arc::default(),
            stats: Arc::default(),
        })
    }

    /// Where to read a chunk: its placement, unless its pack is gone and we
    /// learned where the chunk went.
    fn want(&self, c: &ChunkRef) -> ChunkWant {
        let mut location = c.location;
        if self.relocated.gone.read().contains(&location.pack)
            && let Some(to) = self.relocated.to.read().get(&c.digest)
        {
            location = *to;
        }
        ChunkWant { digest: c.digest, len: c.len, location }
    }

    /// After a read found `pack` gone: learns where its chunks went.
    async fn relocate(&self, pack: Digest) -> Result<(), SourceError> {
        let _one = self.relocated.busy.lock().await;
        let moved = self.client.relocate(pack).await.map_err(SourceError::unavailable)?;
        self.relocated.to.write().extend(moved);
        Ok(())
    }

    /// Bytes held in the memory tier.
    pub fn memory_bytes(&self) -> u64 {
        self.memory.weighted_size()
    }

    pub fn disk(&self) -> Option<&Arc<dyn ChunkCache>> {
        self.disk.as_ref()
    }

    fn on_disk(&self, d: &Digest) -> bool {
        self.disk.as_ref().is_some_and(|c| c.contains(d))
    }

    /// One range request, bounded by the semaphore and the timeout. Lazy:
    /// it runs only if some load polls it.
    fn range_future(&self, range: &RangeRead) -> RangeFuture {
        let (client, stats, timeout, permits, relocated) =
            (self.client.clone(), self.stats.clone(), self.timeout, self.permits.clone(), self.relocated.clone());
        let (pack, offset, len) = (range.pack, range.offset, range.len);
        async move {
            let started = Instant::now();
            // The timeout covers the wait for a permit too: a reader never
            // waits longer than that in total.
            let r = tokio::time::timeout(timeout, async {
                let _permit = permits.acquire().await.map_err(|_| SourceError::ShuttingDown)?;
                match client.read_pack_range(pack, offset, len).await {
                    Ok(b) => Ok(b),
                    Err(e) => {
                        if client.is_gone(&e) {
                            relocated.gone.write().insert(pack);
                        }
                        Err(SourceError::unavailable(e))
                    }
                }
            })
            .await;
            stats.range_requests.fetch_add(1, Ordering::Relaxed);
            stats.observe(started.elapsed().as_secs_f64());
            let r = r.unwrap_or(Err(SourceError::Timeout));
            match &r {
                Ok(bytes) => {
                    stats.bytes_fetched.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    stats.fetch_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(pack = %pack, error = %e, "range read failed");
                }
            }
            r
        }
        .boxed()
        .shared()
    }

    /// Verified plaintext of one chunk from a fetched range, stored on disk.
    /// Writes to the disk cache wait for room in [`DISK_WRITE_BUDGET`]: a
    /// reader faster than the disk slows to its pace instead of piling up
    /// plaintext in memory.
    async fn decode_and_keep(&self, data: &Bytes, r: &RangeRead, w: &ChunkWant) -> Result<Bytes, SourceError> {
        let stored = r.slice(data, w);
        let plain = decode_chunk(stored, w.len, w.location.compression, &w.digest)
            .map(Bytes::from)
            .map_err(|_| SourceError::Corrupt(w.digest))?;
        if let Some(disk) = &self.disk {
            let weight = u32::try_from(plain.len()).unwrap_or(u32::MAX).clamp(1, DISK_WRITE_BUDGET);
            // The semaphore is never closed, so acquiring only waits.
            if let Ok(permit) = self.disk_writes.clone().acquire_many_owned(weight).await {
                let (disk, d, p) = (disk.clone(), w.digest, plain.clone());
                tokio::task::spawn_blocking(move || {
                    disk.put(&d, &p);
                    drop(permit);
                });
            }
        }
        Ok(plain)
    }

    /// One future per chunk, in order, that loads it through the tiers:
    /// chunks on disk are read from it, the rest share coalesced range reads.
    fn loads(self: &Arc<Self>, chunks: &[ChunkRef]) -> Vec<Load> {
        // Plan range reads for chunks on no tier and not being fetched already;
        // the others join the in-flight range read (or its load, through the
        // memory tier). Joining the range read itself matters when the load
        // that claimed a chunk has not started yet (a spawned read-ahead):
        // without it the joiner fetched the chunk again on its own.
        let mut claimed: HashSet<Digest> = HashSet::new();
        let mut fetches: HashMap<Digest, Fetch> = HashMap::new();
        {
            let mut in_flight = self.in_flight.lock();
            let mut remote: Vec<ChunkWant> = Vec::new();
            for c in chunks {
                if self.on_disk(&c.digest) || self.memory.contains_key(&c.digest) {
                    continue;
                }
                if let Some(f) = in_flight.get(&c.digest) {
                    fetches.insert(c.digest, f.clone());
                } else if claimed.insert(c.digest) {
                    remote.push(self.want(c));
                }
            }
            for r in coalesce(remote) {
                let fut = self.range_future(&r);
                for w in &r.chunks {
                    fetches.insert(w.digest, (fut.clone(), r.clone()));
                    in_flight.insert(w.digest, (fut.clone(), r.clone()));
                }
            }
        }
        chunks
            .iter()
            .map(|c| {
                let this = self.clone();
                let fetch = fetches.get(&c.digest).cloned();
                // Whoever claimed a chunk releases it when its load ends, however it ends.
                let release = claimed.remove(&c.digest).then(|| InFlight(self.in_flight.clone(), c.digest));
                let (c, memory) = (*c, self.memory.clone());
                async move {
                    let _release = release;
                    let init = async move {
                        if let Some(b) = this.read_disk(&c).await {
                            return Ok(b);
                        }
                        let alone = |w: ChunkWant| RangeRead {
                            pack: w.location.pack,
                            offset: w.location.offset,
                            len: u64::from(w.location.stored_len),
                            chunks: vec![w],
                        };
                        let (fut, r) = match fetch {
                            Some(f) => f,
                            // Cached, on disk or in flight when planned, but not
                            // there now: fetch it alone.
                            None => {
                                let r = alone(this.want(&c));
                                (this.range_future(&r), r)
                            }
                        };
                        let (data, r) = match fut.await {
                            Ok(data) => (data, r),
                            // Its pack was collected: once more, from where it went.
                            Err(e) if this.relocated.gone.read().contains(&r.pack) => {
                                this.relocate(r.pack).await?;
                                let w = this.want(&c);
                                if w.location.pack == r.pack {
                                    return Err(e);
                                }
                                let r = alone(w);
                                (this.range_future(&r).await?, r)
                            }
                            Err(e) => return Err(e),
                        };
                        this.stats.misses.fetch_add(1, Ordering::Relaxed);
                        let w =
                            r.chunks.iter().find(|w| w.digest == c.digest).copied().unwrap_or_else(|| this.want(&c));
                        this.decode_and_keep(&data, &r, &w).await
                    };
                    memory.try_get_with(c.digest, init).await.map_err(|e: Arc<SourceError>| (*e).clone())
                }
                .boxed()
            })
            .collect()
    }

    async fn read_disk(&self, c: &ChunkRef) -> Option<Bytes> {
        let disk = self.disk.clone()?;
        if !disk.contains(&c.digest) {
            return None;
        }
        // The permit moves into the blocking read: a load dropped while it
        // runs still counts against the bound until the read ends.
        let permit = self.disk_permits.clone().acquire_owned().await.ok()?;
        let d = c.digest;
        let got = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            disk.get(&d)
        })
        .await
        .ok()
        .flatten()?;
        self.stats.disk_hits.fetch_add(1, Ordering::Relaxed);
        Some(got)
    }

    /// Disk-cache reads in flight now (for tests of the bound).
    #[cfg(test)]
    pub(crate) fn disk_reads_in_flight(&self) -> usize {
        DISK_READS_IN_FLIGHT - self.disk_permits.available_permits()
    }

    /// Fetches every chunk in `chunks` that is on neither tier into the disk
    /// cache (or, without one, the memory tier), `concurrency` ranges at a
    /// time. Returns the bytes fetched.
    pub async fn prefetch(self: &Arc<Self>, chunks: &[ChunkRef]) -> Result<u64, SourceError> {
        let mut todo: Vec<ChunkWant> = chunks
            .iter()
            .filter(|c| !self.on_disk(&c.digest) && (self.disk.is_some() || !self.memory.contains_key(&c.digest)))
            .map(|c| self.want(c))
            .collect();
        // In pack order, so neighbours coalesce into few large range reads.
        todo.sort_by_key(|w| (w.location.pack, w.location.offset));
        // A chunk listed twice (files share chunks) would start a second range.
        todo.dedup_by_key(|w| w.digest);
        let ranges = coalesce(todo);
        let before = self.stats.bytes_fetched.load(Ordering::Relaxed);
        let results: Vec<Result<(), SourceError>> = futures::stream::iter(ranges)
            .map(|r| {
                let this = self.clone();
                async move {
                    let data = this.range_future(&r).await?;
                    for w in &r.chunks {
                        let plain = this.decode_and_keep(&data, &r, w).await?;
                        if this.disk.is_none() {
                            this.memory.insert(w.digest, plain).await;
                        }
                    }
                    Ok(())
                }
            })
            .buffer_unordered(self.permits.available_permits().max(1))
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        let fetched = self.stats.bytes_fetched.load(Ordering::Relaxed) - before;
        self.stats.prefetched_bytes.fetch_add(fetched, Ordering::Relaxed);
        Ok(fetched)
    }
}

/// Marks a chunk as no longer being fetched when dropped.
struct InFlight(Arc<parking_lot::Mutex<HashMap<Digest, Fetch>>>, Digest);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

/// Marks a chunk as no longer being read ahead from disk when dropped.
struct DiskLoading(Arc<parking_lot::Mutex<HashSet<Digest>>>, Digest);

impl Drop for DiskLoading {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

/// Reads go through a shared handle so background loads can outlive the call.
pub struct SharedSource(pub Arc<HubSource>);

impl ChunkSource for SharedSource {
    fn read<'a>(
        &'a self,
        want: &'a [ChunkRef],
        ahead: &'a [ChunkRef],
    ) -> BoxFuture<'a, Result<Vec<Bytes>, SourceError>> {
        async move { self.read_accounted(want, ahead, &ReadAccount::default()).await }.boxed()
    }

    fn read_accounted<'a>(
        &'a self,
        want: &'a [ChunkRef],
        ahead: &'a [ChunkRef],
        account: &'a ReadAccount,
    ) -> BoxFuture<'a, Result<Vec<Bytes>, SourceError>> {
        let this = &self.0;
        async move {
            let mut out = Vec::with_capacity(want.len());
            for c in want {
                match this.memory.get(&c.digest).await {
                    Some(b) => out.push(b),
                    None => break,
                }
            }
            this.stats.memory_hits.fetch_add(out.len() as u64, Ordering::Relaxed);
            // Read-ahead: chunks in neither tier are fetched along with the
            // wanted ones; chunks on disk are read from it in the background
            // (unless a load of theirs is already running).
            let mut from_disk: Vec<ChunkRef> = Vec::new();
            let ahead: Vec<ChunkRef> = ahead
                .iter()
                .filter(|c| !this.memory.contains_key(&c.digest))
                .filter(|c| {
                    if !this.on_disk(&c.digest) {
                        return true;
                    }
                    if this.disk_loading.lock().insert(c.digest) {
                        from_disk.push(**c);
                    }
                    false
                })
                .copied()
                .collect();
            if !from_disk.is_empty() {
                let loads = this.loads(&from_disk);
                let guards: Vec<DiskLoading> =
                    from_disk.iter().map(|c| DiskLoading(this.disk_loading.clone(), c.digest)).collect();
                tokio::spawn(async move {
                    let _guards = guards;
                    futures::future::join_all(loads).await
                });
            }
            let missing = want.len() - out.len();
            // Where the chunks come from, before the loads below start: a
            // chunk some fetch already carries costs this read no bytes.
            ReadAccount::add(&account.memory_hits, out.len() as u64);
            {
                let in_flight = this.in_flight.lock();
                for c in &want[out.len()..] {
                    if this.on_disk(&c.digest) {
                        ReadAccount::add(&account.disk_hits, 1);
                    } else {
                        ReadAccount::add(&account.fetched_chunks, 1);
                        if !in_flight.contains_key(&c.digest) {
                            ReadAccount::add(&account.fetched_bytes, u64::from(c.location.stored_len));
                        }
                    }
                }
                let started: u64 = ahead
                    .iter()
                    .filter(|c| !in_flight.contains_key(&c.digest))
                    .map(|c| u64::from(c.location.stored_len))
                    .sum();
                ReadAccount::add(&account.ahead_bytes, started);
            }
            // The read-ahead chunks ride in the same range requests, but the
            // reader waits only for its own.
            let all: Vec<ChunkRef> = want[out.len()..].iter().chain(&ahead).copied().collect();
            let mut loads = this.loads(&all);
            let background = loads.split_off(missing);
            if !background.is_empty() {
                tokio::spawn(futures::future::join_all(background));
            }
            if missing > 0 {
                out.extend(futures::future::try_join_all(loads).await?);
            }
            Ok(out)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests;
