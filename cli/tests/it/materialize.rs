//! Materialize mode end to end: `aetherfs agent` writing each version of a
//! followed tag under `DIR/.versions/` behind the `DIR/current` symlink,
//! read by real readers (`sqlite3`, plain opens), through kills, a full
//! disk and a read-only filesystem.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{Agent, Hub, random_bytes, require, run_ok, sqlite};

/// An agent config with one materialized mount of `reference` at `dir`; with
/// `hook`, an on_switch command appending to that file; with `admin_token`,
/// the admin endpoint's token file.
fn config(work: &Path, reference: &str, dir: &Path, hook: Option<&Path>, admin_token: Option<&Path>) -> PathBuf {
    let hook = hook
        .map(|marker| {
            let script = format!("echo \"$AETHERFS_DIGEST $AETHERFS_PATH\" >> {}", marker.display());
            format!("[mount.on_switch]\ncommand = [\"sh\", \"-c\", {script:?}]\n")
        })
        .unwrap_or_default();
    let token = admin_token.map(|t| format!("token_file = {:?}\n", t.display().to_string())).unwrap_or_default();
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{token}\
         [cache]\ndir = {:?}\nmax_size = \"64MiB\"\nmemory_size = \"1MiB\"\n\
         [fetch]\npoll_secs = 5\n\
         [[mount]]\nref = {reference:?}\nmaterialize = {:?}\nkeep_versions = 2\n{hook}",
        work.join("cache").display().to_string(),
        dir.display().to_string(),
    );
    let p = work.join("agent.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn status(agent: &Agent) -> serde_json::Value {
    agent.mounts()["mounts"][0].clone()
}

fn digest(agent: &Agent) -> String {
    status(agent)["digest"].as_str().unwrap().to_string()
}

/// Waits until the mount serves something other than `old`.
fn wait_switch(agent: &Agent, old: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = digest(agent);
        if d != old {
            return d;
        }
        assert!(Instant::now() < deadline, "the agent never switched from {old}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the mount reports an error; returns it.
fn wait_error(agent: &Agent) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(e) = status(agent)["last_error"].as_str() {
            return e.to_string();
        }
        assert!(Instant::now() < deadline, "no error was reported");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The version directory `current` points at, by digest.
fn current(dir: &Path) -> String {
    let t = std::fs::read_link(dir.join("current")).expect("current is a symlink");
    t.file_name().unwrap().to_string_lossy().into_owned()
}

/// Same bytes, and the same modes without write bits.
fn assert_materialized(src: &Path, version: &Path) {
    // `current` itself is a symlink: compare what it points at.
    let version = &std::fs::canonicalize(version).unwrap();
    let out = Command::new("diff").arg("-r").arg("--no-dereference").arg(src).arg(version).output().unwrap();
    let why = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "diff -r: {why}");
    for e in walk(version) {
        let m = std::fs::symlink_metadata(&e).unwrap();
        if m.is_file() {
            assert_eq!(m.mode() & 0o222, 0, "{} is writable", e.display());
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

fn versions(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join(".versions"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A SQLite database of `rows` rows of 400 random-looking bytes each.
fn database(path: &Path, rows: u32) {
    sqlite(
        path,
        &format!(
            "PRAGMA page_size=4096; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);\
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < {rows})\
             INSERT INTO t SELECT i, randomblob(400) FROM n;"
        ),
    );
}

#[test]
fn an_update_fetches_only_its_chunks_links_unchanged_files_and_open_files_keep_their_bytes() {
    require("sqlite3");
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let src = tempfile::tempdir().unwrap();
    let db = src.path().join("db.sqlite");
    database(&db, 60_000);
    std::fs::create_dir(src.path().join("lookup")).unwrap();
    std::fs::write(src.path().join("lookup/big.bin"), random_bytes(4 << 20, 1)).unwrap();
    std::fs::write(src.path().join("small.txt"), b"version 1\n").unwrap();
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/mat:stable"));

    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("data");
    let marker = work.path().join("switches");
    let cfg = config(work.path(), "acme/mat:stable", &dir, Some(&marker), None);
    let mut agent = Agent::start(&hub, &cfg, None, &[], true);
    let v1 = digest(&agent);
    assert_eq!(current(&dir), v1);
    assert_materialized(src.path(), &dir.join("current"));
    let first = status(&agent)["materialize"].clone();
    assert!(first["fetched_bytes"].as_u64().unwrap() > 20 << 20, "{first}");
    assert!(!marker.exists(), "the hook ran without a switch");

    // A reader holds v1's small.txt open across two switches.
    let mut held = std::fs::File::open(dir.join("current/small.txt")).unwrap();
    let big_inode = std::fs::metadata(dir.join("current/lookup/big.bin")).unwrap().ino();

    // v2: a clustered update of about 1% of the database's rows.
    let db_size = std::fs::metadata(&db).unwrap().len();
    sqlite(&db, "UPDATE t SET v = randomblob(400) WHERE id BETWEEN 20000 AND 20500;");
    std::fs::write(src.path().join("small.txt"), b"version 2\n").unwrap();
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/mat:stable"));
    let v2 = wait_switch(&agent, &v1);
    assert_eq!(current(&dir), v2);
    assert_materialized(src.path(), &dir.join("current"));
    let second = status(&agent)["materialize"].clone();
    let fetched = second["fetched_bytes"].as_u64().unwrap() - first["fetched_bytes"].as_u64().unwrap();
    eprintln!("materialize: a 1% update fetched {fetched} of {db_size} bytes");
    assert!(fetched * 100 < db_size * 5, "a 1% update fetched {fetched} of {db_size} bytes");
    assert!(second["reused_bytes"].as_u64().unwrap() > db_size / 2, "{second}");
    // The unchanged file is the same inode: hard-linked, not written.
    assert_eq!(std::fs::metadata(dir.join("current/lookup/big.bin")).unwrap().ino(), big_inode);
    assert!(second["files_linked"].as_u64().unwrap() >= 1, "{second}");
    // The changed database was cloned from v1's copy and patched, not rewritten.
    assert_eq!(second["files_cloned"].as_u64(), Some(1), "{second}");
    assert_eq!(sqlite(&dir.join("current/db.sqlite"), "SELECT count(*) FROM t;").trim(), "60000");

    // v3; v1 is then beyond keep_versions = 2 and deleted.
    std::fs::write(src.path().join("small.txt"), b"version 3\n").unwrap();
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/mat:stable"));
    let v3 = wait_switch(&agent, &v2);
    assert_eq!(versions(&dir), {
        let mut v = vec![v2.clone(), v3.clone()];
        v.sort();
        v
    });
    let mut old = String::new();
    held.read_to_string(&mut old).unwrap();
    assert_eq!(old, "version 1\n", "an open file lost its bytes");
    assert_eq!(std::fs::read_to_string(dir.join("current/small.txt")).unwrap(), "version 3\n");

    // The hook ran once per switch, after the flip, told where the version is
    // (the mount serves v3 before its hook has finished: wait for the record).
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&agent)["on_switch"]["runs"].as_u64() != Some(2) {
        assert!(Instant::now() < deadline, "the hook did not run twice: {}", status(&agent));
        std::thread::sleep(Duration::from_millis(20));
    }
    let runs = std::fs::read_to_string(&marker).unwrap();
    let lines: Vec<&str> = runs.lines().collect();
    assert_eq!(lines.len(), 2, "{runs}");
    assert_eq!(lines[0], format!("{v2} {}", dir.join(".versions").join(&v2).display()));
    assert!(lines[1].starts_with(&v3));
    let hook = &status(&agent)["on_switch"];
    assert_eq!((hook["runs"].as_u64(), hook["failures"].as_u64()), (Some(2), Some(0)), "{hook}");
    assert_eq!(agent.metric("aetherfs_mount_switches_total"), 2.0);
    assert_eq!(agent.metric("aetherfs_on_switch_runs_total"), 2.0);
    assert_eq!(agent.metric("aetherfs_on_switch_failures_total"), 0.0);
    assert_eq!(agent.metric("aetherfs_materialize_builds_total"), 3.0);
    assert!(agent.metric("aetherfs_materialize_files_linked_total") >= 1.0);
    agent.stop();
}

#[test]
fn a_kill_9_while_writing_leaves_current_complete_and_the_next_start_cleans_up() {
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("small.txt"), b"version 1\n").unwrap();
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/killed:stable"));
    let v1_tree = tempfile::tempdir().unwrap();
    std::fs::copy(src.path().join("small.txt"), v1_tree.path().join("small.txt")).unwrap();

    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("data");
    let cfg = config(work.path(), "acme/killed:stable", &dir, None, None);
    let mut agent = Agent::start(&hub, &cfg, None, &[], true);
    let v1 = digest(&agent);

    // Kill the agent while it writes a large v2. If a try misses (v2 was
    // complete first), the next version tries again.
    let mut caught = false;
    for attempt in 0..5u64 {
        for i in 0..4 {
            std::fs::write(src.path().join(format!("big-{i}.bin")), random_bytes(16 << 20, attempt * 10 + i)).unwrap();
        }
        let before = digest(&agent);
        run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/killed:stable"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if versions(&dir).iter().any(|v| v.starts_with(".partial-")) {
                let pid = agent.pid().unwrap().to_string();
                run_ok(Command::new("kill").args(["-STOP", &pid]));
                caught = versions(&dir).iter().any(|v| v.starts_with(".partial-"));
                agent.kill9();
                break;
            }
            if digest(&agent) != before {
                break;
            }
            assert!(Instant::now() < deadline, "the agent neither wrote nor switched");
        }
        if caught {
            break;
        }
    }
    assert!(caught, "never caught the agent mid-write");
    // `current` still names a complete version; it is the one served before.
    let cur = current(&dir);
    assert!(!cur.starts_with(".partial-"));
    if cur == v1 {
        assert_materialized(v1_tree.path(), &dir.join("current"));
    }

    // The next start removes the partial version and writes the tag's version.
    let agent = Agent::start(&hub, &cfg, None, &[], true);
    assert!(versions(&dir).iter().all(|v| !v.starts_with(".partial-")), "{:?}", versions(&dir));
    assert_eq!(current(&dir), digest(&agent));
    assert_materialized(src.path(), &dir.join("current"));
    drop(agent);
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        run_ok(Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(path));
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_or_a_read_only_filesystem_keeps_the_last_good_version_with_one_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("small.txt"), b"version 1\n").unwrap();
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/full:stable"));

    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("data");
    let _fs = Tmpfs::mount(&dir, "8m");
    let cfg = config(work.path(), "acme/full:stable", &dir, None, None);
    let agent = Agent::start(&hub, &cfg, None, &[], true);
    let v1 = digest(&agent);

    // v2 does not fit.
    std::fs::write(src.path().join("big.bin"), random_bytes(12 << 20, 3)).unwrap();
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/full:stable"));
    let e = wait_error(&agent);
    assert!(e.contains("No space left on device"), "{e}");
    assert_eq!(agent.metric("aetherfs_mount_failing"), 1.0);
    assert_eq!((digest(&agent), current(&dir)), (v1.clone(), v1.clone()));
    assert_eq!(std::fs::read_to_string(dir.join("current/small.txt")).unwrap(), "version 1\n");

    // v3 fits: the agent switches and the error clears.
    std::fs::remove_file(src.path().join("big.bin")).unwrap();
    std::fs::write(src.path().join("small.txt"), b"version 3\n").unwrap();
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/full:stable"));
    let v3 = wait_switch(&agent, &v1);
    assert_eq!(current(&dir), v3);
    assert!(status(&agent)["last_error"].is_null());
    assert_eq!(agent.metric("aetherfs_mount_failing"), 0.0);
    assert!(versions(&dir).iter().all(|v| !v.starts_with(".partial-")), "a failed build was left behind");

    // A read-only filesystem: the same, with its own error.
    run_ok(Command::new("mount").args(["-o", "remount,ro"]).arg(&dir));
    std::fs::write(src.path().join("small.txt"), b"version 4\n").unwrap();
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/full:stable"));
    let e = wait_error(&agent);
    assert!(e.contains("Read-only file system"), "{e}");
    assert_eq!(current(&dir), v3);
    assert_eq!(std::fs::read_to_string(dir.join("current/small.txt")).unwrap(), "version 3\n");
    drop(agent);
}

/// `GET path` on the admin endpoint with an optional bearer token; the status.
fn admin_status(admin: &str, path: &str, token: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin.trim_start_matches("http://")).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn an_admin_token_guards_mounts_and_metrics_but_not_the_probes() {
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a.txt"), b"a\n").unwrap();
    run_ok(hub.cmd().arg("push").arg(src.path()).arg("acme/guarded:v1"));
    let work = tempfile::tempdir().unwrap();
    let token = work.path().join("admin-token");
    std::fs::write(&token, "first-secret\n").unwrap();
    let cfg = config(work.path(), "acme/guarded:v1", &work.path().join("data"), None, Some(&token));
    let agent = Agent::start(&hub, &cfg, None, &[], true);
    assert_eq!(admin_status(&agent.admin, "/readyz", None), 200);
    assert_eq!(admin_status(&agent.admin, "/healthz", None), 200);
    for path in ["/v1/mounts", "/metrics"] {
        assert_eq!(admin_status(&agent.admin, path, None), 401, "{path}");
        assert_eq!(admin_status(&agent.admin, path, Some("wrong")), 401, "{path}");
        assert_eq!(admin_status(&agent.admin, path, Some("first-secret")), 200, "{path}");
    }
    // A rotated token works within a second (the file is read again at most
    // once a second); the old one then no longer does.
    std::fs::write(&token, "second-secret\n").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while admin_status(&agent.admin, "/v1/mounts", Some("second-secret")) != 200 {
        assert!(std::time::Instant::now() < deadline, "the rotated token was never accepted");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(admin_status(&agent.admin, "/v1/mounts", Some("first-secret")), 401);
    drop(agent);
}
