use std::path::PathBuf;

use aetherfs_hub::{Hub, HubOptions};
use anyhow::{Context, Result};

use crate::cli::HubArgs;
use crate::commands::shutdown_signal;

pub async fn run(a: HubArgs) -> Result<()> {
    let storage = match a.storage {
        Some(s) => s,
        None => {
            let dir = default_data_dir()?;
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            format!("file://{}", dir.display())
        }
    };
    let opts = HubOptions { storage, max_pack_bytes: a.max_pack_mib << 20, ..HubOptions::default() };
    let hub = Hub::open(opts).await.context("cannot open the hub's storage")?;
    let listener =
        tokio::net::TcpListener::bind(a.listen).await.with_context(|| format!("cannot listen on {}", a.listen))?;
    let addr = listener.local_addr()?;
    // Tests and scripts read this line to find an ephemeral port.
    eprintln!("aetherfs hub: listening on http://{addr} (storage {})", hub.storage_description());
    if addr.ip().is_loopback() {
        eprintln!("aetherfs hub: no authentication configured: any local process can read and write");
    } else {
        eprintln!(
            "aetherfs hub: WARNING: no authentication configured and listening on {addr}: anyone who can reach it can read and write"
        );
    }
    axum::serve(listener, hub.router()).with_graceful_shutdown(shutdown_signal()).await?;
    eprintln!("aetherfs hub: stopped");
    Ok(())
}

/// `$AETHERFS_DATA_DIR`, else `$XDG_DATA_HOME/aetherfs/hub`, else `~/.local/share/aetherfs/hub`.
fn default_data_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("AETHERFS_DATA_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return Ok(PathBuf::from(d).join("aetherfs/hub"));
    }
    let home = std::env::var_os("HOME").context("set --storage or AETHERFS_DATA_DIR: no HOME to put data under")?;
    Ok(PathBuf::from(home).join(".local/share/aetherfs/hub"))
}
