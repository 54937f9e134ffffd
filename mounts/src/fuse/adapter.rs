//! The protocol adapter: fuser's [`Filesystem`] over a [`DatasetFs`], with
//! the mapping of attributes and errors to their FUSE forms.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tracing::{debug, warn};

use super::{Counters, READ_SIZE, inc};
use crate::fs::{Attr, DatasetFs, FsError, FsTotals, Kind, ROOT};

/// `st_blksize`: what stdio and `cp` size their buffers by.
const BLKSIZE: u32 = 128 << 10;
/// Background (readahead) requests the kernel may have in flight.
const MAX_BACKGROUND: u16 = 64;
/// Directory entries taken from the core per step while filling a reply.
const READDIR_BATCH: usize = 64;

fn errno(e: &FsError) -> Errno {
    match e {
        FsError::NotFound => Errno::ENOENT,
        FsError::NotDir => Errno::ENOTDIR,
        FsError::IsDir => Errno::EISDIR,
        FsError::NotSymlink | FsError::Invalid => Errno::EINVAL,
        FsError::ReadOnly => Errno::EROFS,
        FsError::Stale => Errno::ESTALE,
        FsError::Source(_) | FsError::BadSource(_) => Errno::EIO,
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
    }
}

/// The replies of mutating requests; fuser gives them no common trait.
trait ErrorReply {
    fn error(self, err: Errno);
}

macro_rules! error_reply {
    ($($t:ty),*) => {
        $(impl ErrorReply for $t {
            fn error(self, err: Errno) {
                <$t>::error(self, err)
            }
        })*
    };
}

error_reply!(ReplyAttr, ReplyEntry, ReplyEmpty, ReplyWrite, ReplyCreate);

/// The dataset is immutable: every request that would change it gets EROFS.
fn refuse_write(reply: impl ErrorReply) {
    reply.error(Errno::EROFS);
}

/// The [`Filesystem`] fuser drives.
pub(super) struct FuseFs {
    pub(super) fs: Arc<DatasetFs>,
    pub(super) rt: tokio::runtime::Handle,
    pub(super) ttl: Duration,
    pub(super) root_ttl: Duration,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) counters: Arc<Counters>,
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
                    warn!(ino = ino.0, offset, size, error = %aetherfs_util::one_line(&e), "FUSE read failed");
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
        let t = self.fs.statfs();
        reply.statfs(t.blocks, 0, 0, t.files, 0, FsTotals::BLOCK_SIZE, 255, FsTotals::BLOCK_SIZE);
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
        refuse_write(reply);
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
        refuse_write(reply);
    }

    fn mkdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        refuse_write(reply);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        refuse_write(reply);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        refuse_write(reply);
    }

    fn symlink(&self, _req: &Request, _parent: INodeNo, _link_name: &OsStr, _target: &Path, reply: ReplyEntry) {
        refuse_write(reply);
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
        refuse_write(reply);
    }

    fn link(&self, _req: &Request, _ino: INodeNo, _newparent: INodeNo, _newname: &OsStr, reply: ReplyEntry) {
        refuse_write(reply);
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
        refuse_write(reply);
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
        refuse_write(reply);
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
        refuse_write(reply);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        refuse_write(reply);
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
        refuse_write(reply);
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
        refuse_write(reply);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ContractError, SourceError};

    #[test]
    fn errno_mapping() {
        assert_eq!(errno(&FsError::NotFound), Errno::ENOENT);
        assert_eq!(errno(&FsError::NotDir), Errno::ENOTDIR);
        assert_eq!(errno(&FsError::IsDir), Errno::EISDIR);
        assert_eq!(errno(&FsError::NotSymlink), Errno::EINVAL);
        assert_eq!(errno(&FsError::ReadOnly), Errno::EROFS);
        assert_eq!(errno(&FsError::Invalid), Errno::EINVAL);
        assert_eq!(errno(&FsError::Stale), Errno::ESTALE);
        assert_eq!(errno(&FsError::Source(SourceError::Timeout)), Errno::EIO);
        let bad = ContractError::WrongCount { want: 2, got: 1 };
        assert_eq!(errno(&FsError::BadSource(bad)), Errno::EIO);
    }
}
