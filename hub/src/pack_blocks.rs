//! A read-through cache of pack blocks, so that what readers ask for in
//! small ranges the store is asked for in large ones.
//!
//! A mount reads ahead in steps of about a megabyte (short waits, bounded
//! memory in the agent); asked of the store one by one, that is about a
//! thousand GETs per GiB, once per agent. Instead, once a reader asks again
//! within a 16 MiB block of a pack (or in the block after one just asked
//! for), the hub reads the whole block in one request, serves every range in
//! it from memory and reads the next block ahead. Many agents reading the
//! same new version after a tag moves then cost the store one GET per block
//! and replica, not one per range and agent. A read that touches a block
//! first, or one bigger than half a block (`pull`'s coalesced ranges), goes
//! to the store as asked: random reads of a database fetch no 16 MiB for a
//! page, unless they come back to the same block.
//!
//! Bounded: the blocks held (`--read-cache-mib`) and the blocks being read
//! at once ([`LOADS_MAX`]); when every load slot is taken a read goes
//! straight to the store rather than wait.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use aetherfs_format::Digest;
use bytes::{Bytes, BytesMut};
use object_store::{ObjectStore, ObjectStoreExt};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Semaphore;

use crate::storage;

/// Bytes per block (the last block of a pack is shorter).
pub(crate) const BLOCK: u64 = 16 << 20;
/// Blocks read from the store at once, at most.
const LOADS_MAX: usize = 16;
/// How long a block a reader asked for counts as in demand.
const TOUCH_TTL: Duration = Duration::from_secs(30);
/// Blocks remembered as asked for, at most.
const TOUCHED_MAX: u64 = 200_000;

type Key = (Digest, u64);

#[derive(Clone)]
pub(crate) struct PackBlocks {
    store: Arc<dyn ObjectStore>,
    blocks: moka::future::Cache<Key, Bytes>,
    touched: moka::future::Cache<Key, ()>,
    loads: Arc<Semaphore>,
    /// Ranges served from a held block.
    pub hits: Counter,
    /// Blocks read from the store.
    pub loaded: Counter,
}

/// The blocks `range` covers.
fn blocks_of(range: &Range<u64>) -> Range<u64> {
    range.start / BLOCK..(range.end - 1) / BLOCK + 1
}

fn block_range(block: u64, size: u64) -> Range<u64> {
    block * BLOCK..((block + 1) * BLOCK).min(size)
}

impl PackBlocks {
    /// `None` when `cap_bytes` is 0 (every read goes to the store as asked).
    pub fn new(store: Arc<dyn ObjectStore>, cap_bytes: u64, hits: Counter, loaded: Counter) -> Option<Self> {
        (cap_bytes > 0).then(|| Self {
            store,
            blocks: moka::future::Cache::builder()
                .max_capacity(cap_bytes)
                .weigher(|_, b: &Bytes| u32::try_from(b.len()).unwrap_or(u32::MAX))
                .build(),
            touched: moka::future::Cache::builder().max_capacity(TOUCHED_MAX).time_to_live(TOUCH_TTL).build(),
            loads: Arc::new(Semaphore::new(LOADS_MAX)),
            hits,
            loaded,
        })
    }

    /// Bytes `range` of pack `pack` (`size` bytes long) from held blocks,
    /// reading the blocks when they are in demand; `None`: read it from the
    /// store as asked.
    pub async fn read(&self, pack: &Digest, size: u64, range: &Range<u64>) -> object_store::Result<Option<Bytes>> {
        if range.is_empty() || range.end > size || range.end - range.start > BLOCK / 2 {
            return Ok(None);
        }
        let blocks = blocks_of(range);
        let held = blocks.clone().all(|b| self.blocks.contains_key(&(*pack, b)));
        let wanted = blocks
            .clone()
            .all(|b| self.touched.contains_key(&(*pack, b)) || (b > 0 && self.touched.contains_key(&(*pack, b - 1))));
        for b in blocks.clone() {
            self.touched.insert((*pack, b), ()).await;
        }
        if !held && !wanted {
            return Ok(None);
        }
        let mut parts = Vec::with_capacity(2);
        for b in blocks.clone() {
            match self.block(pack, b, size).await? {
                Some(bytes) => parts.push((b, bytes)),
                None => return Ok(None),
            }
        }
        // A sequential reader will want the next block: read it meanwhile.
        let next = blocks.end;
        if next * BLOCK < size && !self.blocks.contains_key(&(*pack, next)) {
            let (this, pack) = (self.clone(), *pack);
            tokio::spawn(async move {
                if let Err(e) = this.block(&pack, next, size).await {
                    tracing::debug!(%pack, block = next, error = %e, "reading a block ahead failed");
                }
            });
        }
        self.hits.inc();
        Ok(Some(slice(&parts, range)))
    }

    /// One block, held or read now; `None` when every load slot is busy.
    async fn block(&self, pack: &Digest, block: u64, size: u64) -> object_store::Result<Option<Bytes>> {
        if let Some(b) = self.blocks.get(&(*pack, block)).await {
            return Ok(Some(b));
        }
        let Ok(_slot) = self.loads.clone().try_acquire_owned() else { return Ok(None) };
        let want = block_range(block, size);
        let (store, loaded) = (self.store.clone(), self.loaded.clone());
        self.blocks
            .try_get_with((*pack, block), async move {
                let bytes = store.get_range(&storage::pack(pack), want.clone()).await?;
                if bytes.len() as u64 != want.end - want.start {
                    return Err(object_store::Error::Generic {
                        store: "pack blocks",
                        source: format!("pack {pack}: asked for {want:?}, got {} bytes", bytes.len()).into(),
                    });
                }
                loaded.inc();
                Ok(bytes)
            })
            .await
            .map(Some)
            .map_err(|e| match Arc::try_unwrap(e) {
                Ok(e) => e,
                Err(e) => object_store::Error::Generic { store: "pack blocks", source: e.to_string().into() },
            })
    }
}

/// `range` of a pack out of the blocks covering it, in order.
fn slice(parts: &[(u64, Bytes)], range: &Range<u64>) -> Bytes {
    if let [(b, bytes)] = parts {
        let base = b * BLOCK;
        return bytes.slice((range.start - base) as usize..(range.end - base) as usize);
    }
    let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
    for (b, bytes) in parts {
        let base = b * BLOCK;
        let from = range.start.max(base) - base;
        let to = range.end.min(base + bytes.len() as u64) - base;
        out.extend_from_slice(&bytes[from as usize..to as usize]);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use object_store::PutPayload;
    use object_store::memory::InMemory;

    use super::*;

    #[tokio::test]
    async fn a_second_read_in_a_block_reads_the_block_and_the_rest_comes_from_memory() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let size = BLOCK + 5000;
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let pack = Digest::of(b"pack");
        store.put(&storage::pack(&pack), PutPayload::from(data.clone())).await.expect("put");
        let blocks = PackBlocks::new(store, 64 << 20, Counter::default(), Counter::default()).expect("enabled");
        let read = async |r: Range<u64>| blocks.read(&pack, size, &r).await.expect("read");

        assert_eq!(read(0..4096).await, None, "a first touch goes to the store as asked");
        let got = read(4096..1 << 20).await.expect("from the block");
        assert_eq!(&got[..], &data[4096..1 << 20]);
        assert_eq!(blocks.loaded.get(), 1);
        // Across the block boundary: the second block (read ahead, or now).
        let r = BLOCK - 100..BLOCK + 4000;
        assert_eq!(&read(r.clone()).await.expect("from both blocks")[..], &data[r.start as usize..r.end as usize]);
        assert_eq!(blocks.loaded.get(), 2, "each block read once");
        assert_eq!(read(0..BLOCK / 2 + 1).await, None, "a large read goes to the store as asked");
        assert_eq!(read(0..size + 1).await, None, "past the end is for the caller to refuse");
    }
}
