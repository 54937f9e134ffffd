//! The push engine: turn a directory into a published version.
//!
//! 1. Walk the tree (no symlinks followed) and chunk + hash every file on
//!    all cores (FastCDC 2020, BLAKE3 per chunk; a file's digest is derived
//!    from its chunk list, so every byte is hashed once).
//! 2. Ask the hub which chunk digests it lacks (among the packs this caller
//!    may read).
//! 3. Re-read only the missing chunks (from the page cache, usually), pack
//!    them into ~32 MiB packs, compressing each chunk where that pays, and
//!    upload several packs at once. Each chunk is re-hashed as it is packed,
//!    so a file edited during the push fails it instead of storing garbage.
//! 4. Publish the manifest (what the version is; the hub places its chunks
//!    and refuses it unless every chunk is stored), then move the tags. A
//!    publish refused because garbage collection removed a pack meanwhile
//!    goes back to step 2, a bounded number of times.

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
use crate::hashing::hash_files as hash_files_blocking;
use crate::walk::{LocalEntry, LocalKind, Strictness, walk};

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
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            pack_target: 32 << 20,
            uploads: 4,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            compress: true,
            chunking: ChunkParams::default(),
            annotations: BTreeMap::new(),
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
    /// Incremental: this many more bytes were chunked and hashed.
    Hashed {
        bytes: u64,
    },
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
    let root = dir.to_path_buf();
    let entries = tokio::task::spawn_blocking(move || walk(&root, Strictness::Fail))
        .await
        .map_err(|e| ClientError::Invalid(format!("walk task failed: {e}")))??;
    let files: Vec<LocalEntry> = entries.iter().filter(|e| matches!(e.kind, LocalKind::File { .. })).cloned().collect();
    let total: u64 = files.iter().map(|e| if let LocalKind::File { size } = e.kind { size } else { 0 }).sum();
    progress(PushEvent::Scanned { files: files.len() as u64, bytes: total });

    let hashed = hash_files(dir, files, opts, progress.clone()).await?;

    // Which chunks does the hub lack? Upload them, then publish. A publish
    // refused with `missing_chunks` (garbage collection removed a pack we
    // were counting on between our query and the publish) starts over from
    // the query; the hub then reports those chunks missing and we upload them.
    let mut unique: Vec<Digest> = Vec::new();
    let mut seen = HashSet::new();
    for f in &hashed {
        for c in &f.chunks.chunks {
            if seen.insert(c.digest) {
                unique.push(c.digest);
            }
        }
    }
    let mut uploads = Uploads::default();
    let mut annotations = opts.annotations.clone();
    annotations.entry("created".into()).or_insert_with(now_rfc3339);
    let mut attempt = 0;
    let (stored, manifest_bytes, chunk_count, bytes) = loop {
        attempt += 1;
        let locations = upload_missing(client, dir, name, &hashed, &unique, opts, &progress, &mut uploads).await?;
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
    })
}

/// Publishes refused for missing chunks that are retried.
const PUBLISH_ATTEMPTS: usize = 5;

/// What a push uploaded, over all its attempts.
#[derive(Default)]
struct Uploads {
    chunks: u64,
    plain_bytes: u64,
    packs: u64,
    stored_bytes: u64,
}

/// Asks which of `unique` the hub lacks, uploads those in packs, and returns
/// where every chunk is.
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
) -> Result<HashMap<Digest, ChunkLocation>, ClientError> {
    let answer = client.missing_chunks(name, unique).await?;
    let mut locations: HashMap<Digest, ChunkLocation> = answer.present.iter().map(|p| (p.digest, p.location)).collect();
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
    progress(PushEvent::Planned { chunks: unique.len() as u64, missing_chunks: planned.len() as u64, missing_bytes });

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
    Ok(locations)
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

async fn hash_files(
    dir: &Path,
    files: Vec<LocalEntry>,
    opts: &PushOptions,
    progress: Progress<PushEvent>,
) -> Result<Vec<HashedFile>, ClientError> {
    let dir = dir.to_path_buf();
    let params = opts.chunking;
    let threads = opts.threads;
    tokio::task::spawn_blocking(move || {
        let list: Vec<(String, u64)> = files
            .iter()
            .map(|e| (e.path.clone(), if let LocalKind::File { size } = e.kind { size } else { 0 }))
            .collect();
        let on_bytes = |bytes| progress(PushEvent::Hashed { bytes });
        let results = hash_files_blocking(&dir, &list, &params, threads, true, &on_bytes);
        files.into_iter().zip(results).map(|(entry, r)| Ok(HashedFile { entry, chunks: r? })).collect()
    })
    .await
    .map_err(|e| ClientError::Invalid(format!("hash task failed: {e}")))?
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
