//! A bearer token kept in a file (a mounted Kubernetes Secret, a file only
//! the operator can read).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::AccessError;

/// How often the file is read again: a rotated Secret is in force within this.
const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// One bearer token in a file. The file is read again at most once a
/// second (not on every request: WebDAV clients send many), so a rotated
/// Secret takes effect within a second; a file that cannot be read or is
/// empty admits nobody.
#[derive(Clone, Debug)]
pub struct TokenFile(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// When the file was last read, and the token it held (None: unreadable or empty).
    current: Mutex<(Instant, Option<String>)>,
}

fn read(path: &Path) -> Result<String, AccessError> {
    let text = std::fs::read_to_string(path).map_err(|source| AccessError::Io { path: path.to_path_buf(), source })?;
    match text.trim() {
        "" => Err(AccessError::EmptyToken(path.to_path_buf())),
        t => Ok(t.to_string()),
    }
}

impl TokenFile {
    /// Reads the file now, so a typo in a flag fails at start rather than
    /// refusing every request.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, AccessError> {
        let path = path.into();
        let token = read(&path)?;
        Ok(Self(Arc::new(Inner { path, current: Mutex::new((Instant::now(), Some(token))) })))
    }

    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// Whether `presented` (the part after `Bearer `) is the token.
    pub fn matches(&self, presented: &str) -> bool {
        let mut current = self.0.current.lock();
        if current.0.elapsed() >= RECHECK_EVERY {
            *current = (Instant::now(), read(&self.0.path).ok());
        }
        let Some(expected) = current.1.as_deref() else { return false };
        let (expected, presented) = (expected.as_bytes(), presented.trim().as_bytes());
        // Equal length first, then every byte, so the time taken does not
        // tell how much of a guess matched.
        presented.len() == expected.len() && presented.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As if the recheck interval had passed.
    fn age(t: &TokenFile) {
        t.0.current.lock().0 -= RECHECK_EVERY;
    }

    #[test]
    fn matches_the_current_contents_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").expect("write");
        let t = TokenFile::open(&path).expect("open");
        assert!(t.matches("s3cret"));
        assert!(!t.matches("s3cre") && !t.matches("s3cret2") && !t.matches(""));
        std::fs::write(&path, "rotated").expect("write");
        assert!(t.matches("s3cret"), "the file is read at most once per interval");
        age(&t);
        assert!(!t.matches("s3cret") && t.matches("rotated"));
        std::fs::write(&path, " \n").expect("write");
        age(&t);
        assert!(!t.matches("") && !t.matches("rotated"), "an emptied file admits nobody");
        assert!(matches!(TokenFile::open(&path), Err(AccessError::EmptyToken(_))));
        std::fs::remove_file(&path).expect("remove");
        age(&t);
        assert!(!t.matches("rotated"), "a removed file admits nobody");
        assert!(matches!(TokenFile::open(dir.path().join("missing")), Err(AccessError::Io { .. })));
    }
}
