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
//!   (best effort: needs root).
//! - **Read-only.** The mount is `ro`, so the kernel itself refuses most
//!   writes with EROFS; every mutating request that still arrives, opens for
//!   writing and `access(W_OK)` answer EROFS too.
//! - **Errors.** [`FsError`] maps to errno: NotFound ENOENT, NotDir ENOTDIR,
//!   IsDir EISDIR, NotSymlink and Invalid EINVAL, ReadOnly EROFS, Stale
//!   ESTALE, Io EIO (a failed fetch reaches the reader as EIO).
//! - **Lifetime.** [`FuseMount::unmount`] unmounts and joins the workers; the
//!   CLI calls it on SIGTERM and SIGINT. If files are still open (EBUSY) it
//!   detaches the mount lazily: the path is free at once and the session ends
//!   when the last file closes. Dropping a [`FuseMount`] does the same, best
//!   effort. A process killed without unmounting leaves a mount whose every
//!   access fails with ENOTCONN; [`clear_stale_mount`] removes it on start.

use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aetherfs_format::Digest;
use fuser::{
    AccessFlags, BsdFileFlags, Config, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, MountOption, Notifier, OpenAccMode, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, Session, SessionACL, SessionUnmounter, TimeOrNow,
    WriteFlags,
};
use tracing::{debug, info, warn};

use crate::fs::{Attr, DatasetFs, FsError, Kind, ROOT};
use crate::version::{NodeKind, Version};

/// Attribute and entry TTL for the root and the names in it: the only
/// things a version switch changes.
pub const ROOT_TTL: Duration = Duration::from_secs(1);
/// Filesystem type suffix: mounts show as `fuse.aetherfs`.
const SUBTYPE: &str = "aetherfs";
/// Readahead and largest read request asked of the kernel.
const READ_SIZE: u32 = 1 << 20;
/// `st_blksize`: what stdio and `cp` size their buffers by.
const BLKSIZE: u32 = 128 << 10;
/// Block size reported by statfs.
const STATFS_BSIZE: u32 = 4096;
/// Background (readahead) requests the kernel may have in flight.
const MAX_BACKGROUND: u16 = 64;
/// Directory entries taken from the core per step while filling a reply.
const READDIR_BATCH: usize = 64;
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

/// A live mount. Unmounts on drop (best effort); prefer [`FuseMount::unmount`]
/// to see errors.
#[derive(Debug)]
pub struct FuseMount {
    mountpoint: PathBuf,
    session: Option<JoinHandle<io::Result<()>>>,
    unmounter: SessionUnmounter,
    notifier: Notifier,
    counters: Arc<Counters>,
}

/// Mounts `fs` read-only at `mountpoint` and serves it until
/// [`FuseMount::unmount`]. Reads run as tasks on `rt`.
pub fn mount(
    fs: Arc<DatasetFs>,
    mountpoint: &Path,
    opts: &FuseOptions,
    rt: tokio::runtime::Handle,
) -> Result<FuseMount, FuseError> {
    if !Path::new("/dev/fuse").exists() {
        return Err(FuseError::NoDevice);
    }
    let path = absolute(mountpoint);
    let meta = std::fs::metadata(&path).map_err(|source| FuseError::Mount { path: path.clone(), source })?;
    if !meta.is_dir() {
        return Err(FuseError::NotADirectory(path));
    }
    let (uid, gid) = process_ids();
    let counters = Arc::new(Counters::default());
    let served = FuseFs {
        fs,
        rt,
        ttl: opts.entry_ttl,
        root_ttl: opts.entry_ttl.min(ROOT_TTL),
        uid,
        gid,
        counters: counters.clone(),
        statfs: Mutex::new(None),
    };
    let mut fsname: String =
        opts.fsname.chars().map(|c| if c == ',' || c.is_whitespace() || c == '\\' { '_' } else { c }).collect();
    if fsname.is_empty() {
        fsname = SUBTYPE.into();
    }
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName(fsname),
        // `Subtype` reaches only fusermount3; a direct mount(2) as root
        // takes the subtype from the mount data.
        MountOption::Subtype(SUBTYPE.into()),
        MountOption::CUSTOM(format!("subtype={SUBTYPE}")),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    config.acl = if opts.allow_other { SessionACL::All } else { SessionACL::Owner };
    config.n_threads = Some(opts.threads.max(1));
    let mut session =
        Session::new(served, &path, &config).map_err(|source| FuseError::Mount { path: path.clone(), source })?;
    let unmounter = session.unmount_callable();
    let notifier = session.notifier();
    // If spawning fails the session is dropped with the closure, which unmounts.
    let thread = std::thread::Builder::new()
        .name("aetherfs-fuse".into())
        .spawn(move || session.run())
        .map_err(FuseError::Session)?;
    let mount = FuseMount { mountpoint: path, session: Some(thread), unmounter, notifier, counters };
    mount.raise_readahead();
    info!(mountpoint = %mount.mountpoint.display(), threads = opts.threads.max(1), "FUSE mount ready");
    Ok(mount)
}

impl FuseMount {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts and joins the FUSE workers. The CLI calls this on SIGTERM and
    /// SIGINT. If processes still hold files open, the mount is detached
    /// lazily (`fusermount3 -uz`): the path is free at once, open files keep
    /// working, and the session ends when the last one closes (or when this
    /// process exits).
    pub fn unmount(mut self) -> Result<(), FuseError> {
        self.shutdown()
    }

    /// Counters since the mount.
    pub fn stats(&self) -> FuseStats {
        let c = &self.counters;
        FuseStats {
            lookups: c.lookups.load(Ordering::Relaxed),
            opens: c.opens.load(Ordering::Relaxed),
            readdirs: c.readdirs.load(Ordering::Relaxed),
            reads: c.reads.load(Ordering::Relaxed),
            read_bytes: c.read_bytes.load(Ordering::Relaxed),
            max_read: c.max_read.load(Ordering::Relaxed),
            read_errors: c.read_errors.load(Ordering::Relaxed),
        }
    }

    /// Call after [`DatasetFs::switch`], with the version that was current
    /// before it: drops the kernel's cached names in the root, the root's
    /// attributes and its cached listing, so the new version shows at once
    /// instead of within [`ROOT_TTL`]. Files and directories already open
    /// keep reading their own version.
    pub fn notify_switch(&self, previous: &Version) -> Result<(), FuseError> {
        if let Some(NodeKind::Dir { children, .. }) = previous.nodes.first().map(|n| &n.kind) {
            for &c in children {
                let name = &previous.nodes[c as usize].name;
                self.notifier.inval_entry(INodeNo(ROOT), OsStr::new(name)).map_err(FuseError::Notify)?;
            }
        }
        self.notifier.inval_inode(INodeNo(ROOT), 0, 0).map_err(FuseError::Notify)
    }

    /// Raises the mount's readahead to [`READ_SIZE`]: the kernel's FUSE INIT
    /// offers only its default and lets the server lower it, not raise it.
    fn raise_readahead(&self) {
        let dev = match std::fs::metadata(&self.mountpoint) {
            Ok(m) => m.dev(),
            Err(e) => return debug!(error = %e, "cannot stat the new mount"),
        };
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
        match std::fs::write(&knob, format!("{}\n", READ_SIZE / 1024)) {
            Ok(()) => debug!(%knob, kib = READ_SIZE / 1024, "raised readahead"),
            Err(e) => debug!(%knob, error = %e, "could not raise readahead (needs root); keeping the kernel default"),
        }
    }

    fn shutdown(&mut self) -> Result<(), FuseError> {
        let Some(thread) = self.session.take() else { return Ok(()) };
        let path = self.mountpoint.clone();
        match self.unmounter.unmount() {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                warn!(mountpoint = %path.display(), "mount busy (files still open): detaching it lazily");
                lazy_unmount(&path)?;
            }
            // Not a mount point any more: someone detached it already.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                debug!(mountpoint = %path.display(), "already unmounted elsewhere");
            }
            Err(source) => return Err(FuseError::Unmount { path, source }),
        }
        let deadline = Instant::now() + UNMOUNT_GRACE;
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                warn!(
                    mountpoint = %path.display(),
                    "unmounted, but open files keep the FUSE session alive; it ends when they close"
                );
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        match thread.join() {
            Ok(Ok(())) => {
                info!(mountpoint = %path.display(), "FUSE mount unmounted");
                Ok(())
            }
            Ok(Err(e)) => Err(FuseError::Session(e)),
            Err(_) => Err(FuseError::Session(io::Error::other("a FUSE worker panicked"))),
        }
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            warn!(mountpoint = %self.mountpoint.display(), error = %e, "unmount on drop failed");
        }
    }
}

/// Removes a stale mount at `mountpoint`: one whose server is gone, so that
/// every access fails with ENOTCONN ("Transport endpoint is not connected"),
/// or a FUSE mount listed in `/proc/self/mountinfo` that does not answer
/// within 5 s. Runs `fusermount3 -uz` (`umount -l` if that fails), for every
/// stale mount stacked there. Returns whether it removed any. A FUSE mount
/// that answers is left alone ([`FuseError::AlreadyMounted`]); other
/// filesystems mounted there (a volume) are not its business.
pub fn clear_stale_mount(mountpoint: &Path) -> Result<bool, FuseError> {
    let path = absolute(mountpoint);
    let mut cleared = false;
    for _ in 0..MAX_STACKED {
        let fstype = top_mount_type(&path).map_err(|source| FuseError::Probe { path: path.clone(), source })?;
        let fuse = fstype.as_deref().is_some_and(|t| t == "fuse" || t.starts_with("fuse."));
        match probe(&path) {
            Probe::Disconnected => {}
            Probe::Unresponsive if fuse => {}
            Probe::Alive if fuse => return Err(FuseError::AlreadyMounted(path)),
            Probe::Failed(source) if fuse => return Err(FuseError::Probe { path, source }),
            _ => return Ok(cleared),
        }
        warn!(mountpoint = %path.display(), "clearing a stale FUSE mount");
        lazy_unmount(&path)?;
        cleared = true;
    }
    Ok(cleared)
}

enum Probe {
    Alive,
    Disconnected,
    Unresponsive,
    Failed(io::Error),
}

/// Stats the path, then a name no cache can hold (so the kernel must ask the
/// server), in a thread: a hung server would block the caller forever.
fn probe(path: &Path) -> Probe {
    let (tx, rx) = mpsc::channel();
    let p = path.to_path_buf();
    let spawned = std::thread::Builder::new().name("aetherfs-probe".into()).spawn(move || {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let nonce = format!(".aetherfs-probe-{}-{nanos}", std::process::id());
        let answer = || -> io::Result<()> {
            std::fs::symlink_metadata(&p)?;
            match std::fs::symlink_metadata(p.join(nonce)) {
                Err(e) if is_disconnected(&e) => Err(e),
                _ => Ok(()),
            }
        };
        let _ = tx.send(answer());
    });
    if let Err(e) = spawned {
        return Probe::Failed(e);
    }
    match rx.recv_timeout(PROBE_TIMEOUT) {
        Ok(Ok(())) => Probe::Alive,
        Ok(Err(e)) if is_disconnected(&e) => Probe::Disconnected,
        Ok(Err(e)) => Probe::Failed(e),
        Err(_) => Probe::Unresponsive,
    }
}

fn is_disconnected(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED))
}

/// Detaches the mount at `path` now, whatever still uses it.
fn lazy_unmount(path: &Path) -> Result<(), FuseError> {
    let mut errors = Vec::new();
    for (prog, args) in [("fusermount3", ["-u", "-z"].as_slice()), ("umount", ["-l"].as_slice())] {
        match Command::new(prog).args(args).arg(path).stdin(Stdio::null()).output() {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => errors.push(format!("{prog}: {}", String::from_utf8_lossy(&out.stderr).trim())),
            Err(e) => errors.push(format!("{prog}: {e}")),
        }
    }
    Err(FuseError::Unmount { path: path.to_path_buf(), source: io::Error::other(errors.join("; ")) })
}

/// The filesystem type of the topmost mount at `path`, from `/proc/self/mountinfo`.
fn top_mount_type(path: &Path) -> io::Result<Option<String>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let want = path.as_os_str().as_encoded_bytes();
    let mut top = None;
    for line in info.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
        let mut fields = line.split(' ');
        let Some(mp) = fields.nth(4) else { continue };
        if unescape_mountinfo(mp) != want {
            continue;
        }
        if let Some(fstype) = fields.skip_while(|f| *f != "-").nth(1) {
            top = Some(fstype.to_string());
        }
    }
    Ok(top)
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
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

/// Effective uid and gid of this process: the owner of every file served.
fn process_ids() -> (u32, u32) {
    let field = |status: &str, key: &str| {
        status.lines().find_map(|l| l.strip_prefix(key)).and_then(|rest| rest.split_whitespace().nth(1)?.parse().ok())
    };
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let (Some(uid), Some(gid)) = (field(&status, "Uid:"), field(&status, "Gid:"))
    {
        return (uid, gid);
    }
    std::fs::metadata("/proc/self").map_or((0, 0), |m| (m.uid(), m.gid()))
}

fn errno(e: &FsError) -> Errno {
    match e {
        FsError::NotFound => Errno::ENOENT,
        FsError::NotDir => Errno::ENOTDIR,
        FsError::IsDir => Errno::EISDIR,
        FsError::NotSymlink | FsError::Invalid => Errno::EINVAL,
        FsError::ReadOnly => Errno::EROFS,
        FsError::Stale => Errno::ESTALE,
        FsError::Io(_) => Errno::EIO,
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
    }
}

/// The [`Filesystem`] fuser drives.
struct FuseFs {
    fs: Arc<DatasetFs>,
    rt: tokio::runtime::Handle,
    ttl: Duration,
    root_ttl: Duration,
    uid: u32,
    gid: u32,
    counters: Arc<Counters>,
    /// (version, 4 KiB blocks, nodes) of the last statfs.
    statfs: Mutex<Option<(Digest, u64, u64)>>,
}

impl FuseFs {
    fn file_attr(&self, a: &Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.blocks(),
            atime: a.mtime,
            mtime: a.mtime,
            ctime: a.mtime,
            crtime: a.mtime,
            kind: file_type(a.kind),
            perm: (a.perm & 0o7777) as u16,
            nlink: a.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLKSIZE,
            flags: 0,
        }
    }

    /// How long the kernel may keep an inode's attributes.
    fn attr_ttl(&self, ino: u64) -> Duration {
        if ino == ROOT { self.root_ttl } else { self.ttl }
    }

    /// How long the kernel may keep a name in `parent`.
    fn entry_ttl(&self, parent: u64) -> Duration {
        if parent == ROOT { self.root_ttl } else { self.ttl }
    }

    fn version_totals(&self) -> (u64, u64) {
        let v = self.fs.current();
        let mut cache = self.statfs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((digest, blocks, files)) = *cache
            && digest == v.digest
        {
            return (blocks, files);
        }
        let blocks = v
            .nodes
            .iter()
            .map(|n| match n.kind {
                NodeKind::File { size, .. } => size.div_ceil(u64::from(STATFS_BSIZE)),
                _ => 0,
            })
            .sum();
        let files = v.nodes.len() as u64;
        *cache = Some((v.digest, blocks, files));
        (blocks, files)
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let readahead = config.set_max_readahead(READ_SIZE).map_or_else(
            |max| {
                let _ = config.set_max_readahead(max);
                max
            },
            |_| READ_SIZE,
        );
        // Writes are refused, but max_write also sizes max_pages, the cap on
        // every request: it sets how large reads can be.
        if let Err(max) = config.set_max_write(READ_SIZE) {
            let _ = config.set_max_write(max);
        }
        let _ = config.set_max_background(MAX_BACKGROUND);
        for cap in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_CACHE_SYMLINKS,
        ] {
            if config.add_capabilities(cap).is_err() {
                debug!(capability = ?cap, "not offered by this kernel");
            }
        }
        debug!(abi = %config.kernel_abi(), readahead, "FUSE session initialized");
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        inc(&self.counters.lookups);
        let Some(name) = name.to_str() else { return reply.error(Errno::ENOENT) };
        match self.fs.lookup(parent.0, name) {
            Ok(a) => reply.entry_with_ttls(
                &self.attr_ttl(a.ino),
                &self.entry_ttl(parent.0),
                &self.file_attr(&a),
                Generation(0),
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&self.attr_ttl(ino.0), &self.file_attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        inc(&self.counters.opens);
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & (libc::O_TRUNC | libc::O_APPEND) != 0 {
            return reply.error(Errno::EROFS);
        }
        match self.fs.getattr(ino.0) {
            Ok(a) if a.kind == Kind::Dir => reply.error(Errno::EISDIR),
            // Immutable bytes: keep the page cache across opens; nothing to flush on close.
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = self.fs.clone();
        let counters = self.counters.clone();
        self.rt.spawn(async move {
            inc(&counters.reads);
            counters.max_read.fetch_max(size, Ordering::Relaxed);
            match fs.read(ino.0, offset, size).await {
                Ok(bytes) => {
                    counters.read_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    reply.data(&bytes);
                }
                Err(e) => {
                    inc(&counters.read_errors);
                    warn!(ino = ino.0, offset, size, error = %e, "FUSE read failed");
                    reply.error(errno(&e));
                }
            }
        });
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.getattr(ino.0) {
            Ok(a) if a.kind != Kind::Dir => reply.error(Errno::ENOTDIR),
            // The root's listing changes on a version switch: never cache it.
            Ok(_) if ino.0 == ROOT => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Offsets: `.` is 1, `..` is 2, then each entry's core cookie + 2, so a
    /// listing resumes exactly after any entry it returned.
    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        inc(&self.counters.readdirs);
        let dir = ino.0;
        if offset == 0 && reply.add(ino, 1, FileType::Directory, ".") {
            return reply.ok();
        }
        if offset <= 1 {
            let parent = match self.fs.parent(dir) {
                Ok(p) => p.ino,
                Err(e) => return reply.error(errno(&e)),
            };
            if reply.add(INodeNo(parent), 2, FileType::Directory, "..") {
                return reply.ok();
            }
        }
        let mut cookie = offset.saturating_sub(2);
        loop {
            let batch = match self.fs.readdir(dir, cookie, READDIR_BATCH) {
                Ok(b) => b,
                Err(e) => return reply.error(errno(&e)),
            };
            let last = batch.len() < READDIR_BATCH;
            for e in batch {
                if reply.add(INodeNo(e.attr.ino), e.cookie + 2, file_type(e.attr.kind), &e.name) {
                    return reply.ok();
                }
                cookie = e.cookie;
            }
            if last {
                return reply.ok();
            }
        }
    }

    /// Like [`Self::readdir`], with attributes: `ls -l` needs no lookups.
    fn readdirplus(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        inc(&self.counters.readdirs);
        let dir = ino.0;
        let ttl = self.entry_ttl(dir);
        if offset == 0 {
            let me = match self.fs.getattr(dir) {
                Ok(a) => a,
                Err(e) => return reply.error(errno(&e)),
            };
            if reply.add(ino, 1, ".", &ttl, &self.file_attr(&me), Generation(0)) {
                return reply.ok();
            }
        }
        if offset <= 1 {
            let parent = match self.fs.parent(dir) {
                Ok(p) => p,
                Err(e) => return reply.error(errno(&e)),
            };
            if reply.add(INodeNo(parent.ino), 2, "..", &ttl, &self.file_attr(&parent), Generation(0)) {
                return reply.ok();
            }
        }
        let mut cookie = offset.saturating_sub(2);
        loop {
            let batch = match self.fs.readdir(dir, cookie, READDIR_BATCH) {
                Ok(b) => b,
                Err(e) => return reply.error(errno(&e)),
            };
            let last = batch.len() < READDIR_BATCH;
            for e in batch {
                let attr = self.file_attr(&e.attr);
                if reply.add(INodeNo(e.attr.ino), e.cookie + 2, &e.name, &ttl, &attr, Generation(0)) {
                    return reply.ok();
                }
                cookie = e.cookie;
            }
            if last {
                return reply.ok();
            }
        }
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (blocks, files) = self.version_totals();
        reply.statfs(blocks, 0, 0, files, 0, STATFS_BSIZE, 255, STATFS_BSIZE);
    }

    /// Datasets carry no extended attributes. ENOSYS (not ENODATA) makes the
    /// kernel stop asking for the rest of the mount: `ls -l` otherwise sends
    /// two GETXATTR requests per file (SELinux label, POSIX ACL), every time.
    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.getattr(ino.0) {
            Ok(_) if size == 0 => reply.size(0),
            Ok(_) => reply.data(&[]),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if mask.contains(AccessFlags::W_OK) {
            return reply.error(Errno::EROFS);
        }
        match self.fs.getattr(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    // Everything below would change the tree: the dataset is immutable.

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(&self, _req: &Request, _parent: INodeNo, _link_name: &OsStr, _target: &Path, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(&self, _req: &Request, _ino: INodeNo, _newparent: INodeNo, _newname: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b\134c"), b"/tmp/a b\\c");
        assert_eq!(unescape_mountinfo(r"/x\04"), b"/x\\04");
        assert_eq!(unescape_mountinfo("/plain"), b"/plain");
    }

    #[test]
    fn errno_mapping() {
        assert_eq!(errno(&FsError::NotFound), Errno::ENOENT);
        assert_eq!(errno(&FsError::NotDir), Errno::ENOTDIR);
        assert_eq!(errno(&FsError::IsDir), Errno::EISDIR);
        assert_eq!(errno(&FsError::NotSymlink), Errno::EINVAL);
        assert_eq!(errno(&FsError::ReadOnly), Errno::EROFS);
        assert_eq!(errno(&FsError::Invalid), Errno::EINVAL);
        assert_eq!(errno(&FsError::Stale), Errno::ESTALE);
        assert_eq!(errno(&FsError::Io("x".into())), Errno::EIO);
    }

    #[test]
    fn ids_of_this_process() {
        let (uid, gid) = process_ids();
        let m = std::fs::metadata("/proc/self").unwrap();
        assert_eq!((uid, gid), (m.uid(), m.gid()));
    }
}
