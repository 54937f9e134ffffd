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
use crate::progress::human_bytes;

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
    let cache = CacheArgs {
        cache_mib: 64,
        readahead_mib: 8,
        fetch_timeout_secs: 30,
        cache_dir: None,
        cache_size: 1 << 30,
        cache_key_file: None,
    };
    let (disk, _disk_dir) = cache.disk().await?;
    let one = open_one(&client, &reference, &cache.source_options(), cache.readahead_bytes(), disk).await?;
    let served = one.mount.clone();
    // The mounts follow `latest`, as an agent's do: the story below moves it.
    tokio::spawn(aetherfs_agent::follow::follow(
        one.packs.clone(),
        one.source.clone(),
        one.mount.clone(),
        aetherfs_agent::config::Prefetch::None,
        aetherfs_agent::follow::poll_interval(30),
    ));
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
    let story_after = (!a.no_story).then_some(a.story_after);
    println!("AetherFS demo is running (data in {}).", dir.display());
    println!();
    println!("Hub: {hub_url}   published: {}", published.join(", "));
    println!("Web page: {}/  (datasets, versions, diffs, file previews)", hub_url.trim_end_matches('/'));
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
    if let Some(after) = story_after {
        println!("In {after} s the demo publishes v2 of examples/geoip (20 new cities) and moves latest.");
    }
    println!("Ctrl-C stops the demo.");
    if let Some(after) = story_after {
        let story = Story {
            client: client.clone(),
            mount: served.clone(),
            source: src.join("examples/geoip"),
            webdav: webdav.clone(),
            nfs_file: nfs_file.clone(),
            fuse: fuse.is_some().then(|| mnt.clone()),
        };
        tasks.spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(after)).await;
            if let Err(e) = story.tell().await {
                eprintln!("error: the demo's v2 story failed: {}", aetherfs_util::one_line(&*e));
            }
            // The servers keep running; this task's end is no failure.
            std::future::pending::<()>().await;
            Ok(())
        });
    }

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

/// What the demo does after a while: publish v2, move `latest`, and show
/// that every view follows while a reader that opened the file before the
/// move keeps reading v1.
struct Story {
    client: HubClient,
    mount: Arc<aetherfs_agent::mount::Mount>,
    /// The example's source directory, rewritten as v2.
    source: PathBuf,
    webdav: String,
    nfs_file: String,
    fuse: Option<PathBuf>,
}

/// Rows (lines after the header) of a CSV file's bytes.
fn rows(csv: &[u8]) -> usize {
    csv.iter().filter(|&&b| b == b'\n').count().saturating_sub(1)
}

impl Story {
    async fn tell(&self) -> Result<()> {
        let fs = self.mount.fs().clone();
        let v1 = self.mount.digest();
        // A reader that opened cities.csv before the move (any front end
        // holds an inode of the version it opened).
        let held = fs.lookup_path("cities.csv").context("cities.csv is not in the demo dataset")?;
        let v1_rows = rows(&fs.read(held.ino, 0, aetherfs_mounts::MAX_READ).await?);

        // v2: 20 more cities at the end of cities.csv, the rest unchanged.
        let path = self.source.join("cities.csv");
        let mut csv = std::fs::read(&path)?;
        for i in 0..20 {
            csv.extend_from_slice(format!("203.0.{i}.0/24,\"Nuuk\",GL,64.18{i:02},-51.72{i:02}\n").as_bytes());
        }
        std::fs::write(&path, &csv)?;
        let name: Name = "examples/geoip".parse()?;
        let tags = [Tag::latest(), "v2".parse()?];
        let report = push(&self.client, &self.source, &name, &tags, &PushOptions::default(), Arc::new(|_| {}))
            .await
            .context("cannot publish v2")?;
        let share = 100.0 * report.new_bytes as f64 / report.bytes.max(1) as f64;
        println!();
        println!("Published {name}@{} as v2 and moved latest:", report.digest);
        println!(
            "  new data {} of {} ({share:.1}%), {} uploaded in {} pack(s); the rest was already stored",
            human_bytes(report.new_bytes),
            human_bytes(report.bytes),
            human_bytes(report.uploaded_bytes),
            report.packs_uploaded,
        );
        println!("  aetherfs diff {name}:v1 {name}:v2    shows it file by file");

        // The mounts follow the tag: wait for the switch.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.mount.digest() == v1 {
            anyhow::ensure!(std::time::Instant::now() < deadline, "the demo's mounts did not switch to v2 in 60 s");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        println!("  switched in {:?}; cities.csv now:", self.mount.last_switch());
        let fresh = fs.lookup_path("cities.csv")?;
        let core_rows = rows(&fs.read(fresh.ino, 0, aetherfs_mounts::MAX_READ).await?);
        let webdav = reqwest::get(format!("{}cities.csv", self.webdav)).await?.error_for_status()?.bytes().await?;
        println!("    WebDAV  {:>5} rows   (curl -s {}cities.csv | wc -l)", rows(&webdav), self.webdav);
        if let Some(mnt) = &self.fuse {
            let file = mnt.join("cities.csv");
            let bytes = tokio::task::spawn_blocking(move || std::fs::read(file)).await??;
            println!("    FUSE    {:>5} rows   (wc -l {}/cities.csv)", rows(&bytes), mnt.display());
        }
        match tokio::process::Command::new("nfs-cat").arg(&self.nfs_file).output().await {
            Ok(out) if out.status.success() => {
                println!("    NFSv3   {:>5} rows   (nfs-cat '{}' | wc -l)", rows(&out.stdout), self.nfs_file)
            }
            _ => println!("    NFSv3   reads the same core (install libnfs-utils for nfs-cat '{}')", self.nfs_file),
        }
        let old_rows = rows(&fs.read(held.ino, 0, aetherfs_mounts::MAX_READ).await?);
        println!(
            "  a reader that opened cities.csv before the move still reads v1: {old_rows} rows (v1 had {v1_rows}, v2 has {core_rows})"
        );
        Ok(())
    }
}
