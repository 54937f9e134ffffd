//! Chunking and hashing many local files on all cores.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use aetherfs_format::{ChunkParams, Chunker, FileChunks};
use parking_lot::Mutex;

use crate::error::ClientError;

/// Chunks `files` (paths relative to `dir`, with their sizes) on `threads`
/// threads, largest first so one big file does not run last on one core.
/// `on_bytes` hears about progress in steps of about 1 MiB. With
/// `stop_on_error`, the first failure ends the work early.
pub(crate) fn hash_files(
    dir: &Path,
    files: &[(String, u64)],
    params: &ChunkParams,
    threads: usize,
    stop_on_error: bool,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Vec<Result<FileChunks, ClientError>> {
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(files[i].1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Vec<Mutex<Option<Result<FileChunks, ClientError>>>> = files.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, files.len().max(1)) {
            s.spawn(|| {
                let mut chunker = Chunker::new(*params);
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = order.get(k) else { break };
                    if stop_on_error && failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let path = dir.join(&files[i].0);
                    let r = File::open(&path)
                        .and_then(|f| chunker.chunk(ProgressReader { inner: f, on_bytes, pending: 0 }))
                        .map_err(|e| ClientError::io(path.display(), e));
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    *results[i].lock() = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|| Err(ClientError::Invalid("stopped after an earlier error".into()))))
        .collect()
}

struct ProgressReader<'a, R> {
    inner: R,
    on_bytes: &'a (dyn Fn(u64) + Sync),
    pending: u64,
}

impl<R: std::io::Read> std::io::Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pending += n as u64;
        if self.pending >= 1 << 20 || (n == 0 && self.pending > 0) {
            (self.on_bytes)(self.pending);
            self.pending = 0;
        }
        Ok(n)
    }
}
