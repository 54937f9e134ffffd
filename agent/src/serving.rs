//! What every serving daemon (`mount`, `serve`, `demo`, `agent`) shares: a
//! dataset version opened from the hub as a filesystem, the state of each
//! served mount, and the admin endpoint (health, readiness, metrics, mounts).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use aetherfs_format::{Digest, Manifest, Name, Reference};
use aetherfs_hub_client::HubClient;
use aetherfs_mounts::fuse::FuseMount;
use aetherfs_mounts::{DatasetFs, Version};
use anyhow::{Context, Result};
use serde::Serialize;

use crate::source::{HubSource, LATENCY_BUCKETS, SharedSource};

/// Resolves a reference and fetches its verified manifest.
pub async fn resolve(client: &HubClient, reference: &Reference) -> Result<(Digest, Manifest)> {
    let digest = client.resolve(reference).await.with_context(|| format!("cannot resolve {reference}"))?;
    let (manifest, _) = client
        .get_manifest(&reference.name, &digest)
        .await
        .with_context(|| format!("cannot fetch the manifest of {}@{digest}", reference.name))?;
    Ok((digest, manifest))
}

/// One served dataset and what it currently serves.
pub struct MountState {
    pub reference: Reference,
    pub fs: Arc<DatasetFs>,
    pub current: RwLock<Digest>,
    /// The initial prefetch is done: this mount may be relied upon.
    pub ready: AtomicBool,
    pub switches: AtomicU64,
    /// Seconds the last switch took from seeing the tag move to serving.
    pub last_switch_micros: AtomicU64,
    pub frontends: RwLock<Vec<String>>,
    pub follow: bool,
    /// The FUSE mount, told about switches and unmounted at shutdown.
    pub fuse: Mutex<Option<FuseMount>>,
}

impl MountState {
    pub fn new(
        reference: Reference,
        digest: Digest,
        manifest: &Manifest,
        source: Arc<HubSource>,
        readahead: u64,
    ) -> Arc<Self> {
        let fs = Arc::new(
            DatasetFs::new(Version::new(digest, manifest), Arc::new(SharedSource(source))).with_readahead(readahead),
        );
        let follow = reference.digest.is_none();
        Arc::new(Self {
            reference,
            fs,
            current: RwLock::new(digest),
            ready: AtomicBool::new(false),
            switches: AtomicU64::new(0),
            last_switch_micros: AtomicU64::new(0),
            frontends: RwLock::new(Vec::new()),
            follow,
            fuse: Mutex::new(None),
        })
    }

    pub fn name(&self) -> &Name {
        &self.reference.name
    }

    pub fn digest(&self) -> Digest {
        *self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add_frontend(&self, f: String) {
        self.frontends.write().unwrap_or_else(|p| p.into_inner()).push(f);
    }
}

/// What the admin endpoint reports on.
pub struct Admin {
    pub source: Arc<HubSource>,
    /// Mounts configured; until all have been added, the daemon is not ready.
    expected: usize,
    mounts: RwLock<Vec<Arc<MountState>>>,
}

impl Admin {
    pub fn new(source: Arc<HubSource>, expected: usize) -> Self {
        Self { source, expected, mounts: RwLock::new(Vec::new()) }
    }

    pub fn with(source: Arc<HubSource>, mount: Arc<MountState>) -> Arc<Self> {
        let a = Self::new(source, 1);
        a.add(mount);
        Arc::new(a)
    }

    pub fn add(&self, m: Arc<MountState>) {
        self.mounts.write().unwrap_or_else(|p| p.into_inner()).push(m);
    }

    pub fn mounts(&self) -> Vec<Arc<MountState>> {
        self.mounts.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// References not ready yet (not yet resolved, or prefetching).
    fn waiting(&self) -> Vec<String> {
        let mounts = self.mounts();
        let mut w: Vec<String> =
            mounts.iter().filter(|m| !m.ready.load(Relaxed)).map(|m| m.reference.to_string()).collect();
        if mounts.len() < self.expected {
            w.push(format!("{} mount(s) not resolved yet", self.expected - mounts.len()));
        }
        w
    }
}

#[derive(Serialize)]
struct MountView {
    reference: String,
    name: String,
    digest: String,
    follows_tag: bool,
    ready: bool,
    switches: u64,
    frontends: Vec<String>,
}

/// Serves `/healthz`, `/readyz`, `/metrics` and `/v1/mounts`.
pub async fn serve_admin(addr: SocketAddr, admin: Arc<Admin>) -> Result<SocketAddr> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let (a1, a2, a3) = (admin.clone(), admin.clone(), admin);
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || async move {
                let waiting = a1.waiting();
                if waiting.is_empty() {
                    (StatusCode::OK, "ready\n".to_string())
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, format!("waiting for: {}\n", waiting.join(", ")))
                }
            }),
        )
        .route("/metrics", get(move || async move { metrics_text(&a2) }))
        .route(
            "/v1/mounts",
            get(move || async move {
                let views: Vec<MountView> = a3
                    .mounts()
                    .iter()
                    .map(|m| MountView {
                        reference: m.reference.to_string(),
                        name: m.name().to_string(),
                        digest: m.digest().to_string(),
                        follows_tag: m.follow,
                        ready: m.ready.load(Relaxed),
                        switches: m.switches.load(Relaxed),
                        frontends: m.frontends.read().unwrap_or_else(|p| p.into_inner()).clone(),
                    })
                    .collect();
                axum::Json(serde_json::json!({ "mounts": views }))
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin server failed");
        }
    });
    Ok(local)
}

fn metrics_text(a: &Admin) -> String {
    use std::fmt::Write;
    let mounts = a.mounts();
    let st = &a.source.stats;
    let load = |c: &AtomicU64| c.load(Relaxed).to_string();
    let mut scalars: Vec<(&str, &str, &str, String)> = vec![
        (
            "aetherfs_cache_memory_hits_total",
            "counter",
            "Chunk reads served from the memory tier.",
            load(&st.memory_hits),
        ),
        ("aetherfs_cache_disk_hits_total", "counter", "Chunk loads served from the disk cache.", load(&st.disk_hits)),
        ("aetherfs_cache_misses_total", "counter", "Chunk loads that needed the hub.", load(&st.misses)),
        ("aetherfs_cache_memory_bytes", "gauge", "Bytes in the memory tier.", a.source.memory_bytes().to_string()),
        ("aetherfs_fetched_bytes_total", "counter", "Bytes fetched from the hub.", load(&st.bytes_fetched)),
        ("aetherfs_prefetched_bytes_total", "counter", "Bytes fetched by prefetch.", load(&st.prefetched_bytes)),
        ("aetherfs_fetch_errors_total", "counter", "Range requests that failed or timed out.", load(&st.fetch_errors)),
    ];
    if let Some(disk) = a.source.disk() {
        let s = disk.stats();
        scalars.extend([
            ("aetherfs_cache_disk_bytes", "gauge", "Bytes of the disk cache on disk.", s.bytes.to_string()),
            ("aetherfs_cache_disk_max_bytes", "gauge", "The disk cache's bound.", disk.max_bytes().to_string()),
            ("aetherfs_cache_disk_entries", "gauge", "Chunks in the disk cache.", s.entries.to_string()),
            (
                "aetherfs_cache_disk_corrupt_total",
                "counter",
                "Disk entries dropped as corrupt.",
                s.corrupt_dropped.to_string(),
            ),
            (
                "aetherfs_cache_disk_evicted_bytes_total",
                "counter",
                "Bytes evicted from the disk cache.",
                s.evicted_bytes.to_string(),
            ),
        ]);
    }
    let mut out = String::new();
    for (name, kind, help, value) in scalars {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
    }

    let name = "aetherfs_fetch_duration_seconds";
    let _ = write!(out, "# HELP {name} Latency of range requests to the hub.\n# TYPE {name} histogram\n");
    let mut cumulative = 0;
    for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
        cumulative += st.latency_buckets[i].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
    }
    let count = st.range_requests.load(Relaxed);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {:.6}", st.fetch_micros.load(Relaxed) as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {count}");

    type PerMount = fn(&MountState) -> String;
    let per_mount: [(&str, &str, &str, PerMount); 4] = [
        ("aetherfs_mount_version", "gauge", "The version each mount serves (value 1).", |_| "1".into()),
        ("aetherfs_mount_ready", "gauge", "Whether each mount's initial prefetch is done.", |m| {
            u8::from(m.ready.load(Relaxed)).to_string()
        }),
        ("aetherfs_mount_switches_total", "counter", "Version switches of each mount.", |m| {
            m.switches.load(Relaxed).to_string()
        }),
        ("aetherfs_mount_last_switch_seconds", "gauge", "Time from a tag move to serving the new version.", |m| {
            format!("{:.6}", m.last_switch_micros.load(Relaxed) as f64 / 1e6)
        }),
    ];
    for (name, kind, help, value) in per_mount {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for m in &mounts {
            let labels = if name == "aetherfs_mount_version" {
                format!("ref=\"{}\",digest=\"{}\"", m.reference, m.digest())
            } else {
                format!("ref=\"{}\"", m.reference)
            };
            let _ = writeln!(out, "{name}{{{labels}}} {}", value(m));
        }
    }
    out
}

/// Long-poll timeout used when following a tag.
pub fn poll_interval(secs: u64) -> Duration {
    Duration::from_secs(secs.clamp(1, 300))
}

/// For `mount`, `serve` and `demo`: one reference, a memory-only cache.
pub async fn open_one(
    client: &HubClient,
    reference: &Reference,
    opts: &crate::source::SourceOptions,
    readahead: u64,
) -> Result<(Arc<HubSource>, Arc<MountState>)> {
    let (digest, manifest) = resolve(client, reference).await?;
    let source = HubSource::new(Arc::new(client.clone()), None, opts);
    let state = MountState::new(reference.clone(), digest, &manifest, source.clone(), readahead);
    state.ready.store(true, Relaxed);
    Ok((source, state))
}
