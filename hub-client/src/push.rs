//! The push engine: turn a directory into a published version.
//!
//! 1. Walk the tree (no symlinks followed), stat'ing every entry.
//! 2. Files whose stat matches the directory's stat cache ([`crate::stat_cache`])
//!    take their chunk list from it and are not read.
//! 3. Every other file is read once, on all cores, and chunked (FastCDC
//!    2020), hashed (BLAKE3 per chunk; a file's digest is derived from its
//!    chunk list) and packed from that one read ([`pipeline`]): batches of
//!    chunks ask the hub which it lacks (among the packs this caller may
//!    read), the missing ones go into ~64 MiB packs, compressed where that
//!    pays and uploaded a few at once while the next files are hashed.
//! 4. Cached files' chunks the hub lacks (another hub, or collected) are
//!    read from the files and packed, each re-hashed as it is read, so a
//!    file edited since fails the push instead of storing garbage.
//! 5. Publish the manifest (what the version is; the hub places its chunks
//!    and refuses it unless every chunk is stored), then move the tags. A
//!    publish refused because garbage collection removed a pack meanwhile
//!    asks again for every chunk and uploads what is missing (step 4's way),
//!    a bounded number of times.
//! 6. Save the stat cache for the next push.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aetherfs_format::pack::{BuiltPack, PACK_MAX_CHUNKS, PackBuilder};
use aetherfs_format::{
    ChunkLocation, ChunkParams, ChunkRef, Digest, Entry, EntryKind, FileChunks, FileEntry, Manifest, Name, Tag,
};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};

use crate::client::HubClient;
use crate::error::ClientError;
use crate::stat_cache::{StatCache, now_ns};
use crate::walk::{LocalEntry, LocalKind, Strictness, walk};

mod pipeline;

/// Tunables of a push.
#[derive(Clone, Debug)]
pub struct PushOptions {
    /// Plaintext bytes per pack before it is closed.
    pub pack_target: usize,
    /// Packs built and uploaded at once.
    pub uploads: usize,
    /// Threads chunking and hashing files.
    pub threads: usize,
    pub compress: bool,
    pub chunking: ChunkParams,
    /// Stored in the manifest (`created` is added automatically).
    pub annotations: BTreeMap<String, String>,
    /// Directory of stat caches ([`crate::stat_cache`]); `None` hashes
    /// every file and remembers nothing.
    pub stat_cache: Option<PathBuf>,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            pack_target: 64 << 20,
            uploads: 3,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            compress: true,
            chunking: ChunkParams::default(),
            annotations: BTreeMap::new(),
            stat_cache: None,
        }
    }
}

/// Progress of a push, in the order the phases happen.
#[derive(Clone, Debug)]
pub enum PushEvent {
    Scanned {
        files: u64,
        bytes: u64,
    },
    /// Files whose chunks the stat cache knew: they are not read.
    StatCacheHits {
        files: u64,
        bytes: u64,
    },
    /// Incremental: this many more bytes were read, chunked and hashed.
    Hashed {
        bytes: u64,
    },
    /// Everything is hashed and the missing chunks are known (most of them
    /// are uploaded already: hashing and uploading overlap).
    Planned {
        chunks: u64,
        missing_chunks: u64,
        missing_bytes: u64,
    },
    /// Incremental: a pack was uploaded (`plain` bytes of chunks, `stored` on the wire).
    PackUploaded {
        plain: u64,
        stored: u64,
    },
    Published {
        digest: Digest,
    },
    Tagged {
        tag: Tag,
    },
}

/// What a push did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PushReport {
    pub name: Name,
    pub digest: Digest,
    pub tags: Vec<Tag>,
    pub files: u64,
    pub bytes: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    /// Plaintext bytes of chunks the hub did not have.
    pub new_bytes: u64,
    pub packs_uploaded: u64,
    /// Bytes sent in packs (after compression).
    pub uploaded_bytes: u64,
    pub manifest_bytes: u64,
    /// Files read and hashed (the others' chunks came from the stat cache).
    pub files_hashed: u64,
    pub stat_cache_hits: u64,
    /// Bytes chunked and hashed.
    pub hashed_bytes: u64,
    /// Bytes of file data read: each hashed file once, plus the chunks of
    /// cached files the hub lacked.
    pub read_bytes: u64,
}

pub type Progress<E> = Arc<dyn Fn(E) + Send + Sync>;

struct HashedFile {
    entry: LocalEntry,
    chunks: FileChunks,
}

/// Pushes `dir` as a new version of `name` and points `tags` at it.
pub async fn push(
    client: &HubClient,
    dir: &Path,
    name: &Name,
    tags: &[Tag],
    opts: &PushOptions,
    progress: Progress<PushEvent>,
) -> Result<PushReport, ClientError> {
    opts.chunking.validate()?;
    // Files are hashed after this moment; the stat cache's racy check needs it.
    let started_ns = now_ns();
    let root = dir.to_path_buf();
    let entries = tokio::task::spawn_blocking(move || walk(&root, Strictness::Fail))
        .await
        .map_err(|e| ClientError::Invalid(format!("walk task failed: {e}")))??;
    let files: Vec<LocalEntry> = entries.iter().filter(|e| matches!(e.kind, LocalKind::File { .. })).cloned().collect();
    let total: u64 = files.iter().map(|e| e.stat.size).sum();
    progress(PushEvent::Scanned { files: files.len() as u64, bytes: total });

    let cache = opts.stat_cache.as_deref().and_then(|d| load_stat_cache(d, dir, opts));
    let mut known: Vec<Option<FileChunks>> = Vec::with_capacity(files.len());
    let mut jobs = Vec::new();
    let (mut hits, mut hit_bytes) = (0u64, 0u64);
    for (index, e) in files.iter().enumerate() {
        let cached = cache.as_ref().and_then(|(_, c)| c.lookup(&e.path, &e.stat));
        if cached.is_some() {
            hits += 1;
            hit_bytes += e.stat.size;
        } else {
            jobs.push(pipeline::Job { index, path: dir.join(&e.path), stat: e.stat });
        }
        known.push(cached);
    }
    if hits > 0 {
        progress(PushEvent::StatCacheHits { files: hits, bytes: hit_bytes });
    }
    let files_hashed = jobs.len() as u64;

    let mut learnt = pipeline::Known::default();
    let outcome = pipeline::run(client, name, jobs, opts, &progress, &mut learnt).await?;
    let pipeline::Known { seen, mut locations, mut uploads } = learnt;
    for (i, fc) in outcome.files {
        known[i] = Some(fc);
    }
    let hashed: Vec<HashedFile> = files
        .into_iter()
        .zip(known)
        .map(|(entry, chunks)| match chunks {
            Some(chunks) => Ok(HashedFile { entry, chunks }),
            None => Err(ClientError::Invalid(format!("{} was not hashed", entry.path))),
        })
        .collect::<Result<_, _>>()?;

    // The cached files' chunks the pipeline did not ask about.
    let mut unique: Vec<Digest> = Vec::new();
    let mut all = HashSet::new();
    for f in &hashed {
        for c in &f.chunks.chunks {
            if all.insert(c.digest) {
                unique.push(c.digest);
            }
        }
    }
    let rest: Vec<Digest> = unique.iter().copied().filter(|d| !seen.contains(d)).collect();
    let mut read_again = 0;
    if !rest.is_empty() {
        read_again +=
            upload_missing(client, dir, name, &hashed, &rest, opts, &progress, &mut uploads, &mut locations).await?;
    }
    progress(PushEvent::Planned {
        chunks: unique.len() as u64,
        missing_chunks: uploads.chunks,
        missing_bytes: uploads.plain_bytes,
    });

    // Publish. A publish refused with `missing_chunks` (garbage collection
    // removed a pack we were counting on between our query and the publish)
    // asks again about every chunk; the hub then reports those missing and
    // we upload them.
    let mut annotations = opts.annotations.clone();
    annotations.entry("created".into()).or_insert_with(now_rfc3339);
    let mut attempt = 0;
    let (stored, manifest_bytes, chunk_count, bytes) = loop {
        attempt += 1;
        if attempt > 1 {
            locations.clear();
            read_again +=
                upload_missing(client, dir, name, &hashed, &unique, opts, &progress, &mut uploads, &mut locations)
                    .await?;
        }
        let (manifest, chunk_count, bytes) = build_manifest(&entries, &hashed, &locations, opts, &annotations)?;
        let encoded = Bytes::from(manifest.encode()?);
        let manifest_bytes = encoded.len() as u64;
        match client.put_manifest(name, encoded).await {
            Ok(stored) => break (stored, manifest_bytes, chunk_count, bytes),
            Err(ClientError::Api { status: 422, code, message })
                if code == "missing_chunks" && attempt < PUBLISH_ATTEMPTS =>
            {
                tracing::info!(attempt, %message, "publish refused for missing chunks; uploading them again");
            }
            Err(e) => return Err(e),
        }
    };
    progress(PushEvent::Published { digest: stored.digest });
    if let (Some(cache_dir), Some((abs, old))) = (opts.stat_cache.as_deref(), &cache) {
        save_stat_cache(cache_dir, abs, old, &hashed, started_ns, opts).await;
    }
    for tag in tags {
        client.set_tag(name, tag, stored.digest, None).await?;
        progress(PushEvent::Tagged { tag: tag.clone() });
    }
    Ok(PushReport {
        name: name.clone(),
        digest: stored.digest,
        tags: tags.to_vec(),
        files: hashed.len() as u64,
        bytes,
        chunks: chunk_count,
        new_chunks: uploads.chunks,
        new_bytes: uploads.plain_bytes,
        packs_uploaded: uploads.packs,
        uploaded_bytes: uploads.stored_bytes,
        manifest_bytes,
        files_hashed,
        stat_cache_hits: hits,
        hashed_bytes: outcome.hashed_bytes,
        read_bytes: outcome.hashed_bytes + read_again,
    })
}

/// The stat cache of `dir` (keyed by its absolute path), or `None` when the
/// path cannot be made absolute. An unusable cache file is a warning.
fn load_stat_cache(cache_dir: &Path, dir: &Path, opts: &PushOptions) -> Option<(PathBuf, StatCache)> {
    let abs = std::fs::canonicalize(dir).ok()?;
    let (cache, err) = StatCache::load(cache_dir, &abs, opts.chunking);
    if let Some(e) = err {
        tracing::warn!("{e}");
    }
    Some((abs, cache))
}

/// Remembers every file of this push: hits as they were, the others as
/// hashed now. Failing to save is a warning: it costs the next push a re-hash.
async fn save_stat_cache(
    cache_dir: &Path,
    abs: &Path,
    old: &StatCache,
    hashed: &[HashedFile],
    started_ns: i64,
    opts: &PushOptions,
) {
    let mut new = StatCache::new(abs, opts.chunking);
    for f in hashed {
        if old.lookup(&f.entry.path, &f.entry.stat).is_some() {
            new.keep_from(old, &f.entry.path);
        } else {
            new.insert(&f.entry.path, f.entry.stat, started_ns, &f.chunks);
        }
    }
    let dir = cache_dir.to_path_buf();
    let saved = tokio::task::spawn_blocking(move || new.save(&dir)).await;
    match saved {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("cannot save the stat cache in {}: {e}", cache_dir.display()),
        Err(e) => tracing::warn!("stat cache task failed: {e}"),
    }
}

/// Publishes refused for missing chunks that are retried.
const PUBLISH_ATTEMPTS: usize = 5;

/// What a push uploaded, over all its attempts.
#[derive(Default)]
pub(super) struct Uploads {
    chunks: u64,
    plain_bytes: u64,
    packs: u64,
    stored_bytes: u64,
}

/// Asks which of `unique` the hub lacks, reads those from the files (each
/// re-hashed: a file changed since it was hashed or cached fails the push)
/// and uploads them in packs; every location goes into `locations`.
/// Returns the bytes read.
#[allow(clippy::too_many_arguments)]
async fn upload_missing(
    client: &HubClient,
    dir: &Path,
    name: &Name,
    hashed: &[HashedFile],
    unique: &[Digest],
    opts: &PushOptions,
    progress: &Progress<PushEvent>,
    uploads: &mut Uploads,
    locations: &mut HashMap<Digest, ChunkLocation>,
) -> Result<u64, ClientError> {
    let answer = client.missing_chunks(name, unique).await?;
    locations.extend(answer.present.iter().map(|p| (p.digest, p.location)));
    let missing: HashSet<Digest> = answer.missing.iter().copied().collect();

    // Plan packs: missing chunks in file order, each once.
    let mut groups: Vec<Vec<PackItem>> = Vec::new();
    let mut group: Vec<PackItem> = Vec::new();
    let (mut group_bytes, mut missing_bytes) = (0usize, 0u64);
    let mut planned = HashSet::new();
    for (fi, f) in hashed.iter().enumerate() {
        for c in &f.chunks.chunks {
            if missing.contains(&c.digest) && planned.insert(c.digest) {
                group.push(PackItem { file: fi, offset: c.offset, len: c.len, digest: c.digest });
                group_bytes += c.len as usize;
                missing_bytes += u64::from(c.len);
                if group_bytes >= opts.pack_target || group.len() >= PACK_MAX_CHUNKS {
                    groups.push(std::mem::take(&mut group));
                    group_bytes = 0;
                }
            }
        }
    }
    if !group.is_empty() {
        groups.push(group);
    }

    // Build and upload packs, a few at a time.
    let paths: Arc<Vec<PathBuf>> = Arc::new(hashed.iter().map(|f| dir.join(&f.entry.path)).collect());
    let compress = opts.compress;
    let built: Vec<BuiltPackSummary> = stream::iter(groups)
        .map(|items| {
            let paths = paths.clone();
            let progress = progress.clone();
            async move {
                let pack = tokio::task::spawn_blocking(move || build_pack(&paths, &items, compress))
                    .await
                    .map_err(|e| ClientError::Invalid(format!("pack task failed: {e}")))??;
                let stored = pack.bytes.len() as u64;
                let summary = BuiltPackSummary {
                    locations: pack.entries.iter().map(|e| (e.digest, e.location(pack.digest))).collect(),
                    stored,
                };
                client.put_pack(name, &pack.digest, Bytes::from(pack.bytes)).await?;
                progress(PushEvent::PackUploaded { plain: pack.plain_bytes, stored });
                Ok::<_, ClientError>(summary)
            }
        })
        .buffer_unordered(opts.uploads.max(1))
        .try_collect()
        .await?;
    uploads.chunks += planned.len() as u64;
    uploads.plain_bytes += missing_bytes;
    uploads.packs += built.len() as u64;
    uploads.stored_bytes += built.iter().map(|b| b.stored).sum::<u64>();
    for b in built {
        locations.extend(b.locations);
    }
    Ok(missing_bytes)
}

/// The manifest of the walked tree, with the chunk counts and bytes.
fn build_manifest(
    entries: &[LocalEntry],
    hashed: &[HashedFile],
    locations: &HashMap<Digest, ChunkLocation>,
    opts: &PushOptions,
    annotations: &BTreeMap<String, String>,
) -> Result<(Manifest, u64, u64), ClientError> {
    let mut manifest = Manifest::new(opts.chunking);
    manifest.annotations = annotations.clone();
    let mut chunk_count = 0u64;
    let mut bytes = 0u64;
    let mut by_path: HashMap<&str, &HashedFile> = hashed.iter().map(|f| (f.entry.path.as_str(), f)).collect();
    for e in entries {
        let kind = match &e.kind {
            LocalKind::File { .. } => {
                let Some(f) = by_path.remove(e.path.as_str()) else { continue };
                let mut chunks = Vec::with_capacity(f.chunks.chunks.len());
                for c in &f.chunks.chunks {
                    let location = *locations.get(&c.digest).ok_or_else(|| {
                        ClientError::Invalid(format!("hub did not place chunk {} of {}", c.digest, e.path))
                    })?;
                    chunks.push(ChunkRef { digest: c.digest, len: c.len, location });
                }
                chunk_count += chunks.len() as u64;
                bytes += f.chunks.size;
                EntryKind::File(FileEntry::new(chunks))
            }
            // Non-empty directories are implied by their contents; keep them
            // only to carry a non-default mode.
            LocalKind::Dir { empty } if *empty || e.mode != 0o755 => EntryKind::Dir,
            LocalKind::Dir { .. } => continue,
            LocalKind::Symlink { target } => EntryKind::Symlink { target: target.clone() },
        };
        let mode = if matches!(kind, EntryKind::Symlink { .. }) { 0o777 } else { e.mode };
        manifest.entries.push(Entry { path: e.path.clone(), mode, kind });
    }
    manifest.sort();
    Ok((manifest, chunk_count, bytes))
}

struct PackItem {
    file: usize,
    offset: u64,
    len: u32,
    digest: Digest,
}

struct BuiltPackSummary {
    locations: Vec<(Digest, ChunkLocation)>,
    stored: u64,
}

fn build_pack(paths: &[PathBuf], items: &[PackItem], compress: bool) -> Result<BuiltPack, ClientError> {
    let mut builder = PackBuilder::new();
    let mut open: Option<(usize, File)> = None;
    let mut buf = Vec::new();
    for it in items {
        let path = &paths[it.file];
        if open.as_ref().is_none_or(|(i, _)| *i != it.file) {
            open = Some((it.file, File::open(path).map_err(|e| ClientError::io(path.display(), e))?));
        }
        let Some((_, file)) = open.as_ref() else { continue };
        buf.resize(it.len as usize, 0);
        file.read_exact_at(&mut buf, it.offset).map_err(|e| ClientError::io(path.display(), e))?;
        if Digest::of(&buf) != it.digest {
            return Err(ClientError::Invalid(format!(
                "{}: file changed while it was being pushed; push again",
                path.display()
            )));
        }
        builder.add(it.digest, &buf, compress);
    }
    Ok(builder.finish())
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}
