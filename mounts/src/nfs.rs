//! NFSv3 front end over [`nfsserve`]: the dataset as a read-only export that
//! any NFSv3 client (the Linux kernel, libnfs's `nfs-ls`/`nfs-cat`/`nfs-cp`,
//! macOS) can read without FUSE on the client side.
//!
//! File ids are the core's inode numbers (root = 1, never 0), so they are
//! stable for a given manifest across server restarts; nfsserve builds the
//! opaque file handle from the id and the server's start time, so handles do
//! go stale across a restart (clients re-resolve by path). One TCP port
//! serves NFS, MOUNT and a tiny portmapper. NFSv3 clients prove nothing
//! about who they are (AUTH_SYS carries a uid the client picks), so the
//! only control is the client's address: [`NfsAccess`] (loopback by
//! default), enforced by the gate of [`crate::nfs_gate`].
//!
//! # Directory cookies
//!
//! nfsserve 0.11 uses an entry's file id as its READDIRPLUS cookie and asks
//! [`NFSFileSystem::readdir`] for the entries *after the entry with that file
//! id*. The core's cookies are positions, so [`NfsFs`] maps a file id back to
//! a position: it takes the entry's name (`path_of`) and searches the
//! directory, whose children are sorted by name bytes, with a galloping
//! binary search of one-entry core reads: O(log n) per page, exact, never a
//! skipped or repeated entry. Resuming by name also keeps a listing of `/`
//! coherent across a version switch (it continues after that name in the new
//! version).
//!
//! nfsserve's plain READDIR handler never passes the client's cookie on: it
//! calls `readdir_simple(dir, count)` and labels every entry with its file id,
//! so a second page would repeat the first. [`NfsFs::readdir_simple`]
//! therefore answers with the whole directory when it fits in the client's
//! reply budget (exact, `eof` set) and with `NFS3ERR_TOOSMALL` otherwise,
//! never with a wrong listing. libnfs and Linux list with READDIRPLUS; the
//! counters in [`NfsCounters`] show which one a client used.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use nfsserve::nfs::{
    fattr3, fileid3, filename3, fsinfo3, ftype3, nfspath3, nfsstat3, nfstime3, post_op_attr, sattr3, specdata3,
};
use nfsserve::tcp::{NFSTcp, NFSTcpListener};
use nfsserve::vfs::{DirEntry as NfsDirEntry, NFSFileSystem, ReadDirResult, ReadDirSimpleResult, VFSCapabilities};

pub use crate::nfs_gate::{GateCounters, NfsAccess};
use crate::{Attr, DatasetFs, FsError, Kind, MAX_READ, ROOT};

/// The `fsid` every attribute reports: one filesystem, whatever the version
/// (a changing fsid makes Linux clients see a mount point).
const FSID: u64 = 0x4165_7468_6572_4653; // "AetherFS"
/// Largest READ the server advertises (and serves in one reply).
const RTMAX: u32 = 1 << 20;
/// Preferred READDIR size advertised to clients: large, so that plain READDIR
/// (which nfsserve cannot page) fits whole directories of thousands of entries.
const DTPREF: u32 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum NfsError {
    /// nfsserve parses `ip:port` itself and takes IPv4 only.
    #[error("NFS server address {0} is not IPv4 (nfsserve listens on IPv4 only)")]
    NotIpv4(SocketAddr),
    #[error("export name {0:?} must be non-empty, without '/', NUL or whitespace")]
    BadExport(String),
    #[error("binding the NFS server to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// What the adapter served, by kind of directory listing; for metrics and to
/// check which procedure a client uses.
#[derive(Debug, Default)]
pub struct NfsCounters {
    /// Pages served through READDIRPLUS (nfsserve's `readdir`).
    pub readdirplus_pages: AtomicU64,
    /// Plain READDIR requests answered with the whole directory.
    pub readdir_whole: AtomicU64,
    /// Plain READDIR requests refused with `NFS3ERR_TOOSMALL`: the directory
    /// did not fit and nfsserve cannot page plain READDIR.
    pub readdir_toosmall: AtomicU64,
    /// READDIRPLUS resumptions whose cookie named no entry of the directory.
    pub bad_cookies: AtomicU64,
}

/// A bound, not yet serving, read-only NFSv3 server.
pub struct NfsServer {
    listener: NFSTcpListener<NfsFs>,
    /// With an allowlist to enforce: the public listener, whose admitted
    /// connections are relayed to nfsserve's loopback one.
    gate: Option<(tokio::net::TcpListener, NfsAccess)>,
    gate_counters: Arc<GateCounters>,
    addr: SocketAddr,
    export: String,
    counters: Arc<NfsCounters>,
}

impl NfsServer {
    /// Binds `addr` (IPv4; port 0 picks a free port) and exports `fs` as
    /// `/EXPORT` to the clients `access` allows. Clients mount `/EXPORT`
    /// (or a directory below it).
    pub async fn bind(
        fs: Arc<DatasetFs>,
        addr: SocketAddr,
        export: &str,
        access: NfsAccess,
    ) -> Result<NfsServer, NfsError> {
        if !addr.is_ipv4() {
            return Err(NfsError::NotIpv4(addr));
        }
        let export = export.trim_matches('/');
        if export.is_empty() || export.contains(['/', '\0']) || export.contains(char::is_whitespace) {
            return Err(NfsError::BadExport(export.to_string()));
        }
        let counters = Arc::new(NfsCounters::default());
        let vfs = NfsFs { fs, counters: counters.clone() };
        let bind_err = |source| NfsError::Bind { addr, source };
        // With a gate, nfsserve listens on an ephemeral loopback port that
        // only the gate relays to.
        let gate = match access.needs_gate(addr) {
            true => Some((tokio::net::TcpListener::bind(addr).await.map_err(bind_err)?, access)),
            false => None,
        };
        let backend = if gate.is_some() { SocketAddr::from((Ipv4Addr::LOCALHOST, 0)) } else { addr };
        let mut listener = NFSTcpListener::bind(&backend.to_string(), vfs).await.map_err(bind_err)?;
        listener.with_export_name(export);
        let addr = match &gate {
            Some((public, _)) => public.local_addr().map_err(bind_err)?,
            None => SocketAddr::new(addr.ip(), listener.get_listen_port()),
        };
        Ok(NfsServer { listener, gate, gate_counters: Arc::default(), addr, export: export.to_string(), counters })
    }

    /// The address the server listens on (the real port when bound to 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The export name, without slashes.
    pub fn export(&self) -> &str {
        &self.export
    }

    pub fn counters(&self) -> Arc<NfsCounters> {
        self.counters.clone()
    }

    /// Connections the allowlist refused and admitted (zero without a gate).
    pub fn gate_counters(&self) -> Arc<GateCounters> {
        self.gate_counters.clone()
    }

    /// A libnfs URL for `path` (relative to the export root, `/`-separated,
    /// passed through as it is: libnfs does not percent-decode).
    /// NFS and MOUNT share the server's one port, so no rpcbind is needed.
    pub fn url(&self, path: &str) -> String {
        nfs_url(self.addr, &self.export, path)
    }

    /// Accepts connections until the future is dropped (e.g. its task
    /// aborted); never returns on its own. An accept error (such as running
    /// out of file descriptors) is logged and accepting resumes shortly.
    /// Connections already accepted run on their own tasks until their
    /// client disconnects or the runtime shuts down.
    pub async fn serve(self) {
        tracing::info!(addr = %self.addr, export = %self.export, "serving NFSv3");
        if let Some((public, access)) = self.gate {
            let backend = SocketAddr::new(self.listener.get_listen_ip(), self.listener.get_listen_port());
            tokio::spawn(crate::nfs_gate::run(public, backend, access, self.gate_counters.clone()));
        }
        loop {
            if let Err(e) = self.listener.handle_forever().await {
                tracing::warn!(error = %e, "NFS accept failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// The libnfs URL of `path` under `export` on a server at `addr` (see
/// [`NfsServer::url`]); usable after the server was moved into its task.
pub fn nfs_url(addr: SocketAddr, export: &str, path: &str) -> String {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let port = addr.port();
    let (export, path) = (export.trim_matches('/'), path.trim_start_matches('/'));
    format!("nfs://{ip}/{export}/{path}?nfsport={port}&mountport={port}&version=3")
}

/// The core as an [`NFSFileSystem`].
pub struct NfsFs {
    fs: Arc<DatasetFs>,
    counters: Arc<NfsCounters>,
}

impl NfsFs {
    pub fn new(fs: Arc<DatasetFs>) -> Self {
        Self { fs, counters: Arc::default() }
    }

    /// The core position (cookie) just after the entry with file id
    /// `start_after` in directory `dir`: the number of entries whose name
    /// sorts at or before that entry's name. O(log n) one-entry reads.
    fn position_after(&self, dir: u64, start_after: fileid3) -> Result<u64, nfsstat3> {
        if start_after == 0 {
            return Ok(0);
        }
        let bad_cookie = || {
            self.counters.bad_cookies.fetch_add(1, Ordering::Relaxed);
            nfsstat3::NFS3ERR_BAD_COOKIE
        };
        let dir_path = self.fs.path_of(dir).map_err(status)?;
        let path = self.fs.path_of(start_after).map_err(|_| bad_cookie())?;
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", &path));
        if parent != dir_path || name.is_empty() {
            return Err(bad_cookie());
        }
        // past(p): position p is the end or holds a name after `name`.
        // Monotone in p, since children are sorted by name bytes.
        let past = |p: u64| -> Result<bool, nfsstat3> {
            let e = self.fs.readdir(dir, p, 1).map_err(status)?;
            Ok(e.first().is_none_or(|e| e.name.as_bytes() > name.as_bytes()))
        };
        // Gallop to a position that is past, then bisect [lo, hi].
        let (mut lo, mut step) = (0u64, 1u64);
        let mut hi = loop {
            let probe = lo + step - 1;
            if past(probe)? {
                break probe;
            }
            lo = probe + 1;
            step = step.saturating_mul(2);
        };
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if past(mid)? { hi = mid } else { lo = mid + 1 }
        }
        Ok(lo)
    }
}

fn status(e: FsError) -> nfsstat3 {
    match e {
        FsError::NotFound => nfsstat3::NFS3ERR_NOENT,
        FsError::NotDir => nfsstat3::NFS3ERR_NOTDIR,
        FsError::IsDir => nfsstat3::NFS3ERR_ISDIR,
        FsError::NotSymlink | FsError::Invalid => nfsstat3::NFS3ERR_INVAL,
        FsError::ReadOnly => nfsstat3::NFS3ERR_ROFS,
        FsError::Stale => nfsstat3::NFS3ERR_STALE,
        FsError::Source(_) | FsError::BadSource(_) => {
            tracing::warn!(error = %aetherfs_util::one_line(&e), "NFS read failed");
            nfsstat3::NFS3ERR_IO
        }
    }
}

fn nfstime(t: SystemTime) -> nfstime3 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    nfstime3 { seconds: u32::try_from(d.as_secs()).unwrap_or(u32::MAX), nseconds: d.subsec_nanos() }
}

fn fattr(a: &Attr) -> fattr3 {
    let ftype = match a.kind {
        Kind::File => ftype3::NF3REG,
        Kind::Dir => ftype3::NF3DIR,
        Kind::Symlink => ftype3::NF3LNK,
    };
    let t = nfstime(a.mtime);
    fattr3 {
        ftype,
        mode: a.perm & 0o7777,
        nlink: a.nlink,
        uid: 0,
        gid: 0,
        size: a.size,
        used: a.blocks() * 512,
        rdev: specdata3::default(),
        fsid: FSID,
        fileid: a.ino,
        atime: t,
        mtime: t,
        ctime: t,
    }
}

fn name_of(f: &filename3) -> Result<&str, nfsstat3> {
    // Every name in a manifest is UTF-8: other bytes name nothing.
    std::str::from_utf8(f.as_ref()).map_err(|_| nfsstat3::NFS3ERR_NOENT)
}

/// Bytes one entry takes in a READDIR reply (XDR: list flag, fileid, name
/// length and padded name, cookie).
fn readdir_entry_bytes(name: &str) -> usize {
    4 + 8 + 4 + name.len().next_multiple_of(4) + 8
}

/// What nfsserve's READDIR reply holds before its first entry: RPC reply
/// header (24), status (4), directory attributes (4 + 84), cookie verifier (8).
const READDIR_HEADER_BYTES: usize = 124;

#[async_trait]
impl NFSFileSystem for NfsFs {
    fn capabilities(&self) -> VFSCapabilities {
        VFSCapabilities::ReadOnly
    }

    fn root_dir(&self) -> fileid3 {
        ROOT
    }

    async fn lookup(&self, dirid: fileid3, filename: &filename3) -> Result<fileid3, nfsstat3> {
        Ok(self.fs.lookup(dirid, name_of(filename)?).map_err(status)?.ino)
    }

    async fn getattr(&self, id: fileid3) -> Result<fattr3, nfsstat3> {
        Ok(fattr(&self.fs.getattr(id).map_err(status)?))
    }

    async fn read(&self, id: fileid3, offset: u64, count: u32) -> Result<(Vec<u8>, bool), nfsstat3> {
        let a = self.fs.getattr(id).map_err(status)?;
        match a.kind {
            Kind::File => {}
            Kind::Dir => return Err(nfsstat3::NFS3ERR_ISDIR),
            Kind::Symlink => return Err(nfsstat3::NFS3ERR_INVAL),
        }
        let data = self.fs.read(id, offset, count.min(MAX_READ)).await.map_err(status)?;
        let eof = offset.saturating_add(data.len() as u64) >= a.size;
        Ok((data.to_vec(), eof))
    }

    async fn readdir(
        &self,
        dirid: fileid3,
        start_after: fileid3,
        max_entries: usize,
    ) -> Result<ReadDirResult, nfsstat3> {
        self.counters.readdirplus_pages.fetch_add(1, Ordering::Relaxed);
        let from = self.position_after(dirid, start_after)?;
        // At least one entry, or a tiny dircount would never progress; one
        // extra to know whether this page reaches the end.
        let max = max_entries.max(1);
        let mut got = self.fs.readdir(dirid, from, max.saturating_add(1)).map_err(status)?;
        let end = got.len() <= max;
        got.truncate(max);
        let entries = got.into_iter().map(|e| NfsDirEntry {
            fileid: e.attr.ino,
            name: e.name.into_bytes().into(),
            attr: fattr(&e.attr),
        });
        Ok(ReadDirResult { entries: entries.collect(), end })
    }

    /// Plain READDIR. nfsserve passes no cookie here (see the module docs):
    /// answer with the whole directory if it fits in the reply, else refuse.
    async fn readdir_simple(&self, dirid: fileid3, count: usize) -> Result<ReadDirSimpleResult, nfsstat3> {
        // nfsserve computes `count` as dircount / 16 and stops adding entries
        // once the reply would reach dircount - 128 bytes.
        let budget = count.saturating_mul(16).saturating_sub(128);
        let all = self.fs.readdir(dirid, 0, usize::MAX).map_err(status)?;
        let bytes: usize = READDIR_HEADER_BYTES + all.iter().map(|e| readdir_entry_bytes(&e.name)).sum::<usize>();
        if bytes >= budget {
            self.counters.readdir_toosmall.fetch_add(1, Ordering::Relaxed);
            return Err(nfsstat3::NFS3ERR_TOOSMALL);
        }
        self.counters.readdir_whole.fetch_add(1, Ordering::Relaxed);
        let entries = all
            .into_iter()
            .map(|e| nfsserve::vfs::DirEntrySimple { fileid: e.attr.ino, name: e.name.into_bytes().into() });
        Ok(ReadDirSimpleResult { entries: entries.collect(), end: true })
    }

    async fn readlink(&self, id: fileid3) -> Result<nfspath3, nfsstat3> {
        Ok(self.fs.readlink(id).map_err(status)?.into_bytes().into())
    }

    async fn fsinfo(&self, root_fileid: fileid3) -> Result<fsinfo3, nfsstat3> {
        let attr = self.fs.getattr(root_fileid).map_err(status)?;
        Ok(fsinfo3 {
            obj_attributes: post_op_attr::attributes(fattr(&attr)),
            rtmax: RTMAX,
            rtpref: RTMAX,
            rtmult: 4096,
            // Writes are refused anyway; advertise something sane.
            wtmax: RTMAX,
            wtpref: RTMAX,
            wtmult: 4096,
            dtpref: DTPREF,
            maxfilesize: u64::MAX >> 1,
            time_delta: nfstime3 { seconds: 1, nseconds: 0 },
            properties: nfsserve::nfs::FSF_SYMLINK | nfsserve::nfs::FSF_HOMOGENEOUS,
        })
    }

    async fn setattr(&self, _id: fileid3, _setattr: sattr3) -> Result<fattr3, nfsstat3> {
        Err(nfsstat3::NFS3ERR_ROFS)
    }

    async fn write(&self, _id: fileid3, _offset: u64, _data: &[u8]) -> Result<fattr3, nfsstat3> {
        Err(nfsstat3::NFS3ERR_ROFS)
    }

    async fn create(
        &self,
        _dirid: fileid3,
        _filename: &filename3,
        _attr: sattr3,
    ) -> Result<(fileid3, fattr3), nfsstat3> {
        Err(nfsstat3::NFS3ERR_ROFS)
    }

    async fn create_exclusive(&self, _dirid: fileid3, _filename: &filename3) -> Result<fileid3, nfsstat3> {
        Err(nfsstat3::NFS3ERR_ROFS)
    }

    async fn mkdir(&self, _dirid: fileid3, _dirname: &filename3) -> Result<(fileid3, fattr3), nfsstat3> {
        Err(nfsstat3::NFS3ERR_ROFS)
    }

    async fn remove(&self, _dirid: fileid3, _filename: &filename3) -> Result<(), nfsstat3> {
        Err(nfsstat3::NFS3ERR_ROFS)
    }

    async fn rename(
        &self,
        _from_dirid: fileid3,
        _from_filename: &filename3,
        _to_dirid: fileid3,
        _to_filename: &filename3,
    ) -> Result<(), nfsstat3> {
        Err(nfsstat3::NFS3ERR_ROFS)
    }

    async fn symlink(
        &self,
        _dirid: fileid3,
        _linkname: &filename3,
        _symlink: &nfspath3,
        _attr: &sattr3,
    ) -> Result<(fileid3, fattr3), nfsstat3> {
        Err(nfsstat3::NFS3ERR_ROFS)
    }
}
