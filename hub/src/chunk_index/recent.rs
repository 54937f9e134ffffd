//! The chunks of recently stored packs, bounded in bytes: the oldest pack
//! goes first when a new one does not fit.

use std::collections::{HashMap, HashSet, VecDeque};

use aetherfs_format::pack::PackEntry;
use aetherfs_format::{ChunkLocation, Digest};

/// Where one chunk is stored: usually one place, rarely more.
pub(super) struct Located {
    pub len: u32,
    at: ChunkLocation,
    /// Rare, so a boxed slice (two words) rather than a `Vec` (three).
    also: Option<Box<[ChunkLocation]>>,
}

impl Located {
    pub fn all(&self) -> impl Iterator<Item = &ChunkLocation> {
        std::iter::once(&self.at).chain(self.also.iter().flat_map(|v| v.iter()))
    }

    fn add(&mut self, l: ChunkLocation) {
        if self.all().any(|x| x.pack == l.pack) {
            return;
        }
        let mut more: Vec<ChunkLocation> = self.also.take().map(Vec::from).unwrap_or_default();
        more.push(l);
        self.also = Some(more.into_boxed_slice());
    }

    /// Drops the locations in `gone`; `false` when none is left.
    fn forget(&mut self, gone: &HashSet<Digest>) -> bool {
        let mut left: Vec<ChunkLocation> = self.all().filter(|l| !gone.contains(&l.pack)).copied().collect();
        if left.is_empty() {
            return false;
        }
        self.at = left.remove(0);
        self.also = (!left.is_empty()).then(|| left.into_boxed_slice());
        true
    }
}

struct Pack {
    size: Option<u64>,
    digests: Box<[Digest]>,
}

/// Memory one chunk takes here, estimated: the map's entry over its load
/// factor (7/8) plus a control byte, and the digest in its pack's list.
pub(crate) fn entry_bytes() -> u64 {
    (std::mem::size_of::<(Digest, Located)>() as u64) * 8 / 7 + 1 + 32
}

#[derive(Default)]
pub(super) struct Recent {
    chunks: HashMap<Digest, Located>,
    packs: HashMap<Digest, Pack>,
    /// Oldest first.
    order: VecDeque<Digest>,
    cap: u64,
    bytes: u64,
}

impl Recent {
    pub fn new(cap: u64) -> Self {
        Self { cap, ..Self::default() }
    }

    pub fn get(&self, d: &Digest) -> Option<&Located> {
        self.chunks.get(d)
    }

    pub fn has_pack(&self, p: &Digest) -> bool {
        self.packs.contains_key(p)
    }

    pub fn pack_size(&self, p: &Digest) -> Option<u64> {
        self.packs.get(p).and_then(|p| p.size)
    }

    pub fn chunks(&self) -> usize {
        self.chunks.len()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether a pack of `n` chunks still fits without evicting.
    pub fn has_room(&self, n: usize) -> bool {
        self.bytes + n as u64 * entry_bytes() <= self.cap
    }

    /// Adds a pack as the newest (`newest`) or as older than every pack held;
    /// returns the packs evicted to make room. A pack larger than the whole
    /// bound is not held.
    pub fn insert(&mut self, pack: Digest, size: Option<u64>, entries: &[PackEntry], newest: bool) -> Vec<Digest> {
        if let Some(p) = self.packs.get_mut(&pack) {
            if size.is_some() {
                p.size = size;
            }
            return Vec::new();
        }
        let need = entries.len() as u64 * entry_bytes();
        if need > self.cap {
            tracing::warn!(pack = %pack, chunks = entries.len(), "a pack larger than the recent-chunk bound is not held");
            return Vec::new();
        }
        let mut evicted = Vec::new();
        while self.bytes + need > self.cap {
            let victim = if newest { self.order.pop_front() } else { None };
            let Some(victim) = victim else {
                if !newest {
                    return evicted; // older than all and no room: not held
                }
                break;
            };
            self.remove(&victim);
            evicted.push(victim);
        }
        for e in entries {
            let at = e.location(pack);
            match self.chunks.entry(e.digest) {
                std::collections::hash_map::Entry::Occupied(mut o) => o.get_mut().add(at),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(Located { len: e.len, at, also: None });
                }
            }
        }
        self.bytes += need;
        let digests: Box<[Digest]> = entries.iter().map(|e| e.digest).collect();
        self.packs.insert(pack, Pack { size, digests });
        if newest {
            self.order.push_back(pack);
        } else {
            self.order.push_front(pack);
        }
        evicted
    }

    fn remove(&mut self, pack: &Digest) {
        let Some(p) = self.packs.remove(pack) else { return };
        let gone = HashSet::from([*pack]);
        for d in p.digests.iter() {
            if let Some(c) = self.chunks.get_mut(d)
                && !c.forget(&gone)
            {
                self.chunks.remove(d);
            }
        }
        self.bytes = self.bytes.saturating_sub(p.digests.len() as u64 * entry_bytes());
    }

    /// Forgets packs that are gone (or going).
    pub fn forget(&mut self, gone: &HashSet<Digest>) {
        for p in gone {
            self.remove(p);
        }
        self.order.retain(|p| !gone.contains(p));
    }
}

#[cfg(test)]
mod tests {
    use aetherfs_format::Compression;

    use super::*;

    fn entries(salt: u8, n: u8) -> Vec<PackEntry> {
        (0..n)
            .map(|i| PackEntry {
                digest: Digest::of(&[salt, i]),
                offset: 8,
                stored_len: 3,
                len: 3,
                compression: Compression::None,
            })
            .collect()
    }

    #[test]
    fn the_oldest_pack_goes_first_and_shared_chunks_keep_their_other_location() {
        let mut r = Recent::new(entry_bytes() * 10);
        let (p1, p2, p3) = (Digest::of(b"p1"), Digest::of(b"p2"), Digest::of(b"p3"));
        assert!(r.insert(p1, Some(1), &entries(1, 5), true).is_empty());
        // p2 shares p1's chunks.
        assert!(r.insert(p2, None, &entries(1, 5), true).is_empty());
        assert_eq!(r.get(&Digest::of(&[1, 0])).map(|c| c.all().count()), Some(2));
        assert_eq!(r.insert(p3, None, &entries(3, 4), true), vec![p1]);
        let left: Vec<Digest> = r.get(&Digest::of(&[1, 0])).expect("held").all().map(|l| l.pack).collect();
        assert_eq!(left, vec![p2]);
        assert!(r.bytes() <= entry_bytes() * 10);
        assert!(r.insert(Digest::of(b"huge"), None, &entries(9, 11), true).is_empty());
        assert!(!r.has_pack(&Digest::of(b"huge")));
        r.forget(&HashSet::from([p2]));
        assert!(r.get(&Digest::of(&[1, 0])).is_none());
        assert_eq!(r.chunks(), 4);
    }
}
