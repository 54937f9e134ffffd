//! What changed between two versions, and what a dataset's versions cost:
//! the numbers behind `aetherfs diff` and `aetherfs du`.
//!
//! Sizes come in three kinds. *Logical* bytes are file sizes, what a reader
//! sees. *New* bytes are the plaintext of chunks the older version does not
//! hold: what moving from one version to the other adds. *Stored* bytes are
//! chunks as packs hold them (after compression), each distinct chunk
//! counted once: what the store pays, and what a pull downloads.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::{ChunkRef, Digest, Entry, EntryKind, Manifest};

/// How one path differs between two versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    /// Same path, other content, mode or kind.
    Changed,
}

/// One path that differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PathChange {
    pub path: String,
    pub change: Change,
    /// `file`, `dir` or `symlink` in the newer version (the older for a removal).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Logical size in the older version (files only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_size: Option<u64>,
    /// Logical size in the newer version (files only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_size: Option<u64>,
    /// Bytes of this file's distinct chunks the older version lacks.
    pub new_bytes: u64,
    /// The rest of its size: found in the older version, or repeated within the file.
    pub reused_bytes: u64,
}

/// Totals of a diff. Per-path `new_bytes` count a chunk in every file that
/// has it; `new_bytes` here counts each new chunk once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DiffTotals {
    pub added: u64,
    pub removed: u64,
    pub changed: u64,
    pub unchanged: u64,
    /// Logical bytes of each version.
    pub old_bytes: u64,
    pub new_version_bytes: u64,
    /// Plaintext of the distinct chunks the newer version has and the older lacks.
    pub new_bytes: u64,
    /// Those chunks as stored: what a pull from the older version downloads.
    pub new_stored_bytes: u64,
    /// Distinct chunks the newer version adds.
    pub new_chunks: u64,
    /// `new_version_bytes - new_bytes`: served from chunks already stored.
    pub reused_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionDiff {
    pub totals: DiffTotals,
    /// In path order.
    pub paths: Vec<PathChange>,
}

fn kind_name(k: &EntryKind) -> &'static str {
    match k {
        EntryKind::File(_) => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink { .. } => "symlink",
    }
}

fn file_size(e: &Entry) -> Option<u64> {
    match &e.kind {
        EntryKind::File(f) => Some(f.size()),
        _ => None,
    }
}

fn chunk_set(m: &Manifest) -> HashSet<Digest> {
    m.entries.iter().flat_map(entry_chunks).map(|c| c.digest).collect()
}

fn entry_chunks(e: &Entry) -> &[ChunkRef] {
    match &e.kind {
        EntryKind::File(f) => f.chunks(),
        _ => &[],
    }
}

/// `(new, reused)` bytes of an entry against the chunks of the older version.
fn split(e: &Entry, old: &HashSet<Digest>) -> (u64, u64) {
    let mut seen = HashSet::new();
    let new: u64 = entry_chunks(e)
        .iter()
        .filter(|c| !old.contains(&c.digest) && seen.insert(c.digest))
        .map(|c| u64::from(c.len))
        .sum();
    (new, file_size(e).unwrap_or(0).saturating_sub(new))
}

/// How one path's entry differs, `None` when it does not.
fn path_change(old: Option<&Entry>, new: Option<&Entry>, old_chunks: &HashSet<Digest>) -> Option<PathChange> {
    let change = match (old, new) {
        (Some(x), Some(y)) if x == y => return None,
        (Some(_), Some(_)) => Change::Changed,
        (Some(_), None) => Change::Removed,
        (None, Some(_)) => Change::Added,
        (None, None) => return None,
    };
    let shown = new.or(old)?;
    let (new_bytes, reused_bytes) = new.map_or((0, 0), |e| split(e, old_chunks));
    Some(PathChange {
        path: shown.path.clone(),
        change,
        kind: kind_name(&shown.kind),
        old_size: old.and_then(file_size),
        new_size: new.and_then(file_size),
        new_bytes,
        reused_bytes,
    })
}

/// How `new` differs from `old`.
pub fn diff(old: &Manifest, new: &Manifest) -> VersionDiff {
    let old_chunks = chunk_set(old);
    let mut t =
        DiffTotals { old_bytes: old.stats().bytes, new_version_bytes: new.stats().bytes, ..DiffTotals::default() };
    let mut paths = Vec::new();
    let (mut a, mut b) = (old.entries.iter().peekable(), new.entries.iter().peekable());
    // Both are sorted by path bytes: one merge pass, pairing each path's
    // entry in the old version with its entry in the new one.
    loop {
        let (x, y) = match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(x), Some(y)) if x.path == y.path => (a.next(), b.next()),
            (Some(x), Some(y)) if x.path.as_bytes() < y.path.as_bytes() => (a.next(), None),
            (Some(_), None) => (a.next(), None),
            _ => (None, b.next()),
        };
        if let Some(p) = path_change(x, y, &old_chunks) {
            match p.change {
                Change::Added => t.added += 1,
                Change::Removed => t.removed += 1,
                Change::Changed => t.changed += 1,
            }
            paths.push(p);
        } else {
            t.unchanged += 1;
        }
    }
    let mut counted = HashSet::new();
    for c in new.entries.iter().flat_map(entry_chunks) {
        if !old_chunks.contains(&c.digest) && counted.insert(c.digest) {
            t.new_chunks += 1;
            t.new_bytes += u64::from(c.len);
            t.new_stored_bytes += u64::from(c.location.stored_len);
        }
    }
    t.reused_bytes = t.new_version_bytes.saturating_sub(t.new_bytes);
    VersionDiff { totals: t, paths }
}

/// One version's distinct chunks and logical size: what [`usage`] needs,
/// small enough to keep for every version of a dataset at once.
#[derive(Clone, Debug)]
pub struct VersionChunks {
    pub digest: Digest,
    pub files: u64,
    pub logical_bytes: u64,
    /// Distinct chunks: digest and stored length.
    chunks: Vec<(Digest, u32)>,
}

impl VersionChunks {
    pub fn of(digest: Digest, m: &Manifest) -> Self {
        let mut seen = HashSet::new();
        let chunks = m
            .entries
            .iter()
            .flat_map(entry_chunks)
            .filter(|c| seen.insert(c.digest))
            .map(|c| (c.digest, c.location.stored_len))
            .collect();
        let stats = m.stats();
        Self { digest, files: stats.files, logical_bytes: stats.bytes, chunks }
    }
}

/// What one version costs within its dataset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionUsage {
    pub digest: Digest,
    pub files: u64,
    pub logical_bytes: u64,
    /// Its distinct chunks as stored.
    pub stored_bytes: u64,
    /// The part of `stored_bytes` other versions of the dataset hold too.
    pub shared_bytes: u64,
    /// The part only this version holds: about what deleting it (then
    /// collecting garbage) frees.
    pub exclusive_bytes: u64,
}

/// Totals of a dataset.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DatasetUsage {
    pub versions: Vec<VersionUsage>,
    /// Sum of every version's logical size: what storing each whole would cost.
    pub logical_bytes: u64,
    /// Distinct chunks over every version, as stored.
    pub stored_bytes: u64,
    /// `1 - stored / logical`: the share deduplication and compression save.
    pub saving: f64,
}

/// Logical, stored, shared and exclusive bytes of each version.
pub fn usage(versions: &[VersionChunks]) -> DatasetUsage {
    let mut holders: HashMap<Digest, (u32, u32)> = HashMap::new();
    for v in versions {
        for (d, stored) in &v.chunks {
            holders.entry(*d).or_insert((0, *stored)).0 += 1;
        }
    }
    let out: Vec<VersionUsage> = versions
        .iter()
        .map(|v| {
            let (mut stored, mut shared) = (0u64, 0u64);
            for (d, len) in &v.chunks {
                stored += u64::from(*len);
                if holders.get(d).is_some_and(|(n, _)| *n > 1) {
                    shared += u64::from(*len);
                }
            }
            VersionUsage {
                digest: v.digest,
                files: v.files,
                logical_bytes: v.logical_bytes,
                stored_bytes: stored,
                shared_bytes: shared,
                exclusive_bytes: stored - shared,
            }
        })
        .collect();
    let logical_bytes = versions.iter().map(|v| v.logical_bytes).sum();
    let stored_bytes = holders.values().map(|(_, len)| u64::from(*len)).sum();
    let saving = if logical_bytes == 0 { 0.0 } else { 1.0 - stored_bytes as f64 / logical_bytes as f64 };
    DatasetUsage { versions: out, logical_bytes, stored_bytes, saving }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChunkLocation, ChunkParams, Compression, FileEntry};

    fn chunk(tag: &str, len: u32) -> ChunkRef {
        ChunkRef {
            digest: Digest::of(tag.as_bytes()),
            len,
            location: ChunkLocation {
                pack: Digest::of(b"p"),
                offset: 0,
                stored_len: len / 2,
                compression: Compression::Zstd,
            },
        }
    }

    fn file(path: &str, chunks: &[ChunkRef]) -> Entry {
        Entry { path: path.into(), mode: 0o644, kind: EntryKind::File(FileEntry::new(chunks.to_vec())) }
    }

    fn manifest(entries: Vec<Entry>) -> Manifest {
        let mut m = Manifest::new(ChunkParams::default());
        m.entries = entries;
        m.sort();
        m
    }

    #[test]
    fn a_diff_names_each_change_and_the_bytes_it_adds() {
        let (a, b, c, d) = (chunk("a", 100), chunk("b", 200), chunk("c", 400), chunk("d", 800));
        let old = manifest(vec![
            file("db.sqlite", &[a, b]),
            file("gone.csv", &[c]),
            file("same.txt", &[a]),
            Entry { path: "link".into(), mode: 0o777, kind: EntryKind::Symlink { target: "same.txt".into() } },
        ]);
        let mut chmod = file("same.txt", &[a]);
        chmod.mode = 0o600;
        let new = manifest(vec![
            // One chunk rewritten, one kept.
            file("db.sqlite", &[a, d]),
            // New, but made of old chunks and one new chunk twice.
            file("new.bin", &[c, d, d]),
            chmod,
            Entry { path: "link".into(), mode: 0o777, kind: EntryKind::Symlink { target: "same.txt".into() } },
        ]);
        let got = diff(&old, &new);
        let p: Vec<(&str, Change, u64, u64)> =
            got.paths.iter().map(|p| (p.path.as_str(), p.change, p.new_bytes, p.reused_bytes)).collect();
        assert_eq!(
            p,
            [
                ("db.sqlite", Change::Changed, 800, 100),
                ("gone.csv", Change::Removed, 0, 0),
                ("new.bin", Change::Added, 800, 1200),
                ("same.txt", Change::Changed, 0, 100),
            ]
        );
        assert_eq!(got.paths[0].old_size, Some(300));
        assert_eq!(got.paths[0].new_size, Some(900));
        let t = got.totals;
        assert_eq!((t.added, t.removed, t.changed, t.unchanged), (1, 1, 2, 1));
        // d is new once, however many files and times it appears.
        assert_eq!((t.new_chunks, t.new_bytes, t.new_stored_bytes), (1, 800, 400));
        assert_eq!(t.new_version_bytes, 900 + 2000 + 100);
        assert_eq!(t.reused_bytes, t.new_version_bytes - 800);
    }

    #[test]
    fn a_version_against_itself_has_no_changes() {
        let m = manifest(vec![file("x", &[chunk("x", 10)])]);
        let got = diff(&m, &m);
        assert!(got.paths.is_empty());
        assert_eq!((got.totals.unchanged, got.totals.new_bytes, got.totals.reused_bytes), (1, 0, 10));
    }

    #[test]
    fn usage_splits_stored_bytes_into_shared_and_exclusive() {
        let (a, b, c) = (chunk("a", 100), chunk("b", 200), chunk("c", 400));
        let v1 = manifest(vec![file("f", &[a, b]), file("g", &[a])]);
        let v2 = manifest(vec![file("f", &[a, c])]);
        let u = usage(&[VersionChunks::of(Digest::of(b"1"), &v1), VersionChunks::of(Digest::of(b"2"), &v2)]);
        let row = |i: usize| {
            let v = &u.versions[i];
            (v.logical_bytes, v.stored_bytes, v.shared_bytes, v.exclusive_bytes)
        };
        // Stored lengths are half the plaintext in these chunks.
        assert_eq!(row(0), (400, 150, 50, 100));
        assert_eq!(row(1), (500, 250, 50, 200));
        assert_eq!((u.logical_bytes, u.stored_bytes), (900, 350));
        assert!((u.saving - (1.0 - 350.0 / 900.0)).abs() < 1e-9);
    }
}
