//! The developer tools: `diff` and `du` against a real hub, `--quiet`, and
//! a reader of stdout that goes away.

use std::io::Read;
use std::process::Stdio;

use serde_json::Value;

use crate::harness::{Hub, make_tree, run_ok, sqlite};

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// A 1% update of a SQLite database, a file added and one removed: `diff`
/// names each, says how much is new, and that figure is what a `pull` from
/// the old version downloads; `du` splits what each version stores into
/// shared and exclusive bytes.
#[test]
fn diff_and_du_tell_what_changed_and_what_it_costs() {
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), 3 << 20);
    let db = src.path().join("db/big.sqlite");
    sqlite(
        &db,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, v REAL);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<200000)
         INSERT INTO t SELECT x, 'row-' || x, x * 0.5 FROM c;",
    );
    run_ok(hub.cmd().args(["push", "-q"]).arg(src.path()).arg("acme/tools:v1"));
    let db_size = std::fs::metadata(&db).unwrap().len();
    sqlite(&db, "UPDATE t SET name = 'changed' WHERE id BETWEEN 10000 AND 10100;");
    std::fs::remove_file(src.path().join("README.txt")).unwrap();
    std::fs::write(src.path().join("added.txt"), b"a new file\n").unwrap();
    run_ok(hub.cmd().args(["push", "-q"]).arg(src.path()).arg("acme/tools:v2"));

    let d = json(&run_ok(hub.cmd().args(["diff", "--json", "acme/tools:v1", "acme/tools:v2"])));
    let change = |path: &str| -> &Value {
        d["paths"].as_array().unwrap().iter().find(|p| p["path"] == path).unwrap_or_else(|| panic!("{path}: {d}"))
    };
    assert_eq!(change("README.txt")["change"], "removed");
    assert_eq!(change("added.txt")["change"], "added");
    assert_eq!(change("added.txt")["new_bytes"], 11);
    let dbc = change("db/big.sqlite");
    assert_eq!(dbc["change"], "changed");
    let new = dbc["new_bytes"].as_u64().unwrap();
    assert!(new > 0 && new < db_size / 4, "a small update rewrote {new} of {db_size} bytes: {dbc}");
    assert_eq!(
        dbc["new_bytes"].as_u64().unwrap() + dbc["reused_bytes"].as_u64().unwrap(),
        dbc["new_size"].as_u64().unwrap()
    );
    let t = &d["totals"];
    assert_eq!((t["added"].as_u64(), t["removed"].as_u64(), t["changed"].as_u64()), (Some(1), Some(1), Some(1)), "{t}");
    assert!(t["unchanged"].as_u64().unwrap() >= 10, "{t}");
    assert_eq!(t["new_bytes"].as_u64().unwrap(), new + 11, "{t}");
    assert!(d["old"].as_str().unwrap().starts_with("acme/tools@blake3:"));

    // The new stored bytes are exactly what a pull from v1 to v2 fetches.
    let dst = tempfile::tempdir().unwrap();
    run_ok(hub.cmd().args(["pull", "-q", "acme/tools:v1"]).arg(dst.path()));
    let pulled = json(&run_ok(hub.cmd().args(["pull", "--json", "acme/tools:v2"]).arg(dst.path())));
    assert_eq!(pulled["fetched_bytes"], t["new_stored_bytes"], "pull: {pulled}\ndiff: {t}");

    let text = run_ok(hub.cmd().args(["diff", "acme/tools:v1", "acme/tools:v2"]));
    assert!(text.lines().any(|l| l.starts_with("M db/big.sqlite")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("A added.txt")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("D README.txt")), "{text}");
    assert!(text.lines().last().unwrap().contains("1 added, 1 removed, 1 changed"), "{text}");
    let quiet = run_ok(hub.cmd().args(["diff", "-q", "acme/tools:v1", "acme/tools:v2"]));
    assert_eq!(quiet.lines().count(), 3, "quiet keeps the paths, drops the summary: {quiet}");

    let u = json(&run_ok(hub.cmd().args(["du", "--json", "acme/tools"])));
    let versions = u["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{u}");
    for v in versions {
        let (stored, shared, exclusive) = (
            v["stored_bytes"].as_u64().unwrap(),
            v["shared_bytes"].as_u64().unwrap(),
            v["exclusive_bytes"].as_u64().unwrap(),
        );
        assert_eq!(shared + exclusive, stored, "{v}");
        assert!(shared > stored / 2, "most of each version is shared: {v}");
    }
    assert_eq!(versions[1]["tags"], serde_json::json!(["v2"]));
    assert_eq!(versions[1]["exclusive_bytes"], t["new_stored_bytes"], "v2 alone holds what it added: {u}");
    let logical = u["logical_bytes"].as_u64().unwrap();
    let stored = u["stored_bytes"].as_u64().unwrap();
    assert!(stored < logical * 6 / 10, "two near-identical versions store about one: {u}");
    let table = run_ok(hub.cmd().args(["du", "acme/tools"]));
    assert!(table.starts_with("VERSION"), "{table}");
    assert!(table.lines().last().unwrap().contains("2 versions"), "{table}");

    let err = crate::harness::run_err(hub.cmd().args(["du", "acme/tools:v1"]));
    assert!(String::from_utf8_lossy(&err.stderr).contains("not a version"));
}

/// `--quiet` silences the summaries of `tag` and `tag rm`.
#[test]
fn quiet_tag_commands_print_nothing() {
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"x").unwrap();
    run_ok(hub.cmd().args(["push", "-q"]).arg(src.path()).arg("acme/q:v1"));
    assert_eq!(run_ok(hub.cmd().args(["tag", "-q", "acme/q:v1", "acme/q:stable"])), "");
    assert_eq!(run_ok(hub.cmd().args(["tag", "rm", "-q", "acme/q:stable"])), "");
    assert!(run_ok(hub.cmd().args(["tag", "acme/q:v1", "acme/q:stable"])).contains("acme/q:stable -> blake3:"));
    // The history says every move: seq, digest, when, who, and from what.
    let history = run_ok(hub.cmd().args(["ls", "acme/q:stable"]));
    let lines: Vec<Vec<&str>> = history.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 3, "{history}");
    assert_eq!((lines[0][0], lines[0][4]), ("1", "(new)"), "{history}");
    assert_eq!((lines[1][1], lines[1][4]), ("(deleted)", lines[0][1]), "the deletion moved it from v1: {history}");
    assert_eq!(lines[2][4], "(new)", "re-created after a deletion: {history}");
}

/// `aetherfs inspect --files | head -1`: once the reader is gone the command
/// stops with SIGPIPE's status, no panic and no backtrace.
#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let src = tempfile::tempdir().unwrap();
    // Enough lines to fill a pipe's 64 KiB buffer several times over.
    for i in 0..4000 {
        std::fs::write(src.path().join(format!("file-with-a-long-name-{i:05}.txt")), i.to_string()).unwrap();
    }
    run_ok(hub.cmd().args(["push", "-q"]).arg(src.path()).arg("acme/pipe:v1"));
    let mut child = hub
        .cmd()
        .args(["inspect", "--files", "acme/pipe:v1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The read end is closed here, with most of the listing unread.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{:?} {stderr}", out.status.signal());
}
