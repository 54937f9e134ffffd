//! Little helpers for the binary encodings: LEB128 varints, length-prefixed
//! strings and a bounds-checked reader that never panics on hostile input.

use crate::FormatError;
use crate::digest::Digest;

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    /// A reader over an object that must be at most `max` bytes and start with
    /// `magic` and the little-endian `version`.
    pub(crate) fn open(
        buf: &'a [u8],
        what: &'static str,
        max: usize,
        magic: &[u8; 4],
        version: u16,
    ) -> Result<Self, FormatError> {
        if buf.len() > max {
            return Err(FormatError::TooLarge { what, max });
        }
        let mut r = Self::new(buf, what);
        if r.bytes(4)? != magic {
            return Err(r.err(format!("not an AetherFS {what} (bad magic)")));
        }
        let v = r.bytes(2)?;
        let found = u16::from_le_bytes([v[0], v[1]]);
        if found != version {
            return Err(FormatError::UnsupportedVersion { what, version: found });
        }
        Ok(r)
    }

    pub(crate) fn err(&self, msg: impl Into<String>) -> FormatError {
        FormatError::Corrupt { what: self.what, offset: self.pos, msg: msg.into() }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if n > self.remaining() {
            return Err(self.err(format!("needs {n} bytes, {} left", self.remaining())));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn varint(&mut self) -> Result<u64, FormatError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return Err(self.err("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                // Only the shortest encoding: one value, one spelling, so
                // the bytes (and the digest) of a manifest are canonical.
                if b == 0 && shift > 0 {
                    return Err(self.err("varint not in its shortest form"));
                }
                return Ok(v);
            }
        }
        Err(self.err("varint too long"))
    }

    /// A varint that must fit `max`.
    pub(crate) fn varint_max(&mut self, max: u64, field: &str) -> Result<u64, FormatError> {
        let v = self.varint()?;
        if v > max {
            return Err(self.err(format!("{field} {v} exceeds {max}")));
        }
        Ok(v)
    }

    /// A count of items that each take at least `min_item` bytes: bounded by
    /// what is left, so a forged count cannot make us allocate.
    pub(crate) fn count(&mut self, min_item: usize, field: &str) -> Result<usize, FormatError> {
        let n = self.varint()?;
        if n > (self.remaining() / min_item.max(1)) as u64 {
            return Err(self.err(format!("{field} count {n} exceeds the data")));
        }
        Ok(n as usize)
    }

    pub(crate) fn str(&mut self, max: usize, field: &str) -> Result<&'a str, FormatError> {
        let n = self.varint_max(max as u64, field)? as usize;
        let b = self.bytes(n)?;
        std::str::from_utf8(b).map_err(|_| self.err(format!("{field} is not UTF-8")))
    }

    pub(crate) fn digest(&mut self) -> Result<Digest, FormatError> {
        let b = self.bytes(32)?;
        let mut a = [0u8; 32];
        a.copy_from_slice(b);
        Ok(Digest::from_bytes(a))
    }

    pub(crate) fn finish(&self) -> Result<(), FormatError> {
        if self.remaining() != 0 {
            return Err(self.err(format!("{} trailing bytes", self.remaining())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_reject_overflow() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut r = Reader::new(&b, "test");
            assert_eq!(r.varint().unwrap(), v);
            r.finish().unwrap();
        }
        let overflow = [0xffu8; 11];
        assert!(Reader::new(&overflow, "test").varint().is_err());
        assert!(Reader::new(&[0x80], "test").varint().is_err());
        // Padded encodings of 0 and 8 are refused (found by fuzz/).
        for padded in [&[0x80, 0x00][..], &[0x88, 0x80, 0x00]] {
            assert!(Reader::new(padded, "test").varint().is_err(), "{padded:02x?}");
        }
        let mut top = Vec::new();
        put_varint(&mut top, 1 << 63);
        assert_eq!(Reader::new(&top, "test").varint().unwrap(), 1 << 63);
    }
}
