//! The hub's web page, end to end: the real `aetherfs hub` with an auth
//! configuration (OIDC sign-in against the test OpenID provider, basic-auth
//! users, rules), two versions of a dataset pushed with the real CLI, then
//! (1) plain HTTP with reqwest: escaping, pagination, the CSP, 401/403/404,
//! Range, previews, the diff, the tag form and its CSRF defences; and
//! (2) a real browser (Debian's chromium driven by playwright-core,
//! scripts/web-test/browser.mjs): sign-in through the provider's own login
//! page, browsing, a download compared byte for byte, previews, a diff, a
//! tag move, refused cross-site posts, a 403 page, screenshots checked not
//! blank and axe-core on every page.

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};

use crate::auth::{add_user, write_config};
use crate::harness::{AUDIENCE, AuthHub, Hub, NodePeer, random_bytes, require, run_ok, sqlite};

const DATASET: &str = "acme/web";
const SECRET: &str = "secret/x";
/// Files in `many/`: three pages of 500.
const MANY: usize = 1201;

/// Two versions of `acme/web` and one of `secret/x`, pushed through an open hub.
struct Seeded {
    _dir: tempfile::TempDir,
    storage: String,
    v2_src: PathBuf,
    v1: String,
    v2: String,
}

fn push(hub: &Hub, src: &Path, reference: &str) -> String {
    let out = run_ok(hub.cmd().arg("push").arg(src).arg(reference));
    out.lines().last().unwrap().split_once('@').unwrap().1.trim().to_string()
}

fn seed() -> Seeded {
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("file://{}", dir.path().join("hub").display());
    let v1_src = dir.path().join("v1");
    std::fs::create_dir_all(v1_src.join("many")).unwrap();
    let mut csv = String::from("city,country,population\n");
    for i in 0..50 {
        csv.push_str(&format!("\"City {i}, upper\",C{},{}\n", i % 7, 1000 + i));
    }
    std::fs::write(v1_src.join("data.csv"), &csv).unwrap();
    std::fs::write(v1_src.join("<script>"), "<script>alert(1)</script>\n").unwrap();
    std::fs::write(v1_src.join("blob.bin"), random_bytes(300_000, 7)).unwrap();
    std::fs::write(v1_src.join("config.json"), r#"{"name":"web","layers":[1,2,3],"nested":{"ok":true}}"#).unwrap();
    for i in 0..MANY {
        std::fs::write(v1_src.join("many").join(format!("f{i:05}.txt")), format!("{i}\n")).unwrap();
    }
    sqlite(
        &v1_src.join("db.sqlite"),
        "CREATE TABLE cities(name TEXT, population INTEGER); INSERT INTO cities VALUES ('a', 1), ('b', 2), ('c', 3);\
         CREATE TABLE \"odd \"\"name\"(x);",
    );
    let v2_src = dir.path().join("v2");
    run_ok(Command::new("cp").arg("-a").arg(&v1_src).arg(&v2_src));
    std::fs::write(v2_src.join("data.csv"), format!("{csv}\"Last\",C9,9\n")).unwrap();
    std::fs::write(v2_src.join("new.txt"), "added in v2\n").unwrap();
    std::fs::remove_file(v2_src.join("many/f00000.txt")).unwrap();
    let hub = Hub::start(&storage);
    let v1 = push(&hub, &v1_src, &format!("{DATASET}:latest"));
    let v2 = push(&hub, &v2_src, &format!("{DATASET}:latest"));
    let secret_src = dir.path().join("secret");
    std::fs::create_dir_all(&secret_src).unwrap();
    std::fs::write(secret_src.join("s.txt"), "secret\n").unwrap();
    push(&hub, &secret_src, &format!("{SECRET}:v1"));
    Seeded { _dir: dir, storage, v2_src, v1, v2 }
}

/// The hub with OIDC sign-in (the provider's `web-client`), basic users and rules.
fn start_hub(seeded: &Seeded, provider: &NodePeer) -> (AuthHub, tempfile::TempDir) {
    let conf = tempfile::tempdir().unwrap();
    add_user(&conf.path().join("users"), "bob", "team-a", "bob-pw");
    std::fs::write(conf.path().join("session.key"), "0123456789abcdef0123456789abcdef-test-key").unwrap();
    let issuer = &provider.url;
    let config = write_config(
        conf.path(),
        &format!(
            r#"
            [[oidc]]
            issuer = "{issuer}"
            audience = "{AUDIENCE}"
            groups_claim = "groups"
            [basic]
            users_file = "users"
            [web]
            client_id = "web-client"
            scopes = ["datasets:read"]
            session_key_file = "session.key"
            [[rule]]
            datasets = "acme/**"
            read = ["group:team-a"]
            write = ["group:team-a"]
            admin = ["group:team-a"]
            [[rule]]
            datasets = "secret/**"
            read = ["group:admins"]
            "#
        ),
    );
    (AuthHub::start(&seeded.storage, &["--auth-config", &config]), conf)
}

fn provider() -> NodePeer {
    NodePeer::provider(&[("OIDC_WEB_USERS", "alice:alice-pw:team-a"), ("OIDC_USER_GROUPS", "team-a")])
}

/// A browser-like client: keeps the session cookie by hand, follows no redirect.
struct Browser {
    hub: String,
    http: reqwest::Client,
    cookie: Option<String>,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Browser {
    fn new(hub: &str) -> Browser {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Browser { hub: hub.to_string(), http, cookie: None }
    }

    fn keep_cookie(&mut self, headers: &HeaderMap) {
        for c in headers.get_all("set-cookie") {
            let c = c.to_str().unwrap();
            if let Some(v) = c.strip_prefix("aetherfs_session=") {
                self.cookie = Some(format!("aetherfs_session={}", v.split(';').next().unwrap()));
            }
        }
    }

    async fn send(&mut self, rb: reqwest::RequestBuilder) -> Page {
        let rb = match &self.cookie {
            Some(c) => rb.header("cookie", c),
            None => rb,
        };
        let r = rb.send().await.unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        self.keep_cookie(&headers);
        Page { status, headers, body: r.text().await.unwrap() }
    }

    async fn get(&mut self, path: &str) -> Page {
        let rb = self.http.get(format!("{}{path}", self.hub));
        self.send(rb).await
    }

    async fn post(&mut self, path: &str, origin: &str, form: &[(&str, &str)]) -> Page {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let rb = self
            .http
            .post(format!("{}{path}", self.hub))
            .header("origin", origin)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(rb).await
    }
}

/// The value of the first `name="csrf"` field.
fn csrf(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a CSRF field") + "name=\"csrf\" value=\"".len();
    body[at..].split('"').next().unwrap().to_string()
}

fn rows(body: &str) -> usize {
    let tbody = body.split("<tbody>").nth(1).unwrap_or_default().split("</tbody>").next().unwrap_or_default();
    tbody.matches("<tr>").count()
}

#[tokio::test(flavor = "multi_thread")]
async fn web_page_over_plain_http() {
    let seeded = seed();
    let provider = provider();
    let (hub, _conf) = start_hub(&seeded, &provider);
    let mut b = Browser::new(&hub.url);
    let origin = hub.url.clone();

    // Anonymous: a sign-in prompt, the security headers, a session cookie.
    let p = b.get("/").await;
    assert_eq!(p.status, 200);
    let csp = p.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(p.headers["x-content-type-options"], "nosniff");
    assert!(p.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    let set = p.headers["set-cookie"].to_str().unwrap();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax") && !set.contains("Secure"), "{set}");
    assert!(p.body.contains("Sign in") && !p.body.contains(DATASET), "{}", p.body);
    assert_eq!(b.get(&format!("/web/datasets/{DATASET}")).await.status, 401);

    // Basic-auth users sign in with the form; a wrong password is refused.
    let login = b.get("/web/login").await;
    assert!(login.body.contains("identity provider") && login.body.contains("name=\"password\""));
    let token = csrf(&login.body);
    let wrong = b.post("/web/login", &origin, &[("csrf", &token), ("user", "bob"), ("password", "nope")]).await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let cross =
        b.post("/web/login", "http://evil.example", &[("csrf", &token), ("user", "bob"), ("password", "bob-pw")]).await;
    assert_eq!(cross.status, 403);
    let ok = b.post("/web/login", &origin, &[("csrf", &token), ("user", "bob"), ("password", "bob-pw")]).await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert_eq!(ok.headers["location"], "/");

    // What bob may read, and nothing else.
    let home = b.get("/").await;
    assert!(home.body.contains("Signed in as <strong>bob</strong>") && home.body.contains(DATASET), "{}", home.body);
    assert!(!home.body.contains(SECRET));
    assert!(b.get("/?q=nomatch").await.body.contains("No dataset matches"));
    let forbidden = b.get(&format!("/web/datasets/{SECRET}")).await;
    assert_eq!(forbidden.status, 403);
    assert!(forbidden.body.contains("bob may not read dataset secret/x"), "{}", forbidden.body);
    assert_eq!(b.get(&format!("/web/datasets/{SECRET}/-/tree/v1")).await.status, 403);
    assert_eq!(b.get("/web/datasets/acme/none").await.status, 404);
    assert_eq!(b.get(&format!("/web/datasets/{DATASET}/-/tree/blake3:{}", "0".repeat(64))).await.status, 404);
    assert_eq!(b.get(&format!("/web/datasets/{DATASET}/-/tree/latest?path=no/such")).await.status, 404);
    assert_eq!(b.get(&format!("/web/datasets/{DATASET}/-/tree/latest?page=x")).await.status, 400);

    // The dataset: history, sizes, usage.
    let ds = b.get(&format!("/web/datasets/{DATASET}")).await;
    assert_eq!(ds.status, 200);
    for needle in ["History of latest", "Versions and sizes", "Logical", "Usage", "Move latest to", "Delete tag latest"]
    {
        assert!(ds.body.contains(needle), "{needle} missing");
    }
    assert!(ds.body.contains(&seeded.v1[seeded.v1.len() - 64..][..12]), "v1 listed");

    // The tree: escaped names, pagination of a large directory.
    let root = b.get(&format!("/web/datasets/{DATASET}/-/tree/{}", seeded.v2)).await;
    assert!(root.body.contains("&lt;script&gt;") && !root.body.contains("<script>"), "{}", root.body);
    let tree = format!("/web/datasets/{DATASET}/-/tree/{}?path=many", seeded.v2);
    let p1 = b.get(&tree).await;
    assert_eq!(rows(&p1.body), 500);
    assert!(p1.body.contains("rel=\"next\"") && p1.body.contains("of 1200"), "{}", &p1.body[..2000.min(p1.body.len())]);
    let p3 = b.get(&format!("{tree}&page=3")).await;
    assert_eq!(rows(&p3.body), 200);
    assert!(!p3.body.contains("rel=\"next\"") && p3.body.contains("rel=\"prev\""));
    let file = b.get(&format!("/web/datasets/{DATASET}/-/tree/latest?path=%3Cscript%3E")).await;
    assert!(file.body.contains("<h1>&lt;script&gt;</h1>"), "{}", file.body);

    // Download, whole and ranged.
    let blob = std::fs::read(seeded.v2_src.join("blob.bin")).unwrap();
    let url = format!("{}/web/datasets/{DATASET}/-/file/{}?path=blob.bin", hub.url, seeded.v2);
    let cookie = b.cookie.clone().unwrap();
    let r = b.http.get(&url).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-disposition"].to_str().unwrap().starts_with("attachment"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), blob.as_slice());
    let r = b.http.get(&url).header("cookie", &cookie).header("range", "bytes=100-199").send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], HeaderValue::from_static("bytes 100-199/300000"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), &blob[100..200]);
    let r = b.http.get(&url).header("cookie", &cookie).header("range", "bytes=300000-").send().await.unwrap();
    assert_eq!(r.status(), 416);
    let anon = b.http.get(&url).send().await.unwrap();
    assert_eq!(anon.status(), 401, "a download needs the session");

    // Previews: CSV as a table, JSON pretty, SQLite's tables, text escaped.
    let preview = |p: &str| format!("/web/datasets/{DATASET}/-/preview/latest?path={p}");
    let csv = b.get(&preview("data.csv")).await;
    assert!(csv.body.contains("<table class=\"csv\"") && csv.body.contains("<td>City 3, upper</td>"), "{}", csv.body);
    assert_eq!(rows(&csv.body), 51);
    let json = b.get(&preview("config.json")).await;
    assert!(json.body.contains("&quot;layers&quot;: [\n"), "{}", json.body);
    let db = b.get(&preview("db.sqlite")).await;
    assert!(db.body.contains("<td>cities</td><td>3</td>"), "{}", db.body);
    assert!(db.body.contains("odd &quot;name"), "{}", db.body);
    let script = b.get(&preview("%3Cscript%3E")).await;
    assert!(script.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !script.body.contains("<script>"));

    // The diff between the versions.
    let diff = b.get(&format!("/web/datasets/{DATASET}/-/diff?from={}&to=latest", seeded.v1)).await;
    assert_eq!(diff.status, 200);
    for needle in
        ["<strong>1</strong> added", "<strong>1</strong> removed", "<strong>1</strong> changed", "new.txt", "New bytes"]
    {
        assert!(diff.body.contains(needle), "{needle}: {}", diff.body);
    }
    assert_eq!(b.get(&format!("/web/datasets/{DATASET}/-/diff?from=nope")).await.status, 400);

    // The tag form: refused without the token or from another origin; moved with both.
    let action = format!("/web/datasets/{DATASET}/-/tags/latest");
    let token = csrf(&ds.body);
    let no_token = b.post(&action, &origin, &[("action", "move"), ("digest", &seeded.v1)]).await;
    assert_eq!(no_token.status, 403);
    let elsewhere =
        b.post(&action, "http://evil.example", &[("csrf", &token), ("action", "move"), ("digest", &seeded.v1)]).await;
    assert_eq!(elsewhere.status, 403);
    let stale = b
        .post(
            &action,
            &origin,
            &[("csrf", &token), ("action", "move"), ("digest", &seeded.v1), ("expected", &seeded.v1)],
        )
        .await;
    assert_eq!(stale.status, 409, "a compare-and-swap that does not hold: {}", stale.body);
    let moved = b
        .post(
            &action,
            &origin,
            &[("csrf", &token), ("action", "move"), ("digest", &seeded.v1), ("expected", &seeded.v2)],
        )
        .await;
    assert_eq!(moved.status, 303, "{}", moved.body);
    let after = b.get(&format!("/web/datasets/{DATASET}")).await;
    let history = after.body.split("History of latest").nth(1).unwrap();
    assert!(history.split("</tr>").nth(1).unwrap().contains("<td>bob</td>"), "{history}");
    let rest = reqwest::Client::new()
        .get(format!("{}/v1/datasets/{DATASET}/tags/latest", hub.url))
        .header("authorization", aetherfs_hub::auth::basic_authorization("bob", "bob-pw"))
        .send()
        .await
        .unwrap();
    let tag: serde_json::Value = rest.json().await.unwrap();
    assert_eq!(tag["digest"], seeded.v1.as_str());

    // Signing out ends the session; the old cookie's token no longer posts.
    let out = b.post("/web/logout", &origin, &[("csrf", &csrf(&after.body))]).await;
    assert_eq!(out.status, 303);
    assert_eq!(b.get(&format!("/web/datasets/{DATASET}")).await.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn web_page_in_a_real_browser() {
    let chromium = Path::new("/usr/bin/chromium");
    assert!(chromium.is_file(), "Debian's chromium is not installed: run scripts/install-test-peers.sh");
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/web-test");
    assert!(
        scripts.join("node_modules/playwright-core").is_dir() && scripts.join("node_modules/axe-core").is_dir(),
        "playwright-core and axe-core are not installed: run scripts/install-test-peers.sh"
    );
    let seeded = seed();
    let provider = provider();
    let (hub, _conf) = start_hub(&seeded, &provider);
    let out = tempfile::tempdir().unwrap();
    // AETHERFS_WEB_SHOTS=DIR keeps the screenshots to look at.
    let shots = std::env::var_os("AETHERFS_WEB_SHOTS").map_or_else(|| out.path().join("run"), PathBuf::from);
    let download = seeded.v2_src.join("blob.bin");
    let output = Command::new(require("node"))
        .arg(scripts.join("browser.mjs"))
        .env("HUB", &hub.url)
        .env("OUT", &shots)
        .env("OIDC_USER", "alice")
        .env("OIDC_PASSWORD", "alice-pw")
        .env("DATASET", DATASET)
        .env("TAG", "latest")
        .env("FORBIDDEN", SECRET)
        .env("CSV_PATH", "data.csv")
        .env("SQLITE_PATH", "db.sqlite")
        .env("SQLITE_TABLE", "cities")
        .env("DOWNLOAD_PATH", "blob.bin")
        .env("DOWNLOAD_SOURCE", &download)
        .env("CHROMIUM", chromium)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the browser walk failed (screenshots in {})", shots.display());
    let pngs = std::fs::read_dir(&shots)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "png"));
    assert!(pngs.count() >= 10, "screenshots taken");
}
