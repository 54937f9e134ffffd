//! The whole read path: a hub, the `aetherfs mount` / `serve` / `demo`
//! processes reading through it, and real clients (the kernel through FUSE,
//! sqlite3, libnfs, rclone).

use std::process::Command;

use crate::harness::{
    Hub, assert_same_tree, http_get, is_mounted, make_tree, require, run_ok, sqlite, start_daemon, terminate,
};

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
        .args(["--webdav", "127.0.0.1:0", "--nfs", "127.0.0.1:0", "--story-after", "1"])
        .env("AETHERFS_LOG", "warn");
    let (proc, lines) = start_daemon(
        cmd,
        &["WebDAV: ", "Ctrl-C", "new data ", "    WebDAV ", "    FUSE ", "    NFSv3 ", "still reads v1", "Web page: "],
    );
    let webdav = lines[0].split("WebDAV: ").nth(1).unwrap().trim().to_string();
    let web = lines[7].split("Web page: ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let (status, page) = http_get(web.trim_end_matches('/'), "/").unwrap();
    assert!(status == 200 && page.contains("examples/geoip"), "the demo's web page: {status} {page}");
    let mnt = std::fs::canonicalize(dir.path()).unwrap().join("mnt");
    let rows = sqlite(&mnt.join("geoip.sqlite"), "SELECT count(*) FROM blocks;");
    assert_eq!(rows.trim(), "2000");
    // The story: v2 adds 20 rows to cities.csv, latest moves, every view
    // follows, and a reader that opened the file before keeps v1.
    assert!(lines[2].contains(" of ") && lines[2].contains("%)"), "{}", lines[2]);
    for view in &lines[3..6] {
        assert!(view.contains(" 2020 rows") || view.contains("reads the same core"), "{view}");
    }
    assert!(lines[6].contains("reads v1: 2000 rows") && lines[6].contains("v2 has 2020"), "{}", lines[6]);
    let csv = std::fs::read_to_string(mnt.join("cities.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2021, "the FUSE mount serves v2");
    let out = run_ok(
        Command::new("rclone").env("RCLONE_CONFIG", "/dev/null").args(["ls", &format!(":webdav,url='{webdav}':")]),
    );
    assert!(out.contains("cities.csv") && out.contains("geoip.sqlite"), "{out}");
    assert!(terminate(proc).success());
    assert!(!is_mounted(&mnt));
}

/// `serve` reads through the agent's cache stack: a memory tier far smaller
/// than the file, then an encrypted disk cache (by default in a temporary
/// directory, removed at exit), so a second GET fetches nothing from the hub.
#[test]
fn serve_reads_a_file_bigger_than_memory_once_from_the_hub() {
    let hub = Hub::start("memory://");
    let src = tempfile::tempdir().unwrap();
    let big = crate::harness::random_bytes(12 << 20, 7);
    std::fs::write(src.path().join("big.bin"), &big).unwrap();
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/cached:v1"));
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = hub.cmd();
    cmd.args(["serve", "acme/cached:v1", "--webdav", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--cache-mib", "1"])
        .env("TMPDIR", tmp.path());
    let (proc, lines) = start_daemon(cmd, &["WebDAV on ", "admin on "]);
    let webdav = lines[0].split("WebDAV on ").nth(1).unwrap().trim().to_string();
    let admin = lines[1].split("admin on ").nth(1).unwrap().trim().to_string();
    let fetched = || {
        let m = run_ok(Command::new("curl").args(["-fsS", &format!("{admin}/metrics")]));
        let v = |name: &str| crate::harness::metric(&m, name).unwrap_or(0.0) as u64;
        (v("aetherfs_fetched_bytes_total"), v("aetherfs_cache_disk_hits_total"))
    };
    let get = || {
        let out = Command::new("curl").args(["-fsS", &format!("{webdav}big.bin")]).output().unwrap();
        assert!(out.status.success());
        assert!(out.stdout == big, "served bytes differ");
    };
    get();
    let (first, _) = fetched();
    assert!(first >= 12 << 20, "fetched {first}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1, "one temporary cache directory");
    get();
    let (second, disk_hits) = fetched();
    assert_eq!(second, first, "the second GET went to the hub again");
    assert!(disk_hits > 0, "served from the disk cache");
    assert!(terminate(proc).success());
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "the temporary cache was left behind");
}
