//! Running the sidecar: the disk cache under one [`HubSource`], the admin
//! endpoint, and each configured mount brought up (retrying while the hub is
//! unreachable), prefetched and then following its tag. Also [`open_one`],
//! the single-mount setup of `mount`, `serve` and `demo`.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use aetherfs_cache::{CacheError, CacheKey, ChunkCache, DiskCache, DiskCacheConfig};
use aetherfs_format::Reference;
use aetherfs_hub_client::HubClient;
use aetherfs_mounts::fuse::{FuseError, FuseOptions, clear_stale_mount};

use crate::admin::{Admin, AdminError, serve_admin};
use crate::config::{AgentConfig, MountConfig};
use crate::follow::{ResolveError, follow, poll_interval, prefetch, resolve, retry};
use crate::frontends::{FrontendError, Frontends, Tasks};
use crate::materialize::Materializer;
use crate::mount::Mount;
use crate::on_switch::Hook;
use crate::source::{HubPacks, HubSource, SharedSource, SourceOptions};

/// Why the agent stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot open the cache in {dir}")]
    Cache {
        dir: std::path::PathBuf,
        #[source]
        source: CacheError,
    },
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("{reference}: bad reference")]
    Reference {
        reference: String,
        #[source]
        source: aetherfs_format::FormatError,
    },
    #[error("the admin token")]
    AdminToken(#[from] aetherfs_access::AccessError),
    #[error("{reference}")]
    Frontend {
        reference: String,
        #[source]
        source: Box<FrontendError>,
    },
    #[error("cannot mount {reference} on {path}")]
    Fuse {
        reference: String,
        path: std::path::PathBuf,
        #[source]
        source: Box<FuseError>,
    },
    #[error("cannot create {path}")]
    MountPoint {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{reference}: cannot materialize")]
    Materialize {
        reference: String,
        #[source]
        source: Box<crate::materialize::MaterializeError>,
    },
    #[error("a mount task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// Runs the agent of `cfg` over `client` until `shutdown` resolves or a
/// mount fails for good (an address in use, say); then unmounts every FUSE
/// mount. `key` encrypts the disk cache.
pub async fn run(
    client: HubClient,
    cfg: AgentConfig,
    key: CacheKey,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let disk = open_disk(cfg.cache.dir.clone(), cfg.cache.max_size.0, key).await?;
    let packs = HubPacks::new(client.clone());
    let source = HubSource::new(
        packs.clone(),
        Some(disk),
        &SourceOptions {
            memory_bytes: cfg.cache.memory_size.0,
            timeout: std::time::Duration::from_secs(cfg.fetch.timeout_secs),
            concurrency: cfg.fetch.concurrency,
        },
    );

    let admin = Arc::new(Admin::new(source.clone(), cfg.mounts.len()));
    let token = cfg.admin.token_file.as_deref().map(aetherfs_access::TokenFile::open).transpose()?;
    let allowed_hosts = cfg.allowed_hosts.clone();
    let frontends = Arc::new(
        Frontends::new(cfg.frontends.clone(), client.clone(), allowed_hosts.clone())
            .map_err(|e| AgentError::Frontend { reference: "[frontends]".into(), source: Box::new(e) })?,
    );
    let admin_addr = serve_admin(cfg.admin.listen, admin.clone(), token, allowed_hosts).await?;
    eprintln!("aetherfs agent: admin on http://{admin_addr} (hub {})", client.base_url());

    let reader = cfg.reader_id();
    let leases = tokio::spawn(crate::lease::heartbeat(client.clone(), admin.clone(), reader));
    let poll = poll_interval(cfg.fetch.poll_secs);
    let readahead = cfg.fetch.readahead.0;
    let mut tasks = tokio::task::JoinSet::new();
    for m in cfg.mounts {
        let (packs, source, admin, frontends) = (packs.clone(), source.clone(), admin.clone(), frontends.clone());
        tasks.spawn(async move { run_mount(packs, source, admin, m, poll, readahead, frontends).await });
    }
    let result = tokio::select! {
        _ = shutdown => Ok(()),
        Some(done) = tasks.join_next() => done.map_err(AgentError::Task).and_then(|r| r),
    };
    eprintln!("aetherfs agent: stopping");
    tasks.abort_all();
    leases.abort();
    for m in admin.mounts() {
        if let Some(f) = m.take_fuse() {
            let path = f.mountpoint().display().to_string();
            match tokio::task::spawn_blocking(move || f.unmount()).await {
                Ok(Ok(())) => eprintln!("aetherfs agent: unmounted {path}"),
                Ok(Err(e)) => eprintln!("aetherfs agent: cannot unmount {path}: {}", aetherfs_util::one_line(&e)),
                Err(e) => eprintln!("aetherfs agent: cannot unmount {path}: {e}"),
            }
        }
    }
    result
}

/// Brings one mount up, then follows its tag (for ever, unless it fails).
async fn run_mount(
    packs: Arc<HubPacks>,
    source: Arc<HubSource>,
    admin: Arc<Admin>,
    cfg: MountConfig,
    poll: std::time::Duration,
    readahead: u64,
    frontends: Arc<Frontends>,
) -> Result<(), AgentError> {
    let reference: Reference =
        cfg.reference.parse().map_err(|source| AgentError::Reference { reference: cfg.reference.clone(), source })?;
    let client = packs.client().clone();
    let (digest, manifest) = retry(&format!("resolving {reference}"), || resolve(&packs, &reference)).await;
    let mount = Mount::new(reference.clone(), digest, &manifest, Arc::new(SharedSource(source.clone())), readahead);
    if let Some(dir) = &cfg.materialize {
        let m = Materializer::open(dir, cfg.keep_versions(), client.clone(), reference.name.clone())
            .map_err(|e| AgentError::Materialize { reference: reference.to_string(), source: Box::new(e) })?;
        mount.set_materializer(m);
    }
    if let Some(h) = cfg.on_switch.clone() {
        mount.set_hook(Hook::new(h));
    }
    admin.add(mount.clone());

    // Front ends serve at once; readiness waits for the prefetch.
    let frontend = |e| AgentError::Frontend { reference: reference.to_string(), source: Box::new(e) };
    let mut servers = Tasks::new();
    if let Some(addr) = cfg.webdav {
        let url =
            frontends.start_webdav(&mut servers, mount.fs().clone(), &reference.name, addr).await.map_err(frontend)?;
        eprintln!("aetherfs agent: {reference}: WebDAV on {url}");
        mount.add_frontend(format!("webdav:{url}"));
    }
    if let Some(addr) = cfg.nfs {
        let export = cfg.export.clone().unwrap_or_else(|| default_export(&reference));
        let url = frontends.start_nfs(&mut servers, mount.fs().clone(), addr, &export).await.map_err(frontend)?;
        eprintln!("aetherfs agent: {reference}: NFSv3 on {url}");
        mount.add_frontend(format!("nfs:{url}"));
    }
    servers.detach_all();
    if let Some(path) = &cfg.fuse {
        std::fs::create_dir_all(path).map_err(|source| AgentError::MountPoint { path: path.clone(), source })?;
        let fuse_err =
            |e| AgentError::Fuse { reference: reference.to_string(), path: path.clone(), source: Box::new(e) };
        if clear_stale_mount(path).map_err(fuse_err)? {
            eprintln!("aetherfs agent: cleared a stale mount at {}", path.display());
        }
        let opts = FuseOptions {
            allow_other: cfg.allow_other,
            fsname: format!("aetherfs:{}", reference.name),
            ..FuseOptions::default()
        };
        mount.mount_fuse(path, &opts, tokio::runtime::Handle::current()).map_err(fuse_err)?;
        eprintln!("aetherfs agent: {reference}: mounted at {}", path.display());
    }

    retry(&format!("prefetching {reference}"), || prefetch(&source, &manifest, cfg.prefetch)).await;
    let manifest = Arc::new(manifest);
    retry(&format!("writing {reference}"), || mount.materialize_initial(&manifest)).await;
    if let Some(m) = mount.materializer() {
        eprintln!("aetherfs agent: {reference}: materialized at {}", m.dir().join("current").display());
    }
    mount.set_ready();
    eprintln!("aetherfs agent: {reference}@{digest} ready");
    // The tree is built; the manifest is not needed while following.
    drop(manifest);

    if !mount.follows_tag() {
        return std::future::pending().await;
    }
    follow(packs, source, mount, cfg.prefetch, poll).await;
    Ok(())
}

/// The NFS export of a dataset: its last name segment.
pub fn default_export(reference: &Reference) -> String {
    reference.name.segments().last().unwrap_or("data").to_string()
}

/// Opens (or creates) the encrypted disk cache in `dir`, bounded by `max_bytes`.
pub async fn open_disk(dir: PathBuf, max_bytes: u64, key: CacheKey) -> Result<Arc<dyn ChunkCache>, AgentError> {
    // The cache sizes its segments from the bound (an eighth of it, at most 64 MiB).
    let disk_cfg = DiskCacheConfig::new(dir.clone(), max_bytes, key);
    let disk = tokio::task::spawn_blocking(move || DiskCache::open(disk_cfg))
        .await
        .map_err(AgentError::Task)?
        .map_err(|source| AgentError::Cache { dir, source })?;
    Ok(Arc::new(disk))
}

/// One reference served by `mount`, `serve` or `demo` ([`open_one`]).
pub struct OneMount {
    /// How its chunks are read; [`crate::follow::follow`] needs it to follow the tag.
    pub packs: Arc<HubPacks>,
    pub source: Arc<HubSource>,
    pub mount: Arc<Mount>,
}

/// For `mount`, `serve` and `demo`: one reference over the agent's cache
/// stack (the memory tier, then `disk` when given), ready at once.
pub async fn open_one(
    client: &HubClient,
    reference: &Reference,
    opts: &SourceOptions,
    readahead: u64,
    disk: Option<Arc<dyn ChunkCache>>,
) -> Result<OneMount, ResolveError> {
    let packs = HubPacks::new(client.clone());
    let (digest, manifest) = resolve(&packs, reference).await?;
    let source = HubSource::new(packs.clone(), disk, opts);
    let mount = Mount::new(reference.clone(), digest, &manifest, Arc::new(SharedSource(source.clone())), readahead);
    mount.set_ready();
    Ok(OneMount { packs, source, mount })
}
