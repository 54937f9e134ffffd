//! Placement bytes, as a hub serves them to every reader: decoding never
//! panics, and what decodes re-encodes to bytes that decode equal (the
//! encoding is stable; unlike a manifest's, a placement's bytes are not an
//! identity, so a non-minimal encoding is not refused).
#![no_main]

use aetherfs_format::Placement;
use aetherfs_format::manifest::{Compression, max_stored_len};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Placement::decode(data) else { return };
    let bytes = p.encode();
    assert!(bytes.len() <= data.len(), "the canonical encoding is the shortest");
    let again = Placement::decode(&bytes).expect("a re-encoded placement decodes");
    assert_eq!(again, p);
    assert_eq!(again.encode(), bytes, "encoding is deterministic");

    let chunks = p.chunks();
    assert!(chunks.windows(2).all(|w| w[0].digest < w[1].digest), "strictly sorted by digest");
    for c in chunks {
        assert_eq!(p.locate(&c.digest), Some(c.location));
        assert!(c.len > 0);
        let l = c.location;
        match l.compression {
            Compression::None => assert_eq!(l.stored_len, c.len),
            Compression::Zstd => assert!(l.stored_len > 0 && l.stored_len <= max_stored_len(c.len)),
        }
        assert!(p.packs().contains(&l.pack));
    }
});
