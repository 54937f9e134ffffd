use std::sync::atomic::Ordering;

use crate::testing::{FaultySource, fs_of_dir, version_of_dir};
use crate::*;

fn sample() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    std::fs::create_dir_all(p.join("a/b")).unwrap();
    std::fs::create_dir_all(p.join("empty")).unwrap();
    std::fs::write(p.join("a/b/big.bin"), (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect::<Vec<_>>()).unwrap();
    std::fs::write(p.join("a/small.txt"), b"hello").unwrap();
    std::fs::write(p.join("a b"), b"space").unwrap();
    std::fs::write(p.join("zero"), b"").unwrap();
    std::os::unix::fs::symlink("a/small.txt", p.join("link")).unwrap();
    t
}

#[tokio::test]
async fn lookup_getattr_readdir_readlink() {
    let t = sample();
    let (fs, _) = fs_of_dir(t.path()).unwrap();
    let root = fs.getattr(ROOT).unwrap();
    assert_eq!((root.ino, root.kind), (ROOT, Kind::Dir));
    let names: Vec<String> = fs.readdir(ROOT, 0, 100).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["a", "a b", "empty", "link", "zero"]);
    let a = fs.lookup(ROOT, "a").unwrap();
    let small = fs.lookup(a.ino, "small.txt").unwrap();
    assert_eq!((small.kind, small.size, small.perm), (Kind::File, 5, 0o644));
    assert_eq!(fs.lookup(a.ino, "..").unwrap().ino, ROOT);
    assert_eq!(fs.lookup(ROOT, "nope"), Err(FsError::NotFound));
    assert_eq!(fs.lookup(small.ino, "x"), Err(FsError::NotDir));
    let link = fs.lookup(ROOT, "link").unwrap();
    assert_eq!(fs.readlink(link.ino).unwrap(), "a/small.txt");
    assert_eq!(fs.readlink(small.ino), Err(FsError::NotSymlink));
    assert_eq!(fs.lookup_path("a/b/big.bin").unwrap().size, 3_000_000);
    assert_eq!(fs.path_of(small.ino).unwrap(), "a/small.txt");
    // Resuming a listing at a cookie continues exactly after that entry.
    let first = fs.readdir(ROOT, 0, 2).unwrap();
    let rest = fs.readdir(ROOT, first[1].cookie, 100).unwrap();
    assert_eq!(rest[0].name, "empty");
    assert_eq!(fs.readdir(ROOT, 99, 10).unwrap(), vec![]);
    // Stable numbering: the same manifest gives the same inodes.
    let (fs2, _) = fs_of_dir(t.path()).unwrap();
    assert_eq!(fs2.lookup_path("a/b/big.bin").unwrap().ino, fs.lookup_path("a/b/big.bin").unwrap().ino);
}

#[tokio::test]
async fn reads_at_any_offset_and_length() {
    let t = sample();
    let data = std::fs::read(t.path().join("a/b/big.bin")).unwrap();
    let (fs, _) = fs_of_dir(t.path()).unwrap();
    let ino = fs.lookup_path("a/b/big.bin").unwrap().ino;
    for (off, len) in
        [(0u64, 1u32), (0, 4096), (65_000, 200_000), (2_999_990, 100), (1_234_567, 1_000_000), (3_000_000, 10)]
    {
        let got = fs.read(ino, off, len).await.unwrap();
        let s = (off as usize).min(data.len());
        let e = (off as usize + len as usize).min(data.len());
        assert_eq!(&got[..], &data[s..e], "read at {off}+{len}");
    }
    let zero = fs.lookup_path("zero").unwrap().ino;
    assert!(fs.read(zero, 0, 10).await.unwrap().is_empty());
    assert_eq!(fs.read(ROOT, 0, 10).await, Err(FsError::IsDir));
}

#[tokio::test]
async fn source_failures_become_io_errors() {
    let t = sample();
    let (version, source, _) = version_of_dir(t.path()).unwrap();
    let faulty = std::sync::Arc::new(FaultySource::new(source));
    let fs = DatasetFs::new(version, faulty.clone());
    let ino = fs.lookup_path("a/small.txt").unwrap().ino;
    faulty.fail.store(true, Ordering::Relaxed);
    assert!(matches!(fs.read(ino, 0, 5).await, Err(FsError::Source(_))));
    faulty.fail.store(false, Ordering::Relaxed);
    assert_eq!(&fs.read(ino, 0, 5).await.unwrap()[..], b"hello");
}

#[tokio::test]
async fn metadata_never_touches_chunk_data() {
    let t = sample();
    let (fs, source) = fs_of_dir(t.path()).unwrap();
    for e in fs.readdir(ROOT, 0, 100).unwrap() {
        fs.getattr(e.attr.ino).unwrap();
    }
    fs.lookup_path("a/b/big.bin").unwrap();
    assert_eq!(source.calls.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_switch_keeps_old_inodes_on_their_version() {
    let t = sample();
    let (fs, _) = fs_of_dir(t.path()).unwrap();
    let old = fs.lookup_path("a/small.txt").unwrap();
    std::fs::write(t.path().join("a/small.txt"), b"HELLO, new").unwrap();
    let (v2, _, _) = version_of_dir(t.path()).unwrap();
    // The new version's chunks are not in the old source: reading through the
    // old inode must still work, from the old version.
    fs.switch(v2);
    assert_eq!(&fs.read(old.ino, 0, 100).await.unwrap()[..], b"hello");
    let new = fs.lookup_path("a/small.txt").unwrap();
    assert_ne!(new.ino, old.ino);
    assert_eq!(new.size, 10);
}

#[tokio::test]
async fn old_versions_can_be_forgotten() {
    let t = sample();
    let (fs, _) = fs_of_dir(t.path()).unwrap();
    let first = fs.lookup_path("a/small.txt").unwrap();
    for _ in 0..4 {
        let (v, _, _) = version_of_dir(t.path()).unwrap();
        fs.switch(v);
    }
    assert_eq!(fs.versions_held(), 5);
    assert_eq!(fs.retain_previous(2), 2);
    assert_eq!(fs.versions_held(), 3);
    assert_eq!(fs.getattr(first.ino), Err(FsError::Stale));
    assert!(fs.lookup_path("a/small.txt").is_ok());
}

#[test]
fn statfs_counts_blocks_per_file_and_every_node() {
    let t = sample();
    let (fs, _) = fs_of_dir(t.path()).unwrap();
    // big.bin 733 blocks, small.txt and "a b" 1 each, zero none; nodes: root,
    // a, a/b, big.bin, small.txt, "a b", empty, link, zero.
    assert_eq!(fs.statfs(), FsTotals { blocks: 3_000_000u64.div_ceil(4096) + 2, files: 9 });
    let v = fs.current();
    assert_eq!(v.root_names().collect::<Vec<_>>(), ["a", "a b", "empty", "link", "zero"]);
}

/// Answers every read with one empty chunk: wrong count or wrong length.
struct BrokenSource;

impl ChunkSource for BrokenSource {
    fn read<'a>(
        &'a self,
        _want: &'a [aetherfs_format::ChunkRef],
        _ahead: &'a [aetherfs_format::ChunkRef],
    ) -> futures::future::BoxFuture<'a, Result<Vec<bytes::Bytes>, SourceError>> {
        Box::pin(async { Ok(vec![bytes::Bytes::new()]) })
    }
}

#[tokio::test]
async fn a_source_that_breaks_its_contract_is_a_typed_error() {
    let t = sample();
    let (version, _, _) = version_of_dir(t.path()).unwrap();
    let fs = DatasetFs::new(version, std::sync::Arc::new(BrokenSource));
    let small = fs.lookup_path("a/small.txt").unwrap().ino;
    let Err(FsError::BadSource(ContractError::WrongLength { want: 5, got: 0, .. })) = fs.read(small, 0, 5).await else {
        panic!("a short chunk must be a WrongLength contract error");
    };
    let big = fs.lookup_path("a/b/big.bin").unwrap().ino;
    let Err(FsError::BadSource(ContractError::WrongCount { got: 1, .. })) = fs.read(big, 0, 3_000_000).await else {
        panic!("too few chunks must be a WrongCount contract error");
    };
}
