//! What readers do with a mount, per version: reads, bytes, latency, where
//! the bytes came from, and which files. Every front end reads through
//! [`crate::DatasetFs::read`], so one count serves FUSE, NFS and WebDAV.
//!
//! Memory is bounded: a fixed set of counters per version, and at most
//! [`FILES_TRACKED`] files counted by name (reads of others are summed in
//! `untracked_bytes`). [`crate::DatasetFs`] keeps the stats of the last
//! [`VERSIONS_KEPT`] versions it served, so what a switch cost stays visible
//! after the old version is gone.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aetherfs_format::Digest;
use serde::Serialize;

/// Upper bounds of the read-latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 10] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0];
/// Files counted by name per version.
pub const FILES_TRACKED: usize = 10_000;
/// Versions whose stats a filesystem keeps (the current one included).
pub const VERSIONS_KEPT: usize = 8;

/// Where a read's chunks came from. A [`crate::ChunkSource`] that knows
/// fills it in ([`crate::ChunkSource::read_accounted`]); one that does not
/// leaves it at zero.
#[derive(Debug, Default)]
pub struct ReadAccount {
    /// Chunks found in memory.
    pub memory_hits: AtomicU64,
    /// Chunks found in the disk cache.
    pub disk_hits: AtomicU64,
    /// Chunks fetched (or joined a fetch already running) for the reader.
    pub fetched_chunks: AtomicU64,
    /// Their bytes as stored: what the network carried.
    pub fetched_bytes: AtomicU64,
    /// Bytes fetched ahead of a sequential reader, as stored.
    pub ahead_bytes: AtomicU64,
}

impl ReadAccount {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct FileCount {
    path: String,
    reads: u64,
    bytes: u64,
}

/// The counters of one version.
#[derive(Debug)]
pub struct VersionStats {
    digest: Digest,
    reads: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_micros: AtomicU64,
    pub(crate) source: ReadAccount,
    files: Mutex<HashMap<u32, FileCount>>,
    untracked_bytes: AtomicU64,
}

impl VersionStats {
    pub(crate) fn new(digest: Digest) -> Self {
        Self {
            digest,
            reads: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: Default::default(),
            latency_micros: AtomicU64::new(0),
            source: ReadAccount::default(),
            files: Mutex::new(HashMap::new()),
            untracked_bytes: AtomicU64::new(0),
        }
    }

    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// One read of `bytes` from `node` (at `path`) that took `took`.
    pub(crate) fn record(&self, node: u32, path: impl FnOnce() -> String, bytes: u64, took: Duration, ok: bool) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS.iter().position(|&b| secs <= b).unwrap_or(LATENCY_BUCKETS.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_micros.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let tracked = files.len() < FILES_TRACKED || files.contains_key(&node);
        if tracked {
            let f = files.entry(node).or_insert_with(|| FileCount { path: path(), ..FileCount::default() });
            f.reads += 1;
            f.bytes += bytes;
        } else {
            self.untracked_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// A snapshot, with the `top` files read most (by bytes).
    pub fn report(&self, top: usize) -> VersionReport {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let buckets: Vec<u64> = self.latency.iter().map(load).collect();
        let reads = load(&self.reads);
        let (memory, disk, fetched) =
            (load(&self.source.memory_hits), load(&self.source.disk_hits), load(&self.source.fetched_chunks));
        let chunks = memory + disk + fetched;
        let (files_read, files) = {
            let files = self.files.lock().unwrap_or_else(|p| p.into_inner());
            let mut top_files: Vec<&FileCount> = if top == 0 { Vec::new() } else { files.values().collect() };
            top_files.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.path.cmp(&b.path)));
            top_files.truncate(top);
            let out = top_files.iter().map(|f| FileReport { path: f.path.clone(), reads: f.reads, bytes: f.bytes });
            (files.len() as u64, out.collect::<Vec<_>>())
        };
        VersionReport {
            digest: self.digest,
            reads,
            bytes_read: load(&self.bytes),
            errors: load(&self.errors),
            memory_hits: memory,
            disk_hits: disk,
            fetched_chunks: fetched,
            fetched_bytes: load(&self.source.fetched_bytes),
            readahead_bytes: load(&self.source.ahead_bytes),
            cache_hit_ratio: if chunks == 0 { None } else { Some((memory + disk) as f64 / chunks as f64) },
            latency: Latency {
                mean_ms: if reads == 0 {
                    None
                } else {
                    Some(load(&self.latency_micros) as f64 / reads as f64 / 1000.0)
                },
                p50_ms: quantile(&buckets, 0.5),
                p99_ms: quantile(&buckets, 0.99),
                buckets,
            },
            files_read,
            untracked_bytes: load(&self.untracked_bytes),
            top_files: files,
        }
    }
}

/// The upper bound (in ms) of the bucket where quantile `q` falls; `None`
/// without reads, and for the overflow bucket the last bound.
fn quantile(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            let bound = LATENCY_BUCKETS.get(i).or(LATENCY_BUCKETS.last()).copied().unwrap_or(1.0);
            return Some(bound * 1000.0);
        }
    }
    None
}

/// A mount's counters over every version it served, for metrics: the
/// versions still kept plus those folded in when they dropped out (so the
/// sums only grow).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MountTotals {
    pub reads: u64,
    pub bytes_read: u64,
    pub errors: u64,
    pub memory_hits: u64,
    pub disk_hits: u64,
    pub fetched_chunks: u64,
    /// Fetched for readers plus read ahead, as stored.
    pub network_bytes: u64,
    pub latency_seconds_sum: f64,
    /// Per bucket of [`LATENCY_BUCKETS`], then the overflow (not cumulative).
    pub latency_buckets: Vec<u64>,
}

impl MountTotals {
    pub fn add(&mut self, r: &VersionReport) {
        self.reads += r.reads;
        self.bytes_read += r.bytes_read;
        self.errors += r.errors;
        self.memory_hits += r.memory_hits;
        self.disk_hits += r.disk_hits;
        self.fetched_chunks += r.fetched_chunks;
        self.network_bytes += r.fetched_bytes + r.readahead_bytes;
        self.latency_seconds_sum += r.latency.mean_ms.unwrap_or(0.0) * r.reads as f64 / 1000.0;
        self.latency_buckets.resize(LATENCY_BUCKETS.len() + 1, 0);
        for (t, n) in self.latency_buckets.iter_mut().zip(&r.latency.buckets) {
            *t += n;
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub path: String,
    pub reads: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub mean_ms: Option<f64>,
    /// Upper bounds of the buckets the median and the 99th percentile fall in.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Reads per bucket of [`LATENCY_BUCKETS`], then the overflow (not cumulative).
    pub buckets: Vec<u64>,
}

/// What readers did with one version.
#[derive(Debug, Clone, Serialize)]
pub struct VersionReport {
    pub digest: Digest,
    pub reads: u64,
    pub bytes_read: u64,
    pub errors: u64,
    pub memory_hits: u64,
    pub disk_hits: u64,
    pub fetched_chunks: u64,
    pub fetched_bytes: u64,
    pub readahead_bytes: u64,
    /// Chunks read from memory or disk over all chunks read; `None` before any.
    pub cache_hit_ratio: Option<f64>,
    pub latency: Latency,
    /// Distinct files read (at most [`FILES_TRACKED`]).
    pub files_read: u64,
    /// Bytes read from files past the [`FILES_TRACKED`] counted by name.
    pub untracked_bytes: u64,
    /// The files read most, by bytes.
    pub top_files: Vec<FileReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_counted_per_file_with_latency_and_a_bounded_file_table() {
        let s = VersionStats::new(Digest::of(b"v"));
        s.record(1, || "a.db".into(), 4096, Duration::from_micros(80), true);
        s.record(1, || "a.db".into(), 4096, Duration::from_micros(300), true);
        s.record(2, || "b.csv".into(), 100, Duration::from_millis(20), false);
        ReadAccount::add(&s.source.memory_hits, 3);
        ReadAccount::add(&s.source.fetched_chunks, 1);
        let r = s.report(1);
        assert_eq!((r.reads, r.bytes_read, r.errors, r.files_read), (3, 8292, 1, 2));
        assert_eq!(r.top_files.len(), 1);
        assert_eq!((r.top_files[0].path.as_str(), r.top_files[0].reads, r.top_files[0].bytes), ("a.db", 2, 8192));
        assert_eq!(r.cache_hit_ratio, Some(0.75));
        assert_eq!(r.latency.p50_ms, Some(0.5));
        assert_eq!(r.latency.p99_ms, Some(50.0));
        assert_eq!(r.latency.buckets.iter().sum::<u64>(), 3);

        let s = VersionStats::new(Digest::of(b"w"));
        for n in 0..(FILES_TRACKED as u32 + 10) {
            s.record(n, || "f".into(), 1, Duration::ZERO, true);
        }
        let r = s.report(5);
        assert_eq!((r.files_read, r.untracked_bytes), (FILES_TRACKED as u64, 10));
    }

    #[test]
    fn no_reads_no_quantiles() {
        let r = VersionStats::new(Digest::of(b"v")).report(10);
        assert_eq!((r.latency.p50_ms, r.latency.mean_ms, r.cache_hit_ratio), (None, None, None));
    }
}
