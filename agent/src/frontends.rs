//! Starting the network front ends of a mounted dataset: WebDAV and NFSv3,
//! and deciding who may use them. FUSE is started by
//! [`crate::mount::Mount::mount_fuse`], which keeps its session to tell it
//! about switches.
//!
//! Loopback is the default and needs nothing. WebDAV anywhere else needs
//! authentication (a users file, a token file, or the hub checking the
//! client's own credentials), or an explicit `allow_unauthenticated`, which
//! prints a warning. NFSv3 has no authentication a server can trust, so it
//! admits clients by address (`nfs_allow`, loopback by default).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use aetherfs_access::{FailureLimits, Gate, LocalGate, TokenFile, UsersFile};
use aetherfs_format::Name;
use aetherfs_hub_client::HubClient;
use aetherfs_mounts::DatasetFs;
use aetherfs_mounts::nfs::{NfsAccess, NfsServer};
use aetherfs_util::Cidr;
use serde::Deserialize;

use crate::hub_gate::HubGate;

/// Why a front end could not start.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("cannot listen on {addr} for WebDAV")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve NFS on {addr}")]
    Nfs {
        addr: SocketAddr,
        #[source]
        source: aetherfs_mounts::nfs::NfsError,
    },
    #[error("WebDAV server failed")]
    WebDav(#[source] std::io::Error),
    #[error(transparent)]
    Access(#[from] AccessInvalid),
    #[error("WebDAV authentication")]
    Credentials(#[from] aetherfs_access::AccessError),
}

/// Front-end access settings that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum AccessInvalid {
    #[error(
        "refusing to serve WebDAV on {0}, outside loopback, to anyone who connects: set a WebDAV users file, token file or hub authentication, or allow unauthenticated access explicitly"
    )]
    Unauthenticated(SocketAddr),
    #[error("WebDAV hub authentication replaces the users and token files: give one or the other")]
    HubAndLocal,
    #[error("nfs_allow is empty: no client could connect")]
    NoNfsClients,
}

/// Who may use the network front ends: the agent's `[frontends]` section,
/// or the flags of `serve`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendAccess {
    /// WebDAV basic auth against this users file (argon2id hashes, written
    /// by `aetherfs hub passwd`).
    pub webdav_users_file: Option<PathBuf>,
    /// WebDAV bearer auth: the one token in this file (read again at most
    /// once a second, so a rotated Secret works without a restart).
    pub webdav_token_file: Option<PathBuf>,
    /// WebDAV credentials (basic or bearer) are checked by the hub: a client
    /// reads a dataset only if the hub lets its own credentials read it.
    #[serde(default)]
    pub webdav_hub_auth: bool,
    /// Serve WebDAV outside loopback without authentication (warned about).
    #[serde(default)]
    pub allow_unauthenticated: bool,
    /// NFS client address ranges admitted (CIDR); default: loopback.
    #[serde(default = "loopback")]
    pub nfs_allow: Vec<Cidr>,
}

fn loopback() -> Vec<Cidr> {
    Cidr::LOOPBACK.to_vec()
}

impl Default for FrontendAccess {
    fn default() -> Self {
        Self {
            webdav_users_file: None,
            webdav_token_file: None,
            webdav_hub_auth: false,
            allow_unauthenticated: false,
            nfs_allow: loopback(),
        }
    }
}

impl FrontendAccess {
    fn authenticates(&self) -> bool {
        self.webdav_hub_auth || self.webdav_users_file.is_some() || self.webdav_token_file.is_some()
    }

    /// Checks the settings, and that WebDAV on `webdav` (if any) is allowed.
    pub fn validate(&self, webdav: impl IntoIterator<Item = SocketAddr>) -> Result<(), AccessInvalid> {
        if self.webdav_hub_auth && (self.webdav_users_file.is_some() || self.webdav_token_file.is_some()) {
            return Err(AccessInvalid::HubAndLocal);
        }
        if self.nfs_allow.is_empty() {
            return Err(AccessInvalid::NoNfsClients);
        }
        for addr in webdav {
            if !addr.ip().is_loopback() && !self.authenticates() && !self.allow_unauthenticated {
                return Err(AccessInvalid::Unauthenticated(addr));
            }
        }
        Ok(())
    }
}

/// The front ends' access, ready to use: files loaded once, shared by every mount.
pub struct Frontends {
    access: FrontendAccess,
    local: Option<Arc<LocalGate>>,
    client: HubClient,
    /// Host names besides addresses and `localhost` (DNS rebinding).
    pub allowed_hosts: Vec<String>,
}

impl Frontends {
    /// Loads the users and token files; `client` is the hub that checks
    /// credentials with `webdav_hub_auth`.
    pub fn new(access: FrontendAccess, client: HubClient, allowed_hosts: Vec<String>) -> Result<Self, FrontendError> {
        access.validate([])?;
        let users = access.webdav_users_file.as_deref().map(|f| UsersFile::load(f, FailureLimits::default()));
        let token = access.webdav_token_file.as_deref().map(TokenFile::open);
        let local = match (users.transpose()?, token.transpose()?) {
            (None, None) => None,
            (users, token) => Some(Arc::new(LocalGate { users, token, realm: "aetherfs-webdav" })),
        };
        Ok(Self { access, local, client, allowed_hosts })
    }

    /// Serves everyone on loopback, with no hub: `demo`.
    pub fn open(client: HubClient) -> Self {
        Self { access: FrontendAccess::default(), local: None, client, allowed_hosts: Vec::new() }
    }

    /// The gate of WebDAV for `dataset`, if it authenticates.
    fn gate(&self, dataset: &Name) -> Option<Arc<dyn Gate>> {
        if self.access.webdav_hub_auth {
            let gate = Arc::new(HubGate::new(self.client.clone(), dataset.clone()));
            let (check, dataset) = (gate.clone(), dataset.clone());
            // Checked in the background: the hub may not be up yet.
            tokio::spawn(async move {
                if check.hub_reads_anonymously().await {
                    eprintln!(
                        "aetherfs: WARNING: the hub lets anyone read {dataset}, so WebDAV hub authentication admits any client that sends any credentials"
                    );
                }
            });
            return Some(gate);
        }
        self.local.clone().map(|g| g as Arc<dyn Gate>)
    }

    /// Starts WebDAV for `dataset` on `addr` in `tasks`; returns its URL.
    pub async fn start_webdav(
        &self,
        tasks: &mut Tasks,
        fs: Arc<DatasetFs>,
        dataset: &Name,
        addr: SocketAddr,
    ) -> Result<String, FrontendError> {
        self.access.validate([addr])?;
        let listen = |source| FrontendError::Listen { addr, source };
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(listen)?;
        let local = listener.local_addr().map_err(listen)?;
        let gate = self.gate(dataset);
        if gate.is_none() && !local.ip().is_loopback() {
            eprintln!(
                "aetherfs: WARNING: WebDAV on {local} has no authentication: anyone who reaches it reads {dataset}"
            );
        }
        let opts = aetherfs_mounts::webdav::WebDavOptions {
            allowed_hosts: self.allowed_hosts.clone(),
            gate,
            ..Default::default()
        };
        tasks.spawn(async move {
            aetherfs_mounts::webdav::serve(fs, listener, opts, std::future::pending())
                .await
                .map_err(FrontendError::WebDav)
        });
        Ok(format!("http://{local}/"))
    }

    /// Starts NFSv3 on `addr` in `tasks`, exporting `export` to the allowed
    /// client addresses; returns the libnfs URL of its root.
    pub async fn start_nfs(
        &self,
        tasks: &mut Tasks,
        fs: Arc<DatasetFs>,
        addr: SocketAddr,
        export: &str,
    ) -> Result<String, FrontendError> {
        let access = NfsAccess { allow: self.access.nfs_allow.clone(), ..NfsAccess::default() };
        if !addr.ip().is_loopback() && !access.allow.iter().any(|r| !Cidr::LOOPBACK.iter().any(|l| l.covers(r))) {
            eprintln!("aetherfs: WARNING: NFS on {addr} admits loopback clients only: set nfs_allow to admit others");
        }
        let server =
            NfsServer::bind(fs, addr, export, access).await.map_err(|source| FrontendError::Nfs { addr, source })?;
        let url = server.url("");
        tasks.spawn(async move {
            server.serve().await;
            Ok(())
        });
        Ok(url)
    }
}

/// The tasks of running front ends: each ends only when its server fails.
pub type Tasks = tokio::task::JoinSet<Result<(), FrontendError>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webdav_outside_loopback_needs_authentication_or_an_explicit_yes() {
        let open = FrontendAccess::default();
        let public: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        assert!(open.validate(["127.0.0.1:8080".parse().expect("addr")]).is_ok());
        assert!(matches!(open.validate([public]), Err(AccessInvalid::Unauthenticated(_))));
        let yes = FrontendAccess { allow_unauthenticated: true, ..FrontendAccess::default() };
        assert!(yes.validate([public]).is_ok());
        let hub = FrontendAccess { webdav_hub_auth: true, ..FrontendAccess::default() };
        assert!(hub.validate([public]).is_ok());
        let both = FrontendAccess { webdav_users_file: Some("u".into()), ..hub };
        assert!(matches!(both.validate([]), Err(AccessInvalid::HubAndLocal)));
        let nobody = FrontendAccess { nfs_allow: Vec::new(), ..FrontendAccess::default() };
        assert!(matches!(nobody.validate([]), Err(AccessInvalid::NoNfsClients)));
    }
}
