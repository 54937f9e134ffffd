//! `aetherfs serve`: one version over WebDAV and/or NFSv3.

use aetherfs_agent::admin::{Admin, serve_admin};
use aetherfs_agent::daemon::{default_export, open_one};
use aetherfs_agent::frontends::{Frontends, Tasks};
use anyhow::{Context, Result, bail};

use crate::cli::{GlobalArgs, ServeArgs};
use crate::commands::{client, parse_ref, shutdown_signal};

pub async fn run(g: &GlobalArgs, a: ServeArgs) -> Result<()> {
    if a.webdav.is_none() && a.nfs.is_none() {
        bail!("nothing to serve: give --webdav ADDR and/or --nfs ADDR");
    }
    let access = a.access.access();
    access.validate(a.webdav)?;
    let admin_token = a.admin_token.open()?;
    let reference = parse_ref(&a.reference)?;
    let client = client(g)?;
    let frontends = Frontends::new(access, client.clone(), a.allowed_hosts.clone())?;
    let (disk, _disk_dir) = a.cache.disk().await?;
    let aetherfs_agent::daemon::OneMount { source, mount: served, .. } =
        open_one(&client, &reference, &a.cache.source_options(), a.cache.readahead_bytes(), disk).await?;
    eprintln!("aetherfs serve: {}@{}", served.name(), served.digest());
    if let Some(addr) = a.admin {
        let local =
            serve_admin(addr, Admin::with(source, served.clone()), admin_token, a.allowed_hosts.clone()).await?;
        eprintln!("aetherfs serve: admin on http://{local}");
    }
    let export = a.export.unwrap_or_else(|| default_export(served.reference()));
    let mut tasks = Tasks::new();
    if let Some(addr) = a.webdav {
        let url = frontends.start_webdav(&mut tasks, served.fs().clone(), served.name(), addr).await?;
        eprintln!("aetherfs serve: WebDAV on {url}");
        served.add_frontend(format!("webdav:{url}"));
    }
    if let Some(addr) = a.nfs {
        let url = frontends.start_nfs(&mut tasks, served.fs().clone(), addr, &export).await?;
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
