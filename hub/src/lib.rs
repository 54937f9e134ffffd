//! The AetherFS hub: a stateless HTTP server over an object store.
//!
//! - `auth`: authentication and access control on every request
//! - `chunk_index`: where chunks are: recent packs (from the pack log) and base versions, bounded
//! - `error`: `HubError` (opening a hub) and `AppError` (HTTP error bodies)
//! - `grpc`: the gRPC API beside REST on the same port (tonic, reflection, health)
//! - `gc`: garbage collection (retention, mark, repack, sweep) and its handshake with publishes
//! - `lifecycle`: the retention and garbage-collection configuration
//! - `metrics`: Prometheus metrics and the request-tracking layer
//! - `pack_blocks`: 16 MiB pack blocks read through for readers, so small ranges make few store GETs
//! - `routes`: the router and one handler file per resource
//! - `storage`: opening the object store and its key layout
//! - `tags`: tag moves (compare-and-swap), history and long-polls
//! - `tls`: HTTPS with certificate reload
//! - `web`: the web page for people (HTML, sign-in, sessions)
//!
//! ```text
//!   HTTPS (rustls)        tls.rs          certificate reloaded when its files change
//!   HTTP (axum)           routes/*        one file per resource; every error is an AppError
//!     │ auth              authentication and access control on every request (auth.rs)
//!     │
//!     ├── tags            compare-and-swap moves, history, long-polls      (tags.rs)
//!     ├── chunk index     recent packs + base versions' placements, bounded  (chunk_index.rs)
//!     └── object store    file://, memory://, s3://, gs://, az://; metered;
//!                         presigned reads; key layout                       (storage.rs)
//! ```
//!
//! All durable state lives in the object store (layout in
//! docs/storage-layout.md), so several replicas can serve one bucket and any
//! replica can be restarted: its only local state is the chunk index and a
//! few caches, all rebuilt from storage. Every input is untrusted: sizes are
//! bounded while reading, digests recomputed, packs verified chunk by chunk
//! before they are stored, manifests decoded and checked against the pack
//! indexes they reference before they are published.

pub mod auth;
mod chunk_index;
mod error;
mod gc;
mod grpc;
pub mod lifecycle;
mod metrics;
mod pack_blocks;
mod routes;
pub mod serve;
mod storage;
mod tags;
pub mod tls;
mod web;

use std::sync::Arc;

use aetherfs_format::manifest::MANIFEST_MAX_BYTES;
use aetherfs_format::pack::PACK_MAX_BYTES;
use object_store::ObjectStore;
use tokio::sync::Semaphore;

/// Longest tag long-poll by default (and the most `--long-poll-max-secs` allows).
pub const LONG_POLL_MAX: std::time::Duration = std::time::Duration::from_secs(300);

pub use auth::Auth;
pub use error::HubError;
pub use lifecycle::{Lifecycle, LifecycleError};
pub use storage::{Encryption, Presigner};

/// How long a presigned pack URL stays valid by default (`--redirect-expiry-secs`).
pub const REDIRECT_EXPIRY: std::time::Duration = std::time::Duration::from_secs(300);

/// The chunk index's default memory bound.
pub const DEFAULT_INDEX_BYTES: u64 = 64 << 20;
/// Default memory for pack blocks read through for readers.
pub const DEFAULT_READ_CACHE_BYTES: u64 = 256 << 20;

/// Pack and manifest uploads read and verified at once; each holds up to
/// `max_pack_bytes` (or `max_manifest_bytes`) in memory.
const CONCURRENT_UPLOADS: usize = 8;
/// JSON views of manifests rendered at once; each decodes a whole manifest.
const CONCURRENT_JSON_VIEWS: usize = 2;

/// How to open a hub.
#[derive(Clone, Debug)]
pub struct HubOptions {
    /// `file:///DIR` (created if missing), `memory://`, `s3://BUCKET[/PREFIX]`,
    /// `gs://BUCKET[/PREFIX]` or `az://CONTAINER[/PREFIX]` (configured from the
    /// usual `AWS_*`, `GOOGLE_*` and `AZURE_*` environment variables).
    pub storage: String,
    /// Server-side encryption of what the hub writes (S3, Azure).
    pub encryption: Encryption,
    /// Answer pack reads with `307` to a presigned URL of the store, valid
    /// this long, instead of streaming the bytes (cloud stores only).
    pub redirect_reads: Option<std::time::Duration>,
    /// Largest pack accepted (default [`PACK_MAX_BYTES`]).
    pub max_pack_bytes: usize,
    /// Largest manifest accepted (default [`MANIFEST_MAX_BYTES`]).
    pub max_manifest_bytes: usize,
    /// Authentication and access control; [`Auth::open`] (the default) allows everything.
    pub auth: Auth,
    /// Retention rules and garbage-collection settings.
    pub lifecycle: Lifecycle,
    /// Host names (besides IP addresses and `localhost`) an open hub (no
    /// authentication) answers to; other Host headers are refused, which
    /// keeps DNS rebinding away from it. `"*"`: any.
    pub allowed_hosts: Vec<String>,
    /// Most memory the chunk index may take (estimated): three quarters for
    /// the chunks of recent packs, a quarter for base versions' placements.
    /// Past it the oldest go; the store may hold any number of chunks.
    pub max_index_bytes: u64,
    /// How far back the pack log is read at start (the recent packs).
    pub index_window: std::time::Duration,
    /// Memory for pack blocks read through for readers (pack_blocks.rs); 0:
    /// every read goes to the store as asked.
    pub read_cache_bytes: u64,
    /// Longest an upload's body may pause between two pieces before it is
    /// refused (`408 body_timeout`), freeing its upload slot.
    pub body_stall: std::time::Duration,
    /// Longest a tag long-poll waits before answering with the current
    /// record (a client's `wait` is capped to it). Below a load balancer's
    /// idle timeout, so a waiting poll is never cut off by a proxy.
    pub long_poll_max: std::time::Duration,
    /// The hub serves HTTPS: the web page's cookies are `Secure`.
    pub tls: bool,
}

impl Default for HubOptions {
    fn default() -> Self {
        Self {
            storage: "memory://".to_string(),
            encryption: Encryption::StoreDefault,
            redirect_reads: None,
            max_pack_bytes: PACK_MAX_BYTES,
            max_manifest_bytes: MANIFEST_MAX_BYTES,
            auth: Auth::open(),
            lifecycle: Lifecycle::default(),
            allowed_hosts: Vec::new(),
            body_stall: std::time::Duration::from_secs(30),
            max_index_bytes: DEFAULT_INDEX_BYTES,
            index_window: chunk_index::WINDOW,
            read_cache_bytes: DEFAULT_READ_CACHE_BYTES,
            long_poll_max: LONG_POLL_MAX,
            tls: false,
        }
    }
}

/// Who makes a request; recorded as `by` in tag records. The auth layer
/// inserts it (the token's subject or the basic-auth user) as a request
/// extension; requests without one are `anonymous`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal(pub String);

/// A hub: cheap to clone, all clones share one state.
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// The store, metered (every request counted in `metrics.store`).
    pub store: Arc<dyn ObjectStore>,
    /// Signs pack read URLs when `opts.redirect_reads` is set.
    pub presigner: Option<Presigner>,
    pub opts: HubOptions,
    pub description: String,
    pub chunks: chunk_index::ChunkIndex,
    /// Pack blocks read through for readers; `None` when disabled.
    pub blocks: Option<pack_blocks::PackBlocks>,
    pub tags: tags::TagStore,
    pub metrics: metrics::Metrics,
    pub uploads: Semaphore,
    pub json_views: Arc<Semaphore>,
    pub dav: routes::dav::DavState,
    pub web: web::WebState,
}

impl Hub {
    /// Opens the storage `opts.storage` names. Returns at once; the chunk
    /// index loads in a background task (`/readyz` reports when it is done).
    pub async fn open(opts: HubOptions) -> Result<Hub, HubError> {
        let storage::Opened { store, description, presigner } = storage::open(&opts.storage, &opts.encryption)?;
        if opts.redirect_reads.is_some() && presigner.is_none() {
            return Err(HubError::CannotRedirect(description));
        }
        Ok(Self::build(store, description, presigner, opts))
    }

    /// A hub over an existing store (tests use an in-memory one). Starts the
    /// chunk index load when called inside a tokio runtime, else on first use.
    pub fn from_store(store: Arc<dyn ObjectStore>, opts: HubOptions) -> Hub {
        let description = store.to_string();
        Self::build(store, description, None, opts)
    }

    /// A hub over an existing store whose reads `presigner` can sign (for
    /// `redirect_reads`); `store` and `presigner` must name the same objects.
    pub fn from_signed_store(store: Arc<dyn ObjectStore>, presigner: Presigner, opts: HubOptions) -> Hub {
        let description = store.to_string();
        Self::build(store, description, Some(presigner), opts)
    }

    fn build(store: Arc<dyn ObjectStore>, description: String, presigner: Option<Presigner>, opts: HubOptions) -> Hub {
        let metrics = metrics::Metrics::new();
        // Metered innermost, so the pack log's own writes are counted too.
        let store: Arc<dyn ObjectStore> = Arc::new(storage::MeteredStore::new(store, metrics.store.clone()));
        // Pack sizes seen on the way, so range reads need no HEAD.
        let sizes = Arc::new(chunk_index::log::PackSizes::default());
        let store: Arc<dyn ObjectStore> = Arc::new(chunk_index::log::SizedStore::new(store, sizes.clone()));
        let tags = tags::TagStore::new(store.clone());
        let chunks = chunk_index::ChunkIndex::new(
            store.clone(),
            tags.clone(),
            sizes,
            opts.max_index_bytes,
            opts.index_window,
            metrics.chunks_indexed.clone(),
            metrics.chunk_index_bytes.clone(),
        );
        let blocks = pack_blocks::PackBlocks::new(
            store.clone(),
            opts.read_cache_bytes,
            metrics.pack_block_hits.clone(),
            metrics.pack_blocks_loaded.clone(),
        );
        let dav_store = store.clone();
        let hub = Hub {
            inner: Arc::new(Inner {
                tags,
                store,
                presigner,
                description,
                chunks,
                blocks,
                metrics,
                uploads: Semaphore::new(CONCURRENT_UPLOADS),
                json_views: Arc::new(Semaphore::new(CONCURRENT_JSON_VIEWS)),
                dav: routes::dav::DavState::new(dav_store),
                web: web::WebState::new(&opts),
                opts,
            }),
        };
        hub.inner.chunks.start();
        if tokio::runtime::Handle::try_current().is_ok() {
            gc::spawn_schedule(&hub);
        }
        hub
    }

    /// The whole API: gRPC (by content type) and REST, for one port.
    pub fn router(&self) -> axum::Router {
        self.inner.chunks.start();
        let split = grpc::Split { rest: routes::build(self.clone()).0, grpc: grpc::router(self), hub: self.clone() };
        axum::Router::new().fallback_service(split)
    }

    /// Where the data lives, for the startup log line (never credentials).
    pub fn storage_description(&self) -> String {
        self.inner.description.clone()
    }
}
