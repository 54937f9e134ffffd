//! The cache's master key: from a file, an environment value, or random.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine;
use zeroize::Zeroizing;

use super::{CacheError, KeyOrigin, KeyProblem};

/// Key files larger than this are certainly not keys.
const MAX_KEY_FILE: u64 = 4096;

/// The master key of a cache.
pub enum CacheKey {
    /// A 256-bit key that outlives the process: the cache survives restarts.
    Persistent(Zeroizing<[u8; 32]>),
    /// A random key held in memory only: the cache starts empty at every open
    /// and deletes its segments when dropped.
    Ephemeral,
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Persistent(_) => f.write_str("CacheKey::Persistent(<redacted>)"),
            Self::Ephemeral => f.write_str("CacheKey::Ephemeral"),
        }
    }
}

impl CacheKey {
    /// Reads a key file: exactly 32 raw bytes, or 64 hex characters, or the
    /// base64 of 32 bytes (surrounding whitespace such as a final newline is
    /// ignored). Warns when the file is readable by group or others.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, CacheError> {
        let path = path.as_ref();
        let io_err = |source| CacheError::KeyFile { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
                "the cache key file is readable by group or others; chmod 600 it"
            );
        }
        let origin = KeyOrigin::File(path.to_path_buf());
        if !meta.is_file() || meta.len() > MAX_KEY_FILE {
            return Err(invalid(origin, KeyProblem::FileSize(meta.len())));
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
        file.take(MAX_KEY_FILE + 1).read_to_end(&mut bytes).map_err(io_err)?;
        if bytes.len() == 32 {
            let mut key = Zeroizing::new([0u8; 32]);
            key.copy_from_slice(&bytes);
            return Ok(Self::Persistent(key));
        }
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return Err(invalid(origin, KeyProblem::Length(bytes.len())));
        };
        parse_text(text, origin)
    }

    /// Parses a key given as text (an environment variable): 64 hex
    /// characters or the base64 (standard or URL-safe, padded or not) of 32 bytes.
    pub fn from_env_value(s: &str) -> Result<Self, CacheError> {
        parse_text(s, KeyOrigin::Env)
    }
}

fn invalid(origin: KeyOrigin, why: KeyProblem) -> CacheError {
    CacheError::InvalidKey { origin, why }
}

fn parse_text(s: &str, origin: KeyOrigin) -> Result<CacheKey, CacheError> {
    let s = s.trim_ascii();
    let mut key = Zeroizing::new([0u8; 32]);
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode_to_slice(s, key.as_mut_slice()).map_err(|e| invalid(origin, KeyProblem::Hex(e)))?;
        return Ok(CacheKey::Persistent(key));
    }
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        let mut out = Zeroizing::new([0u8; 48]);
        if let Ok(32) = engine.decode_slice(s, out.as_mut_slice()) {
            key.copy_from_slice(&out[..32]);
            return Ok(CacheKey::Persistent(key));
        }
    }
    Err(invalid(origin, KeyProblem::TextLength(s.chars().count())))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use base64::Engine;

    use super::*;

    fn key_of(k: CacheKey) -> [u8; 32] {
        match k {
            CacheKey::Persistent(k) => *k,
            CacheKey::Ephemeral => panic!("ephemeral"),
        }
    }

    #[test]
    fn parses_raw_hex_and_base64_files() {
        let dir = tempfile::tempdir().unwrap();
        let raw: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(1));
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            p
        };
        // Raw bytes, even ones that end in '\n' or look like whitespace, are kept as they are.
        let mut nl = raw;
        nl[31] = b'\n';
        assert_eq!(key_of(CacheKey::from_file(write("raw", &raw)).unwrap()), raw);
        assert_eq!(key_of(CacheKey::from_file(write("raw-nl", &nl)).unwrap()), nl);
        let h = hex::encode(raw);
        assert_eq!(key_of(CacheKey::from_file(write("hex", h.as_bytes())).unwrap()), raw);
        assert_eq!(key_of(CacheKey::from_file(write("hex-nl", format!("{h}\n").as_bytes())).unwrap()), raw);
        let upper = format!("{}\r\n", h.to_uppercase());
        assert_eq!(key_of(CacheKey::from_file(write("hex-upper", upper.as_bytes())).unwrap()), raw);
        for engine in [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            let b = format!("{}\n", engine.encode(raw));
            assert_eq!(key_of(CacheKey::from_file(write("b64", b.as_bytes())).unwrap()), raw);
            assert_eq!(key_of(CacheKey::from_env_value(&b).unwrap()), raw);
        }
        assert_eq!(key_of(CacheKey::from_env_value(&h).unwrap()), raw);
    }

    #[test]
    fn refuses_other_sizes_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in [
            ("empty", Vec::new()),
            ("short", vec![7u8; 31]),
            ("long", vec![7u8; 33]),
            ("hex-short", hex::encode([1u8; 31]).into_bytes()),
            ("hex-long", hex::encode([1u8; 33]).into_bytes()),
            ("b64-16", base64::engine::general_purpose::STANDARD.encode([1u8; 16]).into_bytes()),
            ("b64-48", base64::engine::general_purpose::STANDARD.encode([1u8; 48]).into_bytes()),
            ("binary", vec![0xffu8; 40]),
            ("huge", vec![b'a'; 10_000]),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, &bytes).unwrap();
            let err = CacheKey::from_file(&p).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, CacheError::InvalidKey { .. }), "{name}: {msg}");
            assert!(msg.contains(name), "{name}: the error names the file: {msg}");
        }
        let missing = CacheKey::from_file(dir.path().join("missing")).unwrap_err();
        assert!(matches!(missing, CacheError::KeyFile { .. }), "{missing}");
        let err = CacheKey::from_env_value("xyz").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid cache key: 3 characters: expected 64 hex characters or the base64 of exactly 32 bytes"
        );
        assert!(
            matches!(err, CacheError::InvalidKey { origin: KeyOrigin::Env, why: KeyProblem::TextLength(3) }),
            "{err:?}"
        );
        let why = std::error::Error::source(&err).map(|s| s.to_string());
        assert_eq!(why.as_deref(), Some("3 characters: expected 64 hex characters or the base64 of exactly 32 bytes"));
        let p = dir.path().join("binary");
        let err = CacheKey::from_file(&p).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "invalid cache key in {}: 40 bytes: expected 32 raw bytes, 64 hex characters or base64 of 32 bytes",
                p.display()
            )
        );
        assert!(
            matches!(&err, CacheError::InvalidKey { origin: KeyOrigin::File(f), why: KeyProblem::Length(40) } if *f == p)
        );
        for bad in ["", "xyz", &"g".repeat(64), &hex::encode([1u8; 16])] {
            assert!(CacheKey::from_env_value(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_group_readable_key_file_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, hex::encode([9u8; 32])).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(key_of(CacheKey::from_file(&p).unwrap()), [9u8; 32]);
        assert_eq!(format!("{:?}", CacheKey::from_file(&p).unwrap()), "CacheKey::Persistent(<redacted>)");
    }
}
