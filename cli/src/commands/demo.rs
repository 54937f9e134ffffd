//! `aetherfs demo`: an embedded hub on local storage, the example datasets
//! published to it, and one of them served over WebDAV, NFS and (where the
//! kernel allows) FUSE. Everything a new user needs to see it work.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aetherfs_agent::daemon::open_one;
use aetherfs_agent::frontends::{Frontends, Tasks};
use aetherfs_format::{Name, Reference, Tag};
use aetherfs_hub::{Hub, HubOptions};
use aetherfs_hub_client::{HubClient, PushOptions, push};
use aetherfs_mounts::fuse::{FuseOptions, clear_stale_mount};
use anyhow::{Context, Result};

use crate::cli::{CacheArgs, DemoArgs};
use crate::commands::shutdown_signal;

/// The example datasets, compiled in so the demo works from any directory.
const EXAMPLES: &[(&str, &str, &[u8])] = &[
    ("examples/geoip", "README.txt", include_bytes!("../../../examples/geoip/README.txt")),
    ("examples/geoip", "cities.csv", include_bytes!("../../../examples/geoip/cities.csv")),
    ("examples/geoip", "geoip.sqlite", include_bytes!("../../../examples/geoip/geoip.sqlite")),
    ("examples/air-quality", "README.txt", include_bytes!("../../../examples/air-quality/README.txt")),
    ("examples/air-quality", "readings.csv", include_bytes!("../../../examples/air-quality/readings.csv")),
];

pub async fn run(a: DemoArgs) -> Result<()> {
    std::fs::create_dir_all(&a.dir).with_context(|| format!("cannot create {}", a.dir.display()))?;
    let dir = std::fs::canonicalize(&a.dir)?;

    // The hub, on local storage, in this process.
    let hub =
        Hub::open(HubOptions { storage: format!("file://{}", dir.join("hub").display()), ..HubOptions::default() })
            .await
            .context("cannot open the demo hub's storage")?;
    let listener = tokio::net::TcpListener::bind(a.hub_listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.hub_listen))?;
    let hub_url = format!("http://{}", listener.local_addr()?);
    let router = hub.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = HubClient::new(&hub_url)?;

    // Publish the examples.
    let src = dir.join("source");
    let mut published = Vec::new();
    for name in ["examples/geoip", "examples/air-quality"] {
        let path = write_example(&src, name)?;
        let name: Name = name.parse()?;
        let tags = [Tag::latest(), "v1".parse()?];
        let progress = Arc::new(|_| {});
        let report = push(&client, &path, &name, &tags, &PushOptions::default(), progress)
            .await
            .with_context(|| format!("cannot publish {name}"))?;
        published.push(format!("{}@{}", report.name, report.digest));
    }

    // Serve geoip.
    let reference: Reference = "examples/geoip:latest".parse()?;
    let cache = CacheArgs { cache_mib: 64, readahead_mib: 8, fetch_timeout_secs: 30 };
    let (_source, served) = open_one(&client, &reference, &cache.source_options(), cache.readahead_bytes()).await?;
    let mut tasks = Tasks::new();
    let frontends = Frontends::open(client.clone());
    let webdav = frontends.start_webdav(&mut tasks, served.fs().clone(), &reference.name, a.webdav).await?;
    let nfs = frontends.start_nfs(&mut tasks, served.fs().clone(), a.nfs, "geoip").await?;
    let mnt = dir.join("mnt");
    let fuse = if a.no_fuse || !fuse_usable() {
        None
    } else {
        std::fs::create_dir_all(&mnt)?;
        clear_stale_mount(&mnt)?;
        let opts = FuseOptions { fsname: "aetherfs:examples/geoip".into(), ..FuseOptions::default() };
        match served.mount_fuse(&mnt, &opts, tokio::runtime::Handle::current()) {
            Ok(()) => served.take_fuse(),
            Err(e) => {
                eprintln!("note: FUSE mount skipped: {e}");
                None
            }
        }
    };

    let nfs_file = nfs.replacen("/geoip/", "/geoip/cities.csv", 1);
    println!("AetherFS demo is running (data in {}).", dir.display());
    println!();
    println!("Hub: {hub_url}   published: {}", published.join(", "));
    println!("  export AETHERFS_HUB={hub_url}");
    println!("  aetherfs ls");
    println!("  aetherfs inspect examples/geoip:latest --files");
    println!("  aetherfs pull examples/air-quality:latest /tmp/air-quality");
    println!();
    if fuse.is_some() {
        println!("FUSE (examples/geoip at {}):", mnt.display());
        println!(
            "  sqlite3 {}/geoip.sqlite \"SELECT city, count(*) FROM blocks GROUP BY city ORDER BY 2 DESC LIMIT 5;\"",
            mnt.display()
        );
        println!();
    }
    println!("WebDAV: {webdav}");
    println!("  rclone ls \":webdav,url='{webdav}':\"");
    println!("  curl -s {webdav}cities.csv | head");
    println!();
    println!("NFSv3 (libnfs, no kernel client needed):");
    println!("  nfs-ls '{nfs}'");
    println!("  nfs-cat '{nfs_file}' | head");
    println!();
    println!("Ctrl-C stops the demo.");

    tokio::select! {
        _ = shutdown_signal() => {}
        Some(done) = tasks.join_next() => {
            eprintln!("error: a demo server stopped: {:?}", done);
        }
    }
    if let Some(m) = fuse {
        tokio::task::spawn_blocking(move || m.unmount()).await??;
    }
    Ok(())
}

fn write_example(root: &Path, name: &str) -> Result<PathBuf> {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir)?;
    for (dataset, file, bytes) in EXAMPLES {
        if *dataset == name {
            std::fs::write(dir.join(file), bytes)?;
        }
    }
    Ok(dir)
}

/// FUSE needs the device and the mount helper.
fn fuse_usable() -> bool {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse").is_ok()
        && std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").is_file()))
}
