//! The protocol-free filesystem core: lookups, attributes, directory
//! listings and reads over immutable versions. The FUSE, NFS and WebDAV
//! front ends each map these plain types to their protocol.
//!
//! Inode numbers encode the version they belong to: `generation << 32 |
//! (node + 1)`. Inode 1 is always the root of the current version. A lookup
//! under a directory inode stays in that directory's version, and a read of a
//! file inode reads that file's version, so everything a process opened
//! keeps its version when [`DatasetFs::switch`] installs a new one; only
//! lookups from the root see the new version.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};

use aetherfs_format::{ChunkRef, Digest};
use bytes::{Bytes, BytesMut};

use crate::source::{ChunkSource, SourceError};
use crate::stats::{MountTotals, VERSIONS_KEPT, VersionReport, VersionStats};
use crate::version::{NodeKind, Version};

/// The root inode, in every protocol.
pub const ROOT: u64 = 1;
/// Largest read served in one call.
pub const MAX_READ: u32 = 16 << 20;
/// The read-ahead window advances in this many steps (see [`DatasetFs::read`]).
const READAHEAD_STEPS: u64 = 8;

#[derive(Debug, Clone, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("not a symlink")]
    NotSymlink,
    #[error("read-only file system")]
    ReadOnly,
    #[error("invalid argument")]
    Invalid,
    /// The version this inode belongs to is no longer served.
    #[error("stale file handle")]
    Stale,
    /// The chunk source failed; the cause is kept (print it with
    /// `aetherfs_util::one_line`).
    #[error("reading chunk data failed")]
    Source(#[from] SourceError),
    /// The chunk source answered, but not with what was asked for.
    #[error("chunk source broke its contract")]
    BadSource(#[from] ContractError),
}

/// Equal when the variants are: a [`SourceError`] cause is not comparable,
/// and callers (tests among them) care which kind of failure it was.
impl PartialEq for FsError {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

impl Eq for FsError {}

/// How a [`ChunkSource`] broke its contract on a read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    #[error("chunk source returned {got} chunks for {want}")]
    WrongCount { want: usize, got: usize },
    #[error("chunk {digest} is {got} bytes, not {want}")]
    WrongLength { digest: Digest, want: u32, got: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// Attributes of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    /// Permission bits (no write bits are removed: the mount is read-only anyway).
    pub perm: u32,
    pub nlink: u32,
    pub mtime: SystemTime,
    /// The file digest (derived from its chunks) for files; for directories
    /// and symlinks, the version's digest (they change only with the version).
    pub digest: Digest,
    /// The version the node belongs to.
    pub version: Digest,
}

impl Attr {
    /// 512-byte blocks, as `stat` reports them.
    pub fn blocks(&self) -> u64 {
        self.size.div_ceil(512)
    }
}

/// One directory entry. `cookie` is the offset at which a listing resumes
/// after this entry: stable for the life of the version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub attr: Attr,
    pub cookie: u64,
}

/// Size of the current version, for `statfs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsTotals {
    /// Blocks of [`FsTotals::BLOCK_SIZE`] the files take, each file rounded up.
    pub blocks: u64,
    /// Nodes: files, directories and symlinks, the root included.
    pub files: u64,
}

impl FsTotals {
    /// The block size `blocks` counts in.
    pub const BLOCK_SIZE: u32 = 4096;
}

struct Versions {
    current: u32,
    by_gen: HashMap<u32, Arc<Version>>,
}

/// The read-only filesystem over one dataset.
pub struct DatasetFs {
    versions: RwLock<Versions>,
    source: Arc<dyn ChunkSource>,
    readahead_bytes: u64,
    /// Totals of the last version [`DatasetFs::statfs`] walked: `df` asks often.
    totals: Mutex<Option<(Digest, FsTotals)>>,
    /// Stats of the versions served, newest first, at most [`VERSIONS_KEPT`].
    served: Mutex<VecDeque<Arc<VersionStats>>>,
    /// Totals of the versions that dropped out of `served`.
    retired: Mutex<MountTotals>,
}

impl DatasetFs {
    pub fn new(version: Version, source: Arc<dyn ChunkSource>) -> Self {
        let served = Mutex::new(VecDeque::from([version.stats.clone()]));
        let mut by_gen = HashMap::new();
        by_gen.insert(0, Arc::new(version));
        Self {
            versions: RwLock::new(Versions { current: 0, by_gen }),
            source,
            readahead_bytes: 8 << 20,
            totals: Mutex::new(None),
            served,
            retired: Mutex::new(MountTotals::default()),
        }
    }

    /// Bytes fetched ahead of a sequential reader (default 8 MiB).
    pub fn with_readahead(mut self, bytes: u64) -> Self {
        self.readahead_bytes = bytes;
        self
    }

    /// The version lookups from the root see.
    pub fn current(&self) -> Arc<Version> {
        let v = self.versions.read().unwrap_or_else(|p| p.into_inner());
        v.by_gen[&v.current].clone()
    }

    /// Installs a new current version and returns its generation. Inodes of
    /// older versions keep working.
    pub fn switch(&self, version: Version) -> u32 {
        {
            let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
            served.push_front(version.stats.clone());
            if served.len() > VERSIONS_KEPT {
                let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
                for old in served.drain(VERSIONS_KEPT..) {
                    retired.add(&old.report(0));
                }
            }
        }
        let mut v = self.versions.write().unwrap_or_else(|p| p.into_inner());
        let gen_ = v.current.wrapping_add(1);
        v.by_gen.insert(gen_, Arc::new(version));
        v.current = gen_;
        gen_
    }

    /// Forgets all but the newest `keep` versions before the current one.
    /// Inodes of forgotten versions answer [`FsError::Stale`]; returns how
    /// many versions were dropped.
    pub fn retain_previous(&self, keep: usize) -> usize {
        let mut v = self.versions.write().unwrap_or_else(|p| p.into_inner());
        let current = v.current;
        // Generations count up from the current one backwards (wrapping).
        let age = |g: u32| current.wrapping_sub(g);
        let before = v.by_gen.len();
        v.by_gen.retain(|&g, _| age(g) as usize <= keep);
        before - v.by_gen.len()
    }

    /// The digests of every version held (open files may still read them).
    pub fn held_digests(&self) -> Vec<Digest> {
        let v = self.versions.read().unwrap_or_else(|p| p.into_inner());
        let mut d: Vec<Digest> = v.by_gen.values().map(|v| v.digest).collect();
        d.sort();
        d.dedup();
        d
    }

    /// Versions held (the current one and older ones still readable).
    pub fn versions_held(&self) -> usize {
        self.versions.read().unwrap_or_else(|p| p.into_inner()).by_gen.len()
    }

    /// Totals of the current version (computed once per version).
    pub fn statfs(&self) -> FsTotals {
        let v = self.current();
        let mut cache = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((digest, totals)) = *cache
            && digest == v.digest
        {
            return totals;
        }
        let blocks = v.file_blocks(u64::from(FsTotals::BLOCK_SIZE));
        let totals = FsTotals { blocks, files: v.len() as u64 };
        *cache = Some((v.digest, totals));
        totals
    }

    fn resolve(&self, ino: u64) -> Result<(u32, Arc<Version>, u32), FsError> {
        let v = self.versions.read().unwrap_or_else(|p| p.into_inner());
        let (gen_, node) = if ino == ROOT { (v.current, 0) } else { ((ino >> 32) as u32, (ino & 0xffff_ffff) as u32) };
        let node = if ino == ROOT { 0 } else { node.checked_sub(1).ok_or(FsError::Stale)? };
        let version = v.by_gen.get(&gen_).cloned().ok_or(FsError::Stale)?;
        if node as usize >= version.len() {
            return Err(FsError::Stale);
        }
        Ok((gen_, version, node))
    }

    fn ino(gen_: u32, node: u32) -> u64 {
        if gen_ == 0 && node == 0 { ROOT } else { (u64::from(gen_) << 32) | u64::from(node + 1) }
    }

    fn attr(&self, gen_: u32, v: &Version, node: u32, is_root: bool) -> Attr {
        let (kind, size, nlink, digest) = match v.kind(node) {
            NodeKind::Dir { subdirs, children } => (Kind::Dir, 4096.max(children.len() as u64), 2 + subdirs, v.digest),
            NodeKind::File(f) => (Kind::File, f.size, 1, f.digest),
            NodeKind::Symlink { target } => (Kind::Symlink, target.len() as u64, 1, v.digest),
        };
        let ino = if is_root { ROOT } else { Self::ino(gen_, node) };
        Attr { ino, kind, size, perm: v.mode(node), nlink, mtime: v.created, digest, version: v.digest }
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let (g, v, n) = self.resolve(ino)?;
        Ok(self.attr(g, &v, n, ino == ROOT))
    }

    pub fn lookup(&self, parent: u64, name: &str) -> Result<Attr, FsError> {
        let (g, v, p) = self.resolve(parent)?;
        match v.kind(p) {
            NodeKind::Dir { .. } => {}
            _ => return Err(FsError::NotDir),
        }
        let child = match name {
            "." => p,
            ".." => v.parent(p),
            _ => v.child(p, name).ok_or(FsError::NotFound)?,
        };
        Ok(self.attr(g, &v, child, child == 0 && parent == ROOT))
    }

    /// The node at `path` (`/`-separated, relative to the root of the current version).
    pub fn lookup_path(&self, path: &str) -> Result<Attr, FsError> {
        let (g, v, _) = self.resolve(ROOT)?;
        let node = v.find(path).ok_or(FsError::NotFound)?;
        Ok(self.attr(g, &v, node, node == 0))
    }

    /// The parent directory's attributes (the root is its own parent).
    pub fn parent(&self, ino: u64) -> Result<Attr, FsError> {
        self.lookup(ino, "..")
    }

    /// Entries of a directory after `cookie` (0 = from the start), without
    /// `.` and `..`; at most `max` of them.
    pub fn readdir(&self, ino: u64, cookie: u64, max: usize) -> Result<Vec<DirEntry>, FsError> {
        let (g, v, d) = self.resolve(ino)?;
        let NodeKind::Dir { children, .. } = v.kind(d) else { return Err(FsError::NotDir) };
        let start = usize::try_from(cookie).map_err(|_| FsError::Invalid)?;
        Ok(children
            .iter()
            .enumerate()
            .skip(start)
            .take(max)
            .map(|(i, &c)| DirEntry {
                name: v.name(c).to_string(),
                attr: self.attr(g, &v, c, false),
                cookie: i as u64 + 1,
            })
            .collect())
    }

    pub fn readlink(&self, ino: u64) -> Result<String, FsError> {
        let (_, v, n) = self.resolve(ino)?;
        match v.kind(n) {
            NodeKind::Symlink { target } => Ok(target.to_string()),
            _ => Err(FsError::NotSymlink),
        }
    }

    /// The path of a node inside its version.
    pub fn path_of(&self, ino: u64) -> Result<String, FsError> {
        let (_, v, n) = self.resolve(ino)?;
        Ok(v.path(n))
    }

    /// What readers did with the versions served, newest first, each with
    /// its `top` files read most.
    pub fn stats(&self, top: usize) -> Vec<VersionReport> {
        let served: Vec<Arc<VersionStats>> =
            self.served.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        served.iter().map(|s| s.report(top)).collect()
    }

    /// Counters over every version served, for metrics (they only grow).
    pub fn totals(&self) -> MountTotals {
        let served: Vec<Arc<VersionStats>> =
            self.served.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        let mut t = self.retired.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for s in served {
            t.add(&s.report(0));
        }
        t
    }

    /// Reads up to `size` bytes at `offset`. Short only at the end of the file.
    pub async fn read(&self, ino: u64, offset: u64, size: u32) -> Result<Bytes, FsError> {
        let (_, v, n) = self.resolve(ino)?;
        let started = Instant::now();
        let result = self.read_in(&v, n, offset, size).await;
        let bytes = result.as_ref().map_or(0, |b| b.len() as u64);
        v.stats.record(n, || v.path(n), bytes, started.elapsed(), result.is_ok());
        result
    }

    async fn read_in(&self, v: &Version, n: u32, offset: u64, size: u32) -> Result<Bytes, FsError> {
        let NodeKind::File(file) = v.kind(n) else {
            return Err(FsError::IsDir);
        };
        if offset >= file.size || size == 0 {
            return Ok(Bytes::new());
        }
        let starts = file.starts();
        let end = file.size.min(offset.saturating_add(u64::from(size.min(MAX_READ))));
        let first = starts.partition_point(|&s| s <= offset) - 1;
        let last = starts.partition_point(|&s| s < end) - 1;
        let want = file.chunk_refs(first..last + 1);
        // Sequential (the read starts where the last one ended, or at 0):
        // hint the chunks that follow, up to a window whose far end moves in
        // steps of an eighth of it. Each step hands the source an eighth of a
        // window of new chunks at once (a few large range requests, or a batch
        // of parallel disk-cache reads) and keeps about eight steps in flight,
        // instead of one small request per READ.
        let prev_end = v.read_ends[n as usize].swap(end, Ordering::Relaxed);
        let ahead: Vec<ChunkRef> = if prev_end == offset || offset == 0 {
            let step = (self.readahead_bytes / READAHEAD_STEPS).max(1);
            let window_end = end.saturating_add(self.readahead_bytes) / step * step;
            let stop = starts.partition_point(|&s| s < window_end).max(last + 1);
            file.chunk_refs(last + 1..stop)
        } else {
            Vec::new()
        };
        let data = self.source.read_accounted(&want, &ahead, &v.stats.source).await?;
        if data.len() != want.len() {
            return Err(ContractError::WrongCount { want: want.len(), got: data.len() }.into());
        }
        // Slice the requested range out of the chunks.
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for (i, bytes) in data.iter().enumerate() {
            let c = &want[i];
            if bytes.len() != c.len as usize {
                return Err(ContractError::WrongLength { digest: c.digest, want: c.len, got: bytes.len() }.into());
            }
            let cstart = starts[first + i];
            let from = offset.saturating_sub(cstart) as usize;
            let to = ((end - cstart) as usize).min(bytes.len());
            if data.len() == 1 {
                return Ok(bytes.slice(from..to));
            }
            out.extend_from_slice(&bytes[from..to]);
        }
        Ok(out.freeze())
    }
}
