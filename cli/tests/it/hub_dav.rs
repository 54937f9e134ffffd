//! The hub's own WebDAV (`/dav/…`): every dataset the caller may read, by tag
//! and by digest, for rclone and davfs2 with no agent; access rules hold.

use std::path::Path;
use std::process::Command;

use crate::auth::{add_user, seed, write_config};
use crate::harness::{AuthHub, Hub, random_bytes, require, run_ok, sqlite};

fn rclone(args: &[&str]) -> std::process::Output {
    Command::new("rclone").env("RCLONE_CONFIG", "/dev/null").args(args).output().expect("rclone runs")
}

fn curl(args: &[&str]) -> (u16, Vec<u8>) {
    let mut a = vec!["-s", "-o", "/dev/stderr", "-w", "%{http_code}"];
    a.extend_from_slice(args);
    let out = Command::new("curl").args(&a).output().expect("curl runs");
    (String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0), out.stderr)
}

fn tree(root: &Path, seed: u64) {
    std::fs::create_dir_all(root.join("tables/deep")).unwrap();
    std::fs::write(root.join("README.txt"), format!("version {seed}\n")).unwrap();
    std::fs::write(root.join("tables/deep/big.bin"), random_bytes(3 << 20, seed)).unwrap();
    std::fs::write(root.join("tables/small.csv"), b"id,name\n1,a\n").unwrap();
    sqlite(&root.join("db.sqlite"), "CREATE TABLE t(v INTEGER); INSERT INTO t VALUES (1), (2), (3);");
}

/// Browse from `/dav/` down to the files of a tag and of a digest with
/// rclone, compare a version byte for byte (rclone check --download), read a
/// range, mount it with davfs2 and query its SQLite database; writes are 405.
#[test]
fn the_hub_serves_every_dataset_over_webdav() {
    require("rclone");
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let src = tempfile::tempdir().unwrap();
    tree(src.path(), 1);
    let out = run_ok(hub.cmd().args(["push", "-q"]).arg(src.path()).args(["acme/geo:v1", "--tag", "latest"]));
    let v1 = out.trim().rsplit_once('@').unwrap().1.to_string();
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("x.txt"), b"x\n").unwrap();
    run_ok(hub.cmd().args(["push", "-q"]).arg(other.path()).arg("acme/other/deeper:v1"));

    let dav = format!("{}/dav/", hub.url);
    let o = rclone(&["lsf", "-R", &format!(":webdav,url='{dav}':")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listing = String::from_utf8(o.stdout).unwrap();
    for want in [
        "acme/",
        "acme/geo/",
        "acme/geo/latest/README.txt",
        "acme/geo/v1/tables/deep/big.bin",
        &format!("acme/geo/@{v1}/db.sqlite"),
        "acme/other/deeper/v1/x.txt",
    ] {
        assert!(listing.lines().any(|l| l == want), "{want} missing from:\n{listing}");
    }

    for version in ["v1", &format!("@{v1}")] {
        let remote = format!(":webdav,url='{dav}acme/geo/{version}/':");
        let o = rclone(&["check", "--download", src.path().to_str().unwrap(), &remote]);
        assert!(o.status.success(), "{version}: {}", String::from_utf8_lossy(&o.stderr));
    }

    let big = std::fs::read(src.path().join("tables/deep/big.bin")).unwrap();
    let (status, body) = curl(&["-r", "1000000-1000099", &format!("{dav}acme/geo/latest/tables/deep/big.bin")]);
    assert_eq!((status, body.as_slice()), (206, &big[1_000_000..1_000_100]));
    let (status, _) = curl(&["-X", "PUT", "--data", "x", &format!("{dav}acme/geo/latest/new.txt")]);
    assert_eq!(status, 405);
    let (status, _) = curl(&[&format!("{dav}acme/geo/nosuchtag/README.txt")]);
    assert_eq!(status, 404);

    davfs2_reads(&format!("{dav}acme/geo/latest/"), src.path());
}

/// davfs2, where this machine can mount (root and /dev/fuse).
fn davfs2_reads(url: &str, src: &Path) {
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    if !root || !Path::new("/dev/fuse").exists() || !Path::new("/usr/sbin/mount.davfs").exists() {
        eprintln!("SKIPPED the davfs2 part: mounting needs root, /dev/fuse and mount.davfs");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let mnt = t.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let conf = t.path().join("davfs2.conf");
    // buf_size 64: on Linux >= 6.16 davfs2's default makes readdir fail.
    std::fs::write(&conf, "use_locks 0\nask_auth 0\ndelay_upload 0\ngui_optimize 0\nbuf_size 64\n").unwrap();
    let opts = format!("ro,conf={}", conf.display());
    let m = Command::new("mount.davfs").args(["-o", &opts, url, mnt.to_str().unwrap()]).output().unwrap();
    assert!(m.status.success(), "mount.davfs: {}", String::from_utf8_lossy(&m.stderr));
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let p = self.0.to_str().unwrap();
            if !Command::new("umount").arg(p).status().is_ok_and(|s| s.success()) {
                let _ = Command::new("umount").args(["-l", p]).status();
            }
        }
    }
    let _m = Unmount(mnt.clone());
    let o = Command::new("diff").args(["-r", "-x", "lost+found"]).arg(src).arg(&mnt).output().unwrap();
    assert!(
        o.status.success(),
        "diff -r: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(sqlite(&mnt.join("db.sqlite"), "SELECT sum(v) FROM t;").trim(), "6");
}

/// With access rules: a reader sees and reads only the datasets it may read;
/// another dataset is 403, no credentials 401.
#[test]
fn hub_webdav_honours_access_rules() {
    require("rclone");
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    add_user(&users, "alice", "team-a", "pw-alice");
    let storage = format!("file://{}", dir.path().join("hub").display());
    seed(&storage, &["team-a/x", "team-b/y"]);
    let config = write_config(
        dir.path(),
        "[basic]\nusers_file = \"users\"\n[[rule]]\ndatasets = \"team-a/**\"\nread = [\"group:team-a\"]\n",
    );
    let hub = AuthHub::start(&storage, &["--auth-config", &config]);
    let dav = format!("{}/dav/", hub.url);
    let pass = String::from_utf8(rclone(&["obscure", "pw-alice"]).stdout).unwrap();
    let remote = format!(":webdav,url='{dav}',user='alice',pass='{}':", pass.trim());
    let o = rclone(&["lsf", "-R", &remote]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listing = String::from_utf8(o.stdout).unwrap();
    assert!(listing.lines().any(|l| l == "team-a/x/v1/data.txt"), "{listing}");
    assert!(!listing.contains("team-b"), "a dataset alice may not read is listed:\n{listing}");

    let (status, body) = curl(&["-u", "alice:pw-alice", &format!("{dav}team-a/x/v1/data.txt")]);
    assert_eq!((status, String::from_utf8_lossy(&body).as_ref()), (200, "version of team-a/x #0\n"));
    let (status, _) = curl(&["-u", "alice:pw-alice", &format!("{dav}team-b/y/v1/data.txt")]);
    assert_eq!(status, 403, "another team's dataset");
    let (status, _) = curl(&["-u", "alice:pw-alice", "-X", "PROPFIND", "-H", "Depth: 1", &format!("{dav}team-b/y/")]);
    assert_eq!(status, 403);
    let (status, _) = curl(&[&format!("{dav}team-a/x/v1/data.txt")]);
    assert_eq!(status, 401, "no credentials");
    let (status, _) = curl(&["-u", "alice:wrong", &format!("{dav}team-a/x/v1/data.txt")]);
    assert_eq!(status, 401, "a wrong password");
}
