//! The AetherFS data model: pure data, no I/O, no async.
//!
//! - [`Name`], [`Tag`], [`Reference`], [`Digest`]: parsed and validated in one place.
//! - [`file_digest`]: a file's digest, derived from its chunk list.
//! - [`chunker`]: FastCDC 2020 content-defined chunking, pinned by golden vectors.
//! - [`Manifest`]: the compact, versioned description of one immutable version.
//! - [`Placement`]: where a version's chunks are stored (rewritable; not part of its digest).
//! - [`pack`]: the unit of storage, many chunks plus an index.
//! - [`api`]: JSON bodies shared by the hub and its client.
//! - [`diff`]: what changed between two versions, what versions cost.

// Tests may unwrap: a panic there is a failed test, not a crash.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod api;
pub mod chunker;
mod codec;
pub mod diff;
mod digest;
pub mod manifest;
mod name;
pub mod pack;
mod path;
pub mod placement;

pub use chunker::{ChunkInfo, ChunkParams, Chunker, FileChunks, chunk_reader};
pub use digest::{Digest, FILE_DIGEST_CONTEXT, file_digest};
pub use manifest::{ChunkLocation, ChunkRef, Compression, Entry, EntryKind, FileEntry, Manifest, ManifestStats};
pub use name::{Name, Reference, Tag};
pub use path::{ancestors, validate_path};
pub use placement::Placement;

/// Everything that can be wrong with data handed to this crate.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FormatError {
    #[error("invalid dataset name {0:?}: use lower-case segments [a-z0-9] separated by '/', '.', '_' or '-'")]
    InvalidName(String),
    #[error("invalid tag {0:?}: up to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'")]
    InvalidTag(String),
    #[error("invalid digest {0:?}: expected blake3:<64 lower-case hex digits>")]
    InvalidDigest(String),
    #[error("invalid reference {0:?}: expected NAME[:TAG][@DIGEST]")]
    InvalidReference(String),
    #[error("invalid path {path:?}: {why}")]
    InvalidPath { path: String, why: &'static str },
    #[error("invalid chunking parameters min={min} avg={avg} max={max}")]
    InvalidChunkParams { min: u32, avg: u32, max: u32 },
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    #[error("corrupt {what} at byte {offset}: {msg}")]
    Corrupt { what: &'static str, offset: usize, msg: String },
    #[error("unsupported {what} version {version}")]
    UnsupportedVersion { what: &'static str, version: u16 },
    #[error("{what} larger than {max} bytes")]
    TooLarge { what: &'static str, max: usize },
    #[error("pack holds more than {max} chunks")]
    TooManyChunks { max: usize },
    #[error("{} chunk(s) have no stored location, first {}", .0.len(), .0.first().map(|d| d.to_string()).unwrap_or_default())]
    Unplaced(Vec<Digest>),
    #[error("chunk {digest} does not match its digest")]
    ChunkMismatch { digest: Digest },
}
