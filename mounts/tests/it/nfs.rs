//! The NFSv3 front end against real libnfs clients (`nfs-ls`, `nfs-cat`,
//! `nfs-cp` from Debian's libnfs-utils; scripts/install-test-peers.sh
//! installs them) talking to an in-process server on 127.0.0.1.

use crate::support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aetherfs_mounts::nfs::{GateCounters, NfsAccess, NfsCounters, NfsFs, NfsServer, nfs_url};
use aetherfs_mounts::testing::{MemorySource, fs_of_dir, version_of_dir};
use aetherfs_mounts::{DatasetFs, ROOT};
use nfsserve::nfs::nfsstat3;
use nfsserve::vfs::NFSFileSystem;
use support::{Expect, digest, run, run_ok, sample_tree, walk};

const T: Duration = Duration::from_secs(120);

/// An NFS server over a local tree, on its own runtime; dropping it stops
/// the server and every connection.
struct Served {
    addr: SocketAddr,
    counters: Arc<NfsCounters>,
    gate: Arc<GateCounters>,
    fs: Arc<DatasetFs>,
    source: Arc<MemorySource>,
    _rt: tokio::runtime::Runtime,
}

impl Served {
    fn start(dir: &Path) -> Served {
        Self::start_with(dir, NfsAccess::default())
    }

    fn start_with(dir: &Path, access: NfsAccess) -> Served {
        let (fs, source) = fs_of_dir(dir).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let srv = rt.block_on(NfsServer::bind(fs.clone(), "127.0.0.1:0".parse().unwrap(), "data", access)).unwrap();
        let (addr, counters, gate) = (srv.local_addr(), srv.counters(), srv.gate_counters());
        assert_ne!(addr.port(), 0);
        assert_eq!(srv.url("a/x"), nfs_url(addr, "data", "a/x"));
        rt.spawn(srv.serve());
        Served { addr, counters, gate, fs, source, _rt: rt }
    }

    fn url(&self, path: &str) -> String {
        nfs_url(self.addr, "data", path)
    }
}

/// `nfs-ls` lines: `MODE NLINK UID GID SIZE PATH` (PATH may hold spaces).
fn parse_ls(out: &str) -> Vec<(String, Expect)> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut rest = l;
            let mut f = Vec::new();
            for _ in 0..5 {
                rest = rest.trim_start();
                let end = rest.find(' ').unwrap();
                f.push(&rest[..end]);
                rest = &rest[end..];
            }
            let path = rest.strip_prefix(' ').unwrap().to_string();
            let kind = f[0].chars().next().unwrap();
            let size = (kind != 'd').then(|| f[4].parse().unwrap());
            (path, Expect { kind, size })
        })
        .collect()
}

#[test]
fn nfs_ls_recursive_lists_every_entry_exactly_once() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path(), 10_000);
    let s = Served::start(t.path());
    let out = run_ok("nfs-ls", &["-R", &s.url("")], T);
    let listed = parse_ls(&String::from_utf8(out.stdout).unwrap());
    let mut seen = BTreeMap::new();
    for (path, e) in &listed {
        assert!(seen.insert(path.clone(), e.clone()).is_none(), "{path} listed twice");
    }
    let want = walk(t.path());
    assert_eq!(seen.len(), want.len());
    assert_eq!(seen, want);
    assert_eq!(listed.iter().filter(|(p, _)| p.starts_with("many/")).count(), 10_000);
    // nfs-ls lists with READDIRPLUS, paged (many/ alone needs several pages),
    // and every resume cookie named an entry of its directory.
    let c = &s.counters;
    eprintln!("{c:?}");
    let dirs = want.values().filter(|e| e.kind == 'd').count() as u64 + 1;
    assert!(c.readdirplus_pages.load(Ordering::Relaxed) > dirs + 5, "{c:?}");
    assert_eq!(c.readdir_whole.load(Ordering::Relaxed) + c.readdir_toosmall.load(Ordering::Relaxed), 0, "{c:?}");
    assert_eq!(c.bad_cookies.load(Ordering::Relaxed), 0);
    // Listing is metadata only.
    assert_eq!(s.source.calls.load(Ordering::Relaxed), 0);

    // A directory below the export mounts too.
    let out = run_ok("nfs-ls", &[&s.url("a/b")], T);
    let listed = parse_ls(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(listed, vec![("c".to_string(), Expect { kind: 'd', size: None })]);
}

/// The client allowlist, with libnfs: a server that admits only 127.0.0.1
/// (so the gate relays, since 127.0.0.2 would be refused) serves through
/// the relay; one that admits only 10.0.0.0/8 closes the connection.
#[test]
fn the_allowlist_admits_and_refuses_clients_by_address() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path(), 0);
    let only = |r: &str| NfsAccess { allow: vec![r.parse().unwrap()], ..NfsAccess::default() };
    let s = Served::start_with(t.path(), only("127.0.0.1/32"));
    let out = run_ok("nfs-cat", &[&s.url("a/small.txt")], T);
    assert_eq!(out.stdout, b"hello\n");
    let listed = parse_ls(&String::from_utf8(run_ok("nfs-ls", &["-R", &s.url("")], T).stdout).unwrap());
    assert_eq!(listed.len(), walk(t.path()).len());
    assert!(s.gate.relayed.load(Ordering::Relaxed) >= 2, "{:?}", s.gate);
    assert_eq!(s.gate.refused.load(Ordering::Relaxed), 0);

    let s = Served::start_with(t.path(), only("10.0.0.0/8"));
    let out = run("nfs-ls", &[&s.url("")], T);
    assert!(!out.status.success(), "a refused client listed: {}", String::from_utf8_lossy(&out.stdout));
    assert!(s.gate.refused.load(Ordering::Relaxed) >= 1, "{:?}", s.gate);
    assert_eq!(s.gate.relayed.load(Ordering::Relaxed), 0);
    assert_eq!(s.source.calls.load(Ordering::Relaxed), 0);
}

#[test]
fn nfs_cp_and_nfs_cat_return_the_bytes() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path(), 0);
    let s = Served::start(t.path());
    let out = tempfile::tempdir().unwrap();
    for name in ["big.bin", "medium.bin"] {
        let dst = out.path().join(name);
        run_ok("nfs-cp", &[&s.url(name), dst.to_str().unwrap()], T);
        let want = std::fs::read(t.path().join(name)).unwrap();
        let got = std::fs::read(&dst).unwrap();
        assert_eq!(got.len(), want.len(), "{name}");
        assert_eq!(digest(&got), digest(&want), "{name}");
    }
    assert!(s.source.served.load(Ordering::Relaxed) > 10);
    for (path, want) in [
        ("a/small.txt", &b"hello\n"[..]),
        ("a b", b"space in the name\n"),
        ("zero", b""),
        ("a/zero too", b""),
        ("héllo wörld ✓.txt", "non-ASCII ✓\n".as_bytes()),
        ("日本語/ファイル.txt", "こんにちは\n".as_bytes()),
        ("a/b/c/deep.txt", b"deep down\n"),
        // libnfs resolves symlinks on the way (READLINK, then LOOKUP).
        ("link", b"hello\n"),
    ] {
        let o = run_ok("nfs-cat", &[&s.url(path)], T);
        assert_eq!(digest(&o.stdout), digest(want), "{path}");
    }
    // Reading what is not there, or is not a file, fails.
    for path in ["missing", "a/nope.txt"] {
        let o = run("nfs-cat", &[&s.url(path)], T);
        assert!(!o.status.success(), "{path}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("NFS3ERR_NOENT"), "{path}");
    }
    let o = run("nfs-cat", &[&s.url("a")], T);
    assert!(!o.status.success() && o.stdout.is_empty());
}

#[test]
fn writes_are_refused() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path(), 0);
    let s = Served::start(t.path());
    let local = t.path().join("a/small.txt");
    for target in ["new.txt", "a/new.txt", "a/small.txt", "empty/x"] {
        let o = run("nfs-cp", &[local.to_str().unwrap(), &s.url(target)], T);
        assert!(!o.status.success(), "writing {target} succeeded: {}", String::from_utf8_lossy(&o.stdout));
        assert!(String::from_utf8_lossy(&o.stderr).contains("NFS3ERR_ROFS"), "{target}");
    }
    assert!(s.fs.lookup_path("new.txt").is_err());
    assert!(s.fs.lookup_path("empty/x").is_err());
    assert_eq!(s.fs.lookup_path("a/small.txt").unwrap().size, 6);

    // Every mutating procedure answers NFS3ERR_ROFS.
    let vfs = NfsFs::new(s.fs.clone());
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let name = b"x".to_vec().into();
    let ino = s.fs.lookup_path("a/small.txt").unwrap().ino;
    rt.block_on(async {
        assert!(matches!(vfs.write(ino, 0, b"x").await, Err(nfsstat3::NFS3ERR_ROFS)));
        assert!(matches!(vfs.setattr(ino, Default::default()).await, Err(nfsstat3::NFS3ERR_ROFS)));
        assert!(matches!(vfs.create(ROOT, &name, Default::default()).await, Err(nfsstat3::NFS3ERR_ROFS)));
        assert!(matches!(vfs.create_exclusive(ROOT, &name).await, Err(nfsstat3::NFS3ERR_ROFS)));
        assert!(matches!(vfs.mkdir(ROOT, &name).await, Err(nfsstat3::NFS3ERR_ROFS)));
        assert!(matches!(vfs.remove(ROOT, &name).await, Err(nfsstat3::NFS3ERR_ROFS)));
        assert!(matches!(vfs.rename(ROOT, &name, ROOT, &name).await, Err(nfsstat3::NFS3ERR_ROFS)));
        assert!(matches!(vfs.symlink(ROOT, &name, &name, &Default::default()).await, Err(nfsstat3::NFS3ERR_ROFS)));
    });
}

/// nfsserve's READDIRPLUS contract, driven directly: the cookie of an entry
/// is its file id and the next page starts after the entry with that id.
#[tokio::test]
async fn readdirplus_pages_resume_exactly_after_the_cookie() {
    let t = tempfile::tempdir().unwrap();
    // Names whose sort order differs from creation order, prefixes of each
    // other, and a subdirectory with children between them.
    for i in 0..3000 {
        std::fs::write(t.path().join(format!("{}", i * 7919 % 3001)), b"x").unwrap();
    }
    for n in ["a", "a b", "a.b", "ab", "é", "z"] {
        std::fs::create_dir_all(t.path().join(n).join("child")).unwrap();
    }
    let (fs, _) = fs_of_dir(t.path()).unwrap();
    let all: Vec<(String, u64)> =
        fs.readdir(ROOT, 0, usize::MAX).unwrap().into_iter().map(|e| (e.name, e.attr.ino)).collect();
    assert_eq!(all.len(), 3006);
    let vfs = NfsFs::new(fs.clone());
    for page in [1usize, 2, 7, 100, 999, 5000] {
        let mut got = Vec::new();
        let mut cookie = 0;
        loop {
            let r = vfs.readdir(ROOT, cookie, page).await.unwrap();
            assert!(r.entries.len() <= page);
            got.extend(r.entries.iter().map(|e| (String::from_utf8(e.name.to_vec()).unwrap(), e.fileid)));
            if r.end {
                break;
            }
            cookie = r.entries.last().unwrap().fileid;
        }
        assert_eq!(got, all, "page size {page}");
    }
    // Resuming at any entry gives exactly the entries after it.
    for i in [0, 1, 2, 1500, 3004, 3005] {
        let r = vfs.readdir(ROOT, all[i].1, 3).await.unwrap();
        let names: Vec<_> = r.entries.iter().map(|e| String::from_utf8(e.name.to_vec()).unwrap()).collect();
        let want: Vec<_> = all[i + 1..].iter().take(3).map(|e| e.0.clone()).collect();
        assert_eq!(names, want, "after {i}");
        assert_eq!(r.end, i + 4 > all.len());
    }
    // A cookie that is no entry of this directory is refused, not guessed.
    let child = fs.lookup_path("a/child").unwrap().ino;
    assert!(matches!(vfs.readdir(ROOT, child, 10).await, Err(nfsstat3::NFS3ERR_BAD_COOKIE)));
    assert!(matches!(vfs.readdir(ROOT, 0xdead_0000_0001, 10).await, Err(nfsstat3::NFS3ERR_BAD_COOKIE)));
}

/// Plain READDIR gets no cookie from nfsserve: the whole directory when it
/// fits the client's reply size, else NFS3ERR_TOOSMALL, never a repeat.
#[tokio::test]
async fn plain_readdir_is_whole_or_refused() {
    let t = tempfile::tempdir().unwrap();
    for i in 0..500 {
        std::fs::write(t.path().join(format!("file-{i:04}")), b"x").unwrap();
    }
    let (fs, _) = fs_of_dir(t.path()).unwrap();
    let vfs = NfsFs::new(fs);
    // 500 entries of 24 + 12 bytes = 18,000 bytes.
    let whole = vfs.readdir_simple(ROOT, 32768 / 16).await.unwrap();
    assert!(whole.end);
    assert_eq!(whole.entries.len(), 500);
    assert!(matches!(vfs.readdir_simple(ROOT, 8192 / 16).await, Err(nfsstat3::NFS3ERR_TOOSMALL)));
}

/// A listing of `/` that spans a version switch resumes by name in the new
/// version: no entry twice, none of the new version's skipped after the cookie.
#[tokio::test]
async fn a_root_listing_resumes_by_name_across_a_switch() {
    let t = tempfile::tempdir().unwrap();
    for n in ["a", "b", "c", "d"] {
        std::fs::write(t.path().join(n), n).unwrap();
    }
    let (fs, _) = fs_of_dir(t.path()).unwrap();
    let vfs = NfsFs::new(fs.clone());
    let first = vfs.readdir(ROOT, 0, 2).await.unwrap();
    assert!(!first.end);
    std::fs::remove_file(t.path().join("b")).unwrap();
    std::fs::write(t.path().join("bb"), "bb").unwrap();
    fs.switch(version_of_dir(t.path()).unwrap().0);
    let rest = vfs.readdir(ROOT, first.entries[1].fileid, 10).await.unwrap();
    let names: Vec<_> = rest.entries.iter().map(|e| String::from_utf8(e.name.to_vec()).unwrap()).collect();
    assert_eq!(names, ["bb", "c", "d"]);
    assert!(rest.end);
}
