//! The FUSE front end through the real kernel: trees served from a local
//! directory with `testing::fs_of_dir`, mounted with `fuse::mount`, and read
//! with coreutils, `diff`, `find` and `sqlite3` as well as std.
//!
//! Needs `/dev/fuse`, `fusermount3` (Debian `fuse3`), `sqlite3` and `diff`
//! (`scripts/install-test-peers.sh`), and root or a FUSE setup that lets this
//! user mount. Every mount is undone by a guard, even when a test fails.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aetherfs_format::ChunkRef;
use aetherfs_mounts::fuse::{self, FuseError, FuseMount, FuseOptions, FuseStats, ROOT_TTL};
use aetherfs_mounts::testing::{FaultySource, MemorySource, fs_of_dir, version_of_dir};
use aetherfs_mounts::{ChunkSource, DatasetFs, SourceError};
use bytes::Bytes;
use futures::future::BoxFuture;

fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "the FUSE tests need /dev/fuse: load the module (modprobe fuse) or pass the device into the container"
    );
    assert!(
        Command::new("fusermount3").arg("-V").output().is_ok(),
        "the FUSE tests need fusermount3: apt-get install fuse3 (scripts/install-test-peers.sh does it)"
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Undoes mountinfo's octal escapes.
fn unescape(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// (fstype, source, mount options) of the topmost mount at `path`.
fn mount_at(path: &Path) -> Option<(String, String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = path.to_str().unwrap();
    info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let dash = f.iter().position(|x| *x == "-")?;
        (unescape(f[4]) == want).then(|| (f[dash + 1].to_string(), unescape(f[dash + 2]), f[5].to_string()))
    })
}

fn force_unmount(path: &Path) {
    if mount_at(path).is_some() {
        let _ = Command::new("fusermount3").args(["-u", "-z"]).arg(path).status();
    }
}

/// A mount that is undone on drop, whatever happened.
struct Mounted {
    mount: Option<FuseMount>,
    path: PathBuf,
    _dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

impl Mounted {
    fn new(fs: Arc<DatasetFs>) -> Self {
        Self::with(fs, &FuseOptions { fsname: "aetherfs:test/ds".into(), ..FuseOptions::default() })
    }

    fn with(fs: Arc<DatasetFs>, opts: &FuseOptions) -> Self {
        require_fuse();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().canonicalize().unwrap().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let rt = runtime();
        let mount = fuse::mount(fs, &path, opts, rt.handle().clone()).unwrap();
        assert_eq!(mount.mountpoint(), path);
        Self { mount: Some(mount), path, _dir: dir, _rt: rt }
    }

    fn stats(&self) -> FuseStats {
        self.mount.as_ref().unwrap().stats()
    }

    fn unmount(&mut self) {
        self.mount.take().unwrap().unmount().unwrap();
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            let _ = m.unmount();
        }
        force_unmount(&self.path);
    }
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    aetherfs_util::pseudo_random(len, seed)
}

fn write(root: &Path, rel: &str, data: &[u8], mode: u32) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

const BIG: usize = (8 << 20) + 12_345;
const SMALL_FILES: usize = 16;

fn small(i: usize) -> Vec<u8> {
    noise(1000 * i * i + 17, 100 + i as u64)
}

/// Nested dirs, an empty file and dir, symlinks (relative, to a dir,
/// dangling), an executable, non-ASCII names, a multi-MiB random file and
/// sixteen small files. Returns the source root.
fn build_tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    std::fs::set_permissions(r, std::fs::Permissions::from_mode(0o755)).unwrap();
    write(r, "a/hello.txt", b"hello, world\n", 0o644);
    write(r, "a/b/c/deep.txt", b"deep down\n", 0o600);
    write(r, "empty.txt", b"", 0o644);
    write(r, "bin/run.sh", b"#!/bin/sh\necho hi\n", 0o755);
    write(r, "donn\u{e9}es/r\u{e9}sum\u{e9}.txt", "\u{e7}\u{e0} et l\u{e0}\n".as_bytes(), 0o640);
    write(r, "\u{65e5}\u{672c}\u{8a9e}.txt", "\u{3053}\u{3093}\u{306b}\u{3061}\u{306f}\n".as_bytes(), 0o444);
    write(r, "with space & \u{1f680}.bin", &noise(70_000, 7), 0o644);
    write(r, "big.bin", &noise(BIG, 42), 0o644);
    for i in 0..SMALL_FILES {
        write(r, &format!("small/f{i:02}"), &small(i), 0o644);
    }
    std::fs::create_dir(r.join("emptydir")).unwrap();
    std::os::unix::fs::symlink("a/hello.txt", r.join("link")).unwrap();
    std::os::unix::fs::symlink("a", r.join("alink")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", r.join("dangling")).unwrap();
    std::os::unix::fs::symlink("../hello.txt", r.join("a/b/up")).unwrap();
    for d in ["a", "a/b", "a/b/c", "bin", "donn\u{e9}es", "small", "emptydir"] {
        std::fs::set_permissions(r.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    t
}

fn sqlite(db: &str, sql: &str) -> String {
    let out = Command::new("sqlite3").arg(db).arg(sql).output().expect("sqlite3 is needed (apt-get install sqlite3)");
    assert!(out.status.success(), "sqlite3 {db}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn sh(script: &str, arg: &Path) -> String {
    let out = Command::new("sh").arg("-c").arg(script).arg("sh").arg(arg).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Every path under `root`: (kind, permission bits, symlink target, size).
fn walk(root: &Path) -> BTreeMap<PathBuf, (char, u32, Option<PathBuf>, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let ft = m.file_type();
            let kind = if ft.is_symlink() {
                'l'
            } else if ft.is_dir() {
                stack.push(p.clone());
                'd'
            } else {
                'f'
            };
            let target = ft.is_symlink().then(|| std::fs::read_link(&p).unwrap());
            let size = if ft.is_file() { m.len() } else { 0 };
            out.insert(rel, (kind, m.mode() & 0o7777, target, size));
        }
    }
    out
}

#[test]
fn tree_and_sqlite_read_back_exactly() {
    let src = build_tree();
    let s = src.path();
    let db = s.join("db.sqlite");
    sqlite(
        db.to_str().unwrap(),
        "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000)
         INSERT INTO t SELECT x, 'name-' || x || '-\u{fc}', x * 1.5 FROM c;
         CREATE INDEX t_name ON t(name);",
    );
    let (fs, source) = fs_of_dir(s).unwrap();
    let m = Mounted::new(fs.clone());
    let mnt = &m.path;

    // Immutable files keep the page cache across opens: a second pass over
    // the big file, through a new open, never reaches the chunk source.
    let expected = std::fs::read(s.join("big.bin")).unwrap();
    assert_eq!(std::fs::read(mnt.join("big.bin")).unwrap(), expected);
    let calls = source.calls.load(Ordering::Relaxed);
    assert!(calls > 0);
    let mut again = Vec::new();
    File::open(mnt.join("big.bin")).unwrap().read_to_end(&mut again).unwrap();
    assert!(again == expected);
    assert_eq!(source.calls.load(Ordering::Relaxed), calls, "the second read was not served from the page cache");
    let stats = m.stats();
    eprintln!("after reading big.bin: {stats:?}");
    assert!(stats.max_read >= 128 << 10, "reads of {} bytes: large reads were not negotiated", stats.max_read);

    // The whole tree, byte for byte, and its shape.
    let diff = Command::new("diff").args(["-r", "--no-dereference"]).arg(s).arg(mnt).output().unwrap();
    assert!(
        diff.status.success() && diff.stdout.is_empty(),
        "diff -r: {}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );
    assert_eq!(walk(mnt), walk(s));
    assert_eq!(sh("find \"$1\" | wc -l", mnt), sh("find \"$1\" | wc -l", s));

    // Attributes: owned by the mounting process, mtime from the version.
    let me = std::fs::metadata("/proc/self").unwrap();
    let hello = std::fs::metadata(mnt.join("a/hello.txt")).unwrap();
    assert_eq!((hello.uid(), hello.gid()), (me.uid(), me.gid()));
    assert_eq!(hello.modified().unwrap(), fs.lookup_path("a/hello.txt").unwrap().mtime);
    assert_eq!(hello.blocks(), 1);
    assert!(hello.blksize() >= 4096);
    assert_eq!(std::fs::metadata(mnt.join("a")).unwrap().nlink(), 3);
    assert_eq!(std::fs::read_link(mnt.join("link")).unwrap(), Path::new("a/hello.txt"));
    assert_eq!(std::fs::read(mnt.join("alink/hello.txt")).unwrap(), b"hello, world\n");
    assert_eq!(std::fs::read(mnt.join("a/b/up")).unwrap(), b"hello, world\n");
    assert_eq!(std::fs::metadata(mnt.join("dangling")).unwrap_err().raw_os_error(), Some(libc::ENOENT));
    assert_eq!(std::fs::metadata(mnt.join("nope")).unwrap_err().raw_os_error(), Some(libc::ENOENT));
    assert_eq!(std::fs::metadata(mnt.join("a/hello.txt/x")).unwrap_err().raw_os_error(), Some(libc::ENOTDIR));
    assert_eq!(Command::new(mnt.join("bin/run.sh")).output().unwrap().stdout, b"hi\n");

    // How the mount presents itself.
    let (fstype, source_name, options) = mount_at(mnt).unwrap();
    assert_eq!((fstype.as_str(), source_name.as_str()), ("fuse.aetherfs", "aetherfs:test/ds"));
    assert!(options.split(',').any(|o| o == "ro"), "mount options {options}");
    let statfs = sh("stat -f -c '%l %c %S %b' \"$1\"", mnt);
    let f: Vec<u64> = statfs.split(' ').map(|x| x.parse().unwrap()).collect();
    assert_eq!(f[0], 255, "namelen");
    assert_eq!(f[1], walk(s).len() as u64 + 1, "files: every node and the root");
    assert!(f[3] * f[2] >= BIG as u64, "blocks {} of {} bytes", f[3], f[2]);

    // SQLite opens the database on the mount, plainly and as immutable.
    let query = "SELECT id, name, score FROM t WHERE id % 997 = 0 ORDER BY id;
                 SELECT count(*), sum(score) FROM t WHERE name LIKE 'name-1%';
                 PRAGMA integrity_check;";
    let want = sqlite(db.to_str().unwrap(), query);
    assert!(want.lines().count() > 20 && want.ends_with("ok\n"), "{want}");
    let on_mount = mnt.join("db.sqlite");
    assert_eq!(sqlite(on_mount.to_str().unwrap(), query), want);
    assert_eq!(sqlite(&format!("file:{}?immutable=1", on_mount.display()), query), want);
    assert_eq!(sqlite(&format!("file:{}?mode=ro", on_mount.display()), query), want);
    // SQLite left nothing behind in the source either (no journal).
    assert_eq!(walk(mnt), walk(s));
}

#[test]
fn every_write_fails_with_erofs() {
    let src = build_tree();
    let (fs, _) = fs_of_dir(src.path()).unwrap();
    let m = Mounted::new(fs);
    let p = &m.path;
    fn erofs<T: std::fmt::Debug>(r: std::io::Result<T>, what: &str) {
        match r {
            Ok(v) => panic!("{what} succeeded on a read-only mount: {v:?}"),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}"),
        }
    }
    let hello = p.join("a/hello.txt");
    erofs(File::create(p.join("new.txt")), "create");
    erofs(File::create(&hello), "create over an existing file");
    erofs(OpenOptions::new().write(true).open(&hello), "open O_WRONLY");
    erofs(OpenOptions::new().read(true).write(true).open(&hello), "open O_RDWR");
    erofs(OpenOptions::new().append(true).open(&hello), "open O_APPEND");
    erofs(OpenOptions::new().write(true).truncate(true).open(&hello), "open O_TRUNC");
    erofs(std::fs::rename(&hello, p.join("a/renamed.txt")), "rename");
    erofs(std::fs::rename(p.join("a"), p.join("z")), "rename a directory");
    erofs(std::fs::remove_file(&hello), "unlink");
    erofs(std::fs::remove_file(p.join("link")), "unlink a symlink");
    erofs(std::fs::remove_dir(p.join("emptydir")), "rmdir");
    erofs(std::fs::create_dir(p.join("newdir")), "mkdir");
    erofs(std::fs::set_permissions(&hello, std::fs::Permissions::from_mode(0o777)), "chmod");
    erofs(std::os::unix::fs::chown(&hello, Some(1), Some(1)), "chown");
    erofs(std::os::unix::fs::symlink("x", p.join("newlink")), "symlink");
    erofs(std::fs::hard_link(&hello, p.join("hard")), "link");
    for cmd in [vec!["truncate", "-s", "0"], vec!["touch"], vec!["setfattr", "-n", "user.x", "-v", "1"]] {
        let Ok(out) = Command::new(cmd[0]).args(&cmd[1..]).arg(&hello).output() else { continue };
        assert!(!out.status.success(), "{cmd:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Read-only file system"), "{cmd:?}: {err}");
    }
    // Nothing changed.
    assert_eq!(std::fs::read(&hello).unwrap(), b"hello, world\n");
    assert_eq!(walk(p), walk(src.path()));
}

#[test]
fn sixteen_concurrent_readers_get_the_right_bytes() {
    let src = build_tree();
    let s = src.path();
    let big = std::fs::read(s.join("big.bin")).unwrap();
    let (fs, _) = fs_of_dir(s).unwrap();
    let m = Mounted::with(fs, &FuseOptions { threads: 4, ..FuseOptions::default() });
    let mnt = &m.path;
    std::thread::scope(|scope| {
        for t in 0..16usize {
            let big = &big;
            scope.spawn(move || {
                if t % 2 == 0 {
                    // Different, unaligned ranges of the big file, each over a MiB.
                    let f = File::open(mnt.join("big.bin")).unwrap();
                    for k in 0..4 {
                        let off = (t * 517_003 + k * 1_234_567) % (BIG - 1_100_000);
                        let mut buf = vec![0u8; 1_048_576 + 4097];
                        f.read_exact_at(&mut buf, off as u64).unwrap();
                        assert!(buf == big[off..off + buf.len()], "reader {t}: bytes at {off} differ");
                    }
                } else {
                    for i in [t, (t + 5) % SMALL_FILES] {
                        let got = std::fs::read(mnt.join(format!("small/f{i:02}"))).unwrap();
                        assert!(got == small(i), "reader {t}: small/f{i:02} differs");
                    }
                }
            });
        }
    });
    // The end of the big file, and past it.
    let f = File::open(mnt.join("big.bin")).unwrap();
    let mut tail = vec![0u8; 10_000];
    let n = f.read_at(&mut tail, (BIG - 100) as u64).unwrap();
    assert_eq!(&tail[..n], &big[BIG - 100..]);
    assert_eq!(f.read_at(&mut tail, BIG as u64 + 5).unwrap(), 0);
}

#[test]
fn a_slow_fetch_does_not_stall_other_readers() {
    let src = build_tree();
    let (version, source, _) = version_of_dir(src.path()).unwrap();
    let faulty = Arc::new(FaultySource::new(source));
    let m = Mounted::new(Arc::new(DatasetFs::new(version, faulty.clone())));
    let delay = 300u64;
    faulty.delay_ms.store(delay, Ordering::Relaxed);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for i in 0..SMALL_FILES {
            let path = m.path.join(format!("small/f{i:02}"));
            scope.spawn(move || assert!(std::fs::read(path).unwrap() == small(i)));
        }
    });
    let took = start.elapsed();
    eprintln!("{SMALL_FILES} first reads with a {delay} ms source took {took:?}");
    // One after another they would take 16 x 300 ms = 4.8 s.
    assert!(took < Duration::from_millis(delay * SMALL_FILES as u64 / 3), "readers were serialized: {took:?}");
}

#[test]
fn ten_thousand_files_list_completely_in_order() {
    require_fuse();
    let src = tempfile::tempdir().unwrap();
    let many = src.path().join("many");
    std::fs::create_dir(&many).unwrap();
    let names: Vec<String> = (0..10_000).map(|i| format!("file-{i:05}.txt")).collect();
    for (i, n) in names.iter().enumerate() {
        std::fs::write(many.join(n), i.to_string()).unwrap();
    }
    let (fs, _) = fs_of_dir(src.path()).unwrap();
    let m = Mounted::new(fs);
    let dir = m.path.join("many");
    assert_eq!(sh("ls \"$1\" | wc -l", &dir), "10000");
    assert_eq!(sh("ls -f \"$1\" | wc -l", &dir), "10002");
    assert_eq!(sh("ls -l \"$1\" | grep -c '^-r'", &dir), "10000");
    assert_eq!(sh("find \"$1\" -type f | wc -l", &dir), "10000");
    // Directory order is name order, each name once, on every pass.
    for _ in 0..2 {
        let listed: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(listed == names, "listing out of order or incomplete ({} entries)", listed.len());
    }
    assert_eq!(std::fs::read_to_string(dir.join("file-09999.txt")).unwrap(), "9999");
}

#[test]
fn unmount_leaves_an_empty_dir_even_when_busy() {
    let src = build_tree();
    let (fs, _) = fs_of_dir(src.path()).unwrap();
    let mut m = Mounted::new(fs.clone());
    let mp = m.path.clone();
    assert!(mount_at(&mp).is_some());
    m.unmount();
    assert!(mount_at(&mp).is_none(), "still in /proc/self/mountinfo after unmount()");
    assert!(std::fs::metadata(&mp).unwrap().is_dir());
    assert_eq!(std::fs::read_dir(&mp).unwrap().count(), 0);

    // With a file still open, unmount detaches the mount: the path is free,
    // and the open file keeps reading until it is closed.
    let mut m = Mounted::new(fs.clone());
    let mp = m.path.clone();
    let mut held = File::open(mp.join("a/hello.txt")).unwrap();
    m.unmount();
    assert!(mount_at(&mp).is_none(), "busy mount not detached");
    assert_eq!(std::fs::read_dir(&mp).unwrap().count(), 0);
    let mut s = String::new();
    held.read_to_string(&mut s).unwrap();
    assert_eq!(s, "hello, world\n");
    drop(held);

    // Mounting where it cannot.
    let rt = runtime();
    let err = fuse::mount(fs.clone(), &mp.join("missing"), &FuseOptions::default(), rt.handle().clone()).unwrap_err();
    assert!(matches!(err, FuseError::Mount { .. }), "{err}");
    let file = src.path().join("a/hello.txt");
    let err = fuse::mount(fs, &file, &FuseOptions::default(), rt.handle().clone()).unwrap_err();
    assert!(matches!(err, FuseError::NotADirectory(_)), "{err}");
}

const CHILD_ENV: &str = "AETHERFS_FUSE_TEST_CHILD";
const CHILD_READY: &str = "aetherfs-fuse-child-mounted";

/// Not a test by itself: `a_stale_mount_is_cleared` runs this binary again
/// with `CHILD_ENV` set, and this mounts and waits to be killed. Without the
/// variable it returns at once.
#[test]
fn child_mount_helper() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let (src, mnt) = spec.split_once('\n').unwrap();
    let (fs, _) = fs_of_dir(Path::new(src)).unwrap();
    let rt = runtime();
    let m = fuse::mount(fs, Path::new(mnt), &FuseOptions::default(), rt.handle().clone()).unwrap();
    println!("{CHILD_READY}");
    std::io::stdout().flush().unwrap();
    // Never unmount: the parent SIGKILLs this process.
    std::mem::forget(m);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

struct ChildGuard {
    child: Option<Child>,
    path: PathBuf,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        force_unmount(&self.path);
    }
}

#[test]
fn a_stale_mount_is_cleared() {
    require_fuse();
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "hello.txt", b"hi\n", 0o644);
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().canonicalize().unwrap().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    assert!(!fuse::clear_stale_mount(&mnt).unwrap(), "a clean dir is not a stale mount");

    let mut guard = ChildGuard { child: None, path: mnt.clone() };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["fuse::child_mount_helper", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{}\n{}", src.path().display(), mnt.display()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    guard.child = Some(child);
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines.next().expect("the child exited before mounting").unwrap();
        if line.contains(CHILD_READY) {
            break;
        }
    }
    assert_eq!(std::fs::read(mnt.join("hello.txt")).unwrap(), b"hi\n");
    let live = fuse::clear_stale_mount(&mnt);
    assert!(matches!(live, Err(FuseError::AlreadyMounted(_))), "a live mount was not left alone: {live:?}");

    // The server dies without unmounting: the kernel answers ENOTCONN.
    let mut child = guard.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let err = std::fs::read_dir(&mnt).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    assert!(mount_at(&mnt).is_some());

    assert!(fuse::clear_stale_mount(&mnt).unwrap());
    assert!(mount_at(&mnt).is_none());
    assert_eq!(std::fs::read_dir(&mnt).unwrap().count(), 0);
    assert!(!fuse::clear_stale_mount(&mnt).unwrap());
}

#[test]
fn source_errors_surface_as_eio_and_recover() {
    let src = build_tree();
    let (version, source, _) = version_of_dir(src.path()).unwrap();
    let faulty = Arc::new(FaultySource::new(source));
    let m = Mounted::new(Arc::new(DatasetFs::new(version, faulty.clone())));
    let hello = m.path.join("a/hello.txt");
    let big = m.path.join("big.bin");
    faulty.fail.store(true, Ordering::Relaxed);
    assert_eq!(std::fs::read(&hello).unwrap_err().raw_os_error(), Some(libc::EIO));
    assert_eq!(std::fs::read(&big).unwrap_err().raw_os_error(), Some(libc::EIO));
    let cat = Command::new("cat").arg(&hello).output().unwrap();
    assert!(!cat.status.success());
    assert!(String::from_utf8_lossy(&cat.stderr).contains("Input/output error"));
    // Metadata needs no chunk data: still fine.
    assert_eq!(std::fs::metadata(&big).unwrap().len(), BIG as u64);
    assert!(m.stats().read_errors >= 2);

    faulty.fail.store(false, Ordering::Relaxed);
    assert_eq!(std::fs::read(&hello).unwrap(), b"hello, world\n");
    assert!(std::fs::read(&big).unwrap() == std::fs::read(src.path().join("big.bin")).unwrap());
    let cat = Command::new("cat").arg(&hello).output().unwrap();
    assert_eq!(cat.stdout, b"hello, world\n");
}

/// Serves chunks of two versions.
struct Both(MemorySource, MemorySource);

impl ChunkSource for Both {
    fn read<'a>(
        &'a self,
        want: &'a [ChunkRef],
        ahead: &'a [ChunkRef],
    ) -> BoxFuture<'a, Result<Vec<Bytes>, SourceError>> {
        Box::pin(async move {
            match self.0.read(want, ahead).await {
                Ok(v) => Ok(v),
                Err(_) => self.1.read(want, ahead).await,
            }
        })
    }
}

#[test]
fn a_version_switch_shows_at_the_root_and_spares_open_files() {
    let one = tempfile::tempdir().unwrap();
    write(one.path(), "top.txt", b"one\n", 0o644);
    write(one.path(), "old-only.txt", b"old\n", 0o644);
    write(one.path(), "dir/inner.txt", b"inner v1\n", 0o644);
    let two = tempfile::tempdir().unwrap();
    write(two.path(), "top.txt", b"two, longer\n", 0o644);
    write(two.path(), "new-only.txt", b"new\n", 0o644);
    write(two.path(), "dir/inner.txt", b"inner v2\n", 0o644);
    let (v1, s1, _) = version_of_dir(one.path()).unwrap();
    let (v1_again, _, _) = version_of_dir(one.path()).unwrap();
    let (v2, s2, _) = version_of_dir(two.path()).unwrap();
    let fs = Arc::new(DatasetFs::new(v1, Arc::new(Both(s1, s2))));
    let m = Mounted::new(fs.clone());
    let p = &m.path;
    let names = || -> Vec<String> {
        let mut n: Vec<String> =
            std::fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        n.sort();
        n
    };

    assert_eq!(std::fs::read_to_string(p.join("top.txt")).unwrap(), "one\n");
    assert_eq!(names(), ["dir", "old-only.txt", "top.txt"]);
    let mut held_top = File::open(p.join("top.txt")).unwrap();
    let mut held_inner = File::open(p.join("dir/inner.txt")).unwrap();

    let previous = fs.current();
    fs.switch(v2);
    m.mount.as_ref().unwrap().notify_switch(&previous).unwrap();
    // At once, without waiting for any TTL.
    assert_eq!(std::fs::read_to_string(p.join("top.txt")).unwrap(), "two, longer\n");
    assert_eq!(std::fs::read_to_string(p.join("dir/inner.txt")).unwrap(), "inner v2\n");
    assert_eq!(names(), ["dir", "new-only.txt", "top.txt"]);
    assert!(std::fs::metadata(p.join("old-only.txt")).is_err());
    // Files opened before the switch keep their version.
    let mut s = String::new();
    held_top.read_to_string(&mut s).unwrap();
    assert_eq!(s, "one\n");
    s.clear();
    held_inner.read_to_string(&mut s).unwrap();
    assert_eq!(s, "inner v1\n");

    // Without a notification the root catches up within ROOT_TTL.
    fs.switch(v1_again);
    std::thread::sleep(ROOT_TTL + Duration::from_millis(300));
    assert_eq!(std::fs::read_to_string(p.join("top.txt")).unwrap(), "one\n");
    assert_eq!(names(), ["dir", "old-only.txt", "top.txt"]);
}
