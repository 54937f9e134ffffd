//! `aetherfs mount`: one version over FUSE, until SIGTERM or SIGINT.

use aetherfs_agent::admin::{Admin, serve_admin};
use aetherfs_agent::daemon::open_one;
use aetherfs_mounts::fuse::{FuseOptions, clear_stale_mount};
use anyhow::{Context, Result};

use crate::cli::{GlobalArgs, MountArgs};
use crate::commands::{client, parse_ref, shutdown_signal};

pub async fn run(g: &GlobalArgs, a: MountArgs) -> Result<()> {
    let reference = parse_ref(&a.reference)?;
    let admin_token = a.admin_token.open()?;
    let client = client(g)?;
    if clear_stale_mount(&a.mountpoint).with_context(|| format!("cannot check {}", a.mountpoint.display()))? {
        eprintln!("aetherfs mount: cleared a stale mount at {}", a.mountpoint.display());
    }
    let (disk, _disk_dir) = a.cache.disk().await?;
    let aetherfs_agent::daemon::OneMount { source, mount: served, .. } =
        open_one(&client, &reference, &a.cache.source_options(), a.cache.readahead_bytes(), disk).await?;
    if let Some(addr) = a.admin {
        let local =
            serve_admin(addr, Admin::with(source, served.clone()), admin_token, a.allowed_hosts.clone()).await?;
        eprintln!("aetherfs mount: admin on http://{local}");
    }
    let opts = FuseOptions {
        allow_other: a.allow_other,
        threads: a.threads.max(1),
        fsname: format!("aetherfs:{}", served.name()),
        ..FuseOptions::default()
    };
    served
        .mount_fuse(&a.mountpoint, &opts, tokio::runtime::Handle::current())
        .with_context(|| format!("cannot mount on {}", a.mountpoint.display()))?;
    eprintln!("aetherfs mount: {}@{} mounted at {}", served.name(), served.digest(), a.mountpoint.display());
    shutdown_signal().await;
    let Some(session) = served.take_fuse() else { return Ok(()) };
    // Unmounting waits for the FUSE workers: keep it off the async threads.
    tokio::task::spawn_blocking(move || session.unmount())
        .await?
        .with_context(|| format!("cannot unmount {}", a.mountpoint.display()))?;
    eprintln!("aetherfs mount: unmounted {}", a.mountpoint.display());
    Ok(())
}
