//! Prometheus metrics, in a [`Registry`] the hub owns (no global recorder, so
//! several hubs in one process, as in tests, keep separate counts).
//!
//! The names below are the whole list; docs/storage-layout.md does not repeat
//! them, `GET /metrics` is the reference.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::Hub;

// Counter names get `_total` appended by the encoder.
pub(crate) const HTTP_REQUESTS: &str = "aetherfs_hub_http_requests";
pub(crate) const HTTP_REQUEST_DURATION: &str = "aetherfs_hub_http_request_duration";
pub(crate) const GRPC_REQUESTS: &str = "aetherfs_hub_grpc_requests";
pub(crate) const GRPC_REQUEST_DURATION: &str = "aetherfs_hub_grpc_request_duration";
pub(crate) const PACK_BYTES_RECEIVED: &str = "aetherfs_hub_pack_received";
pub(crate) const PACK_BYTES_SERVED: &str = "aetherfs_hub_pack_served";
pub(crate) const PACK_READS_REDIRECTED: &str = "aetherfs_hub_pack_reads_redirected";
pub(crate) const PACKS_STORED: &str = "aetherfs_hub_packs_stored";
pub(crate) const PACK_BLOCK_HITS: &str = "aetherfs_hub_pack_block_hits";
pub(crate) const PACK_BLOCKS_LOADED: &str = "aetherfs_hub_pack_blocks_loaded";
pub(crate) const MANIFESTS_PUBLISHED: &str = "aetherfs_hub_manifests_published";
pub(crate) const TAG_MOVES: &str = "aetherfs_hub_tag_moves";
pub(crate) const VERSIONS_DELETED: &str = "aetherfs_hub_versions_deleted";
pub(crate) const CHUNKS_INDEXED: &str = "aetherfs_hub_chunks_indexed";
pub(crate) const CHUNK_INDEX_BYTES: &str = "aetherfs_hub_chunk_index_bytes";
pub(crate) const LONG_POLLS_WAITING: &str = "aetherfs_hub_long_polls_waiting";
pub(crate) const AUTH_FAILURES: &str = "aetherfs_hub_auth_failures";
pub(crate) const GC_RUNS: &str = "aetherfs_hub_gc_runs";
pub(crate) const GC_DURATION: &str = "aetherfs_hub_gc_last_duration";
pub(crate) const GC_LAST_SUCCESS: &str = "aetherfs_hub_gc_last_success_timestamp";
pub(crate) const GC_VERSIONS_REMOVED: &str = "aetherfs_hub_gc_versions_removed";
pub(crate) const GC_PACKS_DELETED: &str = "aetherfs_hub_gc_packs_deleted";
pub(crate) const GC_PACKS_WRITTEN: &str = "aetherfs_hub_gc_packs_written";
pub(crate) const GC_BYTES_DELETED: &str = "aetherfs_hub_gc_deleted";
pub(crate) const GC_BYTES_WRITTEN: &str = "aetherfs_hub_gc_written";
pub(crate) const STORED_BYTES: &str = "aetherfs_hub_stored";
pub(crate) const LIVE_BYTES: &str = "aetherfs_hub_live";
pub(crate) const DATASET_LIVE_BYTES: &str = "aetherfs_hub_dataset_live";
pub(crate) const LEASES_HELD: &str = "aetherfs_hub_leases_held";
pub(crate) const LEASE_RENEWALS: &str = "aetherfs_hub_lease_renewals";
pub(crate) const STORE_REQUESTS: &str = "aetherfs_hub_store_requests";
pub(crate) const STORE_BYTES: &str = "aetherfs_hub_store";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HttpLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub route: String,
    pub method: String,
}

/// gRPC calls: the method (a name from hub.proto) and the status code's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GrpcLabels {
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GrpcMethod {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AuthLabels {
    /// `invalid_credentials`, `missing_credentials`, `forbidden`, `keys_unavailable`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    /// `ok`, `failed`, or `skipped` (another collection held the lock).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DatasetLabels {
    pub dataset: String,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;
type GrpcHistogramFamily = Family<GrpcMethod, Histogram, fn() -> Histogram>;

pub(crate) struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: HistogramFamily,
    pub grpc_requests: Family<GrpcLabels, Counter>,
    pub grpc_duration: GrpcHistogramFamily,
    pub pack_bytes_received: Counter,
    pub pack_bytes_served: Counter,
    pub pack_reads_redirected: Counter,
    pub pack_block_hits: Counter,
    pub pack_blocks_loaded: Counter,
    pub packs_stored: Counter,
    pub manifests_published: Counter,
    pub tag_moves: Counter,
    pub versions_deleted: Counter,
    pub chunks_indexed: Gauge,
    pub chunk_index_bytes: Gauge,
    pub long_polls_waiting: Gauge,
    pub auth_failures: Family<AuthLabels, Counter>,
    pub gc_runs: Family<OutcomeLabels, Counter>,
    pub gc_duration: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub gc_last_success: Gauge,
    pub gc_versions_removed: Counter,
    pub gc_packs_deleted: Counter,
    pub gc_packs_written: Counter,
    pub gc_bytes_deleted: Counter,
    pub gc_bytes_written: Counter,
    pub stored_bytes: Gauge,
    pub live_bytes: Gauge,
    pub dataset_live_bytes: Family<DatasetLabels, Gauge>,
    pub leases_held: Family<DatasetLabels, Gauge>,
    pub lease_renewals: Counter,
    /// Requests to the object store and bytes moved, per operation (storage::MeteredStore).
    pub store: crate::storage::StoreMeters,
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~33 s: from a cached tag lookup to a slow pack upload.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        let http_duration: HistogramFamily = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let m = Self {
            registry: Registry::default(),
            http_requests: Family::default(),
            http_duration,
            grpc_requests: Family::default(),
            grpc_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            pack_bytes_received: Counter::default(),
            pack_bytes_served: Counter::default(),
            pack_reads_redirected: Counter::default(),
            pack_block_hits: Counter::default(),
            pack_blocks_loaded: Counter::default(),
            packs_stored: Counter::default(),
            manifests_published: Counter::default(),
            tag_moves: Counter::default(),
            versions_deleted: Counter::default(),
            chunks_indexed: Gauge::default(),
            chunk_index_bytes: Gauge::default(),
            long_polls_waiting: Gauge::default(),
            auth_failures: Family::default(),
            gc_runs: Family::default(),
            gc_duration: Gauge::default(),
            gc_last_success: Gauge::default(),
            gc_versions_removed: Counter::default(),
            gc_packs_deleted: Counter::default(),
            gc_packs_written: Counter::default(),
            gc_bytes_deleted: Counter::default(),
            gc_bytes_written: Counter::default(),
            stored_bytes: Gauge::default(),
            live_bytes: Gauge::default(),
            dataset_live_bytes: Family::default(),
            leases_held: Family::default(),
            lease_renewals: Counter::default(),
            store: crate::storage::StoreMeters::default(),
        };
        let mut r = Registry::default();
        r.register(HTTP_REQUESTS, "HTTP requests by route template, method and status", m.http_requests.clone());
        r.register_with_unit(
            HTTP_REQUEST_DURATION,
            "Time to answer an HTTP request (until the response head), by route and method",
            Unit::Seconds,
            m.http_duration.clone(),
        );
        r.register(GRPC_REQUESTS, "gRPC calls by method and status code", m.grpc_requests.clone());
        r.register_with_unit(
            GRPC_REQUEST_DURATION,
            "Time to answer a gRPC call (until the response head; streams: until they start), by method",
            Unit::Seconds,
            m.grpc_duration.clone(),
        );
        r.register_with_unit(
            PACK_BYTES_RECEIVED,
            "Bytes of packs received and stored",
            Unit::Bytes,
            m.pack_bytes_received.clone(),
        );
        r.register_with_unit(
            PACK_BYTES_SERVED,
            "Bytes of packs served to readers",
            Unit::Bytes,
            m.pack_bytes_served.clone(),
        );
        r.register(
            PACK_READS_REDIRECTED,
            "Pack reads answered with a presigned URL of the store (--redirect-reads)",
            m.pack_reads_redirected.clone(),
        );
        r.register(PACKS_STORED, "Packs verified and stored", m.packs_stored.clone());
        r.register(
            PACK_BLOCK_HITS,
            "Pack range reads served from a 16 MiB block held in memory (--read-cache-mib)",
            m.pack_block_hits.clone(),
        );
        r.register(
            PACK_BLOCKS_LOADED,
            "16 MiB pack blocks read from the store for readers (--read-cache-mib)",
            m.pack_blocks_loaded.clone(),
        );
        r.register(MANIFESTS_PUBLISHED, "Manifests verified and stored", m.manifests_published.clone());
        r.register(TAG_MOVES, "Tag moves and deletions made through this replica", m.tag_moves.clone());
        r.register(VERSIONS_DELETED, "Versions deleted through this replica", m.versions_deleted.clone());
        r.register(CHUNKS_INDEXED, "Distinct chunks in this replica's chunk index", m.chunks_indexed.clone());
        r.register(
            CHUNK_INDEX_BYTES,
            "Memory of this replica's chunk index, estimated (bounded by --max-index-mib)",
            m.chunk_index_bytes.clone(),
        );
        r.register(LONG_POLLS_WAITING, "Tag long-polls currently waiting", m.long_polls_waiting.clone());
        r.register(
            AUTH_FAILURES,
            "Requests refused by authentication or access control, by outcome",
            m.auth_failures.clone(),
        );
        r.register(GC_RUNS, "Garbage collections run by this replica, by outcome", m.gc_runs.clone());
        r.register_with_unit(
            GC_DURATION,
            "Duration of the last garbage collection",
            Unit::Seconds,
            m.gc_duration.clone(),
        );
        r.register_with_unit(
            GC_LAST_SUCCESS,
            "When the last garbage collection finished successfully (unix time)",
            Unit::Seconds,
            m.gc_last_success.clone(),
        );
        r.register(GC_VERSIONS_REMOVED, "Versions removed by garbage collection", m.gc_versions_removed.clone());
        r.register(GC_PACKS_DELETED, "Packs deleted by garbage collection", m.gc_packs_deleted.clone());
        r.register(
            GC_PACKS_WRITTEN,
            "Packs written by garbage collection (live chunks moved)",
            m.gc_packs_written.clone(),
        );
        r.register_with_unit(
            GC_BYTES_DELETED,
            "Pack bytes deleted by garbage collection",
            Unit::Bytes,
            m.gc_bytes_deleted.clone(),
        );
        r.register_with_unit(
            GC_BYTES_WRITTEN,
            "Pack bytes written by garbage collection (live chunks moved)",
            Unit::Bytes,
            m.gc_bytes_written.clone(),
        );
        r.register_with_unit(
            STORED_BYTES,
            "Pack bytes stored, as of the last collection",
            Unit::Bytes,
            m.stored_bytes.clone(),
        );
        r.register_with_unit(
            LIVE_BYTES,
            "Stored bytes of chunks some kept version references, as of the last collection",
            Unit::Bytes,
            m.live_bytes.clone(),
        );
        r.register_with_unit(
            DATASET_LIVE_BYTES,
            "Stored bytes of the chunks a dataset's kept versions reference, as of the last collection",
            Unit::Bytes,
            m.dataset_live_bytes.clone(),
        );
        r.register(
            LEASES_HELD,
            "Readers' leases in force per dataset, as of the last collection",
            m.leases_held.clone(),
        );
        r.register(LEASE_RENEWALS, "Lease heartbeats received by this replica", m.lease_renewals.clone());
        r.register(
            STORE_REQUESTS,
            "Requests this replica made to the object store, by operation (put, put_conditional, get, get_range, head, list, delete, copy, multipart)",
            m.store.requests.clone(),
        );
        r.register_with_unit(
            STORE_BYTES,
            "Bytes this replica wrote to (put) or read from (get, get_range) the object store",
            Unit::Bytes,
            m.store.bytes.clone(),
        );
        Self { registry: r, ..m }
    }

    /// Records a finished collection (dry runs count as runs, change no totals).
    pub fn record_gc(&self, res: &Result<aetherfs_format::api::GcReport, crate::error::AppError>) {
        let outcome = match res {
            Ok(_) => "ok",
            Err(e) if e.status == axum::http::StatusCode::CONFLICT => "skipped",
            Err(_) => "failed",
        };
        self.gc_runs.get_or_create(&OutcomeLabels { outcome }).inc();
        let Ok(r) = res else { return };
        self.gc_duration.set(r.duration_ms as f64 / 1000.0);
        if r.dry_run {
            return;
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.gc_last_success.set(now as i64);
        self.gc_versions_removed.inc_by(r.versions_removed.len() as u64);
        self.gc_packs_deleted.inc_by(r.packs_deleted);
        self.gc_packs_written.inc_by(r.packs_written);
        self.gc_bytes_deleted.inc_by(r.bytes_deleted);
        self.gc_bytes_written.inc_by(r.bytes_written);
        self.stored_bytes.set(r.stored_bytes_after as i64);
        self.live_bytes.set(r.live_bytes as i64);
        self.dataset_live_bytes.clear();
        self.leases_held.clear();
        for d in &r.datasets {
            let labels = DatasetLabels { dataset: d.name.to_string() };
            self.dataset_live_bytes.get_or_create(&labels).set(d.live_bytes as i64);
            self.leases_held.get_or_create(&labels).set(d.leases_held as i64);
        }
    }

    /// The Prometheus/OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// A finer route label than axum's matched path, set by handlers that
/// dispatch several operations from one wildcard route.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RouteTemplate(pub &'static str);

/// The method as a label: one of a fixed set, so clients cannot grow the
/// metrics (and the hub's memory) by sending made-up methods.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Counts and times every request. Every label comes from a fixed set: the
/// route templates, [`method_label`], and the status code.
pub(crate) async fn track(State(hub): State<Hub>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(req.method()).to_string();
    let matched = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string());
    let res = next.run(req).await;
    let route = res
        .extensions()
        .get::<RouteTemplate>()
        .map(|r| r.0.to_string())
        .or(matched)
        .unwrap_or_else(|| "unmatched".to_string());
    let m = &hub.inner.metrics;
    m.http_requests
        .get_or_create(&HttpLabels { route: route.clone(), method: method.clone(), status: res.status().as_u16() })
        .inc();
    m.http_duration.get_or_create(&RouteLabels { route, method }).observe(start.elapsed().as_secs_f64());
    res
}
