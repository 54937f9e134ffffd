//! Access control, in-process: every route of the API (read from the
//! served /openapi.json) refuses callers without credentials or grants, and
//! the rules give readers, writers and admins exactly what they say. Callers
//! authenticate with basic auth (users file written by the hub's own
//! `set_user`); tokens from a real OpenID provider are tested end to end
//! through the binary in agent/tests/it/auth.rs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aetherfs_format::pack::{BuiltPack, PackBuilder};
use aetherfs_format::{ChunkParams, ChunkRef, Digest, Entry, EntryKind, FileEntry, Manifest};
use aetherfs_hub::auth::{basic_authorization as basic, hash_password, set_user};
use aetherfs_hub::{Auth, Hub, HubOptions};
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine;
use object_store::memory::InMemory;
use serde_json::{Value, json};

use crate::harness::{Resp, send};

const USERS: &[(&str, &str, &[&str])] = &[
    ("reader", "pw-reader", &["readers"]),
    ("writer-a", "pw-writer-a", &["team-a"]),
    ("writer-b", "pw-writer-b", &["team-b"]),
    ("admin", "pw-admin", &["admins"]),
    ("nobody", "pw-nobody", &[]),
];

const RULES: &str = r#"
[[rule]]
datasets = "team-a/**"
read = ["group:readers"]
write = ["group:team-a"]
[[rule]]
datasets = "team-b/**"
write = ["group:team-b"]
[[rule]]
datasets = "public/*"
read = ["anonymous"]
[[rule]]
datasets = "**"
admin = ["group:admins"]
"#;

struct T {
    router: Router,
    _dir: tempfile::TempDir,
}

impl T {
    async fn new(extra: &str) -> T {
        Self::with_rules(extra, RULES).await
    }

    async fn with_rules(extra: &str, rules: &str) -> T {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        for (u, pw, groups) in USERS {
            let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
            set_user(&users, u, &hash_password(pw).unwrap(), &groups).unwrap();
        }
        let text = format!("{extra}\n[basic]\nusers_file = \"users\"\n{rules}");
        let auth = Auth::from_toml(&text, dir.path()).unwrap();
        Self::with_auth(auth, dir).await
    }

    async fn with_auth(auth: Auth, dir: tempfile::TempDir) -> T {
        let hub = Hub::from_store(Arc::new(InMemory::new()), HubOptions { auth, ..HubOptions::default() });
        let t = T { router: hub.router(), _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while t.call(Method::GET, "/readyz", None, Body::empty()).await.status != StatusCode::OK {
            assert!(Instant::now() < deadline, "hub never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        t
    }

    async fn call(&self, method: Method, uri: &str, user: Option<&str>, body: impl Into<Body>) -> Resp {
        let mut b = Request::builder().method(method).uri(uri).header("content-type", "application/json");
        if let Some(u) = user {
            let pw = USERS.iter().find(|x| x.0 == u).map_or("wrong", |x| x.1);
            b = b.header(header::AUTHORIZATION, basic(u, pw));
        }
        self.send(b.body(body.into()).unwrap()).await
    }

    async fn send(&self, req: Request<Body>) -> Resp {
        send(&self.router, req).await
    }

    async fn get(&self, uri: &str, user: Option<&str>) -> Resp {
        self.call(Method::GET, uri, user, Body::empty()).await
    }

    async fn set_tag(&self, name: &str, tag: &str, digest: &Digest, user: Option<&str>) -> Resp {
        let body = json!({ "digest": digest }).to_string();
        self.call(Method::PUT, &format!("/v1/datasets/{name}/tags/{tag}"), user, body).await
    }

    /// Publishes one version of `name` as `user` (pack, manifest, tag `v1`).
    async fn publish(&self, name: &str, user: &str, seed: u8) -> (BuiltPack, Digest) {
        let chunk = vec![seed; 3000];
        let mut b = PackBuilder::new();
        b.add(Digest::of(&chunk), &chunk, true);
        let pack = b.finish();
        let r = self
            .call(Method::PUT, &format!("/v1/datasets/{name}/packs/{}", pack.digest), Some(user), pack.bytes.clone())
            .await;
        r.ok();
        let bytes = one_chunk_manifest(&pack, "data.bin");
        let digest = Digest::of(&bytes);
        self.call(Method::PUT, &format!("/v1/datasets/{name}/manifests/{digest}"), Some(user), bytes).await.ok();
        self.set_tag(name, "v1", &digest, Some(user)).await.ok();
        (pack, digest)
    }

    async fn listed(&self, user: Option<&str>) -> Vec<String> {
        let v = self.get("/v1/datasets", user).await.ok();
        v["datasets"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap().to_string()).collect()
    }
}

/// The documented routes and methods, from the hub's own /openapi.json.
/// The manifest of one file made of the first chunk of `pack`.
fn one_chunk_manifest(pack: &BuiltPack, path: &str) -> Vec<u8> {
    let e = &pack.entries[0];
    let mut m = Manifest::new(ChunkParams::default());
    m.entries.push(Entry {
        path: path.into(),
        mode: 0o644,
        kind: EntryKind::File(FileEntry::new(vec![ChunkRef {
            digest: e.digest,
            len: e.len,
            location: e.location(pack.digest),
        }])),
    });
    m.encode().unwrap()
}

async fn documented_routes(t: &T) -> Vec<(String, Method)> {
    let doc = t.get("/openapi.json", None).await.ok();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in item.as_object().unwrap().keys() {
            if let Ok(method) = Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                && ["GET", "HEAD", "PUT", "POST", "DELETE"].contains(&method.as_str())
            {
                let p = path
                    .replace("{name}", "team-a/x")
                    .replace("{tag}", "v1")
                    .replace("{digest}", &Digest::of(b"x").to_string())
                    .replace("{path}", "team-a/x/v1/data.txt");
                out.push((p, method));
            }
        }
    }
    assert!(out.len() >= 12, "too few routes in openapi.json: {out:?}");
    out
}

const OPEN: &[&str] = &["/healthz", "/readyz", "/openapi.json", "/metrics"];

/// Without credentials every route but the open ones answers 401 with a
/// challenge; with credentials and no grant, 403 (the listing excepted: it
/// answers with what the caller may read, here nothing).
#[tokio::test]
async fn every_route_is_enforced() {
    // The rules without the anonymous one.
    let t = T::with_rules("", &RULES.replace("read = [\"anonymous\"]", "read = [\"group:readers\"]")).await;
    for (path, method) in documented_routes(&t).await {
        let anon = t.call(method.clone(), &path, None, "{}").await;
        let nobody = t.call(method.clone(), &path, Some("nobody"), "{}").await;
        if OPEN.contains(&path.as_str()) {
            assert!(anon.status.is_success(), "{method} {path}: {}", anon.status);
            continue;
        }
        if path == "/" || path.starts_with("/web/") {
            // The web page signs people in with its own session cookie, never
            // the Authorization header: both callers are anonymous there, and
            // neither sees what anonymous may not read (cli/tests/it/web.rs
            // tests signed-in viewers).
            for a in [&anon, &nobody] {
                let status = a.status.as_u16();
                if path.starts_with("/web/datasets/") {
                    assert!(matches!(status, 400 | 401 | 403 | 404), "{method} {path}: {status}");
                } else {
                    assert!(!a.status.is_success() || !a.text().contains("team-a/x"), "{method} {path} shows team-a/x");
                }
            }
            continue;
        }
        if method == Method::HEAD {
            assert_eq!(anon.status, StatusCode::UNAUTHORIZED, "HEAD {path}");
            assert_eq!(nobody.status, StatusCode::FORBIDDEN, "HEAD {path}");
            continue;
        }
        if path.starts_with("/dav") {
            // WebDAV: credentials first, then a listing like /v1/datasets
            // (nothing here), in WebDAV's own words.
            anon.err(StatusCode::UNAUTHORIZED, "unauthorized");
            if path.ends_with("data.txt") {
                // No dataset is stored here: 404 whoever asks (one that exists
                // and the caller may not read is 403: cli/tests/it/hub_dav.rs).
                assert_eq!(nobody.status, StatusCode::NOT_FOUND, "{path}");
            } else {
                assert!(nobody.status.is_success() || nobody.status.is_redirection(), "{path}: {}", nobody.status);
                assert!(!nobody.text().contains("team-a"), "{path} lists what nobody may read");
            }
            continue;
        }
        if path == "/v1/datasets" {
            // Anonymous may read nothing: asked to authenticate; others get what they may read.
            anon.err(StatusCode::UNAUTHORIZED, "unauthorized");
            assert_eq!(nobody.ok()["datasets"], json!([]));
            continue;
        }
        anon.err(StatusCode::UNAUTHORIZED, "unauthorized");
        let challenges = anon.challenges();
        assert!(challenges.contains(&"Bearer realm=\"aetherfs\"".to_string()) || challenges.len() == 1);
        assert!(challenges.iter().any(|c| c.starts_with("Basic realm=\"aetherfs\"")), "{challenges:?}");
        let msg = nobody.err(StatusCode::FORBIDDEN, "forbidden");
        assert!(msg.starts_with("nobody may not"), "{msg}");
    }
    // Unknown routes: credentials first, then 404.
    t.get("/v1/nothing", None).await.err(StatusCode::UNAUTHORIZED, "unauthorized");
    t.get("/v1/nothing", Some("nobody")).await.err(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn rules_grant_exactly_what_they_say() {
    let t = T::new("").await;
    let (pack_a, a1) = t.publish("team-a/x", "admin", 1).await;
    let (_, b1) = t.publish("team-b/y", "admin", 2).await;
    t.publish("public/z", "admin", 3).await;
    let tag_a = "/v1/datasets/team-a/x/tags/v1";
    let tag_b = "/v1/datasets/team-b/y/tags/v1";
    let pack_url = format!("/v1/datasets/team-a/x/packs/{}", pack_a.digest);

    // The admin's moves are recorded as theirs.
    assert_eq!(t.get(tag_a, Some("admin")).await.ok()["by"], "admin");

    // A reader reads team-a, nothing of team-b, and cannot push or tag.
    assert_eq!(t.get(tag_a, Some("reader")).await.ok()["digest"], json!(a1));
    t.get(tag_b, Some("reader")).await.err(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(t.get(&pack_url, Some("reader")).await.status, StatusCode::OK);
    let msg = t.set_tag("team-a/x", "v2", &a1, Some("reader")).await.err(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(msg, "reader may not write dataset team-a/x");
    t.call(Method::PUT, &pack_url, Some("reader"), pack_a.bytes.clone()).await.err(StatusCode::FORBIDDEN, "forbidden");
    t.call(Method::POST, "/v1/datasets/team-a/x/chunks/missing", Some("reader"), json!({"digests": []}).to_string())
        .await
        .err(StatusCode::FORBIDDEN, "forbidden");
    let manifest_a = format!("/v1/datasets/team-a/x/manifests/{a1}");
    assert_eq!(t.get(&manifest_a, Some("reader")).await.status, StatusCode::OK);
    t.call(Method::PUT, &manifest_a, Some("reader"), "x").await.err(StatusCode::FORBIDDEN, "forbidden");

    // A writer of team-a pushes and tags there, not in team-b, and cannot delete.
    t.publish("team-a/new", "writer-a", 4).await;
    let moved = t.set_tag("team-a/x", "v2", &a1, Some("writer-a")).await.ok();
    assert_eq!(moved["by"], "writer-a");
    t.set_tag("team-b/y", "v2", &b1, Some("writer-a")).await.err(StatusCode::FORBIDDEN, "forbidden");
    t.get(tag_b, Some("writer-a")).await.err(StatusCode::FORBIDDEN, "forbidden");
    t.call(Method::PUT, &format!("/v1/datasets/team-b/y/manifests/{b1}"), Some("writer-a"), "x")
        .await
        .err(StatusCode::FORBIDDEN, "forbidden");
    t.call(Method::DELETE, tag_a, Some("writer-a"), Body::empty()).await.err(StatusCode::FORBIDDEN, "forbidden");
    // Write implies read.
    assert_eq!(t.get(tag_a, Some("writer-a")).await.status, StatusCode::OK);
    // The writer of team-b is the mirror image.
    assert_eq!(t.set_tag("team-b/y", "v2", &b1, Some("writer-b")).await.ok()["by"], "writer-b");
    t.set_tag("team-a/x", "v3", &a1, Some("writer-b")).await.err(StatusCode::FORBIDDEN, "forbidden");

    // Admin deletes; readers list versions, writers may not delete them.
    let deleted = t.call(Method::DELETE, "/v1/datasets/team-a/x/tags/v2", Some("admin"), Body::empty()).await.ok();
    assert_eq!(deleted["by"], "admin");
    let versions = t.call(Method::GET, "/v1/datasets/team-a/x/manifests", Some("reader"), Body::empty()).await.ok();
    assert_eq!(versions["versions"][0]["digest"], a1.to_string());
    let version_a = format!("/v1/datasets/team-a/x/manifests/{a1}");
    t.call(Method::DELETE, &version_a, Some("writer-a"), Body::empty()).await.err(StatusCode::FORBIDDEN, "forbidden");
    t.call(Method::DELETE, &version_a, Some("reader"), Body::empty()).await.err(StatusCode::FORBIDDEN, "forbidden");
    t.call(Method::GET, "/v1/datasets/team-b/y/manifests", Some("writer-a"), Body::empty())
        .await
        .err(StatusCode::FORBIDDEN, "forbidden");

    // Anonymous reads public/*, and is asked for credentials elsewhere.
    assert_eq!(t.get("/v1/datasets/public/z/tags/v1", None).await.status, StatusCode::OK);
    t.get(tag_a, None).await.err(StatusCode::UNAUTHORIZED, "unauthorized");
    t.call(Method::PUT, &pack_url, None, pack_a.bytes.clone()).await.err(StatusCode::UNAUTHORIZED, "unauthorized");

    // Listings show only what the caller may read.
    assert_eq!(t.listed(None).await, vec!["public/z"]);
    assert_eq!(t.listed(Some("reader")).await, vec!["public/z", "team-a/new", "team-a/x"]);
    assert_eq!(t.listed(Some("writer-b")).await, vec!["public/z", "team-b/y"]);
    assert_eq!(t.listed(Some("nobody")).await, vec!["public/z"]);
    assert_eq!(t.listed(Some("admin")).await, vec!["public/z", "team-a/new", "team-a/x", "team-b/y"]);

    // A wrong password is refused outright, even where anonymous may read.
    let r = t.call(Method::GET, "/v1/datasets/public/z/tags/v1", Some("bogus"), Body::empty()).await;
    let msg = r.err(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(msg.contains("wrong user name or password"), "{msg}");
    let r = t
        .send(Request::get(tag_a).header(header::AUTHORIZATION, basic("reader", "nope")).body(Body::empty()).unwrap())
        .await;
    r.err(StatusCode::UNAUTHORIZED, "unauthorized");

    // Failures are counted.
    let metrics = t.get("/metrics", None).await.text();
    for outcome in ["forbidden", "missing_credentials", "invalid_credentials"] {
        assert!(metrics.contains(&format!("aetherfs_hub_auth_failures_total{{outcome=\"{outcome}\"}}")), "{outcome}");
    }
}

/// The long-poll is refused before it waits.
#[tokio::test]
async fn long_poll_is_checked_before_waiting() {
    let t = T::new("").await;
    t.publish("team-b/y", "admin", 2).await;
    let started = Instant::now();
    let r = t.get("/v1/datasets/team-b/y/tags/v1?wait=30&since=absent", Some("reader")).await;
    r.err(StatusCode::FORBIDDEN, "forbidden");
    let r = t.get("/v1/datasets/team-b/y/tags/v1?wait=30&since=absent", None).await;
    r.err(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn metrics_can_require_credentials() {
    let t = T::new("metrics = \"authenticated\"").await;
    t.get("/metrics", None).await.err(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(t.get("/metrics", Some("nobody")).await.status, StatusCode::OK);
    assert_eq!(t.get("/healthz", None).await.status, StatusCode::OK);
}

/// A configuration without rules denies everything but the open endpoints.
#[tokio::test]
async fn no_rule_means_deny() {
    let dir = tempfile::tempdir().unwrap();
    set_user(&dir.path().join("users"), "alice", &hash_password("pw").unwrap(), &[]).unwrap();
    let auth = Auth::from_toml("[basic]\nusers_file = \"users\"", dir.path()).unwrap();
    let t = T::with_auth(auth, dir).await;
    let as_alice = |m: Method, uri: &str| {
        Request::builder().method(m).uri(uri).header(header::AUTHORIZATION, basic("alice", "pw")).body(Body::empty())
    };
    let r = t.send(as_alice(Method::GET, "/v1/datasets/a/tags/latest").unwrap()).await;
    r.err(StatusCode::FORBIDDEN, "forbidden");
    let r = t.send(as_alice(Method::GET, &format!("/v1/datasets/a/packs/{}", Digest::of(b"x"))).unwrap()).await;
    r.err(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(t.get("/v1/datasets/a/tags/latest", None).await.status, StatusCode::UNAUTHORIZED);
    // Anonymous may read nothing at all: the listing asks for credentials.
    t.get("/v1/datasets", None).await.err(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(t.send(as_alice(Method::GET, "/v1/datasets").unwrap()).await.ok()["datasets"], json!([]));
    assert_eq!(t.get("/healthz", None).await.status, StatusCode::OK);
}

/// Without a configuration the hub is open, as it always was: credentials
/// are not even looked at, and tag records say `anonymous`.
#[tokio::test]
async fn open_hub_ignores_credentials() {
    let t = T::with_auth(Auth::open(), tempfile::tempdir().unwrap()).await;
    let (_, d) = t.publish("team-a/x", "nobody", 1).await;
    let r = t
        .send(
            Request::put("/v1/datasets/team-a/x/tags/v2")
                .header(header::AUTHORIZATION, "Bearer not-a-token")
                .header("content-type", "application/json")
                .body(Body::from(json!({ "digest": d }).to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.ok()["by"], "anonymous");
    assert_eq!(t.listed(None).await, vec!["team-a/x"]);
}

/// Bearer tokens where no issuer is configured, unknown schemes, two headers.
#[tokio::test]
async fn malformed_credentials() {
    let t = T::new("").await;
    for value in ["Bearer abc", "Digest x", "Basic !!!", "Basic"] {
        let r = t
            .send(
                Request::get("/v1/datasets/public/z/tags/v1")
                    .header(header::AUTHORIZATION, value)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        r.err(StatusCode::UNAUTHORIZED, "unauthorized");
        assert!(r.challenges().iter().any(|c| c.contains("Basic")), "{value}: {:?}", r.challenges());
    }
    let r = t
        .send(
            Request::get("/v1/datasets")
                .header(header::AUTHORIZATION, basic("reader", "pw-reader"))
                .header(header::AUTHORIZATION, basic("admin", "pw-admin"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let msg = r.err(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(msg.contains("more than one"), "{msg}");
}

/// An issuer the hub has never reached: its tokens get 503 (not 401, which
/// would make clients throw away good tokens), and the hub keeps serving.
#[tokio::test]
async fn unreachable_issuer_is_unavailable_not_unauthorized() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let issuer = format!("http://127.0.0.1:{port}");
    let text = format!(
        "[[oidc]]\nissuer = \"{issuer}\"\naudience = \"urn:aetherfs\"\n[[rule]]\ndatasets = \"**\"\nread = [\"authenticated\"]\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let t = T::with_auth(Auth::from_toml(&text, dir.path()).unwrap(), dir).await;
    let enc = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let token = format!(
        "{}.{}.c2ln",
        enc(json!({"alg": "RS256", "typ": "at+jwt", "kid": "k"})),
        enc(json!({"iss": issuer, "aud": "urn:aetherfs", "sub": "x", "exp": 4_000_000_000u64}))
    );
    let r = t
        .send(
            Request::get("/v1/datasets")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let msg = r.err(StatusCode::SERVICE_UNAVAILABLE, "auth_unavailable");
    assert!(msg.contains(&issuer), "{msg}");
    // A token naming another issuer is simply invalid.
    let other = token.replacen(&enc(json!({"alg": "RS256", "typ": "at+jwt", "kid": "k"})), "x", 1);
    let r = t
        .send(
            Request::get("/v1/datasets")
                .header(header::AUTHORIZATION, format!("Bearer {other}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    r.err(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(t.get("/healthz", None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn password_guessing_is_throttled_per_user_and_per_address_without_locking_out_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    for (u, pw, groups) in USERS {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        set_user(&users, u, &hash_password(pw).unwrap(), &groups).unwrap();
    }
    let text = format!(
        "[basic]\nusers_file = \"users\"\nmax_failures_per_user = 3\nmax_failures_per_address = 6\n\
         failure_window_secs = 600\n{RULES}"
    );
    let t = T::with_auth(Auth::from_toml(&text, dir.path()).unwrap(), dir).await;
    let from = |ip: &str, user: &str, pw: &str| {
        let mut req = Request::builder()
            .uri("/v1/datasets/team-a/x/tags")
            .header(header::AUTHORIZATION, basic(user, pw))
            .body(Body::empty())
            .unwrap();
        let addr: std::net::SocketAddr = format!("{ip}:40000").parse().unwrap();
        req.extensions_mut().insert(axum::extract::ConnectInfo(addr));
        req
    };
    // The reader signs in from their usual address.
    assert_ne!(t.send(from("10.0.0.1", "reader", "pw-reader")).await.status, StatusCode::UNAUTHORIZED);
    // Someone guesses the reader's password from another address.
    for _ in 0..3 {
        t.send(from("10.6.6.6", "reader", "guess")).await.err(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let r = t.send(from("10.6.6.6", "reader", "pw-reader")).await;
    let msg = r.err(StatusCode::TOO_MANY_REQUESTS, "too_many_failures");
    let retry: u64 = r.header(header::RETRY_AFTER).parse().unwrap();
    assert!((1..=600).contains(&retry), "{retry} {msg}");
    // Also from a third, fresh address: the user's limit holds there.
    t.send(from("10.7.7.7", "reader", "pw-reader")).await.err(StatusCode::TOO_MANY_REQUESTS, "too_many_failures");
    // The real user, from the address they signed in from, is not locked out.
    assert_ne!(t.send(from("10.0.0.1", "reader", "pw-reader")).await.status, StatusCode::TOO_MANY_REQUESTS);
    // Other users from the guessing address still get a real answer, until
    // that address reaches its own limit across user names.
    for i in 0..3 {
        t.send(from("10.6.6.6", &format!("u{i}"), "x")).await.err(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    t.send(from("10.6.6.6", "writer-a", "pw-writer-a")).await.err(StatusCode::TOO_MANY_REQUESTS, "too_many_failures");
    assert_ne!(t.send(from("10.0.0.2", "writer-a", "pw-writer-a")).await.status, StatusCode::TOO_MANY_REQUESTS);
    let metrics = t.get("/metrics", None).await.text();
    assert!(metrics.contains("aetherfs_hub_auth_failures_total{outcome=\"throttled\"} 3"), "{metrics}");
}

/// The issue's reproduction, step by step: a writer of team-a learns nothing
/// of team-b's chunks, cannot read its pack, and cannot publish a version
/// that points into it; what team-b stores answers exactly as what does not
/// exist. Dedup still works across datasets the caller may read.
#[tokio::test]
async fn no_byte_crosses_from_one_tenant_to_another() {
    let hub = T::new("").await;
    let t = &hub;
    let (pack_b, _) = t.publish("team-b/y", "writer-b", 7).await;
    let chunk_b = pack_b.entries[0].digest;
    let nowhere = Digest::of(b"never stored");
    let missing = move |user: &'static str, digests: Vec<Digest>| {
        let body = json!({ "digests": digests }).to_string();
        async move { t.call(Method::POST, "/v1/datasets/team-a/x/chunks/missing", Some(user), body).await.ok() }
    };

    // 1. The existence query: team-b's chunk looks exactly like one never stored.
    let v = missing("writer-a", vec![chunk_b, nowhere]).await;
    assert_eq!(v, json!({ "missing": [chunk_b, nowhere], "present": [] }));

    // 2. Reading the pack through team-a: the same 404 as a pack that does not exist.
    let stolen = t.get(&format!("/v1/datasets/team-a/x/packs/{}", pack_b.digest), Some("writer-a")).await;
    let absent = t.get(&format!("/v1/datasets/team-a/x/packs/{nowhere}"), Some("writer-a")).await;
    assert_eq!(stolen.status, StatusCode::NOT_FOUND);
    assert_eq!(stolen.value()["error"]["code"], absent.value()["error"]["code"]);
    let shape = |r: &Resp, d: &Digest| r.value()["error"]["message"].as_str().unwrap().replace(&d.to_string(), "D");
    assert_eq!(shape(&stolen, &pack_b.digest), shape(&absent, &nowhere));
    let via_a = format!("/v1/datasets/team-a/x/packs/{}", pack_b.digest);
    for user in ["writer-a", "reader"] {
        let r = t.call(Method::HEAD, &via_a, Some(user), Body::empty()).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{user}");
    }
    // And through team-b itself the pack is refused by the rules.
    t.get(&format!("/v1/datasets/team-b/y/packs/{}", pack_b.digest), Some("writer-a"))
        .await
        .err(StatusCode::FORBIDDEN, "forbidden");

    // 3. A hand-made manifest in team-a pointing into team-b's pack is refused
    // as if the chunk did not exist; nothing is published or tagged.
    let bytes = one_chunk_manifest(&pack_b, "secrets.bin");
    let d = Digest::of(&bytes);
    let uri = format!("/v1/datasets/team-a/x/manifests/{d}");
    let msg = t
        .call(Method::PUT, &uri, Some("writer-a"), bytes.clone())
        .await
        .err(StatusCode::UNPROCESSABLE_ENTITY, "missing_chunks");
    assert!(msg.contains(&chunk_b.to_string()), "{msg}");
    t.get(&uri, Some("reader")).await.err(StatusCode::NOT_FOUND, "manifest_not_found");
    t.set_tag("team-a/x", "stolen", &d, Some("writer-a")).await.err(StatusCode::NOT_FOUND, "manifest_not_found");

    // Uploading the same bytes into team-a proves possession: then it dedups there.
    let put = t.call(Method::PUT, &via_a, Some("writer-a"), pack_b.bytes.clone()).await;
    assert_eq!(put.value()["created"], false, "stored once");
    assert_eq!(missing("writer-a", vec![chunk_b]).await["missing"], json!([]));
    t.call(Method::PUT, &uri, Some("writer-a"), bytes.clone()).await.ok();

    // Someone who may read team-b gets dedup against it when pushing into team-a,
    // and publishing there makes the pack readable through team-a.
    let (pack_c, _) = t.publish("team-b/y", "writer-b", 8).await;
    let v = missing("admin", vec![pack_c.entries[0].digest]).await;
    assert_eq!(v["present"][0]["pack"], pack_c.digest.to_string(), "{v}");
    let pack_c_via_a = format!("/v1/datasets/team-a/x/packs/{}", pack_c.digest);
    t.get(&pack_c_via_a, Some("reader")).await.err(StatusCode::NOT_FOUND, "pack_not_found");
    let shared = one_chunk_manifest(&pack_c, "shared.bin");
    let uri = format!("/v1/datasets/team-a/x/manifests/{}", Digest::of(&shared));
    t.call(Method::PUT, &uri, Some("admin"), shared).await.ok();
    assert_eq!(t.get(&pack_c_via_a, Some("reader")).await.status, StatusCode::OK);
}
