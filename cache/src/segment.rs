//! Byte layouts of segment files, entry headers and index hints (format v1),
//! and the scan that recovers a segment's entries after a crash.
//!
//! All integers are little-endian.
//!
//! ```text
//! segment header (40 bytes)
//!   0  magic "AFSCSEGM"
//!   8  format version u32 (1)
//!  12  reserved u32 (0)
//!  16  cache id [16]        BLAKE3(salt)[..16]: segments of another cache generation are deleted
//!  32  segment number u64   must match the file name
//!
//! entry header (64 bytes), followed by `clen` bytes of ciphertext whose last 16 are the GCM tag
//!   0  magic "AFCE"
//!   4  clen u32             plaintext length + 16; 16 ..= 16 MiB + 16
//!   8  id [32]              BLAKE3-keyed(id key, digest)
//!  40  nonce [12]           random, fresh for every encryption
//!  52  reserved [4] (0)
//!  56  check [8]            BLAKE3(bytes 0..56)[..8]: a torn or garbage header is never trusted
//!
//! index hint seg-N.idx (written when segment N is sealed; a cache of its headers)
//!   0  magic "AFSCHINT"
//!   8  format version u32 (1)
//!  12  reserved u32 (0)
//!  16  cache id [16]
//!  32  segment number u64
//!  40  segment length u64   the hint is used only if the segment file has exactly this length
//!  48  count u32
//!  52  reserved u32 (0)
//!  56  count × { id [32], offset u32, clen u32 }
//!  ..  BLAKE3(all bytes before) [32]
//! ```

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub(super) const FORMAT_VERSION: u32 = 1;

pub(super) const SEG_MAGIC: [u8; 8] = *b"AFSCSEGM";
pub(super) const SEG_HEADER_LEN: u64 = 40;

pub(super) const ENTRY_MAGIC: [u8; 4] = *b"AFCE";
pub(super) const ENTRY_HEADER_LEN: usize = 64;
pub(super) const TAG_LEN: usize = 16;
pub(super) const NONCE_LEN: usize = 12;
/// The largest plaintext an entry may hold.
pub(super) const MAX_PLAIN: usize = 16 << 20;
pub(super) const MAX_CLEN: u32 = (MAX_PLAIN + TAG_LEN) as u32;

const HINT_MAGIC: [u8; 8] = *b"AFSCHINT";
const HINT_HEADER_LEN: usize = 56;
const HINT_ENTRY_LEN: usize = 40;
const HINT_TRAILER_LEN: usize = 32;

/// The keyed id of a chunk in this cache: a PRF of its digest.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct EntryId(pub [u8; 32]);

impl std::hash::Hash for EntryId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Ids are outputs of a keyed PRF: any 8 of their bytes are uniform
        // and unpredictable to whoever chose the chunks.
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// A hasher for [`EntryId`]s, which are already uniformly random.
#[derive(Default)]
pub(super) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub(super) type BuildIdHasher = std::hash::BuildHasherDefault<IdHasher>;

/// One entry of a segment: where it is and how long its ciphertext is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Placed {
    pub id: EntryId,
    pub off: u32,
    pub clen: u32,
}

impl Placed {
    pub fn end(&self) -> u64 {
        u64::from(self.off) + ENTRY_HEADER_LEN as u64 + u64::from(self.clen)
    }
}

impl std::fmt::Debug for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", hex::encode(&self.0[..6]))
    }
}

pub(super) struct EntryHeader {
    pub clen: u32,
    pub id: EntryId,
    pub nonce: [u8; NONCE_LEN],
}

fn check8(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&blake3::hash(bytes).as_bytes()[..8]);
    out
}

impl EntryHeader {
    pub fn encode(&self) -> [u8; ENTRY_HEADER_LEN] {
        let mut h = [0u8; ENTRY_HEADER_LEN];
        h[0..4].copy_from_slice(&ENTRY_MAGIC);
        h[4..8].copy_from_slice(&self.clen.to_le_bytes());
        h[8..40].copy_from_slice(&self.id.0);
        h[40..52].copy_from_slice(&self.nonce);
        let check = check8(&h[..56]);
        h[56..64].copy_from_slice(&check);
        h
    }

    /// Parses a header; `None` if it is torn, garbage or out of bounds.
    pub fn decode(h: &[u8; ENTRY_HEADER_LEN]) -> Option<Self> {
        if h[0..4] != ENTRY_MAGIC || h[52..56] != [0; 4] || h[56..64] != check8(&h[..56]) {
            return None;
        }
        let clen = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        if !(TAG_LEN as u32..=MAX_CLEN).contains(&clen) {
            return None;
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&h[8..40]);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&h[40..52]);
        Some(Self { clen, id: EntryId(id), nonce })
    }
}

pub(super) fn segment_path(dir: &Path, seg: u64) -> PathBuf {
    dir.join(format!("seg-{seg:010}.dat"))
}

pub(super) fn hint_path(dir: &Path, seg: u64) -> PathBuf {
    dir.join(format!("seg-{seg:010}.idx"))
}

/// What a file name in the cache directory is, if it is one of ours.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum OurFile {
    Segment(u64),
    Hint(u64),
    /// A temporary file a crash left behind.
    Temp,
    Meta,
}

pub(super) fn classify(name: &str) -> Option<OurFile> {
    if name == super::meta::META_FILE {
        return Some(OurFile::Meta);
    }
    if name.ends_with(".tmp") && (name.starts_with("seg-") || name.starts_with(super::meta::META_FILE)) {
        return Some(OurFile::Temp);
    }
    let number = |s: &str| (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u64>().ok())?;
    let rest = name.strip_prefix("seg-")?;
    if let Some(n) = rest.strip_suffix(".dat") {
        return number(n).map(OurFile::Segment);
    }
    rest.strip_suffix(".idx").and_then(number).map(OurFile::Hint)
}

fn segment_header(cache_id: &[u8; 16], seg: u64) -> [u8; SEG_HEADER_LEN as usize] {
    let mut h = [0u8; SEG_HEADER_LEN as usize];
    h[0..8].copy_from_slice(&SEG_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..32].copy_from_slice(cache_id);
    h[32..40].copy_from_slice(&seg.to_le_bytes());
    h
}

/// Creates segment `seg` (it must not exist) and writes its header.
pub(super) fn create_segment(dir: &Path, cache_id: &[u8; 16], seg: u64) -> io::Result<File> {
    let path = segment_path(dir, seg);
    let file = File::options().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
    if let Err(e) = file.write_all_at(&segment_header(cache_id, seg), 0) {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(file)
}

/// Whether a segment file starts with the header of segment `seg` of this cache.
pub(super) fn header_ok(file: &File, cache_id: &[u8; 16], seg: u64) -> io::Result<bool> {
    let mut h = [0u8; SEG_HEADER_LEN as usize];
    match file.read_exact_at(&mut h, 0) {
        Ok(()) => Ok(h == segment_header(cache_id, seg)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// The entries of a segment found by reading their headers.
pub(super) struct Scan {
    pub entries: Vec<Placed>,
    /// The end of the last whole entry: where the segment should be cut.
    pub valid_len: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub stopped: Option<&'static str>,
}

/// Reads entry headers from the end of the segment header to `file_len`,
/// seeking over ciphertext. Stops at the first header that is torn, garbage
/// or announces more bytes than the file holds.
pub(super) fn scan(file: &File, file_len: u64) -> io::Result<Scan> {
    // Small buffer: headers are 64 bytes apart from the next by a whole chunk.
    let mut r = BufReader::with_capacity(16 << 10, file);
    r.seek(SeekFrom::Start(SEG_HEADER_LEN))?;
    let mut off = SEG_HEADER_LEN;
    let mut entries = Vec::new();
    let stopped = loop {
        if off == file_len {
            break None;
        }
        if file_len - off < ENTRY_HEADER_LEN as u64 {
            break Some("torn entry header");
        }
        let mut h = [0u8; ENTRY_HEADER_LEN];
        match r.read_exact(&mut h) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break Some("file shrank during the scan"),
            Err(e) => return Err(e),
        }
        let Some(header) = EntryHeader::decode(&h) else { break Some("invalid entry header") };
        let Ok(off32) = u32::try_from(off) else { break Some("segment too long") };
        let placed = Placed { id: header.id, off: off32, clen: header.clen };
        if placed.end() > file_len {
            break Some("torn entry");
        }
        entries.push(placed);
        r.seek_relative(i64::from(header.clen))?;
        off = placed.end();
    };
    Ok(Scan { entries, valid_len: off, stopped })
}

/// Writes the index hint of a sealed segment (temporary file, then rename).
/// Not fsynced: a hint lost or torn by a power cut fails its checksum and
/// the segment is scanned instead.
pub(super) fn write_hint(
    dir: &Path,
    cache_id: &[u8; 16],
    seg: u64,
    seg_len: u64,
    entries: &[Placed],
) -> io::Result<()> {
    let count = u32::try_from(entries.len()).map_err(io::Error::other)?;
    let mut buf = Vec::with_capacity(HINT_HEADER_LEN + entries.len() * HINT_ENTRY_LEN + HINT_TRAILER_LEN);
    buf.extend_from_slice(&HINT_MAGIC);
    buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    buf.extend_from_slice(cache_id);
    buf.extend_from_slice(&seg.to_le_bytes());
    buf.extend_from_slice(&seg_len.to_le_bytes());
    buf.extend_from_slice(&count.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    for e in entries {
        buf.extend_from_slice(&e.id.0);
        buf.extend_from_slice(&e.off.to_le_bytes());
        buf.extend_from_slice(&e.clen.to_le_bytes());
    }
    let sum = *blake3::hash(&buf).as_bytes();
    buf.extend_from_slice(&sum);
    let path = hint_path(dir, seg);
    let tmp = path.with_extension("idx.tmp");
    let result = (|| {
        let mut f = File::options().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&buf)?;
        std::fs::rename(&tmp, &path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads the index hint of segment `seg`; `None` unless it is intact, of
/// this cache, and describes a segment of exactly `seg_len` bytes.
pub(super) fn read_hint(dir: &Path, cache_id: &[u8; 16], seg: u64, seg_len: u64) -> Option<Vec<Placed>> {
    let mut f = File::open(hint_path(dir, seg)).ok()?;
    let len = f.metadata().ok()?.len();
    // Every entry takes at least a header and a tag in the segment.
    let max_count = seg_len / (ENTRY_HEADER_LEN + TAG_LEN) as u64;
    if len < (HINT_HEADER_LEN + HINT_TRAILER_LEN) as u64
        || len > (HINT_HEADER_LEN + HINT_TRAILER_LEN) as u64 + max_count * HINT_ENTRY_LEN as u64
    {
        return None;
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.read_to_end(&mut buf).ok()?;
    let (body, sum) = buf.split_at(buf.len().checked_sub(HINT_TRAILER_LEN)?);
    let u32_at = |i: usize| u32::from_le_bytes([body[i], body[i + 1], body[i + 2], body[i + 3]]);
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&body[i..i + 8]);
        u64::from_le_bytes(b)
    };
    if blake3::hash(body).as_bytes() != sum
        || body[0..8] != HINT_MAGIC
        || u32_at(8) != FORMAT_VERSION
        || body[16..32] != cache_id[..]
        || u64_at(32) != seg
        || u64_at(40) != seg_len
    {
        return None;
    }
    let count = u32_at(48) as usize;
    if body.len() != HINT_HEADER_LEN + count * HINT_ENTRY_LEN {
        return None;
    }
    let mut entries = Vec::with_capacity(count);
    let mut prev_end = SEG_HEADER_LEN;
    for rec in body[HINT_HEADER_LEN..].chunks_exact(HINT_ENTRY_LEN) {
        let mut id = [0u8; 32];
        id.copy_from_slice(&rec[..32]);
        let off = u32::from_le_bytes([rec[32], rec[33], rec[34], rec[35]]);
        let clen = u32::from_le_bytes([rec[36], rec[37], rec[38], rec[39]]);
        let e = Placed { id: EntryId(id), off, clen };
        if u64::from(off) < prev_end || !(TAG_LEN as u32..=MAX_CLEN).contains(&clen) || e.end() > seg_len {
            return None;
        }
        prev_end = e.end();
        entries.push(e);
    }
    Some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_headers_round_trip_and_reject_any_flip() {
        let h = EntryHeader { clen: 1234, id: EntryId([7; 32]), nonce: [9; 12] };
        let bytes = h.encode();
        let back = EntryHeader::decode(&bytes).unwrap();
        assert_eq!((back.clen, back.id, back.nonce), (1234, EntryId([7; 32]), [9; 12]));
        for i in 0..ENTRY_HEADER_LEN {
            for bit in 0..8 {
                let mut b = bytes;
                b[i] ^= 1 << bit;
                assert!(EntryHeader::decode(&b).is_none(), "flip of bit {bit} of byte {i} accepted");
            }
        }
        assert!(EntryHeader::decode(&[0; ENTRY_HEADER_LEN]).is_none());
        let huge = EntryHeader { clen: MAX_CLEN + 1, id: EntryId([0; 32]), nonce: [0; 12] };
        assert!(EntryHeader::decode(&huge.encode()).is_none());
    }

    #[test]
    fn classifies_only_our_names() {
        assert_eq!(classify("seg-0000000012.dat"), Some(OurFile::Segment(12)));
        assert_eq!(classify("seg-99999999999.idx"), Some(OurFile::Hint(99_999_999_999)));
        assert_eq!(classify("seg-0000000012.idx.tmp"), Some(OurFile::Temp));
        assert_eq!(classify("cache.meta"), Some(OurFile::Meta));
        assert_eq!(classify("cache.meta.tmp"), Some(OurFile::Temp));
        for other in ["lock", "seg-.dat", "seg-1x.dat", "seg-+1.dat", "notes.tmp", "seg-1.dat.bak", "data"] {
            assert_eq!(classify(other), None, "{other}");
        }
    }

    #[test]
    fn hints_round_trip_and_refuse_mismatches() {
        let dir = tempfile::tempdir().unwrap();
        let id = [3u8; 16];
        let entries = vec![
            Placed { id: EntryId([1; 32]), off: 40, clen: 100 },
            Placed { id: EntryId([2; 32]), off: 204, clen: 16 },
        ];
        let len = entries[1].end();
        write_hint(dir.path(), &id, 5, len, &entries).unwrap();
        assert_eq!(read_hint(dir.path(), &id, 5, len).unwrap(), entries);
        assert!(read_hint(dir.path(), &id, 5, len + 1).is_none(), "length mismatch");
        assert!(read_hint(dir.path(), &[4; 16], 5, len).is_none(), "other cache");
        assert!(read_hint(dir.path(), &id, 6, len).is_none(), "no such hint");
        let p = hint_path(dir.path(), 5);
        let good = std::fs::read(&p).unwrap();
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x10;
            std::fs::write(&p, &b).unwrap();
            assert!(read_hint(dir.path(), &id, 5, len).is_none(), "flip at {i} accepted");
        }
    }
}
