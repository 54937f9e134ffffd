//! The hub binary over the cloud stores it opens from a URL and the
//! environment (s3:// on moto, az:// on Azurite), and `--redirect-reads`:
//! a cold pull fetches the pack bytes from the store, not through the hub.
//! The hub's egress for the same cold pull, streamed and redirected, is
//! printed (the numbers docs/operations.md quotes).

use std::path::Path;

use serde_json::Value;

use crate::harness::{Azurite, Hub, Moto, assert_same_tree, http_get, make_tree, metric, run_err, run_ok};

const SERVED: &str = "aetherfs_hub_pack_served_bytes_total";

fn hub_metric(hub: &Hub, name: &str) -> f64 {
    let (_, text) = http_get(&hub.url, "/metrics").expect("metrics");
    metric(&text, name).unwrap_or(0.0)
}

/// Pulls `reference` into an empty directory; returns what the hub served
/// for it and what the pull fetched.
fn cold_pull(hub: &Hub, reference: &str, src: &Path) -> (f64, u64) {
    let before = hub_metric(hub, SERVED);
    let dst = tempfile::tempdir().unwrap();
    let target = dst.path().join("pulled");
    let out: Value = serde_json::from_str(&run_ok(hub.cmd().args(["pull", reference, "--json"]).arg(&target))).unwrap();
    assert_same_tree(src, &target);
    (hub_metric(hub, SERVED) - before, out["fetched_bytes"].as_u64().unwrap())
}

/// Push through one hub, cold pulls through it and through a second hub on
/// the same storage with `--redirect-reads`.
fn egress_with_and_without_redirects(storage: &str, envs: &[(String, String)]) -> (f64, f64, u64) {
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), 24 << 20);
    let plain = Hub::start_with_env(storage, envs);
    run_ok(plain.cmd().arg("push").arg(src.path()).args(["acme/geoip:v1"]));
    let (streamed, fetched) = cold_pull(&plain, "acme/geoip:v1", src.path());
    let redirecting = Hub::start_with_args(storage, envs, &["--redirect-reads", "--redirect-expiry-secs", "60"]);
    let (redirected, fetched_again) = cold_pull(&redirecting, "acme/geoip:v1", src.path());
    assert_eq!(fetched, fetched_again, "both pulls fetch the same bytes");
    assert!(hub_metric(&redirecting, "aetherfs_hub_pack_reads_redirected_total") > 0.0);
    eprintln!(
        "{storage}: hub egress for a cold pull fetching {fetched} bytes: {streamed} streamed, {redirected} with --redirect-reads"
    );
    (streamed, redirected, fetched)
}

#[test]
fn reads_redirect_to_s3_and_skip_the_hub() {
    let moto = Moto::start("aetherfs-test");
    let (streamed, redirected, fetched) = egress_with_and_without_redirects("s3://aetherfs-test/egress", &moto.env());
    assert!(streamed >= fetched as f64, "the streaming hub served {streamed} of {fetched} bytes");
    assert_eq!(redirected, 0.0, "the redirecting hub served pack bytes");
}

#[test]
fn azure_round_trip_and_redirected_reads() {
    let azurite = Azurite::start("aetherfs-test");
    let (streamed, redirected, fetched) =
        egress_with_and_without_redirects("az://aetherfs-test/some/prefix", &azurite.env());
    assert!(streamed >= fetched as f64, "the streaming hub served {streamed} of {fetched} bytes");
    assert_eq!(redirected, 0.0, "the redirecting hub served pack bytes");
}

#[test]
fn redirect_reads_is_refused_without_a_signing_store() {
    let dir = tempfile::tempdir().unwrap();
    for storage in [format!("file://{}", dir.path().display()), "memory://".to_string()] {
        let err = run_err(
            std::process::Command::new(crate::harness::BIN)
                .args(["hub", "--listen", "127.0.0.1:0", "--storage", &storage, "--redirect-reads"])
                .env("AETHERFS_LOG", "warn"),
        );
        let msg = String::from_utf8_lossy(&err.stderr);
        assert_eq!(msg.lines().filter(|l| l.starts_with("error:")).count(), 1, "one error line: {msg}");
        assert!(msg.contains("--redirect-reads") && msg.contains("s3://"), "{msg}");
    }
    // Encryption settings that do not fit the store are refused the same way.
    let err = run_err(
        std::process::Command::new(crate::harness::BIN)
            .args(["hub", "--listen", "127.0.0.1:0", "--storage", "memory://", "--sse", "kms"])
            .env("AETHERFS_LOG", "warn"),
    );
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(msg.contains("s3://"), "{msg}");
}
