//! A bearer token kept in a file (a mounted Kubernetes Secret, a file only
//! the operator can read).

use std::path::{Path, PathBuf};

use crate::AccessError;

/// One bearer token in a file. The file is read again on every check, so a
/// rotated Secret takes effect at once; a file that cannot be read or is
/// empty admits nobody.
#[derive(Clone, Debug)]
pub struct TokenFile(PathBuf);

impl TokenFile {
    /// Checks now that the file is readable and not empty, so a typo in a
    /// flag fails at start rather than refusing every request.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, AccessError> {
        let path = path.into();
        let text = std::fs::read_to_string(&path).map_err(|source| AccessError::Io { path: path.clone(), source })?;
        if text.trim().is_empty() {
            return Err(AccessError::EmptyToken(path));
        }
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Whether `presented` (the part after `Bearer `) is the token.
    pub fn matches(&self, presented: &str) -> bool {
        let Ok(expected) = std::fs::read_to_string(&self.0) else { return false };
        let (expected, presented) = (expected.trim().as_bytes(), presented.trim().as_bytes());
        // Equal length first, then every byte, so the time taken does not
        // tell how much of a guess matched.
        !expected.is_empty()
            && presented.len() == expected.len()
            && presented.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_current_contents_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").expect("write");
        let t = TokenFile::open(&path).expect("open");
        assert!(t.matches("s3cret"));
        assert!(!t.matches("s3cre") && !t.matches("s3cret2") && !t.matches(""));
        std::fs::write(&path, "rotated").expect("write");
        assert!(!t.matches("s3cret") && t.matches("rotated"));
        std::fs::write(&path, " \n").expect("write");
        assert!(!t.matches(""), "an emptied file admits nobody");
        assert!(matches!(TokenFile::open(&path), Err(AccessError::EmptyToken(_))));
        assert!(matches!(TokenFile::open(dir.path().join("missing")), Err(AccessError::Io { .. })));
    }
}
