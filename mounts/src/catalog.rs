//! Many datasets in one WebDAV tree, for a server that holds them all (the
//! hub): `/<name…>/<tag>/…` and `/<name…>/@<digest>/…`, with the levels
//! above browsable (`/`, `/acme/`, `/acme/geoip/`, listing name segments,
//! then a dataset's tags and versions).
//!
//! What exists and who may see it is the [`Catalog`]'s business; this module
//! only maps paths. A dataset name that is a prefix of another (`a` and
//! `a/b`) is resolved longest first: `/a/b/latest/` is `a/b:latest`.

use std::sync::Arc;

use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, FsError as DavError, FsFuture, FsResult, FsStream, OpenOptions,
    ReadDirMeta,
};
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::DatasetFs;
use crate::webdav::{DavFs, Entry, Meta, segments};

/// What a catalog tree serves, for one caller.
pub trait Catalog: Send + Sync + 'static {
    /// Every dataset name the caller may read.
    fn datasets(&self) -> BoxFuture<'_, FsResult<Vec<String>>>;
    /// A dataset's references as directory names: its tags, and `@<digest>`
    /// for each stored version.
    fn references<'a>(&'a self, name: &'a str) -> BoxFuture<'a, FsResult<Vec<String>>>;
    /// The filesystem of the version `reference` (a tag or `@<digest>`)
    /// names; [`DavError::NotFound`] when there is none.
    fn version<'a>(&'a self, name: &'a str, reference: &'a str) -> BoxFuture<'a, FsResult<Arc<DatasetFs>>>;
    /// Whether the path's names start with a dataset that exists but the
    /// caller may not read: then the answer is 403, not 404.
    fn forbidden<'a>(&'a self, names: &'a [&'a str]) -> BoxFuture<'a, bool> {
        let _ = names;
        futures::future::ready(false).boxed()
    }
}

/// A [`Catalog`] as a dav-server filesystem.
#[derive(Clone)]
pub struct CatalogFs {
    catalog: Arc<dyn Catalog>,
}

impl CatalogFs {
    pub fn new(catalog: Arc<dyn Catalog>) -> Box<Self> {
        Box::new(Self { catalog })
    }
}

/// Where a path leads.
enum Place<'p> {
    /// A level above versions: the names listed under it.
    Dir { children: Vec<String> },
    /// Inside a version: its filesystem and the path within.
    Version { fs: Box<DavFs>, rest: Vec<&'p str> },
}

impl CatalogFs {
    async fn place<'p>(&self, segs: &'p [&'p str]) -> FsResult<Place<'p>> {
        let mut names = self.catalog.datasets().await?;
        names.sort();
        // Longest dataset name the path starts with, followed by a reference.
        for k in (1..segs.len()).rev() {
            let name = segs[..k].join("/");
            if names.binary_search(&name).is_ok() {
                let fs = self.catalog.version(&name, segs[k]).await?;
                return Ok(Place::Version { fs: crate::webdav::dav_filesystem(fs), rest: segs[k + 1..].to_vec() });
            }
        }
        if self.catalog.forbidden(segs).await {
            return Err(DavError::Forbidden);
        }
        let here = segs.join("/");
        let prefix = if here.is_empty() { String::new() } else { format!("{here}/") };
        let mut children: Vec<String> = names
            .iter()
            .filter_map(|n| n.strip_prefix(prefix.as_str()))
            .filter_map(|rest| rest.split('/').next())
            .map(str::to_string)
            .collect();
        let is_dataset = names.binary_search(&here).is_ok();
        if is_dataset {
            children.extend(self.catalog.references(&here).await?);
        }
        if children.is_empty() && !here.is_empty() && !is_dataset {
            return Err(DavError::NotFound);
        }
        children.sort();
        children.dedup();
        Ok(Place::Dir { children })
    }
}

fn dir_meta(path: &str) -> Meta {
    Meta::virtual_dir(aetherfs_format::Digest::of(path.as_bytes()).hex())
}

impl DavFileSystem for CatalogFs {
    fn open<'a>(&'a self, path: &'a DavPath, options: OpenOptions) -> FsFuture<'a, Box<dyn DavFile>> {
        async move {
            let segs = segments(path).ok_or(DavError::NotFound)?;
            match self.place(&segs).await? {
                Place::Version { fs, rest } => fs.open_at(&rest, &options),
                Place::Dir { .. } => Err(DavError::Forbidden),
            }
        }
        .boxed()
    }

    fn read_dir<'a>(&'a self, path: &'a DavPath, _meta: ReadDirMeta) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        async move {
            let segs = segments(path).ok_or(DavError::NotFound)?;
            let entries = match self.place(&segs).await? {
                Place::Version { fs, rest } => fs.read_dir_at(&rest)?,
                Place::Dir { children } => {
                    let base = segs.join("/");
                    children
                        .into_iter()
                        .map(|name| {
                            let meta = dir_meta(&format!("{base}/{name}"));
                            Ok(Box::new(Entry { name, meta }) as Box<dyn DavDirEntry>)
                        })
                        .collect()
                }
            };
            Ok(Box::pin(futures::stream::iter(entries)) as FsStream<Box<dyn DavDirEntry>>)
        }
        .boxed()
    }

    fn metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move {
            let segs = segments(path).ok_or(DavError::NotFound)?;
            match self.place(&segs).await? {
                Place::Version { fs, rest } => fs.metadata_at(&rest),
                Place::Dir { .. } => Ok(Box::new(dir_meta(&segs.join("/"))) as Box<dyn DavMetaData>),
            }
        }
        .boxed()
    }
}
