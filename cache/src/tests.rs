//! Scenarios for the disk cache: persistence, keys, corruption, crashes,
//! the size bound and eviction, nonces, concurrency, and throughput.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use aetherfs_format::Digest;
use aetherfs_util::pseudo_random;
use zeroize::Zeroizing;

use super::disk::effective_segment_bytes;
use super::layout::{self, ENTRY_HEADER_LEN, EntryHeader, META_FILE, OurFile, SEG_HEADER_LEN};
use super::segment;
use super::*;

fn key(b: u8) -> CacheKey {
    CacheKey::Persistent(Zeroizing::new([b; 32]))
}

fn open(dir: &Path, max_bytes: u64, segment_bytes: u64, key: CacheKey) -> DiskCache {
    DiskCache::open(DiskCacheConfig { dir: dir.to_path_buf(), max_bytes, key, segment_bytes }).unwrap()
}

struct Chunk {
    digest: Digest,
    bytes: Vec<u8>,
}

fn chunks(seeds: std::ops::Range<u64>, len: impl Fn(u64) -> usize) -> Vec<Chunk> {
    seeds
        .map(|s| {
            let bytes = pseudo_random(len(s), s);
            Chunk { digest: Digest::of(&bytes), bytes }
        })
        .collect()
}

fn files(dir: &Path, want: impl Fn(&OurFile) -> bool) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let kind = layout::classify(e.file_name().to_str()?)?;
            want(&kind).then(|| e.path())
        })
        .collect();
    out.sort();
    out
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    files(dir, |k| matches!(k, OurFile::Segment(_)))
}

fn segment_bytes_on_disk(dir: &Path) -> u64 {
    segment_files(dir).iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        // Files may vanish while a live cache is copied (eviction).
        let _ = std::fs::copy(e.path(), to.join(e.file_name()));
    }
}

/// Every get returns the right bytes or nothing; returns how many hit.
fn check_never_wrong(cache: &DiskCache, all: &[Chunk]) -> usize {
    let mut hits = 0;
    for c in all {
        if let Some(got) = cache.get(&c.digest) {
            assert!(got == c.bytes, "wrong bytes served for {}", c.digest);
            hits += 1;
        }
    }
    hits
}

#[test]
fn is_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<DiskCache>();
    check::<Arc<dyn ChunkCache>>();
}

#[test]
fn round_trip() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("cache");
    let dir = dir.as_path();
    let cache = open(dir, 64 << 20, 4 << 20, key(1));
    let all = chunks(0..200, |s| 1 + (s as usize * 977) % 70_000);
    for c in &all {
        assert!(!cache.contains(&c.digest));
        cache.put(&c.digest, &c.bytes);
        assert!(cache.contains(&c.digest));
    }
    for c in &all {
        assert_eq!(cache.get(&c.digest).as_deref(), Some(&c.bytes[..]));
    }
    let empty = Digest::of(b"");
    cache.put(&empty, b"");
    assert_eq!(cache.get(&empty).as_deref(), Some(&b""[..]));
    assert_eq!(cache.get(&Digest::of(b"never stored")), None);

    let before = cache.stats();
    cache.put(&all[0].digest, &all[0].bytes); // already cached: nothing written
    let s = cache.stats();
    assert_eq!((s.puts, s.bytes, s.entries), (before.puts, before.bytes, before.entries));
    assert_eq!((s.puts, s.entries, s.hits, s.misses), (201, 201, 201, 1));
    assert_eq!((s.corrupt_dropped, s.write_errors, s.evicted_bytes), (0, 0, 0));
    assert_eq!(s.bytes, segment_bytes_on_disk(dir));
    assert_eq!(cache.max_bytes(), 64 << 20);

    // The directory and every file in it are private.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir), 0o700);
    for f in files(dir, |_| true) {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
}

#[test]
fn creates_the_directory_0700() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("a/b/cache");
    let cache = open(&dir, 8 << 20, 1 << 20, key(1));
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    drop(cache);
}

#[test]
fn persists_across_reopen_with_the_same_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let keyfile = dir.path().join("key");
    std::fs::write(&keyfile, format!("{}\n", hex::encode([0x5a; 32]))).unwrap();
    std::fs::set_permissions(&keyfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cdir = dir.path().join("cache");
    // Small segments: several are sealed (with index hints), one is active.
    let first = chunks(0..300, |s| 2000 + (s as usize * 131) % 30_000);
    {
        let cache = open(&cdir, 64 << 20, 1 << 20, CacheKey::from_file(&keyfile).unwrap());
        for c in &first {
            cache.put(&c.digest, &c.bytes);
        }
        assert!(cache.stats().segments > 3);
    }
    assert!(!files(&cdir, |k| matches!(k, OurFile::Hint(_))).is_empty(), "sealed segments have hints");
    let second = chunks(300..400, |s| 2000 + (s as usize * 131) % 30_000);
    {
        let cache = open(&cdir, 64 << 20, 1 << 20, CacheKey::from_file(&keyfile).unwrap());
        assert_eq!(cache.stats().entries, 300);
        assert_eq!(check_never_wrong(&cache, &first), 300);
        for c in &second {
            cache.put(&c.digest, &c.bytes);
        }
    }
    // Without hints the segments are scanned: same result.
    for h in files(&cdir, |k| matches!(k, OurFile::Hint(_))) {
        std::fs::remove_file(h).unwrap();
    }
    let cache = open(&cdir, 64 << 20, 1 << 20, CacheKey::from_file(&keyfile).unwrap());
    assert_eq!(cache.stats().entries, 400);
    assert_eq!(check_never_wrong(&cache, &first), 300);
    assert_eq!(check_never_wrong(&cache, &second), 100);
    assert_eq!(cache.stats().corrupt_dropped, 0);
}

#[test]
fn a_different_key_wipes_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let all = chunks(0..50, |_| 10_000);
    {
        let cache = open(dir.path(), 64 << 20, 1 << 20, key(1));
        for c in &all {
            cache.put(&c.digest, &c.bytes);
        }
    }
    std::fs::write(dir.path().join("notes.txt"), b"not ours").unwrap();
    let old_segments = segment_files(dir.path());
    {
        let cache = open(dir.path(), 64 << 20, 1 << 20, key(2));
        assert_eq!(cache.stats().entries, 0);
        assert_eq!(check_never_wrong(&cache, &all), 0);
        assert_eq!(cache.stats().misses, 50);
        for p in &old_segments {
            if p.exists() {
                // Only a fresh, empty active segment may reuse a name.
                assert_eq!(std::fs::metadata(p).unwrap().len(), SEG_HEADER_LEN);
            }
        }
        cache.put(&all[0].digest, &all[0].bytes);
    }
    assert_eq!(std::fs::read(dir.path().join("notes.txt")).unwrap(), b"not ours", "other files are left alone");
    // The new key's cache persists; the old key now finds nothing.
    let cache = open(dir.path(), 64 << 20, 1 << 20, key(2));
    assert_eq!(check_never_wrong(&cache, &all), 1);
    drop(cache);
    let cache = open(dir.path(), 64 << 20, 1 << 20, key(1));
    assert_eq!(check_never_wrong(&cache, &all), 0);
}

#[test]
fn unusable_metadata_wipes_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let all = chunks(0..20, |_| 5000);
    for damage in [
        |b: &mut Vec<u8>| b[8] = 2,   // a future format version
        |b: &mut Vec<u8>| b[20] ^= 1, // a damaged salt
        |b: &mut Vec<u8>| b.truncate(10),
    ] {
        {
            let cache = open(dir.path(), 64 << 20, 1 << 20, key(1));
            for c in &all {
                cache.put(&c.digest, &c.bytes);
            }
        }
        let meta_path = dir.path().join(META_FILE);
        let mut b = std::fs::read(&meta_path).unwrap();
        damage(&mut b);
        std::fs::write(&meta_path, &b).unwrap();
        let cache = open(dir.path(), 64 << 20, 1 << 20, key(1));
        assert_eq!(cache.stats().entries, 0);
        assert_eq!(check_never_wrong(&cache, &all), 0);
    }
    // A missing metadata file: the segments cannot be decrypted, so they go.
    std::fs::remove_file(dir.path().join(META_FILE)).unwrap();
    let cache = open(dir.path(), 64 << 20, 1 << 20, key(1));
    assert_eq!(cache.stats().entries, 0);
}

#[test]
fn ephemeral_caches_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let all = chunks(0..100, |_| 20_000);
    // Left over from a persistent cache: deleted by an ephemeral open.
    {
        let cache = open(dir.path(), 64 << 20, 1 << 20, key(1));
        for c in &all[..50] {
            cache.put(&c.digest, &c.bytes);
        }
    }
    let snapshot = tempfile::tempdir().unwrap();
    {
        let cache = open(dir.path(), 64 << 20, 1 << 20, CacheKey::Ephemeral);
        assert_eq!((cache.stats().entries, check_never_wrong(&cache, &all)), (0, 0));
        for c in &all {
            cache.put(&c.digest, &c.bytes);
        }
        assert_eq!(check_never_wrong(&cache, &all), 100);
        assert!(segment_files(dir.path()).len() > 1);
        // What a kill -9 would leave behind.
        copy_dir(dir.path(), snapshot.path());
    }
    assert!(segment_files(dir.path()).is_empty(), "segments left after drop");
    assert!(files(dir.path(), |_| true).is_empty(), "cache files left after drop");

    let cache = open(dir.path(), 64 << 20, 1 << 20, CacheKey::Ephemeral);
    assert_eq!(check_never_wrong(&cache, &all), 0);
    drop(cache);
    // After a crash, neither a new ephemeral key nor a persistent one reads anything.
    let crashed = tempfile::tempdir().unwrap();
    copy_dir(snapshot.path(), crashed.path());
    let cache = open(crashed.path(), 64 << 20, 1 << 20, CacheKey::Ephemeral);
    assert_eq!((cache.stats().entries, check_never_wrong(&cache, &all)), (0, 0));
    drop(cache);
    let cache = open(snapshot.path(), 64 << 20, 1 << 20, key(1));
    assert_eq!((cache.stats().entries, check_never_wrong(&cache, &all)), (0, 0));
}

#[test]
fn leftovers_of_crashes_are_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let all = chunks(0..40, |_| 3000);
    {
        let cache = open(dir.path(), 64 << 20, 256 << 10, key(1));
        for c in &all {
            cache.put(&c.digest, &c.bytes);
        }
    }
    let d = dir.path();
    std::fs::write(d.join("seg-0000000090.dat"), b"").unwrap(); // created, header never written
    std::fs::write(d.join("seg-0000000091.dat"), pseudo_random(5000, 1)).unwrap(); // garbage
    std::fs::write(d.join("seg-0000000091.idx"), pseudo_random(500, 2)).unwrap();
    std::fs::write(d.join("seg-0000000092.idx"), pseudo_random(500, 3)).unwrap(); // orphan hint
    std::fs::write(d.join("seg-0000000001.idx.tmp"), b"torn").unwrap();
    std::fs::write(d.join("cache.meta.tmp"), b"torn").unwrap();
    let cache = open(d, 64 << 20, 256 << 10, key(1));
    assert_eq!(check_never_wrong(&cache, &all), all.len());
    for gone in ["seg-0000000090.dat", "seg-0000000091.dat", "seg-0000000091.idx", "seg-0000000092.idx"] {
        assert!(!d.join(gone).exists(), "{gone} left behind");
    }
    assert!(!d.join("seg-0000000001.idx.tmp").exists() && !d.join("cache.meta.tmp").exists());
    let before = segment_files(d).len();
    let more = chunks(100..300, |_| 3000);
    for c in &more {
        cache.put(&c.digest, &c.bytes);
    }
    assert!(segment_files(d).len() > before);
    assert_eq!(check_never_wrong(&cache, &more), more.len());
    drop(cache);
    let cache = open(d, 64 << 20, 256 << 10, key(1));
    assert_eq!(check_never_wrong(&cache, &all) + check_never_wrong(&cache, &more), all.len() + more.len());
}

#[test]
fn one_process_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 8 << 20, 1 << 20, key(1));
    let second = DiskCache::open(DiskCacheConfig::new(dir.path(), 8 << 20, key(1)));
    assert!(matches!(second, Err(CacheError::Locked { .. })), "{second:?}");
    drop(cache);
    drop(open(dir.path(), 8 << 20, 1 << 20, key(1)));
}

/// Builds a closed cache holding `all` and returns the files' pristine bytes.
fn pristine(dir: &Path, all: &[Chunk], segment_bytes: u64) {
    let cache = open(dir, 64 << 20, segment_bytes, key(7));
    for c in all {
        cache.put(&c.digest, &c.bytes);
    }
}

#[test]
fn flipped_bytes_never_serve_wrong_data() {
    // One segment, entries small enough to flip every byte of it.
    let base = tempfile::tempdir().unwrap();
    let all = chunks(0..4, |s| 100 + s as usize * 50);
    let src = base.path().join("pristine");
    pristine(&src, &all, 1 << 20);
    let seg = segment_files(&src).pop().unwrap();
    let name = seg.file_name().unwrap().to_owned();
    let len = std::fs::metadata(&seg).unwrap().len() as usize;
    let mut corrupt_seen = 0;
    for pos in 0..len {
        let dir = base.path().join(format!("flip-{pos}"));
        copy_dir(&src, &dir);
        let mut b = std::fs::read(dir.join(&name)).unwrap();
        b[pos] ^= 0x04;
        std::fs::write(dir.join(&name), &b).unwrap();
        {
            let cache = open(&dir, 64 << 20, 1 << 20, key(7));
            let hits = check_never_wrong(&cache, &all);
            let s = cache.stats();
            corrupt_seen += s.corrupt_dropped;
            assert!(hits < all.len(), "a flip at {pos} went unnoticed");
            // Dropped entries are gone from the index; the cache keeps working.
            assert_eq!(check_never_wrong(&cache, &all), hits);
            let extra = chunks(100..101, |_| 1000);
            cache.put(&extra[0].digest, &extra[0].bytes);
            assert_eq!(check_never_wrong(&cache, &extra), 1);
        }
        let cache = open(&dir, 64 << 20, 1 << 20, key(7));
        check_never_wrong(&cache, &all);
        drop(cache);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // Flips in ciphertext and tags are caught by the AEAD and counted; flips
    // in headers are caught by the header check (at the scan or the read).
    assert!(corrupt_seen > 4 * 100, "corrupt_dropped counted only {corrupt_seen}");
}

#[test]
fn flips_in_sealed_segments_and_live_caches_are_caught() {
    let base = tempfile::tempdir().unwrap();
    let all = chunks(0..240, |s| 1500 + (s as usize * 701) % 3000);
    let src = base.path().join("pristine");
    pristine(&src, &all, 256 << 10);
    let sealed = segment_files(&src);
    assert!(sealed.len() >= 3 && !files(&src, |k| matches!(k, OurFile::Hint(_))).is_empty());
    // Sealed segments are indexed from their hints, without a scan: every
    // flip must be caught on read.
    let mut rng = 0x1234_5678u64;
    for round in 0..40 {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let target = &sealed[(rng >> 33) as usize % (sealed.len() - 1)];
        let dir = base.path().join(format!("r{round}"));
        copy_dir(&src, &dir);
        let path = dir.join(target.file_name().unwrap());
        let mut b = std::fs::read(&path).unwrap();
        let pos = (rng >> 7) as usize % b.len();
        b[pos] ^= 1 << (rng % 8);
        std::fs::write(&path, &b).unwrap();
        let cache = open(&dir, 64 << 20, 256 << 10, key(7));
        let hits = check_never_wrong(&cache, &all);
        assert!(hits >= all.len() - 1 || pos < SEG_HEADER_LEN as usize, "one flip lost {} entries", all.len() - hits);
        drop(cache);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // Damage under a live cache: the read notices, drops, and counts it.
    let dir = base.path().join("live");
    copy_dir(&src, &dir);
    let cache = open(&dir, 64 << 20, 256 << 10, key(7));
    let seg0 = &segment_files(&dir)[0];
    let mut b = std::fs::read(seg0).unwrap();
    let mut h = [0u8; ENTRY_HEADER_LEN];
    h.copy_from_slice(&b[SEG_HEADER_LEN as usize..][..ENTRY_HEADER_LEN]);
    let clen = EntryHeader::decode(&h).unwrap().clen as usize;
    b[SEG_HEADER_LEN as usize + ENTRY_HEADER_LEN + clen - 1] ^= 0x80; // the first entry's tag
    std::fs::write(seg0, &b).unwrap();
    assert_eq!(check_never_wrong(&cache, &all), all.len() - 1);
    let s = cache.stats();
    assert_eq!((s.corrupt_dropped, s.entries), (1, all.len() as u64 - 1));
    assert_eq!(check_never_wrong(&cache, &all), all.len() - 1);
    assert_eq!(cache.stats().corrupt_dropped, 1, "a dropped entry is a plain miss afterwards");
}

/// Reads no longer re-hash the plaintext: what stops a valid entry of one
/// chunk from being served for another is the tag, bound to the nonce of the
/// header and to the digest as associated data. Two entries of equal length
/// swap their ciphertext and tag (headers left intact): both must be refused.
#[test]
fn swapped_entry_bodies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let all = chunks(0..2, |_| 1000);
    pristine(dir.path(), &all, 1 << 20);
    let seg = segment_files(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let scan = segment::scan(&std::fs::File::open(&seg).unwrap(), bytes.len() as u64).unwrap();
    let [a, b] = scan.entries[..] else { panic!("expected two entries") };
    assert_eq!(a.clen, b.clen);
    let body = |e: &segment::Placed| e.off as usize + ENTRY_HEADER_LEN..e.end() as usize;
    let a_body = bytes[body(&a)].to_vec();
    bytes.copy_within(body(&b), body(&a).start);
    bytes[body(&b)].copy_from_slice(&a_body);
    std::fs::write(&seg, &bytes).unwrap();
    let cache = open(dir.path(), 64 << 20, 1 << 20, key(7));
    assert_eq!(check_never_wrong(&cache, &all), 0);
    assert_eq!(cache.stats().corrupt_dropped, 2);
}

#[test]
fn truncation_at_every_offset_of_the_last_entry_and_at_random() {
    let base = tempfile::tempdir().unwrap();
    let mut all = chunks(0..30, |s| 200 + (s as usize * 389) % 1000);
    all.extend(chunks(1000..1001, |_| 700));
    let src = base.path().join("pristine");
    pristine(&src, &all, 1 << 20);
    let seg = segment_files(&src).pop().unwrap();
    let name = seg.file_name().unwrap().to_owned();
    let full = std::fs::read(&seg).unwrap();
    let scan = segment::scan(&std::fs::File::open(&seg).unwrap(), full.len() as u64).unwrap();
    assert_eq!(scan.entries.len(), all.len());
    let last_start = scan.entries.last().unwrap().off as usize;
    let mut cuts: Vec<usize> = (last_start..=full.len()).collect();
    let mut rng = 99u64;
    for _ in 0..100 {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        cuts.push((rng >> 33) as usize % full.len());
    }
    let dir = base.path().join("cut");
    for cut in cuts {
        let _ = std::fs::remove_dir_all(&dir);
        copy_dir(&src, &dir);
        std::fs::write(dir.join(&name), &full[..cut]).unwrap();
        let whole = scan.entries.iter().filter(|e| e.end() <= cut as u64).count();
        {
            let cache = open(&dir, 64 << 20, 1 << 20, key(7));
            assert_eq!(cache.stats().entries as usize, whole, "cut at {cut}");
            let hits = check_never_wrong(&cache, &all);
            assert_eq!(hits, whole, "cut at {cut}: every whole entry survives");
            assert_eq!(cache.stats().corrupt_dropped, 0);
            // Appending after the cut works.
            let extra = chunks(5000..5001, |_| 300);
            cache.put(&extra[0].digest, &extra[0].bytes);
            assert_eq!(check_never_wrong(&cache, &extra), 1);
        }
        let cache = open(&dir, 64 << 20, 1 << 20, key(7));
        assert_eq!(check_never_wrong(&cache, &all), whole);
    }
}

#[test]
fn snapshots_taken_mid_write_reopen_cleanly() {
    // A copy of the directory taken while a writer appends is what a kill -9
    // (or a power cut without fsync) can leave: torn tails, stale hints.
    let base = tempfile::tempdir().unwrap();
    let live = base.path().join("live");
    let all = Arc::new(chunks(0..800, |s| 1000 + (s as usize * 7919) % 24_000));
    let cache = Arc::new(open(&live, 1 << 30, 256 << 10, key(3)));
    let done = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (cache, all, done) = (cache.clone(), all.clone(), done.clone());
        std::thread::spawn(move || {
            for (i, c) in all.iter().enumerate() {
                cache.put(&c.digest, &c.bytes);
                done.store(i + 1, Ordering::SeqCst);
            }
        })
    };
    let mut snaps = Vec::new();
    while (!writer.is_finished() && snaps.len() < 12) || snaps.is_empty() {
        let completed = done.load(Ordering::SeqCst);
        let snap = base.path().join(format!("snap-{}", snaps.len()));
        copy_dir(&live, &snap);
        snaps.push((snap, completed));
        std::thread::sleep(std::time::Duration::from_millis(2 + 3 * snaps.len() as u64));
    }
    writer.join().unwrap();
    assert!(snaps.len() >= 2);
    for (snap, completed) in &snaps {
        let cache = open(snap, 1 << 30, 256 << 10, key(3));
        let s = cache.stats();
        let hits = check_never_wrong(&cache, &all);
        // Puts that completed before the copy began are all there.
        for c in &all[..*completed] {
            assert!(cache.contains(&c.digest), "{}: lost an entry written before the copy", snap.display());
        }
        assert!(hits >= *completed);
        assert_eq!(cache.stats().corrupt_dropped, 0, "torn entries are cut at open, not served");
        assert_eq!(s.bytes, segment_bytes_on_disk(snap));
    }
}

#[test]
fn stays_within_its_bound_and_keeps_hot_entries() {
    let dir = tempfile::tempdir().unwrap();
    let max = 8 << 20;
    let cache = open(dir.path(), max, 1 << 20, key(4));
    let seg = cache.segment_bytes();
    assert_eq!(seg, 1 << 20);
    // Hot chunks are read all the time; cold ones written at the same moment never.
    let hot = chunks(0..24, |_| 32 << 10);
    // (At most half a victim segment is copied forward, so a third of the
    // first segments is hot here, not half.)
    let early_cold = chunks(100..148, |_| 32 << 10);
    for (h, c) in hot.iter().zip(early_cold.chunks(2)) {
        cache.put(&h.digest, &h.bytes);
        for c in c {
            cache.put(&c.digest, &c.bytes);
        }
    }
    // Then three times the bound of distinct chunks.
    let stream = chunks(1000..1000 + 3 * 256, |s| (24 << 10) + (s as usize * 4099) % (16 << 10));
    let mut peak = 0;
    for (i, c) in stream.iter().enumerate() {
        cache.put(&c.digest, &c.bytes);
        let h = &hot[i % hot.len()];
        if let Some(got) = cache.get(&h.digest) {
            assert!(got == h.bytes);
        }
        if i % 8 == 0 {
            let on_disk = segment_bytes_on_disk(dir.path());
            assert!(on_disk <= max + seg, "{on_disk} bytes on disk, bound {max} + {seg}");
            assert_eq!(on_disk, cache.stats().bytes);
            peak = peak.max(on_disk);
        }
    }
    let s = cache.stats();
    assert!(s.evicted_bytes > 2 * max - 2 * seg, "{s:?}");
    assert!(s.bytes <= max + seg);
    let hot_alive = check_never_wrong(&cache, &hot);
    let cold_alive = check_never_wrong(&cache, &early_cold);
    let recent_alive = check_never_wrong(&cache, &stream[stream.len() - 64..]);
    println!(
        "bound {max}, peak {peak}, segment {seg}: hot survived {hot_alive}/{}, cold {cold_alive}/{}, \
         newest {recent_alive}/64, promoted {}, evicted {} bytes",
        hot.len(),
        early_cold.len(),
        s.promoted,
        s.evicted_bytes
    );
    assert_eq!(hot_alive, hot.len(), "hot entries were evicted");
    assert_eq!(cold_alive, 0, "cold entries outlived three bounds of writes");
    assert_eq!(recent_alive, 64);
    assert_eq!(cache.stats().corrupt_dropped, 0);

    // Reopening with a smaller bound evicts down to it.
    drop(cache);
    let cache = open(dir.path(), 2 << 20, 1 << 20, key(4));
    let seg = cache.segment_bytes();
    assert!(segment_bytes_on_disk(dir.path()) <= (2 << 20) + seg);
    check_never_wrong(&cache, &stream);
}

#[test]
fn each_encryption_uses_a_fresh_nonce() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 64 << 20, 4 << 20, key(5));
    let text = b"The quick brown fox jumps over the lazy dog. ".repeat(100);
    let d = Digest::of(&text);
    cache.put(&d, &text);
    cache.put_again(&d, &text);
    let more = chunks(0..2000, |s| 64 + s as usize % 200);
    for c in &more {
        cache.put(&c.digest, &c.bytes);
    }
    assert_eq!(cache.get(&d).as_deref(), Some(&text[..]));

    let seg = segment_files(dir.path()).pop().unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    let scan = segment::scan(&std::fs::File::open(&seg).unwrap(), bytes.len() as u64).unwrap();
    assert_eq!(scan.entries.len(), 2002);
    let header = |off: u32| {
        let mut h = [0u8; ENTRY_HEADER_LEN];
        h.copy_from_slice(&bytes[off as usize..][..ENTRY_HEADER_LEN]);
        EntryHeader::decode(&h).unwrap()
    };
    let body = |off: u32, clen: u32| &bytes[off as usize + ENTRY_HEADER_LEN..][..clen as usize];
    let (a, b) = (scan.entries[0], scan.entries[1]);
    assert!(a.id == b.id);
    assert_ne!(header(a.off).nonce, header(b.off).nonce);
    assert_ne!(body(a.off, a.clen), body(b.off, b.clen), "same plaintext, same ciphertext");
    let nonces: HashSet<[u8; 12]> = scan.entries.iter().map(|e| header(e.off).nonce).collect();
    assert_eq!(nonces.len(), scan.entries.len(), "a nonce was reused");

    // Neither the plaintext nor the digest is on disk in the clear.
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(&bytes, &text[..24]));
    assert!(!contains(&bytes, d.as_bytes()));
    for hint in files(dir.path(), |k| matches!(k, OurFile::Hint(_))) {
        assert!(!contains(&std::fs::read(hint).unwrap(), d.as_bytes()));
    }
}

#[test]
fn chunks_larger_than_a_quarter_segment_are_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 2 << 20, 256 << 10, key(6));
    assert_eq!(cache.segment_bytes(), 256 << 10);
    let big = chunks(0..1, |_| 100 << 10);
    cache.put(&big[0].digest, &big[0].bytes);
    assert!(!cache.contains(&big[0].digest));
    assert_eq!(cache.stats().write_errors, 0);
}

#[test]
fn concurrent_readers_and_writers() {
    let dir = tempfile::tempdir().unwrap();
    let max = 4 << 20;
    let cache = Arc::new(open(dir.path(), max, 256 << 10, key(8)));
    let seg = cache.segment_bytes();
    // ~5.4 MB of chunks: the writers force evictions while readers read.
    let all = Arc::new(chunks(0..600, |s| 2000 + (s as usize * 2909) % 14_000));
    let writers_left = Arc::new(AtomicUsize::new(2));
    let xorshift = |rng: &mut u64| {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng as usize
    };
    let mut threads = Vec::new();
    for t in 0..2u64 {
        let (cache, all, left) = (cache.clone(), all.clone(), writers_left.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            for _ in 0..2500 {
                let c = &all[xorshift(&mut rng) % all.len()];
                cache.put(&c.digest, &c.bytes);
            }
            left.fetch_sub(1, Ordering::SeqCst);
            0
        }));
    }
    for t in 0..4u64 {
        let (cache, all, left) = (cache.clone(), all.clone(), writers_left.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = (t + 11).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut hits = 0;
            while left.load(Ordering::SeqCst) > 0 {
                // Mostly a hot tenth of the chunks, sometimes any.
                let r = xorshift(&mut rng);
                let c = &all[if r % 4 == 0 { r / 4 % all.len() } else { r / 4 % 60 }];
                if let Some(got) = cache.get(&c.digest) {
                    assert!(got == c.bytes, "wrong bytes under concurrency");
                    hits += 1;
                }
                let _ = cache.contains(&c.digest);
            }
            hits
        }));
    }
    let hits: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let s = cache.stats();
    println!("concurrent: {hits} hits, {s:?}");
    assert!(hits > 0 && s.evicted_bytes > 0, "{s:?}");
    assert_eq!((s.corrupt_dropped, s.write_errors), (0, 0));
    assert!(s.bytes <= max + seg);
    assert_eq!(s.bytes, segment_bytes_on_disk(dir.path()));
    check_never_wrong(&cache, &all);
    drop(Arc::try_unwrap(cache).unwrap());
    let cache = open(dir.path(), max, 256 << 10, key(8));
    check_never_wrong(&cache, &all);
}

#[test]
fn segment_size_follows_the_bound() {
    let mib = 1u64 << 20;
    assert_eq!(effective_segment_bytes(DEFAULT_SEGMENT_BYTES, 10 << 30), 64 * mib);
    assert_eq!(effective_segment_bytes(DEFAULT_SEGMENT_BYTES, 64 * mib), 8 * mib);
    assert_eq!(effective_segment_bytes(DEFAULT_SEGMENT_BYTES, mib), 256 << 10);
    assert_eq!(effective_segment_bytes(0, 256 << 20), 256 << 10);
    assert_eq!(effective_segment_bytes(0, 1 << 30), 1 << 20);
    // A terabyte in at most ~1024 segments.
    assert_eq!(effective_segment_bytes(DEFAULT_SEGMENT_BYTES, 1 << 40), 1 << 30);
    assert_eq!(effective_segment_bytes(u64::MAX, u64::MAX), 1 << 30);
}

#[test]
fn throughput() {
    // Prints numbers; asserts only correctness. The AES-GCM generics are
    // compiled with this crate, unoptimized in a debug build: run
    // `cargo test --release -p aetherfs cache::tests::throughput -- --nocapture` for real figures.
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(open(dir.path(), 1 << 30, DEFAULT_SEGMENT_BYTES, key(9)));
    let n = if cfg!(debug_assertions) { 128 } else { 1024 };
    let all = Arc::new(chunks(0..n, |_| 64 << 10));
    let total = (all.len() * (64 << 10)) as f64 / 1e6;
    let t = Instant::now();
    for c in all.iter() {
        cache.put(&c.digest, &c.bytes);
    }
    let put = t.elapsed();
    let t = Instant::now();
    for c in all.iter() {
        assert!(cache.get(&c.digest).is_some_and(|b| b == c.bytes));
    }
    let get = t.elapsed();
    let t = Instant::now();
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (cache, all) = (cache.clone(), all.clone());
            std::thread::spawn(move || {
                for c in all.iter().skip(r).step_by(2) {
                    assert!(cache.get(&c.digest).is_some());
                }
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    let get2 = t.elapsed();
    println!(
        "disk cache ({} build), {total:.0} MB in 64 KiB chunks: put {:.0} MB/s, get {:.0} MB/s, get on 2 threads {:.0} MB/s",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        total / put.as_secs_f64(),
        total / get.as_secs_f64(),
        total / get2.as_secs_f64()
    );
}

#[test]
fn test_chunks_differ_per_seed() {
    // The scenarios above rely on distinct digests for every seed they use.
    let all = chunks(0..6000, |_| 64);
    let digests: HashSet<Digest> = all.iter().map(|c| c.digest).collect();
    assert_eq!(digests.len(), all.len());
}
