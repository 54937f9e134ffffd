//! Manifest bytes from anyone (a pushing client, a hub, a cache): decoding
//! never panics, and what decodes is valid and canonical: it re-encodes to
//! exactly the bytes it came from (one version, one digest), and decodes
//! the same way placed or unplaced.
#![no_main]

use aetherfs_format::manifest::MANIFEST_VERSION;
use aetherfs_format::{ChunkLocation, Compression, Digest, EntryKind, Manifest, Placement};
use libfuzzer_sys::fuzz_target;

fn anywhere(d: &Digest, len: u32) -> Option<ChunkLocation> {
    Some(ChunkLocation { pack: *d, offset: 0, stored_len: len, compression: Compression::None })
}

fuzz_target!(|data: &[u8]| {
    let unplaced = Manifest::decode_unplaced(data);
    let m = match Manifest::decode_placed_by(data, anywhere) {
        Ok(m) => m,
        Err(e) => {
            assert!(unplaced.is_err(), "decode_unplaced accepted what decode_placed_by refused: {e}");
            // A decoder that cannot place a chunk never returns a manifest.
            assert!(Manifest::decode_placed_by(data, |_, _| None).is_err());
            return;
        }
    };
    m.validate().expect("a decoded manifest is valid");
    let bytes = m.encode().expect("a decoded manifest encodes");
    assert_eq!(bytes, data, "decoding accepted non-canonical bytes");

    let unplaced = unplaced.expect("decode_unplaced refused what decode_placed_by accepted");
    assert_eq!(unplaced.stats, m.stats());
    let unique = m.unique_chunks();
    assert_eq!(unplaced.chunks.len(), unique.len());
    for (d, len) in &unplaced.chunks {
        assert_eq!(unique[d].len, *len);
    }

    // Joined with its own placement (what a hub writes), through its encoding.
    let digest = Digest::of(data);
    let placement = Placement::decode(&Placement::of(&m, digest).encode()).expect("a placement decodes");
    assert_eq!(Manifest::decode(data, &placement).expect("decodes with its placement"), m);
    if !unique.is_empty() {
        // A placement that misses a chunk is refused.
        assert!(Manifest::decode(data, &Placement::new(digest, [])).is_err());
    }

    for e in &m.entries {
        if let EntryKind::File(f) = &e.kind {
            assert_eq!(f.size(), f.chunks().iter().map(|c| u64::from(c.len)).sum::<u64>());
            assert_eq!(
                f.digest(),
                aetherfs_format::file_digest(f.size(), f.chunks().iter().map(|c| (c.digest, c.len)))
            );
        }
    }
    let json = m.to_json(&digest, true);
    assert_eq!(json["version"], MANIFEST_VERSION);
});
