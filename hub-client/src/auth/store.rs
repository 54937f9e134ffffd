//! The credentials file `aetherfs login` writes and every command reads.
//!
//! One JSON file (`credentials.json`) holds a login per hub URL. It is only
//! ever replaced whole (a temporary file in the same directory, fsynced,
//! renamed over it), mode 0600 in a 0700 directory, so a reader sees the old
//! or the new contents and nobody else sees either.
//!
//! Refresh tokens rotate: the provider answers a refresh with a new refresh
//! token and treats any later use of the old one as theft, revoking the whole
//! grant. So a refresh happens under an exclusive lock on a lock file beside
//! the credentials, the file is re-read under the lock (another process may
//! have refreshed already: then its tokens are used), and the new refresh
//! token is on disk before the new access token is used. The refresh runs in
//! a task of its own, so a caller that stops waiting cannot cut it between
//! the provider's answer and the save.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use reqwest::header::HeaderValue;
use serde::{Deserialize, Serialize};

use super::oidc::{Oidc, OidcSettings, RefreshError};
use super::{Credentials, bearer, now_unix, renew_at};
use crate::error::ClientError;

const FILE_NAME: &str = "credentials.json";
const LOCK_NAME: &str = "credentials.lock";
const VERSION: u32 = 1;
/// Larger than any real credentials file; refuses to parse garbage at length.
const FILE_MAX: u64 = 4 << 20;

/// A login to one hub: what `aetherfs login` obtained, kept fresh by refreshes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginEntry {
    pub issuer: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The signed-in subject, from the verified ID token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Unix seconds when the access token was obtained.
    pub obtained_at: u64,
    /// Unix seconds when the access token expires; none: used until refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

impl std::fmt::Debug for LoginEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginEntry")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("audience", &self.audience)
            .field("subject", &self.subject)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "<redacted>"))
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl LoginEntry {
    /// The provider settings to refresh or revoke this login with.
    pub fn settings(&self, ca_file: Option<PathBuf>) -> OidcSettings {
        OidcSettings {
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            client_secret: None,
            audience: self.audience.clone(),
            scopes: self.scopes.clone(),
            ca_file,
        }
    }

    /// Whether the access token is still good to send (not within its renewal margin).
    pub fn is_fresh(&self) -> bool {
        self.expires_at.is_none_or(|exp| now_unix() < renew_at(self.obtained_at, exp))
    }
}

#[derive(Default, Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    #[serde(default)]
    hubs: BTreeMap<String, LoginEntry>,
}

/// The credentials file and its lock.
#[derive(Clone, Debug)]
pub struct CredentialStore {
    path: PathBuf,
}

impl CredentialStore {
    /// A store at an explicit file path.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// `$AETHERFS_CONFIG_DIR/credentials.json`, else
    /// `$XDG_CONFIG_HOME/aetherfs/credentials.json`, else
    /// `~/.config/aetherfs/credentials.json`.
    pub fn default_location() -> Result<Self, ClientError> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let dir = var("AETHERFS_CONFIG_DIR")
            .or_else(|| var("XDG_CONFIG_HOME").map(|d| d.join("aetherfs")))
            .or_else(|| var("HOME").map(|h| h.join(".config/aetherfs")))
            .ok_or_else(|| {
                ClientError::Auth("no place for credentials: set AETHERFS_CONFIG_DIR, XDG_CONFIG_HOME or HOME".into())
            })?;
        Ok(Self::new(dir.join(FILE_NAME)))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    fn io(&self, what: &str, e: std::io::Error) -> ClientError {
        ClientError::Auth(format!("cannot {what} the credentials file {}: {e}", self.path.display()))
    }

    /// The login stored for `hub` (a key from [`hub_key`](crate::hub_key)).
    pub fn get(&self, hub: &str) -> Result<Option<LoginEntry>, ClientError> {
        Ok(self.read()?.hubs.get(hub).cloned())
    }

    /// Every stored login, by hub.
    pub fn list(&self) -> Result<BTreeMap<String, LoginEntry>, ClientError> {
        Ok(self.read()?.hubs)
    }

    /// Stores (or replaces) the login for `hub`.
    pub fn put(&self, hub: &str, entry: LoginEntry) -> Result<(), ClientError> {
        let lock = self.lock()?;
        let mut file = lock.read()?;
        file.hubs.insert(hub.to_string(), entry);
        lock.write(&file)
    }

    /// Removes the login for `hub`, returning it.
    pub fn remove(&self, hub: &str) -> Result<Option<LoginEntry>, ClientError> {
        let lock = self.lock()?;
        let mut file = lock.read()?;
        let old = file.hubs.remove(hub);
        if old.is_some() {
            lock.write(&file)?;
        }
        Ok(old)
    }

    fn read(&self) -> Result<StoreFile, ClientError> {
        let f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(StoreFile::default()),
            Err(e) => return Err(self.io("read", e)),
        };
        let meta = f.metadata().map_err(|e| self.io("read", e))?;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %self.path.display(),
                "the credentials file is readable by other users: `chmod 600` it (it is rewritten 0600 on the next refresh)"
            );
        }
        if meta.len() > FILE_MAX {
            return Err(ClientError::Auth(format!("the credentials file {} is too large", self.path.display())));
        }
        let file: StoreFile = serde_json::from_reader(std::io::BufReader::new(f))
            .map_err(|e| ClientError::Auth(format!("the credentials file {} is damaged: {e}", self.path.display())))?;
        if file.version > VERSION {
            return Err(ClientError::Auth(format!(
                "the credentials file {} was written by a newer aetherfs (format {})",
                self.path.display(),
                file.version
            )));
        }
        Ok(file)
    }

    fn ensure_dir(&self) -> Result<(), ClientError> {
        let dir = self.dir();
        if dir.as_os_str().is_empty() || dir.is_dir() {
            return Ok(());
        }
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| {
            ClientError::Auth(format!("cannot create the credentials directory {}: {e}", dir.display()))
        })?;
        // The mode of a new directory is subject to the umask: set it exactly.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| ClientError::Auth(format!("cannot set the mode of {}: {e}", dir.display())))
    }

    /// Takes the store's exclusive lock (blocking until other processes release it).
    fn lock(&self) -> Result<Locked, ClientError> {
        self.ensure_dir()?;
        let path = self.dir().join(LOCK_NAME);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| ClientError::Auth(format!("cannot open the lock file {}: {e}", path.display())))?;
        file.lock().map_err(|e| ClientError::Auth(format!("cannot lock {}: {e}", path.display())))?;
        Ok(Locked { store: self.clone(), _lock: file })
    }
}

/// The store under its exclusive lock; released on drop.
struct Locked {
    store: CredentialStore,
    _lock: File,
}

impl Locked {
    fn read(&self) -> Result<StoreFile, ClientError> {
        self.store.read()
    }

    /// Replaces the file atomically: temp file (0600) in the same directory,
    /// fsync, rename, fsync of the directory.
    fn write(&self, file: &StoreFile) -> Result<(), ClientError> {
        let store = &self.store;
        let file = StoreFile { version: VERSION, hubs: file.hubs.clone() };
        let mut tmp = tempfile::Builder::new()
            .prefix(".credentials.")
            .suffix(".tmp")
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(store.dir())
            .map_err(|e| store.io("write", e))?;
        let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| ClientError::Auth(e.to_string()))?;
        bytes.push(b'\n');
        tmp.write_all(&bytes).map_err(|e| store.io("write", e))?;
        tmp.as_file().sync_all().map_err(|e| store.io("write", e))?;
        tmp.persist(&store.path).map_err(|e| store.io("write", e.error))?;
        if let Ok(d) = File::open(store.dir()) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// The stored login for one hub, used as the hub's credentials.
pub struct StoredLogin {
    inner: Arc<Inner>,
}

struct Inner {
    store: CredentialStore,
    hub: String,
    ca_file: Option<PathBuf>,
    state: Mutex<State>,
    refreshing: tokio::sync::Mutex<()>,
}

enum State {
    Unloaded,
    Missing,
    Loaded { entry: Box<LoginEntry>, header: HeaderValue, refused: bool },
}

enum Quick {
    Unloaded,
    None,
    Use(HeaderValue),
    Renew,
}

impl StoredLogin {
    /// `hub` is the key the login was stored under; `ca_file` is trusted for
    /// the identity provider besides the platform's roots.
    pub fn new(store: CredentialStore, hub: &str, ca_file: Option<PathBuf>) -> Self {
        let inner = Inner {
            store,
            hub: hub.to_string(),
            ca_file,
            state: Mutex::new(State::Unloaded),
            refreshing: tokio::sync::Mutex::new(()),
        };
        Self { inner: Arc::new(inner) }
    }
}

impl Inner {
    fn quick(&self) -> Quick {
        match &*self.state.lock() {
            State::Unloaded => Quick::Unloaded,
            State::Missing => Quick::None,
            State::Loaded { entry, header, refused } => {
                if !refused && entry.is_fresh() {
                    Quick::Use(header.clone())
                } else {
                    Quick::Renew
                }
            }
        }
    }

    fn set(&self, entry: Option<LoginEntry>) -> Result<Option<HeaderValue>, ClientError> {
        let (state, header) = match entry {
            None => (State::Missing, None),
            Some(entry) => {
                let header = bearer(&entry.access_token)?;
                (State::Loaded { entry: Box::new(entry), header: header.clone(), refused: false }, Some(header))
            }
        };
        *self.state.lock() = state;
        Ok(header)
    }

    async fn get(self: &Arc<Self>) -> Result<Option<HeaderValue>, ClientError> {
        loop {
            match self.quick() {
                Quick::Use(h) => return Ok(Some(h)),
                Quick::None => return Ok(None),
                Quick::Renew => {
                    // In a task of its own: a caller that gives up (a read
                    // timeout) must not cancel a refresh between the
                    // provider rotating the refresh token and its saving.
                    let this = self.clone();
                    return tokio::spawn(async move { this.renew().await })
                        .await
                        .map_err(|e| ClientError::Auth(format!("the refresh task failed: {e}")))?;
                }
                Quick::Unloaded => {
                    let (store, hub) = (self.store.clone(), self.hub.clone());
                    let entry = tokio::task::spawn_blocking(move || store.get(&hub))
                        .await
                        .map_err(|e| ClientError::Auth(e.to_string()))??;
                    if entry.is_some() {
                        tracing::debug!(hub = %self.hub, path = %self.store.path().display(), "using the stored login");
                    }
                    self.set(entry)?;
                }
            }
        }
    }

    /// Refreshes the access token, once across this process and, through
    /// the lock file, across processes.
    async fn renew(&self) -> Result<Option<HeaderValue>, ClientError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let ours = match &*self.state.lock() {
            State::Loaded { entry, refused, .. } if *refused || !entry.is_fresh() => entry.access_token.clone(),
            State::Loaded { header, .. } => return Ok(Some(header.clone())),
            State::Missing => return Ok(None),
            State::Unloaded => String::new(),
        };
        let (store, hub) = (self.store.clone(), self.hub.clone());
        let (lock, disk) = tokio::task::spawn_blocking(move || -> Result<_, ClientError> {
            let lock = store.lock()?;
            let disk = lock.read()?.hubs.remove(&hub);
            Ok((lock, disk))
        })
        .await
        .map_err(|e| ClientError::Auth(e.to_string()))??;

        let Some(mut entry) = disk else {
            // Logged out meanwhile.
            return self.set(None);
        };
        if entry.access_token != ours && entry.is_fresh() {
            tracing::debug!(hub = %self.hub, "another process refreshed the login");
            return self.set(Some(entry));
        }
        let Some(refresh_token) = entry.refresh_token.clone() else {
            return Err(ClientError::Auth(format!(
                "the login to {} has expired and holds no refresh token (log in again, with the offline_access scope)",
                self.hub
            )));
        };
        let oidc = Oidc::new(entry.settings(self.ca_file.clone()))?;
        let obtained = now_unix();
        let tokens = match oidc.refresh(&refresh_token).await {
            Ok(t) => t,
            Err(RefreshError::Refused(why)) => {
                return Err(ClientError::Auth(format!(
                    "the login to {} can no longer be refreshed ({why}): log in again",
                    self.hub
                )));
            }
            Err(RefreshError::Failed(why)) => return Err(ClientError::Auth(why)),
        };
        entry.access_token = tokens.access_token;
        if let Some(rt) = tokens.refresh_token {
            entry.refresh_token = Some(rt);
        }
        entry.obtained_at = obtained;
        entry.expires_at = tokens.expires_in.map(|d| obtained + d.as_secs());
        // The rotated refresh token reaches the disk before anything uses the
        // new access token: a crash now loses nothing.
        let (hub, saved) = (self.hub.clone(), entry.clone());
        tokio::task::spawn_blocking(move || -> Result<(), ClientError> {
            let mut file = lock.read()?;
            file.hubs.insert(hub, saved);
            lock.write(&file)
        })
        .await
        .map_err(|e| ClientError::Auth(e.to_string()))??;
        tracing::debug!(hub = %self.hub, expires_at = ?entry.expires_at, "refreshed the login");
        self.set(Some(entry))
    }
}

impl Credentials for StoredLogin {
    fn authorization(&self) -> BoxFuture<'_, Result<Option<HeaderValue>, ClientError>> {
        Box::pin(self.inner.get())
    }

    fn invalidate(&self, rejected: &HeaderValue) {
        let mut state = self.inner.state.lock();
        if let State::Loaded { header, refused, .. } = &mut *state
            && header == rejected
        {
            *refused = true;
        }
    }

    fn describe(&self) -> String {
        format!("the stored login for {} ({})", self.inner.hub, self.inner.store.path().display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(token: &str) -> LoginEntry {
        LoginEntry {
            issuer: "http://127.0.0.1:1".into(),
            client_id: "cli".into(),
            audience: None,
            scopes: vec!["openid".into()],
            subject: Some("alice".into()),
            access_token: token.into(),
            refresh_token: Some("rt".into()),
            obtained_at: now_unix(),
            expires_at: Some(now_unix() + 3600),
        }
    }

    #[test]
    fn writes_private_files_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::new(dir.path().join("conf/aetherfs").join(FILE_NAME));
        assert_eq!(store.get("http://h/").unwrap(), None);
        store.put("http://h/", entry("a")).unwrap();
        store.put("http://other/", entry("b")).unwrap();
        assert_eq!(store.get("http://h/").unwrap().unwrap().access_token, "a");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(store.path()), 0o600);
        assert_eq!(mode(store.dir()), 0o700);
        // Only the file and its lock: no temporary files left behind.
        let mut names: Vec<_> =
            std::fs::read_dir(store.dir()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, [FILE_NAME, LOCK_NAME]);
        assert_eq!(store.remove("http://h/").unwrap().unwrap().access_token, "a");
        assert_eq!(store.get("http://h/").unwrap(), None);
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(!format!("{:?}", entry("secret-token")).contains("secret"));
    }

    #[test]
    fn refuses_damaged_and_newer_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::new(dir.path().join(FILE_NAME));
        std::fs::write(store.path(), "{not json").unwrap();
        assert!(store.get("x").unwrap_err().to_string().contains("damaged"));
        std::fs::write(store.path(), r#"{"version": 99, "hubs": {}}"#).unwrap();
        assert!(store.get("x").unwrap_err().to_string().contains("newer"));
    }

    #[tokio::test]
    async fn uses_a_fresh_login_and_none_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::new(dir.path().join(FILE_NAME));
        let missing = StoredLogin::new(store.clone(), "http://h/", None);
        assert!(missing.authorization().await.unwrap().is_none());
        store.put("http://h/", entry("tok")).unwrap();
        let login = StoredLogin::new(store.clone(), "http://h/", None);
        let h = login.authorization().await.unwrap().unwrap();
        assert_eq!(h.to_str().unwrap(), "Bearer tok");
        // Another process refreshed: after a 401 the new token on disk is used
        // without asking the provider (whose address here answers nothing).
        store.put("http://h/", entry("newer")).unwrap();
        login.invalidate(&h);
        assert_eq!(login.authorization().await.unwrap().unwrap().to_str().unwrap(), "Bearer newer");
    }
}
