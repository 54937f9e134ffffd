//! Coalescing chunk reads into few, large HTTP range reads of packs.
//!
//! Chunks that a push stored together sit next to each other in a pack, so
//! the chunks a reader needs in order usually form long runs. A run becomes
//! one range request while the next chunk is in the same pack, at or after
//! the end of the run, within a small gap (reading a few unneeded bytes is
//! cheaper than another request), and the range stays below a size cap.

use aetherfs_format::{ChunkLocation, Digest};

/// Bytes of unneeded data a range may span to join two chunks.
pub const MAX_GAP: u64 = 256 << 10;
/// Largest single range request.
pub const MAX_RANGE: u64 = 16 << 20;

/// One chunk wanted from the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkWant {
    pub digest: Digest,
    pub len: u32,
    pub location: ChunkLocation,
}

/// One range read of a pack and the chunks it carries, in request order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeRead {
    pub pack: Digest,
    pub offset: u64,
    pub len: u64,
    pub chunks: Vec<ChunkWant>,
}

impl RangeRead {
    /// The stored bytes of `chunk` inside this range's data.
    pub fn slice<'a>(&self, data: &'a [u8], chunk: &ChunkWant) -> &'a [u8] {
        let start = (chunk.location.offset - self.offset) as usize;
        &data[start..start + chunk.location.stored_len as usize]
    }
}

/// Groups `wants` (in the order they will be consumed) into range reads that
/// preserve that order.
pub fn coalesce(wants: impl IntoIterator<Item = ChunkWant>) -> Vec<RangeRead> {
    let mut out: Vec<RangeRead> = Vec::new();
    for w in wants {
        let loc = w.location;
        let end = loc.offset + u64::from(loc.stored_len);
        if let Some(r) = out.last_mut() {
            let r_end = r.offset + r.len;
            if r.pack == loc.pack && loc.offset >= r_end && loc.offset - r_end <= MAX_GAP && end - r.offset <= MAX_RANGE
            {
                r.len = end - r.offset;
                r.chunks.push(w);
                continue;
            }
        }
        out.push(RangeRead { pack: loc.pack, offset: loc.offset, len: u64::from(loc.stored_len), chunks: vec![w] });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aetherfs_format::Compression;

    fn want(pack: &[u8], offset: u64, len: u32) -> ChunkWant {
        ChunkWant {
            digest: Digest::of(&offset.to_le_bytes()),
            len,
            location: ChunkLocation { pack: Digest::of(pack), offset, stored_len: len, compression: Compression::None },
        }
    }

    #[test]
    fn merges_adjacent_and_near_chunks_only() {
        let r = coalesce([
            want(b"a", 8, 100),
            want(b"a", 108, 100),
            want(b"a", 208 + MAX_GAP, 10), // exactly MAX_GAP after: joins
            want(b"a", 100, 10),           // goes backwards: new range
            want(b"b", 110, 10),           // other pack
            want(b"b", 120 + MAX_GAP + 1, 10),
        ]);
        let shape: Vec<(u64, u64, usize)> = r.iter().map(|r| (r.offset, r.len, r.chunks.len())).collect();
        assert_eq!(shape, [(8, 200 + MAX_GAP + 10, 3), (100, 10, 1), (110, 10, 1), (120 + MAX_GAP + 1, 10, 1)]);
        let data = vec![0u8; r[0].len as usize];
        assert_eq!(r[0].slice(&data, &r[0].chunks[2]).len(), 10);
    }

    #[test]
    fn caps_range_size() {
        let wants = (0..100).map(|i| want(b"a", 8 + i * (1 << 20), 1 << 20));
        let r = coalesce(wants);
        assert!(r.iter().all(|r| r.len <= MAX_RANGE));
        assert_eq!(r.iter().map(|r| r.chunks.len()).sum::<usize>(), 100);
    }
}
