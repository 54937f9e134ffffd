//! The on-disk format (v1) in one place: constants, file names and how they
//! are formed and parsed, and the entry header. Every other module depends on
//! this one and it depends on none, which keeps the module graph acyclic.
//! The byte layouts are documented in `segment.rs` and `meta.rs`.

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

pub(super) const HINT_MAGIC: [u8; 8] = *b"AFSCHINT";
pub(super) const HINT_HEADER_LEN: usize = 56;
pub(super) const HINT_ENTRY_LEN: usize = 40;
pub(super) const HINT_TRAILER_LEN: usize = 32;

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
    if name == META_FILE {
        return Some(OurFile::Meta);
    }
    if name.ends_with(".tmp") && (name.starts_with("seg-") || name.starts_with(META_FILE)) {
        return Some(OurFile::Temp);
    }
    let number = |s: &str| (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u64>().ok())?;
    let rest = name.strip_prefix("seg-")?;
    if let Some(n) = rest.strip_suffix(".dat") {
        return number(n).map(OurFile::Segment);
    }
    rest.strip_suffix(".idx").and_then(number).map(OurFile::Hint)
}

/// The metadata file's name.
pub(super) const META_FILE: &str = "cache.meta";
/// The length of the key-check value: a 32-byte plaintext plus the GCM tag.
pub(super) const KEY_CHECK_LEN: usize = 32 + TAG_LEN;

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
}
