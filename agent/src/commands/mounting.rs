//! What `mount`, `serve` and `demo` share: turning a reference into a
//! served filesystem backed by the hub, and the admin endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aetherfs_format::{Digest, Name, Reference};
use aetherfs_hub_client::HubClient;
use aetherfs_mounts::{DatasetFs, Version};
use anyhow::{Context, Result};

use crate::cli::CacheArgs;
use crate::source::HubSource;

/// A dataset version ready to serve.
pub struct Served {
    pub name: Name,
    pub digest: Digest,
    pub fs: Arc<DatasetFs>,
    pub source: Arc<HubSource>,
}

pub async fn open(client: &HubClient, reference: &Reference, cache: &CacheArgs) -> Result<Served> {
    let digest = client.resolve(reference).await.with_context(|| format!("cannot resolve {reference}"))?;
    let (manifest, _) = client
        .get_manifest(&reference.name, &digest)
        .await
        .with_context(|| format!("cannot fetch the manifest of {}@{digest}", reference.name))?;
    let version = Version::new(digest, &manifest);
    let source = HubSource::new(client.clone(), cache.cache_mib << 20, Duration::from_secs(cache.fetch_timeout_secs));
    let fs = Arc::new(DatasetFs::new(version, source.clone()).with_readahead(cache.readahead_mib << 20));
    Ok(Served { name: reference.name.clone(), digest, fs, source })
}

/// Serves `/healthz`, `/readyz` and `/metrics` for a daemon serving `served`.
pub async fn serve_admin(addr: SocketAddr, served: Arc<Served>) -> Result<SocketAddr> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let metrics_source = served.clone();
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
        .route("/metrics", get(move || async move { metrics_text(&metrics_source) }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin server failed");
        }
    });
    Ok(local)
}

fn metrics_text(s: &Served) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let st = &s.source.stats;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
    };
    metric(
        "aetherfs_cache_hits_total",
        "counter",
        "Chunk reads served from the memory cache.",
        st.hits.load(Relaxed).to_string(),
    );
    metric(
        "aetherfs_cache_misses_total",
        "counter",
        "Chunk reads that had to be fetched.",
        st.misses.load(Relaxed).to_string(),
    );
    metric("aetherfs_cache_bytes", "gauge", "Bytes held in the memory cache.", s.source.cached_bytes().to_string());
    metric(
        "aetherfs_fetched_bytes_total",
        "counter",
        "Bytes fetched from the hub.",
        st.bytes_fetched.load(Relaxed).to_string(),
    );
    metric(
        "aetherfs_fetch_requests_total",
        "counter",
        "Range requests sent to the hub.",
        st.range_requests.load(Relaxed).to_string(),
    );
    metric(
        "aetherfs_fetch_errors_total",
        "counter",
        "Range requests that failed or timed out.",
        st.fetch_errors.load(Relaxed).to_string(),
    );
    metric(
        "aetherfs_fetch_seconds_total",
        "counter",
        "Time spent in range requests to the hub.",
        format!("{:.6}", st.fetch_micros.load(Relaxed) as f64 / 1e6),
    );
    out.push_str(&format!(
        "# HELP aetherfs_mounted_version Served version (value 1).\n# TYPE aetherfs_mounted_version gauge\naetherfs_mounted_version{{name=\"{}\",digest=\"{}\"}} 1\n",
        s.name, s.digest
    ));
    out
}
