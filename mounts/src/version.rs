//! One immutable version as a tree of nodes, built from its manifest.
//!
//! Nodes are numbered in path order, so the same manifest always gives the
//! same numbers (stable inode numbers and NFS file ids across restarts).
//! Children are sorted by name, which makes directory offsets stable and
//! lookups a binary search.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use aetherfs_format::{ChunkRef, Digest, EntryKind, Manifest, ancestors};

use crate::stats::VersionStats;

/// What a node is.
#[derive(Debug)]
pub enum NodeKind {
    Dir {
        /// Child node indexes, sorted by name bytes.
        children: Vec<u32>,
        subdirs: u32,
    },
    File {
        size: u64,
        digest: Digest,
        chunks: Vec<ChunkRef>,
        /// Offset in the file where each chunk starts.
        starts: Vec<u64>,
    },
    Symlink {
        target: String,
    },
}

#[derive(Debug)]
pub struct Node {
    pub parent: u32,
    pub name: String,
    /// Path from the root, `""` for the root.
    pub path: String,
    pub mode: u32,
    pub kind: NodeKind,
}

/// One version's tree. Node 0 is the root.
#[derive(Debug)]
pub struct Version {
    pub digest: Digest,
    pub nodes: Vec<Node>,
    /// When the version was created (the manifest's `created` annotation):
    /// the modification time of every entry.
    pub created: SystemTime,
    /// Where the last read of each node ended, to detect sequential reads.
    pub(crate) read_ends: Vec<AtomicU64>,
    /// What readers did with this version.
    pub(crate) stats: Arc<VersionStats>,
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
        all.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut nodes = Vec::with_capacity(all.len() + 1);
        nodes.push(Node {
            parent: 0,
            name: String::new(),
            path: String::new(),
            mode: 0o755,
            kind: NodeKind::Dir { children: Vec::new(), subdirs: 0 },
        });
        let mut index: HashMap<&str, u32> = HashMap::with_capacity(all.len() + 1);
        index.insert("", 0);
        for (path, entry) in &all {
            let (parent_path, name) = match path.rfind('/') {
                Some(i) => (&path[..i], &path[i + 1..]),
                None => ("", *path),
            };
            let parent = index.get(parent_path).copied().unwrap_or(0);
            let kind = match entry.map(|i| &manifest.entries[i]) {
                None => NodeKind::Dir { children: Vec::new(), subdirs: 0 },
                Some(e) => match &e.kind {
                    EntryKind::File(f) => {
                        let mut starts = Vec::with_capacity(f.chunks().len());
                        let mut at = 0u64;
                        for c in f.chunks() {
                            starts.push(at);
                            at += u64::from(c.len);
                        }
                        NodeKind::File { size: f.size(), digest: f.digest(), chunks: f.chunks().to_vec(), starts }
                    }
                    EntryKind::Symlink { target } => NodeKind::Symlink { target: target.clone() },
                    EntryKind::Dir => NodeKind::Dir { children: Vec::new(), subdirs: 0 },
                },
            };
            let mode = match entry {
                None => dirs.get(path).copied().unwrap_or(0o755),
                Some(i) => manifest.entries[*i].mode,
            };
            let idx = nodes.len() as u32;
            index.insert(path, idx);
            nodes.push(Node { parent, name: name.to_string(), path: path.to_string(), mode, kind });
        }
        // Children lists: nodes are in path order, but children must be in
        // name order ("a b" < "a/x" by path, yet "a" is the name in both).
        let mut children: Vec<Vec<u32>> = vec![Vec::new(); nodes.len()];
        for (i, n) in nodes.iter().enumerate().skip(1) {
            children[n.parent as usize].push(i as u32);
        }
        for (i, mut c) in children.into_iter().enumerate() {
            c.sort_by(|a, b| nodes[*a as usize].name.as_bytes().cmp(nodes[*b as usize].name.as_bytes()));
            let subdirs = c.iter().filter(|&&k| matches!(nodes[k as usize].kind, NodeKind::Dir { .. })).count() as u32;
            if let NodeKind::Dir { children, subdirs: s } = &mut nodes[i].kind {
                *children = c;
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
        Version { digest, nodes, created, read_ends, stats: Arc::new(VersionStats::new(digest)) }
    }

    /// The child of directory `dir` called `name`.
    pub fn child(&self, dir: u32, name: &str) -> Option<u32> {
        let NodeKind::Dir { children, .. } = &self.nodes.get(dir as usize)?.kind else { return None };
        children
            .binary_search_by(|c| self.nodes[*c as usize].name.as_bytes().cmp(name.as_bytes()))
            .ok()
            .map(|i| children[i])
    }

    /// Names of the root's entries, in name order.
    pub fn root_names(&self) -> impl Iterator<Item = &str> {
        let children = match self.nodes.first().map(|n| &n.kind) {
            Some(NodeKind::Dir { children, .. }) => children.as_slice(),
            _ => &[],
        };
        children.iter().filter_map(|&c| self.nodes.get(c as usize)).map(|n| n.name.as_str())
    }

    /// The node at a `/`-separated path (leading and trailing `/` ignored).
    pub fn find(&self, path: &str) -> Option<u32> {
        let mut at = 0;
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            at = self.child(at, seg)?;
        }
        Some(at)
    }
}
