//! An [`ObjectStore`] that counts what the hub asks of the real one: requests
//! per operation and bytes moved, as Prometheus counters
//! (`aetherfs_hub_store_requests_total{op}`, `aetherfs_hub_store_bytes_total{op}`).
//! This is what an operator's cloud bill is made of, and what the request
//! economy benchmark (bench/README.md) and tests count.
//!
//! Operations, as the providers bill them:
//! - `put`: a plain PUT; `put_conditional`: create-if-absent or
//!   update-if-version (tag records, the GC lock);
//! - `get`: a whole-object GET; `get_range`: a GET with a `Range`; `head`;
//! - `list`: one listing call (a call may read several pages of 1,000 keys);
//! - `delete`: one object deleted (S3 and Azure batch them);
//! - `copy`, `multipart` (an upload started).
//!
//! Bytes: `put` payloads, and for reads the size of the range answered.

use std::ops::Range;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// One operation kind (a fixed set: labels cannot grow).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum Op {
    Put,
    PutConditional,
    Get,
    GetRange,
    Head,
    List,
    Delete,
    Copy,
    Multipart,
}

impl Op {
    pub fn label(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::PutConditional => "put_conditional",
            Op::Get => "get",
            Op::GetRange => "get_range",
            Op::Head => "head",
            Op::List => "list",
            Op::Delete => "delete",
            Op::Copy => "copy",
            Op::Multipart => "multipart",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OpLabels {
    pub op: &'static str,
}

/// The counters a [`MeteredStore`] feeds (cheap to clone: shared).
#[derive(Clone, Debug, Default)]
pub(crate) struct StoreMeters {
    pub requests: Family<OpLabels, Counter>,
    pub bytes: Family<OpLabels, Counter>,
}

impl StoreMeters {
    fn request(&self, op: Op) {
        self.requests.get_or_create(&OpLabels { op: op.label() }).inc();
    }

    fn bytes(&self, op: Op, n: u64) {
        self.bytes.get_or_create(&OpLabels { op: op.label() }).inc_by(n);
    }
}

/// Wraps the hub's store; every call goes to `inner` unchanged.
#[derive(Debug)]
pub(crate) struct MeteredStore {
    inner: std::sync::Arc<dyn ObjectStore>,
    meters: StoreMeters,
}

impl MeteredStore {
    pub fn new(inner: std::sync::Arc<dyn ObjectStore>, meters: StoreMeters) -> Self {
        Self { inner, meters }
    }
}

impl std::fmt::Display for MeteredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The description the hub logs is the inner store's.
        std::fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait::async_trait]
impl ObjectStore for MeteredStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let op = match opts.mode {
            PutMode::Overwrite => Op::Put,
            PutMode::Create | PutMode::Update(_) => Op::PutConditional,
        };
        self.meters.request(op);
        self.meters.bytes(op, payload.content_length() as u64);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.meters.request(Op::Multipart);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let op = if options.head {
            Op::Head
        } else if options.range.is_some() {
            Op::GetRange
        } else {
            Op::Get
        };
        self.meters.request(op);
        let result = self.inner.get_opts(location, options).await?;
        if op != Op::Head {
            self.meters.bytes(op, result.range.end - result.range.start);
        }
        Ok(result)
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        // The inner store may coalesce ranges; count what it is asked for.
        for r in ranges {
            self.meters.request(Op::GetRange);
            self.meters.bytes(Op::GetRange, r.end - r.start);
        }
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let meters = self.meters.clone();
        let counted = locations
            .map(move |l| {
                meters.request(Op::Delete);
                l
            })
            .boxed();
        self.inner.delete_stream(counted)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.meters.request(Op::List);
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.meters.request(Op::List);
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.meters.request(Op::List);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.meters.request(Op::Copy);
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutMode};

    use super::*;

    fn count(m: &StoreMeters, op: Op) -> u64 {
        m.requests.get_or_create(&OpLabels { op: op.label() }).get()
    }

    fn bytes(m: &StoreMeters, op: Op) -> u64 {
        m.bytes.get_or_create(&OpLabels { op: op.label() }).get()
    }

    #[tokio::test]
    async fn counts_each_operation_and_its_bytes() {
        let meters = StoreMeters::default();
        let s = MeteredStore::new(Arc::new(InMemory::new()), meters.clone());
        let key = Path::from("a/b");
        s.put(&key, PutPayload::from(vec![7u8; 100])).await.unwrap();
        s.put_opts(&Path::from("a/c"), PutPayload::from(vec![1u8; 10]), PutMode::Create.into()).await.unwrap();
        s.get(&key).await.unwrap().bytes().await.unwrap();
        s.get_range(&key, 10..30).await.unwrap();
        s.head(&key).await.unwrap();
        let _: Vec<_> = futures::TryStreamExt::try_collect(s.list(None)).await.unwrap();
        s.list_with_delimiter(Some(&Path::from("a"))).await.unwrap();
        s.delete(&key).await.unwrap();
        assert_eq!(count(&meters, Op::Put), 1);
        assert_eq!(bytes(&meters, Op::Put), 100);
        assert_eq!(count(&meters, Op::PutConditional), 1);
        assert_eq!(count(&meters, Op::Get), 1);
        assert_eq!(bytes(&meters, Op::Get), 100);
        assert_eq!(count(&meters, Op::GetRange), 1);
        assert_eq!(bytes(&meters, Op::GetRange), 20);
        assert_eq!(count(&meters, Op::Head), 1);
        assert_eq!(count(&meters, Op::List), 2);
        assert_eq!(count(&meters, Op::Delete), 1);
    }
}
