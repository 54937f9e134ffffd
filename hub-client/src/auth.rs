//! Credentials: how a [`HubClient`](crate::HubClient) proves who it is.
//!
//! The client asks its [`Credentials`] for an `Authorization` header before
//! every request. When the hub answers 401, the client hands the rejected
//! header back through [`Credentials::invalidate`] and retries the request
//! once with whatever `authorization` gives next: a refreshed token, a token
//! file read again, a new client-credentials token. A second 401 is the
//! caller's error.
//!
//! The implementations, one per way of being deployed:
//!
//! - [`StaticToken`]: a bearer token handed over as is (`AETHERFS_TOKEN`).
//! - [`BasicAuth`]: a user and password for hubs with a password file.
//! - [`TokenFile`]: a token in a file that something else rotates (a
//!   Kubernetes projected service-account token); the file is read again
//!   when its identity, size or modification time changes, and after a 401.
//! - [`ClientCredentials`]: the OAuth client-credentials grant for CI and
//!   daemons; the token is cached until shortly before it expires.
//! - [`StoredLogin`]: what `aetherfs login` saved (device-code flow); the
//!   access token is refreshed when it expires or the hub refuses it, and the
//!   rotated refresh token is saved before the new access token is used.
//!
//! Every header is marked sensitive so it never appears in debug output.

mod oidc;
mod store;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use reqwest::header::HeaderValue;

use crate::error::ClientError;

pub use oidc::{ClientCredentials, DevicePrompt, OidcSettings, device_login, revoke_login};
pub use store::{CredentialStore, LoginEntry, StoredLogin};

/// A source of `Authorization` headers for hub requests.
pub trait Credentials: Send + Sync {
    /// The header for the next request; `None` sends the request without one.
    fn authorization(&self) -> BoxFuture<'_, Result<Option<HeaderValue>, ClientError>>;

    /// The hub refused `rejected` with a 401: forget it, so that the next
    /// [`authorization`](Credentials::authorization) refreshes or re-reads.
    /// Concurrent requests that were refused the same header cause one refresh.
    fn invalidate(&self, rejected: &HeaderValue) {
        let _ = rejected;
    }

    /// What these credentials are, for logs and error messages; never a secret.
    fn describe(&self) -> String;
}

/// `Bearer <token>`, marked sensitive.
pub(crate) fn bearer(token: &str) -> Result<HeaderValue, ClientError> {
    sensitive(&format!("Bearer {}", token.trim()))
}

fn sensitive(value: &str) -> Result<HeaderValue, ClientError> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| ClientError::Auth("the credential holds characters not allowed in an HTTP header".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

/// Seconds since the Unix epoch.
pub(crate) fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// When a token obtained at `obtained` and expiring at `expires` should be
/// replaced: a quarter of its lifetime early, at most 30 s early, so a short
/// test lifetime still gets used and a long one never reaches the hub stale.
pub(crate) fn renew_at(obtained: u64, expires: u64) -> u64 {
    let lifetime = expires.saturating_sub(obtained);
    expires.saturating_sub((lifetime / 4).min(30))
}

/// A fixed bearer token.
pub struct StaticToken {
    header: HeaderValue,
}

impl StaticToken {
    pub fn new(token: &str) -> Result<Self, ClientError> {
        if token.trim().is_empty() {
            return Err(ClientError::Auth("the bearer token is empty".into()));
        }
        Ok(Self { header: bearer(token)? })
    }
}

impl Credentials for StaticToken {
    fn authorization(&self) -> BoxFuture<'_, Result<Option<HeaderValue>, ClientError>> {
        Box::pin(async { Ok(Some(self.header.clone())) })
    }

    fn describe(&self) -> String {
        "a bearer token".into()
    }
}

/// HTTP Basic authentication.
pub struct BasicAuth {
    user: String,
    header: HeaderValue,
}

impl BasicAuth {
    pub fn new(user: &str, password: &str) -> Result<Self, ClientError> {
        use base64::Engine;
        if user.is_empty() || user.contains(':') {
            return Err(ClientError::Auth("the user name for basic authentication is empty or has a ':'".into()));
        }
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Ok(Self { user: user.to_string(), header: sensitive(&format!("Basic {encoded}"))? })
    }
}

impl Credentials for BasicAuth {
    fn authorization(&self) -> BoxFuture<'_, Result<Option<HeaderValue>, ClientError>> {
        Box::pin(async { Ok(Some(self.header.clone())) })
    }

    fn describe(&self) -> String {
        format!("basic authentication as {}", self.user)
    }
}

/// A bearer token kept in a file that is replaced while we run (a Kubernetes
/// projected service-account token, rotated by the kubelet through a symlink
/// swap). The file is read again when what `stat` reports changes (looked at
/// once a second at most), and at once after the hub refused its token.
pub struct TokenFile {
    path: PathBuf,
    state: Mutex<Option<Loaded>>,
}

struct Loaded {
    stamp: Stamp,
    header: HeaderValue,
    refused: bool,
    /// When `stamp` was last compared with the file.
    checked: Instant,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp { dev: m.dev(), ino: m.ino(), len: m.len(), modified: m.modified().ok() }
    }
}

/// Largest token file read: service-account tokens are a few KiB.
const TOKEN_FILE_MAX: u64 = 64 << 10;

/// How often the file is looked at while its token is accepted: rotations
/// happen well before expiry, so a second's delay costs nothing, and busy
/// clients do not `stat` once per request.
const TOKEN_FILE_RECHECK: Duration = Duration::from_secs(1);

impl TokenFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), state: Mutex::new(None) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn current(&self) -> Result<HeaderValue, ClientError> {
        let bad = |why: String| ClientError::Auth(format!("token file {}: {why}", self.path.display()));
        {
            let state = self.state.lock();
            if let Some(l) = state.as_ref()
                && !l.refused
                && l.checked.elapsed() < TOKEN_FILE_RECHECK
            {
                return Ok(l.header.clone());
            }
        }
        let meta = tokio::fs::metadata(&self.path).await.map_err(|e| bad(e.to_string()))?;
        let stamp = Stamp::of(&meta);
        {
            let mut state = self.state.lock();
            if let Some(l) = state.as_mut()
                && l.stamp == stamp
                && !l.refused
            {
                l.checked = Instant::now();
                return Ok(l.header.clone());
            }
        }
        if meta.len() > TOKEN_FILE_MAX {
            return Err(bad(format!("larger than {TOKEN_FILE_MAX} bytes")));
        }
        let text = tokio::fs::read_to_string(&self.path).await.map_err(|e| bad(e.to_string()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(bad("empty".into()));
        }
        let header = bearer(token).map_err(|_| bad("holds characters not allowed in an HTTP header".into()))?;
        tracing::debug!(path = %self.path.display(), "read the token file");
        // The stamp read before the contents: a change in between is seen next time.
        *self.state.lock() = Some(Loaded { stamp, header: header.clone(), refused: false, checked: Instant::now() });
        Ok(header)
    }
}

impl Credentials for TokenFile {
    fn authorization(&self) -> BoxFuture<'_, Result<Option<HeaderValue>, ClientError>> {
        Box::pin(async { self.current().await.map(Some) })
    }

    fn invalidate(&self, rejected: &HeaderValue) {
        let mut state = self.state.lock();
        if let Some(l) = state.as_mut()
            && l.header == rejected
        {
            l.refused = true;
        }
    }

    fn describe(&self) -> String {
        format!("token file {}", self.path.display())
    }
}

/// Parses an OAuth scope string ("openid offline_access") into its scopes.
pub fn parse_scopes(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(h: &HeaderValue) -> &str {
        h.to_str().unwrap()
    }

    #[test]
    fn renewal_is_early_but_not_too_early() {
        assert_eq!(renew_at(1000, 1005), 1004);
        assert_eq!(renew_at(1000, 1000 + 3600), 1000 + 3600 - 30);
        assert_eq!(renew_at(1000, 1000), 1000);
    }

    #[tokio::test]
    async fn basic_and_static() {
        let b = BasicAuth::new("alice", "s3cret:x").unwrap();
        let h = b.authorization().await.unwrap().unwrap();
        assert!(h.is_sensitive());
        assert_eq!(value(&h), "Basic YWxpY2U6czNjcmV0Ong=");
        assert!(BasicAuth::new("a:b", "x").is_err());
        let t = StaticToken::new(" abc \n").unwrap();
        assert_eq!(value(&t.authorization().await.unwrap().unwrap()), "Bearer abc");
        assert!(StaticToken::new("  ").is_err());
        assert!(StaticToken::new("a\nb").is_err());
    }

    #[tokio::test]
    async fn token_file_follows_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "one\n").unwrap();
        let f = TokenFile::new(&path);
        assert_eq!(value(&f.authorization().await.unwrap().unwrap()), "Bearer one");
        // Rotated the way the kubelet does it: a new file renamed over the old.
        let tmp = dir.path().join("token.new");
        std::fs::write(&tmp, "two-longer\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        tokio::time::sleep(TOKEN_FILE_RECHECK).await;
        assert_eq!(value(&f.authorization().await.unwrap().unwrap()), "Bearer two-longer");
        // Refused: read again even when stat sees no change.
        let h = f.authorization().await.unwrap().unwrap();
        f.invalidate(&h);
        assert_eq!(value(&f.authorization().await.unwrap().unwrap()), "Bearer two-longer");
        std::fs::write(&path, "").unwrap();
        tokio::time::sleep(TOKEN_FILE_RECHECK).await;
        assert!(f.authorization().await.unwrap_err().to_string().contains("empty"));
        std::fs::remove_file(&path).unwrap();
        assert!(f.authorization().await.unwrap_err().to_string().contains("token file"));
    }
}
