//! The hub's gRPC API through a client that is not ours: Python's grpcio,
//! which learns the services from the hub's reflection service only
//! (scripts/grpc-client-check.py; scripts/install-test-peers.sh installs
//! grpcio, grpcio-reflection and protobuf). The hub is the real binary with
//! basic auth, on one port for gRPC (h2c) and REST (HTTP/1.1).

use std::path::Path;
use std::process::Command;

use crate::auth::{add_user, write_config};
use crate::harness::{AuthHub, Hub, http_get, require, run_ok};

/// Pushes two versions of `name` (tags v1 and v2) through an open hub.
fn seed_two(storage: &str, name: &str) -> (String, String) {
    let hub = Hub::start(storage);
    let push = |n: usize| {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("data.txt"), format!("version {n} of {name}\n").repeat(50)).unwrap();
        std::fs::write(src.path().join("more.csv"), format!("a,b\n{n},2\n")).unwrap();
        let out = run_ok(hub.cmd().arg("push").arg(src.path()).arg(format!("{name}:v{n}")));
        out.lines().last().unwrap().split_once('@').unwrap().1.to_string()
    };
    (push(1), push(2))
}

#[test]
fn grpcio_through_reflection_calls_every_method() {
    let python = require("python3");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/grpc-client-check.py");
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    add_user(&users, "reader", "team-a", "pw-reader");
    add_user(&users, "root", "ops", "pw-root");
    let storage = format!("file://{}", dir.path().join("hub").display());
    let (v1, v2) = seed_two(&storage, "team-a/x");
    let config = write_config(
        dir.path(),
        "[basic]\nusers_file = \"users\"\n\
         [[rule]]\ndatasets = \"team-a/x\"\nread = [\"group:team-a\"]\n\
         [[rule]]\ndatasets = \"**\"\nadmin = [\"group:ops\"]\n",
    );
    let hub = AuthHub::start(&storage, &["--auth-config", &config]);
    let target = hub.url.trim_start_matches("http://").trim_end_matches('/').to_string();
    let out = Command::new(python)
        .arg(&script)
        .args([&target, &hub.url, "team-a/x", &v1, &v2])
        .env("AETHERFS_ADMIN", "root:pw-root")
        .env("AETHERFS_READER", "reader:pw-reader")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the grpcio client failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("ok: WatchTag streams the move made through REST"), "{stdout}");
    assert!(stdout.lines().last().is_some_and(|l| l.ends_with("checks passed")), "{stdout}");

    // Every call was counted by method and code.
    let (_, metrics) = http_get(&hub.url, "/metrics").expect("metrics");
    for sample in [
        r#"aetherfs_hub_grpc_requests_total{method="SetTag",code="ABORTED"} 1"#,
        r#"aetherfs_hub_grpc_requests_total{method="ReadPack",code="OK"}"#,
        r#"aetherfs_hub_grpc_requests_total{method="ListTags",code="UNAUTHENTICATED"} 2"#,
    ] {
        assert!(metrics.contains(sample), "no {sample} in\n{metrics}");
    }
}
