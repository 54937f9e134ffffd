//! [`DiskCache`]: the index, the active segment, recovery and eviction.
//!
//! Locks: `writer` (the active segment; serializes appends, rotation and
//! eviction) is taken before `state` (index, segment table, byte count),
//! never the other way round. `state` is held only for map operations:
//! never across disk I/O or crypto. Readers take `state` alone, clone the
//! segment's `Arc<File>`, and read with `pread`; a segment evicted meanwhile
//! stays readable through that descriptor until the read is done.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aetherfs_format::Digest;
use bytes::Bytes;
use parking_lot::{Mutex, MutexGuard};
use zeroize::Zeroizing;

use super::crypto::{Keys, random};
use super::layout::{
    self, BuildIdHasher, ENTRY_HEADER_LEN, EntryHeader, EntryId, MAX_PLAIN, OurFile, SEG_HEADER_LEN, TAG_LEN,
};
use super::meta::{self, FLAG_EPHEMERAL, Meta, MetaRead};
use super::segment::{self, Placed};
use super::{CacheError, CacheKey, CacheStats, DiskCacheConfig};

/// Bounds on the segment size the cache settles on.
const MIN_SEGMENT: u64 = 256 << 10;
const MAX_SEGMENT: u64 = 1 << 30;
/// Segments are made larger rather than more numerous than this: each one
/// keeps a file descriptor open.
const MAX_SEGMENTS: u64 = 1024;
const LOCK_FILE: &str = "lock";

/// The segment size used for a configured size and bound: at most an eighth
/// of the bound (so eviction frees the cache gradually), at least
/// `max_bytes / 1024` (so the descriptors stay few).
pub(super) fn effective_segment_bytes(configured: u64, max_bytes: u64) -> u64 {
    let seg = configured.clamp(MIN_SEGMENT, MAX_SEGMENT).min((max_bytes / 8).max(MIN_SEGMENT));
    seg.max(max_bytes.div_ceil(MAX_SEGMENTS)).min(MAX_SEGMENT)
}

/// Where an entry lives.
#[derive(Clone, Copy, Debug)]
struct Loc {
    seg: u64,
    off: u32,
    clen: u32,
    /// Read since it was written: survives the eviction of its segment once.
    referenced: bool,
}

impl Loc {
    fn at(&self, seg: u64, off: u32) -> bool {
        self.seg == seg && self.off == off
    }
}

struct SegInfo {
    file: Arc<File>,
    len: u64,
}

struct State {
    index: HashMap<EntryId, Loc, BuildIdHasher>,
    /// Every segment on disk, oldest first; the last is the active one.
    segments: BTreeMap<u64, SegInfo>,
    /// Sum of the segments' lengths.
    total_bytes: u64,
}

impl State {
    /// Where `id` is and a descriptor to read it, marking it referenced if
    /// asked. An entry whose segment is gone is forgotten.
    fn find(&mut self, id: &EntryId, mark: bool) -> Option<(Loc, Arc<File>)> {
        let loc = self.index.get_mut(id)?;
        match self.segments.get(&loc.seg) {
            Some(s) => {
                loc.referenced |= mark;
                Some((*loc, s.file.clone()))
            }
            None => {
                self.index.remove(id);
                None
            }
        }
    }
}

/// The segment being appended to.
struct Writer {
    seg: u64,
    file: Arc<File>,
    len: u64,
    /// Its entries, for the index hint written when it is sealed.
    entries: Vec<Placed>,
    /// A failed write could not be undone: seal before the next append.
    broken: bool,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    puts: AtomicU64,
    corrupt_dropped: AtomicU64,
    evicted_bytes: AtomicU64,
    promoted: AtomicU64,
    write_errors: AtomicU64,
}

/// Logs the 1st, 2nd, 4th, 8th... occurrence of a recurring problem.
fn worth_logging(count: u64) -> bool {
    count.is_power_of_two()
}

/// The encrypted on-disk chunk cache. Blocking and thread-safe: call it from
/// `spawn_blocking` in async code. See the module documentation of `cache`.
pub struct DiskCache {
    dir: PathBuf,
    keys: Keys,
    cache_id: [u8; 16],
    max_bytes: u64,
    seg_bytes: u64,
    /// The largest entry (header + ciphertext) accepted: a quarter segment.
    max_entry: u64,
    ephemeral: bool,
    state: Mutex<State>,
    writer: Mutex<Writer>,
    counters: Counters,
    /// Holds the directory's flock for the life of the cache.
    _lock: File,
}

impl std::fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskCache").field("dir", &self.dir).field("max_bytes", &self.max_bytes).finish_non_exhaustive()
    }
}

impl DiskCache {
    /// Opens (or creates) the cache in `cfg.dir`: takes the directory's lock,
    /// checks the key against the metadata (a different key wipes the cache),
    /// rebuilds the index from segment hints and headers, cuts torn tails, and
    /// evicts down to the bound. With an ephemeral key, whatever the directory
    /// held is deleted first.
    pub fn open(cfg: DiskCacheConfig) -> Result<Self, CacheError> {
        let DiskCacheConfig { dir, max_bytes, key, segment_bytes } = cfg;
        let io_err = |source| CacheError::Io { path: dir.clone(), source };
        create_private_dir(&dir).map_err(io_err)?;
        let lock = lock_dir(&dir)?;
        let (master, ephemeral) = match key {
            CacheKey::Persistent(k) => (k, false),
            CacheKey::Ephemeral => (random::<32>()?, true),
        };
        let (meta, keys) = load_or_init(&dir, &master, ephemeral)?;
        drop(master);
        let cache_id = meta.cache_id();
        let seg_bytes = effective_segment_bytes(segment_bytes, max_bytes);
        let max_entry = (seg_bytes / 4).min((ENTRY_HEADER_LEN + MAX_PLAIN + TAG_LEN) as u64);

        let Recovered { mut segs, max_seen } = recover(&dir, &cache_id).map_err(io_err)?;
        // The last segment stays the active one if it was being filled.
        let reuse = segs.last().is_some_and(|s| !s.sealed && s.len < seg_bytes);
        let active = if reuse { segs.pop() } else { None };
        let mut state =
            State { index: HashMap::with_hasher(BuildIdHasher::default()), segments: BTreeMap::new(), total_bytes: 0 };
        for s in segs {
            if s.entries.is_empty() {
                remove_segment_files(&dir, s.id);
                continue;
            }
            if !s.sealed
                && let Err(e) = segment::write_hint(&dir, &cache_id, s.id, s.len, &s.entries)
            {
                tracing::debug!(segment = s.id, error = %e, "cannot write a cache index hint");
            }
            state.add(s.id, Arc::new(s.file), s.len, &s.entries);
        }
        let writer = match active {
            Some(s) => {
                let file = Arc::new(s.file);
                state.add(s.id, file.clone(), s.len, &s.entries);
                Writer { seg: s.id, file, len: s.len, entries: s.entries, broken: false }
            }
            None => {
                let (seg, file) = create_next_segment(&dir, &cache_id, max_seen + 1).map_err(io_err)?;
                let file = Arc::new(file);
                state.add(seg, file.clone(), SEG_HEADER_LEN, &[]);
                Writer { seg, file, len: SEG_HEADER_LEN, entries: Vec::new(), broken: false }
            }
        };
        let cache = Self {
            dir,
            keys,
            cache_id,
            max_bytes,
            seg_bytes,
            max_entry,
            ephemeral,
            state: Mutex::new(state),
            writer: Mutex::new(writer),
            counters: Counters::default(),
            _lock: lock,
        };
        {
            let mut w = cache.writer();
            cache.evict_to_bound(&mut w);
        }
        let s = cache.stats();
        tracing::info!(
            dir = %cache.dir.display(),
            entries = s.entries,
            bytes = s.bytes,
            segments = s.segments,
            max_bytes,
            segment_bytes = seg_bytes,
            ephemeral,
            "disk cache open"
        );
        Ok(cache)
    }

    /// The verified plaintext of `digest`, or `None`. An entry that fails
    /// verification is dropped from the index and counted.
    pub fn get(&self, digest: &Digest) -> Option<Bytes> {
        let id = self.keys.entry_id(digest);
        let found = self.state().find(&id, true);
        let Some((loc, file)) = found else {
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        match self.read_entry(&file, &loc, &id, digest) {
            Ok(plain) => {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                Some(plain)
            }
            Err(why) => {
                self.drop_corrupt(&id, &loc, digest, why);
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Caches `plain`, the plaintext of `digest`. Errors are logged and
    /// counted; a chunk larger than a quarter segment is not cached.
    pub fn put(&self, digest: &Digest, plain: &[u8]) {
        debug_assert!(Digest::of(plain) == *digest, "put of bytes that do not match their digest");
        let entry_len = (ENTRY_HEADER_LEN + TAG_LEN + plain.len()) as u64;
        if entry_len > self.max_entry {
            tracing::debug!(%digest, len = plain.len(), "chunk too large for the disk cache");
            return;
        }
        let id = self.keys.entry_id(digest);
        if self.state().find(&id, false).is_some() {
            return;
        }
        // Encrypt before taking the writer: puts of several threads seal in parallel.
        let sealed = match self.keys.seal(id, digest, plain) {
            Ok(b) => b,
            Err(e) => return self.write_failed(&e.to_string()),
        };
        let mut w = self.writer();
        if self.state().find(&id, false).is_some() {
            return; // a concurrent put of the same chunk came first
        }
        match self.append(&mut w, &sealed, id, None) {
            Ok(()) => {
                self.counters.puts.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.write_failed(&e.to_string()),
        }
        self.evict_to_bound(&mut w);
    }

    /// Whether `digest` is in the index (its bytes are verified only by `get`).
    pub fn contains(&self, digest: &Digest) -> bool {
        let id = self.keys.entry_id(digest);
        self.state().find(&id, false).is_some()
    }

    pub fn stats(&self) -> CacheStats {
        let (bytes, segments, entries) = {
            let st = self.state();
            (st.total_bytes, st.segments.len() as u64, st.index.len() as u64)
        };
        let c = &self.counters;
        CacheStats {
            bytes,
            segments,
            entries,
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            puts: c.puts.load(Ordering::Relaxed),
            corrupt_dropped: c.corrupt_dropped.load(Ordering::Relaxed),
            evicted_bytes: c.evicted_bytes.load(Ordering::Relaxed),
            promoted: c.promoted.load(Ordering::Relaxed),
            write_errors: c.write_errors.load(Ordering::Relaxed),
        }
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The segment size in use (see [`effective_segment_bytes`]).
    #[cfg(test)]
    pub fn segment_bytes(&self) -> u64 {
        self.seg_bytes
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock()
    }

    /// Reads the entry's header and ciphertext with one `pread` into one
    /// buffer, checks the header, decrypts in place, and hands out the
    /// plaintext as a slice of that buffer (no copy).
    fn read_entry(&self, file: &File, loc: &Loc, id: &EntryId, digest: &Digest) -> Result<Bytes, &'static str> {
        let mut buf = vec![0u8; ENTRY_HEADER_LEN + loc.clen as usize];
        file.read_exact_at(&mut buf, u64::from(loc.off)).map_err(|_| "entry unreadable")?;
        let (h, ct) = buf.split_at_mut(ENTRY_HEADER_LEN);
        let h: &[u8; ENTRY_HEADER_LEN] = (&*h).try_into().map_err(|_| "entry header unreadable")?;
        let header = EntryHeader::decode(h).ok_or("invalid entry header")?;
        if header.id != *id || header.clen != loc.clen {
            return Err("entry header does not match the index");
        }
        let plen = self.keys.open(digest, &header.nonce, ct)?;
        Ok(Bytes::from(buf).slice(ENTRY_HEADER_LEN..ENTRY_HEADER_LEN + plen))
    }

    fn drop_corrupt(&self, id: &EntryId, loc: &Loc, digest: &Digest, why: &str) {
        {
            let mut st = self.state();
            if st.index.get(id).is_some_and(|cur| cur.at(loc.seg, loc.off)) {
                st.index.remove(id);
            }
        }
        let n = self.counters.corrupt_dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if worth_logging(n) {
            tracing::warn!(%digest, segment = loc.seg, offset = loc.off, why, dropped_so_far = n,
                "disk cache entry failed verification; dropped, the chunk will be fetched again");
        }
    }

    fn write_failed(&self, why: &str) {
        let n = self.counters.write_errors.fetch_add(1, Ordering::Relaxed) + 1;
        if worth_logging(n) {
            tracing::warn!(dir = %self.dir.display(), error = why, errors_so_far = n, "disk cache write failed");
        }
    }

    /// Appends a whole entry to the active segment (sealing it first if the
    /// entry would overflow it) and indexes it. A new entry is inserted; a
    /// copied one (`from`) replaces its index entry only if that still points
    /// at the original.
    fn append(&self, w: &mut Writer, bytes: &[u8], id: EntryId, from: Option<Loc>) -> io::Result<()> {
        let len = bytes.len() as u64;
        let clen =
            bytes.len().checked_sub(ENTRY_HEADER_LEN).ok_or_else(|| io::Error::other("entry without a header"))?;
        let clen = u32::try_from(clen).map_err(io::Error::other)?;
        if w.broken || (w.len + len > self.seg_bytes && w.len > SEG_HEADER_LEN) {
            self.rotate(w)?;
        }
        let off = w.len;
        let off32 = u32::try_from(off).map_err(io::Error::other)?;
        if let Err(e) = w.file.write_all_at(bytes, off) {
            // Cut the partial entry off; if that fails too, a later open cuts it.
            if w.file.set_len(off).is_err() {
                w.broken = true;
            }
            return Err(e);
        }
        w.len += len;
        w.entries.push(Placed { id, off: off32, clen });
        let new = Loc { seg: w.seg, off: off32, clen, referenced: false };
        let mut st = self.state();
        match from {
            None => {
                st.index.insert(id, new);
            }
            Some(old) => {
                if let Some(cur) = st.index.get_mut(&id).filter(|cur| cur.at(old.seg, old.off)) {
                    *cur = new;
                }
            }
        }
        if let Some(s) = st.segments.get_mut(&w.seg) {
            s.len = w.len;
            st.total_bytes += len;
        }
        Ok(())
    }

    /// Seals the active segment (writes its index hint) and starts the next.
    fn rotate(&self, w: &mut Writer) -> io::Result<()> {
        let (seg, file) = create_next_segment(&self.dir, &self.cache_id, w.seg + 1)?;
        if let Err(e) = segment::write_hint(&self.dir, &self.cache_id, w.seg, w.len, &w.entries) {
            tracing::debug!(segment = w.seg, error = %e, "cannot write a cache index hint");
        }
        let file = Arc::new(file);
        self.state().add(seg, file.clone(), SEG_HEADER_LEN, &[]);
        *w = Writer { seg, file, len: SEG_HEADER_LEN, entries: Vec::new(), broken: false };
        Ok(())
    }

    /// Deletes the oldest segments until the total is within the bound (or
    /// only the active segment is left).
    fn evict_to_bound(&self, w: &mut Writer) {
        loop {
            let victim = {
                let st = self.state();
                if st.total_bytes <= self.max_bytes {
                    return;
                }
                match st.segments.iter().next() {
                    Some((&seg, s)) if seg != w.seg => (seg, s.file.clone(), s.len),
                    _ => return,
                }
            };
            self.evict_segment(w, victim);
        }
    }

    /// Evicts one sealed segment. Entries read since they were written (up to
    /// half a segment of them) are first copied verbatim into the active
    /// segment and lose their mark: a second chance, as in CLOCK.
    fn evict_segment(&self, w: &mut Writer, (seg, file, len): (u64, Arc<File>, u64)) {
        let (entries, exact) = match segment::read_hint(&self.dir, &self.cache_id, seg, len) {
            Some(e) => (e, true),
            None => match segment::scan(&file, len) {
                Ok(s) => (s.entries, s.stopped.is_none()),
                Err(_) => (Vec::new(), false),
            },
        };
        let budget = (len / 2).min(self.seg_bytes / 2);
        let mut keep = Vec::new();
        {
            let st = self.state();
            let mut kept = 0;
            for e in &entries {
                let hot = st.index.get(&e.id).is_some_and(|l| l.at(seg, e.off) && l.referenced);
                let size = e.end() - u64::from(e.off);
                if hot && kept + size <= budget {
                    keep.push(*e);
                    kept += size;
                }
            }
        }
        let mut buf = Vec::new();
        for e in keep {
            buf.resize((e.end() - u64::from(e.off)) as usize, 0);
            let mut h = [0u8; ENTRY_HEADER_LEN];
            let intact = file.read_exact_at(&mut buf, u64::from(e.off)).is_ok() && {
                h.copy_from_slice(&buf[..ENTRY_HEADER_LEN]);
                EntryHeader::decode(&h).is_some_and(|hd| hd.id == e.id && hd.clen == e.clen)
            };
            if !intact {
                // Forgotten with the rest of the segment below.
                self.counters.corrupt_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let old = Loc { seg, off: e.off, clen: e.clen, referenced: true };
            match self.append(w, &buf, e.id, Some(old)) {
                Ok(()) => {
                    self.counters.promoted.fetch_add(1, Ordering::Relaxed);
                }
                Err(err) => self.write_failed(&err.to_string()),
            }
        }
        {
            let mut st = self.state();
            if let Some(s) = st.segments.remove(&seg) {
                st.total_bytes = st.total_bytes.saturating_sub(s.len);
            }
            for e in &entries {
                if st.index.get(&e.id).is_some_and(|l| l.at(seg, e.off)) {
                    st.index.remove(&e.id);
                }
            }
            if !exact {
                // The segment could not be listed: sweep the whole index.
                st.index.retain(|_, l| l.seg != seg);
            }
        }
        remove_segment_files(&self.dir, seg);
        self.counters.evicted_bytes.fetch_add(len, Ordering::Relaxed);
        tracing::debug!(segment = seg, bytes = len, "disk cache evicted a segment");
    }

    /// Writes a second copy of an entry even if the chunk is cached (tests
    /// use it to compare two encryptions of one plaintext).
    #[cfg(test)]
    pub(super) fn put_again(&self, digest: &Digest, plain: &[u8]) {
        let id = self.keys.entry_id(digest);
        let sealed = self.keys.seal(id, digest, plain).unwrap();
        let mut w = self.writer();
        self.append(&mut w, &sealed, id, None).unwrap();
    }
}

impl Drop for DiskCache {
    /// An ephemeral cache leaves nothing readable behind (best effort: a
    /// crash leaves segments that the next open deletes, since their key is gone).
    fn drop(&mut self) {
        if self.ephemeral {
            match wipe(&self.dir) {
                Ok(_) => tracing::debug!(dir = %self.dir.display(), "ephemeral disk cache deleted"),
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot delete the ephemeral disk cache")
                }
            }
        }
    }
}

impl State {
    fn add(&mut self, seg: u64, file: Arc<File>, len: u64, entries: &[Placed]) {
        for e in entries {
            self.index.insert(e.id, Loc { seg, off: e.off, clen: e.clen, referenced: false });
        }
        self.segments.insert(seg, SegInfo { file, len });
        self.total_bytes += len;
    }
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a directory"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::info!(dir = %dir.display(), mode = format_args!("{mode:o}"),
            "the cache directory is open to group or others; its files are 0600 and encrypted");
    }
    Ok(())
}

/// One process per cache directory: two appenders would interleave entries.
fn lock_dir(dir: &Path) -> Result<File, CacheError> {
    let io_err = |source| CacheError::Io { path: dir.to_path_buf(), source };
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join(LOCK_FILE))
        .map_err(io_err)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(TryLockError::WouldBlock) => Err(CacheError::Locked { path: dir.to_path_buf() }),
        Err(TryLockError::Error(e)) => Err(io_err(e)),
    }
}

/// Reads the metadata and checks the key; starts a new cache generation (new
/// salt, empty directory) if there is none, it is unusable, the key does not
/// match, or the key is ephemeral.
fn load_or_init(dir: &Path, master: &Zeroizing<[u8; 32]>, ephemeral: bool) -> Result<(Meta, Keys), CacheError> {
    let io_err = |source| CacheError::Io { path: dir.to_path_buf(), source };
    match meta::read(dir) {
        Ok(MetaRead::Found(m)) if !ephemeral => {
            let keys = Keys::derive(master, &m.salt)?;
            if m.flags & FLAG_EPHEMERAL == 0 && keys.verify_key_check(&m.check_nonce, &m.check_value) {
                return Ok((m, keys));
            }
            tracing::warn!(dir = %dir.display(),
                "the disk cache was written with another key (the key changed); wiping it and starting over");
        }
        Ok(MetaRead::Invalid(why)) => {
            tracing::warn!(dir = %dir.display(), why = %why, "unusable disk cache metadata; wiping the cache and starting over");
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "unreadable disk cache metadata; wiping the cache");
        }
        Ok(MetaRead::Found(_) | MetaRead::Missing) => {}
    }
    let removed = wipe(dir).map_err(io_err)?;
    if removed > 0 {
        tracing::info!(dir = %dir.display(), files = removed, "disk cache emptied");
    }
    let salt = random::<32>()?;
    let keys = Keys::derive(master, &salt)?;
    let (check_nonce, check_value) = keys.key_check()?;
    let m = Meta { flags: if ephemeral { FLAG_EPHEMERAL } else { 0 }, salt: *salt, check_nonce, check_value };
    meta::write(dir, &m).map_err(io_err)?;
    Ok((m, keys))
}

/// Deletes every file of ours in `dir` (never anything else); returns how many.
fn wipe(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_str().and_then(layout::classify).is_some() {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(path = %entry.path().display(), error = %e, "cannot delete a cache file"),
            }
        }
    }
    Ok(removed)
}

fn remove_segment_files(dir: &Path, seg: u64) {
    for path in [layout::segment_path(dir, seg), layout::hint_path(dir, seg)] {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot delete a cache segment"),
        }
    }
}

/// Creates the first free segment numbered `from` or later.
fn create_next_segment(dir: &Path, cache_id: &[u8; 16], from: u64) -> io::Result<(u64, File)> {
    let mut last = None;
    for seg in from..from + 16 {
        match segment::create_segment(dir, cache_id, seg) {
            Ok(f) => return Ok((seg, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free segment number")))
}

struct RecoveredSeg {
    id: u64,
    file: File,
    len: u64,
    entries: Vec<Placed>,
    /// Its index hint was intact: it was sealed before the last shutdown.
    sealed: bool,
}

struct Recovered {
    /// Usable segments, oldest first.
    segs: Vec<RecoveredSeg>,
    /// The highest segment number seen, usable or not.
    max_seen: u64,
}

/// Lists the directory and recovers every segment of this cache generation;
/// deletes leftovers (temporary files, orphan hints, foreign or unreadable segments).
fn recover(dir: &Path, cache_id: &[u8; 16]) -> io::Result<Recovered> {
    let mut ids = Vec::new();
    let mut hints = HashSet::new();
    let mut max_seen = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(kind) = entry.file_name().to_str().and_then(layout::classify) else { continue };
        match kind {
            OurFile::Segment(n) => {
                ids.push(n);
                max_seen = max_seen.max(n);
            }
            OurFile::Hint(n) => {
                hints.insert(n);
                max_seen = max_seen.max(n);
            }
            OurFile::Temp => {
                let _ = std::fs::remove_file(entry.path());
            }
            OurFile::Meta => {}
        }
    }
    ids.sort_unstable();
    for orphan in hints.iter().filter(|h| ids.binary_search(h).is_err()) {
        let _ = std::fs::remove_file(layout::hint_path(dir, *orphan));
    }
    let mut segs = Vec::with_capacity(ids.len());
    for id in ids {
        match recover_segment(dir, cache_id, id) {
            Ok(Some(s)) => segs.push(s),
            Ok(None) => remove_segment_files(dir, id),
            Err(e) => {
                tracing::warn!(segment = id, error = %e, "unreadable disk cache segment; deleting it");
                remove_segment_files(dir, id);
            }
        }
    }
    Ok(Recovered { segs, max_seen })
}

fn recover_segment(dir: &Path, cache_id: &[u8; 16], id: u64) -> io::Result<Option<RecoveredSeg>> {
    let file = File::options().read(true).write(true).open(layout::segment_path(dir, id))?;
    let len = file.metadata()?.len();
    if !segment::header_ok(&file, cache_id, id)? {
        tracing::debug!(segment = id, "not a segment of this cache generation; deleting it");
        return Ok(None);
    }
    if let Some(entries) = segment::read_hint(dir, cache_id, id, len) {
        return Ok(Some(RecoveredSeg { id, file, len, entries, sealed: true }));
    }
    let scan = segment::scan(&file, len)?;
    if let Some(why) = scan.stopped {
        tracing::info!(
            segment = id,
            why,
            kept = scan.valid_len,
            cut = len - scan.valid_len,
            "cutting a disk cache segment after its last whole entry"
        );
        file.set_len(scan.valid_len)?;
    }
    let _ = std::fs::remove_file(layout::hint_path(dir, id));
    Ok(Some(RecoveredSeg { id, file, len: scan.valid_len, entries: scan.entries, sealed: false }))
}
