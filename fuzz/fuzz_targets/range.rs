//! `Range` headers on pack reads: the input is an object size (8 bytes,
//! little-endian) then the header value. Parsing never panics; a parsed
//! range prints back to a header that parses to it; a range that resolves
//! is non-empty, within the object, and the bytes the spec names.
#![no_main]

use aetherfs_util::range::{RangeSpec, parse_range};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((size, header)) = data.split_first_chunk::<8>() else { return };
    let size = u64::from_le_bytes(*size);
    let Ok(header) = std::str::from_utf8(header) else { return };
    let spec = match parse_range(header) {
        Ok(Some(spec)) => spec,
        Ok(None) => {
            assert!(!header.trim().starts_with("bytes="), "{header:?} ignored");
            return;
        }
        Err(_) => {
            assert!(header.trim().starts_with("bytes="));
            return;
        }
    };
    assert_eq!(parse_range(&spec.to_string()), Ok(Some(spec)), "{spec} does not parse back");
    let resolved = spec.resolve(size);
    if let Some(r) = &resolved {
        assert!(r.start < r.end && r.end <= size, "{spec} resolved to {r:?} in {size} bytes");
    }
    match spec {
        RangeSpec::FromTo(a, b) => {
            assert!(a <= b);
            assert_eq!(resolved, (a < size).then(|| a..b.min(size - 1) + 1));
        }
        RangeSpec::From(a) => assert_eq!(resolved, (a < size).then_some(a..size)),
        RangeSpec::Suffix(n) => assert_eq!(resolved, (n > 0 && size > 0).then(|| size - n.min(size)..size)),
    }
});
