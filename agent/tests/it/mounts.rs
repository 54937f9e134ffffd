//! The whole read path: a hub, the `aetherfs mount` / `serve` / `demo`
//! processes reading through it, and real clients (the kernel through FUSE,
//! sqlite3, libnfs, rclone).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::harness::{Hub, Proc, assert_same_tree, make_tree, require, run_ok, sqlite};

/// Starts a long-running `aetherfs` command and waits until its stderr (or
/// stdout) has printed a line containing each of `wanted`, returning those lines.
fn start_daemon(mut cmd: Command, wanted: &[&str]) -> (Proc, Vec<String>) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
    let mut child = cmd.spawn().expect("spawn aetherfs");
    let (tx, rx) = mpsc::channel::<String>();
    for stream in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                eprintln!("[daemon] {line}");
                let _ = tx.send(line);
            }
        });
    }
    let proc = Proc { child };
    let mut found = vec![String::new(); wanted.len()];
    while found.iter().any(String::is_empty) {
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("daemon did not become ready");
        for (i, w) in wanted.iter().enumerate() {
            if found[i].is_empty() && line.contains(w) {
                found[i] = line.clone();
            }
        }
    }
    (proc, found)
}

fn is_mounted(path: &Path) -> bool {
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(canon.to_str().unwrap_or_default()))
}

/// Sends SIGTERM and waits for the process to exit by itself.
fn terminate(mut p: Proc) -> std::process::ExitStatus {
    let pid = p.child.id().to_string();
    run_ok(Command::new("kill").args(["-TERM", &pid]));
    p.child.wait().expect("wait")
}

#[test]
fn fuse_mount_of_a_hub_version() {
    require("fusermount3");
    let hub = Hub::start("memory://");
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), 20 << 20);
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/mounted:v1"));
    let mnt = tempfile::tempdir().unwrap();
    let mut cmd = hub.cmd();
    cmd.args(["mount", "acme/mounted:v1"]).arg(mnt.path());
    let (proc, _) = start_daemon(cmd, &["mounted at"]);
    assert!(is_mounted(mnt.path()));
    assert_same_tree(src.path(), mnt.path());
    let q = "SELECT count(*), sum(v), max(name) FROM t;";
    assert_eq!(sqlite(&mnt.path().join("db/example.sqlite"), q), sqlite(&src.path().join("db/example.sqlite"), q));
    let err = std::fs::write(mnt.path().join("new.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc_erofs()));
    // SIGTERM unmounts cleanly.
    assert!(terminate(proc).success());
    assert!(!is_mounted(mnt.path()), "mount left behind");
}

fn libc_erofs() -> i32 {
    30 // EROFS on Linux
}

#[test]
fn webdav_and_nfs_serving_of_a_hub_version() {
    let rclone = require("rclone");
    let nfs_ls = require("nfs-ls");
    let nfs_cat = require("nfs-cat");
    let hub = Hub::start("memory://");
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), 8 << 20);
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/served:v1"));
    let mut cmd = hub.cmd();
    cmd.args(["serve", "acme/served:v1", "--webdav", "127.0.0.1:0", "--nfs", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    let (proc, lines) = start_daemon(cmd, &["WebDAV on ", "NFSv3 on ", "admin on "]);
    let webdav = lines[0].split("WebDAV on ").nth(1).unwrap().trim().to_string();
    let nfs = lines[1].split("NFSv3 on ").nth(1).unwrap().trim().to_string();

    let remote = format!(":webdav,url='{webdav}':");
    let out = Command::new(&rclone)
        .env("RCLONE_CONFIG", "/dev/null")
        .args(["check", "--download", "--one-way"])
        .arg(src.path())
        .arg(&remote)
        .output()
        .unwrap();
    assert!(out.status.success(), "rclone check: {}", String::from_utf8_lossy(&out.stderr));

    let out = Command::new(&nfs_ls).arg("-R").arg(&nfs).output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "nfs-ls: {}", String::from_utf8_lossy(&out.stderr));
    for name in ["README.txt", "empty.bin", "été-日本語.txt", "leaf-link", "empty-dir", "random.bin"] {
        assert!(listing.contains(name), "nfs-ls is missing {name}:\n{listing}");
    }
    let file_url = nfs.replacen('?', "nested/deeper/deepest/leaf.csv?", 1);
    let out = Command::new(&nfs_cat).arg(&file_url).output().unwrap();
    assert_eq!(out.stdout, std::fs::read(src.path().join("nested/deeper/deepest/leaf.csv")).unwrap(), "{file_url}");

    // The admin endpoint counts what was fetched from the hub.
    let admin = lines[2].split("admin on ").nth(1).unwrap().trim().to_string();
    let metrics = run_ok(Command::new("curl").args(["-fsS", &format!("{admin}/metrics")]));
    let fetched: u64 = metrics
        .lines()
        .find(|l| l.starts_with("aetherfs_fetched_bytes_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(fetched > 8 << 20, "fetched {fetched}");
    assert!(terminate(proc).success());
}

#[test]
fn the_demo_serves_the_examples() {
    require("fusermount3");
    require("rclone");
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(crate::harness::BIN);
    cmd.arg("demo")
        .arg("--dir")
        .arg(dir.path())
        .args(["--webdav", "127.0.0.1:0", "--nfs", "127.0.0.1:0"])
        .env("AETHERFS_LOG", "warn");
    let (proc, lines) = start_daemon(cmd, &["WebDAV: ", "Ctrl-C"]);
    let webdav = lines[0].split("WebDAV: ").nth(1).unwrap().trim().to_string();
    let mnt = std::fs::canonicalize(dir.path()).unwrap().join("mnt");
    let rows = sqlite(&mnt.join("geoip.sqlite"), "SELECT count(*) FROM blocks;");
    assert_eq!(rows.trim(), "2000");
    let out = run_ok(
        Command::new("rclone").env("RCLONE_CONFIG", "/dev/null").args(["ls", &format!(":webdav,url='{webdav}':")]),
    );
    assert!(out.contains("cities.csv") && out.contains("geoip.sqlite"), "{out}");
    assert!(terminate(proc).success());
    assert!(!is_mounted(&mnt));
}
