//! FUSE front end: serves a [`DatasetFs`] through the kernel's FUSE driver
//! (fuser 0.18, its pure-Rust mount: no libfuse; `mount(2)` directly as root,
//! `fusermount3` otherwise).
//!
//! - **Threads.** `threads` fuser workers read requests from `/dev/fuse`.
//!   Metadata (lookup, getattr, readdir, readlink, statfs) is answered in
//!   place from memory. Reads are handed to a task on the tokio runtime given
//!   to [`mount`], which replies when the chunk source answers: a worker never
//!   waits on the network, so one slow fetch stalls no other reader.
//! - **Caching.** Every node but the root is immutable, so attributes and
//!   names get `entry_ttl` (long), files open with `FOPEN_KEEP_CACHE` (the
//!   page cache survives close and reopen) and directories with
//!   `FOPEN_CACHE_DIR`. The root (inode 1) is the one node that changes, when
//!   [`DatasetFs::switch`] installs a new version: its attributes and the names
//!   in it get a short TTL ([`ROOT_TTL`]) and its listing is never cached, and
//!   [`FuseMount::notify_switch`] drops what the kernel holds at once.
//! - **Large reads.** `init` asks for 1 MiB readahead and 1 MiB requests
//!   (`max_write` sizes the kernel's `max_pages`). The kernel offers only its
//!   default readahead (128 KiB) in INIT and a reply can only lower it, so
//!   after mounting we raise the mount's `/sys/class/bdi/0:N/read_ahead_kb`
//!   to [`READAHEAD`] (best effort: needs root): a sequential reader then has
//!   several 1 MiB READs in flight at once, served in parallel.
//! - **Read-only.** The mount is `ro`, so the kernel itself refuses most
//!   writes with EROFS; every mutating request that still arrives, opens for
//!   writing and `access(W_OK)` answer EROFS too.
//! - **Errors.** [`FsError`] maps to errno: NotFound ENOENT, NotDir ENOTDIR,
//!   IsDir EISDIR, NotSymlink and Invalid EINVAL, ReadOnly EROFS, Stale
//!   ESTALE, Source and BadSource EIO (a failed fetch reaches the reader as EIO).
//! - **Lifetime.** [`FuseMount::unmount`] unmounts and joins the workers; the
//!   CLI calls it on SIGTERM and SIGINT. If files are still open (EBUSY) it
//!   detaches the mount lazily: the path is free at once and the session ends
//!   when the last file closes. Dropping a [`FuseMount`] does the same, best
//!   effort. A process killed without unmounting leaves a mount whose every
//!   access fails with ENOTCONN; [`clear_stale_mount`] removes it on start.

mod adapter;
mod session;
mod stale;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

pub use session::{FuseMount, mount};
pub use stale::clear_stale_mount;

/// Attribute and entry TTL for the root and the names in it: the only
/// things a version switch changes.
pub const ROOT_TTL: Duration = Duration::from_secs(1);
/// Filesystem type suffix: mounts show as `fuse.aetherfs`.
const SUBTYPE: &str = "aetherfs";
/// Readahead and largest read request asked of the kernel in INIT. 1 MiB is
/// also the kernel's default cap on a request (`fs.fuse.max_pages_limit`,
/// 256 pages).
const READ_SIZE: u32 = 1 << 20;
/// The mount's readahead, set after mounting: 8 MiB (what Linux gives a
/// virtio disk) lets the kernel keep up to eight 1 MiB READs in flight, which
/// the daemon serves in parallel (decryption on every core).
const READAHEAD: u32 = 8 << 20;
/// How long an unmount waits for the workers to stop.
const UNMOUNT_GRACE: Duration = Duration::from_secs(2);
/// How long [`clear_stale_mount`] waits for a mount to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Stale mounts stacked on one path that [`clear_stale_mount`] removes at most.
const MAX_STACKED: usize = 8;

/// How to mount.
#[derive(Debug, Clone)]
pub struct FuseOptions {
    /// Let every user in, not just the mounting one (`allow_other`): sidecars
    /// serve containers running as other uids. Non-root mounts need
    /// `user_allow_other` in `/etc/fuse.conf`.
    pub allow_other: bool,
    /// FUSE worker threads (at least 1).
    pub threads: usize,
    /// Source name shown in `/proc/mounts` and `df`, e.g. `aetherfs:acme/geoip`.
    pub fsname: String,
    /// How long the kernel caches names and attributes (everything but the
    /// root is immutable, so long is right).
    pub entry_ttl: Duration,
}

impl Default for FuseOptions {
    fn default() -> Self {
        Self { allow_other: false, threads: 4, fsname: SUBTYPE.into(), entry_ttl: Duration::from_secs(24 * 3600) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FuseError {
    #[error("/dev/fuse is missing: load the fuse module (modprobe fuse) or pass the device into the container")]
    NoDevice,
    #[error("mountpoint {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("mounting {path}: {source}")]
    Mount {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unmounting {path}: {source}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A FUSE filesystem at the path answers requests: not stale, left alone.
    #[error("a live FUSE filesystem is already mounted at {0}")]
    AlreadyMounted(PathBuf),
    #[error("checking {path}: {source}")]
    Probe {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("FUSE session: {0}")]
    Session(#[source] io::Error),
    #[error("notifying the kernel: {0}")]
    Notify(#[source] io::Error),
}

/// Counters of one mount, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseStats {
    pub lookups: u64,
    pub opens: u64,
    pub readdirs: u64,
    /// Read requests from the kernel (page cache hits never arrive).
    pub reads: u64,
    pub read_bytes: u64,
    /// Largest read the kernel asked for, in bytes.
    pub max_read: u32,
    pub read_errors: u64,
}

#[derive(Debug, Default)]
struct Counters {
    lookups: AtomicU64,
    opens: AtomicU64,
    readdirs: AtomicU64,
    reads: AtomicU64,
    read_bytes: AtomicU64,
    max_read: AtomicU32,
    read_errors: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// An absolute path whose parent is resolved (the last component is left
/// alone: resolving a dead mount itself fails with ENOTCONN).
fn absolute(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => parent.canonicalize().unwrap_or_else(|_| parent.to_path_buf()).join(name),
        _ => abs,
    }
}
