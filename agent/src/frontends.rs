//! Starting the network front ends of a mounted dataset: WebDAV and NFSv3.
//! FUSE is started by [`crate::mount::Mount::mount_fuse`], which keeps its
//! session to tell it about switches.

use std::net::SocketAddr;
use std::sync::Arc;

use aetherfs_mounts::DatasetFs;
use aetherfs_mounts::nfs::NfsServer;

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
}

/// The tasks of running front ends: each ends only when its server fails.
pub type Tasks = tokio::task::JoinSet<Result<(), FrontendError>>;

/// Starts WebDAV on `addr` in `tasks`; returns its URL.
pub async fn start_webdav(
    tasks: &mut Tasks,
    fs: Arc<DatasetFs>,
    addr: SocketAddr,
    allowed_hosts: Vec<String>,
) -> Result<String, FrontendError> {
    let listen = |source| FrontendError::Listen { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(listen)?;
    let url = format!("http://{}/", listener.local_addr().map_err(listen)?);
    tasks.spawn(async move {
        let opts = aetherfs_mounts::webdav::WebDavOptions { allowed_hosts, ..Default::default() };
        aetherfs_mounts::webdav::serve(fs, listener, opts, std::future::pending()).await.map_err(FrontendError::WebDav)
    });
    Ok(url)
}

/// Starts NFSv3 on `addr` in `tasks`, exporting `export`; returns the libnfs
/// URL of its root.
pub async fn start_nfs(
    tasks: &mut Tasks,
    fs: Arc<DatasetFs>,
    addr: SocketAddr,
    export: &str,
) -> Result<String, FrontendError> {
    let server = NfsServer::bind(fs, addr, export).await.map_err(|source| FrontendError::Nfs { addr, source })?;
    let url = server.url("");
    tasks.spawn(async move {
        server.serve().await;
        Ok(())
    });
    Ok(url)
}
