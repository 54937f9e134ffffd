//! The REST contract, checked by a fuzzer that is not ours: schemathesis
//! reads the hub's own `/openapi.json` and sends generated requests, valid
//! and invalid, to every documented route of a live hub that stores real
//! versions. Every check must hold: no 5xx, and every status code, content
//! type, header and body as documented.

use std::path::Path;
use std::process::Command;

use crate::auth::{add_user, write_config};
use crate::harness::{AuthHub, Hub, http_get, random_bytes, require, run_ok, sqlite};

/// Fixed, so a failure replays the same requests.
const SEED: &str = "20261203";

/// Two versions of a dataset (`v1`, `v2`, `latest`) and a second dataset;
/// returns the digests of v1 and v2.
fn seed_hub(storage: &str) -> (String, String) {
    let hub = Hub::start(storage);
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("tables")).unwrap();
    std::fs::write(src.path().join("tables/ids.csv"), b"id,name\n1,a\n2,b\n").unwrap();
    std::fs::write(src.path().join("model.bin"), random_bytes(2 << 20, 1)).unwrap();
    sqlite(&src.path().join("db.sqlite"), "CREATE TABLE t(v INTEGER); INSERT INTO t VALUES (1), (2);");
    let push = |tag: &str, extra: &[&str]| {
        let out = run_ok(hub.cmd().args(["push", "-q"]).arg(src.path()).arg(format!("acme/geo:{tag}")).args(extra));
        out.trim().rsplit_once('@').map(|(_, d)| d.to_string()).expect("push prints NAME@DIGEST")
    };
    let v1 = push("v1", &[]);
    std::fs::write(src.path().join("tables/ids.csv"), b"id,name\n1,a\n2,b\n3,c\n").unwrap();
    let v2 = push("v2", &["--tag", "latest"]);
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("x.txt"), b"x\n").unwrap();
    run_ok(hub.cmd().args(["push", "-q"]).arg(other.path()).arg("team-b/private:v1"));
    (v1, v2)
}

/// A pack the hub stores (`packs/<hex>.pack` under a `file://` store).
fn a_pack(dir: &Path) -> String {
    std::fs::read_dir(dir.join("packs"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find_map(|f| f.strip_suffix(".pack").map(|hex| format!("blake3:{hex}")))
        .expect("a stored pack")
}

/// Runs schemathesis against `url` with `config`; panics with its report
/// unless every check passed.
fn schemathesis(url: &str, config: &Path, env: &[(&str, &str)]) -> String {
    let out = Command::new(require("schemathesis"))
        .arg("--config-file")
        .arg(config)
        .args(["run", &format!("{url}/openapi.json"), "--url", url, "--seed", SEED, "--no-color"])
        .envs(env.iter().copied())
        // The hooks module: how to send a manifest's media type.
        .env("PYTHONPATH", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis"))
        .env("SCHEMATHESIS_HOOKS", "aetherfs_hooks")
        .current_dir(config.parent().unwrap())
        .output()
        .expect("schemathesis runs");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis found a contract violation:\n{report}");
    report
}

/// What every run shares: all checks, bounded examples, a deterministic
/// generator (no example database). Each exception says why the check
/// cannot apply; everything else is checked everywhere.
const COMMON: &str = r#"
# The name pattern is strict enough that hypothesis filters many candidates;
# that is a property of the generator, not of the API.
suppress-health-check = ["filter_too_much"]
[checks]
enabled = true
[generation]
max-examples = 25
database = "none"
[phases.stateful]
enabled = false
# WebDAV answers OPTIONS with its own methods (PROPFIND), which OpenAPI
# cannot describe.
[[operations]]
include-path-regex = "^/dav"
checks.allow_header_conformance.enabled = false
# Content-addressed uploads: a body is accepted only if its digest is the
# one in the URL, which no schema can state; generated bodies are refused.
[[operations]]
include-name = ["PUT /v1/datasets/{name}/packs/{digest}", "PUT /v1/datasets/{name}/manifests/{digest}"]
checks.positive_data_acceptance.enabled = false
# The sign-in callback accepts only the code and state of a sign-in this hub
# started, which a generator cannot know.
[[operations]]
include-name = "GET /web/callback"
checks.positive_data_acceptance.enabled = false
"#;

/// Operations pointed at stored data, so their success paths (200, 206, 304,
/// the bodies' schemas) are checked and not only their refusals.
fn on_stored_data(v1: &str, v2: &str, pack: &str) -> String {
    format!(
        r#"
[parameters]
"path.name" = "acme/geo"
"path.tag" = "latest"
"path.digest" = "{v1}"
"query.since" = "{v2}"
# A Range past a pack's end is valid by the schema, and 416 is its answer.
[[operations]]
include-path-regex = "/packs/"
parameters = {{ "path.digest" = "{pack}" }}
checks.positive_data_acceptance.expected-statuses = ["2xx", "304", "401", "403", "404", "416"]
"#
    )
}

/// Requests the hub answered with a status of this class (`/readyz` aside:
/// its 503 means "still starting", and the harness polls it before ready).
fn http_requests(metrics: &str, status_class: char) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("aetherfs_hub_http_requests_total{") && !l.contains("route=\"/readyz\""))
        .filter(|l| l.contains(&format!("status=\"{status_class}")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Schemathesis over every route of an open hub: once with generated
/// values everywhere (names, tags, digests, bodies, queries), once with the
/// path parameters pointed at stored versions and packs.
#[test]
fn schemathesis_finds_no_contract_violation() {
    let data = tempfile::tempdir().unwrap();
    let store = data.path().join("hub");
    let storage = format!("file://{}", store.display());
    let (v1, v2) = seed_hub(&storage);
    let pack = a_pack(&store);
    let hub = AuthHub::start(&storage, &["--long-poll-max-secs", "1"]);

    let generated = data.path().join("generated.toml");
    std::fs::write(&generated, COMMON).unwrap();
    let report = schemathesis(&hub.url, &generated, &[]);
    // Every operation of the document was tested, none skipped.
    let tested = report.lines().find_map(|l| l.trim().strip_prefix("Tested: ")).map(str::trim);
    let selected = report.lines().find_map(|l| l.trim().strip_prefix("Selected: ")).and_then(|s| s.split('/').next());
    assert!(tested.is_some_and(|t| t.parse::<u32>().is_ok_and(|n| n >= 25)), "operations untested:\n{report}");
    assert_eq!(tested, selected.map(str::trim), "operations skipped:\n{report}");

    let stored = data.path().join("stored.toml");
    std::fs::write(&stored, format!("{COMMON}{}", on_stored_data(&v1, &v2, &pack))).unwrap();
    schemathesis(&hub.url, &stored, &[]);

    // The runs reached the success paths, and the hub itself counted no 5xx.
    let (status, metrics) = http_get(&hub.url, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(http_requests(&metrics, '2') > 100.0, "few successful requests:\n{metrics}");
    assert_eq!(http_requests(&metrics, '5'), 0.0, "the hub answered 5xx:\n{metrics}");
}

/// The same contract with access rules: a basic-auth reader of `acme/**`
/// gets 401s for bad credentials and 403s outside its grant, each as
/// documented; an admin's run reaches everything.
#[test]
fn schemathesis_with_access_rules() {
    let data = tempfile::tempdir().unwrap();
    let store = data.path().join("hub");
    let storage = format!("file://{}", store.display());
    let (v1, v2) = seed_hub(&storage);
    let pack = a_pack(&store);
    let users = data.path().join("users");
    add_user(&users, "reader", "readers", "pw-reader");
    add_user(&users, "root", "admins", "pw-root");
    let config = write_config(
        data.path(),
        "[basic]\nusers_file = \"users\"\n\
         [[rule]]\ndatasets = \"acme/**\"\nread = [\"group:readers\"]\n\
         [[rule]]\ndatasets = \"**\"\nread = [\"group:admins\"]\nwrite = [\"group:admins\"]\nadmin = [\"group:admins\"]\n",
    );
    let hub = AuthHub::start(&storage, &["--auth-config", &config, "--long-poll-max-secs", "1"]);

    for (user, password) in [("reader", "pw-reader"), ("root", "pw-root")] {
        let toml = data.path().join(format!("{user}.toml"));
        let auth = "[auth]\nbasic = { username = \"${ST_USER}\", password = \"${ST_PASSWORD}\" }\n";
        std::fs::write(&toml, format!("{COMMON}{}{auth}", on_stored_data(&v1, &v2, &pack))).unwrap();
        schemathesis(&hub.url, &toml, &[("ST_USER", user), ("ST_PASSWORD", password)]);
    }
    let (status, metrics) = http_get(&hub.url, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert_eq!(http_requests(&metrics, '5'), 0.0, "the hub answered 5xx:\n{metrics}");
    for class in ['2', '4'] {
        assert!(http_requests(&metrics, class) > 0.0, "no {class}xx answers:\n{metrics}");
    }
}
