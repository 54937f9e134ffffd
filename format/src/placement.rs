//! The placement: where each chunk of one version is stored.
//!
//! A version's digest covers what it is (its manifest); the placement says
//! where its chunks live, and garbage collection rewrites it when it moves
//! chunks into new packs. A reader trusts it no more than it must: every chunk
//! read through it is checked against its digest.
//!
//! Binary encoding, version 1 (integers LEB128 varints unless noted):
//!
//! ```text
//! magic "AFPL" | version u16 LE | manifest digest[32]
//! packs:  count, digest[32]*                           -- referenced by index below
//! chunks: count, (digest[32], len, pack index, offset, stored_len, compression u8)*
//!                                                      -- strictly sorted by digest
//! ```

use std::collections::{BTreeSet, HashMap};

use crate::FormatError;
use crate::codec::{Reader, put_varint};
use crate::digest::Digest;
use crate::manifest::{ChunkLocation, Compression, MANIFEST_MAX_BYTES, Manifest, max_stored_len};

const MAGIC: &[u8; 4] = b"AFPL";
pub const PLACEMENT_VERSION: u16 = 1;
/// Largest placement accepted anywhere: a placement entry is a little larger
/// than a manifest's chunk entry, so the largest manifest's fits.
pub const PLACEMENT_MAX_BYTES: usize = MANIFEST_MAX_BYTES + MANIFEST_MAX_BYTES / 2;

/// One stored chunk of a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlacedChunk {
    pub digest: Digest,
    /// Plaintext length.
    pub len: u32,
    pub location: ChunkLocation,
}

/// Where every chunk of one version is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The version (manifest digest) this placement belongs to.
    pub manifest: Digest,
    /// Sorted by digest, unique.
    chunks: Vec<PlacedChunk>,
}

impl Placement {
    /// Builds a placement from chunks in any order; a digest placed twice
    /// keeps its first location.
    pub fn new(manifest: Digest, chunks: impl IntoIterator<Item = PlacedChunk>) -> Self {
        let mut chunks: Vec<PlacedChunk> = chunks.into_iter().collect();
        chunks.sort_by_key(|c| c.digest);
        chunks.dedup_by_key(|c| c.digest);
        Self { manifest, chunks }
    }

    /// The placement of a manifest held in memory (its chunks carry locations).
    pub fn of(manifest: &Manifest, digest: Digest) -> Self {
        Self::new(
            digest,
            manifest.unique_chunks().into_values().map(|c| PlacedChunk {
                digest: c.digest,
                len: c.len,
                location: c.location,
            }),
        )
    }

    pub fn locate(&self, digest: &Digest) -> Option<ChunkLocation> {
        self.chunks.binary_search_by_key(digest, |c| c.digest).ok().map(|i| self.chunks[i].location)
    }

    pub fn chunks(&self) -> &[PlacedChunk] {
        &self.chunks
    }

    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Every pack the placement points into.
    pub fn packs(&self) -> BTreeSet<Digest> {
        self.chunks.iter().map(|c| c.location.pack).collect()
    }

    /// Moves chunks: each chunk `moved` names gets its new location. Returns
    /// how many moved.
    pub fn relocate(&mut self, moved: &HashMap<Digest, ChunkLocation>) -> usize {
        let mut n = 0;
        for c in &mut self.chunks {
            if let Some(l) = moved.get(&c.digest)
                && *l != c.location
            {
                c.location = *l;
                n += 1;
            }
        }
        n
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut packs: Vec<Digest> = Vec::new();
        let mut index: HashMap<Digest, u64> = HashMap::new();
        for c in &self.chunks {
            index.entry(c.location.pack).or_insert_with(|| {
                packs.push(c.location.pack);
                packs.len() as u64 - 1
            });
        }
        let mut out = Vec::with_capacity(48 + packs.len() * 32 + self.chunks.len() * 44);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&PLACEMENT_VERSION.to_le_bytes());
        out.extend_from_slice(self.manifest.as_bytes());
        put_varint(&mut out, packs.len() as u64);
        for p in &packs {
            out.extend_from_slice(p.as_bytes());
        }
        put_varint(&mut out, self.chunks.len() as u64);
        for c in &self.chunks {
            out.extend_from_slice(c.digest.as_bytes());
            put_varint(&mut out, c.len.into());
            put_varint(&mut out, index[&c.location.pack]);
            put_varint(&mut out, c.location.offset);
            put_varint(&mut out, c.location.stored_len.into());
            out.push(c.location.compression.code());
        }
        out
    }

    /// Parses and validates placement bytes from any source.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::open(bytes, "placement", PLACEMENT_MAX_BYTES, MAGIC, PLACEMENT_VERSION)?;
        let manifest = r.digest()?;
        let n = r.count(32, "pack")?;
        let mut packs = Vec::with_capacity(n);
        for _ in 0..n {
            packs.push(r.digest()?);
        }
        let n = r.count(37, "chunk")?;
        let mut chunks: Vec<PlacedChunk> = Vec::with_capacity(n);
        let max_stored = u64::from(max_stored_len(crate::chunker::MAX_CHUNK_SIZE));
        for _ in 0..n {
            let digest = r.digest()?;
            let len = r.varint_max(crate::chunker::MAX_CHUNK_SIZE.into(), "chunk length")? as u32;
            let p = r.varint()?;
            let pack = *packs.get(p as usize).ok_or_else(|| r.err("pack index out of range"))?;
            let offset = r.varint()?;
            let stored_len = r.varint_max(max_stored, "stored length")? as u32;
            let compression = Compression::from_code(r.u8()?).ok_or_else(|| r.err("unknown compression"))?;
            let stored_ok = match compression {
                Compression::None => stored_len == len,
                Compression::Zstd => stored_len > 0 && stored_len <= max_stored_len(len),
            };
            if len == 0 || !stored_ok {
                return Err(r.err(format!("chunk {digest}: bad length or stored length")));
            }
            if chunks.last().is_some_and(|l| l.digest >= digest) {
                return Err(r.err("chunks not strictly sorted by digest"));
            }
            chunks.push(PlacedChunk { digest, len, location: ChunkLocation { pack, offset, stored_len, compression } });
        }
        r.finish()?;
        Ok(Self { manifest, chunks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::sample;

    #[test]
    fn round_trips_and_joins_its_manifest() {
        let m = sample();
        let bytes = m.encode().unwrap();
        let digest = Digest::of(&bytes);
        let p = Placement::of(&m, digest);
        let encoded = p.encode();
        let back = Placement::decode(&encoded).unwrap();
        assert_eq!(back, p);
        assert_eq!(Manifest::decode(&bytes, &back).unwrap(), m);
    }

    #[test]
    fn relocating_changes_the_placement_not_the_version() {
        let m = sample();
        let bytes = m.encode().unwrap();
        let digest = Digest::of(&bytes);
        let mut p = Placement::of(&m, digest);
        let chunk = p.chunks()[0];
        let to = ChunkLocation { pack: Digest::of(b"new pack"), offset: 1234, ..chunk.location };
        assert_eq!(p.relocate(&HashMap::from([(chunk.digest, to)])), 1);
        let moved = Manifest::decode(&bytes, &Placement::decode(&p.encode()).unwrap()).unwrap();
        assert_eq!(Digest::of(&moved.encode().unwrap()), digest, "moving chunks changed the version's digest");
        let EntryKind::File(f) = &moved.entries.iter().find(|e| e.path == "a/f.txt").unwrap().kind else {
            panic!("not a file")
        };
        assert_eq!(f.chunks()[0].location, to);
    }

    #[test]
    fn a_placement_must_cover_exactly_the_manifest() {
        let m = sample();
        let bytes = m.encode().unwrap();
        let digest = Digest::of(&bytes);
        let empty = Placement::new(digest, []);
        assert!(matches!(Manifest::decode(&bytes, &empty), Err(FormatError::Unplaced(d)) if d.len() == 1));
        let mut extra: Vec<PlacedChunk> = Placement::of(&m, digest).chunks().to_vec();
        extra.push(PlacedChunk { digest: Digest::of(b"stray"), ..extra[0] });
        assert!(Manifest::decode(&bytes, &Placement::new(digest, extra)).is_err());
    }

    #[test]
    fn decoding_hostile_bytes_never_panics() {
        let m = sample();
        let p = Placement::of(&m, Digest::of(&m.encode().unwrap())).encode();
        for cut in 0..p.len() {
            assert!(Placement::decode(&p[..cut]).is_err());
        }
        for i in 0..p.len() {
            for bit in 0..8 {
                let mut b = p.clone();
                b[i] ^= 1 << bit;
                let _ = Placement::decode(&b);
            }
        }
    }

    use crate::manifest::EntryKind;
}
