//! Client authentication end to end: the real binary against a hub that
//! requires auth, with tokens from the project's test OpenID provider
//! (scripts/oidc-provider/server.mjs, oidc-provider 9 on Node; installed by
//! scripts/install-test-peers.sh): the device-code login approved
//! programmatically, refresh when the access token expires and when the hub
//! refuses it, client credentials from the environment and flags, a token
//! file rotated under a running agent, and HTTPS with a test CA.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::harness::{
    AUDIENCE, AuthHub, BIN, NodePeer, http_get, make_tree, oidc_provider_dir, require, run_err, run_ok, start_daemon,
};

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Reads lines of `stream` into a channel, echoing them to the test's stderr.
fn lines(stream: impl Read + Send + 'static, tag: &'static str) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            eprintln!("[{tag}] {line}");
            let _ = tx.send(line);
        }
    });
    rx
}

/// The project's test OpenID provider on a free port.
struct Provider {
    issuer: String,
    _peer: NodePeer,
}

impl Provider {
    fn start(envs: &[(&str, &str)]) -> Provider {
        let peer = NodePeer::provider(envs);
        Provider { issuer: peer.url.clone(), _peer: peer }
    }

    /// A JWT access token signed with the provider's current key.
    fn sign(&self, payload: Value) -> String {
        let body = json!({ "payload": payload }).to_string();
        let hostport = self.issuer.trim_start_matches("http://");
        let mut s = TcpStream::connect(hostport).unwrap();
        write!(
            s,
            "POST /test/sign HTTP/1.0\r\nHost: {hostport}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let json = resp.split_once("\r\n\r\n").unwrap().1;
        let v: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {resp}"));
        v["token"].as_str().unwrap_or_else(|| panic!("no token: {resp}")).to_string()
    }

    /// A token like a projected service-account token: group `daemons`, valid until `exp`.
    fn workload_token(&self, exp: u64) -> String {
        self.sign(json!({
            "iss": self.issuer, "aud": AUDIENCE, "sub": "system:serviceaccount:data:agent",
            "client_id": "k8s", "groups": ["daemons"], "iat": now() - 1, "exp": exp,
            "jti": format!("t-{exp}-{}", rand::random::<u32>()),
        }))
    }
}

/// A hub process with extra arguments (auth, TLS), on local storage.
struct TestHub {
    url: String,
    _hub: AuthHub,
    _dir: tempfile::TempDir,
}

impl TestHub {
    fn start(args: &[&str]) -> TestHub {
        let dir = tempfile::tempdir().unwrap();
        let storage = format!("file://{}", dir.path().join("data").display());
        let hub = AuthHub::start(&storage, args);
        TestHub { url: hub.url.clone(), _hub: hub, _dir: dir }
    }

    /// A hub that takes the provider's tokens (no leeway on expiry): the
    /// device-flow user (group team-a) writes, workloads (group daemons) read.
    fn with_auth(provider: &Provider, dir: &Path) -> TestHub {
        let config = dir.join("hub-auth.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[[oidc]]
issuer = "{}"
audience = "{AUDIENCE}"
groups_claim = "groups"
leeway_secs = 0

[[rule]]
datasets = "**"
write = ["group:team-a"]
read = ["group:daemons"]
"#,
                provider.issuer
            ),
        )
        .unwrap();
        TestHub::start(&["--auth-config", config.to_str().unwrap()])
    }

    /// `aetherfs` pointed at this hub, with its own config dir and no
    /// credentials inherited from the environment.
    fn cmd(&self, config_dir: &Path) -> Command {
        let mut c = Command::new(BIN);
        c.env("AETHERFS_HUB", &self.url).env("AETHERFS_CONFIG_DIR", config_dir).env("AETHERFS_LOG", "warn");
        for k in [
            "AETHERFS_TOKEN",
            "AETHERFS_TOKEN_FILE",
            "AETHERFS_CLIENT_ID",
            "AETHERFS_CLIENT_SECRET",
            "AETHERFS_USER",
            "AETHERFS_PASSWORD",
            "AETHERFS_OIDC_ISSUER",
            "AETHERFS_OIDC_AUDIENCE",
            "AETHERFS_OIDC_SCOPE",
            "AETHERFS_CA_FILE",
        ] {
            c.env_remove(k);
        }
        c.stdin(Stdio::null());
        c
    }
}

/// Runs `aetherfs login` and approves its device code the way a user's
/// browser would (scripts/oidc-provider/approve.py); returns its stdout.
fn login(hub: &TestHub, provider: &Provider, config_dir: &Path, extra: &[&str]) -> String {
    let mut child = hub
        .cmd(config_dir)
        .args(["login", "--issuer", &provider.issuer, "--client-id", "cli-client"])
        .args(["--scope", "openid offline_access datasets:read", "--poll-interval", "0.2"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn login");
    let err = lines(child.stderr.take().unwrap(), "login");
    let mut stdout = child.stdout.take().unwrap();
    let uri = loop {
        let line = err.recv_timeout(Duration::from_secs(60)).expect("login printed no verification URI");
        if let Some(u) = line.split_whitespace().find(|w| w.starts_with("http") && w.contains("user_code=")) {
            break u.to_string();
        }
    };
    let approve = oidc_provider_dir().join("approve.py");
    run_ok(Command::new(require("python3")).arg(approve).arg(&uri));
    let mut out = String::new();
    stdout.read_to_string(&mut out).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "login failed: {out}");
    out
}

fn stored(config_dir: &Path, hub: &TestHub) -> Value {
    let text = std::fs::read_to_string(config_dir.join("credentials.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let key = format!("{}/", hub.url.trim_end_matches('/'));
    v["hubs"][&key].clone()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn device_code_login_stores_refreshable_credentials_and_refreshes_them() {
    let provider = Provider::start(&[("OIDC_ACCESS_TTL", "5")]);
    let tmp = tempfile::tempdir().unwrap();
    let hub = TestHub::with_auth(&provider, tmp.path());
    let config_dir = tmp.path().join("config/aetherfs");
    let data = tmp.path().join("data");
    make_tree(&data, 100_000);

    // Without credentials the hub refuses, and the error says what to do.
    let out = run_err(hub.cmd(&config_dir).arg("ls"));
    let err = stderr(&out);
    assert!(err.contains("aetherfs login") && err.contains("HTTP 401"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let report: Value = serde_json::from_str(&login(&hub, &provider, &config_dir, &["--json"])).unwrap();
    assert_eq!(report["subject"], "alice");
    assert_eq!(report["refreshable"], true);
    assert_eq!(report["issuer"], provider.issuer.as_str());

    // Stored privately, with a refresh token.
    assert_eq!(mode(&config_dir.join("credentials.json")), 0o600);
    assert_eq!(mode(&config_dir), 0o700);
    let first = stored(&config_dir, &hub);
    let rt0 = first["refresh_token"].as_str().expect("a refresh token").to_string();
    assert!(first["access_token"].as_str().unwrap().len() > 20);

    // The login authorizes writes.
    let pushed = run_ok(hub.cmd(&config_dir).args(["push", "--quiet"]).arg(&data).arg("team-a/geo:v1"));
    assert!(pushed.contains("team-a/geo@"), "{pushed}");

    // After the access token expired, the next command refreshes it first:
    // it succeeds, and the rotated refresh token is on disk.
    std::thread::sleep(Duration::from_secs(6));
    let listed = run_ok(hub.cmd(&config_dir).arg("ls"));
    assert!(listed.contains("team-a/geo"), "{listed}");
    let second = stored(&config_dir, &hub);
    let rt1 = second["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt0, "the refresh token was not rotated");
    assert_ne!(second["access_token"], first["access_token"]);
    assert_eq!(mode(&config_dir.join("credentials.json")), 0o600);

    // A token the client still believes fresh but the hub refuses (expired
    // by the hub's clock): the 401 makes the client refresh once and retry.
    let mut file: Value =
        serde_json::from_str(&std::fs::read_to_string(config_dir.join("credentials.json")).unwrap()).unwrap();
    let key = format!("{}/", hub.url.trim_end_matches('/'));
    file["hubs"][&key]["expires_at"] = json!(now() + 3600);
    std::fs::write(config_dir.join("credentials.json"), serde_json::to_vec(&file).unwrap()).unwrap();
    std::thread::sleep(Duration::from_secs(6));
    let inspected = run_ok(hub.cmd(&config_dir).args(["inspect", "team-a/geo:v1"]));
    assert!(!inspected.is_empty());
    let third = stored(&config_dir, &hub);
    assert_ne!(third["refresh_token"].as_str().unwrap(), rt1, "no refresh after the 401");

    // Logout forgets the login: the hub refuses again.
    let out = run_ok(hub.cmd(&config_dir).args(["logout", "--json"]));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["removed"], true);
    assert!(stored(&config_dir, &hub).is_null());
    run_err(hub.cmd(&config_dir).arg("ls"));
}

#[test]
fn client_credentials_and_tokens_from_the_environment_and_flags() {
    let provider = Provider::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let hub = TestHub::with_auth(&provider, tmp.path());
    let config_dir = tmp.path().join("config");
    let cc = |c: &mut Command, secret: &str| {
        c.env("AETHERFS_CLIENT_ID", "daemon-client")
            .env("AETHERFS_CLIENT_SECRET", secret)
            .env("AETHERFS_OIDC_ISSUER", &provider.issuer)
            .env("AETHERFS_OIDC_SCOPE", "datasets:read");
    };

    // CI: client credentials from the environment (group daemons may read).
    let mut c = hub.cmd(&config_dir);
    cc(&mut c, "daemon-client-secret");
    run_ok(c.arg("ls"));
    let mut c = hub.cmd(&config_dir);
    cc(&mut c, "wrong");
    let err = stderr(&run_err(c.arg("ls")));
    assert!(err.contains("invalid_client"), "{err}");
    // ... and from flags, which win over the environment.
    let mut c = hub.cmd(&config_dir);
    cc(&mut c, "wrong");
    c.args(["ls", "--client-id", "daemon-client", "--client-secret", "daemon-client-secret"]);
    run_ok(&mut c);
    // Read-only: a push is forbidden (403), not unauthorized.
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), "x").unwrap();
    let mut c = hub.cmd(&config_dir);
    cc(&mut c, "daemon-client-secret");
    let err = stderr(&run_err(c.args(["push", "--quiet"]).arg(&data).arg("team-a/x:v1")));
    assert!(err.contains("403"), "{err}");

    // A static token, and a token file.
    let token = provider.workload_token(now() + 600);
    run_ok(hub.cmd(&config_dir).env("AETHERFS_TOKEN", &token).arg("ls"));
    let file = tmp.path().join("token");
    std::fs::write(&file, &token).unwrap();
    run_ok(hub.cmd(&config_dir).arg("ls").arg("--token-file").arg(&file));
    run_ok(hub.cmd(&config_dir).env("AETHERFS_TOKEN_FILE", &file).arg("ls"));
    // Two kinds at once in the environment is a mistake, said as such.
    let err = stderr(&run_err(
        hub.cmd(&config_dir).env("AETHERFS_TOKEN", &token).env("AETHERFS_TOKEN_FILE", &file).arg("ls"),
    ));
    assert!(err.contains("set twice"), "{err}");
}

#[test]
fn agent_follows_a_rotated_token_file_without_restart() {
    let provider = Provider::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let hub = TestHub::with_auth(&provider, tmp.path());
    let config_dir = tmp.path().join("config");

    // Publish as the device-flow user... through a signed user token.
    let writer = provider.sign(json!({
        "iss": provider.issuer, "aud": AUDIENCE, "sub": "alice", "client_id": "cli-client",
        "groups": ["team-a"], "iat": now() - 1, "exp": now() + 600, "jti": "writer",
    }));
    let push = |dir: &Path| -> String {
        let out =
            run_ok(hub.cmd(&config_dir).env("AETHERFS_TOKEN", &writer).args(["push"]).arg(dir).arg("team-a/app:live"));
        out.lines().last().unwrap().split('@').nth(1).unwrap().trim().to_string()
    };
    let v1 = tmp.path().join("v1");
    std::fs::create_dir_all(&v1).unwrap();
    std::fs::write(v1.join("a.txt"), "one").unwrap();
    let d1 = push(&v1);

    // The agent's token file starts out holding an expired token.
    let token_file = tmp.path().join("sa-token");
    std::fs::write(&token_file, provider.workload_token(now() - 60)).unwrap();
    let config = tmp.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[admin]
listen = "127.0.0.1:0"
[cache]
dir = "{}"
[fetch]
poll_secs = 1
[auth]
token_file = "{}"
[[mount]]
ref = "team-a/app:live"
webdav = "127.0.0.1:0"
"#,
            tmp.path().join("cache").display(),
            token_file.display()
        ),
    )
    .unwrap();
    let mut cmd = hub.cmd(&config_dir);
    cmd.args(["agent", "--config"]).arg(&config);
    let (_agent, found) = start_daemon(cmd, &["admin on "]);
    let admin = found[0].split("admin on ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let wait_for = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(http_get(&admin, "/readyz").map(|r| r.0), Some(503), "ready with an expired token");

    // The kubelet rotates the token (a new file renamed over the old): the
    // agent picks it up without a restart.
    let rotate = |token: String| {
        let tmp_file = token_file.with_extension("new");
        std::fs::write(&tmp_file, token).unwrap();
        std::fs::rename(&tmp_file, &token_file).unwrap();
    };
    let short = now() + 4;
    rotate(provider.workload_token(short));
    wait_for("readiness after the rotation", &|| http_get(&admin, "/readyz").map(|r| r.0) == Some(200));
    let current = || -> String {
        let v: Value = serde_json::from_str(&http_get(&admin, "/v1/mounts").unwrap().1).unwrap();
        v.to_string()
    };
    assert!(current().contains(&d1));

    // That token expires; the next rotation arrives a moment later. The
    // agent keeps following the tag with it.
    while now() <= short {
        std::thread::sleep(Duration::from_millis(200));
    }
    rotate(provider.workload_token(now() + 600));
    let v2 = tmp.path().join("v2");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::write(v2.join("a.txt"), "two").unwrap();
    let d2 = push(&v2);
    wait_for("the switch to v2", &|| current().contains(&d2));
}

/// A CA and a certificate it signed for 127.0.0.1 and localhost, as PEM files.
fn test_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let paths =
        (dir.join(format!("{name}-ca.pem")), dir.join(format!("{name}-cert.pem")), dir.join(format!("{name}-key.pem")));
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    (paths.0, paths.1, paths.2)
}

#[test]
fn https_hub_verified_with_a_ca_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca(tmp.path(), "hub");
    let (wrong_ca, _, _) = test_ca(tmp.path(), "other");
    let hub = TestHub::start(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    assert!(hub.url.starts_with("https://"), "{}", hub.url);
    let config_dir = tmp.path().join("config");

    // Trusted through --ca-file (and AETHERFS_CA_FILE): push and list over TLS.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !hub.cmd(&config_dir).arg("ls").arg("--ca-file").arg(&ca).output().unwrap().status.success() {
        assert!(Instant::now() < deadline, "the https hub never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let data = tmp.path().join("data");
    make_tree(&data, 10_000);
    run_ok(hub.cmd(&config_dir).env("AETHERFS_CA_FILE", &ca).args(["push", "--quiet"]).arg(&data).arg("acme/tls:v1"));
    let listed = run_ok(hub.cmd(&config_dir).arg("ls").arg("--ca-file").arg(&ca));
    assert!(listed.contains("acme/tls"), "{listed}");

    // A wrong CA is refused, with one clear line.
    let out = run_err(hub.cmd(&config_dir).arg("ls").arg("--ca-file").arg(&wrong_ca));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("error: TLS: the hub's certificate is not trusted by CA file {}", wrong_ca.display())),
        "{err}"
    );
    // Without a CA file the system's roots do not know the test CA either.
    let err = stderr(&run_err(hub.cmd(&config_dir).arg("ls")));
    assert!(err.contains("TLS: the hub's certificate is not trusted by the system's CA roots"), "{err}");
    // A CA file that is not one.
    let err = stderr(&run_err(hub.cmd(&config_dir).arg("ls").arg("--ca-file").arg(&key)));
    assert!(err.contains("cannot use CA file"), "{err}");
}
