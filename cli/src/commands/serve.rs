use std::sync::Arc;

use aetherfs_mounts::DatasetFs;
use aetherfs_mounts::nfs::NfsServer;
use anyhow::{Context, Result, bail};

use crate::cli::{GlobalArgs, ServeArgs};
use crate::commands::{client, parse_ref, shutdown_signal};
use aetherfs_agent::serving::{Admin, open_one, serve_admin};

pub async fn run(g: &GlobalArgs, a: ServeArgs) -> Result<()> {
    if a.webdav.is_none() && a.nfs.is_none() {
        bail!("nothing to serve: give --webdav ADDR and/or --nfs ADDR");
    }
    let reference = parse_ref(&a.reference)?;
    let client = client(g)?;
    let (source, served) = open_one(&client, &reference, &a.cache.source_options(), a.cache.readahead_bytes()).await?;
    eprintln!("aetherfs serve: {}@{}", served.name(), served.digest());
    if let Some(addr) = a.admin {
        let local = serve_admin(addr, Admin::with(source, served.clone())).await?;
        eprintln!("aetherfs serve: admin on http://{local}");
    }
    let export = a.export.unwrap_or_else(|| served.name().segments().last().unwrap_or("data").to_string());
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = a.webdav {
        let url = start_webdav(&mut tasks, served.fs.clone(), addr).await?;
        eprintln!("aetherfs serve: WebDAV on {url}");
        served.add_frontend(format!("webdav:{url}"));
    }
    if let Some(addr) = a.nfs {
        let url = start_nfs(&mut tasks, served.fs.clone(), addr, &export).await?;
        eprintln!("aetherfs serve: NFSv3 on {url}");
        served.add_frontend(format!("nfs:{url}"));
    }
    tokio::select! {
        _ = shutdown_signal() => {}
        Some(done) = tasks.join_next() => {
            done.context("a server task failed")??;
            bail!("a server stopped unexpectedly");
        }
    }
    eprintln!("aetherfs serve: stopped");
    Ok(())
}

type Tasks = tokio::task::JoinSet<Result<()>>;

/// Starts WebDAV on `addr`; returns its URL.
pub async fn start_webdav(tasks: &mut Tasks, fs: Arc<DatasetFs>, addr: std::net::SocketAddr) -> Result<String> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for WebDAV"))?;
    let url = format!("http://{}/", listener.local_addr()?);
    tasks.spawn(async move {
        aetherfs_mounts::webdav::serve(fs, listener, std::future::pending()).await.context("WebDAV server failed")
    });
    Ok(url)
}

/// Starts NFSv3 on `addr`; returns the libnfs URL of its root.
pub async fn start_nfs(
    tasks: &mut Tasks,
    fs: Arc<DatasetFs>,
    addr: std::net::SocketAddr,
    export: &str,
) -> Result<String> {
    let server = NfsServer::bind(fs, addr, export).await.with_context(|| format!("cannot listen on {addr} for NFS"))?;
    let url = server.url("");
    tasks.spawn(async move {
        server.serve().await;
        Ok(())
    });
    Ok(url)
}
