//! The admin endpoint of every serving daemon (`agent`, and `mount`/`serve`
//! with `--admin`): `/healthz`, `/readyz` (every configured mount resolved
//! and prefetched), `/metrics` (Prometheus text) and `/v1/mounts`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::RwLock;

use crate::mount::Mount;
use crate::source::{HubSource, LATENCY_BUCKETS};

/// Why the admin endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for the admin endpoint")]
pub struct AdminError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// What the admin endpoint reports on.
pub struct Admin {
    pub source: Arc<HubSource>,
    /// Mounts configured; until all have been added, the daemon is not ready.
    expected: usize,
    mounts: RwLock<Vec<Arc<Mount>>>,
}

impl Admin {
    pub fn new(source: Arc<HubSource>, expected: usize) -> Self {
        Self { source, expected, mounts: RwLock::new(Vec::new()) }
    }

    pub fn with(source: Arc<HubSource>, mount: Arc<Mount>) -> Arc<Self> {
        let a = Self::new(source, 1);
        a.add(mount);
        Arc::new(a)
    }

    pub fn add(&self, m: Arc<Mount>) {
        self.mounts.write().push(m);
    }

    pub fn mounts(&self) -> Vec<Arc<Mount>> {
        self.mounts.read().clone()
    }

    /// References not ready yet (not yet resolved, or prefetching).
    fn waiting(&self) -> Vec<String> {
        let mounts = self.mounts();
        let mut w: Vec<String> = mounts.iter().filter(|m| !m.is_ready()).map(|m| m.reference().to_string()).collect();
        if mounts.len() < self.expected {
            w.push(format!("{} mount(s) not resolved yet", self.expected - mounts.len()));
        }
        w
    }
}

/// Serves `/healthz`, `/readyz`, `/metrics` and `/v1/mounts`.
pub async fn serve_admin(addr: SocketAddr, admin: Arc<Admin>) -> Result<SocketAddr, AdminError> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| AdminError { addr, source })?;
    let local = listener.local_addr().map_err(|source| AdminError { addr, source })?;
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
                let views: Vec<_> = a3.mounts().iter().map(|m| m.status()).collect();
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

    type PerMount = fn(&Mount) -> String;
    let per_mount: [(&str, &str, &str, PerMount); 4] = [
        ("aetherfs_mount_version", "gauge", "The version each mount serves (value 1).", |_| "1".into()),
        ("aetherfs_mount_ready", "gauge", "Whether each mount's initial prefetch is done.", |m| {
            u8::from(m.is_ready()).to_string()
        }),
        ("aetherfs_mount_switches_total", "counter", "Version switches of each mount.", |m| m.switches().to_string()),
        ("aetherfs_mount_last_switch_seconds", "gauge", "Time from a tag move to serving the new version.", |m| {
            format!("{:.6}", m.last_switch().as_secs_f64())
        }),
    ];
    for (name, kind, help, value) in per_mount {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for m in &mounts {
            let labels = if name == "aetherfs_mount_version" {
                format!("ref=\"{}\",digest=\"{}\"", m.reference(), m.digest())
            } else {
                format!("ref=\"{}\"", m.reference())
            };
            let _ = writeln!(out, "{name}{{{labels}}} {}", value(m));
        }
    }
    out
}
