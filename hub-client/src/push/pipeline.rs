//! Chunk, hash and pack from one read of each file.
//!
//! Worker threads (`PushOptions::threads`) take the files largest first,
//! read each in windows of [`WINDOW`] bytes, cut the windows into chunks and
//! hash them, and hand the chunks, bytes included (slices of the window, no
//! copy), to the async side in batches of about [`BATCH_BYTES`]: thousands of
//! small files share one batch, a large file fills many. The channel holds a
//! few batches, so memory does not grow with the tree.
//!
//! For each batch the async side asks the hub which chunks not seen earlier
//! in this push it lacks (the query restricted to packs this caller may
//! read, as ever), adds the missing ones to the pack being filled, and hands
//! each full pack to a task that compresses it on the blocking pool and
//! uploads it, `uploads` at once, while the workers go on hashing. So
//! reading, hashing, compressing and uploading overlap, and nothing is read
//! twice.
//!
//! A file is read once, so what is packed is exactly what was hashed. To
//! keep a file edited during the push from being stored half old, half new,
//! each file must still have the stat the walk saw (device, inode, size,
//! mtime, ctime) after it has been read, or the push fails.
//!
//! Memory: the channel ([`CHANNEL_BATCHES`] per worker), each worker's
//! batch and window, the pack being filled, and `uploads` packs being
//! compressed or sent (plaintext and stored form): about
//! `threads × 40 MiB + (uploads × 2 + 1) × pack_target`.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use aetherfs_format::pack::{PACK_MAX_CHUNKS, PackBuilder};
use aetherfs_format::{ChunkInfo, ChunkLocation, ChunkParams, Digest, FileChunks, Name, file_digest};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{BuiltPackSummary, PushEvent, PushOptions, Uploads};
use crate::client::HubClient;
use crate::error::ClientError;
use crate::push::Progress;
use crate::walk::FileStat;

/// Bytes read from a file at once.
const WINDOW: usize = 8 << 20;
/// A batch is handed over once it holds this many bytes of chunks...
const BATCH_BYTES: usize = 8 << 20;
/// ...or this many chunks (many small files).
const BATCH_CHUNKS: usize = 4096;
/// Batches waiting for the async side, per worker.
const CHANNEL_BATCHES: usize = 2;

/// A file to read: its index in the caller's list, where it is, and the
/// stat the walk saw.
pub(super) struct Job {
    pub index: usize,
    pub path: PathBuf,
    pub stat: FileStat,
}

#[derive(Default)]
struct Batch {
    /// Files whose last chunk is in this batch.
    files: Vec<(usize, FileChunks)>,
    chunks: Vec<(Digest, Bytes)>,
    bytes: usize,
}

/// What the pipeline learnt: each file's chunks and where the chunks are.
pub(super) struct Outcome {
    pub files: Vec<(usize, FileChunks)>,
    pub hashed_bytes: u64,
}

/// What a push has learnt so far, which the pipeline adds to.
#[derive(Default)]
pub(super) struct Known {
    /// Every chunk asked about or uploaded.
    pub seen: HashSet<Digest>,
    /// Where each of them is stored.
    pub locations: HashMap<Digest, ChunkLocation>,
    pub uploads: Uploads,
}

impl Known {
    fn finish(&mut self, s: BuiltPackSummary) {
        self.uploads.packs += 1;
        self.uploads.stored_bytes += s.stored;
        self.locations.extend(s.locations);
    }
}

/// Runs the pipeline over `jobs`, adding what it learns to `known`.
pub(super) async fn run(
    client: &HubClient,
    name: &Name,
    jobs: Vec<Job>,
    opts: &PushOptions,
    progress: &Progress<PushEvent>,
    known: &mut Known,
) -> Result<Outcome, ClientError> {
    let mut jobs = jobs;
    jobs.sort_by_key(|j| std::cmp::Reverse(j.stat.size));
    let jobs: Arc<Vec<Job>> = Arc::new(jobs);
    let threads = opts.threads.clamp(1, jobs.len().max(1));
    let (tx, mut rx) = mpsc::channel::<Result<Batch, ClientError>>(CHANNEL_BATCHES * threads);
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..threads {
        let (jobs, next, stop, tx, progress) = (jobs.clone(), next.clone(), stop.clone(), tx.clone(), progress.clone());
        let params = opts.chunking;
        workers.push(tokio::task::spawn_blocking(move || worker(&jobs, &next, &stop, params, &tx, &progress)));
    }
    drop(tx);

    let result = consume(client, name, &mut rx, opts, progress, known).await;
    // On an error, stop the workers and let them drain.
    stop.store(true, Ordering::Relaxed);
    drop(rx);
    for w in workers {
        let _ = w.await;
    }
    result
}

async fn consume(
    client: &HubClient,
    name: &Name,
    rx: &mut mpsc::Receiver<Result<Batch, ClientError>>,
    opts: &PushOptions,
    progress: &Progress<PushEvent>,
    k: &mut Known,
) -> Result<Outcome, ClientError> {
    let mut files = Vec::new();
    let mut hashed_bytes = 0u64;
    let mut group: Vec<(Digest, Bytes)> = Vec::new();
    let mut group_bytes = 0usize;
    let mut tasks: JoinSet<Result<BuiltPackSummary, ClientError>> = JoinSet::new();
    while let Some(batch) = rx.recv().await {
        let batch = batch?;
        hashed_bytes += batch.bytes as u64;
        files.extend(batch.files);
        let mut fresh: Vec<(Digest, Bytes)> = Vec::new();
        for (d, b) in batch.chunks {
            if k.seen.insert(d) {
                fresh.push((d, b));
            }
        }
        if fresh.is_empty() {
            continue;
        }
        let digests: Vec<Digest> = fresh.iter().map(|(d, _)| *d).collect();
        let answer = client.missing_chunks(name, &digests).await?;
        k.locations.extend(answer.present.iter().map(|p| (p.digest, p.location)));
        let missing: HashSet<Digest> = answer.missing.iter().copied().collect();
        // A chunk kept alive keeps its whole read window alive: where most
        // of a batch is stored already, copy the few missing chunks out.
        let copy = missing.len() < fresh.len();
        for (d, b) in fresh {
            if !missing.contains(&d) {
                continue;
            }
            k.uploads.chunks += 1;
            k.uploads.plain_bytes += b.len() as u64;
            group_bytes += b.len();
            group.push((d, if copy { Bytes::copy_from_slice(&b) } else { b }));
            if group_bytes >= opts.pack_target || group.len() >= PACK_MAX_CHUNKS {
                while tasks.len() >= opts.uploads.max(1) {
                    if let Some(done) = tasks.join_next().await {
                        k.finish(joined(done)?);
                    }
                }
                tasks.spawn(pack_and_upload(
                    client.clone(),
                    name.clone(),
                    std::mem::take(&mut group),
                    opts.compress,
                    progress.clone(),
                ));
                group_bytes = 0;
            }
        }
    }
    if !group.is_empty() {
        tasks.spawn(pack_and_upload(client.clone(), name.clone(), group, opts.compress, progress.clone()));
    }
    while let Some(done) = tasks.join_next().await {
        k.finish(joined(done)?);
    }
    Ok(Outcome { files, hashed_bytes })
}

fn joined<T>(r: Result<Result<T, ClientError>, tokio::task::JoinError>) -> Result<T, ClientError> {
    r.map_err(|e| ClientError::Invalid(format!("pack task failed: {e}")))?
}

async fn pack_and_upload(
    client: HubClient,
    name: Name,
    chunks: Vec<(Digest, Bytes)>,
    compress: bool,
    progress: Progress<PushEvent>,
) -> Result<BuiltPackSummary, ClientError> {
    let pack = tokio::task::spawn_blocking(move || {
        let mut builder = PackBuilder::new();
        for (d, b) in &chunks {
            builder.add(*d, b, compress);
        }
        builder.finish()
    })
    .await
    .map_err(|e| ClientError::Invalid(format!("pack task failed: {e}")))?;
    let stored = pack.bytes.len() as u64;
    let locations = pack.entries.iter().map(|e| (e.digest, e.location(pack.digest))).collect();
    client.put_pack(&name, &pack.digest, Bytes::from(pack.bytes)).await?;
    progress(PushEvent::PackUploaded { plain: pack.plain_bytes, stored });
    Ok(BuiltPackSummary { locations, stored })
}

fn worker(
    jobs: &[Job],
    next: &AtomicUsize,
    stop: &AtomicBool,
    params: ChunkParams,
    tx: &mpsc::Sender<Result<Batch, ClientError>>,
    progress: &Progress<PushEvent>,
) {
    let mut batch = Batch::default();
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Some(job) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) else { break };
        let mut send = |b: Batch| {
            progress(PushEvent::Hashed { bytes: b.bytes as u64 });
            tx.blocking_send(Ok(b)).is_ok()
        };
        match read_file(job, &params, &mut batch, &mut send) {
            Ok(true) => {}
            // The receiver is gone: the push failed elsewhere.
            Ok(false) => return,
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
        if (batch.bytes >= BATCH_BYTES || batch.chunks.len() >= BATCH_CHUNKS) && !send(std::mem::take(&mut batch)) {
            return;
        }
    }
    if !batch.files.is_empty() || !batch.chunks.is_empty() {
        progress(PushEvent::Hashed { bytes: batch.bytes as u64 });
        let _ = tx.blocking_send(Ok(batch));
    }
}

/// Reads, chunks and hashes one file into `batch`, sending full batches on
/// the way. `Ok(false)` when a send found no receiver.
fn read_file(
    job: &Job,
    params: &ChunkParams,
    batch: &mut Batch,
    send: &mut dyn FnMut(Batch) -> bool,
) -> Result<bool, ClientError> {
    let size = job.stat.size;
    if size == 0 {
        // Nothing to read; the walk's snapshot is the file.
        batch.files.push((job.index, FileChunks { chunks: Vec::new(), size: 0, digest: file_digest(0, []) }));
        return Ok(true);
    }
    let io = |e| ClientError::io(job.path.display(), e);
    let file = File::open(&job.path).map_err(io)?;
    if size > WINDOW as u64 {
        // A larger read-ahead for a cold read of a big file; only a hint.
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::Sequential);
    }
    let mut chunks: Vec<ChunkInfo> = Vec::new();
    let mut carry: Vec<u8> = Vec::new();
    let mut offset = 0u64; // of the first byte not yet cut
    let mut read = 0u64;
    loop {
        let want = usize::try_from(size - read).unwrap_or(usize::MAX).min(WINDOW);
        let mut window = Vec::with_capacity(carry.len() + want);
        window.extend_from_slice(&carry);
        // `take` stops at the size the walk saw: one read for a small file.
        let got = (&file).take(want as u64).read_to_end(&mut window).map_err(io)?;
        read += got as u64;
        let eof = got < want || read == size;
        let window = Bytes::from(window);
        let mut pos = 0;
        for n in params.complete_cuts(&window, eof) {
            let digest = Digest::of(&window[pos..pos + n]);
            chunks.push(ChunkInfo { offset, len: n as u32, digest });
            batch.chunks.push((digest, window.slice(pos..pos + n)));
            batch.bytes += n;
            offset += n as u64;
            pos += n;
        }
        carry = window[pos..].to_vec();
        if eof {
            break;
        }
        if batch.bytes >= BATCH_BYTES && !send(std::mem::take(batch)) {
            return Ok(false);
        }
    }
    let after = FileStat::of(&file.metadata().map_err(io)?);
    if after != job.stat || offset != size {
        return Err(ClientError::Invalid(format!(
            "{}: file changed while it was being pushed; push again",
            aetherfs_util::quote(&job.path.display().to_string())
        )));
    }
    let digest = file_digest(size, chunks.iter().map(|c| (c.digest, c.len)));
    batch.files.push((job.index, FileChunks { chunks, size, digest }));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(path: &std::path::Path) -> Job {
        let stat = FileStat::of(&std::fs::metadata(path).unwrap());
        Job { index: 0, path: path.to_path_buf(), stat }
    }

    #[test]
    fn reads_a_file_once_into_chunks_that_match_the_chunker() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        let data = aetherfs_util::pseudo_random(WINDOW * 2 + 12_345, 3);
        std::fs::write(&p, &data).unwrap();
        let params = ChunkParams::default();
        let (mut batch, mut sent) = (Batch::default(), Vec::new());
        let mut send = |b: Batch| {
            sent.push(b);
            true
        };
        assert!(read_file(&job(&p), &params, &mut batch, &mut send).unwrap());
        sent.push(batch);
        let expected = aetherfs_format::chunk_reader(&params, &data[..]).unwrap();
        let files: Vec<_> = sent.iter().flat_map(|b| b.files.iter()).collect();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].1, expected);
        let bytes: Vec<u8> = sent.iter().flat_map(|b| b.chunks.iter()).flat_map(|(_, b)| b.iter().copied()).collect();
        assert_eq!(bytes, data, "the chunks handed over are the file, in order");
        for (d, b) in sent.iter().flat_map(|b| b.chunks.iter()) {
            assert_eq!(*d, Digest::of(b));
        }
    }

    #[test]
    fn a_file_changed_since_the_walk_fails() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, b"before").unwrap();
        let mut stale = job(&p);
        stale.stat.mtime_ns -= 1;
        let err = read_file(&stale, &ChunkParams::default(), &mut Batch::default(), &mut |_| true).unwrap_err();
        assert!(err.to_string().contains("changed while it was being pushed"), "{err}");
        // Grown since the walk: same answer, not a silently cut file.
        let mut short = job(&p);
        std::fs::write(&p, b"before, and after").unwrap();
        short.stat = FileStat { size: 6, ..FileStat::of(&std::fs::metadata(&p).unwrap()) };
        assert!(read_file(&short, &ChunkParams::default(), &mut Batch::default(), &mut |_| true).is_err());
    }
}
