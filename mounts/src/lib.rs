//! The read-only dataset filesystem and its front ends.
//!
//! - [`Version`]: one immutable version as a node tree built from its manifest.
//! - [`DatasetFs`]: lookups, attributes, listings and reads, with no
//!   protocol in sight; reads go through a [`ChunkSource`].
//! - Front ends map the core's types to their protocol: FUSE (`fuse`),
//!   NFSv3 (`nfs`) and WebDAV (`webdav`).
//!
//! This crate knows nothing of HTTP or the hub: the agent supplies the
//! [`ChunkSource`].
//!
//! Modules:
//! - `version`: [`Version`], the node tree of one manifest.
//! - `fs`: [`DatasetFs`], the protocol-free core, and [`FsError`].
//! - `source`: the [`ChunkSource`] seam and [`SourceError`].
//! - [`stats`]: what readers do with each version (reads, bytes, latency, cache hits, files).
//! - [`fuse`]: FUSE front end (`adapter`, `session`, `stale`).
//! - [`nfs`]: NFSv3 front end.
//! - [`webdav`]: WebDAV front end; [`catalog`]: many datasets in one WebDAV tree (the hub's).
//! - [`testing`]: fakes for tests: an in-memory source, a fault injector, a
//!   directory-to-version builder.

pub mod catalog;
mod fs;
pub mod fuse;
pub mod nfs;
mod nfs_gate;
mod source;
pub mod stats;
pub mod testing;
mod version;
pub mod webdav;

pub use fs::{Attr, ContractError, DatasetFs, DirEntry, FsError, FsTotals, Kind, MAX_READ, ROOT};
pub use source::{ChunkSource, SourceError};
pub use version::{FileView, NodeKind, Version};

#[cfg(test)]
mod tests;
