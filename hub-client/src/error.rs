use aetherfs_format::{Digest, FormatError};

/// Everything a hub client operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid hub URL {url:?}: {why}")]
    InvalidUrl { url: String, why: String },
    #[error("cannot reach the hub at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("hub request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The hub answered with an error body.
    #[error("{message} ({code}, HTTP {status})")]
    Api { status: u16, code: String, message: String },
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Paths are printed quoted when they hold control or bidi characters.
    #[error("{}: {source}", aetherfs_util::quote(.path))]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Data from the hub or the disk did not match its digest.
    #[error("{}: {what} failed verification ({digest}): the stored data is corrupt", aetherfs_util::quote(.path))]
    Integrity { path: String, what: &'static str, digest: Digest },
    #[error("{0}")]
    Invalid(String),
    /// A redirect the client will not follow: to another scheme, in a loop,
    /// or too many.
    #[error("{0}")]
    Redirect(String),
    /// A certificate or handshake failure, said in one line.
    #[error("{0}")]
    Tls(String),
    /// Credentials could not be had: a token file is unreadable, the identity
    /// provider refused a refresh, a stored login has expired.
    #[error("{0}")]
    Auth(String),
}

impl ClientError {
    pub fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        ClientError::Io { path: path.to_string(), source }
    }

    /// The hub's stable error code, when the hub answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Worth retrying: the network or the hub's storage failed, not the request.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Http(e) => e.is_timeout() || e.is_connect() || e.is_request() || e.is_body(),
            ClientError::Api { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}
