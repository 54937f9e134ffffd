//! Fakes for tests of the filesystem and of anything built on it: an
//! in-memory chunk source that counts what it serves, a fault injector, and
//! a builder that turns a local directory into a served version without a hub.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aetherfs_format::{
    ChunkLocation, ChunkParams, ChunkRef, Compression, Digest, Entry, EntryKind, FileEntry, Manifest, chunk_reader,
};
use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::source::{ChunkSource, SourceError};
use crate::version::Version;

/// Chunks held in memory, verified like a real source would.
#[derive(Default)]
pub struct MemorySource {
    chunks: HashMap<Digest, Bytes>,
    /// Chunks served (each chunk of each `read` call).
    pub served: AtomicU64,
    /// `read` calls.
    pub calls: AtomicU64,
}

impl MemorySource {
    pub fn insert(&mut self, data: Bytes) -> Digest {
        let d = Digest::of(&data);
        self.chunks.insert(d, data);
        d
    }
}

impl ChunkSource for MemorySource {
    fn read<'a>(
        &'a self,
        want: &'a [ChunkRef],
        _ahead: &'a [ChunkRef],
    ) -> BoxFuture<'a, Result<Vec<Bytes>, SourceError>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let out = want
            .iter()
            .map(|c| {
                self.served.fetch_add(1, Ordering::Relaxed);
                let b = self.chunks.get(&c.digest).cloned().ok_or(SourceError::NotFound(c.digest))?;
                if Digest::of(&b) != c.digest {
                    return Err(SourceError::Corrupt(c.digest));
                }
                Ok(b)
            })
            .collect();
        futures::future::ready(out).boxed()
    }
}

/// Wraps a source to make it slow or failing on demand.
pub struct FaultySource<S> {
    pub inner: S,
    pub fail: AtomicBool,
    pub delay_ms: AtomicU64,
}

impl<S> FaultySource<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, fail: AtomicBool::new(false), delay_ms: AtomicU64::new(0) }
    }
}

impl<S: ChunkSource> ChunkSource for FaultySource<S> {
    fn read<'a>(
        &'a self,
        want: &'a [ChunkRef],
        ahead: &'a [ChunkRef],
    ) -> BoxFuture<'a, Result<Vec<Bytes>, SourceError>> {
        async move {
            let delay = self.delay_ms.load(Ordering::Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if self.fail.load(Ordering::Relaxed) {
                return Err(SourceError::unavailable("injected failure"));
            }
            self.inner.read(want, ahead).await
        }
        .boxed()
    }
}

/// Builds a version of a local directory, as a push would describe it, with
/// its chunks in a [`MemorySource`]. Symlinks are kept, not followed.
pub fn version_of_dir(dir: &Path) -> std::io::Result<(Version, MemorySource, Manifest)> {
    let params = ChunkParams::default();
    let mut source = MemorySource::default();
    let mut manifest = Manifest::new(params);
    manifest.annotations.insert("created".into(), "2026-11-21T00:00:00Z".into());
    let pack = Digest::of(b"memory");
    let mut offset = 8u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut any = false;
        for e in std::fs::read_dir(&d)? {
            any = true;
            let p = e?.path();
            let rel = p
                .strip_prefix(dir)
                .map_err(std::io::Error::other)?
                .to_str()
                .ok_or_else(|| std::io::Error::other("non-UTF-8 name"))?
                .to_string();
            let meta = std::fs::symlink_metadata(&p)?;
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&p)?.to_string_lossy().into_owned();
                manifest.entries.push(Entry { path: rel, mode: 0o777, kind: EntryKind::Symlink { target } });
            } else if meta.is_dir() {
                stack.push(p);
            } else {
                let data = std::fs::read(&p)?;
                let fc = chunk_reader(&params, &data[..])?;
                let mut chunks = Vec::new();
                for c in fc.chunks {
                    let bytes =
                        Bytes::copy_from_slice(&data[c.offset as usize..(c.offset + u64::from(c.len)) as usize]);
                    source.insert(bytes);
                    chunks.push(ChunkRef {
                        digest: c.digest,
                        len: c.len,
                        location: ChunkLocation { pack, offset, stored_len: c.len, compression: Compression::None },
                    });
                    offset += u64::from(c.len);
                }
                manifest.entries.push(Entry { path: rel, mode, kind: EntryKind::File(FileEntry::new(chunks)) });
            }
        }
        if !any && d != dir {
            let rel = d.strip_prefix(dir).map_err(std::io::Error::other)?.to_string_lossy().into_owned();
            manifest.entries.push(Entry { path: rel, mode: 0o755, kind: EntryKind::Dir });
        }
    }
    manifest.sort();
    let bytes = manifest.encode().map_err(std::io::Error::other)?;
    let placement = aetherfs_format::Placement::of(&manifest, Digest::of(&bytes));
    let manifest = Manifest::decode(&bytes, &placement).map_err(std::io::Error::other)?;
    Ok((Version::new(Digest::of(&bytes), &manifest), source, manifest))
}

/// A ready-made filesystem over a directory, for front-end tests.
pub fn fs_of_dir(dir: &Path) -> std::io::Result<(Arc<crate::DatasetFs>, Arc<MemorySource>)> {
    let (version, source, _) = version_of_dir(dir)?;
    let source = Arc::new(source);
    Ok((Arc::new(crate::DatasetFs::new(version, source.clone())), source))
}
