//! Auth end to end, through the real `aetherfs hub` and real peers: the test
//! OpenID provider (scripts/oidc-provider/server.mjs: panva's oidc-provider 9
//! on Node.js), a stand-in Kubernetes service-account issuer over HTTPS with a
//! private CA (kubernetes-issuer.mjs), basic auth from a users file written by
//! `aetherfs hub passwd`, and HTTPS with test CAs made here (rcgen), checked
//! with curl and reqwest. scripts/install-test-peers.sh installs the peers.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::{Value, json};

use crate::harness::{AUDIENCE, AuthHub, BIN, Hub, NodePeer, oidc_provider_dir, require, run_ok};

// ------------------------------------------------------------------ peers

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

async fn post_form(url: &str, basic: Option<(&str, &str)>, pairs: &[(&str, &str)]) -> Value {
    let mut rb =
        reqwest::Client::new().post(url).header("content-type", "application/x-www-form-urlencoded").body(form(pairs));
    if let Some((u, p)) = basic {
        rb = rb.basic_auth(u, Some(p));
    }
    let r = rb.send().await.unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert!(status.is_success(), "POST {url}: {status} {v}");
    v
}

/// An access token from the provider's token endpoint (client credentials).
async fn client_token(provider: &NodePeer, client: &str, resource: Option<&str>) -> String {
    let secret = format!("{client}-secret");
    let mut pairs = vec![("grant_type", "client_credentials"), ("scope", "datasets:read")];
    if let Some(r) = resource {
        pairs.push(("resource", r));
    }
    let v = post_form(&format!("{}/token", provider.url), Some((client, &secret)), &pairs).await;
    v["access_token"].as_str().unwrap().to_string()
}

/// An ID token, from a real device-flow login (approved by approve.py).
async fn id_token(provider: &NodePeer) -> String {
    let issuer = &provider.url;
    let d = post_form(
        &format!("{issuer}/device/auth"),
        None,
        &[("client_id", "cli-client"), ("scope", "openid datasets:read")],
    )
    .await;
    let uri = d["verification_uri_complete"].as_str().unwrap();
    run_ok(Command::new(require("python3")).arg(oidc_provider_dir().join("approve.py")).arg(uri));
    let t = post_form(
        &format!("{issuer}/token"),
        None,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", d["device_code"].as_str().unwrap()),
            ("client_id", "cli-client"),
        ],
    )
    .await;
    t["id_token"].as_str().expect("the device flow with openid gives an ID token").to_string()
}

/// A JWT signed by the provider process: key `current` (its signing key),
/// `other` (a key not in its JWKS) or `hmac-public` (HS256 keyed with its
/// public key's PEM).
async fn signed(provider: &NodePeer, payload: &Value, header: &Value, key: &str) -> String {
    let r = reqwest::Client::new()
        .post(format!("{}/test/sign", provider.url))
        .json(&json!({ "payload": payload, "header": header, "key": key }))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    v["token"].as_str().unwrap_or_else(|| panic!("signing failed: {v}")).to_string()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The claims of a valid access token of `issuer` for a reader.
fn reader_claims(issuer: &str) -> Value {
    let t = now();
    json!({
        "iss": issuer, "aud": AUDIENCE, "sub": "reader", "client_id": "reader", "groups": ["readers"],
        "iat": t, "exp": t + 600, "jti": format!("j{t}"),
    })
}

// -------------------------------------------------------------------- hub

/// Pushes one small version of each dataset through an open hub on `storage`;
/// returns the digests.
pub(crate) fn seed(storage: &str, names: &[&str]) -> Vec<String> {
    let hub = Hub::start(storage);
    let mut digests = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("data.txt"), format!("version of {name} #{i}\n")).unwrap();
        let out = run_ok(hub.cmd().arg("push").arg(src.path()).arg(format!("{name}:v1")));
        let last = out.lines().last().unwrap();
        digests.push(last.split_once('@').unwrap().1.to_string());
    }
    digests
}

pub(crate) struct Answer {
    pub status: u16,
    pub body: Value,
    pub challenges: Vec<String>,
}

impl Answer {
    #[track_caller]
    fn unauthorized(&self, why: &str) -> String {
        assert_eq!(self.status, 401, "{why}: {}", self.body);
        assert_eq!(self.body["error"]["code"], "unauthorized", "{why}");
        assert!(
            self.challenges.iter().any(|c| c.starts_with("Bearer realm=\"aetherfs\"")),
            "{why}: {:?}",
            self.challenges
        );
        self.body["error"]["message"].as_str().unwrap().to_string()
    }
}

pub(crate) async fn call(method: reqwest::Method, url: &str, auth: Option<&str>, body: Option<Value>) -> Answer {
    let mut rb = reqwest::Client::new().request(method, url);
    if let Some(a) = auth {
        rb = rb.header("authorization", a);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let challenges = r.headers().get_all("www-authenticate").iter().map(|v| v.to_str().unwrap().to_string()).collect();
    let text = r.text().await.unwrap();
    Answer { status, body: serde_json::from_str(&text).unwrap_or(Value::String(text)), challenges }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn listed(hub: &str, auth: &str) -> Vec<String> {
    let a = call(reqwest::Method::GET, &format!("{hub}/v1/datasets"), Some(auth), None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["datasets"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap().to_string()).collect()
}

pub(crate) fn write_config(dir: &Path, text: &str) -> String {
    let p = dir.join("auth.toml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

// ------------------------------------------------------------------ tests

/// Tokens from a real provider: a valid one reads; wrong audience, untrusted
/// or forged issuer, expired, not yet valid, another key, an unknown key,
/// `alg: none`, HS256 keyed with the public key and an ID token are each
/// refused with 401; rules hold for readers and writers; and after the
/// provider rotates its key, new tokens work without restarting the hub.
#[tokio::test(flavor = "multi_thread")]
async fn oidc_access_tokens_from_a_real_provider() {
    let data = tempfile::tempdir().unwrap();
    let storage = format!("file://{}", data.path().join("hub").display());
    let digests = seed(&storage, &["team-a/x", "team-b/y"]);
    let mut provider = NodePeer::provider(&[]);
    let issuer = provider.url.clone();
    let config = write_config(
        data.path(),
        &format!(
            r#"
            [[oidc]]
            issuer = "{issuer}"
            audience = "{AUDIENCE}"
            groups_claim = "groups"
            leeway_secs = 5
            jwks_refresh_min_secs = 1
            [[rule]]
            datasets = "team-a/**"
            read = ["group:readers"]
            write = ["group:team-a"]
            [[rule]]
            datasets = "team-b/**"
            write = ["group:team-b"]
            "#
        ),
    );
    let hub = AuthHub::start(&storage, &["--auth-config", &config]);
    let tag_a = format!("{}/v1/datasets/team-a/x/tags/v1", hub.url);
    let get_a = |auth: String| {
        let url = tag_a.clone();
        async move { call(reqwest::Method::GET, &url, Some(&auth), None).await }
    };

    // A valid token from the provider reads; without one, 401.
    let reader = client_token(&provider, "reader", None).await;
    let a = get_a(bearer(&reader)).await;
    assert_eq!((a.status, a.body["digest"].as_str()), (200, Some(digests[0].as_str())), "{}", a.body);
    let a = call(reqwest::Method::GET, &tag_a, None, None).await;
    a.unauthorized("no token");
    assert_eq!(listed(&hub.url, &bearer(&reader)).await, vec!["team-a/x"]);

    // The reader cannot tag or push; team-b is not theirs to read.
    let set_v2 =
        |name: &str, digest: &str| (format!("{}/v1/datasets/{name}/tags/v2", hub.url), json!({"digest": digest}));
    let (url, body) = set_v2("team-a/x", &digests[0]);
    let a = call(reqwest::Method::PUT, &url, Some(&bearer(&reader)), Some(body)).await;
    assert_eq!((a.status, &a.body["error"]["code"]), (403, &json!("forbidden")), "{}", a.body);
    let pack = format!("{}/v1/datasets/team-a/x/packs/{}", hub.url, digests[0]);
    assert_eq!(call(reqwest::Method::PUT, &pack, Some(&bearer(&reader)), Some(json!({}))).await.status, 403);
    let tag_b = format!("{}/v1/datasets/team-b/y/tags/v1", hub.url);
    assert_eq!(call(reqwest::Method::GET, &tag_b, Some(&bearer(&reader)), None).await.status, 403);

    // A writer of team-a tags there (recorded as theirs), not in team-b.
    let writer = client_token(&provider, "writer-a", None).await;
    let (url, body) = set_v2("team-a/x", &digests[0]);
    let a = call(reqwest::Method::PUT, &url, Some(&bearer(&writer)), Some(body)).await;
    assert_eq!((a.status, &a.body["by"]), (200, &json!("writer-a")), "{}", a.body);
    let (url, body) = set_v2("team-b/y", &digests[1]);
    assert_eq!(call(reqwest::Method::PUT, &url, Some(&bearer(&writer)), Some(body)).await.status, 403);
    assert_eq!(listed(&hub.url, &bearer(&writer)).await, vec!["team-a/x"]);
    let writer_b = client_token(&provider, "writer-b", None).await;
    assert_eq!(listed(&hub.url, &bearer(&writer_b)).await, vec!["team-b/y"]);

    // A token signed here with the provider's key and valid claims passes:
    // each forgery below differs from it in one thing only.
    let at = json!({"typ": "at+jwt"});
    let good = signed(&provider, &reader_claims(&issuer), &at, "current").await;
    assert_eq!(get_a(bearer(&good)).await.status, 200);

    let mut cases: Vec<(&str, String, &str)> = Vec::new();
    cases.push(("wrong audience", client_token(&provider, "reader", Some("urn:other")).await, "audience"));
    let mut c = reader_claims(&issuer);
    c["iss"] = json!("https://idp.evil.example");
    cases.push(("forged issuer", signed(&provider, &c, &at, "current").await, "not trusted"));
    let untrusted = NodePeer::provider(&[]);
    cases.push(("untrusted provider", client_token(&untrusted, "reader", None).await, "not trusted"));
    let mut c = reader_claims(&issuer);
    c["exp"] = json!(now() - 600);
    cases.push(("expired", signed(&provider, &c, &at, "current").await, "expired"));
    let mut c = reader_claims(&issuer);
    c["nbf"] = json!(now() + 600);
    cases.push(("not yet valid", signed(&provider, &c, &at, "current").await, "not valid yet"));
    cases.push(("another key, same kid", signed(&provider, &reader_claims(&issuer), &at, "other").await, "signature"));
    let other_kid = json!({"typ": "at+jwt", "kid": "not-a-key-of-the-provider"});
    cases.push(("unknown kid", signed(&provider, &reader_claims(&issuer), &other_kid, "current").await, "unknown key"));
    let none_header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "at+jwt"}).to_string());
    let none_claims = URL_SAFE_NO_PAD.encode(reader_claims(&issuer).to_string());
    cases.push(("alg none", format!("{none_header}.{none_claims}."), "alg none"));
    cases.push((
        "HS256 keyed with the public key",
        signed(&provider, &reader_claims(&issuer), &at, "hmac-public").await,
        "HMAC",
    ));
    cases.push(("ID token", id_token(&provider).await, "not an access token"));
    let mut c = reader_claims(&issuer);
    c["aud"] = json!(AUDIENCE);
    c["nonce"] = json!("n-0S6_WzA2Mj");
    cases.push(("typed access token with ID-token claims", signed(&provider, &c, &at, "current").await, "ID token"));
    cases.push(("garbage", "not.a.jwt".to_string(), "not base64url"));
    for (what, token, reason) in &cases {
        let a = get_a(bearer(token)).await;
        let msg = a.unauthorized(what);
        assert!(msg.contains(reason), "{what}: {msg}");
        assert!(a.challenges.iter().any(|c| c.contains("error=\"invalid_token\"")), "{what}: {:?}", a.challenges);
    }

    // Key rotation: the provider restarts with a new key; the hub, still
    // running, fetches the new JWKS when it sees the unknown kid.
    tokio::time::sleep(Duration::from_millis(1500)).await; // past jwks_refresh_min_secs
    provider.restart();
    assert_eq!(provider.url, issuer);
    let rotated = client_token(&provider, "reader", None).await;
    let a = get_a(bearer(&rotated)).await;
    assert_eq!(a.status, 200, "token after rotation: {}", a.body);
    let msg = get_a(bearer(&reader)).await.unauthorized("token of the retired key");
    assert!(msg.contains("unknown key"), "{msg}");
}

/// Projected service-account tokens of a Kubernetes-like issuer: discovery
/// without authorization_endpoint, over HTTPS with a private CA and a bearer
/// token; groups per namespace; subjects in rules.
#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_service_account_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("cluster CA");
    let (cert, key) = pki.server_cert();
    let files = dir.path();
    std::fs::write(files.join("ca.pem"), pki.ca_pem()).unwrap();
    std::fs::write(files.join("k8s.crt"), cert).unwrap();
    std::fs::write(files.join("k8s.key"), key).unwrap();
    std::fs::write(files.join("sa-token"), "discovery-secret\n").unwrap();
    let path = |n: &str| files.join(n).to_str().unwrap().to_string();
    let issuer = NodePeer::start(
        "kubernetes-issuer.mjs",
        "K8S_PORT",
        &[
            ("K8S_TLS_CERT", &path("k8s.crt")),
            ("K8S_TLS_KEY", &path("k8s.key")),
            ("K8S_DISCOVERY_TOKEN", "discovery-secret"),
        ],
    );
    assert!(issuer.url.starts_with("https://"));
    let storage = format!("file://{}", files.join("hub").display());
    let digests = seed(&storage, &["team-a/x"]);
    let config = write_config(
        files,
        &format!(
            r#"
            [[oidc]]
            issuer = "{}"
            audience = "aetherfs"
            token_type = "kubernetes"
            ca_file = "ca.pem"
            discovery_token_file = "sa-token"
            [[rule]]
            datasets = "team-a/**"
            read = ["group:system:serviceaccounts:team-a"]
            write = ["user:system:serviceaccount:ci:pusher"]
            "#,
            issuer.url
        ),
    );
    let hub = AuthHub::start(&storage, &["--auth-config", &config]);
    let tls_client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pki.ca_pem().as_bytes()).unwrap()])
        .build()
        .unwrap();
    let sa_token = |ns: &'static str, sa: &'static str, aud: &'static str| {
        let (client, url) = (tls_client.clone(), format!("{}/test/token", issuer.url));
        async move {
            let r =
                client.post(url).json(&json!({"namespace": ns, "serviceaccount": sa, "audience": aud})).send().await;
            let v: Value = r.unwrap().json().await.unwrap();
            bearer(v["token"].as_str().unwrap())
        }
    };
    let tag = format!("{}/v1/datasets/team-a/x/tags/v1", hub.url);

    let a = call(reqwest::Method::GET, &tag, Some(&sa_token("team-a", "reader", "aetherfs").await), None).await;
    assert_eq!(a.status, 200, "a pod of team-a reads: {}", a.body);
    let a = call(reqwest::Method::GET, &tag, Some(&sa_token("team-b", "reader", "aetherfs").await), None).await;
    assert_eq!(a.status, 403, "a pod of team-b does not: {}", a.body);
    let a = call(reqwest::Method::GET, &tag, Some(&sa_token("team-a", "reader", "kubernetes").await), None).await;
    let msg = a.unauthorized("the API server's own audience");
    assert!(msg.contains("audience"), "{msg}");

    let pusher = sa_token("ci", "pusher", "aetherfs").await;
    let url = format!("{}/v1/datasets/team-a/x/tags/v2", hub.url);
    let a = call(reqwest::Method::PUT, &url, Some(&pusher), Some(json!({"digest": digests[0]}))).await;
    assert_eq!((a.status, &a.body["by"]), (200, &json!("system:serviceaccount:ci:pusher")), "{}", a.body);
}

/// Basic auth: `aetherfs hub passwd` writes an argon2id hash (no plain text,
/// mode 0600); the right password works, a wrong one is 401; a changed
/// password takes effect without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_with_a_users_file() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let passwd = |pw: &str| add_user(&users, "alice", "team-a", pw);
    passwd("correct horse battery");
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(text.contains("alice:$argon2id$") && text.trim_end().ends_with(":team-a"), "{text}");
    assert!(!text.contains("correct horse"), "plain text in the users file: {text}");
    assert_eq!(std::fs::metadata(&users).unwrap().permissions().mode() & 0o777, 0o600);

    let storage = format!("file://{}", dir.path().join("hub").display());
    seed(&storage, &["team-a/x"]);
    let config = write_config(
        dir.path(),
        "[basic]\nusers_file = \"users\"\n[[rule]]\ndatasets = \"team-a/*\"\nread = [\"group:team-a\"]\n",
    );
    let hub = AuthHub::start(&storage, &["--auth-config", &config]);
    let tag = format!("{}/v1/datasets/team-a/x/tags/v1", hub.url);
    let basic = |pw: &str| aetherfs_hub::auth::basic_authorization("alice", pw);

    assert_eq!(call(reqwest::Method::GET, &tag, Some(&basic("correct horse battery")), None).await.status, 200);
    let a = call(reqwest::Method::GET, &tag, Some(&basic("wrong")), None).await;
    assert_eq!((a.status, &a.body["error"]["code"]), (401, &json!("unauthorized")));
    assert!(a.challenges.iter().any(|c| c.starts_with("Basic realm=\"aetherfs\"")), "{:?}", a.challenges);

    passwd("new password");
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(reqwest::Method::GET, &tag, Some(&basic("new password")), None).await.status != 200 {
        assert!(Instant::now() < deadline, "the changed password never took effect");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(call(reqwest::Method::GET, &tag, Some(&basic("correct horse battery")), None).await.status, 401);
}

/// Adds a basic-auth user to a users file through `aetherfs hub passwd`.
pub(crate) fn add_user(users: &Path, user: &str, group: &str, password: &str) {
    let mut child = Command::new(BIN)
        .args(["hub", "passwd"])
        .arg(users)
        .args([user, "--group", group])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

/// A tenant's agent reads its own datasets and leases only them; garbage
/// collection needs admin on every dataset, and its report is where an
/// operator of the whole hub sees every tenant's leases.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenants_agent_reads_and_leases_its_own_and_collection_needs_admin_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    add_user(&users, "a-reader", "team-a", "pw-a");
    add_user(&users, "root", "ops", "pw-root");
    let storage = format!("file://{}", dir.path().join("hub").display());
    let digests = seed(&storage, &["team-a/x", "team-b/y"]);
    let config = write_config(
        dir.path(),
        "[basic]\nusers_file = \"users\"\n\
         [[rule]]\ndatasets = \"team-a/**\"\nread = [\"group:team-a\"]\n\
         [[rule]]\ndatasets = \"**\"\nadmin = [\"group:ops\"]\n",
    );
    let hub = AuthHub::start(&storage, &["--auth-config", &config]);
    let port = crate::harness::free_port();
    let agent_cfg = dir.path().join("agent.toml");
    std::fs::write(
        &agent_cfg,
        format!(
            "reader = \"team-a-pod\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[cache]\ndir = {:?}\n\
             [[mount]]\nref = \"team-a/x:v1\"\nwebdav = \"127.0.0.1:{port}\"\n",
            dir.path().join("cache").display().to_string()
        ),
    )
    .unwrap();
    let envs = [("AETHERFS_USER", "a-reader"), ("AETHERFS_PASSWORD", "pw-a")];
    let mut agent = crate::harness::Agent::start_at(&hub.url, &agent_cfg, None, &envs, true);
    let got =
        Command::new(require("curl")).args(["-fsS", &format!("http://127.0.0.1:{port}/data.txt")]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout), "version of team-a/x #0\n");

    // The same credentials may not protect (or learn of) team-b's versions.
    let reader = aetherfs_hub::auth::basic_authorization("a-reader", "pw-a");
    let lease_b = format!("{}/v1/datasets/team-b/y/leases/team-a-pod", hub.url);
    let a = call(reqwest::Method::PUT, &lease_b, Some(&reader), Some(json!({ "versions": [digests[1]] }))).await;
    assert_eq!(a.status, 403, "{}", a.body);
    let a =
        call(reqwest::Method::POST, &format!("{}/v1/gc", hub.url), Some(&reader), Some(json!({"dry_run": true}))).await;
    assert_eq!((a.status, &a.body["error"]["code"]), (403, &json!("forbidden")), "{}", a.body);

    // The operator sees the agent's lease, on team-a only.
    let root = aetherfs_hub::auth::basic_authorization("root", "pw-root");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = call(reqwest::Method::POST, &format!("{}/v1/gc", hub.url), Some(&root), Some(json!({"dry_run": true})))
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        let held: Vec<(String, u64)> = a.body["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["name"].as_str().unwrap().to_string(), d["leases_held"].as_u64().unwrap()))
            .collect();
        if held.contains(&("team-a/x".to_string(), 1)) {
            assert!(held.contains(&("team-b/y".to_string(), 0)), "{held:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the agent's lease never arrived: {held:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent.stop();
}

/// Over a real socket the hub sees the client's address: once an address
/// reaches its failure limit, even a right password from it gets 429 with
/// Retry-After (the user's own limit does not apply to an address the user
/// signed in from, so only the address limit can refuse here).
#[tokio::test(flavor = "multi_thread")]
async fn failed_sign_ins_are_limited_per_client_address() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    aetherfs_hub::auth::set_user(&users, "alice", &aetherfs_hub::auth::hash_password("pw").unwrap(), &[]).unwrap();
    let storage = format!("file://{}", dir.path().join("hub").display());
    seed(&storage, &["team-a/x"]);
    let config = write_config(
        dir.path(),
        "[basic]\nusers_file = \"users\"\nmax_failures_per_address = 3\nfailure_window_secs = 600\n\
         [[rule]]\ndatasets = \"team-a/*\"\nread = [\"user:alice\"]\n",
    );
    let hub = AuthHub::start(&storage, &["--auth-config", &config]);
    let tag = format!("{}/v1/datasets/team-a/x/tags/v1", hub.url);
    let basic = |pw: &str| aetherfs_hub::auth::basic_authorization("alice", pw);
    assert_eq!(call(reqwest::Method::GET, &tag, Some(&basic("pw")), None).await.status, 200);
    for _ in 0..3 {
        assert_eq!(call(reqwest::Method::GET, &tag, Some(&basic("guess")), None).await.status, 401);
    }
    let r = reqwest::Client::new().get(&tag).header("authorization", basic("pw")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=600).contains(&retry), "{retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_failures");
}

// ------------------------------------------------------------------ HTTPS

/// A test CA that signs server certificates for 127.0.0.1 and localhost.
struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_pem = params.self_signed(&key).unwrap().pem();
        Pki { ca_pem, issuer: Issuer::new(params, key) }
    }

    fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// (certificate PEM, key PEM).
    fn server_cert(&self) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "aetherfs hub");
        (params.signed_by(&key, &self.issuer).unwrap().pem(), key.serialize_pem())
    }
}

/// Writes a file by renaming a temporary one over it, as cert-manager does.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn curl(ca: &Path, url: &str) -> std::process::Output {
    Command::new(require("curl")).args(["-sS", "--max-time", "10", "--cacert"]).arg(ca).arg(url).output().unwrap()
}

/// HTTPS from a test CA: curl and reqwest verify the hub with that CA and
/// refuse it with another; a renewed certificate is served without a
/// restart; bad files stop the hub at start with a clear error.
#[tokio::test(flavor = "multi_thread")]
async fn https_with_a_test_ca_and_certificate_reload() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca1, ca2) = (Pki::new("test CA one"), Pki::new("test CA two"));
    std::fs::write(d.join("ca1.pem"), ca1.ca_pem()).unwrap();
    std::fs::write(d.join("ca2.pem"), ca2.ca_pem()).unwrap();
    let (cert1, key1) = ca1.server_cert();
    let (cert2, key2) = ca2.server_cert();
    std::fs::write(d.join("hub.crt"), &cert1).unwrap();
    std::fs::write(d.join("hub.key"), &key1).unwrap();
    let arg = |n: &str| d.join(n).to_str().unwrap().to_string();

    let hub = AuthHub::start("memory://", &["--tls-cert", &arg("hub.crt"), "--tls-key", &arg("hub.key")]);
    assert!(hub.url.starts_with("https://127.0.0.1:"), "{}", hub.url);
    let healthz = format!("{}/healthz", hub.url);

    let out = curl(&d.join("ca1.pem"), &healthz);
    assert!(out.status.success(), "curl with the right CA: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
    let out = curl(&d.join("ca2.pem"), &healthz);
    assert_eq!(out.status.code(), Some(60), "curl with the wrong CA must fail verification");
    assert!(String::from_utf8_lossy(&out.stderr).contains("certificate"), "{}", String::from_utf8_lossy(&out.stderr));

    let client = |ca: &Pki| {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca.ca_pem().as_bytes()).unwrap()])
            .build()
            .unwrap()
    };
    let r = client(&ca1).get(format!("{}/readyz", hub.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let err = client(&ca2).get(&healthz).send().await.expect_err("the wrong CA is refused");
    let mut chain = err.to_string();
    let mut src = std::error::Error::source(&err);
    while let Some(s) = src {
        chain.push_str(&format!(": {s}"));
        src = s.source();
    }
    assert!(chain.contains("certificate") || chain.contains("UnknownIssuer"), "{chain}");

    // Renewal: the files are replaced; the hub serves the new certificate.
    replace(&d.join("hub.key"), &key2);
    replace(&d.join("hub.crt"), &cert2);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !curl(&d.join("ca2.pem"), &healthz).status.success() {
        assert!(Instant::now() < deadline, "the renewed certificate was never served");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(curl(&d.join("ca1.pem"), &healthz).status.code(), Some(60));

    // Bad files: the hub refuses to start and says why.
    std::fs::write(d.join("junk.pem"), "not a certificate\n").unwrap();
    std::fs::write(d.join("key1.pem"), &key1).unwrap();
    for (cert, key, needle) in [
        (arg("missing.crt"), arg("hub.key"), "cannot read"),
        (arg("junk.pem"), arg("hub.key"), "no CERTIFICATE"),
        (arg("hub.crt"), arg("junk.pem"), "private key"),
        (arg("hub.crt"), arg("key1.pem"), "do not go together"),
    ] {
        let out = Command::new(BIN)
            .args(["hub", "--listen", "127.0.0.1:0", "--storage", "memory://", "--tls-cert", &cert, "--tls-key", &key])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cert} + {key} started");
        assert!(stderr.contains("cannot set up TLS") && stderr.contains(needle), "{needle}: {stderr}");
    }
}
