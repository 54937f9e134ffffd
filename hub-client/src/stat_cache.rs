//! The stat cache: the chunk list a file had when it last had this stat, so
//! an unchanged re-push (or a pull into an up-to-date directory) reads and
//! hashes nothing.
//!
//! One cache file per directory pushed or pulled into, named by a hash of
//! the directory's absolute path, in `AETHERFS_STAT_CACHE_DIR` or else
//! `$XDG_CACHE_HOME/aetherfs/stat` (`~/.cache/aetherfs/stat`). It holds, per
//! regular file, `(device, inode, size, mtime ns, ctime ns)`, the time the
//! file was hashed, and its chunk list (digest and length of each chunk; the
//! file digest is derived from it, as everywhere). A file whose stat is not
//! exactly the cached one is chunked again.
//!
//! Racy-clean files (git's term): a file changed in the same timestamp
//! granule as the one it was hashed in keeps its stat. So an entry is
//! trusted only if the file's mtime and ctime are older than the moment it
//! was hashed by more than the filesystem's granularity (100 ms where the
//! filesystem keeps nanoseconds, 2 s where ctime has none, as on FAT); a
//! file touched just before a push is hashed again next time.
//!
//! The file is written whole through a temporary file and renamed (0600),
//! after a successful push or pull; it lists only the files of that run, so
//! it is bounded by the tree; at most [`MAX_CACHE_FILES`] directories are
//! remembered (the oldest caches are removed). A cache file that is corrupt,
//! too large, of another format version, for another directory or other
//! chunking parameters is ignored with a warning: it only ever costs a
//! re-hash. A trailing BLAKE3 of the whole file guards against torn or
//! edited files.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use aetherfs_format::chunker::MAX_CHUNK_SIZE;
use aetherfs_format::{ChunkInfo, ChunkParams, Digest, FileChunks, file_digest, validate_path};

use crate::walk::FileStat;

const MAGIC: &[u8; 4] = b"AFSS";
/// Bump when the layout or the meaning of an entry changes.
pub const FORMAT_VERSION: u16 = 1;
/// Larger cache files are ignored (about 3 million chunks).
const MAX_FILE_BYTES: u64 = 128 << 20;
/// Directories remembered; saving a new one removes the oldest beyond this.
pub const MAX_CACHE_FILES: usize = 64;
const FINE_MARGIN_NS: i64 = 100_000_000;
const COARSE_MARGIN_NS: i64 = 2_000_000_000;

/// The default directory of cache files, if a home can be found.
pub fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("aetherfs").join("stat"))
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Whether a file with `stat`, hashed at `hashed_ns`, could have changed
/// since without its stat changing.
pub fn is_racy(stat: &FileStat, hashed_ns: i64) -> bool {
    let margin = if stat.ctime_ns % 1_000_000_000 == 0 { COARSE_MARGIN_NS } else { FINE_MARGIN_NS };
    stat.mtime_ns.max(stat.ctime_ns) >= hashed_ns.saturating_sub(margin)
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Cached {
    stat: FileStat,
    hashed_ns: i64,
    chunks: Vec<(Digest, u32)>,
}

/// The cache of one directory, in memory.
#[derive(Debug)]
pub struct StatCache {
    root: String,
    params: ChunkParams,
    entries: HashMap<String, Cached>,
}

/// Why a cache file was not used.
#[derive(Debug, thiserror::Error)]
pub enum StatCacheError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a usable stat cache ({why}); ignoring it")]
    Unusable { path: String, why: String },
}

impl StatCache {
    /// An empty cache for `root` (an absolute path) chunked with `params`.
    pub fn new(root: &Path, params: ChunkParams) -> Self {
        Self { root: root.display().to_string(), params, entries: HashMap::new() }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Where the cache of `root` lives under `dir`.
    pub fn file_for(dir: &Path, root: &Path) -> PathBuf {
        let key = Digest::of(root.as_os_str().as_encoded_bytes()).hex();
        dir.join(format!("{}.v{FORMAT_VERSION}", &key[..32]))
    }

    /// Loads the cache of `root` from `dir`; an absent file is an empty
    /// cache, an unusable one an empty cache and an error to warn about.
    pub fn load(dir: &Path, root: &Path, params: ChunkParams) -> (Self, Option<StatCacheError>) {
        let path = Self::file_for(dir, root);
        let empty = Self::new(root, params);
        let shown = path.display().to_string();
        let unusable = |why: String| StatCacheError::Unusable { path: shown.clone(), why };
        let bytes = match fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (empty, None),
            Err(e) => return (empty, Some(StatCacheError::Io { path: shown, source: e })),
            Ok(m) if m.len() > MAX_FILE_BYTES => return (empty, Some(unusable(format!("{} bytes", m.len())))),
            Ok(_) => match fs::read(&path) {
                Ok(b) => b,
                Err(e) => return (empty, Some(StatCacheError::Io { path: shown, source: e })),
            },
        };
        match Self::decode(&bytes, &empty.root, params) {
            Ok(entries) => (Self { entries, ..empty }, None),
            Err(why) => (empty, Some(unusable(why))),
        }
    }

    /// The chunks of `path` if its stat is the cached one and the entry is
    /// not racy.
    pub fn lookup(&self, path: &str, stat: &FileStat) -> Option<FileChunks> {
        let c = self.entries.get(path)?;
        if c.stat != *stat || is_racy(&c.stat, c.hashed_ns) {
            return None;
        }
        Some(file_chunks(&c.chunks, stat.size))
    }

    /// Remembers `chunks` for `path`, hashed at `hashed_ns` while it had
    /// `stat`. A racy entry could never be trusted, so it is not kept.
    pub fn insert(&mut self, path: &str, stat: FileStat, hashed_ns: i64, chunks: &FileChunks) {
        if is_racy(&stat, hashed_ns) || chunks.size != stat.size {
            return;
        }
        let chunks = chunks.chunks.iter().map(|c| (c.digest, c.len)).collect();
        self.entries.insert(path.to_string(), Cached { stat, hashed_ns, chunks });
    }

    /// Copies the entry of `path` from `other` (a file found unchanged).
    pub fn keep_from(&mut self, other: &StatCache, path: &str) {
        if let Some(c) = other.entries.get(path) {
            self.entries.insert(path.to_string(), c.clone());
        }
    }

    /// Writes the cache into `dir` (atomically) and forgets the oldest
    /// caches beyond [`MAX_CACHE_FILES`].
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        fs::create_dir_all(dir)?;
        let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
        tmp.write_all(&self.encode())?;
        tmp.as_file().sync_data()?;
        tmp.persist(Self::file_for(dir, Path::new(&self.root))).map_err(|e| e.error)?;
        prune(dir);
        Ok(())
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.entries.len() * 128);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        for v in [self.params.min, self.params.avg, self.params.max] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        put_bytes(&mut out, self.root.as_bytes());
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        let mut paths: Vec<&String> = self.entries.keys().collect();
        paths.sort();
        for p in paths {
            let c = &self.entries[p];
            put_bytes(&mut out, p.as_bytes());
            for v in [c.stat.dev, c.stat.ino, c.stat.size] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for v in [c.stat.mtime_ns, c.stat.ctime_ns, c.hashed_ns] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&(c.chunks.len() as u32).to_le_bytes());
            for (d, len) in &c.chunks {
                out.extend_from_slice(d.as_bytes());
                out.extend_from_slice(&len.to_le_bytes());
            }
        }
        let sum = Digest::of(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    fn decode(bytes: &[u8], root: &str, params: ChunkParams) -> Result<HashMap<String, Cached>, String> {
        let body_len = bytes.len().checked_sub(32).ok_or("truncated")?;
        let (body, sum) = bytes.split_at(body_len);
        if Digest::of(body).as_bytes() != sum {
            return Err("checksum mismatch".into());
        }
        let mut r = Cursor { bytes: body, at: 0 };
        if r.take(4)? != MAGIC {
            return Err("not a stat cache".into());
        }
        let version = u16::from_le_bytes(r.array()?);
        if version != FORMAT_VERSION {
            return Err(format!("format version {version}, this build reads {FORMAT_VERSION}"));
        }
        let got = ChunkParams { min: r.u32()?, avg: r.u32()?, max: r.u32()? };
        if got != params {
            return Err("made with other chunking parameters".into());
        }
        if r.bytes()? != root.as_bytes() {
            return Err("made for another directory".into());
        }
        let count = r.u64()?;
        let mut entries = HashMap::new();
        for _ in 0..count {
            let path = std::str::from_utf8(r.bytes()?).map_err(|_| "a path is not UTF-8")?.to_string();
            validate_path(&path).map_err(|e| e.to_string())?;
            let stat =
                FileStat { dev: r.u64()?, ino: r.u64()?, size: r.u64()?, mtime_ns: r.i64()?, ctime_ns: r.i64()? };
            let hashed_ns = r.i64()?;
            let n = r.u32()? as usize;
            // Each chunk takes 36 bytes: a count beyond what is left is a lie.
            if n > r.left() / 36 {
                return Err("chunk count beyond the file".into());
            }
            let mut chunks = Vec::with_capacity(n);
            let mut total = 0u64;
            for _ in 0..n {
                let d = Digest::from_bytes(r.array()?);
                let len = r.u32()?;
                if len == 0 || len > MAX_CHUNK_SIZE {
                    return Err("a chunk length is out of range".into());
                }
                total += u64::from(len);
                chunks.push((d, len));
            }
            if total != stat.size {
                return Err(format!("{path}: chunks do not add up to its size"));
            }
            entries.insert(path, Cached { stat, hashed_ns, chunks });
        }
        if r.left() != 0 {
            return Err("trailing bytes".into());
        }
        Ok(entries)
    }
}

/// A [`FileChunks`] from a cached chunk list.
fn file_chunks(list: &[(Digest, u32)], size: u64) -> FileChunks {
    let mut offset = 0u64;
    let chunks = list
        .iter()
        .map(|&(digest, len)| {
            let c = ChunkInfo { offset, len, digest };
            offset += u64::from(len);
            c
        })
        .collect();
    FileChunks { chunks, size, digest: file_digest(size, list.iter().copied()) }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Removes the oldest cache files beyond [`MAX_CACHE_FILES`] (and stale
/// temporary files). Best effort: another process may be doing the same.
fn prune(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.contains(".v") && !n.starts_with('.')))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if files.len() <= MAX_CACHE_FILES {
        return;
    }
    files.sort();
    let excess = files.len() - MAX_CACHE_FILES;
    for (_, p) in files.into_iter().take(excess) {
        let _ = fs::remove_file(p);
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.left() {
            return Err("truncated".into());
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use aetherfs_format::Chunker;

    const HOUR_NS: i64 = 3_600_000_000_000;

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let (root, dir) = (t.path().join("data"), t.path().join("cache"));
        fs::create_dir_all(&root).unwrap();
        (t, root, dir)
    }

    fn stat(path: &Path) -> FileStat {
        FileStat::of(&fs::symlink_metadata(path).unwrap())
    }

    fn chunks(path: &Path) -> FileChunks {
        Chunker::new(ChunkParams::default()).chunk(fs::File::open(path).unwrap()).unwrap()
    }

    /// A cache of `f` as a push an hour from now would have written it (so
    /// the entry is not racy).
    fn saved(root: &Path, dir: &Path, f: &str) -> FileChunks {
        let p = root.join(f);
        let fc = chunks(&p);
        let mut c = StatCache::new(root, ChunkParams::default());
        c.insert(f, stat(&p), now_ns() + HOUR_NS, &fc);
        assert_eq!(c.len(), 1);
        c.save(dir).unwrap();
        fc
    }

    fn load(root: &Path, dir: &Path) -> StatCache {
        let (c, err) = StatCache::load(dir, root, ChunkParams::default());
        assert!(err.is_none(), "{err:?}");
        c
    }

    #[test]
    fn hit_when_nothing_changed() {
        let (_t, root, dir) = setup();
        fs::write(root.join("f"), aetherfs_util::pseudo_random(300_000, 1)).unwrap();
        let fc = saved(&root, &dir, "f");
        let c = load(&root, &dir);
        assert_eq!(c.lookup("f", &stat(&root.join("f"))), Some(fc));
        assert_eq!(c.lookup("g", &stat(&root.join("f"))), None);
    }

    #[test]
    fn miss_on_size_mtime_or_inode_change() {
        let (_t, root, dir) = setup();
        let p = root.join("f");
        fs::write(&p, b"hello world").unwrap();
        saved(&root, &dir, "f");
        let c = load(&root, &dir);
        let s = stat(&p);
        assert!(c.lookup("f", &s).is_some());
        assert!(c.lookup("f", &FileStat { size: s.size + 1, ..s }).is_none(), "size");
        assert!(c.lookup("f", &FileStat { mtime_ns: s.mtime_ns + 1, ..s }).is_none(), "mtime");
        assert!(c.lookup("f", &FileStat { ctime_ns: s.ctime_ns + 1, ..s }).is_none(), "ctime");
        assert!(c.lookup("f", &FileStat { ino: s.ino + 1, ..s }).is_none(), "inode");
        assert!(c.lookup("f", &FileStat { dev: s.dev + 1, ..s }).is_none(), "device");
        // A real rewrite (same size, new inode through a rename).
        fs::write(root.join("g"), b"HELLO WORLD").unwrap();
        fs::rename(root.join("g"), &p).unwrap();
        assert!(c.lookup("f", &stat(&p)).is_none(), "replaced file");
    }

    #[test]
    fn racy_entries_are_neither_kept_nor_trusted() {
        let (_t, root, _dir) = setup();
        let p = root.join("f");
        fs::write(&p, b"first").unwrap();
        let s = stat(&p);
        // Hashed right now: its timestamps are inside the racy window.
        let mut c = StatCache::new(&root, ChunkParams::default());
        c.insert("f", s, now_ns(), &chunks(&p));
        assert!(c.is_empty(), "a racy entry was kept");
        // Written by an older build or a clock step: still not trusted.
        c.entries
            .insert("f".into(), Cached { stat: s, hashed_ns: s.ctime_ns + 1, chunks: vec![(Digest::of(b"first"), 5)] });
        assert!(c.lookup("f", &s).is_none(), "a racy entry was trusted");
        // The same stat hashed well after its last change is trusted.
        c.entries.get_mut("f").unwrap().hashed_ns = s.ctime_ns.max(s.mtime_ns) + FINE_MARGIN_NS + 1;
        if s.ctime_ns % 1_000_000_000 != 0 {
            assert!(c.lookup("f", &s).is_some());
        }
        // Whole-second timestamps (a coarse filesystem) widen the window.
        let coarse = FileStat { mtime_ns: 5_000_000_000, ctime_ns: 5_000_000_000, ..s };
        assert!(is_racy(&coarse, 6_500_000_000));
        assert!(!is_racy(&coarse, 7_000_000_001));
    }

    #[test]
    fn corrupt_or_foreign_files_are_ignored() {
        let (_t, root, dir) = setup();
        fs::write(root.join("f"), b"data").unwrap();
        saved(&root, &dir, "f");
        let file = StatCache::file_for(&dir, &root);
        let good = fs::read(&file).unwrap();

        let mut flipped = good.clone();
        flipped[20] ^= 1;
        let mut bad_count = good[..good.len() - 32].to_vec();
        // A huge entry count behind a valid checksum.
        let at = 4 + 2 + 12 + 4 + root.display().to_string().len();
        bad_count[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let sum = Digest::of(&bad_count);
        bad_count.extend_from_slice(sum.as_bytes());
        for (what, bytes) in [
            ("flipped", flipped),
            ("truncated", good[..good.len() - 5].to_vec()),
            ("empty", Vec::new()),
            ("garbage", b"not a cache at all, just text".to_vec()),
            ("lying count", bad_count),
        ] {
            fs::write(&file, &bytes).unwrap();
            let (c, err) = StatCache::load(&dir, &root, ChunkParams::default());
            assert!(c.is_empty(), "{what}: entries trusted");
            assert!(matches!(err, Some(StatCacheError::Unusable { .. })), "{what}: {err:?}");
        }

        // Another directory's cache under this name, or other parameters.
        fs::write(&file, &good).unwrap();
        let other = root.with_file_name("other");
        fs::copy(&file, StatCache::file_for(&dir, &other)).unwrap();
        let (c, err) = StatCache::load(&dir, &other, ChunkParams::default());
        assert!(c.is_empty() && err.is_some(), "foreign directory");
        let params = ChunkParams { min: 8 << 10, avg: 32 << 10, max: 128 << 10 };
        let (c, err) = StatCache::load(&dir, &root, params);
        assert!(c.is_empty() && err.is_some(), "other parameters");
        // No file: empty, nothing to warn about.
        let (c, err) = StatCache::load(&dir, &root.with_file_name("new"), ChunkParams::default());
        assert!(c.is_empty() && err.is_none());
    }

    #[test]
    fn saving_keeps_a_bounded_number_of_directories() {
        let (t, root, dir) = setup();
        fs::write(root.join("f"), b"data").unwrap();
        for i in 0..MAX_CACHE_FILES + 3 {
            let r = t.path().join(format!("root-{i}"));
            StatCache::new(&r, ChunkParams::default()).save(&dir).unwrap();
        }
        assert_eq!(fs::read_dir(&dir).unwrap().count(), MAX_CACHE_FILES);
    }
}
