//! HubSource over the fakes in `crate::testing`: each test counts requests
//! or bytes, so a regression in merging, coalescing or caching shows.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aetherfs_cache::ChunkCache;
use aetherfs_cache::testing::MemoryCache;
use aetherfs_format::ChunkRef;
use aetherfs_mounts::{ChunkSource, SourceError};
use aetherfs_util::pseudo_random;

use super::*;
use crate::testing::{Corrupting, Failing, MemoryPacks, Slow, stored_bytes};

const CHUNK: usize = 4096;

fn opts(timeout: Duration) -> SourceOptions {
    SourceOptions { memory_bytes: 64 << 20, timeout, concurrency: DEFAULT_CONCURRENCY }
}

/// `n` distinct chunks (pseudo_random ignores a seed's low bit, hence the 2).
fn chunks(n: usize, seed: u64) -> Vec<Vec<u8>> {
    (0..n).map(|i| pseudo_random(CHUNK, (seed << 16) + 2 * i as u64)).collect()
}

fn source(reader: Arc<dyn PackReader>, disk: Option<Arc<dyn ChunkCache>>) -> SharedSource {
    SharedSource(HubSource::new(reader, disk, &opts(Duration::from_secs(5))))
}

async fn read_one(s: &SharedSource, c: &ChunkRef) -> Result<Bytes, SourceError> {
    let mut v = s.read(std::slice::from_ref(c), &[]).await?;
    Ok(v.remove(0))
}

/// Waits (by yielding, not sleeping) until spawned disk writes land.
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..100_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition not reached");
}

#[tokio::test]
async fn concurrent_reads_of_one_chunk_make_one_request() {
    let packs = MemoryPacks::new();
    let data = chunks(1, 1);
    let refs = packs.add_pack(&data, false);
    let slow = Slow::hanging(packs.clone());
    let s = source(slow.clone(), None);
    let reads = futures::future::join_all((0..8).map(|_| read_one(&s, &refs[0])));
    // join! polls the reads first, so all eight are waiting when released.
    let (got, ()) = futures::join!(reads, async {
        until(|| slow.started() >= 1).await;
        slow.release();
    });
    for g in got {
        assert_eq!(g.unwrap(), data[0]);
    }
    assert_eq!(slow.started(), 1);
    assert_eq!(packs.requests(), 1);
    assert_eq!(s.0.stats.misses.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn adjacent_chunks_of_a_pack_coalesce() {
    let packs = MemoryPacks::new();
    let data = chunks(6, 10);
    let refs = packs.add_pack(&data, true);
    let s = source(packs.clone(), None);
    let got = s.read(&refs, &[]).await.unwrap();
    assert_eq!(got, data);
    assert_eq!(packs.requests(), 1);
    assert_eq!(packs.bytes_served(), stored_bytes(&refs));
    assert_eq!(s.0.stats.range_requests.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn hanging_hub_times_out_then_recovers() {
    let packs = MemoryPacks::new();
    let data = chunks(1, 20);
    let refs = packs.add_pack(&data, false);
    let slow = Slow::hanging(packs.clone());
    let bound = Duration::from_millis(100);
    let s = SharedSource(HubSource::new(slow.clone(), None, &opts(bound)));
    let started = Instant::now();
    let err = read_one(&s, &refs[0]).await.unwrap_err();
    assert!(matches!(err, SourceError::Timeout), "{err:?}");
    assert!(started.elapsed() < bound * 10, "took {:?}", started.elapsed());
    assert_eq!(packs.requests(), 0);
    assert_eq!(s.0.stats.fetch_errors.load(Ordering::Relaxed), 1);
    // The failure is not cached: the next read asks the hub again.
    slow.release();
    assert_eq!(read_one(&s, &refs[0]).await.unwrap(), data[0]);
    assert_eq!(packs.requests(), 1);
}

#[tokio::test]
async fn corrupt_range_fails_and_is_not_cached() {
    let packs = MemoryPacks::new();
    let data = chunks(2, 30);
    let refs = packs.add_pack(&data, true);
    let bad = Corrupting::new(packs.clone());
    let disk = Arc::new(MemoryCache::new(1 << 20));
    let s = source(bad.clone(), Some(disk.clone()));
    bad.trigger.next(1);
    let err = read_one(&s, &refs[0]).await.unwrap_err();
    assert!(matches!(err, SourceError::Corrupt(d) if d == refs[0].digest), "{err:?}");
    assert_eq!(bad.corrupted(), 1);
    assert_eq!(s.0.memory_bytes(), 0);
    assert!(!disk.contains(&refs[0].digest));
    assert_eq!(read_one(&s, &refs[0]).await.unwrap(), data[0]);
    assert_eq!(packs.requests(), 2);
}

#[tokio::test]
async fn sequential_reader_fetches_each_chunk_once() {
    let packs = MemoryPacks::new();
    let data = chunks(32, 40);
    let refs = packs.add_pack(&data, true);
    let s = source(packs.clone(), None);
    for i in 0..refs.len() {
        let ahead = &refs[(i + 1).min(refs.len())..(i + 5).min(refs.len())];
        let got = s.read(&refs[i..=i], ahead).await.unwrap();
        assert_eq!(got[0], data[i], "chunk {i}");
    }
    assert_eq!(packs.bytes_served(), stored_bytes(&refs));
    assert!(packs.requests() < refs.len() as u64, "{} requests", packs.requests());
}

#[tokio::test]
async fn disk_hit_makes_no_request() {
    let packs = MemoryPacks::new();
    let data = chunks(1, 50);
    let refs = packs.add_pack(&data, false);
    let disk = Arc::new(MemoryCache::new(1 << 20));
    disk.put(&refs[0].digest, &data[0]);
    let s = source(packs.clone(), Some(disk));
    assert_eq!(read_one(&s, &refs[0]).await.unwrap(), data[0]);
    assert_eq!(packs.requests(), 0);
    assert_eq!(s.0.stats.disk_hits.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn prefetch_fills_disk_in_pack_order() {
    let packs = MemoryPacks::new();
    let a = packs.add_pack(&chunks(8, 60), true);
    let b = packs.add_pack(&chunks(8, 70), true);
    let disk = Arc::new(MemoryCache::new(16 << 20));
    let s = source(packs.clone(), Some(disk.clone()));
    // Interleaved and reversed, as a manifest's file order might be.
    let mut all: Vec<ChunkRef> = a.iter().rev().zip(b.iter()).flat_map(|(x, y)| [*x, *y]).collect();
    all.push(a[0]);
    let fetched = s.0.prefetch(&all).await.unwrap();
    assert_eq!(fetched, stored_bytes(&a) + stored_bytes(&b));
    let log = packs.log();
    assert_eq!(log.len(), 2, "{log:?}");
    let mut sorted = log.clone();
    sorted.sort_by_key(|r| (r.pack, r.offset));
    assert_eq!(log, sorted);
    until(|| all.iter().all(|c| disk.contains(&c.digest))).await;
    // Reads now come from disk.
    let got = s.read(&a, &[]).await.unwrap();
    assert_eq!(got.len(), a.len());
    assert_eq!(packs.requests(), 2);
}

#[tokio::test]
async fn failed_request_is_unavailable_then_retried() {
    let packs = MemoryPacks::new();
    let data = chunks(1, 80);
    let refs = packs.add_pack(&data, false);
    let failing = Failing::new(packs.clone());
    let s = source(failing.clone(), None);
    failing.trigger.next(1);
    let err = read_one(&s, &refs[0]).await.unwrap_err();
    assert!(matches!(err, SourceError::Unavailable(_)), "{err:?}");
    assert_eq!((failing.failed(), packs.requests()), (1, 0));
    assert_eq!(read_one(&s, &refs[0]).await.unwrap(), data[0]);
    assert_eq!(packs.requests(), 1);
}

/// The value of the sample `name` (with its labels, if any) in a text exposition.
fn scraped(text: &str, name: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ')))
        .unwrap_or_else(|| panic!("no {name}"));
    line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("bad sample: {line}"))
}

#[tokio::test]
async fn metrics_scrape_parses_and_counts_reads() {
    let packs = MemoryPacks::new();
    let data = chunks(2, 20);
    let refs = packs.add_pack(&data, false);
    let s = source(packs.clone(), None);
    let admin = crate::admin::Admin::new(s.0.clone(), 0);
    let before = admin.metrics_text();
    assert_eq!(scraped(&before, "aetherfs_fetched_bytes_total"), 0.0);
    assert_eq!(scraped(&before, "aetherfs_fetch_duration_seconds_count"), 0.0);

    read_one(&s, &refs[0]).await.unwrap();
    read_one(&s, &refs[0]).await.unwrap();
    let after = admin.metrics_text();
    assert!(scraped(&after, "aetherfs_fetched_bytes_total") > 0.0);
    assert_eq!(scraped(&after, "aetherfs_cache_misses_total"), 1.0);
    assert_eq!(scraped(&after, "aetherfs_cache_memory_hits_total"), 1.0);
    assert_eq!(scraped(&after, "aetherfs_fetch_duration_seconds_count"), 1.0);
    assert_eq!(scraped(&after, "aetherfs_fetch_duration_seconds_bucket{le=\"+Inf\"}"), 1.0);
    // Buckets are cumulative: the last bound already holds the one request.
    assert_eq!(scraped(&after, "aetherfs_fetch_duration_seconds_bucket{le=\"5.0\"}"), 1.0);

    // Well-formed: every sample belongs to a family declared once, with HELP and TYPE.
    let mut declared = HashSet::new();
    for line in after.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap();
            assert!(declared.insert(name.to_string()), "{name} declared twice");
            assert!(after.contains(&format!("# HELP {name} ")), "{name} has no help");
        } else if !line.starts_with('#') {
            let sample = line.split([' ', '{']).next().unwrap();
            assert!(
                declared.iter().any(|f| sample
                    .strip_prefix(f.as_str())
                    .is_some_and(|s| matches!(s, "" | "_total" | "_bucket" | "_sum" | "_count"))),
                "sample {sample} of no declared family"
            );
            assert!(line.rsplit(' ').next().unwrap().parse::<f64>().is_ok(), "bad value: {line}");
        }
    }
    assert_eq!(after.lines().last(), Some("# EOF"));
}

#[tokio::test]
async fn reads_follow_chunks_that_garbage_collection_moved() {
    let packs = MemoryPacks::new();
    let data = chunks(4, 9);
    let old = packs.add_pack(&data, true);
    let s = source(packs.clone(), None);
    assert_eq!(read_one(&s, &old[0]).await.expect("read"), data[0]);
    // The pack is rewritten and deleted while the mount still holds the old placement.
    let new = packs.collect(&old, &data);
    for (i, c) in old.iter().enumerate().skip(1) {
        assert_eq!(read_one(&s, c).await.expect("read after the move"), data[i], "chunk {i}");
    }
    let log = packs.log();
    assert!(log.iter().any(|r| r.pack == new[1].location.pack), "never read the new pack: {log:?}");
    let to_old_after = log.iter().skip(1).filter(|r| r.pack == old[0].location.pack).count();
    assert_eq!(to_old_after, 1, "the gone pack was asked more than once: {log:?}");
}

/// A disk cache whose reads block until [`GatedDisk::open`], counting how
/// many are blocked at once.
struct GatedDisk {
    inner: MemoryCache,
    state: std::sync::Mutex<(bool, usize, usize)>, // (open, now, max)
    cv: std::sync::Condvar,
}

impl GatedDisk {
    fn new() -> Arc<Self> {
        Arc::new(Self { inner: MemoryCache::new(16 << 20), state: Default::default(), cv: Default::default() })
    }
    fn waiting(&self) -> usize {
        self.state.lock().unwrap().1
    }
    fn max(&self) -> usize {
        self.state.lock().unwrap().2
    }
    fn open(&self) {
        self.state.lock().unwrap().0 = true;
        self.cv.notify_all();
    }
}

impl ChunkCache for GatedDisk {
    fn get(&self, digest: &aetherfs_format::Digest) -> Option<Bytes> {
        let mut st = self.state.lock().unwrap();
        st.1 += 1;
        st.2 = st.2.max(st.1);
        while !st.0 {
            st = self.cv.wait(st).unwrap();
        }
        st.1 -= 1;
        drop(st);
        self.inner.get(digest)
    }
    fn put(&self, digest: &aetherfs_format::Digest, plain: &[u8]) {
        self.inner.put(digest, plain)
    }
    fn contains(&self, digest: &aetherfs_format::Digest) -> bool {
        self.inner.contains(digest)
    }
    fn stats(&self) -> aetherfs_cache::CacheStats {
        self.inner.stats()
    }
    fn max_bytes(&self) -> u64 {
        self.inner.max_bytes()
    }
}

#[tokio::test]
async fn read_ahead_from_disk_runs_in_parallel_within_its_bound() {
    let packs = MemoryPacks::new();
    let data = chunks(32, 80);
    let refs = packs.add_pack(&data, true);
    let disk = GatedDisk::new();
    for (r, d) in refs.iter().zip(&data) {
        disk.put(&r.digest, d);
    }
    let s = source(packs.clone(), Some(disk.clone()));
    let (got, ()) = futures::join!(s.read(&refs[..1], &refs[1..]), async {
        // The wanted chunk and the read-ahead all queue for disk reads:
        // exactly the bound gets through while the disk is stalled.
        until(|| disk.waiting() == DISK_READS_IN_FLIGHT).await;
        for _ in 0..1000 {
            tokio::task::yield_now().await;
        }
        assert_eq!(disk.waiting(), DISK_READS_IN_FLIGHT);
        assert_eq!(s.0.disk_reads_in_flight(), DISK_READS_IN_FLIGHT);
        disk.open();
    });
    assert_eq!(got.unwrap(), data[..1]);
    // Every read-ahead chunk lands in the memory tier, read from disk once.
    let mem = s.0.memory.clone();
    for _ in 0..1000 {
        mem.run_pending_tasks().await;
        if refs.iter().all(|c| mem.contains_key(&c.digest)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let again = s.read(&refs, &[]).await.unwrap();
    assert_eq!(again, data);
    assert_eq!(s.0.stats.disk_hits.load(Ordering::Relaxed), refs.len() as u64);
    assert_eq!(s.0.stats.memory_hits.load(Ordering::Relaxed), refs.len() as u64);
    assert_eq!(packs.requests(), 0);
    assert_eq!(disk.max(), DISK_READS_IN_FLIGHT);
    assert!(s.0.disk_loading.lock().is_empty());
}
