//! HTTP `Range` headers (RFC 9110, section 14): one byte range, the only
//! kind the hub serves and the agent asks for. The one parser of them.

use std::fmt;
use std::ops::Range;

/// One byte range, as a client wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeSpec {
    /// `a-b`, both inclusive, `a <= b`.
    FromTo(u64, u64),
    /// `a-`
    From(u64),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

/// Why a `Range` header in bytes was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeError {
    /// `bytes=0-1,5-6`.
    Several,
    /// Anything but `bytes=A-B`, `bytes=A-` or `bytes=-N` with `A <= B`.
    Malformed,
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RangeError::Several => "only one byte range per request is supported",
            RangeError::Malformed => "malformed Range header: expected bytes=A-B, bytes=A- or bytes=-N",
        })
    }
}

impl std::error::Error for RangeError {}

impl RangeSpec {
    /// The half-open byte range this selects in an object of `size` bytes,
    /// or `None` when it selects nothing. A returned range is never empty
    /// and always ends within `size`.
    pub fn resolve(self, size: u64) -> Option<Range<u64>> {
        match self {
            RangeSpec::FromTo(a, b) if a < size => Some(a..b.min(size - 1) + 1),
            RangeSpec::From(a) if a < size => Some(a..size),
            RangeSpec::Suffix(n) if n > 0 && size > 0 => Some(size.saturating_sub(n)..size),
            _ => None,
        }
    }
}

/// The header value that asks for this range, e.g. `bytes=0-9`.
impl fmt::Display for RangeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeSpec::FromTo(a, b) => write!(f, "bytes={a}-{b}"),
            RangeSpec::From(a) => write!(f, "bytes={a}-"),
            RangeSpec::Suffix(n) => write!(f, "bytes=-{n}"),
        }
    }
}

/// Parses a `Range` header value. `Ok(None)` for units other than bytes
/// (the whole object is served, as RFC 9110 allows); several ranges are
/// refused.
pub fn parse_range(h: &str) -> Result<Option<RangeSpec>, RangeError> {
    let Some(set) = h.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if set.contains(',') {
        return Err(RangeError::Several);
    }
    let (a, b) = set.trim().split_once('-').ok_or(RangeError::Malformed)?;
    let num = |s: &str| {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(RangeError::Malformed);
        }
        s.parse::<u64>().map_err(|_| RangeError::Malformed)
    };
    match (a.is_empty(), b.is_empty()) {
        (true, false) => Ok(Some(RangeSpec::Suffix(num(b)?))),
        (false, true) => Ok(Some(RangeSpec::From(num(a)?))),
        (false, false) => {
            let (a, b) = (num(a)?, num(b)?);
            if a > b {
                return Err(RangeError::Malformed);
            }
            Ok(Some(RangeSpec::FromTo(a, b)))
        }
        (true, true) => Err(RangeError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_one_range() {
        let p = |h: &str| parse_range(h).ok().flatten();
        assert_eq!(p("bytes=0-9"), Some(RangeSpec::FromTo(0, 9)));
        assert_eq!(p(" bytes= 3-3 "), Some(RangeSpec::FromTo(3, 3)));
        assert_eq!(p("bytes=5-"), Some(RangeSpec::From(5)));
        assert_eq!(p("bytes=-3"), Some(RangeSpec::Suffix(3)));
        assert_eq!(p("bytes=0-18446744073709551615"), Some(RangeSpec::FromTo(0, u64::MAX)));
        assert_eq!(parse_range("items=0-1"), Ok(None));
        assert_eq!(parse_range(""), Ok(None));
        assert_eq!(parse_range("bytes=0-1,4-5"), Err(RangeError::Several));
        for bad in [
            "bytes=-",
            "bytes=a-b",
            "bytes=5-1",
            "bytes=1",
            "bytes=+1-2",
            "bytes=1-+2",
            "bytes=0-18446744073709551616",
            "bytes=1 -2",
            "bytes=1--2",
            "bytes=٣-4",
        ] {
            assert_eq!(parse_range(bad), Err(RangeError::Malformed), "{bad}");
        }
    }

    #[test]
    fn resolves_within_the_object() {
        assert_eq!(RangeSpec::FromTo(0, 9).resolve(5), Some(0..5));
        assert_eq!(RangeSpec::FromTo(2, 3).resolve(5), Some(2..4));
        assert_eq!(RangeSpec::FromTo(5, 9).resolve(5), None);
        assert_eq!(RangeSpec::FromTo(0, u64::MAX).resolve(u64::MAX), Some(0..u64::MAX));
        assert_eq!(RangeSpec::From(4).resolve(5), Some(4..5));
        assert_eq!(RangeSpec::From(5).resolve(5), None);
        assert_eq!(RangeSpec::Suffix(2).resolve(5), Some(3..5));
        assert_eq!(RangeSpec::Suffix(9).resolve(5), Some(0..5));
        assert_eq!(RangeSpec::Suffix(0).resolve(5), None);
        assert_eq!(RangeSpec::Suffix(1).resolve(0), None);
        assert_eq!(RangeSpec::From(0).resolve(0), None);
    }

    #[test]
    fn writes_what_it_parses() {
        for r in
            [RangeSpec::FromTo(0, 9), RangeSpec::From(7), RangeSpec::Suffix(1), RangeSpec::FromTo(u64::MAX, u64::MAX)]
        {
            assert_eq!(parse_range(&r.to_string()), Ok(Some(r)));
        }
        assert_eq!(RangeSpec::FromTo(10, 19).to_string(), "bytes=10-19");
    }
}
