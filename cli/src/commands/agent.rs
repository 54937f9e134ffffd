//! `aetherfs agent`: the sidecar. Several mounts, each following its tag
//! (long-poll, prefetch, atomic switch), an encrypted disk cache under a
//! memory tier, and an admin endpoint whose readiness gates the pod.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use aetherfs_format::{ChunkRef, Manifest, Reference};
use aetherfs_hub_client::HubClient;
use aetherfs_mounts::Version;
use aetherfs_mounts::fuse::{FuseOptions, clear_stale_mount, mount};
use anyhow::{Context, Result};

use crate::cli::{AgentArgs, GlobalArgs};
use crate::commands::serve::{start_nfs, start_webdav};
use crate::commands::{DEFAULT_HUB, client_for, shutdown_signal};
use aetherfs_agent::config::{AgentConfig, MountConfig, Prefetch, Size};
use aetherfs_agent::serving::{Admin, MountState, poll_interval, resolve, serve_admin};
use aetherfs_agent::source::{HubSource, SourceOptions};
use aetherfs_cache::{CacheKey, DiskCache, DiskCacheConfig};

/// Older versions kept readable for files opened before a switch.
const KEEP_PREVIOUS_VERSIONS: usize = 3;

pub async fn run(g: &GlobalArgs, a: AgentArgs) -> Result<()> {
    let mut cfg = AgentConfig::load(&a.config).map_err(anyhow::Error::msg)?;
    if let Some(addr) = a.admin {
        cfg.admin.listen = addr;
    }
    if let Some(d) = a.cache_dir {
        cfg.cache.dir = d;
    }
    if let Some(s) = &a.cache_size {
        cfg.cache.max_size = s.parse::<Size>().map_err(anyhow::Error::msg).context("bad --cache-size")?;
    }
    if let Some(k) = a.cache_key_file {
        cfg.cache.key_file = Some(k);
    }
    let hub = g.hub.clone().or(cfg.hub.clone()).unwrap_or_else(|| DEFAULT_HUB.to_string());
    let client = client_for(g, &hub, &cfg.auth)?;

    let key = match std::env::var("AETHERFS_CACHE_KEY") {
        Ok(v) => CacheKey::from_env_value(&v).context("bad AETHERFS_CACHE_KEY")?,
        Err(_) => match &cfg.cache.key_file {
            Some(p) => CacheKey::from_file(p).with_context(|| format!("cannot load the cache key {}", p.display()))?,
            None => {
                tracing::warn!(
                    "no cache key configured: using a random in-memory key; the cache starts empty on every start"
                );
                CacheKey::Ephemeral
            }
        },
    };
    // The cache sizes its segments from the bound (an eighth of it, at most 64 MiB).
    let disk_cfg = DiskCacheConfig::new(cfg.cache.dir.clone(), cfg.cache.max_size.0, key);
    let dir = cfg.cache.dir.clone();
    let disk = tokio::task::spawn_blocking(move || DiskCache::open(disk_cfg))
        .await?
        .with_context(|| format!("cannot open the cache in {}", dir.display()))?;
    let source = HubSource::new(
        Arc::new(client.clone()),
        Some(Arc::new(disk)),
        &SourceOptions {
            memory_bytes: cfg.cache.memory_size.0,
            timeout: Duration::from_secs(cfg.fetch.timeout_secs),
            concurrency: cfg.fetch.concurrency,
        },
    );

    let admin = Arc::new(Admin::new(source.clone(), cfg.mounts.len()));
    let admin_addr = serve_admin(cfg.admin.listen, admin.clone()).await?;
    eprintln!("aetherfs agent: admin on http://{admin_addr} (hub {hub})");

    let poll = poll_interval(cfg.fetch.poll_secs);
    let readahead = cfg.fetch.readahead.0;
    let mut tasks = tokio::task::JoinSet::new();
    for m in cfg.mounts {
        let (client, source, admin) = (client.clone(), source.clone(), admin.clone());
        tasks.spawn(async move { run_mount(client, source, admin, m, poll, readahead).await });
    }
    tokio::select! {
        _ = shutdown_signal() => {}
        Some(done) = tasks.join_next() => {
            // A mount task only ends on a fatal error (e.g. an address in use).
            done.context("a mount task failed")??;
        }
    }
    eprintln!("aetherfs agent: stopping");
    tasks.abort_all();
    for m in admin.mounts() {
        let fuse = m.fuse.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(f) = fuse {
            let path = f.mountpoint().display().to_string();
            match tokio::task::spawn_blocking(move || f.unmount()).await {
                Ok(Ok(())) => eprintln!("aetherfs agent: unmounted {path}"),
                Ok(Err(e)) => eprintln!("aetherfs agent: cannot unmount {path}: {e}"),
                Err(e) => eprintln!("aetherfs agent: cannot unmount {path}: {e}"),
            }
        }
    }
    Ok(())
}

/// Brings one mount up (retrying while the hub is unreachable), then follows its tag.
async fn run_mount(
    client: HubClient,
    source: Arc<HubSource>,
    admin: Arc<Admin>,
    cfg: MountConfig,
    poll: Duration,
    readahead: u64,
) -> Result<()> {
    let reference: Reference = cfg.reference.parse()?;
    let (digest, manifest) = retry(&format!("resolving {reference}"), || resolve(&client, &reference)).await;
    let state = MountState::new(reference.clone(), digest, &manifest, source.clone(), readahead);
    admin.add(state.clone());

    // Front ends serve at once; readiness waits for the prefetch.
    if let Some(addr) = cfg.webdav {
        let mut t = tokio::task::JoinSet::new();
        let url = start_webdav(&mut t, state.fs.clone(), addr).await?;
        t.detach_all();
        eprintln!("aetherfs agent: {reference}: WebDAV on {url}");
        state.add_frontend(format!("webdav:{url}"));
    }
    if let Some(addr) = cfg.nfs {
        let export =
            cfg.export.clone().unwrap_or_else(|| reference.name.segments().last().unwrap_or("data").to_string());
        let mut t = tokio::task::JoinSet::new();
        let url = start_nfs(&mut t, state.fs.clone(), addr, &export).await?;
        t.detach_all();
        eprintln!("aetherfs agent: {reference}: NFSv3 on {url}");
        state.add_frontend(format!("nfs:{url}"));
    }
    if let Some(path) = &cfg.fuse {
        std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
        if clear_stale_mount(path)? {
            eprintln!("aetherfs agent: cleared a stale mount at {}", path.display());
        }
        let opts = FuseOptions {
            allow_other: cfg.allow_other,
            fsname: format!("aetherfs:{}", reference.name),
            ..FuseOptions::default()
        };
        let m = mount(state.fs.clone(), path, &opts, tokio::runtime::Handle::current())
            .with_context(|| format!("cannot mount {reference} on {}", path.display()))?;
        *state.fuse.lock().unwrap_or_else(|p| p.into_inner()) = Some(m);
        eprintln!("aetherfs agent: {reference}: mounted at {}", path.display());
        state.add_frontend(format!("fuse:{}", path.display()));
    }

    retry(&format!("prefetching {reference}"), || prefetch(&source, &manifest, cfg.prefetch)).await;
    state.ready.store(true, Relaxed);
    eprintln!("aetherfs agent: {reference}@{digest} ready");
    // The tree is built; the manifest is not needed while following.
    drop(manifest);

    if !state.follow {
        return std::future::pending().await;
    }
    let tag = reference.tag_or_latest();
    let mut backoff = Duration::from_millis(250);
    loop {
        let since = state.digest();
        match client.wait_tag(&reference.name, &tag, Some(since), poll).await {
            Ok(rec) => {
                backoff = Duration::from_millis(250);
                let Some(next) = rec.digest.filter(|d| *d != since) else { continue };
                let seen = Instant::now();
                let (manifest, _) = retry(&format!("fetching {}@{next}", reference.name), || {
                    client.get_manifest(&reference.name, &next)
                })
                .await;
                retry(&format!("prefetching {}@{next}", reference.name), || prefetch(&source, &manifest, cfg.prefetch))
                    .await;
                let previous = state.fs.current();
                state.fs.switch(Version::new(next, &manifest));
                *state.current.write().unwrap_or_else(|p| p.into_inner()) = next;
                if let Some(f) = state.fuse.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
                    && let Err(e) = f.notify_switch(&previous)
                {
                    tracing::warn!(error = %e, "kernel cache invalidation failed; the switch shows within a second");
                }
                state.fs.retain_previous(KEEP_PREVIOUS_VERSIONS);
                state.switches.fetch_add(1, Relaxed);
                state.last_switch_micros.store(seen.elapsed().as_micros() as u64, Relaxed);
                eprintln!("aetherfs agent: {reference}: switched {since} -> {next} in {:?}", seen.elapsed());
            }
            Err(e) => {
                tracing::warn!(error = %e, "following {reference} failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Fetches what the policy asks for into the cache.
async fn prefetch(source: &Arc<HubSource>, manifest: &Manifest, policy: Prefetch) -> Result<u64> {
    match policy {
        Prefetch::None | Prefetch::Metadata => Ok(0),
        Prefetch::All => {
            let chunks: Vec<ChunkRef> = manifest.unique_chunks().into_values().collect();
            Ok(source.prefetch(&chunks).await?)
        }
    }
}

/// Runs `f` until it succeeds, with exponential backoff (250 ms to 30 s).
async fn retry<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let mut backoff = Duration::from_millis(250);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
