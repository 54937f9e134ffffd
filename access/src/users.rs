//! Basic auth from a users file of argon2id hashes, for small setups.
//!
//! The file has one user per line, `NAME:PHC[:GROUP,GROUP…]`, where PHC is an
//! argon2id hash string with its own random salt (`$argon2id$v=19$m=…`); `#`
//! starts a comment. `aetherfs hub passwd FILE USER` writes it (mode 0600).
//! Anything that is not an argon2 hash is refused, so the file can never hold
//! a plain-text password by mistake.
//!
//! The file is re-read when its size, inode or modification time change
//! (checked at most once a second); a file that fails to parse keeps the
//! previous users in force and is reported in the log.
//!
//! Hashing is deliberately slow (~tens of ms), and a client sends its
//! password with every request: a successful check is remembered for
//! [`VERIFIED_TTL`] under a keyed SHA-256 of (user, password, stored hash), so
//! a changed password or file ends it. Unknown users are checked against a
//! dummy hash so they take as long as wrong passwords. At most
//! [`CONCURRENT_HASHES`] hashes run at once. Failures are counted and logged
//! at most once per [`FAILURE_LOG_EVERY`]. Guessing is slowed by a
//! [`Throttle`] (per user and per client address) checked before any hash.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use parking_lot::Mutex;
use rand::RngCore;
use sha2::{Digest as _, Sha256};

use crate::AccessError;
use crate::throttle::{FailureLimits, Throttle};

/// How long a verified (user, password) pair is trusted without rehashing.
const VERIFIED_TTL: Duration = Duration::from_secs(300);
const VERIFIED_MAX: usize = 10_000;
const CONCURRENT_HASHES: usize = 2;
const RECHECK_EVERY: Duration = Duration::from_secs(1);
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
struct User {
    hash: String,
    groups: Vec<String>,
}

/// What identifies a version of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    ino: u64,
    mtime_ns: i128,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        len: m.len(),
        ino: m.ino(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

struct Users {
    by_name: HashMap<String, User>,
    stamp: Option<Stamp>,
    checked_at: Instant,
}

#[derive(Default)]
struct Failures {
    since_log: u64,
    last_user: String,
    logged_at: Option<Instant>,
}

/// A users file, checked and watched for changes.
pub struct UsersFile {
    path: PathBuf,
    users: Mutex<Users>,
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    key: [u8; 32],
    dummy: String,
    hashing: tokio::sync::Semaphore,
    failures: Mutex<Failures>,
    throttle: Throttle,
}

/// A user the users file accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicUser {
    pub name: String,
    pub groups: Vec<String>,
}

/// Why basic credentials were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasicError {
    Malformed,
    Wrong,
    /// Too many failures for this user or from this address: retry after this long.
    Throttled(Duration),
}

impl UsersFile {
    pub fn load(path: &Path, limits: FailureLimits) -> Result<UsersFile, AccessError> {
        let (by_name, st) = read_users(path)?;
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let mut pw = [0u8; 16];
        rand::rng().fill_bytes(&mut pw);
        let dummy = hash_password(&hex(&pw))?;
        Ok(UsersFile {
            path: path.to_path_buf(),
            users: Mutex::new(Users { by_name, stamp: Some(st), checked_at: Instant::now() }),
            verified: Mutex::new(HashMap::new()),
            key,
            dummy,
            hashing: tokio::sync::Semaphore::new(CONCURRENT_HASHES),
            failures: Mutex::new(Failures::default()),
            throttle: Throttle::new(limits),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn user_count(&self) -> usize {
        self.users.lock().by_name.len()
    }

    /// Re-reads the file if it changed (at most once per [`RECHECK_EVERY`]).
    fn reload_if_changed(&self) {
        let mut u = self.users.lock();
        if u.checked_at.elapsed() < RECHECK_EVERY {
            return;
        }
        u.checked_at = Instant::now();
        let now = stamp(&self.path).ok();
        if now == u.stamp {
            return;
        }
        match read_users(&self.path) {
            Ok((by_name, st)) => {
                tracing::info!(file = %self.path.display(), users = by_name.len(), "basic-auth users file reloaded");
                u.by_name = by_name;
                u.stamp = Some(st);
            }
            Err(e) => {
                // Keep serving the users we know; say so once per change.
                tracing::error!(error = %e, "basic-auth users file not reloaded; the previous users stay in force");
                u.stamp = now;
            }
        }
    }

    /// Checks an `Authorization: Basic` value (without the scheme) sent from `addr`.
    pub async fn check(&self, encoded: &str, addr: Option<std::net::IpAddr>) -> Result<BasicUser, BasicError> {
        use base64::Engine;
        let decoded =
            base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| BasicError::Malformed)?;
        let text = String::from_utf8(decoded).map_err(|_| BasicError::Malformed)?;
        let (name, password) = text.split_once(':').ok_or(BasicError::Malformed)?;
        self.throttle.check(name, addr, Instant::now()).map_err(BasicError::Throttled)?;
        self.reload_if_changed();
        let user = self.users.lock().by_name.get(name).cloned();
        let stored = user.as_ref().map_or(self.dummy.as_str(), |u| u.hash.as_str());
        let fingerprint = self.fingerprint(name, password, stored);
        let cached = self.verified.lock().get(&fingerprint).is_some_and(|t| t.elapsed() < VERIFIED_TTL);
        let ok = cached || {
            let permit = self.hashing.acquire().await;
            let (pw, hash) = (password.to_string(), stored.to_string());
            let ok = tokio::task::spawn_blocking(move || verify(&pw, &hash)).await.unwrap_or(false);
            drop(permit);
            ok
        };
        match user {
            Some(u) if ok => {
                if !cached {
                    let mut v = self.verified.lock();
                    if v.len() >= VERIFIED_MAX {
                        v.retain(|_, t| t.elapsed() < VERIFIED_TTL);
                        if v.len() >= VERIFIED_MAX {
                            v.clear();
                        }
                    }
                    v.insert(fingerprint, Instant::now());
                }
                self.throttle.succeeded(name, addr, Instant::now());
                Ok(BasicUser { name: name.to_string(), groups: u.groups })
            }
            _ => {
                self.failed(name);
                self.throttle.failed(name, addr, Instant::now());
                Err(BasicError::Wrong)
            }
        }
    }

    fn fingerprint(&self, name: &str, password: &str, stored: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        for part in [name, password, stored] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().into()
    }

    fn failed(&self, name: &str) {
        let mut f = self.failures.lock();
        f.since_log += 1;
        f.last_user = name.chars().take(64).collect();
        if f.logged_at.is_none_or(|t| t.elapsed() >= FAILURE_LOG_EVERY) {
            tracing::warn!(
                failures = f.since_log,
                last_user = %f.last_user,
                "basic auth: {} failed attempt(s) since the last report",
                f.since_log
            );
            f.since_log = 0;
            f.logged_at = Some(Instant::now());
        }
    }
}

fn verify(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(h) => Argon2::default().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The `Authorization` header value for basic auth (RFC 7617), for clients
/// and tests of this hub.
pub fn basic_authorization(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// An argon2id hash of `password` with a fresh random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, AccessError> {
    Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(AccessError::Hash)
}

fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && !name.contains(':')
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Groups may contain ':' (`system:serviceaccounts`): they are the last field.
fn valid_group(g: &str) -> bool {
    !g.is_empty() && !g.contains(',') && !g.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn read_users(path: &Path) -> Result<(HashMap<String, User>, Stamp), AccessError> {
    let io = |e: std::io::Error| AccessError::Io { path: path.to_path_buf(), source: e };
    let before = stamp(path).map_err(io)?;
    let text = std::fs::read_to_string(path).map_err(io)?;
    let users = parse_users(&text).map_err(|source| AccessError::Users { path: path.to_path_buf(), source })?;
    Ok((users, before))
}

/// Why a line of the users file is refused (lines numbered from 1).
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("line {line}: invalid user name")]
    UserName { line: usize },
    #[error("line {line} ({user}): not an argon2 hash; write the file with `aetherfs hub passwd`, never plain text")]
    NotArgon2 { line: usize, user: String },
    #[error("line {line} ({user}): invalid group {group:?}")]
    Group { line: usize, user: String, group: String },
    #[error("line {line}: user {user} appears twice")]
    Duplicate { line: usize, user: String },
}

fn parse_users(text: &str) -> Result<HashMap<String, User>, UsersError> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let mut parts = line.splitn(3, ':');
        let name = parts.next().unwrap_or_default();
        let hash = parts.next().unwrap_or_default();
        let groups = parts.next().unwrap_or_default();
        if !valid_user_name(name) {
            return Err(UsersError::UserName { line: n });
        }
        match PasswordHash::new(hash) {
            Ok(h) if h.algorithm.as_str().starts_with("argon2") => {}
            _ => {
                return Err(UsersError::NotArgon2 { line: n, user: name.to_string() });
            }
        }
        let groups: Vec<String> =
            groups.split(',').map(str::trim).filter(|g| !g.is_empty()).map(str::to_string).collect();
        if let Some(g) = groups.iter().find(|g| !valid_group(g)) {
            return Err(UsersError::Group { line: n, user: name.to_string(), group: g.clone() });
        }
        if users.insert(name.to_string(), User { hash: hash.to_string(), groups }).is_some() {
            return Err(UsersError::Duplicate { line: n, user: name.to_string() });
        }
    }
    Ok(users)
}

/// Sets `user`'s hash and groups in the users file (created if missing),
/// keeping every other line; written to a temporary file and renamed, mode 0600.
pub fn set_user(path: &Path, user: &str, hash: &str, groups: &[String]) -> Result<(), AccessError> {
    if !valid_user_name(user) {
        return Err(AccessError::UserName(user.to_string()));
    }
    if let Some(g) = groups.iter().find(|g| !valid_group(g)) {
        return Err(AccessError::Group(g.clone()));
    }
    let io = |e: std::io::Error| AccessError::Io { path: path.to_path_buf(), source: e };
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "# AetherFS hub users: NAME:ARGON2ID-HASH[:GROUP,GROUP...]; edit with `aetherfs hub passwd`\n".to_string()
        }
        Err(e) => return Err(io(e)),
    };
    parse_users(&old).map_err(|source| AccessError::Users { path: path.to_path_buf(), source })?;
    let entry =
        if groups.is_empty() { format!("{user}:{hash}") } else { format!("{user}:{hash}:{}", groups.join(",")) };
    let mut out = String::new();
    let mut replaced = false;
    for line in old.lines() {
        let is_user = !line.trim_start().starts_with('#') && line.trim().split(':').next() == Some(user);
        if is_user {
            out.push_str(&entry);
            replaced = true;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    if !replaced {
        out.push_str(&entry);
        out.push('\n');
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("users"),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(out.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;

    fn basic_header(user: &str, pw: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    }

    #[tokio::test]
    async fn users_file_roundtrip_and_checks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users");
        set_user(&path, "alice", &hash_password("correct horse").expect("hash"), &["team-a".into()]).expect("set");
        set_user(&path, "bob", &hash_password("pw-b").expect("hash"), &[]).expect("set");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains("correct horse") && text.contains("alice:$argon2id$"), "{text}");
        let mode = std::fs::metadata(&path).expect("meta").mode() & 0o777;
        assert_eq!(mode, 0o600);

        let basic = UsersFile::load(&path, FailureLimits::default()).expect("load");
        assert_eq!(basic.user_count(), 2);
        let id = basic.check(&basic_header("alice", "correct horse"), None).await.expect("alice");
        assert_eq!((id.name.as_str(), id.groups), ("alice", vec!["team-a".into()]));
        // Remembered: the second check needs no hash and gives the same answer.
        assert!(basic.check(&basic_header("alice", "correct horse"), None).await.is_ok());
        assert_eq!(basic.check(&basic_header("alice", "wrong"), None).await, Err(BasicError::Wrong));
        assert_eq!(basic.check(&basic_header("carol", "x"), None).await, Err(BasicError::Wrong));
        assert_eq!(basic.check("!!!", None).await, Err(BasicError::Malformed));
        assert_eq!(
            basic.check(&base64::engine::general_purpose::STANDARD.encode("nocolon"), None).await,
            Err(BasicError::Malformed)
        );

        // A changed password takes effect on reload, and ends the remembered check.
        set_user(&path, "alice", &hash_password("new").expect("hash"), &[]).expect("set");
        basic.users.lock().checked_at -= RECHECK_EVERY;
        assert_eq!(basic.check(&basic_header("alice", "correct horse"), None).await, Err(BasicError::Wrong));
        assert!(basic.check(&basic_header("alice", "new"), None).await.is_ok());

        // A broken file keeps the previous users.
        std::fs::write(&path, "alice:plaintext\n").expect("write");
        basic.users.lock().checked_at -= RECHECK_EVERY;
        assert!(basic.check(&basic_header("alice", "new"), None).await.is_ok());
    }

    #[test]
    fn refuses_plain_text_and_junk() {
        for bad in ["alice:secret", "alice:$2y$10$abcdefghijklmnopqrstuv", ":$argon2id$", "a b:x", "alice"] {
            assert!(parse_users(bad).is_err(), "{bad}");
        }
        let h = hash_password("x").expect("hash");
        let users = parse_users(&format!("# comment\n\nalice:{h}:g1, g2,sys:x\n")).expect("valid");
        assert_eq!(users["alice"].groups, vec!["g1", "g2", "sys:x"]);
        assert!(parse_users(&format!("alice:{h}\nalice:{h}\n")).is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(set_user(&dir.path().join("u"), "a:b", &h, &[]).is_err());
        assert!(set_user(&dir.path().join("u"), "a", &h, &["x y".into()]).is_err());
    }
}
