//! HTTPS: rustls (aws-lc-rs) in front of the same router, HTTP/2 (gRPC) and
//! HTTP/1.1 by ALPN.
//!
//! The certificate chain and key come from PEM files and are checked to match
//! at start, where any problem is an error. [`Tls::spawn_reloader`] then
//! watches both files (size, inode, modification time) every few seconds and
//! swaps in the new pair once it loads and matches, so a renewed certificate
//! (cert-manager, certbot) is served without a restart. While a half-written
//! pair does not load, the previous one stays in use and the failure is
//! logged; new connections get the new certificate as soon as it loads,
//! established ones keep theirs.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// How often the certificate files are checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("TLS certificate {} and key {} do not go together: {reason}", cert.display(), key.display())]
    Mismatch { cert: PathBuf, key: PathBuf, reason: String },
    #[error("cannot configure TLS: {0}")]
    Config(String),
}

/// The certificate chain (leaf first) and private key files, PEM.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A TLS server configuration whose certificate follows its files.
#[derive(Clone)]
pub struct Tls {
    resolver: Arc<Reloading>,
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tls({})", self.resolver.files.cert.display())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    ino: u64,
    mtime_ns: i128,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        ino: m.ino(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

struct Reloading {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamps when last loaded (or last tried).
    stamps: Mutex<(Option<Stamp>, Option<Stamp>)>,
}

impl fmt::Debug for Reloading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reloading({})", self.files.cert.display())
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

fn load(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let read_err =
        |path: &Path, e: &dyn fmt::Display| TlsError::Read { path: path.to_path_buf(), reason: e.to_string() };
    let invalid = |path: &Path, reason: String| TlsError::Invalid { path: path.to_path_buf(), reason };
    // Read the bytes first so a missing file says so, not "no PEM section".
    let cert_pem = std::fs::read(&files.cert).map_err(|e| read_err(&files.cert, &e))?;
    let key_pem = std::fs::read(&files.key).map_err(|e| read_err(&files.key, &e))?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&files.cert, format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(&files.cert, "no CERTIFICATE in this file".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| invalid(&files.key, format!("no usable PEM private key: {e}")))?;
    CertifiedKey::from_der(certs, key, provider).map_err(|e| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    })
}

impl Tls {
    /// Loads and checks the certificate and key; any problem is an error.
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let stamps = (stamp(&files.cert), stamp(&files.key));
        let key = load(&files, &provider)?;
        let resolver = Arc::new(Reloading {
            files,
            provider: provider.clone(),
            current: RwLock::new(Arc::new(key)),
            stamps: Mutex::new(stamps),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        // h2 first: gRPC clients need it; HTTP/1.1 clients offer only theirs.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls { resolver, config: Arc::new(config) })
    }

    /// Loads the files again if they changed since last time. `Ok(true)`:
    /// a new certificate is in use.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let r = &self.resolver;
        let now = (stamp(&r.files.cert), stamp(&r.files.key));
        {
            let mut seen = r.stamps.lock();
            if *seen == now {
                return Ok(false);
            }
            *seen = now;
        }
        let key = load(&r.files, &r.provider)?;
        *r.current.write() = Arc::new(key);
        Ok(true)
    }

    /// Checks the files every `every` for as long as the runtime runs.
    pub fn spawn_reloader(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let t = tls.clone();
                match tokio::task::spawn_blocking(move || t.reload_if_changed()).await {
                    Ok(Ok(true)) => {
                        tracing::info!(cert = %tls.resolver.files.cert.display(), "TLS certificate reloaded");
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "TLS certificate files changed but do not load yet; still serving the previous certificate")
                    }
                    Err(e) => tracing::error!(error = %e, "TLS reload task failed"),
                }
            }
        })
    }
}

impl Tls {
    /// An acceptor with the certificate in force now (and later reloads).
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }
}
