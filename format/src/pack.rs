//! Packs: the unit of storage in the blob store.
//!
//! ```text
//! header  "AFSP" | version u16 LE | reserved u16
//! chunks  stored bytes, back to back, each raw or zstd-compressed
//! index   "AFSI" | version u16 LE | count u32 LE | entry* (sorted by offset)
//!         entry: digest[32] | offset u64 LE | stored_len u32 LE | len u32 LE | compression u8
//! footer  index offset u64 LE | index length u32 LE | "AFSP"
//! ```
//!
//! A pack is named by the digest of all its bytes. The index is also stored
//! on its own so a hub can learn which chunks exist without reading packs.
//! [`verify_pack`] checks every byte: the layout leaves no gaps or overlaps,
//! and every chunk decompresses to exactly its length and digest.

use crate::FormatError;
use crate::chunker::MAX_CHUNK_SIZE;
use crate::digest::Digest;
use crate::manifest::{ChunkLocation, Compression, max_stored_len};

const MAGIC: &[u8; 4] = b"AFSP";
const INDEX_MAGIC: &[u8; 4] = b"AFSI";
const VERSION: u16 = 1;
const HEADER_LEN: u64 = 8;
const FOOTER_LEN: usize = 16;
const INDEX_HEADER_LEN: usize = 10;
const INDEX_ENTRY_LEN: usize = 49;
/// Largest pack accepted.
pub const PACK_MAX_BYTES: usize = 128 << 20;
/// Most chunks one pack may hold. Every stored pack's index is loaded by
/// every hub replica, so a pack of tiny chunks must not cost it unbounded
/// memory: 65,536 entries are a few MiB of index. Builders close a pack
/// when it is full ([`PackBuilder::is_full`]).
pub const PACK_MAX_CHUNKS: usize = 65_536;
/// Chunks are compressed only when that saves at least 1/16 of their size.
const COMPRESS_MIN_SAVING: usize = 16;
const ZSTD_LEVEL: i32 = 3;
/// After a chunk that did not compress, a chunk at least this large is
/// first probed: [`PROBE_LEN`] bytes from its middle are compressed, and the
/// chunk is stored as it is unless the probe saves. Random data, encrypted
/// or already-compressed files and model weights then cost a sixteenth of a
/// compression attempt instead of a whole one (zstd ran at about 100 MB/s
/// per core on random data, a fifth of push's CPU); a chunk whose middle is
/// incompressible but whose rest is not may be stored uncompressed.
const PROBE_MIN_LEN: usize = 16 << 10;
const PROBE_LEN: usize = 4 << 10;

/// One chunk in a pack's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub digest: Digest,
    pub offset: u64,
    pub stored_len: u32,
    pub len: u32,
    pub compression: Compression,
}

impl PackEntry {
    pub fn location(&self, pack: Digest) -> ChunkLocation {
        ChunkLocation { pack, offset: self.offset, stored_len: self.stored_len, compression: self.compression }
    }
}

/// Builds a pack in memory.
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
    plain_bytes: u64,
    /// One compression context for the whole pack: making one per chunk
    /// (what `zstd::bulk::compress` does) cost as much as compressing a
    /// small chunk.
    zstd: Option<zstd::bulk::Compressor<'static>>,
    /// The last chunk offered for compression was stored uncompressed.
    last_incompressible: bool,
}

/// A finished pack: its bytes, name and index.
pub struct BuiltPack {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub entries: Vec<PackEntry>,
    pub plain_bytes: u64,
}

impl Default for PackBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PackBuilder {
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(1 << 20);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&VERSION.to_le_bytes());
        buf.extend_from_slice(&[0, 0]);
        Self { buf, entries: Vec::new(), plain_bytes: 0, zstd: None, last_incompressible: false }
    }

    /// Bytes so far, for deciding when a pack is full.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the pack holds as many chunks as a pack may.
    pub fn is_full(&self) -> bool {
        self.entries.len() >= PACK_MAX_CHUNKS
    }

    /// Adds a chunk whose digest the caller computed from `plain`.
    pub fn add(&mut self, digest: Digest, plain: &[u8], compress: bool) {
        let offset = self.buf.len() as u64;
        let mut compression = Compression::None;
        if compress && plain.len() >= 64 && self.zstd.is_none() {
            self.zstd = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
        }
        if compress
            && plain.len() >= 64
            && let Some(zc) = self.zstd.as_mut()
        {
            let probe_says_no = self.last_incompressible && plain.len() >= PROBE_MIN_LEN && {
                let mid = (plain.len() - PROBE_LEN) / 2;
                let sample = &plain[mid..mid + PROBE_LEN];
                zc.compress(sample).is_ok_and(|z| z.len() + PROBE_LEN / COMPRESS_MIN_SAVING >= PROBE_LEN)
            };
            if !probe_says_no
                && let Ok(z) = zc.compress(plain)
                && z.len() + plain.len() / COMPRESS_MIN_SAVING < plain.len()
            {
                self.buf.extend_from_slice(&z);
                compression = Compression::Zstd;
            }
            self.last_incompressible = compression == Compression::None;
        }
        if compression == Compression::None {
            self.buf.extend_from_slice(plain);
        }
        let stored_len = (self.buf.len() as u64 - offset) as u32;
        self.entries.push(PackEntry { digest, offset, stored_len, len: plain.len() as u32, compression });
        self.plain_bytes += plain.len() as u64;
    }

    /// Adds a chunk already in its stored form (copied from another pack).
    /// The caller vouches for it; [`verify_pack`] checks the finished pack.
    pub fn add_stored(&mut self, digest: Digest, stored: &[u8], len: u32, compression: Compression) {
        let offset = self.buf.len() as u64;
        self.buf.extend_from_slice(stored);
        self.entries.push(PackEntry { digest, offset, stored_len: stored.len() as u32, len, compression });
        self.plain_bytes += u64::from(len);
    }

    pub fn finish(mut self) -> BuiltPack {
        let index_offset = self.buf.len() as u64;
        let index = encode_index(&self.entries);
        self.buf.extend_from_slice(&index);
        self.buf.extend_from_slice(&index_offset.to_le_bytes());
        self.buf.extend_from_slice(&(index.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(MAGIC);
        let digest = Digest::of(&self.buf);
        BuiltPack { bytes: self.buf, digest, entries: self.entries, plain_bytes: self.plain_bytes }
    }
}

/// Encodes a pack index (the section stored inside the pack and on its own).
pub fn encode_index(entries: &[PackEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(INDEX_HEADER_LEN + entries.len() * INDEX_ENTRY_LEN);
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.extend_from_slice(e.digest.as_bytes());
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.stored_len.to_le_bytes());
        out.extend_from_slice(&e.len.to_le_bytes());
        out.push(e.compression.code());
    }
    out
}

fn corrupt(msg: impl Into<String>) -> FormatError {
    FormatError::Corrupt { what: "pack", offset: 0, msg: msg.into() }
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Decodes a pack index and checks its entries are well-formed and sorted
/// without overlap, inside `[8, data_end)`.
pub fn decode_index(bytes: &[u8], data_end: Option<u64>) -> Result<Vec<PackEntry>, FormatError> {
    if bytes.len() < INDEX_HEADER_LEN || &bytes[..4] != INDEX_MAGIC {
        return Err(corrupt("bad index header"));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != VERSION {
        return Err(FormatError::UnsupportedVersion { what: "pack index", version });
    }
    let count = le_u32(&bytes[6..10]) as usize;
    if count > PACK_MAX_CHUNKS {
        return Err(FormatError::TooManyChunks { max: PACK_MAX_CHUNKS });
    }
    if bytes.len() != INDEX_HEADER_LEN + count * INDEX_ENTRY_LEN {
        return Err(corrupt("index length does not match its count"));
    }
    let mut entries = Vec::with_capacity(count);
    let mut next = HEADER_LEN;
    for raw in bytes[INDEX_HEADER_LEN..].chunks_exact(INDEX_ENTRY_LEN) {
        let mut d = [0u8; 32];
        d.copy_from_slice(&raw[..32]);
        let e = PackEntry {
            digest: Digest::from_bytes(d),
            offset: le_u64(&raw[32..40]),
            stored_len: le_u32(&raw[40..44]),
            len: le_u32(&raw[44..48]),
            compression: Compression::from_code(raw[48]).ok_or_else(|| corrupt("unknown compression"))?,
        };
        let stored_ok = match e.compression {
            Compression::None => e.stored_len == e.len,
            Compression::Zstd => e.stored_len > 0 && e.stored_len <= max_stored_len(e.len),
        };
        if e.len == 0 || e.len > MAX_CHUNK_SIZE || !stored_ok {
            return Err(corrupt(format!("chunk {} has bad lengths", e.digest)));
        }
        if data_end.is_some() && e.offset != next {
            return Err(corrupt(format!("chunk {} is not where the index says", e.digest)));
        }
        if e.offset < next {
            return Err(corrupt("index entries overlap or are unsorted"));
        }
        next = e
            .offset
            .checked_add(u64::from(e.stored_len))
            .ok_or_else(|| corrupt(format!("chunk {} ends past the largest offset", e.digest)))?;
        entries.push(e);
    }
    if let Some(end) = data_end
        && next != end
    {
        return Err(corrupt("chunk data does not end where the index starts"));
    }
    Ok(entries)
}

/// Splits a whole pack into its index section and entries, checking the
/// layout but not the chunk contents.
pub fn parse_pack(bytes: &[u8]) -> Result<(std::ops::Range<usize>, Vec<PackEntry>), FormatError> {
    if bytes.len() > PACK_MAX_BYTES {
        return Err(FormatError::TooLarge { what: "pack", max: PACK_MAX_BYTES });
    }
    if bytes.len() < HEADER_LEN as usize + INDEX_HEADER_LEN + FOOTER_LEN
        || &bytes[..4] != MAGIC
        || &bytes[bytes.len() - 4..] != MAGIC
    {
        return Err(corrupt("not an AetherFS pack (bad magic)"));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != VERSION {
        return Err(FormatError::UnsupportedVersion { what: "pack", version });
    }
    let footer = &bytes[bytes.len() - FOOTER_LEN..];
    let index_offset = le_u64(&footer[..8]);
    let index_len = le_u32(&footer[8..12]) as u64;
    let footer_start = (bytes.len() - FOOTER_LEN) as u64;
    if index_offset < HEADER_LEN || index_offset.checked_add(index_len) != Some(footer_start) {
        return Err(corrupt("footer points outside the pack"));
    }
    let range = index_offset as usize..footer_start as usize;
    let entries = decode_index(&bytes[range.clone()], Some(index_offset))?;
    Ok((range, entries))
}

/// Checks a whole pack: layout, and every chunk against its digest.
pub fn verify_pack(bytes: &[u8]) -> Result<(std::ops::Range<usize>, Vec<PackEntry>), FormatError> {
    let (range, entries) = parse_pack(bytes)?;
    for e in &entries {
        let start = e.offset as usize;
        let stored = &bytes[start..start + e.stored_len as usize];
        verify_chunk(stored, e.len, e.compression, &e.digest)?;
    }
    Ok((range, entries))
}

thread_local! {
    /// One decompression context per thread: creating one per chunk (what
    /// `zstd::bulk::decompress` does) was a fifth of the hub's CPU while it
    /// verified uploaded packs of small files.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn decompress(stored: &[u8], len: u32) -> Option<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = zstd::bulk::Decompressor::new().ok();
        }
        slot.as_mut()?.decompress(stored, len as usize).ok()
    })
}

/// Checks a chunk's stored bytes against its digest without keeping the
/// plaintext (an uncompressed chunk is hashed where it lies).
pub fn verify_chunk(stored: &[u8], len: u32, compression: Compression, digest: &Digest) -> Result<(), FormatError> {
    match compression {
        Compression::None if stored.len() == len as usize && Digest::of(stored) == *digest => Ok(()),
        Compression::None => Err(FormatError::ChunkMismatch { digest: *digest }),
        Compression::Zstd => decode_chunk(stored, len, compression, digest).map(drop),
    }
}

/// Turns a chunk's stored bytes back into plaintext and verifies its digest.
pub fn decode_chunk(
    stored: &[u8],
    len: u32,
    compression: Compression,
    digest: &Digest,
) -> Result<Vec<u8>, FormatError> {
    let mismatch = || FormatError::ChunkMismatch { digest: *digest };
    let plain = match compression {
        Compression::None => stored.to_vec(),
        Compression::Zstd => decompress(stored, len).ok_or_else(mismatch)?,
    };
    if plain.len() != len as usize || Digest::of(&plain) != *digest {
        return Err(mismatch());
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build() -> (BuiltPack, Vec<Vec<u8>>) {
        let chunks = vec![vec![7u8; 5000], b"incompressible?".to_vec(), (0..=255u8).cycle().take(9000).collect()];
        let mut b = PackBuilder::new();
        for c in &chunks {
            b.add(Digest::of(c), c, true);
        }
        (b.finish(), chunks)
    }

    fn noise(len: usize, mut x: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn incompressible_runs_are_probed_and_compressible_chunks_after_them_still_compress() {
        let text: Vec<u8> = b"id,name,city\n".iter().copied().cycle().take(64 << 10).collect();
        let chunks = [noise(64 << 10, 1), noise(64 << 10, 2), text.clone(), noise(64 << 10, 3), text];
        let mut b = PackBuilder::new();
        for c in &chunks {
            b.add(Digest::of(c), c, true);
        }
        let p = b.finish();
        let kinds: Vec<Compression> = p.entries.iter().map(|e| e.compression).collect();
        use Compression::{None as Raw, Zstd};
        assert_eq!(kinds, [Raw, Raw, Zstd, Raw, Zstd]);
        // What the probe trades: a chunk whose middle is noise is taken as
        // incompressible after an incompressible chunk (not otherwise).
        let mut mixed = chunks[2].clone();
        mixed[28 << 10..36 << 10].copy_from_slice(&noise(8 << 10, 4));
        for (after, want) in [(None, Zstd), (Some(noise(64 << 10, 5)), Raw)] {
            let mut b = PackBuilder::new();
            if let Some(n) = &after {
                b.add(Digest::of(n), n, true);
            }
            b.add(Digest::of(&mixed), &mixed, true);
            assert_eq!(b.finish().entries.last().map(|e| e.compression), Some(want));
        }
        let (_, entries) = verify_pack(&p.bytes).unwrap();
        for (e, c) in entries.iter().zip(&chunks) {
            let s = &p.bytes[e.offset as usize..(e.offset + e.stored_len as u64) as usize];
            assert_eq!(&decode_chunk(s, e.len, e.compression, &e.digest).unwrap(), c);
        }
    }

    #[test]
    fn verify_chunk_checks_length_and_digest_of_either_form() {
        let (p, chunks) = build();
        for (e, c) in p.entries.iter().zip(&chunks) {
            let s = &p.bytes[e.offset as usize..(e.offset + e.stored_len as u64) as usize];
            verify_chunk(s, e.len, e.compression, &e.digest).unwrap();
            let wrong = Digest::of(b"something else");
            assert!(verify_chunk(s, e.len, e.compression, &wrong).is_err());
            assert!(verify_chunk(s, e.len + 1, e.compression, &e.digest).is_err());
            assert_eq!(c.len(), e.len as usize);
        }
    }

    #[test]
    fn builds_and_verifies() {
        let (p, chunks) = build();
        assert_eq!(p.digest, Digest::of(&p.bytes));
        let (range, entries) = verify_pack(&p.bytes).unwrap();
        assert_eq!(entries, p.entries);
        assert_eq!(decode_index(&p.bytes[range], None).unwrap(), p.entries);
        assert_eq!(entries[0].compression, Compression::Zstd);
        assert_eq!(entries[1].compression, Compression::None);
        for (e, c) in entries.iter().zip(&chunks) {
            let s = &p.bytes[e.offset as usize..(e.offset + e.stored_len as u64) as usize];
            assert_eq!(&decode_chunk(s, e.len, e.compression, &e.digest).unwrap(), c);
        }
    }

    #[test]
    fn any_flipped_byte_is_caught() {
        let (p, _) = build();
        for i in 0..p.bytes.len() {
            let mut b = p.bytes.clone();
            b[i] ^= 0x01;
            // Either verification fails, or (for the reserved header bytes) the pack digest changed.
            if verify_pack(&b).is_ok() {
                assert!((6..8).contains(&i), "flip at {i} went unnoticed");
                assert_ne!(Digest::of(&b), p.digest);
            }
        }
    }

    /// Found by `fuzz/` (corpus/pack/regression-index-offset-overflow): an
    /// index entry ending past `u64::MAX` overflowed the overlap check.
    #[test]
    fn an_index_entry_ending_past_the_largest_offset_is_refused() {
        let entry = |offset: u64| PackEntry {
            digest: Digest::of(b"x"),
            offset,
            stored_len: 32,
            len: 32,
            compression: Compression::None,
        };
        let index = encode_index(&[entry(u64::MAX - 8)]);
        assert!(matches!(decode_index(&index, None), Err(FormatError::Corrupt { .. })));
        let index = encode_index(&[entry(u64::MAX - 32)]);
        assert_eq!(decode_index(&index, None).unwrap(), [entry(u64::MAX - 32)]);
        let index = encode_index(&[entry(u64::MAX - 32), entry(0)]);
        assert!(decode_index(&index, None).is_err(), "a wrapped offset must not pass as sorted");
    }

    /// Found by `fuzz/` (corpus/pack/regression-max-stored-len-overflow): a
    /// length near `u32::MAX` overflowed the stored-length bound.
    #[test]
    fn an_index_entry_of_a_huge_length_is_refused() {
        let e = PackEntry {
            digest: Digest::of(b"x"),
            offset: 8,
            stored_len: 300,
            len: u32::MAX - 2,
            compression: Compression::Zstd,
        };
        assert!(matches!(decode_index(&encode_index(&[e]), None), Err(FormatError::Corrupt { .. })));
    }

    #[test]
    fn truncation_is_caught() {
        let (p, _) = build();
        for cut in 0..p.bytes.len() {
            assert!(verify_pack(&p.bytes[..cut]).is_err());
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;

    proptest::proptest! {
        #[test]
        fn arbitrary_packs_and_indexes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let _ = verify_pack(&data);
            let _ = decode_index(&data, None);
            let mut framed = b"AFSI\x01\x00".to_vec();
            framed.extend_from_slice(&data);
            let _ = decode_index(&framed, Some(8));
        }
    }
}

#[cfg(test)]
mod chunk_bound_tests {
    use super::*;

    #[test]
    fn a_pack_of_too_many_chunks_is_refused() {
        let mut b = PackBuilder::new();
        for i in 0..=PACK_MAX_CHUNKS as u32 {
            let c = i.to_le_bytes();
            b.add(Digest::of(&c), &c, false);
        }
        let built = b.finish();
        assert!(matches!(verify_pack(&built.bytes), Err(FormatError::TooManyChunks { .. })));
        let mut b = PackBuilder::new();
        for i in 0..PACK_MAX_CHUNKS as u32 {
            let c = i.to_le_bytes();
            b.add(Digest::of(&c), &c, false);
        }
        assert!(b.is_full());
        assert!(verify_pack(&b.finish().bytes).is_ok(), "a full pack is valid");
    }
}
