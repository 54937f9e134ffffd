//! The manifest: what one version is, and nothing about where it is stored.
//!
//! Binary encoding, version 3 (all integers LEB128 varints unless noted):
//!
//! ```text
//! magic "AFSM" | version u16 LE | chunker: algorithm u8 (1 = FastCDC 2020), min, avg, max
//! annotations: count, (key str, value str)*
//! entries: count, entry*                       -- strictly sorted by path bytes
//!   entry: kind u8 (0 file, 1 dir, 2 symlink), path str, mode
//!     file:    size, chunk count, (digest[32], len)*
//!     symlink: target str
//! ```
//!
//! The manifest's digest is the BLAKE3 of these exact bytes: a version's
//! identity is its paths, modes and chunk digests. A file's digest is not
//! stored: it is derived from its chunk list ([`file_digest`]) whenever a
//! [`FileEntry`] is made, so no manifest can carry a wrong one (version 2
//! stored it, and nothing but a full read could check it). Where each chunk's stored
//! bytes live is a separate object, the [`Placement`], which garbage
//! collection may rewrite when it moves chunks between packs without ever
//! changing a version's digest. In memory a [`Manifest`] carries both (each
//! [`ChunkRef`] has its location): [`Manifest::decode`] joins the two objects
//! and checks that they agree.
//!
//! Decoding validates everything (paths, sizes, sort order, conflicts), so a
//! decoded manifest is safe to materialize.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::FormatError;
use crate::chunker::{ChunkParams, MAX_CHUNK_SIZE};
use crate::codec::{Reader, put_str, put_varint};
use crate::digest::{Digest, file_digest};
use crate::path::{PATH_MAX, ancestors, validate_path};
use crate::placement::Placement;

const MAGIC: &[u8; 4] = b"AFSM";
pub const MANIFEST_VERSION: u16 = 3;
/// Largest manifest accepted anywhere: about 1.8M chunks (over 100 GB of
/// data at the default chunk size), or 100,000 files in a few MiB. Every
/// reader holds one whole in memory, so it is bounded well below a pack.
pub const MANIFEST_MAX_BYTES: usize = 64 << 20;
const ALGO_FASTCDC2020: u8 = 1;
const ANNOTATIONS_MAX: usize = 64;
const ANNOTATION_KEY_MAX: usize = 128;
const ANNOTATION_VALUE_MAX: usize = 4096;

/// How a chunk is stored inside its pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Zstd,
}

impl Compression {
    pub(crate) fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd => 1,
        }
    }
    pub(crate) fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Where a chunk's stored bytes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkLocation {
    pub pack: Digest,
    pub offset: u64,
    pub stored_len: u32,
    pub compression: Compression,
}

/// The largest stored form of a chunk of `len` bytes: zstd's worst case plus slack.
pub fn max_stored_len(len: u32) -> u32 {
    // Saturating: callers check lengths from untrusted bytes against it
    // before they check them against the chunk size limit.
    len.saturating_add(len / 128).saturating_add(1024)
}

/// One chunk of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub digest: Digest,
    /// Plaintext length.
    pub len: u32,
    #[serde(flatten)]
    pub location: ChunkLocation,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum EntryKind {
    File(FileEntry),
    Dir,
    Symlink { target: String },
}

/// A regular file: its chunks in order. Its size and digest follow from
/// them and are computed once, here, so they cannot disagree with them; the
/// fields are private so that stays true.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    size: u64,
    digest: Digest,
    chunks: Vec<ChunkRef>,
}

impl FileEntry {
    pub fn new(chunks: Vec<ChunkRef>) -> Self {
        let size = chunks.iter().map(|c| u64::from(c.len)).sum();
        let digest = file_digest(size, chunks.iter().map(|c| (c.digest, c.len)));
        Self { size, digest, chunks }
    }

    /// The sum of the chunk lengths.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file's [`file_digest`]: what `inspect --files` and `aetherfs digest` print.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    pub fn chunks(&self) -> &[ChunkRef] {
        &self.chunks
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub path: String,
    /// Permission bits only (at most 0o777): no setuid, setgid or sticky bits.
    pub mode: u32,
    #[serde(flatten)]
    pub kind: EntryKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Manifest {
    pub chunking: ChunkParams,
    pub annotations: BTreeMap<String, String>,
    /// Sorted by path bytes, unique. Directories are listed only when empty
    /// (or to carry a mode); parents of files are implied.
    pub entries: Vec<Entry>,
}

/// A valid manifest not yet placed: its totals and its distinct chunks
/// (digest, plaintext length) in the order they first appear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unplaced {
    pub stats: ManifestStats,
    pub chunks: Vec<(Digest, u32)>,
}

/// Totals of a manifest, for listings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub chunks: u64,
}

impl Manifest {
    pub fn new(chunking: ChunkParams) -> Self {
        Self { chunking, annotations: BTreeMap::new(), entries: Vec::new() }
    }

    /// Sorts entries into their canonical order; call before [`Manifest::encode`].
    pub fn sort(&mut self) {
        self.entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    }

    pub fn stats(&self) -> ManifestStats {
        let mut s = ManifestStats::default();
        for e in &self.entries {
            match &e.kind {
                EntryKind::File(f) => {
                    s.files += 1;
                    s.bytes += f.size;
                    s.chunks += f.chunks.len() as u64;
                }
                EntryKind::Dir => s.dirs += 1,
                EntryKind::Symlink { .. } => s.symlinks += 1,
            }
        }
        s
    }

    /// Every chunk the manifest references, each once.
    pub fn unique_chunks(&self) -> HashMap<Digest, ChunkRef> {
        let mut out = HashMap::new();
        for e in &self.entries {
            if let EntryKind::File(f) = &e.kind {
                for c in &f.chunks {
                    out.entry(c.digest).or_insert(*c);
                }
            }
        }
        out
    }

    /// Checks every invariant decoding checks. Encoding refuses invalid manifests.
    pub fn validate(&self) -> Result<(), FormatError> {
        self.chunking.validate()?;
        let bad = |msg: String| FormatError::InvalidManifest(msg);
        if self.annotations.len() > ANNOTATIONS_MAX {
            return Err(bad(format!("more than {ANNOTATIONS_MAX} annotations")));
        }
        for (k, v) in &self.annotations {
            if k.is_empty() || k.len() > ANNOTATION_KEY_MAX || v.len() > ANNOTATION_VALUE_MAX {
                return Err(bad(format!("annotation {k:?} has a bad size")));
            }
        }
        let mut leaves: HashSet<&str> = HashSet::new();
        // A chunk is its bytes: every mention of a digest has the same length.
        let mut lens: HashMap<&Digest, u32> = HashMap::new();
        let mut prev: Option<&str> = None;
        for e in &self.entries {
            validate_path(&e.path)?;
            if let Some(p) = prev
                && p.as_bytes() >= e.path.as_bytes()
            {
                return Err(if p == e.path {
                    bad(format!("duplicate path {:?}", e.path))
                } else {
                    bad(format!("entries not sorted at {:?}", e.path))
                });
            }
            prev = Some(&e.path);
            if e.mode > 0o777 {
                return Err(bad(format!("{:?}: mode {:o} has bits beyond 0o777", e.path, e.mode)));
            }
            match &e.kind {
                // The size is the chunks' sum by construction ([`FileEntry::new`]).
                EntryKind::File(f) => {
                    for c in &f.chunks {
                        if c.len == 0 || c.len > self.chunking.max {
                            return Err(bad(format!("{:?}: chunk of {} bytes", e.path, c.len)));
                        }
                        if let Some(&len) = lens.get(&c.digest)
                            && len != c.len
                        {
                            return Err(bad(format!(
                                "{:?}: chunk {} is {} bytes here, {len} bytes elsewhere",
                                e.path, c.digest, c.len
                            )));
                        }
                        lens.insert(&c.digest, c.len);
                        let stored_ok = match c.location.compression {
                            Compression::None => c.location.stored_len == c.len,
                            Compression::Zstd => {
                                c.location.stored_len > 0 && c.location.stored_len <= max_stored_len(c.len)
                            }
                        };
                        if !stored_ok {
                            return Err(bad(format!("{:?}: bad stored length", e.path)));
                        }
                    }
                    leaves.insert(&e.path);
                }
                EntryKind::Symlink { target } => {
                    if target.is_empty() || target.len() > PATH_MAX || target.contains('\0') {
                        return Err(bad(format!("{:?}: bad symlink target", e.path)));
                    }
                    leaves.insert(&e.path);
                }
                EntryKind::Dir => {}
            }
        }
        for e in &self.entries {
            if let Some(a) = ancestors(&e.path).find(|a| leaves.contains(a)) {
                return Err(bad(format!("{:?} is inside {a:?}, which is not a directory", e.path)));
            }
        }
        Ok(())
    }

    /// The canonical bytes of what the version is (no placement); their
    /// digest is the version's digest.
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        self.validate()?;
        let mut out = Vec::with_capacity(64 + self.entries.len() * 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&MANIFEST_VERSION.to_le_bytes());
        out.push(ALGO_FASTCDC2020);
        put_varint(&mut out, self.chunking.min.into());
        put_varint(&mut out, self.chunking.avg.into());
        put_varint(&mut out, self.chunking.max.into());
        put_varint(&mut out, self.annotations.len() as u64);
        for (k, v) in &self.annotations {
            put_str(&mut out, k);
            put_str(&mut out, v);
        }
        put_varint(&mut out, self.entries.len() as u64);
        for e in &self.entries {
            let kind = match e.kind {
                EntryKind::File(_) => 0,
                EntryKind::Dir => 1,
                EntryKind::Symlink { .. } => 2,
            };
            out.push(kind);
            put_str(&mut out, &e.path);
            put_varint(&mut out, e.mode.into());
            match &e.kind {
                // No file digest: readers derive it from the chunks.
                EntryKind::File(f) => {
                    put_varint(&mut out, f.size);
                    put_varint(&mut out, f.chunks.len() as u64);
                    for c in &f.chunks {
                        out.extend_from_slice(c.digest.as_bytes());
                        put_varint(&mut out, c.len.into());
                    }
                }
                EntryKind::Dir => {}
                EntryKind::Symlink { target } => put_str(&mut out, target),
            }
        }
        if out.len() > MANIFEST_MAX_BYTES {
            return Err(FormatError::TooLarge { what: "manifest", max: MANIFEST_MAX_BYTES });
        }
        Ok(out)
    }

    /// Parses and validates a manifest and its placement from any source:
    /// every chunk must be placed, and the placement must name nothing else.
    pub fn decode(bytes: &[u8], placement: &Placement) -> Result<Self, FormatError> {
        let m = Self::decode_placed_by(bytes, |d, _| placement.locate(d))?;
        let unique = m.unique_chunks().len();
        if unique != placement.len() {
            return Err(FormatError::InvalidManifest(format!(
                "the placement names {} chunks, the manifest {unique}",
                placement.len()
            )));
        }
        Ok(m)
    }

    /// Parses and validates manifest bytes without a placement: what a hub
    /// needs to place a version it is asked to publish.
    pub fn decode_unplaced(bytes: &[u8]) -> Result<Unplaced, FormatError> {
        let m = Self::decode_placed_by(bytes, |d, len| {
            // A stand-in that never leaves this function.
            Some(ChunkLocation { pack: *d, offset: 0, stored_len: len, compression: Compression::None })
        })?;
        let mut seen = HashSet::new();
        let mut chunks = Vec::new();
        for e in &m.entries {
            if let EntryKind::File(f) = &e.kind {
                chunks.extend(f.chunks.iter().filter(|c| seen.insert(c.digest)).map(|c| (c.digest, c.len)));
            }
        }
        Ok(Unplaced { stats: m.stats(), chunks })
    }

    /// Parses and validates manifest bytes, asking `locate` where each chunk
    /// (digest, plaintext length) is stored. Chunks it cannot place are all
    /// reported at once, in [`FormatError::Unplaced`].
    pub fn decode_placed_by(
        bytes: &[u8],
        mut locate: impl FnMut(&Digest, u32) -> Option<ChunkLocation>,
    ) -> Result<Self, FormatError> {
        let mut r = Reader::open(bytes, "manifest", MANIFEST_MAX_BYTES, MAGIC, MANIFEST_VERSION)?;
        if r.u8()? != ALGO_FASTCDC2020 {
            return Err(r.err("unknown chunking algorithm"));
        }
        let chunking = ChunkParams {
            min: r.varint_max(u32::MAX.into(), "chunk min")? as u32,
            avg: r.varint_max(u32::MAX.into(), "chunk avg")? as u32,
            max: r.varint_max(u32::MAX.into(), "chunk max")? as u32,
        };
        chunking.validate()?;
        let mut annotations = BTreeMap::new();
        let n = r.count(2, "annotation")?;
        if n > ANNOTATIONS_MAX {
            return Err(r.err("too many annotations"));
        }
        for _ in 0..n {
            let k = r.str(ANNOTATION_KEY_MAX, "annotation key")?.to_string();
            let v = r.str(ANNOTATION_VALUE_MAX, "annotation value")?.to_string();
            // Sorted by key bytes, as encoding writes them: one manifest, one spelling.
            if annotations.last_key_value().is_some_and(|(prev, _): (&String, _)| *prev >= k) {
                return Err(r.err("annotations not strictly sorted by key"));
            }
            annotations.insert(k, v);
        }
        let n = r.count(3, "entry")?;
        let mut entries = Vec::with_capacity(n);
        let max_chunk = u64::from(MAX_CHUNK_SIZE);
        let mut unplaced: Vec<Digest> = Vec::new();
        for _ in 0..n {
            let kind = r.u8()?;
            let path = r.str(PATH_MAX, "path")?.to_string();
            let mode = r.varint_max(0o777, "mode")? as u32;
            let kind = match kind {
                0 => {
                    let size = r.varint()?;
                    let count = r.count(33, "chunk")?;
                    let mut chunks = Vec::with_capacity(count);
                    for _ in 0..count {
                        let digest = r.digest()?;
                        let len = r.varint_max(max_chunk, "chunk length")? as u32;
                        let location = locate(&digest, len).unwrap_or_else(|| {
                            // Stands in only so the rest still gets validated; an
                            // unplaced manifest is never returned.
                            unplaced.push(digest);
                            ChunkLocation { pack: digest, offset: 0, stored_len: len, compression: Compression::None }
                        });
                        chunks.push(ChunkRef { digest, len, location });
                    }
                    let file = FileEntry::new(chunks);
                    if file.size != size {
                        return Err(r.err(format!("{path:?}: chunks sum to {}, size is {size}", file.size)));
                    }
                    EntryKind::File(file)
                }
                1 => EntryKind::Dir,
                2 => EntryKind::Symlink { target: r.str(PATH_MAX, "symlink target")?.to_string() },
                k => return Err(r.err(format!("unknown entry kind {k}"))),
            };
            entries.push(Entry { path, mode, kind });
        }
        r.finish()?;
        let m = Manifest { chunking, annotations, entries };
        m.validate()?;
        if !unplaced.is_empty() {
            unplaced.sort_unstable();
            unplaced.dedup();
            return Err(FormatError::Unplaced(unplaced));
        }
        Ok(m)
    }

    /// The JSON rendering served by the API and printed by `inspect`.
    pub fn to_json(&self, digest: &Digest, with_files: bool) -> serde_json::Value {
        let mut v = serde_json::json!({
            "digest": digest,
            "version": MANIFEST_VERSION,
            "chunking": { "algorithm": "fastcdc-2020", "min": self.chunking.min, "avg": self.chunking.avg, "max": self.chunking.max },
            "annotations": self.annotations,
            "stats": self.stats(),
        });
        if with_files {
            v["entries"] = serde_json::to_value(&self.entries).unwrap_or_default();
        }
        v
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        let pack = Digest::of(b"pack");
        let c1 = ChunkRef {
            digest: Digest::of(b"one"),
            len: 3,
            location: ChunkLocation { pack, offset: 8, stored_len: 3, compression: Compression::None },
        };
        let mut m = Manifest::new(ChunkParams::default());
        m.annotations.insert("created".into(), "2026-11-21T00:00:00Z".into());
        m.entries = vec![
            Entry { path: "a/empty".into(), mode: 0o755, kind: EntryKind::Dir },
            Entry { path: "a/f.txt".into(), mode: 0o644, kind: EntryKind::File(FileEntry::new(vec![c1])) },
            Entry { path: "a/link".into(), mode: 0o777, kind: EntryKind::Symlink { target: "f.txt".into() } },
            Entry { path: "données.csv".into(), mode: 0o600, kind: EntryKind::File(FileEntry::new(vec![])) },
        ];
        m.sort();
        m
    }

    fn anywhere(d: &Digest, len: u32) -> Option<ChunkLocation> {
        Some(ChunkLocation { pack: *d, offset: 0, stored_len: len, compression: Compression::None })
    }

    /// A manifest of one file `f`, written out by hand: `file_digest` adds
    /// the 32-byte digest field version 2 had after the size.
    fn one_file(version: u16, size: u64, file_digest: Option<Digest>, chunks: &[(Digest, u32)]) -> Vec<u8> {
        let p = ChunkParams::default();
        let mut b = b"AFSM".to_vec();
        b.extend_from_slice(&version.to_le_bytes());
        b.push(ALGO_FASTCDC2020);
        for v in [p.min, p.avg, p.max] {
            put_varint(&mut b, v.into());
        }
        put_varint(&mut b, 0); // annotations
        put_varint(&mut b, 1); // entries
        b.push(0);
        put_str(&mut b, "f");
        put_varint(&mut b, 0o644);
        put_varint(&mut b, size);
        if let Some(d) = file_digest {
            b.extend_from_slice(d.as_bytes());
        }
        put_varint(&mut b, chunks.len() as u64);
        for (d, len) in chunks {
            b.extend_from_slice(d.as_bytes());
            put_varint(&mut b, (*len).into());
        }
        b
    }

    fn file_of(m: &Manifest, path: &str) -> FileEntry {
        match m.entries.iter().find(|e| e.path == path).map(|e| &e.kind) {
            Some(EntryKind::File(f)) => f.clone(),
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn round_trips() {
        let m = sample();
        let bytes = m.encode().unwrap();
        let placement = Placement::of(&m, Digest::of(&bytes));
        assert_eq!(Manifest::decode(&bytes, &placement).unwrap(), m);
        assert_eq!(m.encode().unwrap(), bytes, "encoding is deterministic");
        let json = m.to_json(&Digest::of(&bytes), true);
        assert_eq!(json["version"], 3);
        assert_eq!(json["stats"]["files"], 2);
        assert_eq!(json["entries"][1]["type"], "file");
        assert_eq!(json["entries"][1]["size"], 3);
        assert_eq!(json["entries"][1]["digest"], file_of(&m, "a/f.txt").digest().to_string());
        assert_eq!(json["entries"][1]["chunks"][0]["len"], 3);
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let chunks = [(Digest::of(b"one"), 3), (Digest::of(b"two"), 2)];
        let by_hand = one_file(3, 5, None, &chunks);
        let refs = chunks.iter().map(|&(d, len)| ChunkRef { digest: d, len, location: anywhere(&d, len).unwrap() });
        let mut m = Manifest::new(ChunkParams::default());
        m.entries =
            vec![Entry { path: "f".into(), mode: 0o644, kind: EntryKind::File(FileEntry::new(refs.collect())) }];
        assert_eq!(m.encode().unwrap(), by_hand);
    }

    #[test]
    fn a_file_digest_is_derived_from_its_chunks() {
        let m = sample();
        let f = file_of(&m, "a/f.txt");
        assert_eq!(f.size(), 3);
        assert_eq!(f.digest(), file_digest(3, [(Digest::of(b"one"), 3)]));
        assert_eq!(file_of(&m, "données.csv").digest(), file_digest(0, []));
    }

    #[test]
    fn a_tampered_chunk_list_changes_the_file_digest() {
        let chunks = [(Digest::of(b"one"), 3), (Digest::of(b"two"), 2)];
        let good = one_file(3, 5, None, &chunks);
        let m = Manifest::decode_placed_by(&good, anywhere).unwrap();
        let want = file_of(&m, "f").digest();
        assert_eq!(want, file_digest(5, chunks));
        // Any change to a chunk digest, anywhere in it, is a different file.
        let first = good.len() - 2 * 33;
        for i in (first..first + 32).chain(first + 33..first + 65) {
            let mut b = good.clone();
            b[i] ^= 1;
            let f = file_of(&Manifest::decode_placed_by(&b, anywhere).unwrap(), "f");
            assert_ne!(f.digest(), want, "byte {i}");
            assert_eq!(f.digest(), file_digest(5, f.chunks().iter().map(|c| (c.digest, c.len))));
        }
        // So are swapped chunks, and lengths moved between chunks.
        let swapped = one_file(3, 5, None, &[chunks[1], chunks[0]]);
        assert_ne!(file_of(&Manifest::decode_placed_by(&swapped, anywhere).unwrap(), "f").digest(), want);
        let moved = one_file(3, 5, None, &[(chunks[0].0, 2), (chunks[1].0, 3)]);
        assert_ne!(file_of(&Manifest::decode_placed_by(&moved, anywhere).unwrap(), "f").digest(), want);
    }

    #[test]
    fn a_stated_file_digest_is_refused() {
        let chunks = [(Digest::of(b"one"), 3)];
        let lie = Some(Digest::of(b"not the file"));
        // Version 2 carried one: no longer read.
        let v2 = one_file(2, 3, lie, &chunks);
        assert_eq!(
            Manifest::decode_unplaced(&v2).unwrap_err(),
            FormatError::UnsupportedVersion { what: "manifest", version: 2 }
        );
        // Version 3 with the old field left in: the bytes no longer parse.
        for d in [lie, Some(file_digest(3, chunks))] {
            assert!(Manifest::decode_unplaced(&one_file(3, 3, d, &chunks)).is_err());
        }
    }

    #[test]
    fn rejects_bad_paths_and_conflicts() {
        let file = |p: &str| Entry { path: p.into(), mode: 0o644, kind: EntryKind::File(FileEntry::new(vec![])) };
        for entries in [
            vec![file("../x")],
            vec![file("/etc/passwd")],
            vec![file("a"), file("a")],
            vec![file("a"), file("a/b")],
            vec![file("a/./b")],
            vec![file("b"), file("a")],
        ] {
            let m = Manifest { entries: entries.clone(), ..Manifest::new(ChunkParams::default()) };
            assert!(m.encode().is_err(), "{entries:?} accepted");
        }
    }

    /// Found by `fuzz/` (corpus/manifest/regression-*): decoding accepted
    /// spellings encoding never writes, so one version had many digests.
    #[test]
    fn only_the_canonical_bytes_decode() {
        let m = sample();
        let good = m.encode().unwrap();
        assert!(Manifest::decode_unplaced(&good).is_ok());
        // The mode of the first entry (0o755 = 0xed 0x03) padded with a zero group.
        let at = good.windows(2).position(|w| w == [0xed, 0x03]).unwrap();
        let mut padded = good.clone();
        padded.splice(at..at + 2, [0xed, 0x83, 0x00]);
        let e = Manifest::decode_unplaced(&padded).unwrap_err();
        assert!(e.to_string().contains("shortest form"), "{e}");
        // Annotations in any order but the sorted one.
        let mut two = sample();
        two.annotations.insert("b".into(), "2".into());
        let bytes = two.encode().unwrap();
        assert_eq!(Manifest::decode_unplaced(&bytes).unwrap().stats, two.stats());
        let (first, second) = (b"\x01b\x012", b"\x07created\x142026-11-21T00:00:00Z");
        let i = bytes.windows(first.len()).position(|w| w == first).unwrap();
        let j = bytes.windows(second.len()).position(|w| w == second).unwrap();
        assert!(i < j);
        let mut swapped = bytes[..i].to_vec();
        swapped.extend_from_slice(second);
        swapped.extend_from_slice(first);
        swapped.extend_from_slice(&bytes[j + second.len()..]);
        assert_eq!(swapped.len(), bytes.len());
        let e = Manifest::decode_unplaced(&swapped).unwrap_err();
        assert!(e.to_string().contains("not strictly sorted"), "{e}");
    }

    /// Found by `fuzz/` (corpus/manifest/regression-chunk-with-two-lengths):
    /// a chunk listed with two lengths decoded unplaced, so a hub published
    /// it, placed it by its first length, and no reader could decode it.
    #[test]
    fn a_chunk_has_one_length() {
        let c = Digest::of(b"one");
        let two = one_file(3, 5, None, &[(c, 3), (c, 2)]);
        let e = Manifest::decode_unplaced(&two).unwrap_err();
        assert!(e.to_string().contains("3 bytes elsewhere"), "{e}");
        let same = one_file(3, 6, None, &[(c, 3), (c, 3)]);
        let u = Manifest::decode_unplaced(&same).unwrap();
        assert_eq!(u.chunks, [(c, 3)]);
        let m = Manifest::decode_placed_by(&same, anywhere).unwrap();
        let placement = Placement::of(&m, Digest::of(&same));
        assert_eq!(Manifest::decode(&same, &placement).unwrap(), m);
    }

    #[test]
    fn the_largest_stored_length_saturates() {
        assert_eq!(max_stored_len(128), 128 + 1 + 1024);
        assert_eq!(max_stored_len(u32::MAX), u32::MAX);
        assert_eq!(max_stored_len(u32::MAX - 1024), u32::MAX);
    }

    #[test]
    fn rejects_size_mismatch_and_setuid() {
        let chunks = [(Digest::of(b"one"), 3)];
        assert!(Manifest::decode_unplaced(&one_file(3, 3, None, &chunks)).is_ok());
        for size in [0, 2, 4] {
            let e = Manifest::decode_unplaced(&one_file(3, size, None, &chunks)).unwrap_err();
            assert!(e.to_string().contains("chunks sum to 3"), "{e}");
        }
        let mut m = sample();
        m.entries[0].mode = 0o4755;
        assert!(m.encode().is_err());
    }

    #[test]
    fn decoding_truncated_or_mutated_bytes_never_panics() {
        let m = sample();
        let bytes = m.encode().unwrap();
        let placement = Placement::of(&m, Digest::of(&bytes));
        for cut in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..cut], &placement).is_err());
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                let _ = Manifest::decode(&b, &placement);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut b = b"AFSM\x03\x00\x01".to_vec();
            b.extend_from_slice(&data);
            let _ = Manifest::decode_placed_by(&b, anywhere);
            let _ = Manifest::decode_placed_by(&data, anywhere);
        }
    }
}
