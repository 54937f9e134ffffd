//! A [`ChunkCache`] in memory, for tests of what sits above the cache: it
//! keeps what it is given (up to a bound in bytes, oldest out first) and
//! counts what it is asked.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use aetherfs_format::Digest;
use bytes::Bytes;
use parking_lot::Mutex;

use crate::{CacheStats, ChunkCache};

/// An in-memory [`ChunkCache`]: no encryption, no files, same contract.
pub struct MemoryCache {
    max_bytes: u64,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
    puts: AtomicU64,
}

#[derive(Default)]
struct Inner {
    chunks: HashMap<Digest, Bytes>,
    order: VecDeque<Digest>,
    bytes: u64,
    evicted_bytes: u64,
}

impl MemoryCache {
    pub fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            inner: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            puts: AtomicU64::new(0),
        }
    }
}

impl ChunkCache for MemoryCache {
    fn get(&self, digest: &Digest) -> Option<Bytes> {
        let got = self.inner.lock().chunks.get(digest).cloned();
        let counter = if got.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Relaxed);
        got
    }

    fn put(&self, digest: &Digest, plain: &[u8]) {
        self.puts.fetch_add(1, Relaxed);
        let mut g = self.inner.lock();
        if g.chunks.contains_key(digest) || plain.len() as u64 > self.max_bytes {
            return;
        }
        g.chunks.insert(*digest, Bytes::copy_from_slice(plain));
        g.order.push_back(*digest);
        g.bytes += plain.len() as u64;
        while g.bytes > self.max_bytes {
            let Some(old) = g.order.pop_front() else { break };
            if let Some(b) = g.chunks.remove(&old) {
                g.bytes -= b.len() as u64;
                g.evicted_bytes += b.len() as u64;
            }
        }
    }

    fn contains(&self, digest: &Digest) -> bool {
        self.inner.lock().chunks.contains_key(digest)
    }

    fn stats(&self) -> CacheStats {
        let g = self.inner.lock();
        CacheStats {
            bytes: g.bytes,
            entries: g.chunks.len() as u64,
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            puts: self.puts.load(Relaxed),
            evicted_bytes: g.evicted_bytes,
            ..CacheStats::default()
        }
    }

    fn max_bytes(&self) -> u64 {
        self.max_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_within_its_bound() {
        let c = MemoryCache::new(10);
        let (a, b) = (Digest::of(b"aaaaaa"), Digest::of(b"bbbbbb"));
        c.put(&a, b"aaaaaa");
        assert_eq!(c.get(&a).as_deref(), Some(&b"aaaaaa"[..]));
        c.put(&b, b"bbbbbb");
        assert!(!c.contains(&a), "the oldest entry goes first");
        assert!(c.contains(&b));
        let s = c.stats();
        assert_eq!((s.bytes, s.entries, s.hits, s.evicted_bytes), (6, 1, 1, 6));
    }
}
