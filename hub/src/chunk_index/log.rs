//! The pack log: one record per stored pack, `index/log/<day>/<ms>-<hex>`,
//! written right after the pack by [`commit`] (uploads and garbage
//! collection's repacks). It is the pack's commit point and carries, in one
//! object, what used to take three: the pack's index section, the dataset
//! that uploaded it (which may read it), and the time, in its key. Keys sort
//! by time, so a replica learns what every replica stored since a moment
//! with one listing from that moment on, whatever the size of the store.
//!
//! The store layer ([`SizedStore`]) remembers pack sizes it sees (uploads,
//! HEADs, whole reads): packs never change, so a range read of a pack whose
//! size is known needs no HEAD first. Bounded; forgetting only costs a HEAD.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aetherfs_format::{Digest, Name};
use bytes::Bytes;
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

/// The first bytes of a pack record; an empty record is one an older hub
/// wrote (its index is `packs/<hex>.idx`, its uploader a link object).
const RECORD_MAGIC: &[u8] = b"aetherfs-pack-record 1\n";
/// A record is the index section plus a line: bounded like an index.
pub(crate) const RECORD_MAX_BYTES: usize = aetherfs_format::pack::PACK_MAX_BYTES;

/// What a pack log record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PackRecord {
    /// The dataset the pack was uploaded into (none for garbage
    /// collection's repacks linked to no dataset).
    pub uploader: Option<Name>,
    /// The pack's index section, byte for byte.
    pub index: Bytes,
}

impl PackRecord {
    pub fn encode(&self) -> Bytes {
        let name = self.uploader.as_ref().map_or("", |n| n.as_str());
        let mut out = Vec::with_capacity(RECORD_MAGIC.len() + name.len() + 1 + self.index.len());
        out.extend_from_slice(RECORD_MAGIC);
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&self.index);
        Bytes::from(out)
    }

    /// `None` for an older hub's empty record; an error names what is wrong.
    pub fn decode(bytes: &Bytes) -> Result<Option<Self>, String> {
        if bytes.is_empty() {
            return Ok(None);
        }
        if bytes.len() > RECORD_MAX_BYTES {
            return Err(format!("record larger than {RECORD_MAX_BYTES} bytes"));
        }
        let rest = bytes.strip_prefix(RECORD_MAGIC).ok_or("not a pack record")?;
        let nl = rest.iter().position(|&b| b == b'\n').ok_or("no uploader line")?;
        let name = std::str::from_utf8(&rest[..nl]).map_err(|_| "uploader is not UTF-8")?;
        let uploader = match name {
            "" => None,
            n => Some(n.parse::<Name>().map_err(|e| format!("uploader: {e}"))?),
        };
        let start = RECORD_MAGIC.len() + nl + 1;
        Ok(Some(Self { uploader, index: bytes.slice(start..) }))
    }
}

/// Commits a pack already stored at `packs/<hex>.pack`: writes its record.
/// Until this returns, no lookup offers the pack's chunks. Writing it again
/// (a retried upload) adds a second record for the same pack, which readers
/// take as one.
pub(crate) async fn commit(store: &dyn ObjectStore, pack: &Digest, record: &PackRecord) -> object_store::Result<()> {
    store
        .put_opts(&storage::pack_log(now_ms(), pack), PutPayload::from(record.encode()), PutOptions::default())
        .await?;
    Ok(())
}

/// The object store every part of the hub uses: the real one, remembering
/// the pack sizes it sees.
#[derive(Debug)]
pub(crate) struct SizedStore {
    inner: Arc<dyn ObjectStore>,
    sizes: Arc<PackSizes>,
}

impl SizedStore {
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

impl std::fmt::Display for SizedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait::async_trait]
impl ObjectStore for SizedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let len = payload.content_length() as u64;
        let res = self.inner.put_opts(location, payload, opts).await?;
        self.seen_pack(location, len);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_what_is_not_one() {
        let index = Bytes::from_static(b"\x00\x01index\nbytes");
        for uploader in [None, Some("acme/geoip".parse().expect("name"))] {
            let r = PackRecord { uploader, index: index.clone() };
            assert_eq!(PackRecord::decode(&r.encode()), Ok(Some(r)));
        }
        assert_eq!(PackRecord::decode(&Bytes::new()), Ok(None), "an older hub's empty record");
        let bad = |b: &'static [u8]| PackRecord::decode(&Bytes::from_static(b)).is_err();
        assert!(bad(b"not a record"));
        assert!(bad(b"aetherfs-pack-record 1\nno newline after the name"));
        assert!(bad(b"aetherfs-pack-record 1\n../../etc\nindex"), "an invalid uploader name");
    }
}
