//! One harness for the end-to-end tests: starts real processes (the hub, moto
//! S3), waits for their readiness, and stops them on drop, even when a test
//! fails.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_aetherfs");
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A child process killed (and reaped) on drop.
pub struct Proc {
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A hub running as a real `aetherfs hub` process on an ephemeral port.
pub struct Hub {
    pub url: String,
    pub storage: String,
    envs: Vec<(String, String)>,
    args: Vec<String>,
    proc: Option<Proc>,
}

impl Hub {
    pub fn start(storage: &str) -> Hub {
        Self::start_with_env(storage, &[])
    }

    pub fn start_with_env(storage: &str, envs: &[(String, String)]) -> Hub {
        Self::start_on(storage, envs, 0)
    }

    /// Starts a hub on a given port (0: any).
    pub fn start_on(storage: &str, envs: &[(String, String)], port: u16) -> Hub {
        Self::start_full(storage, envs, &[], port)
    }

    /// Starts a hub with extra command-line arguments (e.g. `--redirect-reads`).
    pub fn start_with_args(storage: &str, envs: &[(String, String)], args: &[&str]) -> Hub {
        Self::start_full(storage, envs, args, 0)
    }

    fn start_full(storage: &str, envs: &[(String, String)], args: &[&str], port: u16) -> Hub {
        let mut cmd = Command::new(BIN);
        cmd.args(["hub", "--listen", &format!("127.0.0.1:{port}"), "--storage", storage])
            .args(args)
            .env("AETHERFS_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn aetherfs hub");
        let stderr = child.stderr.take().expect("hub stderr");
        let proc = Proc { child };
        let (tx, rx) = mpsc::channel();
        // Read the announced address, then keep forwarding the hub's stderr
        // to the test's, so failures show the hub's logs.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let url = rest.split_whitespace().next().unwrap_or_default().to_string();
                    let _ = tx.send(url);
                }
                eprintln!("[hub] {line}");
            }
        });
        let url = rx.recv_timeout(START_TIMEOUT).expect("hub did not announce its address");
        wait_http_ok(&url, "/readyz");
        let args = args.iter().map(|a| a.to_string()).collect();
        Hub { url, storage: storage.to_string(), envs: envs.to_vec(), args, proc: Some(proc) }
    }

    /// Stops the hub (as SIGKILL would) and starts a new one on the same storage.
    pub fn restart(&mut self) {
        self.stop();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let new = Hub::start_full(&self.storage, &self.envs, &args, 0);
        *self = new;
    }

    /// Starts the hub again on the same storage and the same port.
    pub fn start_again(&mut self) {
        let port = self.port();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let new = Hub::start_full(&self.storage, &self.envs, &args, port);
        *self = new;
    }

    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse().ok()).expect("hub port")
    }

    pub fn stop(&mut self) {
        self.proc.take();
    }

    /// The hub process's id, to read its memory from `/proc`.
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map(|p| p.child.id()).expect("the hub is running")
    }

    /// An `aetherfs` command pointed at this hub.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("AETHERFS_HUB", &self.url).env("AETHERFS_LOG", "warn").stdin(Stdio::null());
        c
    }

    pub fn client(&self) -> aetherfs_hub_client::HubClient {
        aetherfs_hub_client::HubClient::new(&self.url).expect("client")
    }
}

/// A process's resident memory in KiB, now (`VmRSS`) or at its peak (`VmHWM`), from `/proc`.
pub fn proc_memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix(" kB")?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Starts measuring a process's peak memory afresh (`VmHWM` becomes `VmRSS`).
pub fn reset_peak_memory(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset the peak in /proc clear_refs");
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{:?} failed with {}\nstdout: {}\nstderr: {}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must fail; returns its output.
pub fn run_err(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run command");
    assert!(
        !out.status.success(),
        "{:?} should have failed\nstdout: {}\nstderr: {}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Polls `url+path` until it answers 200 (the server's own readiness signal).
pub fn wait_http_ok(base: &str, path: &str) {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if http_status(base, path) == Some(200) {
            return;
        }
        assert!(Instant::now() < deadline, "{base}{path} never became ready");
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub fn http_status(base: &str, path: &str) -> Option<u16> {
    http_get(base, path).map(|(s, _)| s)
}

/// A plain HTTP/1.1 GET: status and body.
pub fn http_get(base: &str, path: &str) -> Option<(u16, String)> {
    let hostport = base.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(hostport).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// A metric's value from Prometheus text (the first sample of that name).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split([' ', '{']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.trim().parse().ok())
}

/// Starts a long-running command and waits until its output has shown a
/// line containing each of `wanted`; returns those lines.
pub fn start_daemon(mut cmd: Command, wanted: &[&str]) -> (Proc, Vec<String>) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
    let mut child = cmd.spawn().expect("spawn aetherfs");
    let (tx, rx) = mpsc::channel::<String>();
    for stream in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
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
        let line = rx.recv_timeout(START_TIMEOUT).expect("daemon did not print what was expected");
        for (i, w) in wanted.iter().enumerate() {
            if found[i].is_empty() && line.contains(w) {
                found[i] = line.clone();
            }
        }
    }
    (proc, found)
}

/// Whether `path` is a mount point now.
pub fn is_mounted(path: &Path) -> bool {
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(canon.to_str().unwrap_or_default()))
}

/// Sends SIGTERM and waits for the process to exit by itself.
pub fn terminate(mut p: Proc) -> std::process::ExitStatus {
    let pid = p.child.id().to_string();
    run_ok(Command::new("kill").args(["-TERM", &pid]));
    p.child.wait().expect("wait")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// Finds a program on PATH, failing with a note on how CI installs it.
pub fn require(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(program);
        if p.is_file() {
            return p;
        }
    }
    panic!("{program} is not installed: run .ci/run (or see README.md) to install the test peers");
}

/// moto's S3 server on an ephemeral port, with one bucket.
pub struct Moto {
    pub endpoint: String,
    _proc: Proc,
}

impl Moto {
    pub fn start(bucket: &str) -> Moto {
        let bin = require("moto_server");
        let port = free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn moto_server");
        let proc = Proc { child };
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_http_ok(&endpoint, "/moto-api/");
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect moto");
        write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .expect("create bucket");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("moto answer");
        assert!(resp.starts_with("HTTP/1.1 200"), "bucket creation failed: {resp}");
        Moto { endpoint, _proc: proc }
    }

    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// Azurite (Azure Blob) on an ephemeral port, in memory, with one container.
pub struct Azurite {
    pub endpoint: String,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

/// Azurite's well-known development account and key (public, in its docs).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

impl Azurite {
    pub fn start(container: &str) -> Azurite {
        let bin = require("azurite-blob");
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--silent", "--inMemoryPersistence"])
            .args(["--extentMemoryLimit", "512", "--disableTelemetry", "--skipApiVersionCheck"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn azurite-blob");
        let proc = Proc { child };
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + START_TIMEOUT;
        while !create_container(port, container) {
            assert!(Instant::now() < deadline, "azurite-blob did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Azurite { endpoint, _proc: proc, _dir: dir }
    }

    /// What `az://CONTAINER` needs to reach the emulator (docs/storage-layout.md).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AZURE_STORAGE_USE_EMULATOR", "true"),
            ("AZURITE_BLOB_STORAGE_URL", self.endpoint.as_str()),
            ("AZURE_STORAGE_ACCOUNT_NAME", AZURITE_ACCOUNT),
            ("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// Creates a container with a Shared Key request (object_store has no call
/// for it; operators create containers beforehand). True once it exists.
fn create_container(port: u16, container: &str) -> bool {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let b64 = base64::engine::general_purpose::STANDARD;
    let f = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let date = time::OffsetDateTime::now_utc().format(&f).unwrap();
    let to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:2021-08-06\n/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}\nrestype:container"
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&b64.decode(AZURITE_KEY).unwrap()).unwrap();
    mac.update(to_sign.as_bytes());
    let sig = b64.encode(mac.finalize().into_bytes());
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let req = format!(
        "PUT /{AZURITE_ACCOUNT}/{container}?restype=container HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx-ms-date: {date}\r\nx-ms-version: 2021-08-06\r\nAuthorization: SharedKey {AZURITE_ACCOUNT}:{sig}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut resp = String::new();
    if s.write_all(req.as_bytes()).is_err() || s.read_to_string(&mut resp).is_err() {
        return false;
    }
    resp.starts_with("HTTP/1.1 201") || resp.starts_with("HTTP/1.1 409")
}

/// Deterministic random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    aetherfs_util::pseudo_random(len, seed)
}

/// Runs SQL through the real `sqlite3` CLI.
pub fn sqlite(db: &Path, sql: &str) -> String {
    let out = Command::new(require("sqlite3")).arg(db).arg(sql).output().expect("run sqlite3");
    assert!(out.status.success(), "sqlite3 failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every entry under `root` with its type, permission bits and, for
/// symlinks, target: what `diff -r` does not compare.
pub fn tree_meta(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let e = e.expect("entry");
            let p = e.path();
            let rel = p.strip_prefix(root).expect("prefix").to_string_lossy().into_owned();
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let desc = if m.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).expect("readlink").display())
            } else if m.is_dir() {
                walk(root, &p, out);
                format!("dir {:o}", m.permissions().mode() & 0o7777)
            } else {
                format!("file {:o} {}", m.permissions().mode() & 0o7777, m.len())
            };
            out.insert(rel, desc);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// `diff -r` (not following symlinks) must find no difference.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let out = Command::new("diff").arg("-r").arg("--no-dereference").arg(a).arg(b).output().expect("run diff");
    assert!(
        out.status.success(),
        "diff -r found differences:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree_meta(a), tree_meta(b), "types, modes or symlink targets differ");
}

/// The dataset tree every round trip uses.
pub fn make_tree(root: &Path, big: usize) {
    let w = |p: &str, data: &[u8]| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, data).expect("write");
    };
    w("README.txt", b"example dataset\n");
    w("nested/deeper/deepest/leaf.csv", b"id,name\n1,a\n2,b\n");
    w("empty.bin", b"");
    w("données/été-日本語.txt", "non-ASCII names survive\n".as_bytes());
    w("bin/run.sh", b"#!/bin/sh\necho hello\n");
    std::fs::set_permissions(root.join("bin/run.sh"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    w("private/key.txt", b"secret-ish\n");
    std::fs::set_permissions(root.join("private/key.txt"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::create_dir_all(root.join("empty-dir")).expect("mkdir");
    std::fs::create_dir_all(root.join("nested/empty-too")).expect("mkdir");
    std::os::unix::fs::symlink("nested/deeper/deepest/leaf.csv", root.join("leaf-link")).expect("symlink");
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling-link")).expect("symlink");
    w("big/random.bin", &random_bytes(big, 42));
    let db = root.join("db/example.sqlite");
    std::fs::create_dir_all(db.parent().expect("parent")).expect("mkdir");
    sqlite(
        &db,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, v REAL);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<20000)
         INSERT INTO t SELECT x, 'row-' || x, x * 0.5 FROM c;",
    );
}

/// `aetherfs agent` started from a config file; killed (and its FUSE mount
/// lazily unmounted) on drop.
pub struct Agent {
    proc: Option<Proc>,
    pub admin: String,
    /// The FUSE mount point, checked at readiness and after stopping.
    mnt: Option<PathBuf>,
}

impl Agent {
    /// Starts the agent and waits for its admin endpoint; `ready` also waits for /readyz.
    pub fn start(hub: &Hub, config: &Path, mnt: Option<&Path>, envs: &[(&str, &str)], ready: bool) -> Agent {
        Self::start_at(&hub.url, config, mnt, envs, ready)
    }

    /// [`Agent::start`] against a hub at `url` (an [`AuthHub`], say).
    pub fn start_at(url: &str, config: &Path, mnt: Option<&Path>, envs: &[(&str, &str)], ready: bool) -> Agent {
        let mut cmd = Command::new(BIN);
        cmd.args(["agent", "--config"]).arg(config).env("AETHERFS_HUB", url).env("AETHERFS_LOG", "warn");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let (proc, lines) = start_daemon(cmd, &["admin on "]);
        let admin = lines[0].split("admin on ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
        let agent = Agent { proc: Some(proc), admin, mnt: mnt.map(Path::to_path_buf) };
        if ready {
            agent.wait_ready();
        }
        agent
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while http_get(&self.admin, "/readyz").map(|r| r.0) != Some(200) {
            assert!(Instant::now() < deadline, "agent never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(m) = &self.mnt {
            assert!(is_mounted(m));
        }
    }

    pub fn metrics(&self) -> String {
        http_get(&self.admin, "/metrics").expect("metrics").1
    }

    pub fn metric(&self, name: &str) -> f64 {
        metric(&self.metrics(), name).unwrap_or_else(|| panic!("no metric {name}"))
    }

    pub fn mounts(&self) -> serde_json::Value {
        serde_json::from_str(&http_get(&self.admin, "/v1/mounts").expect("mounts").1).expect("json")
    }

    pub fn stop(&mut self) {
        if let Some(p) = self.proc.take() {
            assert!(terminate(p).success(), "agent exited with an error");
        }
        if let Some(m) = &self.mnt {
            assert!(!is_mounted(m), "agent left its mount behind");
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.child.id())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        if let Some(m) = self.mnt.as_ref().filter(|m| is_mounted(m)) {
            let _ = Command::new("fusermount3").arg("-uz").arg(m).status();
        }
    }
}

/// The audience the test OpenID provider puts in its access tokens.
pub const AUDIENCE: &str = "urn:aetherfs";

/// scripts/oidc-provider: the test OpenID provider and its Node.js peers.
pub fn oidc_provider_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/oidc-provider")
}

/// A Node.js peer from [`oidc_provider_dir`] that prints `listening at URL`
/// once it serves; killed on drop.
pub struct NodePeer {
    pub url: String,
    port: u16,
    script: &'static str,
    port_env: &'static str,
    envs: Vec<(String, String)>,
    proc: Option<Proc>,
}

impl NodePeer {
    /// The test OpenID provider (server.mjs) issuing tokens for [`AUDIENCE`].
    pub fn provider(envs: &[(&str, &str)]) -> NodePeer {
        let mut all = vec![("OIDC_AUDIENCE", AUDIENCE)];
        all.extend_from_slice(envs);
        Self::start("server.mjs", "OIDC_PORT", &all)
    }

    pub fn start(script: &'static str, port_env: &'static str, envs: &[(&str, &str)]) -> NodePeer {
        Self::start_on(script, port_env, envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), 0)
    }

    fn start_on(script: &'static str, port_env: &'static str, envs: Vec<(String, String)>, port: u16) -> NodePeer {
        let dir = oidc_provider_dir();
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "the test OpenID provider is not installed: run scripts/install-test-peers.sh (or .ci/run)"
        );
        let mut cmd = Command::new(require("node"));
        cmd.arg(dir.join(script)).env(port_env, port.to_string());
        for (k, v) in &envs {
            cmd.env(k, v);
        }
        let (proc, lines) = start_daemon(cmd, &["listening at "]);
        let url = lines[0].split("listening at ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_string();
        let port = url.rsplit(':').next().unwrap().parse().unwrap();
        NodePeer { url, port, script, port_env, envs, proc: Some(proc) }
    }

    /// Stops the peer and starts it again on the same port: a new signing key.
    pub fn restart(&mut self) {
        // Stop (kill and reap) the old process first: the new one needs its port.
        self.proc.take();
        *self = NodePeer::start_on(self.script, self.port_env, self.envs.clone(), self.port);
    }
}

/// `aetherfs hub` on a free port with extra arguments (auth, TLS); unlike
/// [`Hub`], its URL may be https, so readiness is only polled over http.
pub struct AuthHub {
    pub url: String,
    _proc: Proc,
}

impl AuthHub {
    pub fn start(storage: &str, args: &[&str]) -> AuthHub {
        let mut cmd = Command::new(BIN);
        cmd.args(["hub", "--listen", "127.0.0.1:0", "--storage", storage]).args(args).env("AETHERFS_LOG", "info");
        let (proc, lines) = start_daemon(cmd, &["listening on "]);
        let url = lines[0].split("listening on ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_string();
        if url.starts_with("http://") {
            wait_http_ok(&url, "/readyz");
        }
        AuthHub { url, _proc: proc }
    }

    pub fn pid(&self) -> u32 {
        self._proc.child.id()
    }
}

/// How many file descriptors a process holds, from `/proc`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).expect("/proc fd")
}
