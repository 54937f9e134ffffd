//! The pack log, written by the store layer: every time a pack's index (the
//! pack's commit point) is stored, an empty `index/log/<day>/<ms>-<hex>` object
//! follows it, before the write is reported done. Keys sort by time, so a
//! replica learns what every replica stored since a moment with one listing
//! from that moment on, whatever the size of the store. Doing it here, under
//! every writer (uploads, garbage collection's repacks), means no path that
//! commits a pack can forget the log.
//!
//! The same layer remembers pack sizes it sees (uploads, HEADs, whole
//! reads): packs never change, so a range read of a pack whose size is known
//! needs no HEAD first. Bounded; forgetting only costs a HEAD.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aetherfs_format::Digest;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions,
};
use parking_lot::Mutex;

use crate::storage;

/// Pack sizes remembered at most (about 50 bytes each); past it the map
/// starts over.
const SIZES_MAX: usize = 200_000;

/// Pack sizes seen by the store layer.
#[derive(Debug, Default)]
pub(crate) struct PackSizes(Mutex<HashMap<Digest, u64>>);

impl PackSizes {
    pub fn get(&self, pack: &Digest) -> Option<u64> {
        self.0.lock().get(pack).copied()
    }

    pub fn insert(&self, pack: Digest, size: u64) {
        let mut m = self.0.lock();
        if m.len() >= SIZES_MAX && !m.contains_key(&pack) {
            m.clear();
        }
        m.insert(pack, size);
    }

    pub fn remove(&self, pack: &Digest) {
        self.0.lock().remove(pack);
    }
}

/// The object store every part of the hub uses: the real one, plus the log.
#[derive(Debug)]
pub(crate) struct LoggedStore {
    inner: Arc<dyn ObjectStore>,
    sizes: Arc<PackSizes>,
}

impl LoggedStore {
    pub fn new(inner: Arc<dyn ObjectStore>, sizes: Arc<PackSizes>) -> Self {
        Self { inner, sizes }
    }

    fn seen_pack(&self, key: &Path, size: u64) {
        if storage::is_pack_file(key)
            && let Some(d) = storage::parse_pack(key)
        {
            self.sizes.insert(d, size);
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl std::fmt::Display for LoggedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait::async_trait]
impl ObjectStore for LoggedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let len = payload.content_length() as u64;
        let res = self.inner.put_opts(location, payload, opts).await?;
        self.seen_pack(location, len);
        if storage::is_pack_file(location)
            && let Some(pack) = storage::parse_pack_index(location)
        {
            // Failing here fails the upload, which the client retries: an
            // index that is stored but not logged is only found by replicas
            // that already know it, or by the base versions that use it.
            self.inner
                .put_opts(&storage::pack_log(now_ms(), &pack), PutPayload::default(), PutOptions::default())
                .await?;
        }
        Ok(res)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        let res = self.inner.get_opts(location, options).await?;
        self.seen_pack(location, res.meta.size);
        Ok(res)
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}
