//! Shared by the NFS and WebDAV front-end tests: a sample tree with the
//! awkward cases, a child-process runner that cannot hang a test, and the
//! expected listing of a local tree.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Deterministic pseudo-random bytes (xorshift64*), incompressible enough
/// to give many distinct chunks.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    aetherfs_util::pseudo_random(len, seed)
}

/// A tree with a multi-MiB file, small, empty and non-ASCII files, an empty
/// directory, names with spaces, a symlink to a file and one to a directory
/// (both inside the tree), and `many` files in `many/`.
pub fn sample_tree(dir: &Path, many: usize) {
    let w = |p: &str, data: &[u8]| {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    w("big.bin", &random_bytes(5 * 1024 * 1024 + 123, 7));
    w("a/small.txt", b"hello\n");
    w("a/b/c/deep.txt", b"deep down\n");
    w("a b", b"space in the name\n");
    w("zero", b"");
    w("a/zero too", b"");
    w("héllo wörld ✓.txt", "non-ASCII ✓\n".as_bytes());
    w("日本語/ファイル.txt", "こんにちは\n".as_bytes());
    w("medium.bin", &random_bytes(300_000, 11));
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    std::fs::create_dir_all(dir.join("a/empty inside")).unwrap();
    std::os::unix::fs::symlink("a/small.txt", dir.join("link")).unwrap();
    std::os::unix::fs::symlink("b", dir.join("a/blink")).unwrap();
    if many > 0 {
        std::fs::create_dir_all(dir.join("many")).unwrap();
        for i in 0..many {
            std::fs::write(dir.join(format!("many/f{i:05}")), format!("{i}\n")).unwrap();
        }
    }
}

/// One node of a local tree as a listing shows it: type (`-`, `d`, `l`) and,
/// for files and symlinks, the size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub kind: char,
    pub size: Option<u64>,
}

/// Every path below `dir` (relative, `/`-separated), symlinks not followed.
pub fn walk(dir: &Path) -> BTreeMap<String, Expect> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().to_str().unwrap().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let x = if m.file_type().is_symlink() {
                Expect { kind: 'l', size: Some(std::fs::read_link(&p).unwrap().as_os_str().len() as u64) }
            } else if m.is_dir() {
                stack.push(p);
                Expect { kind: 'd', size: None }
            } else {
                Expect { kind: '-', size: Some(m.len()) }
            };
            out.insert(rel, x);
        }
    }
    out
}

/// Runs a command with no stdin, killing it after `timeout`.
pub fn run(cmd: &str, args: &[&str], timeout: Duration) -> Output {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd} could not start ({e}): run scripts/install-test-peers.sh"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        out.read_to_end(&mut b).map(|_| b).unwrap_or_default()
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        err.read_to_end(&mut b).map(|_| b).unwrap_or_default()
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd} {args:?} did not finish in {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out_t.join().unwrap(), stderr: err_t.join().unwrap() }
}

/// Like [`run`], but the command must succeed.
pub fn run_ok(cmd: &str, args: &[&str], timeout: Duration) -> Output {
    let o = run(cmd, args, timeout);
    assert!(
        o.status.success(),
        "{cmd} {args:?} failed: {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout).chars().take(2000).collect::<String>(),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

pub fn digest(b: &[u8]) -> String {
    aetherfs_format::Digest::of(b).to_string()
}
