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
use std::path::Path;

use super::layout::{
    ENTRY_HEADER_LEN, EntryHeader, EntryId, FORMAT_VERSION, HINT_ENTRY_LEN, HINT_HEADER_LEN, HINT_MAGIC,
    HINT_TRAILER_LEN, MAX_CLEN, SEG_HEADER_LEN, SEG_MAGIC, TAG_LEN, hint_path, segment_path,
};

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
