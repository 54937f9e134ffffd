//! TLS for the hub and the identity provider: trust from a CA file, and
//! certificate failures turned into one line that says what to fix.

use std::path::{Path, PathBuf};

use crate::error::ClientError;

/// Which certificates a connection trusts.
#[derive(Clone, Debug, Default)]
pub(crate) enum Trust {
    /// The platform's roots.
    #[default]
    System,
    /// Only the CAs in this PEM file (the hub), like `curl --cacert`.
    Only(PathBuf),
    /// The platform's roots and the CAs in this PEM file (the identity provider).
    Also(PathBuf),
}

impl Trust {
    /// Configures `builder` to trust what `self` names.
    pub(crate) fn apply(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, ClientError> {
        Ok(match self {
            Trust::System => builder,
            Trust::Only(p) => builder.tls_certs_only(load_ca_file(p)?),
            Trust::Also(p) => builder.tls_certs_merge(load_ca_file(p)?),
        })
    }

    fn describe(&self) -> String {
        match self {
            Trust::System => "the system's CA roots".to_string(),
            Trust::Only(p) | Trust::Also(p) => format!("CA file {}", p.display()),
        }
    }
}

/// Reads every certificate of a PEM file; an empty or unreadable file is an error.
pub(crate) fn load_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let bad = |why: String| ClientError::Tls(format!("TLS: cannot use CA file {}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// A TLS failure somewhere in `err`'s causes, as one line naming `peer`
/// ("the hub", "the identity provider") and what it was checked against.
pub(crate) fn explain(err: &(dyn std::error::Error + 'static), peer: &str, trust: &Trust) -> Option<String> {
    let tls = find_rustls_error(err)?;
    let why = match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature => {
                format!("{peer}'s certificate is not trusted by {}", trust.describe())
            }
            rustls::CertificateError::NotValidForName | rustls::CertificateError::NotValidForNameContext { .. } => {
                format!("{peer}'s certificate does not name the host in its URL")
            }
            rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. } => {
                format!("{peer}'s certificate has expired")
            }
            _ => format!("{peer}'s certificate was refused"),
        },
        rustls::Error::InvalidMessage(_) => {
            format!("{peer} did not answer with TLS (is it serving plain http?)")
        }
        _ => format!("the TLS handshake with {peer} failed"),
    };
    Some(format!("TLS: {why} ({tls})"))
}

fn find_rustls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        // An `io::Error` hides the error it wraps from `source()` (it returns
        // the wrapped error's source): look inside, through nested ones too.
        let mut io = e.downcast_ref::<std::io::Error>();
        while let Some(inner) = io.and_then(|i| i.get_ref()) {
            if let Some(t) = inner.downcast_ref::<rustls::Error>() {
                return Some(t);
            }
            io = inner.downcast_ref::<std::io::Error>();
        }
        cur = e.source();
    }
    None
}
