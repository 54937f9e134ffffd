//! The encrypted on-disk chunk cache: chunk plaintext kept on local disk
//! under AES-256-GCM, bounded in bytes, rebuilt by scanning after any crash.
//!
//! Modules:
//! - `layout`: the on-disk format: constants, file names, the entry header.
//! - `crypto`: subkey derivation, entry ids, sealing and opening bytes.
//! - `meta`: the metadata file (salt, key check), replaced atomically.
//! - `segment`: segment files, index hints, and the crash-recovery scan.
//! - `disk`: [`DiskCache`], which ties the above together.
//! - `key`: [`CacheKey`], the master key and where it comes from.
//! - `testing`: an in-memory [`ChunkCache`] for other crates' tests.
//!
//! Layout of the cache directory (format version 1, see `docs/cache.md`):
//!
//! ```text
//! <dir>/                        0700
//!   lock                        flock(2)ed while open: one process per directory
//!   cache.meta                  format version, HKDF salt, key-check value (atomic replace)
//!   seg-0000000001.dat          append-only segments of ~64 MiB: a 40-byte header,
//!   seg-0000000002.dat            then entries: 64-byte header + ciphertext + tag
//!   seg-0000000001.idx          index hint of a sealed segment (a cache of its headers)
//! ```
//!
//! - **Keys.** The master key (a file, an environment value, or random and in
//!   memory only) never encrypts anything itself: HKDF-SHA256 with the random
//!   per-directory salt derives the AES-256-GCM key (info `aetherfs cache v1`)
//!   and a BLAKE3 key for entry ids, so a master key reused across machines or
//!   caches never shares a subkey. A fresh random 96-bit nonce per entry keeps
//!   one subkey far below the 2^32-message bound of random GCM nonces.
//! - **Entries.** Each entry is sealed with the chunk digest as associated
//!   data. Headers carry a keyed id (`BLAKE3-keyed(id key, digest)`), not the
//!   digest, so the disk does not reveal which known chunks are cached.
//! - **Index.** An in-memory map `id → (segment, offset, length)` rebuilt at
//!   open from the index hints of sealed segments, or by scanning headers
//!   (seeking over ciphertext) where a hint is missing or stale. A torn tail is
//!   cut off at the last whole entry.
//! - **Reads** verify the entry header and the AEAD tag (digest as associated
//!   data); a failure drops the entry from the index, is counted, and is a
//!   miss: the caller fetches the chunk again. The plaintext is not hashed
//!   again: only a holder of the key can make a tag verify, and the cache
//!   seals only bytes checked against their digest (`docs/cache.md`).
//! - **Eviction** deletes whole segments, oldest first, once the total exceeds
//!   the bound. Entries read since they were written get a second chance: they
//!   are copied verbatim (same nonce and ciphertext: no new encryption) into the
//!   active segment before their segment is deleted (CLOCK at segment grain).
//! - **Crash safety.** The only in-place writes are appends; the metadata file
//!   is replaced atomically; eviction is an unlink. Nothing is fsynced per put:
//!   a lost tail is a miss, never a wrong byte.

mod crypto;
mod disk;
mod key;
mod layout;
mod meta;
mod segment;
pub mod testing;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use aetherfs_format::Digest;
use bytes::Bytes;

pub use disk::DiskCache;
pub use key::CacheKey;

/// Segment size used unless configured otherwise.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// How to open a [`DiskCache`].
#[derive(Debug)]
pub struct DiskCacheConfig {
    /// The cache directory; created with mode 0700 if missing.
    pub dir: PathBuf,
    /// The bound on the bytes of segment files. The cache stays within
    /// `max_bytes` plus one segment (the one being filled).
    pub max_bytes: u64,
    pub key: CacheKey,
    /// Target size of a segment file, [`DEFAULT_SEGMENT_BYTES`] by default. The
    /// cache lowers it to an eighth of `max_bytes` for small caches and raises
    /// it for huge ones (at most ~1024 segments, one open file each).
    pub segment_bytes: u64,
}

impl DiskCacheConfig {
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64, key: CacheKey) -> Self {
        Self { dir: dir.into(), max_bytes, key, segment_bytes: DEFAULT_SEGMENT_BYTES }
    }
}

/// A snapshot of the cache's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Bytes on disk: the segment files (headers and ciphertext, live or dead).
    pub bytes: u64,
    pub segments: u64,
    /// Entries in the index.
    pub entries: u64,
    pub hits: u64,
    pub misses: u64,
    /// Entries written by `put`.
    pub puts: u64,
    /// Entries that failed verification (or could not be read) and were dropped.
    pub corrupt_dropped: u64,
    /// Bytes of segments deleted by eviction.
    pub evicted_bytes: u64,
    /// Entries given a second chance: copied forward before their segment was evicted.
    pub promoted: u64,
    /// Failed writes (the chunk is simply not cached).
    pub write_errors: u64,
}

/// Why a cache could not be opened, or a key not read.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot read cache key file {path}: {source}")]
    KeyFile { path: PathBuf, source: std::io::Error },
    #[error("invalid cache key{origin}: {why}")]
    InvalidKey {
        origin: KeyOrigin,
        #[source]
        why: KeyProblem,
    },
    #[error("cache directory {path} is in use by another process")]
    Locked { path: PathBuf },
    #[error("cache directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The operating system's CSPRNG failed.
    #[error("cache crypto: no randomness: {0}")]
    Randomness(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// HKDF or the cipher refused a subkey (a length mismatch: never expected).
    #[error("cache crypto: {0}")]
    KeyDerivation(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// The AEAD failed to encrypt.
    #[error("cache crypto: {0}")]
    Seal(#[source] aes_gcm::Error),
    /// The ciphertext buffer did not match the plaintext (never expected).
    #[error("cache crypto: {0}")]
    SealBuffer(#[source] aes_gcm::aead::inout::NotEqualError),
    /// A chunk too large for an entry's 32-bit length.
    #[error("chunk too large")]
    ChunkTooLarge { len: usize },
}

/// Where an invalid key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// A key file.
    File(PathBuf),
    /// An environment value.
    Env,
}

impl std::fmt::Display for KeyOrigin {
    /// Empty for [`KeyOrigin::Env`], ` in <path>` for a file, to follow
    /// "invalid cache key".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, " in {}", path.display()),
            Self::Env => Ok(()),
        }
    }
}

/// What is wrong with a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyProblem {
    /// The key file is not a regular file, or is far too large; its length.
    #[error("{0} bytes is not a key")]
    FileSize(u64),
    /// Binary (not UTF-8) content of the wrong length.
    #[error("{0} bytes: expected 32 raw bytes, 64 hex characters or base64 of 32 bytes")]
    Length(usize),
    /// Text of the wrong form or length; its length in characters.
    #[error("{0} characters: expected 64 hex characters or the base64 of exactly 32 bytes")]
    TextLength(usize),
    #[error("bad hex: {0}")]
    Hex(#[source] hex::FromHexError),
}

/// A chunk cache keyed by the digest of the plaintext. A cache failure is a
/// miss, never a failed read: `get` returns verified bytes or `None`, and
/// `put` never fails.
pub trait ChunkCache: Send + Sync {
    /// The verified plaintext of `digest`, or `None`.
    fn get(&self, digest: &Digest) -> Option<Bytes>;
    /// Stores `plain`, whose digest is `digest`, if there is room; errors are
    /// logged and counted.
    fn put(&self, digest: &Digest, plain: &[u8]);
    fn contains(&self, digest: &Digest) -> bool;
    fn stats(&self) -> CacheStats;
    /// The bound the cache keeps to (plus one segment of slack for disk caches).
    fn max_bytes(&self) -> u64;
}

impl ChunkCache for DiskCache {
    fn get(&self, digest: &Digest) -> Option<Bytes> {
        DiskCache::get(self, digest)
    }
    fn put(&self, digest: &Digest, plain: &[u8]) {
        DiskCache::put(self, digest, plain)
    }
    fn contains(&self, digest: &Digest) -> bool {
        DiskCache::contains(self, digest)
    }
    fn stats(&self) -> CacheStats {
        DiskCache::stats(self)
    }
    fn max_bytes(&self) -> u64 {
        DiskCache::max_bytes(self)
    }
}
