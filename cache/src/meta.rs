//! The metadata file `cache.meta` (format v1), replaced atomically.
//!
//! ```text
//!   0  magic "AFSCMETA"
//!   8  format version u32 (1)
//!  12  flags u32            bit 0: written by an ephemeral-key cache
//!  16  salt [32]            HKDF salt, random per cache generation
//!  48  key-check nonce [12]
//!  60  key-check value [48] AES-256-GCM of a fixed 32-byte string (+ tag)
//! 108  BLAKE3(bytes 0..108) [32]
//! ```

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::layout::{FORMAT_VERSION, KEY_CHECK_LEN, META_FILE, NONCE_LEN};
const MAGIC: [u8; 8] = *b"AFSCMETA";
const BODY_LEN: usize = 16 + 32 + NONCE_LEN + KEY_CHECK_LEN;
const META_LEN: usize = BODY_LEN + 32;
pub(super) const FLAG_EPHEMERAL: u32 = 1;

/// Why a metadata file is unusable.
#[derive(Debug, thiserror::Error)]
pub(super) enum MetaError {
    /// Too short for a header, or the magic is wrong.
    #[error("not a cache metadata file")]
    NotMeta,
    #[error("format version {found}, this agent reads {FORMAT_VERSION}")]
    UnknownVersion { found: u32 },
    /// Torn or padded: the file's length.
    #[error("damaged metadata file")]
    Length(usize),
    #[error("damaged metadata file")]
    Checksum,
}

pub(super) struct Meta {
    pub flags: u32,
    pub salt: [u8; 32],
    pub check_nonce: [u8; NONCE_LEN],
    pub check_value: [u8; KEY_CHECK_LEN],
}

pub(super) enum MetaRead {
    Missing,
    /// Present but unusable: unknown version, torn or damaged.
    Invalid(MetaError),
    Found(Meta),
}

impl Meta {
    /// Identifies this generation of the cache in segment headers and hints.
    pub fn cache_id(&self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id.copy_from_slice(&blake3::hash(&self.salt).as_bytes()[..16]);
        id
    }

    fn encode(&self) -> [u8; META_LEN] {
        let mut b = [0u8; META_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..48].copy_from_slice(&self.salt);
        b[48..60].copy_from_slice(&self.check_nonce);
        b[60..BODY_LEN].copy_from_slice(&self.check_value);
        let sum = *blake3::hash(&b[..BODY_LEN]).as_bytes();
        b[BODY_LEN..].copy_from_slice(&sum);
        b
    }

    fn decode(b: &[u8]) -> Result<Self, MetaError> {
        if b.len() < 12 || b[0..8] != MAGIC {
            return Err(MetaError::NotMeta);
        }
        let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        if version != FORMAT_VERSION {
            return Err(MetaError::UnknownVersion { found: version });
        }
        if b.len() != META_LEN {
            return Err(MetaError::Length(b.len()));
        }
        if blake3::hash(&b[..BODY_LEN]).as_bytes()[..] != b[BODY_LEN..] {
            return Err(MetaError::Checksum);
        }
        let mut m = Meta { flags: 0, salt: [0; 32], check_nonce: [0; NONCE_LEN], check_value: [0; KEY_CHECK_LEN] };
        m.flags = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        m.salt.copy_from_slice(&b[16..48]);
        m.check_nonce.copy_from_slice(&b[48..60]);
        m.check_value.copy_from_slice(&b[60..BODY_LEN]);
        Ok(m)
    }
}

pub(super) fn read(dir: &Path) -> io::Result<MetaRead> {
    let f = match File::open(dir.join(META_FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(MetaRead::Missing),
        Err(e) => return Err(e),
    };
    let mut b = Vec::with_capacity(META_LEN);
    f.take(META_LEN as u64 + 1).read_to_end(&mut b)?;
    Ok(match Meta::decode(&b) {
        Ok(m) => MetaRead::Found(m),
        Err(why) => MetaRead::Invalid(why),
    })
}

/// Replaces the metadata file atomically: temporary file, fsync, rename,
/// fsync of the directory.
pub(super) fn write(dir: &Path, meta: &Meta) -> io::Result<()> {
    let path = dir.join(META_FILE);
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    let result = (|| {
        let mut f = File::options().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&meta.encode())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(read(dir.path()).unwrap(), MetaRead::Missing));
        let m = Meta { flags: FLAG_EPHEMERAL, salt: [5; 32], check_nonce: [6; 12], check_value: [7; KEY_CHECK_LEN] };
        write(dir.path(), &m).unwrap();
        let MetaRead::Found(back) = read(dir.path()).unwrap() else { panic!("not found") };
        assert_eq!((back.flags, back.salt, back.check_nonce), (m.flags, m.salt, m.check_nonce));
        assert_eq!(back.check_value, m.check_value);
        let good = std::fs::read(dir.path().join(META_FILE)).unwrap();
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 1;
            std::fs::write(dir.path().join(META_FILE), &b).unwrap();
            assert!(matches!(read(dir.path()).unwrap(), MetaRead::Invalid(_)), "flip at {i}");
        }
        std::fs::write(dir.path().join(META_FILE), &good[..50]).unwrap();
        assert!(matches!(read(dir.path()).unwrap(), MetaRead::Invalid(_)));
        let mut v2 = good.clone();
        v2[8] = 2;
        std::fs::write(dir.path().join(META_FILE), &v2).unwrap();
        let MetaRead::Invalid(why) = read(dir.path()).unwrap() else { panic!("accepted") };
        assert!(matches!(why, MetaError::UnknownVersion { found: 2 }), "{why}");
        assert!(why.to_string().contains("version 2"), "{why}");
    }
}
