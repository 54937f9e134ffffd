//! One immutable version as a tree of nodes, built from its manifest.
//!
//! Nodes are numbered in path order, so the same manifest always gives the
//! same numbers (stable inode numbers and NFS file ids across restarts).
//! Children are sorted by name, which makes directory offsets stable and
//! lookups a binary search.
//!
//! The tree is compact because an agent holds it for as long as it serves
//! the version: no allocation per node. Names and symlink targets live in
//! one string arena, children lists and chunk lists in flat arrays that
//! nodes index into, and a chunk names its pack by an index into the
//! version's pack table instead of repeating the pack's digest. Paths are
//! not stored: [`Version::path`] walks up the parents. A 100,000-file
//! version of one-chunk files takes about 16 MiB (the manifest's own decoded
//! form takes about 27 MiB), most of it the two digests each file needs.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use aetherfs_format::{ChunkLocation, ChunkRef, Compression, Digest, EntryKind, Manifest, ancestors};

use crate::stats::VersionStats;

/// A run of an arena or a flat array: `at..at + len`.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    at: u32,
    len: u32,
}

impl Span {
    fn range(self) -> Range<usize> {
        self.at as usize..self.at as usize + self.len as usize
    }
}

#[derive(Debug)]
enum Kind {
    Dir { children: Span, subdirs: u32 },
    File { size: u64, digest: Digest, chunks: Span },
    Symlink { target: Span },
}

#[derive(Debug)]
struct Node {
    parent: u32,
    name: Span,
    mode: u32,
    kind: Kind,
}

/// A chunk of a file: a [`ChunkRef`] whose pack is an index into
/// [`Version`]'s pack table.
#[derive(Clone, Copy, Debug)]
struct Chunk {
    digest: Digest,
    offset: u64,
    len: u32,
    stored_len: u32,
    pack: u32,
    compression: Compression,
}

/// What a node is, borrowed from its [`Version`].
#[derive(Clone, Copy, Debug)]
pub enum NodeKind<'a> {
    Dir {
        /// Child node indexes, sorted by name bytes.
        children: &'a [u32],
        subdirs: u32,
    },
    File(FileView<'a>),
    Symlink {
        target: &'a str,
    },
}

/// A file of a [`Version`]: its size, digest and chunks.
#[derive(Clone, Copy, Debug)]
pub struct FileView<'a> {
    pub size: u64,
    pub digest: Digest,
    chunks: &'a [Chunk],
    /// Offset in the file where each chunk starts.
    starts: &'a [u64],
    packs: &'a [Digest],
}

impl FileView<'_> {
    /// How many chunks the file has.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Offset in the file where each chunk starts (sorted, the first is 0).
    pub fn starts(&self) -> &[u64] {
        self.starts
    }

    /// Plaintext length of chunk `i`.
    pub fn chunk_len(&self, i: usize) -> u32 {
        self.chunks[i].len
    }

    /// The chunks in `range`, as the chunk source reads them.
    pub fn chunk_refs(&self, range: Range<usize>) -> Vec<ChunkRef> {
        self.chunks[range]
            .iter()
            .map(|c| ChunkRef {
                digest: c.digest,
                len: c.len,
                location: ChunkLocation {
                    pack: self.packs[c.pack as usize],
                    offset: c.offset,
                    stored_len: c.stored_len,
                    compression: c.compression,
                },
            })
            .collect()
    }
}

/// One version's tree. Node 0 is the root.
#[derive(Debug)]
pub struct Version {
    pub digest: Digest,
    /// When the version was created (the manifest's `created` annotation):
    /// the modification time of every entry.
    pub created: SystemTime,
    nodes: Vec<Node>,
    /// Names and symlink targets.
    text: String,
    /// Every directory's children, one run per directory.
    children: Vec<u32>,
    /// Every file's chunks, one run per file, and where each starts in its file.
    chunks: Vec<Chunk>,
    starts: Vec<u64>,
    packs: Vec<Digest>,
    /// Where the last read of each node ended, to detect sequential reads.
    pub(crate) read_ends: Vec<AtomicU64>,
    /// What readers did with this version.
    pub(crate) stats: Arc<VersionStats>,
}

/// Appends `s` to the arena. Manifests are bounded far below 4 GiB, so
/// offsets fit in `u32`; a larger arena would be a broken invariant.
fn push_text(text: &mut String, s: &str) -> Span {
    let at = u32::try_from(text.len()).unwrap_or(u32::MAX);
    text.push_str(s);
    Span { at, len: s.len() as u32 }
}

impl Version {
    /// Builds the tree. The manifest must be decoded (hence validated).
    pub fn new(digest: Digest, manifest: &Manifest) -> Version {
        // Every path that is a directory: explicit ones and all ancestors.
        let mut dirs: BTreeMap<&str, u32> = BTreeMap::new();
        for e in &manifest.entries {
            for a in ancestors(&e.path) {
                dirs.entry(a).or_insert(0o755);
            }
            if matches!(e.kind, EntryKind::Dir) {
                dirs.insert(&e.path, e.mode);
            }
        }
        // All paths in byte order, root first.
        let mut all: Vec<(&str, Option<usize>)> = dirs.keys().map(|d| (*d, None)).collect();
        for (i, e) in manifest.entries.iter().enumerate() {
            if !matches!(e.kind, EntryKind::Dir) {
                all.push((&e.path, Some(i)));
            }
        }
        all.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));

        let chunk_total: usize = manifest
            .entries
            .iter()
            .map(|e| match &e.kind {
                EntryKind::File(f) => f.chunks().len(),
                _ => 0,
            })
            .sum();
        let text_total: usize = all.iter().map(|(p, _)| p.rsplit('/').next().map_or(0, str::len)).sum();
        let mut text = String::with_capacity(text_total);
        let mut chunks = Vec::with_capacity(chunk_total);
        let mut starts = Vec::with_capacity(chunk_total);
        let mut packs: Vec<Digest> = Vec::new();
        let mut pack_index: HashMap<Digest, u32> = HashMap::new();
        let mut nodes = Vec::with_capacity(all.len() + 1);
        nodes.push(Node {
            parent: 0,
            name: Span::default(),
            mode: 0o755,
            kind: Kind::Dir { children: Span::default(), subdirs: 0 },
        });
        // Only while building: a parent's node from its path.
        let mut index: HashMap<&str, u32> = HashMap::with_capacity(dirs.len() + 1);
        index.insert("", 0);
        for (path, entry) in &all {
            let (parent_path, name) = match path.rfind('/') {
                Some(i) => (&path[..i], &path[i + 1..]),
                None => ("", *path),
            };
            let parent = index.get(parent_path).copied().unwrap_or(0);
            let dir = Kind::Dir { children: Span::default(), subdirs: 0 };
            let kind = match entry.map(|i| &manifest.entries[i]) {
                None => dir,
                Some(e) => match &e.kind {
                    EntryKind::File(f) => {
                        let first = chunks.len() as u32;
                        let mut at = 0u64;
                        for c in f.chunks() {
                            let next = packs.len() as u32;
                            let pack = *pack_index.entry(c.location.pack).or_insert_with(|| {
                                packs.push(c.location.pack);
                                next
                            });
                            chunks.push(Chunk {
                                digest: c.digest,
                                offset: c.location.offset,
                                len: c.len,
                                stored_len: c.location.stored_len,
                                pack,
                                compression: c.location.compression,
                            });
                            starts.push(at);
                            at += u64::from(c.len);
                        }
                        let span = Span { at: first, len: f.chunks().len() as u32 };
                        Kind::File { size: f.size(), digest: f.digest(), chunks: span }
                    }
                    EntryKind::Symlink { target } => Kind::Symlink { target: push_text(&mut text, target) },
                    EntryKind::Dir => dir,
                },
            };
            let mode = match entry {
                None => dirs.get(path).copied().unwrap_or(0o755),
                Some(i) => manifest.entries[*i].mode,
            };
            let idx = nodes.len() as u32;
            if matches!(kind, Kind::Dir { .. }) {
                index.insert(path, idx);
            }
            nodes.push(Node { parent, name: push_text(&mut text, name), mode, kind });
        }
        drop(index);
        // Children lists: nodes are in path order, but children must be in
        // name order ("a b" < "a/x" by path, yet "a" is the name in both).
        // Counting sort by parent keeps each run in node order; then each
        // run is sorted by name.
        let mut counts = vec![0u32; nodes.len() + 1];
        for n in nodes.iter().skip(1) {
            counts[n.parent as usize + 1] += 1;
        }
        for i in 1..counts.len() {
            counts[i] += counts[i - 1];
        }
        let mut children = vec![0u32; nodes.len().saturating_sub(1)];
        let mut fill = counts.clone();
        for (i, n) in nodes.iter().enumerate().skip(1) {
            let slot = &mut fill[n.parent as usize];
            children[*slot as usize] = i as u32;
            *slot += 1;
        }
        for d in 0..nodes.len() {
            let run = counts[d] as usize..counts[d + 1] as usize;
            if run.is_empty() {
                continue;
            }
            let name = |k: u32| &text.as_bytes()[nodes[k as usize].name.range()];
            children[run.clone()].sort_unstable_by(|&a, &b| name(a).cmp(name(b)));
            let subdirs =
                children[run.clone()].iter().filter(|&&k| matches!(nodes[k as usize].kind, Kind::Dir { .. })).count()
                    as u32;
            if let Kind::Dir { children: c, subdirs: s } = &mut nodes[d].kind {
                *c = Span { at: run.start as u32, len: run.len() as u32 };
                *s = subdirs;
            }
        }
        let created = manifest
            .annotations
            .get("created")
            .and_then(|c| time::OffsetDateTime::parse(c, &time::format_description::well_known::Rfc3339).ok())
            .and_then(|t| u64::try_from(t.unix_timestamp()).ok())
            .map_or(SystemTime::UNIX_EPOCH, |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        let read_ends = (0..nodes.len()).map(|_| AtomicU64::new(u64::MAX)).collect();
        text.shrink_to_fit();
        packs.shrink_to_fit();
        Version {
            digest,
            created,
            nodes,
            text,
            children,
            chunks,
            starts,
            packs,
            read_ends,
            stats: Arc::new(VersionStats::new(digest)),
        }
    }

    /// How many nodes the tree has (the root included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never: the root is always there.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// What node `n` is. `n` must be below [`Version::len`].
    pub fn kind(&self, n: u32) -> NodeKind<'_> {
        match &self.nodes[n as usize].kind {
            Kind::Dir { children, subdirs } => {
                NodeKind::Dir { children: &self.children[children.range()], subdirs: *subdirs }
            }
            Kind::File { size, digest, chunks } => NodeKind::File(FileView {
                size: *size,
                digest: *digest,
                chunks: &self.chunks[chunks.range()],
                starts: &self.starts[chunks.range()],
                packs: &self.packs,
            }),
            Kind::Symlink { target } => NodeKind::Symlink { target: &self.text[target.range()] },
        }
    }

    /// Node `n`'s name (`""` for the root).
    pub fn name(&self, n: u32) -> &str {
        &self.text[self.nodes[n as usize].name.range()]
    }

    /// Node `n`'s parent (the root is its own parent).
    pub fn parent(&self, n: u32) -> u32 {
        self.nodes[n as usize].parent
    }

    /// Node `n`'s permission bits.
    pub fn mode(&self, n: u32) -> u32 {
        self.nodes[n as usize].mode
    }

    /// Node `n`'s path from the root (`""` for the root).
    pub fn path(&self, n: u32) -> String {
        let mut segs = Vec::new();
        let mut at = n;
        while at != 0 {
            segs.push(self.name(at));
            at = self.parent(at);
        }
        segs.reverse();
        segs.join("/")
    }

    /// Sum of every file's size, in `block`-byte blocks (each file rounded up).
    pub fn file_blocks(&self, block: u64) -> u64 {
        self.nodes
            .iter()
            .map(|n| match n.kind {
                Kind::File { size, .. } => size.div_ceil(block),
                _ => 0,
            })
            .sum()
    }

    /// The child of directory `dir` called `name`.
    pub fn child(&self, dir: u32, name: &str) -> Option<u32> {
        let Kind::Dir { children, .. } = &self.nodes.get(dir as usize)?.kind else { return None };
        let children = &self.children[children.range()];
        children.binary_search_by(|&c| self.name(c).as_bytes().cmp(name.as_bytes())).ok().map(|i| children[i])
    }

    /// Names of the root's entries, in name order.
    pub fn root_names(&self) -> impl Iterator<Item = &str> {
        let children = match self.kind(0) {
            NodeKind::Dir { children, .. } => children,
            _ => &[],
        };
        children.iter().map(|&c| self.name(c))
    }

    /// The node at a `/`-separated path (leading and trailing `/` ignored).
    pub fn find(&self, path: &str) -> Option<u32> {
        let mut at = 0;
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            at = self.child(at, seg)?;
        }
        Some(at)
    }

    /// Heap bytes the tree holds (for metrics and tests).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.nodes.capacity() * size_of::<Node>()
            + self.text.capacity()
            + self.children.capacity() * size_of::<u32>()
            + self.chunks.capacity() * size_of::<Chunk>()
            + self.starts.capacity() * size_of::<u64>()
            + self.packs.capacity() * size_of::<Digest>()
            + self.read_ends.capacity() * size_of::<AtomicU64>()
    }
}

#[cfg(test)]
mod tests {
    use aetherfs_format::{ChunkParams, Entry, FileEntry};

    use super::*;

    fn chunk(i: u64, pack: u8) -> ChunkRef {
        ChunkRef {
            digest: Digest::of(&i.to_le_bytes()),
            len: 100 + i as u32,
            location: ChunkLocation {
                pack: Digest::of(&[pack]),
                offset: i * 1000,
                stored_len: 90,
                compression: Compression::Zstd,
            },
        }
    }

    fn manifest(files: usize) -> Manifest {
        let mut m = Manifest::new(ChunkParams::default());
        for i in 0..files {
            let refs = vec![chunk(i as u64, (i % 3) as u8)];
            m.entries.push(Entry {
                path: format!("d{:03}/file{i:06}.txt", i / 1000),
                mode: 0o644,
                kind: EntryKind::File(FileEntry::new(refs)),
            });
        }
        m.entries.push(Entry {
            path: "a b".into(),
            mode: 0o644,
            kind: EntryKind::File(FileEntry::new(vec![chunk(7, 0), chunk(8, 1), chunk(9, 0)])),
        });
        m.entries.push(Entry {
            path: "a/link".into(),
            mode: 0o777,
            kind: EntryKind::Symlink { target: "../a b".into() },
        });
        m.entries.push(Entry { path: "empty".into(), mode: 0o700, kind: EntryKind::Dir });
        m.sort();
        m
    }

    #[test]
    fn nodes_paths_and_chunks_round_trip() {
        let m = manifest(2500);
        let v = Version::new(Digest::of(b"v"), &m);
        // The root, 3 dirs d000..d002, "a", "empty", and the files and link.
        assert_eq!(v.len(), 1 + 3 + 2 + 2500 + 2);
        let names: Vec<&str> = v.root_names().collect();
        // Name order, not path order: "a" < "a b".
        assert_eq!(names, ["a", "a b", "d000", "d001", "d002", "empty"]);
        for e in &m.entries {
            let n = v.find(&e.path).unwrap_or_else(|| panic!("{} missing", e.path));
            assert_eq!(v.path(n), e.path);
            assert_eq!(v.mode(n), e.mode);
            match (&e.kind, v.kind(n)) {
                (EntryKind::File(f), NodeKind::File(view)) => {
                    assert_eq!((view.size, view.digest), (f.size(), f.digest()));
                    assert_eq!(view.chunk_refs(0..view.chunk_count()), f.chunks());
                    let want: Vec<u64> = f
                        .chunks()
                        .iter()
                        .scan(0u64, |at, c| Some(std::mem::replace(at, *at + u64::from(c.len))))
                        .collect();
                    assert_eq!(view.starts(), want);
                }
                (EntryKind::Symlink { target }, NodeKind::Symlink { target: t }) => assert_eq!(t, target),
                (EntryKind::Dir, NodeKind::Dir { children, subdirs }) => assert_eq!((children.len(), subdirs), (0, 0)),
                (want, got) => panic!("{}: {want:?} became {got:?}", e.path),
            }
        }
        let NodeKind::Dir { children, subdirs } = v.kind(v.find("d001").expect("dir")) else { panic!("not a dir") };
        assert_eq!((children.len(), subdirs), (1000, 0));
        let NodeKind::Dir { subdirs, .. } = v.kind(0) else { panic!("root") };
        assert_eq!(subdirs, 5);
        assert_eq!(v.parent(v.find("a/link").expect("link")), v.find("a").expect("a"));
        assert!(v.find("d001/nope").is_none() && v.find("a b/x").is_none());
        assert_eq!(v.find("/d001/"), v.find("d001"));
    }

    #[test]
    fn a_hundred_thousand_files_fit_in_a_few_bytes_each() {
        let m = manifest(100_000);
        let v = Version::new(Digest::of(b"v"), &m);
        // Two digests a file (its own and its chunk's) are most of it.
        let per_file = v.heap_bytes() / 100_000;
        assert!(per_file <= 176, "{per_file} bytes a file");
    }
}
