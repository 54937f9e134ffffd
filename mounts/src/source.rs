//! Where chunk bytes come from: the one seam between the filesystem and the
//! network. The agent implements it over the hub and its caches; tests use
//! [`crate::testing::MemorySource`] and wrap it in [`crate::testing::FaultySource`].

use std::error::Error;
use std::sync::Arc;

use aetherfs_format::{ChunkRef, Digest};
use bytes::Bytes;
use futures::future::BoxFuture;

use crate::stats::ReadAccount;

#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    #[error("chunk {0} is not available")]
    NotFound(Digest),
    #[error("chunk {0} failed verification")]
    Corrupt(Digest),
    /// The source could not reach where chunks come from; the cause is kept
    /// (print it with `aetherfs_util::one_line`).
    #[error("chunk source unavailable")]
    Unavailable(#[source] Arc<dyn Error + Send + Sync>),
    #[error("chunk source is shutting down")]
    ShuttingDown,
    #[error("timed out fetching chunk data")]
    Timeout,
}

impl SourceError {
    /// [`SourceError::Unavailable`] caused by `e`.
    pub fn unavailable(e: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        SourceError::Unavailable(Arc::from(e.into()))
    }
}

/// Supplies verified chunk plaintext.
///
/// Implementations must never return bytes that do not match the chunk's
/// digest: the filesystem passes them to readers as they are.
pub trait ChunkSource: Send + Sync + 'static {
    /// The plaintext of every chunk in `want`, in order. `ahead` names chunks
    /// of the same file likely to be read next, in order; a source may fetch
    /// them along with `want` (one range request instead of many) and keep
    /// them for later, or ignore them.
    fn read<'a>(
        &'a self,
        want: &'a [ChunkRef],
        ahead: &'a [ChunkRef],
    ) -> BoxFuture<'a, Result<Vec<Bytes>, SourceError>>;

    /// [`ChunkSource::read`], telling `account` where the chunks came from
    /// (memory, disk, the network). The filesystem calls this one; a source
    /// that cannot tell keeps the default, which tells nothing.
    fn read_accounted<'a>(
        &'a self,
        want: &'a [ChunkRef],
        ahead: &'a [ChunkRef],
        account: &'a ReadAccount,
    ) -> BoxFuture<'a, Result<Vec<Bytes>, SourceError>> {
        let _ = account;
        self.read(want, ahead)
    }
}
