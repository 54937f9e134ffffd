//! Dataset names, tags and references, with OCI's rules.
//!
//! - Name: `[namespace/]name`, lower-case segments `[a-z0-9]+([._-][a-z0-9]+)*`,
//!   at most 255 characters.
//! - Tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
//! - Reference: `name[:tag][@digest]`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::FormatError;
use crate::digest::{Digest, truncate};

/// A dataset name such as `acme/geoip`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

/// A tag such as `latest` or `2026.11`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

/// `name[:tag][@digest]`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Reference {
    pub name: Name,
    pub tag: Option<Tag>,
    pub digest: Option<Digest>,
}

pub const NAME_MAX: usize = 255;
pub const TAG_MAX: usize = 128;

fn valid_segment(seg: &str) -> bool {
    // [a-z0-9]+([._-][a-z0-9]+)*
    let b = seg.as_bytes();
    if b.is_empty() {
        return false;
    }
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let sep = |c: u8| c == b'.' || c == b'_' || c == b'-';
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut prev_sep = false;
    for &c in b {
        if alnum(c) {
            prev_sep = false;
        } else if sep(c) {
            if prev_sep {
                return false;
            }
            prev_sep = true;
        } else {
            return false;
        }
    }
    true
}

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Path segments of the name, `acme/geoip` → `["acme", "geoip"]`.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl FromStr for Name {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > NAME_MAX || !s.split('/').all(valid_segment) {
            return Err(FormatError::InvalidName(truncate(s)));
        }
        Ok(Self(s.to_string()))
    }
}

impl Tag {
    pub fn latest() -> Self {
        Self("latest".into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let first_ok = b.first().is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_');
        let rest_ok = b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-');
        if !first_ok || !rest_ok || b.len() > TAG_MAX {
            return Err(FormatError::InvalidTag(truncate(s)));
        }
        Ok(Self(s.to_string()))
    }
}

impl Reference {
    /// The tag to resolve: the given one, or `latest` when neither tag nor digest is given.
    pub fn tag_or_latest(&self) -> Tag {
        self.tag.clone().unwrap_or_else(Tag::latest)
    }
}

impl FromStr for Reference {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || FormatError::InvalidReference(truncate(s));
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (rest, Some(d.parse::<Digest>().map_err(|_| invalid())?)),
            None => (s, None),
        };
        // A tag follows the last ':' that is after the last '/'.
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].find(':') {
            Some(i) => {
                let (n, t) = rest.split_at(slash + i);
                (n, Some(t[1..].parse::<Tag>().map_err(|_| invalid())?))
            }
            None => (rest, None),
        };
        let name = name.parse::<Name>().map_err(|_| invalid())?;
        Ok(Self { name, tag, digest })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

macro_rules! string_type {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
string_type!(Name);
string_type!(Tag);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "acme/geoip", "a.b-c_d/e0", "x/y/z"] {
            assert!(ok.parse::<Name>().is_ok(), "{ok}");
        }
        let long = "a".repeat(256);
        for bad in ["", "A", "/a", "a/", "a//b", "a..b", "-a", "a-", "a b", "a:b", "../a", long.as_str()] {
            assert!(bad.parse::<Name>().is_err(), "{bad}");
        }
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.4.0", "2026.11", "_x", "A-b_c.d"] {
            assert!(ok.parse::<Tag>().is_ok(), "{ok}");
        }
        let long = "a".repeat(129);
        for bad in ["", ".x", "-x", "a/b", "a:b", "a b", long.as_str()] {
            assert!(bad.parse::<Tag>().is_err(), "{bad}");
        }
    }

    #[test]
    fn references() {
        let d = Digest::of(b"x");
        let r: Reference = format!("acme/geoip:v2@{d}").parse().unwrap();
        assert_eq!(r.name.as_str(), "acme/geoip");
        assert_eq!(r.tag.as_ref().unwrap().as_str(), "v2");
        assert_eq!(r.digest, Some(d));
        assert_eq!(r.to_string(), format!("acme/geoip:v2@{d}"));

        let r: Reference = "acme/geoip".parse().unwrap();
        assert!(r.tag.is_none() && r.digest.is_none());
        assert_eq!(r.tag_or_latest().as_str(), "latest");

        for bad in ["", "Acme", "acme:", "acme:v1:v2", "acme@", "acme@blake3:00", "acme:-x", ":v1"] {
            assert!(bad.parse::<Reference>().is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;

    proptest::proptest! {
        #[test]
        fn parsing_never_panics_and_round_trips(s in "\\PC{0,300}") {
            if let Ok(r) = s.parse::<Reference>() {
                proptest::prop_assert_eq!(r.to_string().parse::<Reference>().ok(), Some(r));
            }
            let _ = s.parse::<Name>();
            let _ = s.parse::<Tag>();
            let _ = s.parse::<Digest>();
        }
    }
}
