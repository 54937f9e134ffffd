//! BLAKE3 content digests, written `blake3:<64 hex>`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::FormatError;

/// A BLAKE3 digest: of a chunk's, a pack's or a manifest's bytes, or a file's
/// [`file_digest`] (derived from its chunks).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

const PREFIX: &str = "blake3:";

impl Digest {
    pub const LEN: usize = 32;

    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The bare 64-character lower-case hex form, used in storage keys.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the bare hex form (no `blake3:` prefix).
    pub fn from_hex(s: &str) -> Result<Self, FormatError> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(FormatError::InvalidDigest(truncate(s)));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| FormatError::InvalidDigest(truncate(s)))?;
        Ok(Self(out))
    }
}

/// The BLAKE3 derive-key context of [`file_digest`]. Changing it changes every
/// file digest: it is part of the format (docs/formats.md).
pub const FILE_DIGEST_CONTEXT: &str = "aetherfs 2026-12 file digest v1";

/// A file's digest, derived from its chunk list rather than hashed from its
/// bytes: BLAKE3 in derive-key mode over `size u64 LE`, then every chunk's
/// `digest[32] | len u32 LE` in order. Anyone holding a manifest (the hub
/// included) can compute it, so a manifest cannot state a wrong one; the
/// bytes are covered through the chunk digests, which every reader checks.
/// It is not `b3sum` of the file: `aetherfs digest FILE` computes it locally.
pub fn file_digest(size: u64, chunks: impl IntoIterator<Item = (Digest, u32)>) -> Digest {
    let mut h = blake3::Hasher::new_derive_key(FILE_DIGEST_CONTEXT);
    h.update(&size.to_le_bytes());
    for (digest, len) in chunks {
        h.update(digest.as_bytes());
        h.update(&len.to_le_bytes());
    }
    Digest(*h.finalize().as_bytes())
}

pub(crate) fn truncate(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        s.to_string()
    } else {
        let mut end = MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

impl FromStr for Digest {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix(PREFIX) {
            Some(hex) => Self::from_hex(hex).map_err(|_| FormatError::InvalidDigest(truncate(s))),
            None => Err(FormatError::InvalidDigest(truncate(s))),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", &self.hex()[..12])
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_b3sum() {
        // b3sum of the empty input.
        let d = Digest::of(b"");
        assert_eq!(d.to_string(), "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn file_digest_is_pinned() {
        // Pinned so the derivation cannot change unnoticed; the same values
        // come out of the Python reference in docs/formats.md.
        assert_eq!(file_digest(0, []).to_string(), GOLDEN_EMPTY_FILE);
        let chunks = [(Digest::of(b"one"), 3), (Digest::of(b"two"), 3)];
        assert_eq!(file_digest(6, chunks).to_string(), GOLDEN_TWO_CHUNKS);
        // Not the BLAKE3 of the bytes, nor of an empty input.
        assert_ne!(file_digest(0, []), Digest::of(b""));
        assert_ne!(file_digest(6, chunks), Digest::of(b"onetwo"));
    }

    const GOLDEN_EMPTY_FILE: &str = "blake3:dfeae7ff6059a0f58fa9c68cfd0c5e071d17dab1ebec0a9c7e1dba9bc62a7b6f";
    const GOLDEN_TWO_CHUNKS: &str = "blake3:0d72e1f6bb795fe977621ecf75755f7ace3544f1dab2cf65c1d65533ba73a9df";

    #[test]
    fn a_changed_chunk_list_changes_the_file_digest() {
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let base = file_digest(20, [(a, 10), (b, 10)]);
        for other in [
            file_digest(20, [(b, 10), (a, 10)]),
            file_digest(20, [(a, 10), (a, 10)]),
            file_digest(20, [(a, 11), (b, 9)]),
            file_digest(20, [(a, 10), (b, 10), (a, 0)]),
            file_digest(21, [(a, 10), (b, 10)]),
            file_digest(20, [(a, 10)]),
        ] {
            assert_ne!(other, base);
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "blake3:",
            "sha256:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
            "blake3:AF1349B9F5F9A1A6A0404DEA36DCC9499BCB25C9ADC112B7CC9A93CAE41F3262",
            "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f326",
            "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f32622",
            "blake3:zf1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} accepted");
        }
    }
}
