//! The mount's lifetime: mounting, cache invalidation after a version
//! switch, the readahead knob, and unmounting (lazily when files are open).

use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fuser::{Config, INodeNo, MountOption, Notifier, Session, SessionACL, SessionUnmounter};
use tracing::{debug, info, warn};

use super::adapter::FuseFs;
use super::stale::lazy_unmount;
use super::{Counters, FuseError, FuseOptions, FuseStats, READAHEAD, ROOT_TTL, SUBTYPE, UNMOUNT_GRACE, absolute};
use crate::fs::{DatasetFs, ROOT};
use crate::version::Version;

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
        for name in previous.root_names() {
            self.notifier.inval_entry(INodeNo(ROOT), OsStr::new(name)).map_err(FuseError::Notify)?;
        }
        self.notifier.inval_inode(INodeNo(ROOT), 0, 0).map_err(FuseError::Notify)
    }

    /// Raises the mount's readahead to [`READAHEAD`]: the kernel's FUSE INIT
    /// offers only its default and lets the server lower it, not raise it.
    fn raise_readahead(&self) {
        let dev = match std::fs::metadata(&self.mountpoint) {
            Ok(m) => m.dev(),
            Err(e) => return debug!(error = %e, "cannot stat the new mount"),
        };
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
        match std::fs::write(&knob, format!("{}\n", READAHEAD / 1024)) {
            Ok(()) => debug!(%knob, kib = READAHEAD / 1024, "raised readahead"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_this_process() {
        let (uid, gid) = process_ids();
        let m = std::fs::metadata("/proc/self").unwrap();
        assert_eq!((uid, gid), (m.uid(), m.gid()));
    }
}
