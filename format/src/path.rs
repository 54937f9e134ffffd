//! Paths inside a dataset: relative, `/`-separated, normalized.

use crate::FormatError;
use crate::digest::truncate;

/// Longest path accepted, in bytes (Linux PATH_MAX).
pub const PATH_MAX: usize = 4096;
/// Longest single path segment, in bytes (Linux NAME_MAX).
pub const SEGMENT_MAX: usize = 255;

/// Checks that `path` is a normalized relative path: no leading or trailing
/// `/`, no empty, `.` or `..` segments, no NUL, no backslash-free tricks
/// needed since `/` is the only separator, bounded lengths.
pub fn validate_path(path: &str) -> Result<(), FormatError> {
    let bad = |why: &'static str| FormatError::InvalidPath { path: truncate(path), why };
    if path.is_empty() {
        return Err(bad("empty path"));
    }
    if path.len() > PATH_MAX {
        return Err(bad("longer than 4096 bytes"));
    }
    if path.starts_with('/') {
        return Err(bad("absolute path"));
    }
    if path.contains('\0') {
        return Err(bad("contains NUL"));
    }
    // Newlines, escape sequences and other controls in names break every
    // tool that prints or parses paths; no dataset needs them.
    if path.chars().any(char::is_control) {
        return Err(bad("contains a control character"));
    }
    for seg in path.split('/') {
        match seg {
            "" => return Err(bad("empty segment")),
            "." => return Err(bad("'.' segment")),
            ".." => return Err(bad("'..' segment")),
            s if s.len() > SEGMENT_MAX => return Err(bad("segment longer than 255 bytes")),
            _ => {}
        }
    }
    Ok(())
}

/// The parent directories of `path`, innermost last: `a/b/c` → `a`, `a/b`.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_normal_paths() {
        // Bidi controls are not refused: printing quotes them (aetherfs_util::quote).
        for ok in ["a", "a/b", "données/été.csv", "a b/c", ".hidden", "a/..b", "a..", "...", "x\\y", "rtl\u{202e}txt"]
        {
            validate_path(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn rejects_escapes_and_oddities() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a/..",
            "./a",
            "a/./b",
            "a//b",
            "a/",
            "a\0b",
            "a\nb",
            "a\rb",
            "\x1b[31mred",
            "del\x7f",
            "c1\u{9b}31m",
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_path(&"a".repeat(256)).is_err());
        assert!(validate_path(&"a/".repeat(2049)).is_err());
    }

    #[test]
    fn lists_ancestors() {
        assert_eq!(ancestors("a/b/c").collect::<Vec<_>>(), ["a", "a/b"]);
        assert_eq!(ancestors("a").count(), 0);
    }
}
