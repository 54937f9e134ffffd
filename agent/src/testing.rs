//! Fakes for tests of [`HubSource`](crate::source::HubSource) and what sits
//! on it: an in-memory pack store that counts what it serves, and wrappers
//! that delay, hang, fail or corrupt reads. Packs are built with the real
//! pack builder, so offsets and compression are those a hub would serve.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aetherfs_format::pack::PackBuilder;
use aetherfs_format::{ChunkLocation, ChunkRef, Digest};
use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;

use crate::source::{PackError, PackReader};

/// The error the fakes return.
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    #[error("pack {0} is not stored")]
    NoPack(Digest),
    #[error("range {offset}+{len} is outside pack {pack}")]
    OutOfRange { pack: Digest, offset: u64, len: u64 },
    #[error("injected failure")]
    Injected,
}

/// One ranged read, as asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeRequest {
    pub pack: Digest,
    pub offset: u64,
    pub len: u64,
}

/// Packs held in memory, served by range.
#[derive(Default)]
pub struct MemoryPacks {
    packs: Mutex<HashMap<Digest, Bytes>>,
    /// Where [`MemoryPacks::collect`] moved chunks.
    moved: Mutex<HashMap<Digest, ChunkLocation>>,
    log: Mutex<Vec<RangeRequest>>,
    requests: AtomicU64,
    bytes_served: AtomicU64,
}

impl MemoryPacks {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Builds a pack of `chunks` (in order; zstd when `compress` and it
    /// pays) and stores it. Returns the chunks' refs, in order.
    pub fn add_pack(&self, chunks: &[Vec<u8>], compress: bool) -> Vec<ChunkRef> {
        let mut b = PackBuilder::new();
        for c in chunks {
            b.add(Digest::of(c), c, compress);
        }
        let built = b.finish();
        let refs = built
            .entries
            .iter()
            .map(|e| ChunkRef { digest: e.digest, len: e.len, location: e.location(built.digest) })
            .collect();
        self.packs.lock().insert(built.digest, Bytes::from(built.bytes));
        refs
    }

    /// What garbage collection does to a pack: copies its chunks into a new
    /// pack (in reverse order, so it is a different pack) and deletes the old
    /// one. Returns the chunks' new refs, in the order of `plain`.
    pub fn collect(&self, old: &[ChunkRef], plain: &[Vec<u8>]) -> Vec<ChunkRef> {
        let reversed: Vec<Vec<u8>> = plain.iter().rev().cloned().collect();
        let mut new = self.add_pack(&reversed, false);
        new.reverse();
        let mut moved = self.moved.lock();
        for c in &new {
            moved.insert(c.digest, c.location);
        }
        let mut packs = self.packs.lock();
        for c in old {
            if c.location.pack != new[0].location.pack {
                packs.remove(&c.location.pack);
            }
        }
        new
    }

    /// Range requests served or refused.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Bytes returned by successful requests.
    pub fn bytes_served(&self) -> u64 {
        self.bytes_served.load(Ordering::Relaxed)
    }

    /// Every request, in the order asked.
    pub fn log(&self) -> Vec<RangeRequest> {
        self.log.lock().clone()
    }

    fn range(&self, pack: Digest, offset: u64, len: u64) -> Result<Bytes, FakeError> {
        let packs = self.packs.lock();
        let bytes = packs.get(&pack).ok_or(FakeError::NoPack(pack))?;
        let end = offset.checked_add(len).filter(|&e| e <= bytes.len() as u64);
        let end = end.ok_or(FakeError::OutOfRange { pack, offset, len })?;
        Ok(bytes.slice(offset as usize..end as usize))
    }
}

/// The stored bytes of `chunks`: what fetching each once costs.
pub fn stored_bytes(chunks: &[ChunkRef]) -> u64 {
    chunks.iter().map(|c| u64::from(c.location.stored_len)).sum()
}

impl PackReader for MemoryPacks {
    fn read_pack_range(&self, pack: Digest, offset: u64, len: u64) -> BoxFuture<'_, Result<Bytes, PackError>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.log.lock().push(RangeRequest { pack, offset, len });
        let r = self.range(pack, offset, len);
        if let Ok(b) = &r {
            self.bytes_served.fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        futures::future::ready(r.map_err(PackError::from)).boxed()
    }

    fn is_gone(&self, e: &PackError) -> bool {
        matches!(e.downcast_ref::<FakeError>(), Some(FakeError::NoPack(_)))
    }

    fn relocate(&self, _pack: Digest) -> BoxFuture<'_, Result<HashMap<Digest, ChunkLocation>, PackError>> {
        futures::future::ready(Ok(self.moved.lock().clone())).boxed()
    }
}

/// When a fault applies: to the next `n` requests, and to all while on.
#[derive(Default)]
pub struct Trigger {
    next: AtomicU64,
    on: AtomicBool,
}

impl Trigger {
    pub fn next(&self, n: u64) {
        self.next.store(n, Ordering::SeqCst);
    }

    pub fn set(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
    }

    /// Whether the fault applies to this request (consumes one of `next`).
    fn fire(&self) -> bool {
        self.on.load(Ordering::SeqCst)
            || self.next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }
}

/// Delays every request, or holds it until released.
pub struct Slow {
    inner: Arc<dyn PackReader>,
    delay: Duration,
    hold: tokio::sync::watch::Sender<bool>,
    started: AtomicU64,
}

impl Slow {
    /// Each request waits `delay` before reaching `inner`.
    pub fn delay(inner: Arc<dyn PackReader>, delay: Duration) -> Arc<Self> {
        Arc::new(Self { inner, delay, hold: tokio::sync::watch::Sender::new(false), started: AtomicU64::new(0) })
    }

    /// Requests hang until [`Slow::release`].
    pub fn hanging(inner: Arc<dyn PackReader>) -> Arc<Self> {
        let s = Self::delay(inner, Duration::ZERO);
        s.hold.send_replace(true);
        s
    }

    /// Lets held requests (and later ones) through.
    pub fn release(&self) {
        self.hold.send_replace(false);
    }

    /// Holds requests again.
    pub fn hang(&self) {
        self.hold.send_replace(true);
    }

    /// Requests asked of this wrapper, held or not.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }
}

impl PackReader for Slow {
    fn read_pack_range(&self, pack: Digest, offset: u64, len: u64) -> BoxFuture<'_, Result<Bytes, PackError>> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let mut hold = self.hold.subscribe();
        async move {
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            // The sender lives in `self`, so this only ends by release.
            let _ = hold.wait_for(|held| !held).await;
            self.inner.read_pack_range(pack, offset, len).await
        }
        .boxed()
    }
}

/// Fails requests as its [`Trigger`] says, without asking `inner`.
pub struct Failing {
    inner: Arc<dyn PackReader>,
    pub trigger: Trigger,
    failed: AtomicU64,
}

impl Failing {
    pub fn new(inner: Arc<dyn PackReader>) -> Arc<Self> {
        Arc::new(Self { inner, trigger: Trigger::default(), failed: AtomicU64::new(0) })
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }
}

impl PackReader for Failing {
    fn read_pack_range(&self, pack: Digest, offset: u64, len: u64) -> BoxFuture<'_, Result<Bytes, PackError>> {
        if self.trigger.fire() {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return futures::future::ready(Err(PackError::from(FakeError::Injected))).boxed();
        }
        self.inner.read_pack_range(pack, offset, len)
    }
}

/// Flips bytes of the ranges `inner` returns, as its [`Trigger`] says.
pub struct Corrupting {
    inner: Arc<dyn PackReader>,
    pub trigger: Trigger,
    corrupted: AtomicU64,
}

impl Corrupting {
    pub fn new(inner: Arc<dyn PackReader>) -> Arc<Self> {
        Arc::new(Self { inner, trigger: Trigger::default(), corrupted: AtomicU64::new(0) })
    }

    pub fn corrupted(&self) -> u64 {
        self.corrupted.load(Ordering::SeqCst)
    }
}

impl PackReader for Corrupting {
    fn read_pack_range(&self, pack: Digest, offset: u64, len: u64) -> BoxFuture<'_, Result<Bytes, PackError>> {
        let corrupt = self.trigger.fire();
        async move {
            let data = self.inner.read_pack_range(pack, offset, len).await?;
            if !corrupt || data.is_empty() {
                return Ok(data);
            }
            self.corrupted.fetch_add(1, Ordering::SeqCst);
            // Every 64th byte, so each chunk in a coalesced range is hit.
            let mut v = data.to_vec();
            for b in v.iter_mut().step_by(64) {
                *b ^= 0xff;
            }
            Ok(Bytes::from(v))
        }
        .boxed()
    }
}
