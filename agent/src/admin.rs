//! The admin endpoint of every serving daemon (`agent`, and `mount`/`serve`
//! with `--admin`): `/healthz`, `/readyz` (every configured mount resolved
//! and prefetched), `/metrics` (Prometheus text), `/v1/mounts` and
//! `/v1/stats` (what readers do with each mount: see `aetherfs_mounts::stats`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::RwLock;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use aetherfs_mounts::stats::{FILES_TRACKED, LATENCY_BUCKETS as READ_BUCKETS};

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
    mounts: Mounts,
    registry: Registry,
}

type Mounts = Arc<RwLock<Vec<Arc<Mount>>>>;

impl Admin {
    pub fn new(source: Arc<HubSource>, expected: usize) -> Self {
        let mounts = Mounts::default();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(AgentCollector { source: source.clone(), mounts: mounts.clone() }));
        Self { source, expected, mounts, registry }
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

    /// The `/metrics` body: OpenMetrics text (a superset of what Prometheus's
    /// text format parsers read), ending in `# EOF`.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; the collector's encoders do not either.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// Connections the admin endpoint serves at once.
const ADMIN_CONNECTIONS: usize = 64;

/// Serves `/healthz`, `/readyz`, `/metrics` and `/v1/mounts`; with `token`,
/// the last two (references, digests, front-end addresses) need
/// `Authorization: Bearer <token>`, while the probes stay open.
pub async fn serve_admin(
    addr: SocketAddr,
    admin: Arc<Admin>,
    token: Option<aetherfs_access::TokenFile>,
    allowed_hosts: Vec<String>,
) -> Result<SocketAddr, AdminError> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| AdminError { addr, source })?;
    let local = listener.local_addr().map_err(|source| AdminError { addr, source })?;
    if token.is_none() && !local.ip().is_loopback() {
        eprintln!(
            "aetherfs: WARNING: admin endpoint on {local} without a token: anyone who reaches it reads /metrics and /v1/mounts (set admin.token_file)"
        );
    }
    let (a1, a2, a3, a4) = (admin.clone(), admin.clone(), admin.clone(), admin);
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
        .route(
            "/metrics",
            get(move || async move { ([(axum::http::header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], a2.metrics_text()) }),
        )
        .route(
            "/v1/mounts",
            get(move || async move {
                let views: Vec<_> = a3.mounts().iter().map(|m| m.status()).collect();
                axum::Json(serde_json::json!({ "mounts": views }))
            }),
        )
        .route(
            "/v1/stats",
            get(move |q: axum::extract::Query<StatsQuery>| async move {
                let top = q.top.unwrap_or(TOP_FILES_DEFAULT).min(FILES_TRACKED);
                let mounts: Vec<_> = a4
                    .mounts()
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "reference": m.reference().to_string(),
                            "name": m.name().to_string(),
                            "digest": m.digest(),
                            "versions": m.fs().stats(top),
                        })
                    })
                    .collect();
                axum::Json(serde_json::json!({ "mounts": mounts }))
            }),
        )
        .layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
            let token = token.clone();
            async move {
                use axum::response::IntoResponse;
                let open = matches!(req.uri().path(), "/healthz" | "/readyz");
                match &token {
                    Some(t) if !open && !bearer(req.headers()).is_some_and(|b| t.matches(b)) => (
                        StatusCode::UNAUTHORIZED,
                        [(axum::http::header::WWW_AUTHENTICATE, "Bearer realm=\"aetherfs-admin\"")],
                        "a bearer token is required\n",
                    )
                        .into_response(),
                    _ => next.run(req).await,
                }
            }
        }))
        // Outermost: a rebound web page learns nothing, not even /healthz.
        .layer(axum::middleware::from_fn_with_state(Arc::new(allowed_hosts), aetherfs_mounts::webdav::check_host));
    // Probes and scrapes are few: a small cap, and slow clients are dropped.
    let limits = aetherfs_serve::ConnectionLimits { max_connections: ADMIN_CONNECTIONS, ..Default::default() };
    tokio::spawn(async move {
        if let Err(e) = aetherfs_serve::serve(listener, app, None, limits, std::future::pending()).await {
            tracing::error!(error = %e, "admin server failed");
        }
    });
    Ok(local)
}

/// `/v1/stats?top=N`: how many of the files read most to list per version.
#[derive(serde::Deserialize)]
struct StatsQuery {
    top: Option<usize>,
}

const TOP_FILES_DEFAULT: usize = 20;

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let v = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = aetherfs_access::split_authorization(v);
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// What `text::encode` emits.
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

// The metric names and help, all of them. Counter names get `_total`
// appended by the encoder (`aetherfs_cache_misses` is exposed as
// `aetherfs_cache_misses_total`). docs/agent.md lists them for users.
const MEMORY_HITS: (&str, &str) = ("aetherfs_cache_memory_hits", "Chunk reads served from the memory tier.");
const DISK_HITS: (&str, &str) = ("aetherfs_cache_disk_hits", "Chunk loads served from the disk cache.");
const MISSES: (&str, &str) = ("aetherfs_cache_misses", "Chunk loads that needed the hub.");
const MEMORY_BYTES: (&str, &str) = ("aetherfs_cache_memory_bytes", "Bytes in the memory tier.");
const FETCHED_BYTES: (&str, &str) = ("aetherfs_fetched_bytes", "Bytes fetched from the hub.");
const PREFETCHED_BYTES: (&str, &str) = ("aetherfs_prefetched_bytes", "Bytes fetched by prefetch.");
const FETCH_ERRORS: (&str, &str) = ("aetherfs_fetch_errors", "Range requests that failed or timed out.");
const FETCH_DURATION: (&str, &str) = ("aetherfs_fetch_duration_seconds", "Latency of range requests to the hub.");
const DISK_BYTES: (&str, &str) = ("aetherfs_cache_disk_bytes", "Bytes of the disk cache on disk.");
const DISK_MAX_BYTES: (&str, &str) = ("aetherfs_cache_disk_max_bytes", "The disk cache's bound.");
const DISK_ENTRIES: (&str, &str) = ("aetherfs_cache_disk_entries", "Chunks in the disk cache.");
const DISK_CORRUPT: (&str, &str) = ("aetherfs_cache_disk_corrupt", "Disk entries dropped as corrupt.");
const DISK_EVICTED_BYTES: (&str, &str) = ("aetherfs_cache_disk_evicted_bytes", "Bytes evicted from the disk cache.");
const MOUNT_VERSION: (&str, &str) = ("aetherfs_mount_version", "The version each mount serves (value 1).");
const MOUNT_READY: (&str, &str) = ("aetherfs_mount_ready", "Whether each mount's initial prefetch is done.");
const MOUNT_SWITCHES: (&str, &str) = ("aetherfs_mount_switches", "Version switches of each mount.");
const MOUNT_LAST_SWITCH: (&str, &str) =
    ("aetherfs_mount_last_switch_seconds", "Time from a tag move to serving the new version.");
const MOUNT_FAILING: (&str, &str) =
    ("aetherfs_mount_failing", "1 while the last attempt to bring up or switch a mount failed (see /v1/mounts).");
const MOUNT_READS: (&str, &str) = ("aetherfs_mount_reads", "Reads through each mount (FUSE, NFS and WebDAV).");
const MOUNT_READ_BYTES: (&str, &str) = ("aetherfs_mount_read_bytes", "Bytes readers got through each mount.");
const MOUNT_READ_ERRORS: (&str, &str) = ("aetherfs_mount_read_errors", "Reads through each mount that failed.");
const MOUNT_CHUNKS: (&str, &str) =
    ("aetherfs_mount_chunks", "Chunks each mount's reads needed, by where they came from (memory, disk, hub).");
const MOUNT_NETWORK_BYTES: (&str, &str) = (
    "aetherfs_mount_network_bytes",
    "Stored bytes fetched from the hub for each mount's readers, read-ahead included.",
);
const MOUNT_READ_DURATION: (&str, &str) = (
    "aetherfs_mount_read_duration_seconds",
    "Latency of reads through each mount, as the filesystem core serves them.",
);
const MAT_BUILDS: (&str, &str) = ("aetherfs_materialize_builds", "Versions written by a materialized mount.");
const MAT_FETCHED: (&str, &str) =
    ("aetherfs_materialize_fetched_bytes", "Stored bytes fetched from the hub to write versions.");
const MAT_REUSED: (&str, &str) =
    ("aetherfs_materialize_reused_bytes", "Bytes copied from the previous version's files instead of fetched.");
const MAT_WRITTEN: (&str, &str) = ("aetherfs_materialize_files_written", "Files written by a materialized mount.");
const MAT_LINKED: (&str, &str) =
    ("aetherfs_materialize_files_linked", "Unchanged files hard-linked from the previous version (no write).");
const RESIDENT: (&str, &str) = ("process_resident_memory_bytes", "Resident memory of the agent process (VmRSS).");
const PEAK_RESIDENT: (&str, &str) =
    ("aetherfs_process_peak_resident_memory_bytes", "The most memory the agent process ever had resident (VmHWM).");
const MOUNT_TREE_BYTES: (&str, &str) =
    ("aetherfs_mount_tree_bytes", "Heap bytes of the tree (inode table) of the version each mount serves.");
const HOOK_RUNS: (&str, &str) = ("aetherfs_on_switch_runs", "Runs of a mount's on_switch hook.");
const HOOK_FAILURES: (&str, &str) = ("aetherfs_on_switch_failures", "Failed or timed-out on_switch runs.");

/// Reads the source's atomics, the disk cache's stats and the mounts at
/// scrape time. A collector rather than a registry built per scrape: the
/// registry and this list are made once, a scrape only reads, and the
/// hot path keeps its plain atomics (no prometheus types in `SourceStats`).
struct AgentCollector {
    source: Arc<HubSource>,
    mounts: Mounts,
}

impl std::fmt::Debug for AgentCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCollector").finish_non_exhaustive()
    }
}

fn one(enc: &mut DescriptorEncoder, (name, help): (&str, &str), metric: &impl EncodeMetric) -> std::fmt::Result {
    metric.encode(enc.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn counter(v: &AtomicU64) -> ConstCounter {
    ConstCounter::new(v.load(Relaxed))
}

/// A series per mount, labelled from the config's references (a fixed set).
fn per_mount<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    (name, help): (&str, &str),
    kind: MetricType,
    mounts: &[Arc<Mount>],
    labels: impl Fn(&Mount) -> Vec<(&'static str, String)>,
    value: impl Fn(&Mount) -> M,
) -> std::fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, kind)?;
    for m in mounts {
        let l = labels(m);
        value(m).encode(family.encode_family(&l)?)?;
    }
    Ok(())
}

impl Collector for AgentCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let st = &self.source.stats;
        let e = &mut enc;
        one(e, MEMORY_HITS, &counter(&st.memory_hits))?;
        one(e, DISK_HITS, &counter(&st.disk_hits))?;
        one(e, MISSES, &counter(&st.misses))?;
        one(e, MEMORY_BYTES, &ConstGauge::new(self.source.memory_bytes()))?;
        one(e, FETCHED_BYTES, &counter(&st.bytes_fetched))?;
        one(e, PREFETCHED_BYTES, &counter(&st.prefetched_bytes))?;
        one(e, FETCH_ERRORS, &counter(&st.fetch_errors))?;
        if let Some(disk) = self.source.disk() {
            let s = disk.stats();
            one(e, DISK_BYTES, &ConstGauge::new(s.bytes))?;
            one(e, DISK_MAX_BYTES, &ConstGauge::new(disk.max_bytes()))?;
            one(e, DISK_ENTRIES, &ConstGauge::new(s.entries))?;
            one(e, DISK_CORRUPT, &ConstCounter::new(s.corrupt_dropped))?;
            one(e, DISK_EVICTED_BYTES, &ConstCounter::new(s.evicted_bytes))?;
        }

        if let Some(m) = aetherfs_util::memory::process_memory() {
            one(e, RESIDENT, &ConstGauge::new(m.resident))?;
            one(e, PEAK_RESIDENT, &ConstGauge::new(m.peak))?;
        }

        // The encoder sums per-bucket counts itself; the +Inf bucket holds
        // the requests slower than the last bound.
        let count = st.range_requests.load(Relaxed);
        let mut buckets: Vec<(f64, u64)> =
            LATENCY_BUCKETS.iter().zip(&st.latency_buckets).map(|(&b, n)| (b, n.load(Relaxed))).collect();
        let bounded: u64 = buckets.iter().map(|b| b.1).sum();
        buckets.push((f64::INFINITY, count.saturating_sub(bounded)));
        let (name, help) = FETCH_DURATION;
        enc.encode_descriptor(name, help, None, MetricType::Histogram)?.encode_histogram::<NoLabelSet>(
            st.fetch_micros.load(Relaxed) as f64 / 1e6,
            count,
            &buckets,
            None,
        )?;

        let mounts = self.mounts.read().clone();
        let by_ref = |m: &Mount| vec![("ref", m.reference().to_string())];
        let e = &mut enc;
        per_mount(
            e,
            MOUNT_VERSION,
            MetricType::Gauge,
            &mounts,
            |m| vec![("ref", m.reference().to_string()), ("digest", m.digest().to_string())],
            |_| ConstGauge::new(1),
        )?;
        per_mount(e, MOUNT_READY, MetricType::Gauge, &mounts, by_ref, |m| ConstGauge::new(i64::from(m.is_ready())))?;
        per_mount(e, MOUNT_SWITCHES, MetricType::Counter, &mounts, by_ref, |m| ConstCounter::new(m.switches()))?;
        per_mount(e, MOUNT_LAST_SWITCH, MetricType::Gauge, &mounts, by_ref, |m| {
            ConstGauge::new(m.last_switch().as_secs_f64())
        })?;
        per_mount(e, MOUNT_TREE_BYTES, MetricType::Gauge, &mounts, by_ref, |m| {
            ConstGauge::new(m.fs().current().heap_bytes() as u64)
        })?;
        per_mount(e, MOUNT_FAILING, MetricType::Gauge, &mounts, by_ref, |m| {
            ConstGauge::new(i64::from(m.status().last_error.is_some()))
        })?;

        let totals: Vec<(Arc<Mount>, aetherfs_mounts::stats::MountTotals)> =
            mounts.iter().map(|m| (m.clone(), m.fs().totals())).collect();
        for (desc, pick) in [
            (MOUNT_READS, (|t| t.reads) as fn(&aetherfs_mounts::stats::MountTotals) -> u64),
            (MOUNT_READ_BYTES, |t| t.bytes_read),
            (MOUNT_READ_ERRORS, |t| t.errors),
            (MOUNT_NETWORK_BYTES, |t| t.network_bytes),
        ] {
            let mut family = e.encode_descriptor(desc.0, desc.1, None, MetricType::Counter)?;
            for (m, t) in &totals {
                ConstCounter::new(pick(t)).encode(family.encode_family(&by_ref(m))?)?;
            }
        }
        {
            let mut family = e.encode_descriptor(MOUNT_CHUNKS.0, MOUNT_CHUNKS.1, None, MetricType::Counter)?;
            for (m, t) in &totals {
                for (from, n) in [("memory", t.memory_hits), ("disk", t.disk_hits), ("hub", t.fetched_chunks)] {
                    let labels = vec![("ref", m.reference().to_string()), ("from", from.to_string())];
                    ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut family =
                e.encode_descriptor(MOUNT_READ_DURATION.0, MOUNT_READ_DURATION.1, None, MetricType::Histogram)?;
            for (m, t) in &totals {
                let mut buckets: Vec<(f64, u64)> =
                    READ_BUCKETS.iter().copied().zip(t.latency_buckets.iter().copied()).collect();
                buckets.push((f64::INFINITY, t.latency_buckets.get(READ_BUCKETS.len()).copied().unwrap_or(0)));
                family.encode_family(&by_ref(m))?.encode_histogram::<NoLabelSet>(
                    t.latency_seconds_sum,
                    t.reads,
                    &buckets,
                    None,
                )?;
            }
        }

        let materialized: Vec<_> = mounts.iter().filter(|m| m.materializer().is_some()).cloned().collect();
        let mat = |m: &Mount| m.materializer().map(|x| x.status());
        for (desc, pick) in [
            (MAT_BUILDS, (|s| s.builds) as fn(&crate::materialize::MaterializeStatus) -> u64),
            (MAT_FETCHED, |s| s.fetched_bytes),
            (MAT_REUSED, |s| s.reused_bytes),
            (MAT_WRITTEN, |s| s.files_written),
            (MAT_LINKED, |s| s.files_linked),
        ] {
            per_mount(e, desc, MetricType::Counter, &materialized, by_ref, |m| {
                ConstCounter::new(mat(m).as_ref().map_or(0, pick))
            })?;
        }
        let hooked: Vec<_> = mounts.iter().filter(|m| m.hook().is_some()).cloned().collect();
        per_mount(e, HOOK_RUNS, MetricType::Counter, &hooked, by_ref, |m| {
            ConstCounter::new(m.hook().map_or(0, |h| h.runs()))
        })?;
        per_mount(e, HOOK_FAILURES, MetricType::Counter, &hooked, by_ref, |m| {
            ConstCounter::new(m.hook().map_or(0, |h| h.failures()))
        })?;
        Ok(())
    }
}
