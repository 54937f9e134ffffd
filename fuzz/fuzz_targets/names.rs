//! Dataset names, tags, digests and references (`NAME[:TAG][@DIGEST]`), as
//! URLs, command lines and JSON bodies carry them: parsing never panics,
//! what parses is within the documented grammar and round-trips through
//! Display and FromStr unchanged, and JSON agrees with FromStr.
#![no_main]

use aetherfs_format::api::{Expected, valid_reader};
use aetherfs_format::{Digest, Name, Reference, Tag};
use libfuzzer_sys::fuzz_target;

fn name_ok(s: &str) -> bool {
    let seg = |g: &str| {
        let b = g.as_bytes();
        let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        !b.is_empty()
            && b.first().is_some_and(alnum)
            && b.last().is_some_and(alnum)
            && b.iter().all(|c| alnum(c) || b"._-".contains(c))
            && !b.windows(2).any(|w| !alnum(&w[0]) && !alnum(&w[1]))
    };
    !s.is_empty() && s.len() <= 255 && s.split('/').all(seg)
}

fn tag_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let json = serde_json::to_string(s).expect("a string serializes");

    let name = s.parse::<Name>();
    assert_eq!(name.is_ok(), name_ok(s), "Name grammar for {s:?}");
    if let Ok(n) = &name {
        assert_eq!(n.to_string(), s);
        assert_eq!(n.to_string().parse::<Name>().as_ref(), Ok(n));
        assert!(n.segments().all(|g| !g.is_empty()));
    }
    assert_eq!(serde_json::from_str::<Name>(&json).ok(), name.ok());

    let tag = s.parse::<Tag>();
    assert_eq!(tag.is_ok(), tag_ok(s), "Tag grammar for {s:?}");
    if let Ok(t) = &tag {
        assert_eq!(t.to_string(), s);
    }
    assert_eq!(serde_json::from_str::<Tag>(&json).ok(), tag.ok());

    let digest = s.parse::<Digest>();
    if let Ok(d) = &digest {
        assert_eq!(d.to_string(), s, "one spelling per digest");
        assert_eq!(Digest::from_hex(&d.hex()).as_ref(), Ok(d));
    }
    assert_eq!(serde_json::from_str::<Digest>(&json).ok(), digest.ok());

    if let Ok(e) = s.parse::<Expected>() {
        assert_eq!(e.to_string(), s);
        assert_eq!(serde_json::from_str::<Expected>(&json).ok(), Some(e));
    }

    if let Ok(r) = s.parse::<Reference>() {
        assert_eq!(r.to_string(), s, "a reference prints as written");
        assert_eq!(r.to_string().parse::<Reference>().as_ref(), Ok(&r));
        assert!(name_ok(r.name.as_str()));
        if let Some(t) = &r.tag {
            assert!(tag_ok(t.as_str()));
        }
        assert_eq!(r.tag_or_latest().as_str(), r.tag.as_ref().map_or("latest", |t| t.as_str()));
    }

    if valid_reader(s) {
        assert!(!s.is_empty() && s.len() <= 128 && !s.starts_with(['.', '-']));
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
    }
});
