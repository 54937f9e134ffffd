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
//!   same requests and are loaded in the background.
//! - Every fetched chunk is decompressed and verified against its digest
//!   before it enters either tier; a fetch slower than the timeout fails the
//!   read with EIO instead of hanging the reader, and the next read tries
//!   the hub again, so service resumes by itself when the hub returns.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aetherfs_format::pack::decode_chunk;
use aetherfs_format::{ChunkRef, Digest, Manifest, Name};
use aetherfs_hub_client::HubClient;
use aetherfs_hub_client::fetch::{ChunkWant, RangeRead, coalesce};
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
}

/// The hub as a [`PackReader`]. The hub serves a pack only through a
/// dataset allowed to read it, so each pack is read through the dataset whose
/// version uses it: [`HubPacks::register`] records that for every manifest
/// before its chunks are read.
pub struct HubPacks {
    client: HubClient,
    datasets: parking_lot::RwLock<HashMap<Digest, Name>>,
}

impl HubPacks {
    pub fn new(client: HubClient) -> Arc<Self> {
        Arc::new(Self { client, datasets: parking_lot::RwLock::new(HashMap::new()) })
    }

    pub fn client(&self) -> &HubClient {
        &self.client
    }

    /// Reads the packs `manifest` (a version of `name`) uses through `name`.
    pub fn register(&self, name: &Name, manifest: &Manifest) {
        let mut d = self.datasets.write();
        for c in manifest.unique_chunks().into_values() {
            d.entry(c.location.pack).or_insert_with(|| name.clone());
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
}

/// Range requests in flight to the hub at once, unless configured.
pub const DEFAULT_CONCURRENCY: usize = 8;

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
    timeout: Duration,
    permits: Arc<Semaphore>,
    pub stats: Arc<SourceStats>,
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
            timeout: opts.timeout,
            permits: Arc::new(Semaphore::new(opts.concurrency.max(1))),
            stats: Arc::default(),
        })
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
        let (client, stats, timeout, permits) =
            (self.client.clone(), self.stats.clone(), self.timeout, self.permits.clone());
        let (pack, offset, len) = (range.pack, range.offset, range.len);
        async move {
            let started = Instant::now();
            // The timeout covers the wait for a permit too: a reader never
            // waits longer than that in total.
            let r = tokio::time::timeout(timeout, async {
                let _permit = permits.acquire().await.map_err(|_| SourceError::ShuttingDown)?;
                client.read_pack_range(pack, offset, len).await.map_err(SourceError::unavailable)
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
    fn decode_and_keep(&self, data: &Bytes, r: &RangeRead, w: &ChunkWant) -> Result<Bytes, SourceError> {
        let stored = r.slice(data, w);
        let plain = decode_chunk(stored, w.len, w.location.compression, &w.digest)
            .map(Bytes::from)
            .map_err(|_| SourceError::Corrupt(w.digest))?;
        if let Some(disk) = &self.disk {
            let (disk, d, p) = (disk.clone(), w.digest, plain.clone());
            tokio::task::spawn_blocking(move || disk.put(&d, &p));
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
                    remote.push(ChunkWant { digest: c.digest, len: c.len, location: c.location });
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
                        let (fut, r) = match fetch {
                            Some(f) => f,
                            // Cached, on disk or in flight when planned, but not
                            // there now: fetch it alone.
                            None => {
                                let w = ChunkWant { digest: c.digest, len: c.len, location: c.location };
                                let r = RangeRead {
                                    pack: w.location.pack,
                                    offset: w.location.offset,
                                    len: u64::from(w.location.stored_len),
                                    chunks: vec![w],
                                };
                                (this.range_future(&r), r)
                            }
                        };
                        let data = fut.await?;
                        this.stats.misses.fetch_add(1, Ordering::Relaxed);
                        let w = r.chunks.iter().find(|w| w.digest == c.digest).copied().unwrap_or(ChunkWant {
                            digest: c.digest,
                            len: c.len,
                            location: c.location,
                        });
                        this.decode_and_keep(&data, &r, &w)
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
        let d = c.digest;
        let got = tokio::task::spawn_blocking(move || disk.get(&d)).await.ok().flatten()?;
        self.stats.disk_hits.fetch_add(1, Ordering::Relaxed);
        Some(Bytes::from(got))
    }

    /// Fetches every chunk in `chunks` that is on neither tier into the disk
    /// cache (or, without one, the memory tier), `concurrency` ranges at a
    /// time. Returns the bytes fetched.
    pub async fn prefetch(self: &Arc<Self>, chunks: &[ChunkRef]) -> Result<u64, SourceError> {
        let mut todo: Vec<ChunkWant> = chunks
            .iter()
            .filter(|c| !self.on_disk(&c.digest) && (self.disk.is_some() || !self.memory.contains_key(&c.digest)))
            .map(|c| ChunkWant { digest: c.digest, len: c.len, location: c.location })
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
                        let plain = this.decode_and_keep(&data, &r, w)?;
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

/// Reads go through a shared handle so background loads can outlive the call.
pub struct SharedSource(pub Arc<HubSource>);

impl ChunkSource for SharedSource {
    fn read<'a>(
        &'a self,
        want: &'a [ChunkRef],
        ahead: &'a [ChunkRef],
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
            let ahead: Vec<ChunkRef> = ahead
                .iter()
                .filter(|c| !this.memory.contains_key(&c.digest) && !this.on_disk(&c.digest))
                .copied()
                .collect();
            let missing = want.len() - out.len();
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
