//! WebDAV front end over [`dav_server`] on axum: the dataset, read-only, for
//! rclone, davfs2, macOS Finder, Windows Explorer and plain browsers.
//!
//! - Methods: GET, HEAD, OPTIONS and PROPFIND ([`DavMethodSet::WEBDAV_RO`]).
//!   Everything else (PUT, DELETE, MKCOL, MOVE, COPY, PROPPATCH, LOCK,
//!   UNLOCK, PATCH) is refused by dav-server with 405 before it reaches the
//!   filesystem. There is no lock system: clients that need class-2 locking
//!   to write (Finder, Explorer) mount the share read-only, which is what it
//!   is. (dav-server still advertises `DAV: 1,2,3` in OPTIONS.)
//! - PROPFIND Depth 0 and 1 come from the manifest alone: a listing reads the
//!   directory from the core once and hands dav-server entries whose metadata
//!   is already computed, so no chunk is fetched and a 10,000-entry Depth 1
//!   is one pass. Depth infinity is refused (dav-server answers 501
//!   `propfind-finite-depth`).
//! - ETag: a file's digest (hex; derived from its chunk list, so the same in
//!   every version where the file's bytes are); a directory's is its
//!   version's digest. dav-server quotes it in the `ETag` header; `getetag` in PROPFIND
//!   carries the same value without quotes. Last-Modified is the version's
//!   creation time. Range, multi-range and If-Range are dav-server's, driven
//!   by that metadata.
//! - Symlinks are dereferenced: a symlink whose target resolves inside the
//!   dataset (relative target, at most 40 hops, never above the root) is
//!   served as what it points to, so clients see a plain file or directory.
//!   A dangling, absolute or escaping symlink is not listed and is 404.
//!   To keep the tree finite whatever the links, a request path may pass
//!   through at most one symlink to a directory: inside a directory reached
//!   through one, symlinks to directories are not listed (and are 404).
//! - GET on a collection returns an HTML index (dav-server's autoindex,
//!   names HTML-escaped, dot-files left out); GET on a collection URL without
//!   the trailing slash redirects (302) to it.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, SeekFrom};
use std::sync::Arc;
use std::time::SystemTime;

use aetherfs_access::Gate;
use axum::Router;
use axum::extract::Request;
use axum::routing::any;
use bytes::Bytes;
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, FsError as DavError, FsFuture, FsResult, FsStream, OpenOptions,
    ReadDirMeta,
};
use dav_server::{DavHandler, DavMethodSet};
use futures::FutureExt;

use crate::{Attr, DatasetFs, FsError, Kind, MAX_READ, ROOT};

/// Bytes dav-server asks a file for at a time while streaming a GET body.
const READ_BUF: usize = 256 << 10;
/// Symlinks followed while resolving one path (Linux's limit).
const MAX_HOPS: u32 = 40;

/// The dataset as an axum router serving WebDAV at `/`, answering only to
/// the hosts [`check_host`] lets through (`allowed_hosts` adds names) and,
/// with a `gate`, only to the requests it admits.
pub fn router(fs: Arc<DatasetFs>, allowed_hosts: Vec<String>, gate: Option<Arc<dyn Gate>>) -> Router {
    let dav = handler(fs);
    let serve = move |req: Request| {
        let dav = dav.clone();
        async move { dav.handle(req).await }
    };
    let mut router = Router::new().route("/", any(serve.clone())).route("/{*path}", any(serve));
    if let Some(gate) = gate {
        router = router.layer(axum::middleware::from_fn_with_state(gate, aetherfs_access::require));
    }
    // Outermost: a rebound web page is refused before any credential is read.
    router.layer(axum::middleware::from_fn_with_state(Arc::new(allowed_hosts), check_host))
}

/// Refuses (403) a request whose Host is neither an IP address, `localhost`,
/// nor one of the allowed names: a web page must not reach these front ends
/// through DNS rebinding (with authentication, the browser would still send
/// credentials it holds for the name)
/// ([`aetherfs_util::host_allowed`]). Requests without a Host pass (no
/// browser sends one).
pub async fn check_host(
    axum::extract::State(allowed): axum::extract::State<Arc<Vec<String>>>,
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let host = req.uri().authority().map(|a| a.as_str().to_string()).or_else(|| {
        req.headers().get(axum::http::header::HOST).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    });
    if let Some(h) = host
        && !aetherfs_util::host_allowed(&h, &allowed)
    {
        tracing::info!(host = %aetherfs_util::quote(&h), "refused a request for an unknown host");
        return (
            axum::http::StatusCode::FORBIDDEN,
            "this server answers only to its addresses, localhost and its allowed host names\n",
        )
            .into_response();
    }
    next.run(req).await
}

/// The dav-server handler, for embedding under another prefix (build your
/// own with [`DavHandler::builder`] and [`dav_filesystem`] for that).
pub fn handler(fs: Arc<DatasetFs>) -> DavHandler {
    DavHandler::builder()
        .filesystem(dav_filesystem(fs))
        .methods(DavMethodSet::WEBDAV_RO)
        .autoindex(true)
        .read_buf_size(READ_BUF)
        .build_handler()
}

/// The dataset as a dav-server filesystem.
pub fn dav_filesystem(fs: Arc<DatasetFs>) -> Box<DavFs> {
    Box::new(DavFs { fs })
}

/// How a WebDAV server answers.
#[derive(Clone, Default)]
pub struct WebDavOptions {
    /// Host names besides addresses and `localhost` (see [`check_host`]).
    pub allowed_hosts: Vec<String>,
    /// Connections at once and the header-read timeout (slow clients).
    pub limits: aetherfs_serve::ConnectionLimits,
    /// Who may read: `None` serves everyone who connects.
    pub gate: Option<Arc<dyn Gate>>,
}

impl std::fmt::Debug for WebDavOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebDavOptions")
            .field("allowed_hosts", &self.allowed_hosts)
            .field("limits", &self.limits)
            .field("gate", &self.gate.is_some())
            .finish()
    }
}

/// Serves [`router`] on `listener` until `shutdown` completes, then lets
/// requests in flight finish.
pub async fn serve(
    fs: Arc<DatasetFs>,
    listener: tokio::net::TcpListener,
    opts: WebDavOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), "serving WebDAV");
    aetherfs_serve::serve(listener, router(fs, opts.allowed_hosts, opts.gate), None, opts.limits, shutdown).await
}

/// [`DatasetFs`] as a [`DavFileSystem`].
#[derive(Clone)]
pub struct DavFs {
    fs: Arc<DatasetFs>,
}

/// What a path resolved to.
struct Resolved {
    /// The node itself, never a symlink.
    attr: Attr,
    /// Its path inside the version, as names.
    canon: Vec<String>,
    /// Symlinks to directories the request path went through.
    dir_links: u32,
}

fn dav_err(e: FsError) -> DavError {
    match e {
        FsError::NotFound | FsError::NotDir | FsError::Stale | FsError::NotSymlink => DavError::NotFound,
        FsError::IsDir | FsError::ReadOnly | FsError::Invalid => DavError::Forbidden,
        FsError::Source(_) | FsError::BadSource(_) => {
            tracing::warn!(error = %aetherfs_util::one_line(&e), "WebDAV read failed");
            DavError::GeneralFailure
        }
    }
}

impl DavFs {
    /// Resolves `comps` starting in directory `cur` (at `canon`), following
    /// symlinks inside the dataset. Returns the final node.
    fn walk(
        &self,
        mut cur: Attr,
        canon: &mut Vec<String>,
        mut comps: VecDeque<String>,
        hops: &mut u32,
    ) -> Result<Attr, FsError> {
        while let Some(c) = comps.pop_front() {
            if cur.kind != Kind::Dir {
                return Err(FsError::NotFound);
            }
            match c.as_str() {
                "" | "." => {}
                ".." => {
                    // Above the root is outside the dataset.
                    canon.pop().ok_or(FsError::NotFound)?;
                    cur = self.fs.lookup(cur.ino, "..")?;
                }
                name => {
                    let child = self.fs.lookup(cur.ino, name)?;
                    if child.kind == Kind::Symlink {
                        *hops += 1;
                        let target = self.fs.readlink(child.ino)?;
                        if *hops > MAX_HOPS || target.starts_with('/') {
                            return Err(FsError::NotFound);
                        }
                        for part in target.split('/').rev() {
                            comps.push_front(part.to_string());
                        }
                    } else {
                        canon.push(c);
                        cur = child;
                    }
                }
            }
        }
        Ok(cur)
    }

    /// Resolves one name in directory `dir`, following symlinks; refuses a
    /// second symlink to a directory on the way from the root.
    fn step(&self, dir: &Resolved, name: &str) -> Result<Resolved, FsError> {
        let mut canon = dir.canon.clone();
        let mut hops = 0;
        let attr = self.walk(dir.attr.clone(), &mut canon, VecDeque::from([name.to_string()]), &mut hops)?;
        let dir_links = dir.dir_links + u32::from(hops > 0 && attr.kind == Kind::Dir);
        if dir_links > 1 {
            return Err(FsError::NotFound);
        }
        Ok(Resolved { attr, canon, dir_links })
    }

    fn resolve(&self, segs: &[&str]) -> Result<Resolved, FsError> {
        let mut at = Resolved { attr: self.fs.getattr(ROOT)?, canon: Vec::new(), dir_links: 0 };
        for &seg in segs {
            if seg == "." || seg == ".." {
                return Err(FsError::NotFound);
            }
            at = self.step(&at, seg)?;
        }
        Ok(at)
    }

    pub(crate) fn open_at(&self, segs: &[&str], options: &OpenOptions) -> FsResult<Box<dyn DavFile>> {
        if options.write || options.append || options.truncate || options.create || options.create_new {
            return Err(DavError::Forbidden);
        }
        let r = self.resolve(segs).map_err(dav_err)?;
        if r.attr.kind != Kind::File {
            return Err(DavError::Forbidden);
        }
        let meta = Meta::of(&r.attr);
        Ok(Box::new(File { fs: self.fs.clone(), ino: r.attr.ino, pos: 0, meta }) as Box<dyn DavFile>)
    }

    pub(crate) fn read_dir_at(&self, segs: &[&str]) -> FsResult<Vec<FsResult<Box<dyn DavDirEntry>>>> {
        let dir = self.resolve(segs).map_err(dav_err)?;
        if dir.attr.kind != Kind::Dir {
            return Err(DavError::Forbidden);
        }
        let listing = self.fs.readdir(dir.attr.ino, 0, usize::MAX).map_err(dav_err)?;
        let mut entries: Vec<FsResult<Box<dyn DavDirEntry>>> = Vec::with_capacity(listing.len());
        for e in listing {
            let attr = if e.attr.kind == Kind::Symlink {
                // Dangling, escaping or too deep: not listed.
                match self.step(&dir, &e.name) {
                    Ok(r) => r.attr,
                    Err(_) => continue,
                }
            } else {
                e.attr
            };
            entries.push(Ok(Box::new(Entry { name: e.name, meta: Meta::of(&attr) })));
        }
        Ok(entries)
    }

    pub(crate) fn metadata_at(&self, segs: &[&str]) -> FsResult<Box<dyn DavMetaData>> {
        let r = self.resolve(segs).map_err(dav_err)?;
        Ok(Box::new(Meta::of(&r.attr)) as Box<dyn DavMetaData>)
    }
}

/// A request path's names; `None` when one is not UTF-8 (no such node).
pub(crate) fn segments(path: &DavPath) -> Option<Vec<&str>> {
    path.as_bytes().split(|&b| b == b'/').filter(|s| !s.is_empty()).map(|s| std::str::from_utf8(s).ok()).collect()
}

impl DavFileSystem for DavFs {
    fn open<'a>(&'a self, path: &'a DavPath, options: OpenOptions) -> FsFuture<'a, Box<dyn DavFile>> {
        let r = segments(path).ok_or(DavError::NotFound).and_then(|s| self.open_at(&s, &options));
        futures::future::ready(r).boxed()
    }

    fn read_dir<'a>(&'a self, path: &'a DavPath, _meta: ReadDirMeta) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        let r = segments(path).ok_or(DavError::NotFound).and_then(|s| self.read_dir_at(&s));
        futures::future::ready(r.map(|e| Box::pin(futures::stream::iter(e)) as FsStream<Box<dyn DavDirEntry>>)).boxed()
    }

    fn metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        let r = segments(path).ok_or(DavError::NotFound).and_then(|s| self.metadata_at(&s));
        futures::future::ready(r).boxed()
    }
}

/// Metadata computed once from the core's attributes.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    len: u64,
    modified: SystemTime,
    dir: bool,
    exec: bool,
    etag: String,
}

impl Meta {
    /// A directory that is no node of a version (a catalog level).
    pub(crate) fn virtual_dir(etag: String) -> Meta {
        Meta { len: 0, modified: SystemTime::UNIX_EPOCH, dir: true, exec: false, etag }
    }

    fn of(a: &Attr) -> Meta {
        let dir = a.kind == Kind::Dir;
        Meta {
            len: if dir { 0 } else { a.size },
            modified: a.mtime,
            dir,
            exec: a.perm & 0o111 != 0,
            // Attr::digest is the file digest for files, the version's
            // digest for directories.
            etag: a.digest.hex(),
        }
    }
}

impl DavMetaData for Meta {
    fn len(&self) -> u64 {
        self.len
    }
    fn modified(&self) -> FsResult<SystemTime> {
        Ok(self.modified)
    }
    fn is_dir(&self) -> bool {
        self.dir
    }
    fn etag(&self) -> Option<String> {
        Some(self.etag.clone())
    }
    fn created(&self) -> FsResult<SystemTime> {
        Ok(self.modified)
    }
    fn status_changed(&self) -> FsResult<SystemTime> {
        Ok(self.modified)
    }
    fn executable(&self) -> FsResult<bool> {
        Ok(self.exec)
    }
}

pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) meta: Meta,
}

impl DavDirEntry for Entry {
    fn name(&self) -> Vec<u8> {
        self.name.as_bytes().to_vec()
    }
    fn metadata(&self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        futures::future::ready(Ok(Box::new(self.meta.clone()) as Box<dyn DavMetaData>)).boxed()
    }
    fn is_dir(&self) -> FsFuture<'_, bool> {
        futures::future::ready(Ok(self.meta.dir)).boxed()
    }
    fn is_file(&self) -> FsFuture<'_, bool> {
        futures::future::ready(Ok(!self.meta.dir)).boxed()
    }
    fn is_symlink(&self) -> FsFuture<'_, bool> {
        futures::future::ready(Ok(false)).boxed()
    }
}

/// An open file: reads go to the core at the file's own version, so a GET
/// that started before a version switch finishes on the bytes it started on.
struct File {
    fs: Arc<DatasetFs>,
    ino: u64,
    pos: u64,
    meta: Meta,
}

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("File").field("ino", &self.ino).field("pos", &self.pos).finish()
    }
}

impl DavFile for File {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        futures::future::ready(Ok(Box::new(self.meta.clone()) as Box<dyn DavMetaData>)).boxed()
    }

    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        async move {
            let count = u32::try_from(count).unwrap_or(u32::MAX).min(MAX_READ);
            let data = self.fs.read(self.ino, self.pos, count).await.map_err(dav_err)?;
            self.pos += data.len() as u64;
            Ok(data)
        }
        .boxed()
    }

    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        let to = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.meta.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let r = match to {
            Some(n) => {
                self.pos = n;
                Ok(n)
            }
            None => Err(DavError::GeneralFailure),
        };
        futures::future::ready(r).boxed()
    }

    fn write_buf(&mut self, _buf: Box<dyn bytes::Buf + Send>) -> FsFuture<'_, ()> {
        futures::future::ready(Err(DavError::Forbidden)).boxed()
    }

    fn write_bytes(&mut self, _buf: Bytes) -> FsFuture<'_, ()> {
        futures::future::ready(Err(DavError::Forbidden)).boxed()
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        futures::future::ready(Ok(())).boxed()
    }
}
