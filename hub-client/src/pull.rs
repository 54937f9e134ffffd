//! The pull engine: materialize a version in a directory, moving only the
//! chunks the directory does not already hold.
//!
//! 1. Fetch the manifest and verify it against its digest.
//! 2. Index the directory: chunk every regular file already there with the
//!    manifest's parameters, except those whose stat matches the directory's
//!    stat cache ([`crate::stat_cache`]; refreshed at the end for the files
//!    indexed and left alone). Files identical to the version are left
//!    alone; every other chunk found becomes a local source.
//! 3. Plan: files (in manifest order) are grouped into batches of about
//!    16 MiB to fetch; a batch's remote chunks are coalesced into range reads
//!    (see [`crate::fetch`]). A chunk needed twice in a batch is fetched once.
//! 4. Run a few batches at once. In each, an async task streams the range
//!    reads in order with bounded look-ahead into a blocking writer, which
//!    writes each file to a temporary file beside its destination, verifies
//!    every chunk (remote or local) against its digest, checks that what was
//!    written is the file's chunk list (which its digest is derived from)
//!    and fills its size and sets the mode; once the batch is written its
//!    files join the [`Landing`], which makes them durable with one syncfs
//!    per ~512 MiB or 16,384 files (across batches) and only then renames
//!    them into place. A failure leaves the old file intact and removes the
//!    temporary one.
//! 5. Symlinks and empty directories, directory modes, then (optionally)
//!    removal of entries the version does not have.
//!
//! A changed file whose chunks mostly sit where they were in the old file at
//! its path (a database updated in place) is cloned from that file (a
//! reflink where the filesystem shares extents, else `copy_file_range`) and
//! patched where chunks differ; the chunks it kept are then read back and
//! verified, since they were never read.
//!
//! [`pull_into`] can instead build a version in a fresh directory from a
//! *base*: another directory (the previous version, say) is indexed in step
//! 2, files identical there (same path, bytes and mode) are hard-linked
//! rather than written, and the base's other chunks are copied locally.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, Permissions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aetherfs_format::pack::decode_chunk;
use aetherfs_format::{ChunkRef, Digest, EntryKind, Manifest, Name, ancestors, file_digest};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use tokio::sync::mpsc;

use crate::client::HubClient;
use crate::error::ClientError;
use crate::fetch::{ChunkWant, RangeRead, coalesce};
use crate::hashing::hash_files;
use crate::push::Progress;
use crate::stat_cache::{StatCache, now_ns};
use crate::walk::{FileStat, LocalKind, Strictness, walk};

const TMP_PREFIX: &str = ".aetherfs-tmp-";
const BATCH_FETCH_BYTES: u64 = 16 << 20;
const BATCH_MAX_FILES: usize = 512;
/// Written bytes, or files, waiting for their names that make one syncfs.
const LAND_BYTES: u64 = 512 << 20;
const LAND_FILES: usize = 16_384;

#[derive(Clone, Debug)]
pub struct PullOptions {
    /// Batches of files written at once.
    pub batches: usize,
    /// Range reads in flight per batch.
    pub lookahead: usize,
    /// Threads indexing the files already in the directory.
    pub threads: usize,
    /// Remove entries the version does not have.
    pub delete: bool,
    /// Make files durable (one syncfs per ~512 MiB or 16,384 files) before
    /// renaming them into place.
    pub fsync: bool,
    /// Files get their mode without write bits (a read-only copy whose
    /// files may be hard-linked into later versions).
    pub read_only: bool,
    /// Directory of stat caches ([`crate::stat_cache`]), used when pulling
    /// into a directory in place; `None` hashes every file there.
    pub stat_cache: Option<PathBuf>,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            batches: 4,
            lookahead: 4,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            delete: false,
            fsync: true,
            read_only: false,
            stat_cache: None,
        }
    }
}

#[derive(Clone, Debug)]
pub enum PullEvent {
    Resolved {
        digest: Digest,
        files: u64,
        bytes: u64,
    },
    /// Incremental: bytes of existing files indexed.
    Indexed {
        bytes: u64,
    },
    Planned {
        fetch_bytes: u64,
        reuse_bytes: u64,
        unchanged_files: u64,
    },
    /// Incremental: bytes received from the hub.
    Fetched {
        bytes: u64,
    },
    /// A file was written.
    Written {
        path: String,
    },
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PullReport {
    pub name: String,
    pub digest: String,
    pub files: u64,
    pub bytes: u64,
    pub files_written: u64,
    /// Files already right (a pull in place), or hard-linked from the base.
    pub files_unchanged: u64,
    /// Bytes received from the hub (stored form, so after compression).
    pub fetched_bytes: u64,
    pub range_requests: u64,
    /// Plaintext bytes copied from files already in the directory.
    pub reused_bytes: u64,
    /// Changed files made by cloning the old file at their path (a reflink
    /// where the filesystem can) and patching the chunks that differ.
    pub files_cloned: u64,
    pub removed: u64,
    /// Entries in the directory that the version does not have, left in place.
    pub extraneous: u64,
    /// Bytes of files already in the directory read and hashed to index it.
    pub indexed_bytes: u64,
    /// Files already in the directory whose chunks the stat cache knew.
    pub stat_cache_hits: u64,
}

/// What indexing the directory found.
struct Indexed {
    unchanged: Arc<HashSet<String>>,
    local: HashMap<Digest, LocalChunk>,
    hashed_bytes: u64,
    hits: u64,
    /// Every file indexed, with its stat and chunks, for the stat cache.
    files: Vec<(String, FileStat, aetherfs_format::FileChunks)>,
}

#[derive(Clone)]
struct LocalChunk {
    path: PathBuf,
    offset: u64,
}

enum Source {
    /// The next chunk of the batch's range stream.
    Remote,
    /// Fetched earlier in this batch.
    Again,
    Local(LocalChunk),
    /// Already at this offset of the file the new one is cloned from.
    InPlace,
}

struct PlannedFile {
    path: String,
    mode: u32,
    digest: Digest,
    size: u64,
    /// The older file at this path, cloned (reflink where the filesystem
    /// can, else copied in the kernel) and patched where chunks differ,
    /// when most of its chunks are where the new file wants them.
    clone_from: Option<PathBuf>,
    chunks: Vec<(ChunkRef, Source)>,
}

struct Batch {
    files: Vec<PlannedFile>,
    ranges: Vec<RangeRead>,
    /// Digests needed again after their first fetch in this batch.
    keep: HashSet<Digest>,
}

struct Counters {
    fetched: AtomicU64,
    requests: AtomicU64,
    reused: AtomicU64,
    written: AtomicU64,
    cloned: AtomicU64,
}

/// Pulls `name@digest` into `dir`.
pub async fn pull(
    client: &HubClient,
    name: &Name,
    digest: &Digest,
    dir: &Path,
    opts: &PullOptions,
    progress: Progress<PullEvent>,
) -> Result<PullReport, ClientError> {
    // Garbage collection may move the version's chunks while we read them;
    // once the old pack is gone, a fresh placement says where they went.
    // What was written already is reused by the next attempt.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (manifest, _) = client.get_manifest(name, digest).await?;
        match pull_into(client, name, digest, Arc::new(manifest), dir, None, opts, progress.clone()).await {
            Err(ClientError::Api { status: 404, code, .. }) if code == "pack_not_found" && attempt < 3 => {
                tracing::info!(%name, %digest, "a pack was collected during the pull; fetching the new placement");
            }
            other => return other,
        }
    }
}

/// Writes `manifest` (the verified manifest of `name@digest`) into `dir`.
/// With `base`, `dir` should be new: chunks come from the files under
/// `base` where they can, and base files identical to the version's (same
/// path, bytes and final mode) are hard-linked, costing no write.
#[allow(clippy::too_many_arguments)]
pub async fn pull_into(
    client: &HubClient,
    name: &Name,
    digest: &Digest,
    manifest: Arc<Manifest>,
    dir: &Path,
    base: Option<&Path>,
    opts: &PullOptions,
    progress: Progress<PullEvent>,
) -> Result<PullReport, ClientError> {
    let stats = manifest.stats();
    progress(PullEvent::Resolved { digest: *digest, files: stats.files, bytes: stats.bytes });
    fs::create_dir_all(dir).map_err(|e| ClientError::io(dir.display(), e))?;

    // The stat cache serves a pull in place (not one from a base).
    let started_ns = now_ns();
    let cache: Option<(PathBuf, PathBuf, Arc<StatCache>)> = match (&opts.stat_cache, base) {
        (Some(cache_dir), None) => fs::canonicalize(dir).ok().map(|abs| {
            let (c, err) = StatCache::load(cache_dir, &abs, manifest.chunking);
            if let Some(e) = err {
                tracing::warn!("{e}");
            }
            (cache_dir.clone(), abs, Arc::new(c))
        }),
        _ => None,
    };
    let (unchanged, local, hashed_bytes, hits, indexed_files) = {
        let indexed = base.unwrap_or(dir).to_path_buf();
        let (manifest, progress, threads, read_only) =
            (manifest.clone(), progress.clone(), opts.threads, opts.read_only);
        let linking = base.is_some();
        let cache = cache.as_ref().map(|c| c.2.clone());
        tokio::task::spawn_blocking(move || {
            let Indexed { unchanged, local, hashed_bytes, hits, files } =
                index_local(&indexed, &manifest, threads, &progress, cache.as_deref())?;
            // A hard link shares the inode, so its mode must already be right.
            let unchanged = if linking {
                let same_mode = |e: &&aetherfs_format::Entry| {
                    unchanged.contains(&e.path)
                        && fs::symlink_metadata(indexed.join(&e.path))
                            .is_ok_and(|m| m.permissions().mode() & 0o7777 == file_mode(e.mode, read_only))
                };
                Arc::new(manifest.entries.iter().filter(same_mode).map(|e| e.path.clone()).collect())
            } else {
                unchanged
            };
            Ok::<_, ClientError>((unchanged, local, hashed_bytes, hits, files))
        })
        .await
        .map_err(|e| ClientError::Invalid(format!("index task failed: {e}")))??
    };

    let (batches, fetch_bytes, reuse_bytes) = plan(&manifest, &unchanged, &local, base.unwrap_or(dir), opts.read_only);
    progress(PullEvent::Planned { fetch_bytes, reuse_bytes, unchanged_files: unchanged.len() as u64 });

    let counters = Arc::new(Counters {
        fetched: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        reused: AtomicU64::new(0),
        written: AtomicU64::new(0),
        cloned: AtomicU64::new(0),
    });
    let landing = Arc::new(Landing::new(dir, opts.fsync));
    let fetched = stream::iter(batches)
        .map(|b| run_batch(client, name, dir, b, opts, landing.clone(), counters.clone(), progress.clone()))
        .buffer_unordered(opts.batches.max(1))
        .try_collect::<Vec<()>>()
        .await;
    // Files written before a failure are complete and verified: they land too.
    let landed = {
        let (landing, counters, progress) = (landing.clone(), counters.clone(), progress.clone());
        tokio::task::spawn_blocking(move || landing.finish(&counters, &progress))
            .await
            .map_err(|e| ClientError::Invalid(format!("landing task failed: {e}")))?
    };
    fetched?;
    landed?;

    let (dir2, manifest2, unchanged2, delete, read_only) =
        (dir.to_path_buf(), manifest.clone(), unchanged.clone(), opts.delete, opts.read_only);
    let base = base.map(Path::to_path_buf);
    let (removed, extraneous) = tokio::task::spawn_blocking(move || {
        if let Some(base) = &base {
            link_unchanged(base, &dir2, &unchanged2)?;
        }
        let done = finish_tree(&dir2, &manifest2, &unchanged2, delete, read_only)?;
        // Remember the files indexed that the pull left as they were (those
        // it wrote are indexed, and remembered, next time).
        if let Some((cache_dir, abs, old)) = cache {
            let written: HashSet<&str> = manifest2
                .entries
                .iter()
                .filter(|e| matches!(e.kind, EntryKind::File(_)) && !unchanged2.contains(&e.path))
                .map(|e| e.path.as_str())
                .collect();
            let mut new = StatCache::new(&abs, manifest2.chunking);
            for (path, stat, fc) in &indexed_files {
                let still = fs::symlink_metadata(dir2.join(path)).is_ok_and(|m| FileStat::of(&m) == *stat);
                if written.contains(path.as_str()) || !still {
                    continue;
                }
                if old.lookup(path, stat).is_some() {
                    new.keep_from(&old, path);
                } else {
                    new.insert(path, *stat, started_ns, fc);
                }
            }
            if let Err(e) = new.save(&cache_dir) {
                tracing::warn!("cannot save the stat cache in {}: {e}", cache_dir.display());
            }
        }
        Ok::<_, ClientError>(done)
    })
    .await
    .map_err(|e| ClientError::Invalid(format!("finish task failed: {e}")))??;

    Ok(PullReport {
        name: name.to_string(),
        digest: digest.to_string(),
        files: stats.files,
        bytes: stats.bytes,
        files_written: counters.written.load(Ordering::Relaxed),
        files_unchanged: unchanged.len() as u64,
        fetched_bytes: counters.fetched.load(Ordering::Relaxed),
        range_requests: counters.requests.load(Ordering::Relaxed),
        reused_bytes: counters.reused.load(Ordering::Relaxed),
        files_cloned: counters.cloned.load(Ordering::Relaxed),
        removed,
        extraneous,
        indexed_bytes: hashed_bytes,
        stat_cache_hits: hits,
    })
}

/// The mode a file is written with.
fn file_mode(mode: u32, read_only: bool) -> u32 {
    if read_only { mode & 0o555 } else { mode }
}

/// Hard-links each of `paths` from `base` into `dir`; where the filesystem
/// refuses (another device, too many links), copies it instead.
fn link_unchanged(base: &Path, dir: &Path, paths: &HashSet<String>) -> Result<(), ClientError> {
    for p in paths {
        prepare_parent(dir, p)?;
        let (from, to) = (base.join(p), dir.join(p));
        if fs::hard_link(&from, &to).is_err() {
            fs::copy(&from, &to).map_err(|e| ClientError::io(p, e))?;
        }
    }
    Ok(())
}

/// Chunks the files already in `dir`. Returns the manifest paths whose file
/// is already exactly right, and where every other chunk can be found.
fn index_local(
    dir: &Path,
    manifest: &Manifest,
    threads: usize,
    progress: &Progress<PullEvent>,
    cache: Option<&StatCache>,
) -> Result<Indexed, ClientError> {
    let wanted: HashMap<&str, (u64, Digest)> = manifest
        .entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::File(f) => Some((e.path.as_str(), (f.size(), f.digest()))),
            _ => None,
        })
        .collect();
    let needed: HashSet<Digest> = manifest.unique_chunks().into_keys().collect();
    let mut files: Vec<(String, FileStat)> = walk(dir, Strictness::Skip)?
        .into_iter()
        .filter_map(|e| match e.kind {
            LocalKind::File { size } if size > 0 && !file_name(&e.path).starts_with(TMP_PREFIX) => {
                Some((e.path, e.stat))
            }
            _ => None,
        })
        .collect();
    // Files the stat cache knows are not read.
    let mut known: Vec<(String, FileStat, Result<aetherfs_format::FileChunks, ClientError>)> = Vec::new();
    if let Some(cache) = cache {
        files.retain(|(path, stat)| match cache.lookup(path, stat) {
            Some(fc) => {
                known.push((path.clone(), *stat, Ok(fc)));
                false
            }
            None => true,
        });
    }
    let hits = known.len() as u64;
    let list: Vec<(String, u64)> = files.iter().map(|(p, s)| (p.clone(), s.size)).collect();
    let hashed_bytes = list.iter().map(|f| f.1).sum();
    let on_bytes = |bytes| progress(PullEvent::Indexed { bytes });
    let results = hash_files(dir, &list, &manifest.chunking, threads, false, &on_bytes);
    known.extend(files.into_iter().zip(results).map(|((p, s), r)| (p, s, r)));
    let mut unchanged = HashSet::new();
    let mut local = HashMap::new();
    let mut indexed = Vec::new();
    for (path, stat, r) in known {
        let size = stat.size;
        // Unreadable files are simply not reused.
        let Ok(fc) = r else { continue };
        if wanted.get(path.as_str()) == Some(&(size, fc.digest)) {
            unchanged.insert(path.clone());
        }
        let full = dir.join(&path);
        for c in &fc.chunks {
            if needed.contains(&c.digest) {
                local.entry(c.digest).or_insert_with(|| LocalChunk { path: full.clone(), offset: c.offset });
            }
        }
        indexed.push((path, stat, fc));
    }
    // Empty files are always "unchanged" when an empty file is there already.
    for e in &manifest.entries {
        if let EntryKind::File(f) = &e.kind
            && f.size() == 0
            && fs::symlink_metadata(dir.join(&e.path)).is_ok_and(|m| m.is_file() && m.len() == 0)
        {
            unchanged.insert(e.path.clone());
        }
    }
    Ok(Indexed { unchanged: Arc::new(unchanged), local, hashed_bytes, hits, files: indexed })
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn plan(
    manifest: &Manifest,
    unchanged: &HashSet<String>,
    local: &HashMap<Digest, LocalChunk>,
    indexed: &Path,
    read_only: bool,
) -> (Vec<Batch>, u64, u64) {
    let mut batches = Vec::new();
    let (mut files, mut wants, mut seen, mut keep) = (Vec::new(), Vec::new(), HashSet::new(), HashSet::new());
    let (mut batch_bytes, mut fetch_bytes, mut reuse_bytes) = (0u64, 0u64, 0u64);
    let mut flush = |files: &mut Vec<PlannedFile>,
                     wants: &mut Vec<ChunkWant>,
                     seen: &mut HashSet<Digest>,
                     keep: &mut HashSet<Digest>| {
        if !files.is_empty() {
            batches.push(Batch {
                files: std::mem::take(files),
                ranges: coalesce(std::mem::take(wants)),
                keep: std::mem::take(keep),
            });
        }
        seen.clear();
    };
    for e in &manifest.entries {
        let EntryKind::File(f) = &e.kind else { continue };
        let (chunks, size) = (f.chunks(), f.size());
        if unchanged.contains(&e.path) {
            continue;
        }
        // Chunks already at their offset in the old file of the same path.
        let old = indexed.join(&e.path);
        let mut offset = 0u64;
        let in_place: Vec<bool> = chunks
            .iter()
            .map(|c| {
                let here = local.get(&c.digest).is_some_and(|l| l.offset == offset && l.path == old);
                offset += u64::from(c.len);
                here
            })
            .collect();
        let in_place_bytes: u64 = chunks.iter().zip(&in_place).filter(|x| *x.1).map(|x| u64::from(x.0.len)).sum();
        let clone = size > 0 && in_place_bytes * 2 >= size;
        let mut planned = Vec::with_capacity(chunks.len());
        for (c, here) in chunks.iter().zip(in_place) {
            let source = if clone && here {
                reuse_bytes += u64::from(c.len);
                Source::InPlace
            } else if let Some(l) = local.get(&c.digest) {
                reuse_bytes += u64::from(c.len);
                Source::Local(l.clone())
            } else if seen.contains(&c.digest) {
                keep.insert(c.digest);
                Source::Again
            } else {
                seen.insert(c.digest);
                wants.push(ChunkWant { digest: c.digest, len: c.len, location: c.location });
                batch_bytes += u64::from(c.location.stored_len);
                fetch_bytes += u64::from(c.location.stored_len);
                Source::Remote
            };
            planned.push((*c, source));
        }
        let mode = file_mode(e.mode, read_only);
        let clone_from = clone.then_some(old);
        files.push(PlannedFile { path: e.path.clone(), mode, digest: f.digest(), size, clone_from, chunks: planned });
        if batch_bytes >= BATCH_FETCH_BYTES || files.len() >= BATCH_MAX_FILES {
            flush(&mut files, &mut wants, &mut seen, &mut keep);
            batch_bytes = 0;
        }
    }
    flush(&mut files, &mut wants, &mut seen, &mut keep);
    (batches, fetch_bytes, reuse_bytes)
}

#[allow(clippy::too_many_arguments)]
async fn run_batch(
    client: &HubClient,
    name: &Name,
    dir: &Path,
    batch: Batch,
    opts: &PullOptions,
    landing: Arc<Landing>,
    counters: Arc<Counters>,
    progress: Progress<PullEvent>,
) -> Result<(), ClientError> {
    let lookahead = opts.lookahead.max(1);
    let (tx, rx) = mpsc::channel::<Result<(RangeRead, Bytes), ClientError>>(lookahead);
    let ranges = batch.ranges.clone();
    let fetcher = {
        let (client, counters, progress, name) = (client.clone(), counters.clone(), progress.clone(), name.clone());
        async move {
            let mut s = stream::iter(ranges)
                .map(|r| {
                    let (client, name) = (client.clone(), name.clone());
                    async move {
                        let data = client.read_pack_range(&name, &r.pack, r.offset, r.len).await?;
                        Ok::<_, ClientError>((r, data))
                    }
                })
                .buffered(lookahead);
            while let Some(item) = s.next().await {
                if let Ok((r, _)) = &item {
                    counters.fetched.fetch_add(r.len, Ordering::Relaxed);
                    counters.requests.fetch_add(1, Ordering::Relaxed);
                    progress(PullEvent::Fetched { bytes: r.len });
                }
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        }
    };
    let writer = {
        let (dir, client, name) = (dir.to_path_buf(), client.clone(), name.clone());
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let mut w = BatchWriter { rx, current: None, kept: HashMap::new(), handle, client, name };
            w.write_all(&dir, batch.files, &batch.keep, &landing, &counters, &progress)
        })
    };
    let (_, written) = tokio::join!(fetcher, writer);
    written.map_err(|e| ClientError::Invalid(format!("writer task failed: {e}")))?
}

/// A file written and verified under a temporary name.
struct Written {
    tmp: tempfile::TempPath,
    dest: PathBuf,
    path: String,
    size: u64,
}

/// Files waiting for their names. They get them together once their data is
/// durable: one syncfs per [`LAND_BYTES`] or [`LAND_FILES`] across batches,
/// rather than an fdatasync (a journal commit) per file, which made a pull
/// of 100,000 small files wait on 100,000 commits, or a syncfs per batch
/// (200 of them). Either way no file reaches its name before its data is on
/// disk. Without fsync, files are renamed as soon as they are written.
struct Landing {
    dir: PathBuf,
    fsync: bool,
    waiting: parking_lot::Mutex<(Vec<Written>, u64)>,
}

impl Landing {
    fn new(dir: &Path, fsync: bool) -> Self {
        Self { dir: dir.to_path_buf(), fsync, waiting: parking_lot::Mutex::new((Vec::new(), 0)) }
    }

    fn hand_over(
        &self,
        files: Vec<Written>,
        counters: &Counters,
        progress: &Progress<PullEvent>,
    ) -> Result<(), ClientError> {
        let due = {
            let mut w = self.waiting.lock();
            w.1 += files.iter().map(|f| f.size).sum::<u64>();
            w.0.extend(files);
            if !self.fsync || w.1 >= LAND_BYTES || w.0.len() >= LAND_FILES {
                w.1 = 0;
                std::mem::take(&mut w.0)
            } else {
                Vec::new()
            }
        };
        self.land(due, counters, progress)
    }

    /// Lands whatever waits (the pull's end, or its failure).
    fn finish(&self, counters: &Counters, progress: &Progress<PullEvent>) -> Result<(), ClientError> {
        let due = std::mem::take(&mut self.waiting.lock().0);
        self.land(due, counters, progress)
    }

    fn land(
        &self,
        files: Vec<Written>,
        counters: &Counters,
        progress: &Progress<PullEvent>,
    ) -> Result<(), ClientError> {
        if files.is_empty() {
            return Ok(());
        }
        if self.fsync {
            let root = File::open(&self.dir).map_err(|e| ClientError::io(".", e))?;
            rustix::fs::syncfs(&root).map_err(|e| ClientError::io(".", e.into()))?;
        }
        for f in files {
            let io = |e| ClientError::io(&f.path, e);
            if fs::symlink_metadata(&f.dest).is_ok_and(|m| m.is_dir()) {
                fs::remove_dir_all(&f.dest).map_err(io)?;
            }
            f.tmp.persist(&f.dest).map_err(|e| io(e.error))?;
            counters.written.fetch_add(1, Ordering::Relaxed);
            progress(PullEvent::Written { path: f.path });
        }
        Ok(())
    }
}

enum RebuildError {
    Io(std::io::Error),
    Client(ClientError),
}

impl From<ClientError> for RebuildError {
    fn from(e: ClientError) -> Self {
        RebuildError::Client(e)
    }
}

struct BatchWriter {
    rx: mpsc::Receiver<Result<(RangeRead, Bytes), ClientError>>,
    /// The range being consumed, and how many of its chunks are used.
    current: Option<(RangeRead, Bytes, usize)>,
    kept: HashMap<Digest, Arc<Vec<u8>>>,
    handle: tokio::runtime::Handle,
    client: HubClient,
    /// The dataset packs are read through.
    name: Name,
}

impl BatchWriter {
    fn write_all(
        &mut self,
        dir: &Path,
        files: Vec<PlannedFile>,
        keep: &HashSet<Digest>,
        landing: &Landing,
        counters: &Counters,
        progress: &Progress<PullEvent>,
    ) -> Result<(), ClientError> {
        let mut written = Vec::with_capacity(files.len());
        for f in files {
            let tmp = self.write_file(dir, &f, keep, counters)?;
            written.push(Written { tmp, dest: dir.join(&f.path), path: f.path, size: f.size });
        }
        landing.hand_over(written, counters, progress)
    }

    fn write_file(
        &mut self,
        dir: &Path,
        f: &PlannedFile,
        keep: &HashSet<Digest>,
        counters: &Counters,
    ) -> Result<tempfile::TempPath, ClientError> {
        let parent = prepare_parent(dir, &f.path)?;
        let io = |e| ClientError::io(&f.path, e);
        let tmp = tempfile::Builder::new().prefix(TMP_PREFIX).tempfile_in(&parent).map_err(io)?;
        let cloned = match &f.clone_from {
            Some(from) => clone_file(from, tmp.as_file(), f.size).map_err(io)?,
            None => false,
        };
        if cloned {
            counters.cloned.fetch_add(1, Ordering::Relaxed);
        }
        let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file());
        let mut offset = 0u64;
        for (c, source) in &f.chunks {
            let at = offset;
            offset += u64::from(c.len);
            let plain: Arc<Vec<u8>> = match source {
                Source::InPlace if cloned => {
                    counters.reused.fetch_add(u64::from(c.len), Ordering::Relaxed);
                    continue;
                }
                Source::Remote => {
                    let p = Arc::new(self.next_remote(c, &f.path)?);
                    if keep.contains(&c.digest) {
                        self.kept.insert(c.digest, p.clone());
                    }
                    p
                }
                Source::Again => match self.kept.get(&c.digest) {
                    Some(p) => p.clone(),
                    None => Arc::new(self.fetch_one(c, &f.path)?),
                },
                // The clone failed: read the chunk from the old file like any local one.
                Source::InPlace => {
                    let l = LocalChunk { path: f.clone_from.clone().unwrap_or_default(), offset: at };
                    Arc::new(self.read_local(&l, c, &f.path)?)
                }
                Source::Local(l) => {
                    let p = Arc::new(self.read_local(l, c, &f.path)?);
                    counters.reused.fetch_add(u64::from(c.len), Ordering::Relaxed);
                    p
                }
            };
            if cloned {
                // Patch the clone where it differs.
                tmp.as_file().write_all_at(&plain, at).map_err(io)?;
            } else {
                out.write_all(&plain).map_err(io)?;
            }
        }
        out.flush().map_err(io)?;
        drop(out);
        // A clone's unchanged chunks were never read: read them back, and if
        // the old file was not what its index said, build it chunk by chunk.
        if cloned && !kept_chunks_intact(tmp.as_file(), f).map_err(io)? {
            tracing::warn!(path = %f.path, "the file cloned from differs from its index; rebuilding from chunks");
            self.rebuild(tmp.as_file(), f).map_err(|e| match e {
                RebuildError::Io(e) => io(e),
                RebuildError::Client(e) => e,
            })?;
        }
        // Every chunk written was checked against its digest on the way. The
        // file's digest is derived from its chunk list, so what is left is
        // that the chunks written are that list and fill the file exactly.
        let written = file_digest(offset, f.chunks.iter().map(|(c, _)| (c.digest, c.len)));
        let len = tmp.as_file().metadata().map_err(io)?.len();
        if written != f.digest || offset != f.size || len != f.size {
            return Err(ClientError::Integrity { path: f.path.clone(), what: "file", digest: f.digest });
        }
        tmp.as_file().set_permissions(Permissions::from_mode(f.mode)).map_err(io)?;
        // Closed here: a batch may hold hundreds of written files.
        Ok(tmp.into_temp_path())
    }

    /// Writes `f` into `out` from scratch, every chunk verified (read from
    /// disk where it checks out, else fetched).
    fn rebuild(&self, out: &File, f: &PlannedFile) -> Result<(), RebuildError> {
        out.set_len(0).map_err(RebuildError::Io)?;
        let mut offset = 0u64;
        for (c, source) in &f.chunks {
            let plain = match source {
                Source::InPlace => {
                    let l = LocalChunk { path: f.clone_from.clone().unwrap_or_default(), offset };
                    self.read_local(&l, c, &f.path)?
                }
                Source::Local(l) => self.read_local(l, c, &f.path)?,
                Source::Remote | Source::Again => match self.kept.get(&c.digest) {
                    Some(p) => p.to_vec(),
                    None => self.fetch_one(c, &f.path)?,
                },
            };
            out.write_all_at(&plain, offset).map_err(RebuildError::Io)?;
            offset += u64::from(c.len);
        }
        Ok(())
    }

    /// The next chunk from the range stream, verified.
    fn next_remote(&mut self, c: &ChunkRef, path: &str) -> Result<Vec<u8>, ClientError> {
        if self.current.as_ref().is_none_or(|(r, _, used)| *used >= r.chunks.len()) {
            let next =
                self.rx.blocking_recv().ok_or_else(|| ClientError::Invalid("range stream ended early".into()))??;
            self.current = Some((next.0, next.1, 0));
        }
        let Some((range, data, used)) = self.current.as_mut() else {
            return Err(ClientError::Invalid("no range to read".into()));
        };
        let want = range.chunks[*used];
        *used += 1;
        if want.digest != c.digest {
            return Err(ClientError::Invalid(format!("{path}: fetch plan out of order")));
        }
        let stored = range.slice(data, &want);
        decode_chunk(stored, c.len, c.location.compression, &c.digest).map_err(|_| ClientError::Integrity {
            path: path.to_string(),
            what: "chunk",
            digest: c.digest,
        })
    }

    fn fetch_one(&self, c: &ChunkRef, path: &str) -> Result<Vec<u8>, ClientError> {
        self.handle.block_on(self.client.read_chunk(&self.name, &c.digest, c.len, &c.location)).map_err(|e| match e {
            ClientError::Format(_) => {
                ClientError::Integrity { path: path.to_string(), what: "chunk", digest: c.digest }
            }
            e => e,
        })
    }

    /// A chunk from a file already on disk; if that file changed since it
    /// was indexed, the chunk is fetched instead.
    fn read_local(&self, l: &LocalChunk, c: &ChunkRef, path: &str) -> Result<Vec<u8>, ClientError> {
        let mut buf = vec![0u8; c.len as usize];
        let ok = File::open(&l.path).and_then(|f| f.read_exact_at(&mut buf, l.offset)).is_ok();
        if ok && Digest::of(&buf) == c.digest {
            return Ok(buf);
        }
        self.fetch_one(c, path)
    }
}

/// Makes `to` a copy of `from` cut or extended to `size` bytes: a reflink
/// where the filesystem shares extents (btrfs, XFS), else a copy inside the
/// kernel. `false` when `from` cannot be read (the caller builds the file
/// from chunks instead).
fn clone_file(from: &Path, to: &File, size: u64) -> std::io::Result<bool> {
    let Ok(src) = File::open(from) else { return Ok(false) };
    if rustix::fs::ioctl_ficlone(to, &src).is_err() {
        let len = src.metadata()?.len();
        let mut done = 0u64;
        while done < len {
            let (mut off_in, mut off_out) = (done, done);
            let want = usize::try_from(len - done).unwrap_or(usize::MAX).min(1 << 30);
            match rustix::fs::copy_file_range(&src, Some(&mut off_in), to, Some(&mut off_out), want) {
                Ok(0) => break,
                Ok(n) => done += n as u64,
                // No copy_file_range here (or across these filesystems): copy in user space.
                Err(_) if done == 0 => {
                    std::io::copy(&mut &src, &mut &*to)?;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    to.set_len(size)?;
    Ok(true)
}

/// Whether a patched clone holds, at each offset it kept from the old file,
/// the chunk the plan says is there (the patched chunks were verified before
/// they were written). `false` on any mismatch or short read.
fn kept_chunks_intact(file: &File, f: &PlannedFile) -> std::io::Result<bool> {
    let mut buf = Vec::new();
    let mut offset = 0u64;
    for (c, source) in &f.chunks {
        let at = offset;
        offset += u64::from(c.len);
        if !matches!(source, Source::InPlace) {
            continue;
        }
        buf.resize(c.len as usize, 0);
        match file.read_exact_at(&mut buf, at) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(e),
        }
        if Digest::of(&buf) != c.digest {
            return Ok(false);
        }
    }
    Ok(file.metadata()?.len() == f.size)
}

/// Makes sure every parent directory of `rel` is a real directory (not a
/// file, nor a symlink that could lead outside `dir`) and returns the parent.
fn prepare_parent(dir: &Path, rel: &str) -> Result<PathBuf, ClientError> {
    let mut parent = dir.to_path_buf();
    for a in ancestors(rel) {
        let p = dir.join(a);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                fs::remove_file(&p).map_err(|e| ClientError::io(a, e))?;
                mkdir(&p, a)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => mkdir(&p, a)?,
            Err(e) => return Err(ClientError::io(a, e)),
        }
        parent = p;
    }
    Ok(parent)
}

fn mkdir(p: &Path, rel: &str) -> Result<(), ClientError> {
    match fs::create_dir(p) {
        Ok(()) => Ok(()),
        // Another batch made it first.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && p.is_dir() => Ok(()),
        Err(e) => Err(ClientError::io(rel, e)),
    }
}

/// Symlinks, directories and their modes, unchanged files' modes, and the
/// removal (or count) of entries the version lacks.
fn finish_tree(
    dir: &Path,
    manifest: &Manifest,
    unchanged: &HashSet<String>,
    delete: bool,
    read_only: bool,
) -> Result<(u64, u64), ClientError> {
    let io = |p: &str, e| ClientError::io(p, e);
    for e in &manifest.entries {
        let dest = dir.join(&e.path);
        match &e.kind {
            EntryKind::Symlink { target } => {
                if fs::read_link(&dest).is_ok_and(|t| t.as_os_str() == target.as_str()) {
                    continue;
                }
                let parent = prepare_parent(dir, &e.path)?;
                let tmp = parent.join(format!("{TMP_PREFIX}{}", rand::random::<u64>()));
                std::os::unix::fs::symlink(target, &tmp).map_err(|err| io(&e.path, err))?;
                if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
                    fs::remove_dir_all(&dest).map_err(|err| io(&e.path, err))?;
                }
                fs::rename(&tmp, &dest).map_err(|err| io(&e.path, err))?;
            }
            EntryKind::Dir => {
                prepare_parent(dir, &e.path)?;
                match fs::symlink_metadata(&dest) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        fs::remove_file(&dest).map_err(|err| io(&e.path, err))?;
                        mkdir(&dest, &e.path)?;
                    }
                    Err(_) => mkdir(&dest, &e.path)?,
                }
            }
            EntryKind::File(_) if unchanged.contains(&e.path) => {
                // Only where it differs: a chmod changes the ctime, which
                // would make the stat cache miss next time.
                let want = file_mode(e.mode, read_only);
                if !fs::symlink_metadata(&dest).is_ok_and(|m| m.permissions().mode() & 0o7777 == want) {
                    fs::set_permissions(&dest, Permissions::from_mode(want)).map_err(|err| io(&e.path, err))?;
                }
            }
            EntryKind::File(_) => {}
        }
    }
    // Entries the version does not have.
    let mut keep: HashSet<&str> = HashSet::new();
    for e in &manifest.entries {
        keep.insert(&e.path);
        keep.extend(ancestors(&e.path));
    }
    let extra: Vec<_> = walk(dir, Strictness::Skip)?.into_iter().filter(|e| !keep.contains(e.path.as_str())).collect();
    let mut removed = 0;
    if delete {
        let mut gone: Vec<&str> = Vec::new();
        for e in &extra {
            if gone.iter().any(|g| e.path.starts_with(g) && e.path.as_bytes().get(g.len()) == Some(&b'/')) {
                continue;
            }
            let p = dir.join(&e.path);
            let r = if matches!(e.kind, LocalKind::Dir { .. }) { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
            r.map_err(|err| io(&e.path, err))?;
            gone.push(&e.path);
            removed += 1;
        }
    }
    // Directory modes last, deepest first, so a read-only directory is
    // filled before it is closed.
    for e in manifest.entries.iter().rev() {
        if matches!(e.kind, EntryKind::Dir) {
            fs::set_permissions(dir.join(&e.path), Permissions::from_mode(e.mode)).map_err(|err| io(&e.path, err))?;
        }
    }
    let extraneous = if delete { 0 } else { extra.iter().filter(|e| !e.path.starts_with(TMP_PREFIX)).count() as u64 };
    Ok((removed, extraneous))
}

#[cfg(test)]
mod tests {
    use super::*;

    use aetherfs_format::{ChunkLocation, Compression};

    fn chunk(bytes: &[u8]) -> ChunkRef {
        let location = ChunkLocation {
            pack: Digest::of(b"pack"),
            offset: 0,
            stored_len: bytes.len() as u32,
            compression: Compression::None,
        };
        ChunkRef { digest: Digest::of(bytes), len: bytes.len() as u32, location }
    }

    /// What a patched clone is checked for: the chunks it kept from the old
    /// file (never read while patching) must be the listed ones.
    #[test]
    fn a_clone_is_checked_where_it_kept_the_old_bytes() {
        let (kept, patched) = (vec![7u8; 1000], vec![9u8; 500]);
        let f = PlannedFile {
            path: "f".into(),
            mode: 0o644,
            digest: file_digest(1500, [(Digest::of(&kept), 1000), (Digest::of(&patched), 500)]),
            size: 1500,
            clone_from: None,
            chunks: vec![(chunk(&kept), Source::InPlace), (chunk(&patched), Source::Remote)],
        };
        let check = |bytes: &[u8]| {
            let tmp = tempfile::tempfile().expect("tempfile");
            tmp.write_all_at(bytes, 0).expect("write");
            kept_chunks_intact(&tmp, &f).expect("read")
        };
        assert!(check(&[kept.clone(), patched.clone()].concat()));
        // The patched region was verified before it was written, so only
        // the kept one is read back.
        assert!(check(&[kept.clone(), vec![0u8; 500]].concat()));
        let mut flipped = [kept.clone(), patched.clone()].concat();
        flipped[999] ^= 1;
        assert!(!check(&flipped), "a changed kept chunk passed");
        assert!(!check(&kept[..900]), "a short file passed");
        assert!(!check(&[kept, patched, vec![0]].concat()), "a long file passed");
    }
}
