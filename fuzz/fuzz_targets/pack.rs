//! Packs and pack indexes from anyone (an uploading client, the store):
//! parsing never panics; a parsed pack's entries tile its data section
//! exactly, within the pack; what verifies decodes chunk by chunk to the
//! stated lengths and digests and is rebuilt byte for byte by the
//! builder; a decoded index re-encodes to exactly its bytes.
#![no_main]

use aetherfs_format::pack::{PackBuilder, decode_chunk, decode_index, encode_index, parse_pack, verify_pack};
use aetherfs_format::{Compression, Digest};
use libfuzzer_sys::fuzz_target;

/// The pack's fixed header: magic, version, reserved.
const HEADER_LEN: u64 = 8;

fuzz_target!(|data: &[u8]| {
    // An index on its own (the copy a hub keeps beside each pack).
    if let Ok(entries) = decode_index(data, None) {
        assert_eq!(encode_index(&entries), data, "a decoded index re-encodes to its bytes");
        let mut next = HEADER_LEN;
        for e in &entries {
            assert!(e.offset >= next, "entries sorted without overlap");
            next = e.offset + u64::from(e.stored_len);
        }
    }

    let parsed = parse_pack(data);
    let verified = verify_pack(data);
    if parsed.is_err() {
        assert!(verified.is_err(), "verify_pack accepted what parse_pack refused");
    }
    let Ok((range, entries)) = parsed else { return };
    assert!(range.start as u64 >= HEADER_LEN && range.start <= range.end && range.end <= data.len());
    let mut next = HEADER_LEN;
    for e in &entries {
        assert_eq!(e.offset, next, "chunks are back to back from the header");
        next = e.offset + u64::from(e.stored_len);
    }
    assert_eq!(next, range.start as u64, "the chunks end where the index starts");
    assert_eq!(decode_index(&data[range.clone()], Some(range.start as u64)).as_ref(), Ok(&entries));

    let Ok((vrange, ventries)) = verified else { return };
    assert_eq!((vrange, &ventries), (range, &entries));
    let mut b = PackBuilder::new();
    for e in &entries {
        let stored = &data[e.offset as usize..(e.offset + u64::from(e.stored_len)) as usize];
        let plain = decode_chunk(stored, e.len, e.compression, &e.digest).expect("a verified chunk decodes");
        assert_eq!(plain.len(), e.len as usize);
        assert_eq!(Digest::of(&plain), e.digest);
        if e.compression == Compression::None {
            assert_eq!(plain, stored);
        }
        b.add_stored(e.digest, stored, e.len, e.compression);
    }
    let built = b.finish();
    assert_eq!(built.entries, entries);
    // The builder writes zeros in the two reserved header bytes.
    if data[6..8] == [0, 0] {
        assert_eq!(built.bytes, data, "a verified pack is rebuilt byte for byte");
    }
});
