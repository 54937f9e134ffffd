//! The WebDAV front end against real clients on an in-process server on
//! 127.0.0.1: rclone (`check --download`), a davfs2 mount compared with
//! `diff -r`, and raw curl for PROPFIND, Range, write methods and the HTML
//! index. scripts/install-test-peers.sh installs rclone, davfs2 and curl.
//! The davfs2 test mounts, so it needs root and /dev/fuse; without them it
//! says so and skips.

use crate::support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aetherfs_mounts::testing::{MemorySource, fs_of_dir};
use support::{digest, random_bytes, run, run_ok, sample_tree};

const T: Duration = Duration::from_secs(120);

/// A WebDAV server over a local tree, on its own runtime; dropping it stops
/// the server.
struct Served {
    base: String,
    source: Arc<MemorySource>,
    fs: Arc<aetherfs_mounts::DatasetFs>,
    _stop: tokio::sync::oneshot::Sender<()>,
    _rt: tokio::runtime::Runtime,
}

impl Served {
    fn start(dir: &Path) -> Served {
        let (fs, source) = fs_of_dir(dir).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        rt.spawn(aetherfs_mounts::webdav::serve(fs.clone(), listener, Default::default(), async move {
            let _ = stopped.await;
        }));
        Served { base, source, fs, _stop: stop, _rt: rt }
    }

    /// The URL of `path` (unencoded, `/`-separated).
    fn url(&self, path: &str) -> String {
        let mut u = self.base.clone();
        for b in path.trim_start_matches('/').bytes() {
            if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
                u.push(b as char);
            } else {
                u.push_str(&format!("%{b:02X}"));
            }
        }
        u
    }

    fn calls(&self) -> u64 {
        self.source.calls.load(Ordering::Relaxed)
    }
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

/// One request through curl.
fn curl(method: &str, url: &str, headers: &[&str]) -> Resp {
    let mut args = vec!["-s", "-i", "--max-time", "60"];
    if method == "HEAD" {
        args.push("-I");
    } else {
        args.extend(["-X", method]);
    }
    for h in headers {
        args.extend(["-H", h]);
    }
    args.push(url);
    let out = run_ok("curl", &args, T).stdout;
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(out[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    Resp { status, headers, body: out[split + 4..].to_vec() }
}

/// PROPFIND responses as (href, XML of the response).
fn responses(xml: &str) -> Vec<(String, String)> {
    xml.split("<D:response>")
        .skip(1)
        .map(|r| {
            let href = r.split("<D:href>").nth(1).unwrap().split("</D:href>").next().unwrap();
            (href.to_string(), r.to_string())
        })
        .collect()
}

fn prop<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<D:{name}>");
    let close = format!("</D:{name}>");
    Some(response.split(&open).nth(1)?.split(&close).next().unwrap())
}

#[test]
fn rclone_check_finds_no_difference() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path(), 500);
    std::fs::write(t.path().join("a&b <i>.txt"), b"markup in the name").unwrap();
    let s = Served::start(t.path());
    let remote = format!(":webdav,url='{}':", s.base);
    // -L: rclone's local side follows symlinks, as the server does.
    let src = t.path().to_str().unwrap();
    let o = run_ok("rclone", &["--config", "/dev/null", "check", "--download", "-L", src, &remote], T);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains(" 0 differences found"), "{log}");
    // Every file of the tree, symlinks followed: the 500 in many/ and 12 more.
    assert!(log.contains(" 512 matching files"), "{log}");
    // Empty directories are there too.
    let o = run_ok("rclone", &["--config", "/dev/null", "lsf", "-R", "--dirs-only", &remote], T);
    let dirs = String::from_utf8(o.stdout).unwrap();
    for d in ["empty/", "a/empty inside/", "日本語/", "a/blink/"] {
        assert!(dirs.lines().any(|l| l == d), "{d} missing from {dirs}");
    }
}

/// Unmounts a davfs2 mount when dropped, even when the test failed, and
/// removes the cache davfs2 kept for it.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let p = self.0.to_str().unwrap();
        if !run("umount", &[p], T).status.success() {
            let _ = run("umount", &["-l", p], T);
        }
        let cache = format!("/var/cache/davfs2/127.0.0.1+{}+root", p.trim_start_matches('/').replace('/', "-"));
        let _ = std::fs::remove_dir_all(cache);
    }
}

#[test]
fn davfs2_mount_diffs_clean() {
    let root = run("id", &["-u"], T).stdout == b"0\n";
    if !root || !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED davfs2_mount_diffs_clean: mounting needs root and /dev/fuse");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample_tree(&src, 300);
    let s = Served::start(&src);
    let mnt = t.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let conf = t.path().join("davfs2.conf");
    // buf_size 64: on Linux >= 6.16 davfs2's default makes readdir fail with
    // EINVAL. The cache stays in davfs2's default directory: its daemon drops
    // root for the davfs2 user, which cannot write into a 0700 tempdir.
    std::fs::write(&conf, "use_locks 0\nask_auth 0\ndelay_upload 0\ngui_optimize 0\nbuf_size 64\n").unwrap();
    let opts = format!("ro,conf={}", conf.display());
    run_ok("mount.davfs", &["-o", &opts, &s.base, mnt.to_str().unwrap()], T);
    let _m = Mounted(mnt.clone());
    // davfs2 adds a lost+found of its own.
    let o = run("diff", &["-r", "-x", "lost+found", src.to_str().unwrap(), mnt.to_str().unwrap()], T);
    assert!(
        o.status.success(),
        "diff -r found differences:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(s.calls() > 0);
    assert_eq!(std::fs::read_dir(mnt.join("empty")).unwrap().count(), 0);
    assert_eq!(std::fs::read(mnt.join("日本語/ファイル.txt")).unwrap(), "こんにちは\n".as_bytes());
    assert!(std::fs::write(mnt.join("new.txt"), b"x").is_err());
    assert!(std::fs::create_dir(mnt.join("newdir")).is_err());
    assert!(s.fs.lookup_path("new.txt").is_err());
}

#[test]
fn propfind_answers_from_metadata_only() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path(), 10_000);
    let s = Served::start(t.path());
    let etag_of = |p: &str| s.fs.lookup_path(p).unwrap().digest.hex();

    // Depth 0 on a file.
    let r = curl("PROPFIND", &s.url("big.bin"), &["Depth: 0"]);
    assert_eq!(r.status, 207);
    let rs = responses(&r.text());
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].0, "/big.bin");
    assert_eq!(prop(&rs[0].1, "getcontentlength"), Some("5243003"));
    assert_eq!(prop(&rs[0].1, "getlastmodified"), Some("Sat, 21 Nov 2026 00:00:00 GMT"));
    assert_eq!(prop(&rs[0].1, "getetag").unwrap(), etag_of("big.bin"));
    assert_eq!(prop(&rs[0].1, "resourcetype"), Some(""));

    // Depth 0 on a directory: a collection, the version's digest as ETag.
    let r = curl("PROPFIND", &s.url("a/"), &["Depth: 0"]);
    let rs = responses(&r.text());
    assert_eq!(rs.len(), 1);
    assert_eq!(prop(&rs[0].1, "resourcetype"), Some("<D:collection></D:collection>"));
    assert_eq!(prop(&rs[0].1, "getetag").unwrap(), s.fs.current().digest.hex());
    assert_eq!(prop(&rs[0].1, "getcontentlength"), None);

    // Depth 1 on the root: itself and each child once, symlinks as their targets.
    let r = curl("PROPFIND", &s.base, &["Depth: 1"]);
    let rs = responses(&r.text());
    let hrefs: Vec<&str> = rs.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(
        hrefs,
        [
            "/",
            "/a/",
            "/a%20b",
            "/big.bin",
            "/empty/",
            "/h%C3%A9llo%20w%C3%B6rld%20%E2%9C%93.txt",
            "/link",
            "/many/",
            "/medium.bin",
            "/zero",
            "/%E6%97%A5%E6%9C%AC%E8%AA%9E/"
        ]
    );
    let link = &rs[6].1;
    assert_eq!(prop(link, "getcontentlength"), Some("6"));
    assert_eq!(prop(link, "getetag").unwrap(), etag_of("a/small.txt"));
    assert_eq!(prop(&rs[9].1, "getcontentlength"), Some("0"));

    // Depth 1 on a 10,000-entry directory, in one pass.
    let started = Instant::now();
    let r = curl("PROPFIND", &s.url("many/"), &["Depth: 1"]);
    let took = started.elapsed();
    let rs = responses(&r.text());
    assert_eq!(rs.len(), 10_001);
    assert_eq!(rs[1].0, "/many/f00000");
    assert_eq!(prop(&rs[10_000].1, "getcontentlength"), Some("5"));
    eprintln!("PROPFIND Depth 1 of 10,000 entries: {took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");

    // A named-property PROPFIND, as davfs2 and rclone send.
    let body = r#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getcontentlength/><D:getetag/></D:prop></D:propfind>"#;
    let o = run_ok(
        "curl",
        &[
            "-s",
            "-X",
            "PROPFIND",
            "-H",
            "Depth: 1",
            "-H",
            "Content-Type: application/xml",
            "--data",
            body,
            &s.url("a/"),
        ],
        T,
    );
    let xml = String::from_utf8(o.stdout).unwrap();
    assert!(xml.contains("<D:getcontentlength>6</D:getcontentlength>"), "{xml}");

    // Depth infinity is refused; missing paths are 404.
    assert_eq!(curl("PROPFIND", &s.base, &["Depth: infinity"]).status, 501);
    assert_eq!(curl("PROPFIND", &s.url("nope"), &["Depth: 0"]).status, 404);

    // None of that read a chunk.
    assert_eq!(s.calls(), 0);
}

/// A file's ETag is its AetherFS file digest (derived from its chunks, what
/// `aetherfs digest` prints), not the BLAKE3 of its bytes, and a new version
/// changes it only for the files that changed.
#[test]
fn a_file_etag_is_its_file_digest_and_stays_while_the_file_does() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path(), 0);
    let big = std::fs::read(t.path().join("big.bin")).unwrap();
    let want = aetherfs_format::chunk_reader(&aetherfs_format::ChunkParams::default(), &big[..]).unwrap().digest;
    assert_ne!(format!("blake3:{}", want.hex()), digest(&big), "the file digest is not the b3sum");
    let etag = |s: &Served, p: &str| curl("HEAD", &s.url(p), &[]).header("etag").map(str::to_string);
    let v1 = Served::start(t.path());
    assert_eq!(etag(&v1, "big.bin"), Some(format!("\"{}\"", want.hex())));
    assert_eq!(etag(&v1, "big.bin"), etag(&v1, "big.bin"));
    let small = etag(&v1, "a/small.txt");

    std::fs::write(t.path().join("a/small.txt"), b"changed\n").unwrap();
    let v2 = Served::start(t.path());
    assert_ne!(v2.fs.current().digest, v1.fs.current().digest);
    assert_eq!(etag(&v2, "big.bin"), etag(&v1, "big.bin"), "an unchanged file kept its ETag");
    assert_ne!(etag(&v2, "a/small.txt"), small);
}

#[test]
fn get_range_if_range_and_validators() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path(), 0);
    let s = Served::start(t.path());
    let data = std::fs::read(t.path().join("big.bin")).unwrap();
    let url = s.url("big.bin");
    let etag = format!("\"{}\"", s.fs.lookup_path("big.bin").unwrap().digest.hex());

    let r = curl("GET", &url, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(digest(&r.body), digest(&data));
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("last-modified"), Some("Sat, 21 Nov 2026 00:00:00 GMT"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));

    let r = curl("HEAD", &url, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("5243003"));
    assert!(r.body.is_empty());

    let r = curl("GET", &url, &["Range: bytes=100-199"]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[100..200]);
    assert_eq!(r.header("content-range"), Some("bytes 100-199/5243003"));

    // A range across chunk boundaries, and the tail.
    let r = curl("GET", &url, &["Range: bytes=1000000-3999999"]);
    assert_eq!(r.status, 206);
    assert_eq!(digest(&r.body), digest(&data[1_000_000..4_000_000]));
    let r = curl("GET", &url, &["Range: bytes=-10"]);
    assert_eq!(r.body, &data[data.len() - 10..]);

    // If-Range: the current ETag keeps the range, another gives the whole file.
    let r = curl("GET", &url, &["Range: bytes=100-199", &format!("If-Range: {etag}")]);
    assert_eq!((r.status, r.body.len()), (206, 100));
    let r = curl("GET", &url, &["Range: bytes=100-199", "If-Range: \"other\""]);
    assert_eq!((r.status, r.body.len()), (200, data.len()));

    // Validators: If-None-Match with the ETag is 304.
    assert_eq!(curl("GET", &url, &[&format!("If-None-Match: {etag}")]).status, 304);

    // Out of range, empty files, non-ASCII names, symlinks, missing paths.
    assert_eq!(curl("GET", &url, &["Range: bytes=6000000-"]).status, 416);
    let r = curl("GET", &s.url("zero"), &[]);
    assert_eq!((r.status, r.body.len()), (200, 0));
    let r = curl("GET", &s.url("日本語/ファイル.txt"), &[]);
    assert_eq!(r.text(), "こんにちは\n");
    assert_eq!(curl("GET", &s.url("link"), &[]).text(), "hello\n");
    assert_eq!(curl("GET", &s.url("a/blink/c/deep.txt"), &[]).text(), "deep down\n");
    assert_eq!(curl("GET", &s.url("nope"), &[]).status, 404);
    assert_eq!(curl("GET", &s.url("a/small.txt/x"), &[]).status, 404);
}

#[test]
fn write_methods_are_refused_with_405() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path(), 0);
    let s = Served::start(t.path());
    let dest = format!("Destination: {}", s.url("moved.txt"));
    for (method, path, headers) in [
        ("PUT", "new.txt", vec![]),
        ("PUT", "a/small.txt", vec![]),
        ("DELETE", "a/small.txt", vec![]),
        ("DELETE", "a/", vec![]),
        ("MKCOL", "newdir/", vec![]),
        ("MOVE", "a/small.txt", vec![dest.as_str()]),
        ("COPY", "a/small.txt", vec![dest.as_str()]),
        ("PROPPATCH", "a/small.txt", vec![]),
        ("LOCK", "a/small.txt", vec![]),
        ("UNLOCK", "a/small.txt", vec![]),
        ("PATCH", "a/small.txt", vec![]),
    ] {
        let r = curl(method, &s.url(path), &headers);
        assert_eq!(r.status, 405, "{method} {path}");
    }
    let o = run_ok("curl", &["-s", "-o", "/dev/null", "-w", "%{http_code}", "-T", "-", &s.url("up.txt")], T);
    assert_eq!(o.stdout, b"405");
    assert!(s.fs.lookup_path("new.txt").is_err());
    assert!(s.fs.lookup_path("moved.txt").is_err());
    assert!(s.fs.lookup_path("newdir").is_err());
    assert_eq!(curl("GET", &s.url("a/small.txt"), &[]).text(), "hello\n");
    // OPTIONS offers only the read-only methods.
    let r = curl("OPTIONS", &s.url("a/small.txt"), &[]);
    let allow = r.header("allow").unwrap().to_string();
    for m in ["PUT", "DELETE", "MOVE", "COPY", "LOCK", "PATCH"] {
        assert!(!allow.split(',').any(|a| a == m), "{allow}");
    }
    for m in ["GET", "HEAD", "PROPFIND"] {
        assert!(allow.split(',').any(|a| a == m), "{allow}");
    }
}

#[test]
fn browsers_get_an_html_index() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path(), 0);
    std::fs::write(t.path().join("a&b <i>.txt"), b"markup in the name").unwrap();
    let s = Served::start(t.path());
    let r = curl("GET", &s.base, &["Accept: text/html"]);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let html = r.text();
    assert!(html.contains(">a&amp;b &lt;i&gt;.txt</a>"), "{html}");
    assert!(!html.contains("<i>"));
    assert!(html.contains(r#"<a href="/a%26b%20%3Ci%3E.txt">"#));
    assert!(html.contains(">日本語/</a>"));
    assert!(html.contains(">empty/</a>"));
    // A collection without its slash redirects to it.
    let r = curl("GET", &s.url("a"), &["Accept: text/html"]);
    assert_eq!((r.status, r.header("location")), (302, Some("/a/")));
    let r = curl("GET", &s.url("empty/"), &["Accept: text/html"]);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("Index of /empty/"));
    assert_eq!(s.calls(), 0);
}

#[test]
fn symlinks_resolve_inside_the_dataset_only() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    std::fs::create_dir_all(p.join("d/sub")).unwrap();
    std::fs::write(p.join("d/sub/f.txt"), b"inside").unwrap();
    std::fs::write(p.join("top.txt"), random_bytes(1000, 3)).unwrap();
    let link = |target: &str, at: &str| std::os::unix::fs::symlink(target, p.join(at)).unwrap();
    link("d/sub/f.txt", "to-file");
    link("../top.txt", "d/up-file");
    link("d", "to-dir");
    link("nowhere", "dangling");
    link("/etc/hostname", "absolute");
    link("../../etc/hostname", "escaping");
    link("loop-b", "loop-a");
    link("loop-a", "loop-b");
    link("..", "d/parent");
    link("to-file", "chain");
    let s = Served::start(p);
    let get = |path: &str| curl("GET", &s.url(path), &[]);
    assert_eq!(get("to-file").text(), "inside");
    assert_eq!(get("chain").text(), "inside");
    assert_eq!(get("to-dir/sub/f.txt").text(), "inside");
    assert_eq!(get("d/up-file").body, std::fs::read(p.join("top.txt")).unwrap());
    for gone in ["dangling", "absolute", "escaping", "loop-a", "loop-b"] {
        assert_eq!(get(gone).status, 404, "{gone}");
    }
    // One symlink to a directory per path: d/parent is the root, but inside
    // it the links to directories are gone, so the tree stays finite.
    assert_eq!(get("d/parent/top.txt").status, 200);
    assert_eq!(get("d/parent/to-dir/sub/f.txt").status, 404);
    assert_eq!(get("d/parent/d/parent/top.txt").status, 404);
    let names = |path: &str| -> Vec<String> {
        responses(&curl("PROPFIND", &s.url(path), &["Depth: 1"]).text()).into_iter().skip(1).map(|r| r.0).collect()
    };
    assert_eq!(names(""), ["/chain", "/d/", "/to-dir/", "/to-file", "/top.txt"]);
    assert_eq!(names("d/parent/"), ["/d/parent/chain", "/d/parent/d/", "/d/parent/to-file", "/d/parent/top.txt"]);
    assert_eq!(names("d/parent/d/"), ["/d/parent/d/sub/", "/d/parent/d/up-file"]);
}

/// DNS rebinding: a web page that rebinds its own name to 127.0.0.1 sends
/// requests with that name as Host; the front end answers only to
/// addresses and localhost (and the names it is given).
#[test]
fn unknown_host_names_are_refused() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path(), 10);
    let s = Served::start(t.path());
    for host in ["evil.example", "evil.example:80", "localhost.evil.example"] {
        let r = curl("GET", &s.base, &[&format!("Host: {host}")]);
        assert_eq!(r.status, 403, "{host}: {}", r.text());
    }
    let r = curl("PROPFIND", &s.base, &["Host: evil.example", "Depth: 1"]);
    assert_eq!(r.status, 403);
    for host in ["localhost:8080", "127.0.0.1"] {
        let r = curl("GET", &s.base, &[&format!("Host: {host}")]);
        assert_eq!(r.status, 200, "{host}");
    }
    assert_eq!(curl("GET", &s.base, &[]).status, 200, "curl's own Host (the address)");
}

/// Slowloris: a request head that never completes is dropped after the
/// header-read timeout, as the hub does.
#[test]
fn a_half_sent_request_is_dropped_after_the_header_timeout() {
    use std::io::{Read, Write};
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path(), 10);
    let (fs, _source) = fs_of_dir(t.path()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let opts = aetherfs_mounts::webdav::WebDavOptions {
        allowed_hosts: Vec::new(),
        limits: aetherfs_serve::ConnectionLimits {
            max_connections: 16,
            header_read_timeout: Duration::from_secs(1),
            ..Default::default()
        },
        gate: None,
    };
    rt.spawn(aetherfs_mounts::webdav::serve(fs, listener, opts, std::future::pending()));
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(15), "the half-sent request was held {waited:?}");
    // A complete request on a new connection is still served.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    assert!(buf.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf));
}
