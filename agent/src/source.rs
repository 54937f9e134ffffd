//! The chunk source mounts read through: the hub, behind an in-memory cache.
//!
//! - Hot chunks live in a `moka` cache weighed in bytes. Loads of one chunk
//!   are merged: concurrent readers of a missing chunk wait for one fetch.
//! - Misses of one read are coalesced into few HTTP range reads of packs
//!   (adjacent chunks in a pack become one request), each shared by the
//!   loads of the chunks it carries.
//! - Chunks the filesystem expects next (sequential reads) are fetched in
//!   the background the same way, so a sequential reader finds them cached.
//! - Every chunk is decompressed and verified against its digest before it
//!   enters the cache; a fetch that takes longer than the timeout fails the
//!   read with an I/O error instead of hanging the reader.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aetherfs_format::pack::decode_chunk;
use aetherfs_format::{ChunkRef, Digest};
use aetherfs_hub_client::HubClient;
use aetherfs_hub_client::fetch::{ChunkWant, RangeRead, coalesce};
use aetherfs_mounts::{ChunkSource, SourceError};
use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

type RangeFuture = Shared<BoxFuture<'static, Result<Bytes, SourceError>>>;

/// Counters a daemon exports as metrics.
#[derive(Default)]
pub struct SourceStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub range_requests: AtomicU64,
    pub fetch_errors: AtomicU64,
    /// Sum of range-request latencies, in microseconds.
    pub fetch_micros: AtomicU64,
}

pub struct HubSource {
    client: HubClient,
    cache: moka::future::Cache<Digest, Bytes>,
    timeout: Duration,
    pub stats: Arc<SourceStats>,
}

impl HubSource {
    pub fn new(client: HubClient, cache_bytes: u64, timeout: Duration) -> Arc<Self> {
        let cache = moka::future::Cache::builder()
            .max_capacity(cache_bytes)
            .weigher(|_k: &Digest, v: &Bytes| u32::try_from(v.len()).unwrap_or(u32::MAX))
            .build();
        Arc::new(Self { client, cache, timeout, stats: Arc::default() })
    }

    /// Bytes held in the memory cache.
    pub fn cached_bytes(&self) -> u64 {
        self.cache.weighted_size()
    }

    fn range_future(&self, range: &RangeRead) -> RangeFuture {
        let (client, stats, timeout) = (self.client.clone(), self.stats.clone(), self.timeout);
        let (pack, offset, len) = (range.pack, range.offset, range.len);
        async move {
            let started = Instant::now();
            let r = tokio::time::timeout(timeout, client.read_pack_range(&pack, offset, len)).await;
            stats.range_requests.fetch_add(1, Ordering::Relaxed);
            stats.fetch_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            match r {
                Ok(Ok(bytes)) => {
                    stats.bytes_fetched.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    Ok(bytes)
                }
                Ok(Err(e)) => {
                    stats.fetch_errors.fetch_add(1, Ordering::Relaxed);
                    Err(SourceError::Unavailable(e.to_string()))
                }
                Err(_) => {
                    stats.fetch_errors.fetch_add(1, Ordering::Relaxed);
                    Err(SourceError::Timeout)
                }
            }
        }
        .boxed()
        .shared()
    }

    /// One future per chunk that loads it through the cache; chunks that
    /// must be fetched share coalesced range reads.
    fn loads(&self, chunks: &[ChunkRef]) -> Vec<BoxFuture<'static, Result<Bytes, SourceError>>> {
        let ranges = coalesce(chunks.iter().map(|c| ChunkWant { digest: c.digest, len: c.len, location: c.location }));
        let mut loads = Vec::with_capacity(chunks.len());
        for r in &ranges {
            let fut = self.range_future(r);
            for w in &r.chunks {
                let (fut, r, w, cache) = (fut.clone(), r.clone(), *w, self.cache.clone());
                let init = async move {
                    let data = fut.await?;
                    let stored = r.slice(&data, &w);
                    decode_chunk(stored, w.len, w.location.compression, &w.digest)
                        .map(Bytes::from)
                        .map_err(|_| SourceError::Corrupt(w.digest))
                };
                loads.push(
                    async move { cache.try_get_with(w.digest, init).await.map_err(|e: Arc<SourceError>| (*e).clone()) }
                        .boxed(),
                );
            }
        }
        loads
    }

    /// Starts loading chunks in the background; a failure is retried by the
    /// read that needs the chunk.
    fn load_in_background(&self, loads: Vec<BoxFuture<'static, Result<Bytes, SourceError>>>) {
        if !loads.is_empty() {
            tokio::spawn(futures::future::join_all(loads));
        }
    }
}

impl ChunkSource for HubSource {
    fn read<'a>(
        &'a self,
        want: &'a [ChunkRef],
        ahead: &'a [ChunkRef],
    ) -> BoxFuture<'a, Result<Vec<Bytes>, SourceError>> {
        async move {
            let mut out = Vec::with_capacity(want.len());
            for c in want {
                match self.cache.get(&c.digest).await {
                    Some(b) => out.push(b),
                    None => break,
                }
            }
            self.stats.hits.fetch_add(out.len() as u64, Ordering::Relaxed);
            let ahead: Vec<ChunkRef> = ahead.iter().filter(|c| !self.cache.contains_key(&c.digest)).copied().collect();
            if out.len() == want.len() {
                self.load_in_background(self.loads(&ahead));
                return Ok(out);
            }
            let missing = want.len() - out.len();
            self.stats.misses.fetch_add(missing as u64, Ordering::Relaxed);
            // The read-ahead chunks ride in the same range requests, but the
            // reader waits only for its own.
            let all: Vec<ChunkRef> = want[out.len()..].iter().chain(&ahead).copied().collect();
            let mut loads = self.loads(&all);
            let background = loads.split_off(missing);
            self.load_in_background(background);
            out.extend(futures::future::try_join_all(loads).await?);
            Ok(out)
        }
        .boxed()
    }
}
