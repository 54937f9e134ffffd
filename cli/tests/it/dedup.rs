//! Only changed chunks move: re-pushes, a periodic database refresh, and the
//! pull that follows it.

use serde_json::Value;

use crate::harness::{Hub, make_tree, run_ok, sqlite};

fn push_json(hub: &Hub, dir: &std::path::Path, reference: &str) -> Value {
    serde_json::from_str(&run_ok(hub.cmd().args(["push", "--json"]).arg(dir).arg(reference))).unwrap()
}

#[test]
fn pushing_the_same_tree_twice_uploads_nothing() {
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), 8 << 20);
    let first = push_json(&hub, src.path(), "acme/same:v1");
    assert!(first["packs_uploaded"].as_u64().unwrap() >= 1);
    let second = push_json(&hub, src.path(), "acme/same:v2");
    assert_eq!(second["packs_uploaded"], 0, "{second}");
    assert_eq!(second["uploaded_bytes"], 0);
    assert_eq!(second["new_chunks"], 0);
    assert_eq!(second["chunks"], first["chunks"]);
}

#[test]
fn a_one_percent_database_refresh_moves_a_small_fraction() {
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::start(&format!("file://{}", data.path().display()));
    let src = tempfile::tempdir().unwrap();
    let db = src.path().join("lookup.sqlite");
    // ~64 MiB: 295,000 rows of ~230 bytes.
    let rows = 295_000;
    sqlite(
        &db,
        &format!(
            "PRAGMA page_size=4096;
             CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, payload BLOB);
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<{rows})
             INSERT INTO t SELECT x, printf('key-%08d', x), randomblob(200) FROM c;"
        ),
    );
    let size = std::fs::metadata(&db).unwrap().len();
    assert!(size >= 64 << 20, "database is {size} bytes");
    let v1 = push_json(&hub, src.path(), "acme/lookup:v1");
    let pulled = tempfile::tempdir().unwrap();
    run_ok(hub.cmd().args(["pull", "acme/lookup:v1"]).arg(pulled.path()));

    // The refresh: rewrite a contiguous 1% of the rows, append 1% new ones.
    let n = rows / 100;
    let start = rows / 3;
    sqlite(
        &db,
        &format!(
            "UPDATE t SET payload = randomblob(200) WHERE id BETWEEN {start} AND {};
             WITH RECURSIVE c(x) AS (SELECT {} UNION ALL SELECT x+1 FROM c WHERE x<{})
             INSERT INTO t SELECT x, printf('key-%08d', x), randomblob(200) FROM c;",
            start + n - 1,
            rows + 1,
            rows + n
        ),
    );
    let new_size = std::fs::metadata(&db).unwrap().len();
    let v2 = push_json(&hub, src.path(), "acme/lookup:v2");
    let uploaded = v2["uploaded_bytes"].as_u64().unwrap();
    let new_bytes = v2["new_bytes"].as_u64().unwrap();
    let fraction = new_bytes as f64 / new_size as f64;
    eprintln!(
        "1% refresh of a {} MiB database: {} new bytes ({:.2}%), {} uploaded; first push uploaded {}",
        new_size >> 20,
        new_bytes,
        fraction * 100.0,
        uploaded,
        v1["uploaded_bytes"]
    );
    // 2% of the rows changed; allow for chunk granularity and B-tree pages.
    assert!(fraction < 0.08, "refresh stored {:.1}% of the database", fraction * 100.0);
    assert!(uploaded <= new_bytes + (1 << 20));

    // Pulling v2 over v1 downloads about the same small fraction.
    let p: Value =
        serde_json::from_str(&run_ok(hub.cmd().args(["pull", "--json", "acme/lookup:v2"]).arg(pulled.path()))).unwrap();
    let fetched = p["fetched_bytes"].as_u64().unwrap();
    eprintln!("pull of v2 over v1 fetched {fetched} bytes ({:.2}%)", fetched as f64 / new_size as f64 * 100.0);
    assert!((fetched as f64) < new_size as f64 * 0.08, "pull fetched {fetched} bytes");
    assert!(p["reused_bytes"].as_u64().unwrap() > new_size * 9 / 10);
    assert_eq!(std::fs::read(pulled.path().join("lookup.sqlite")).unwrap(), std::fs::read(&db).unwrap());
}
