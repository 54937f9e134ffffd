//! Who may use the front ends of `aetherfs serve`, through the real binary
//! and real clients (curl, rclone, libnfs's nfs-ls): WebDAV with a users
//! file, with a token file, and with the hub checking each client's own
//! credentials; the refusal to serve WebDAV outside loopback without
//! authentication; the admin endpoint's token; the NFS client allowlist.

use std::process::Command;

use crate::auth::{add_user, call, seed, write_config};
use crate::harness::{AuthHub, BIN, Hub, Proc, require, run_ok, start_daemon};

/// `aetherfs serve` with `args`, until it prints its WebDAV URL (and the
/// admin address when `--admin` is given).
fn serve(hub_url: &str, args: &[&str], envs: &[(&str, &str)]) -> (Proc, String, Option<String>) {
    let mut cmd = Command::new(BIN);
    cmd.args(["--hub", hub_url, "serve"]).args(args).env("AETHERFS_LOG", "info");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let admin = args.contains(&"--admin");
    let wanted: &[&str] = if admin { &["WebDAV on ", "admin on "] } else { &["WebDAV on "] };
    let (proc, lines) = start_daemon(cmd, wanted);
    let url = lines[0].split("WebDAV on ").nth(1).unwrap().trim().to_string();
    let admin = admin.then(|| lines[1].split("admin on ").nth(1).unwrap().trim().to_string());
    (proc, url, admin)
}

/// The status curl got for `url`, with extra curl arguments.
fn status(url: &str, extra: &[&str]) -> u16 {
    let out = run_ok(
        Command::new(require("curl")).args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"]).args(extra).arg(url),
    );
    out.trim().parse().unwrap()
}

/// An rclone remote for `url` signed in as `user` (rclone wants the password obscured).
fn rclone_remote(url: &str, user: &str, password: &str) -> String {
    let obscured = run_ok(Command::new(require("rclone")).args(["obscure", password]));
    format!(":webdav,url='{url}',user='{user}',pass='{}':", obscured.trim())
}

fn rclone_cat(remote: &str, path: &str) -> std::process::Output {
    Command::new(require("rclone"))
        .env("RCLONE_CONFIG", "/dev/null")
        .args(["cat", &format!("{remote}{path}")])
        .output()
        .unwrap()
}

#[test]
fn webdav_with_a_users_file_or_a_token_admits_only_them_and_the_admin_token_guards_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("file://{}", dir.path().join("hub").display());
    seed(&storage, &["acme/x"]);
    let hub = Hub::start(&storage);
    let users = dir.path().join("webdav-users");
    add_user(&users, "alice", "readers", "pw-alice");
    let token = dir.path().join("webdav-token");
    std::fs::write(&token, "webdav-secret\n").unwrap();
    let admin_token = dir.path().join("admin-token");
    std::fs::write(&admin_token, "admin-secret\n").unwrap();
    let (_proc, url, admin) = serve(
        &hub.url,
        &[
            "acme/x:v1",
            "--webdav",
            "127.0.0.1:0",
            "--webdav-users",
            users.to_str().unwrap(),
            "--webdav-token-file",
            token.to_str().unwrap(),
            "--admin",
            "127.0.0.1:0",
            "--admin-token-file",
            admin_token.to_str().unwrap(),
        ],
        &[],
    );
    let file = format!("{url}data.txt");
    assert_eq!(status(&file, &[]), 401);
    let challenges = run_ok(Command::new(require("curl")).args(["-sS", "-D", "-", "-o", "/dev/null", &file]));
    assert!(
        challenges.to_ascii_lowercase().contains("www-authenticate: basic realm=\"aetherfs-webdav\""),
        "{challenges}"
    );
    assert_eq!(status(&file, &["-u", "alice:wrong"]), 401);
    assert_eq!(status(&file, &["-u", "mallory:pw-alice"]), 401);
    assert_eq!(status(&file, &["-u", "alice:pw-alice"]), 200);
    assert_eq!(status(&file, &["-H", "Authorization: Bearer webdav-secret"]), 200);
    assert_eq!(status(&file, &["-H", "Authorization: Bearer webdav-secre"]), 401);
    // PROPFIND too: nothing is listed without credentials.
    assert_eq!(status(&url, &["-X", "PROPFIND", "-H", "Depth: 1"]), 401);

    // rclone signs in with the user's password, and is refused without it.
    let out = rclone_cat(&rclone_remote(&url, "alice", "pw-alice"), "data.txt");
    assert!(out.status.success(), "rclone: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "version of acme/x #0\n");
    let out = rclone_cat(&rclone_remote(&url, "alice", "nope"), "data.txt");
    assert!(!out.status.success() && out.stdout.is_empty(), "rclone read with a wrong password");

    // The admin endpoint: probes open, metrics and mounts only with the token.
    let admin = admin.unwrap();
    assert_eq!(status(&format!("{admin}/healthz"), &[]), 200);
    assert_eq!(status(&format!("{admin}/metrics"), &[]), 401);
    assert_eq!(status(&format!("{admin}/v1/mounts"), &["-H", "Authorization: Bearer wrong"]), 401);
    assert_eq!(status(&format!("{admin}/metrics"), &["-H", "Authorization: Bearer admin-secret"]), 200);
}

#[test]
fn webdav_outside_loopback_without_authentication_is_refused_unless_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let run = |args: &[&str]| {
        let out =
            Command::new(BIN).args(["--hub", "http://127.0.0.1:9", "serve", "acme/x:v1"]).args(args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // Refused before anything is bound or the hub is asked.
    let (ok, err) = run(&["--webdav", "0.0.0.0:0"]);
    assert!(!ok, "{err}");
    assert!(err.contains("refusing to serve WebDAV on 0.0.0.0:0") && err.contains("allow"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line per error: {err}");
    // A users file that does not exist fails at start, not at the first request.
    let (ok, err) = run(&["--webdav", "127.0.0.1:0", "--webdav-users", missing.to_str().unwrap()]);
    assert!(!ok && err.contains("missing"), "{err}");
    let (ok, err) = run(&["--webdav", "127.0.0.1:0", "--webdav-hub-auth", "--webdav-users", "x"]);
    assert!(!ok && err.contains("cannot be used with"), "{err}");
    let (ok, err) = run(&["--nfs", "127.0.0.1:0", "--nfs-allow", "10.0.0.0/33"]);
    assert!(!ok && err.contains("10.0.0.0/33"), "{err}");
}

/// With `--webdav-hub-auth` the hub decides: its users, its rules.
#[tokio::test(flavor = "multi_thread")]
async fn webdav_hub_auth_admits_whom_the_hub_lets_read_the_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    add_user(&users, "a-reader", "team-a", "pw-a");
    add_user(&users, "b-reader", "team-b", "pw-b");
    add_user(&users, "root", "ops", "pw-root");
    let storage = format!("file://{}", dir.path().join("hub").display());
    seed(&storage, &["team-a/x", "team-b/y"]);
    let config = write_config(
        dir.path(),
        "[basic]\nusers_file = \"users\"\n\
         [[rule]]\ndatasets = \"team-a/**\"\nread = [\"group:team-a\"]\n\
         [[rule]]\ndatasets = \"team-b/**\"\nread = [\"group:team-b\"]\n\
         [[rule]]\ndatasets = \"**\"\nread = [\"group:ops\"]\n",
    );
    let hub = AuthHub::start(&storage, &["--auth-config", &config]);
    let envs = [("AETHERFS_USER", "root"), ("AETHERFS_PASSWORD", "pw-root")];
    let (_proc, url, _) = serve(&hub.url, &["team-a/x:v1", "--webdav", "127.0.0.1:0", "--webdav-hub-auth"], &envs);
    let file = format!("{url}data.txt");
    let basic = |u: &str, p: &str| aetherfs_hub::auth::basic_authorization(u, p);
    let none = call(reqwest::Method::GET, &file, None, None).await;
    assert_eq!(none.status, 401);
    assert!(none.challenges.iter().any(|c| c.starts_with("Basic")), "{:?}", none.challenges);
    assert_eq!(call(reqwest::Method::GET, &file, Some(&basic("a-reader", "wrong")), None).await.status, 401);
    assert_eq!(call(reqwest::Method::GET, &file, Some(&basic("b-reader", "pw-b")), None).await.status, 403);
    let ok = call(reqwest::Method::GET, &file, Some(&basic("a-reader", "pw-a")), None).await;
    assert_eq!((ok.status, ok.body.as_str()), (200, Some("version of team-a/x #0\n")));
    // rclone, as the team-a reader.
    let out = rclone_cat(&rclone_remote(&url, "a-reader", "pw-a"), "data.txt");
    assert!(out.status.success(), "rclone: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "version of team-a/x #0\n");
}

/// `--nfs-allow`: a range without the client closes its connection.
#[test]
fn nfs_admits_clients_by_address() {
    let nfs_ls = require("nfs-ls");
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("file://{}", dir.path().join("hub").display());
    seed(&storage, &["acme/x"]);
    let hub = Hub::start(&storage);
    for (allow, admitted) in [("127.0.0.1/32", true), ("10.0.0.0/8", false)] {
        let mut cmd = hub.cmd();
        cmd.args(["serve", "acme/x:v1", "--nfs", "127.0.0.1:0", "--nfs-allow", allow]);
        let (_proc, lines) = start_daemon(cmd, &["NFSv3 on "]);
        let nfs = lines[0].split("NFSv3 on ").nth(1).unwrap().trim().to_string();
        let out = Command::new(&nfs_ls).arg(&nfs).output().unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.success() && listing.contains("data.txt"), admitted, "{allow}: {listing}");
    }
}

/// Hub authentication in front of a hub that lets anyone read protects
/// nothing: `serve` says so.
#[test]
fn webdav_hub_auth_warns_when_the_hub_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("file://{}", dir.path().join("hub").display());
    seed(&storage, &["acme/x"]);
    let hub = Hub::start(&storage);
    let mut cmd = hub.cmd();
    cmd.args(["serve", "acme/x:v1", "--webdav", "127.0.0.1:0", "--webdav-hub-auth"]);
    let (_proc, lines) = start_daemon(cmd, &["WebDAV on ", "the hub lets anyone read acme/x"]);
    assert!(lines[1].contains("WARNING"), "{}", lines[1]);
    // Still a gate: a request without credentials is refused.
    let url = lines[0].split("WebDAV on ").nth(1).unwrap().trim().to_string();
    assert_eq!(status(&format!("{url}data.txt"), &[]), 401);
}
