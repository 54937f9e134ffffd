//! Walking a local directory tree without following symlinks.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use aetherfs_format::validate_path;

use crate::error::ClientError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalKind {
    File {
        size: u64,
    },
    /// `empty` is true when the directory holds nothing at all.
    Dir {
        empty: bool,
    },
    Symlink {
        target: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalEntry {
    /// Relative, `/`-separated, valid as a manifest path.
    pub path: String,
    /// Permission bits (at most 0o777).
    pub mode: u32,
    pub kind: LocalKind,
    pub mtime: i64,
    pub stat: FileStat,
}

/// What the stat cache compares to decide a file is unchanged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileStat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// Nanoseconds since the epoch.
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl FileStat {
    pub fn of(meta: &fs::Metadata) -> Self {
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// What to do with entries a manifest cannot describe (non-UTF-8 names,
/// sockets, devices, FIFOs).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Fail with a clear error: pushing must not silently drop data.
    Fail,
    /// Skip them: indexing a pull target only looks for reusable bytes.
    Skip,
}

/// Lists every entry under `root` (not `root` itself), sorted by path bytes.
pub fn walk(root: &Path, strictness: Strictness) -> Result<Vec<LocalEntry>, ClientError> {
    let meta = fs::metadata(root).map_err(|e| ClientError::io(root.display(), e))?;
    if !meta.is_dir() {
        return Err(ClientError::Invalid(format!("{} is not a directory", root.display())));
    }
    let mut out = Vec::new();
    walk_dir(root, "", strictness, &mut out)?;
    out.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(out)
}

fn walk_dir(dir: &Path, prefix: &str, strictness: Strictness, out: &mut Vec<LocalEntry>) -> Result<bool, ClientError> {
    let rd = fs::read_dir(dir).map_err(|e| ClientError::io(dir.display(), e))?;
    let mut any = false;
    for entry in rd {
        let entry = entry.map_err(|e| ClientError::io(dir.display(), e))?;
        any = true;
        let full = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            if strictness == Strictness::Fail {
                return Err(ClientError::Invalid(format!(
                    "{}: file name is not UTF-8",
                    aetherfs_util::quote(&full.display().to_string())
                )));
            }
            continue;
        };
        let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        if let Err(e) = validate_path(&path) {
            if strictness == Strictness::Fail {
                // The format error already shows the path escaped.
                return Err(ClientError::Invalid(format!("{}: {e}", aetherfs_util::quote(&dir.display().to_string()))));
            }
            continue;
        }
        let meta = fs::symlink_metadata(&full).map_err(|e| ClientError::io(full.display(), e))?;
        let mode = meta.permissions().mode() & 0o777;
        let ft = meta.file_type();
        let kind = if ft.is_file() {
            LocalKind::File { size: meta.len() }
        } else if ft.is_dir() {
            let at = out.len();
            out.push(LocalEntry {
                path: path.clone(),
                mode,
                kind: LocalKind::Dir { empty: true },
                mtime: meta.mtime(),
                stat: FileStat::of(&meta),
            });
            let non_empty = walk_dir(&full, &path, strictness, out)?;
            out[at].kind = LocalKind::Dir { empty: !non_empty };
            continue;
        } else if ft.is_symlink() {
            let target = fs::read_link(&full).map_err(|e| ClientError::io(full.display(), e))?;
            match target.to_str() {
                Some(t) => LocalKind::Symlink { target: t.to_string() },
                None if strictness == Strictness::Fail => {
                    return Err(ClientError::Invalid(format!("{}: symlink target is not UTF-8", full.display())));
                }
                None => continue,
            }
        } else {
            if strictness == Strictness::Fail {
                return Err(ClientError::Invalid(format!(
                    "{}: not a regular file, directory or symlink (sockets, FIFOs and devices cannot be pushed)",
                    full.display()
                )));
            }
            continue;
        };
        out.push(LocalEntry { path, mode, kind, mtime: meta.mtime(), stat: FileStat::of(&meta) });
    }
    Ok(any)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_without_following_links() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("a/empty")).unwrap();
        fs::write(t.path().join("a/f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", t.path().join("a/l")).unwrap();
        let got = walk(t.path(), Strictness::Fail).unwrap();
        let paths: Vec<_> = got.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a", "a/empty", "a/f", "a/l"]);
        assert_eq!(got[0].kind, LocalKind::Dir { empty: false });
        assert_eq!(got[1].kind, LocalKind::Dir { empty: true });
        assert_eq!(got[3].kind, LocalKind::Symlink { target: "/etc".into() });
    }

    #[test]
    fn refuses_special_files_when_strict() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("s");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(walk(t.path(), Strictness::Fail).is_err());
        assert!(walk(t.path(), Strictness::Skip).unwrap().is_empty());
    }
}
