//! gRPC beside REST, on the same port: `aetherfs.hub.v1.Hub` (the contract
//! is proto/aetherfs/hub/v1/hub.proto), the standard health service and
//! server reflection (v1 and v1alpha), so clients need no stubs of ours.
//!
//! Each method is a thin adapter: it authenticates and authorizes with
//! [`auth::admit`] (the REST middleware's own decision, from the
//! `authorization` metadata and the peer's address), converts the message,
//! and calls the function the REST handler calls. Errors are the REST
//! [`AppError`]s mapped to gRPC codes by [`status`]; the stable REST error
//! code rides along in the `aetherfs-error-code` metadata.
//!
//! Bounds: messages decode up to the largest pack plus [`DECODE_SLACK`]
//! (tonic refuses bigger ones with OUT_OF_RANGE before reading them); pack
//! reads stream pieces of at most [`PIECE_MAX`] bytes as the client takes
//! them; a tag watch holds one subscription to the tag's shared watcher.
//! Every call is counted per method and code (`aetherfs_hub_grpc_requests`).

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use aetherfs_format::api::{Expected, MissingChunksRequest};
use aetherfs_format::{Digest, Name, Tag};
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::{Code, Request, Response, Status};

use crate::auth::{self, Caller, Need, Permission};
use crate::error::AppError;
use crate::metrics::GrpcLabels;
use crate::routes::{chunks, datasets, manifests, packs};
use crate::storage::{self, get_bytes};
use crate::{Hub, error::StorageContext};

#[allow(clippy::unwrap_used, clippy::doc_markdown, missing_docs)]
pub(crate) mod pb {
    tonic::include_proto!("aetherfs.hub.v1");
}

use pb::hub_server::{Hub as HubApi, HubServer};

/// The encoded descriptors of hub.proto, for reflection.
const DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("hub_descriptor");
/// The full name of the hub's service, as health and reflection report it.
pub(crate) const SERVICE: &str = "aetherfs.hub.v1.Hub";
/// Room above the largest pack for the rest of an upload message.
const DECODE_SLACK: usize = 1 << 20;
/// Largest piece of a pack in one `PackData` message.
const PIECE_MAX: usize = 1 << 20;
/// How long one wait of a tag watch lasts before it waits again.
const WATCH_WAIT: Duration = Duration::from_secs(300);

/// The hub's gRPC services as one axum router (it answers only gRPC).
pub(crate) fn router(hub: &Hub) -> axum::Router {
    let (health, health_service) = tonic_health::server::health_reporter();
    // An uncontended lock of a reporter nobody else holds yet: ready at once.
    futures::executor::block_on(async {
        health.set_service_status(SERVICE, tonic_health::ServingStatus::Serving).await;
        health.set_service_status("", tonic_health::ServingStatus::Serving).await;
    });
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let limit = hub.inner.opts.max_pack_bytes.max(hub.inner.opts.max_manifest_bytes) + DECODE_SLACK;
    let api =
        HubServer::new(Grpc { hub: hub.clone() }).max_decoding_message_size(limit).max_encoding_message_size(limit);
    let mut routes = tonic::service::Routes::new(api).add_service(health_service);
    match (reflection().build_v1(), reflection().build_v1alpha()) {
        (Ok(v1), Ok(v1alpha)) => routes = routes.add_service(v1).add_service(v1alpha),
        (Err(e), _) | (_, Err(e)) => tracing::error!(error = %e, "gRPC reflection is off: bad descriptors"),
    }
    routes.prepare().into_axum_router()
}

/// Whether a request is gRPC (`application/grpc`, `application/grpc+proto`, …).
pub(crate) fn is_grpc<B>(req: &axum::http::Request<B>) -> bool {
    req.headers().get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v == "application/grpc" || v.starts_with("application/grpc+") || v.starts_with("application/grpc;")
    })
}

/// An [`AppError`] as a gRPC status. A compare-and-swap conflict (409) is
/// ABORTED: the client lost a race and should re-read, then retry.
pub(crate) fn status(e: AppError) -> Status {
    let code = match e.status {
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::InvalidArgument,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::CONFLICT => Code::Aborted,
        StatusCode::UNPROCESSABLE_ENTITY => Code::FailedPrecondition,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS | StatusCode::INSUFFICIENT_STORAGE => {
            Code::ResourceExhausted
        }
        StatusCode::RANGE_NOT_SATISFIABLE => Code::OutOfRange,
        StatusCode::REQUEST_TIMEOUT => Code::DeadlineExceeded,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        _ => Code::Internal,
    };
    let mut s = Status::new(code, e.message);
    if let Ok(v) = e.code.parse() {
        s.metadata_mut().insert("aetherfs-error-code", v);
    }
    s
}

fn parse_name(s: &str) -> Result<Name, Status> {
    datasets::parse(s, "invalid_name").map_err(status)
}

fn parse_tag(s: &str) -> Result<Tag, Status> {
    datasets::parse(s, "invalid_tag").map_err(status)
}

fn parse_digest(s: &str) -> Result<Digest, Status> {
    datasets::parse(s, "invalid_digest").map_err(status)
}

fn expected(e: Option<pb::Expected>) -> Result<Option<Expected>, Status> {
    match e.and_then(|e| e.state) {
        None | Some(pb::expected::State::Absent(false)) => Ok(None),
        Some(pb::expected::State::Absent(true)) => Ok(Some(Expected::Absent)),
        Some(pb::expected::State::Digest(d)) => Ok(Some(Expected::Digest(parse_digest(&d)?))),
    }
}

fn opt(d: Option<Digest>) -> String {
    d.map(|d| d.to_string()).unwrap_or_default()
}

fn record(r: aetherfs_format::api::TagRecord) -> pb::TagRecord {
    pb::TagRecord {
        name: r.name.to_string(),
        tag: r.tag.to_string(),
        digest: opt(r.digest),
        previous: opt(r.previous),
        by: r.by,
        at: r.at,
        seq: r.seq,
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

struct Grpc {
    hub: Hub,
}

impl Grpc {
    /// Authenticates the call and checks `need`, as the REST middleware does.
    async fn admit<T>(&self, req: &Request<T>, need: Need, method: &str) -> Result<Option<Caller>, Status> {
        let addr = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let headers = req.metadata().clone().into_headers();
        auth::admit(&self.hub, &need, &headers, addr, method).await.map_err(status)
    }

    /// [`Self::admit`] for a permission on one dataset (the raw name, as REST checks it).
    async fn on<T>(&self, req: &Request<T>, name: &str, p: Permission, method: &str) -> Result<Option<Caller>, Status> {
        self.admit(req, Need::Dataset(name.to_string(), p), method).await
    }

    /// Counts and times a call by method and code.
    async fn track<T>(&self, method: &'static str, f: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
        let start = Instant::now();
        let res = f.await;
        let code = match &res {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        };
        let m = &self.hub.inner.metrics;
        m.grpc_requests.get_or_create(&GrpcLabels { method: method.to_string(), code: code_label(code) }).inc();
        m.grpc_duration
            .get_or_create(&crate::metrics::GrpcMethod { method: method.to_string() })
            .observe(start.elapsed().as_secs_f64());
        res
    }
}

fn by(caller: &Option<Caller>) -> String {
    caller.as_ref().and_then(Caller::principal).map_or_else(|| "anonymous".to_string(), |p| p.0)
}

/// A code as its canonical upper-case name (a fixed set of labels).
fn code_label(c: Code) -> String {
    format!("{c:?}").chars().enumerate().fold(String::new(), |mut out, (i, ch)| {
        if ch.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
        out
    })
}

#[tonic::async_trait]
impl HubApi for Grpc {
    async fn list_datasets(
        &self,
        req: Request<pb::ListDatasetsRequest>,
    ) -> Result<Response<pb::ListDatasetsResponse>, Status> {
        self.track("ListDatasets", async {
            let caller = self.admit(&req, Need::Listing, "ListDatasets").await?;
            let list = datasets::list_datasets(&self.hub, caller).await.map_err(status)?;
            let datasets = list
                .datasets
                .into_iter()
                .map(|d| pb::DatasetSummary {
                    name: d.name.to_string(),
                    tags: d.tags.iter().map(ToString::to_string).collect(),
                })
                .collect();
            Ok(Response::new(pb::ListDatasetsResponse { datasets }))
        })
        .await
    }

    async fn list_tags(&self, req: Request<pb::ListTagsRequest>) -> Result<Response<pb::ListTagsResponse>, Status> {
        self.track("ListTags", async {
            self.on(&req, &req.get_ref().name, Permission::Read, "ListTags").await?;
            let name = parse_name(&req.get_ref().name)?;
            let tags = datasets::tags_of(&self.hub, &name).await.map_err(status)?;
            Ok(Response::new(pb::ListTagsResponse {
                name: name.to_string(),
                tags: tags.into_iter().map(record).collect(),
            }))
        })
        .await
    }

    async fn get_tag(&self, req: Request<pb::GetTagRequest>) -> Result<Response<pb::TagRecord>, Status> {
        self.track("GetTag", async {
            let m = req.get_ref();
            self.on(&req, &m.name, Permission::Read, "GetTag").await?;
            let (name, tag) = (parse_name(&m.name)?, parse_tag(&m.tag)?);
            let r = datasets::current_tag(&self.hub, &name, &tag).await.map_err(status)?;
            Ok(Response::new(record(r)))
        })
        .await
    }

    async fn set_tag(&self, req: Request<pb::SetTagRequest>) -> Result<Response<pb::TagRecord>, Status> {
        self.track("SetTag", async {
            let m = req.get_ref();
            let caller = self.on(&req, &m.name, Permission::Write, "SetTag").await?;
            let (name, tag) = (parse_name(&m.name)?, parse_tag(&m.tag)?);
            let (digest, exp) = (parse_digest(&m.digest)?, expected(m.expected.clone())?);
            let r = datasets::move_tag(&self.hub, &name, &tag, digest, exp, &by(&caller)).await.map_err(status)?;
            Ok(Response::new(record(r)))
        })
        .await
    }

    async fn delete_tag(&self, req: Request<pb::DeleteTagRequest>) -> Result<Response<pb::TagRecord>, Status> {
        self.track("DeleteTag", async {
            let m = req.get_ref();
            let caller = self.on(&req, &m.name, Permission::Admin, "DeleteTag").await?;
            let (name, tag) = (parse_name(&m.name)?, parse_tag(&m.tag)?);
            let exp = expected(m.expected.clone())?;
            let r = datasets::remove_tag(&self.hub, &name, &tag, exp, &by(&caller)).await.map_err(status)?;
            Ok(Response::new(record(r)))
        })
        .await
    }

    async fn tag_history(
        &self,
        req: Request<pb::TagHistoryRequest>,
    ) -> Result<Response<pb::TagHistoryResponse>, Status> {
        self.track("TagHistory", async {
            let m = req.get_ref();
            self.on(&req, &m.name, Permission::Read, "TagHistory").await?;
            let (name, tag) = (parse_name(&m.name)?, parse_tag(&m.tag)?);
            let records = datasets::tag_history(&self.hub, &name, &tag).await.map_err(status)?;
            Ok(Response::new(pb::TagHistoryResponse {
                name: name.to_string(),
                tag: tag.to_string(),
                records: records.into_iter().map(record).collect(),
            }))
        })
        .await
    }

    type WatchTagStream = BoxStream<pb::TagRecord>;

    async fn watch_tag(&self, req: Request<pb::WatchTagRequest>) -> Result<Response<Self::WatchTagStream>, Status> {
        self.track("WatchTag", async {
            let m = req.get_ref();
            self.on(&req, &m.name, Permission::Read, "WatchTag").await?;
            let (name, tag) = (parse_name(&m.name)?, parse_tag(&m.tag)?);
            let since = expected(m.since.clone())?;
            Ok(Response::new(watch(self.hub.clone(), name, tag, since)))
        })
        .await
    }

    async fn list_versions(
        &self,
        req: Request<pb::ListVersionsRequest>,
    ) -> Result<Response<pb::ListVersionsResponse>, Status> {
        self.track("ListVersions", async {
            self.on(&req, &req.get_ref().name, Permission::Read, "ListVersions").await?;
            let name = parse_name(&req.get_ref().name)?;
            let versions = datasets::versions_of(&self.hub, &name).await.map_err(status)?;
            let versions = versions
                .into_iter()
                .map(|v| pb::VersionEntry { digest: v.digest.to_string(), size: v.size, stored_at: v.stored_at })
                .collect();
            Ok(Response::new(pb::ListVersionsResponse { name: name.to_string(), versions }))
        })
        .await
    }

    async fn get_manifest(&self, req: Request<pb::GetManifestRequest>) -> Result<Response<pb::Manifest>, Status> {
        self.track("GetManifest", async {
            let m = req.get_ref();
            self.on(&req, &m.name, Permission::Read, "GetManifest").await?;
            let (name, digest) = (parse_name(&m.name)?, parse_digest(&m.digest)?);
            let data = get_bytes(&*self.hub.inner.store, &storage::manifest(&name, &digest))
                .await
                .ctx("reading a manifest")
                .map_err(status)?
                .ok_or_else(|| status(manifests::manifest_not_found(&name, &digest)))?;
            Ok(Response::new(pb::Manifest { digest: digest.to_string(), data }))
        })
        .await
    }

    async fn put_manifest(&self, req: Request<pb::PutManifestRequest>) -> Result<Response<pb::ManifestStored>, Status> {
        self.track("PutManifest", async {
            let caller = self.on(&req, &req.get_ref().name.clone(), Permission::Write, "PutManifest").await?;
            let m = req.into_inner();
            let (name, digest) = (parse_name(&m.name)?, parse_digest(&m.digest)?);
            // The upload slot was taken before the message was read (`Split`).
            let s = manifests::publish(&self.hub, name, digest, m.data, caller).await.map_err(status)?;
            let st = s.stats;
            Ok(Response::new(pb::ManifestStored {
                name: s.name.to_string(),
                digest: s.digest.to_string(),
                stats: Some(pb::ManifestStats {
                    files: st.files,
                    dirs: st.dirs,
                    symlinks: st.symlinks,
                    bytes: st.bytes,
                    chunks: st.chunks,
                }),
                created: s.created,
            }))
        })
        .await
    }

    async fn delete_version(
        &self,
        req: Request<pb::DeleteVersionRequest>,
    ) -> Result<Response<pb::DeleteVersionResponse>, Status> {
        self.track("DeleteVersion", async {
            let m = req.get_ref();
            let caller = self.on(&req, &m.name, Permission::Admin, "DeleteVersion").await?;
            let (name, digest) = (parse_name(&m.name)?, parse_digest(&m.digest)?);
            datasets::remove_version(&self.hub, &name, digest, &by(&caller)).await.map_err(status)?;
            Ok(Response::new(pb::DeleteVersionResponse {}))
        })
        .await
    }

    async fn missing_chunks(
        &self,
        req: Request<pb::MissingChunksRequest>,
    ) -> Result<Response<pb::MissingChunksResponse>, Status> {
        self.track("MissingChunks", async {
            let m = req.get_ref();
            let caller = self.on(&req, &m.name, Permission::Write, "MissingChunks").await?;
            let name = parse_name(&m.name)?;
            // The REST bound on one query applies before any digest is parsed.
            if m.digests.len() > aetherfs_format::api::MISSING_QUERY_MAX {
                return Err(status(AppError::too_large(format!(
                    "{} digests in one query; at most {} are allowed",
                    m.digests.len(),
                    aetherfs_format::api::MISSING_QUERY_MAX
                ))));
            }
            let digests = m.digests.iter().map(|d| parse_digest(d)).collect::<Result<Vec<_>, _>>()?;
            let r = chunks::query(&self.hub, &name, MissingChunksRequest { digests }, caller.as_ref())
                .await
                .map_err(status)?;
            Ok(Response::new(pb::MissingChunksResponse {
                missing: r.missing.iter().map(ToString::to_string).collect(),
                present: r
                    .present
                    .into_iter()
                    .map(|p| pb::PresentChunk {
                        digest: p.digest.to_string(),
                        len: p.len,
                        pack: p.location.pack.to_string(),
                        offset: p.location.offset,
                        stored_len: p.location.stored_len,
                    })
                    .collect(),
            }))
        })
        .await
    }

    async fn upload_pack(&self, req: Request<pb::UploadPackRequest>) -> Result<Response<pb::PackStored>, Status> {
        self.track("UploadPack", async {
            self.on(&req, &req.get_ref().name.clone(), Permission::Write, "UploadPack").await?;
            let m = req.into_inner();
            let (name, digest) = (parse_name(&m.name)?, parse_digest(&m.digest)?);
            // The upload slot was taken before the message was read (`Split`).
            let s = packs::store_pack(&self.hub, name, digest, m.data).await.map_err(status)?;
            Ok(Response::new(pb::PackStored {
                pack: s.pack.to_string(),
                chunks: s.chunks,
                bytes: s.bytes,
                created: s.created,
            }))
        })
        .await
    }

    type ReadPackStream = BoxStream<pb::PackData>;

    async fn read_pack(&self, req: Request<pb::ReadPackRequest>) -> Result<Response<Self::ReadPackStream>, Status> {
        self.track("ReadPack", async {
            let m = req.get_ref();
            self.on(&req, &m.name, Permission::Read, "ReadPack").await?;
            let (name, digest) = (parse_name(&m.name)?, parse_digest(&m.digest)?);
            let (start, bytes) =
                packs::read_range(&self.hub, &name, digest, m.offset, m.length).await.map_err(status)?;
            let pieces = bytes
                .map_err(status)
                .map_ok(|b| {
                    let n = b.len().div_ceil(PIECE_MAX);
                    futures::stream::iter(
                        (0..n).map(move |i| Ok(b.slice(i * PIECE_MAX..((i + 1) * PIECE_MAX).min(b.len())))),
                    )
                })
                .try_flatten()
                .scan(start, |at, piece: Result<bytes::Bytes, Status>| {
                    let out = piece.map(|data| {
                        let offset = *at;
                        *at += data.len() as u64;
                        pb::PackData { offset, data }
                    });
                    futures::future::ready(Some(out))
                });
            Ok(Response::new(Box::pin(pieces) as Self::ReadPackStream))
        })
        .await
    }
}

/// A tag's state now (unless it is still `since`), then each change: one
/// subscription to the tag's shared watcher (tags.rs), ended by the client
/// going away or a storage failure (UNAVAILABLE).
fn watch(hub: Hub, name: Name, tag: Tag, since: Option<Expected>) -> BoxStream<pb::TagRecord> {
    let state = |r: &Option<aetherfs_format::api::TagRecord>| {
        r.as_ref().and_then(|r| r.digest).map_or(Expected::Absent, Expected::Digest)
    };
    let stream = futures::stream::unfold(Some(since), move |since| {
        let (hub, name, tag) = (hub.clone(), name.clone(), tag.clone());
        async move {
            let mut since = since?;
            loop {
                let read = match since {
                    None => hub.inner.tags.current(&name, &tag).await,
                    Some(s) => hub.inner.tags.wait(&name, &tag, s, WATCH_WAIT).await,
                };
                let rec = match read {
                    Ok(r) => r,
                    Err(e) => return Some((Err(status(e)), None)),
                };
                let now = state(&rec);
                if since == Some(now) {
                    continue;
                }
                since = Some(now);
                let out = rec.map(record).unwrap_or_else(|| pb::TagRecord {
                    name: name.to_string(),
                    tag: tag.to_string(),
                    ..Default::default()
                });
                return Some((Ok(out), Some(since)));
            }
        }
    });
    Box::pin(stream)
}

/// Sends gRPC to the tonic services and everything else to the REST router.
#[derive(Clone)]
pub(crate) struct Split {
    pub rest: axum::Router,
    pub grpc: axum::Router,
    pub hub: Hub,
}

/// The methods whose one message is a whole pack or manifest.
const UPLOADS: [&str; 2] = ["/aetherfs.hub.v1.Hub/UploadPack", "/aetherfs.hub.v1.Hub/PutManifest"];

impl tower::Service<axum::extract::Request> for Split {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        use tower::ServiceExt;
        if !is_grpc(&req) {
            return Box::pin(self.rest.clone().oneshot(req));
        }
        let grpc = self.grpc.clone();
        if !UPLOADS.contains(&req.uri().path()) {
            return Box::pin(grpc.oneshot(req));
        }
        // tonic decodes a message whole before the method runs, so an upload
        // takes its slot first (as REST does before reading a body): the
        // uploads held in memory stay bounded, and a body that stalls longer
        // than the body timeout is cut, freeing the slot.
        let hub = self.hub.clone();
        Box::pin(async move {
            let Ok(_slot) = hub.inner.uploads.acquire().await else {
                return Ok(status(AppError::internal("waiting to upload", "the upload slots are closed")).into_http());
            };
            let stall = hub.inner.opts.body_stall;
            let (parts, body) = req.into_parts();
            let body = axum::body::Body::from_stream(stall_bounded(body.into_data_stream(), stall));
            grpc.oneshot(axum::extract::Request::from_parts(parts, body)).await
        })
    }
}

/// `data`, ended with an error when the next piece takes longer than `stall`.
fn stall_bounded(
    data: axum::body::BodyDataStream,
    stall: std::time::Duration,
) -> impl futures::Stream<Item = Result<bytes::Bytes, axum::Error>> {
    futures::stream::unfold(Some(data), move |state| async move {
        let mut data = state?;
        match tokio::time::timeout(stall, data.next()).await {
            Ok(Some(Ok(piece))) => Some((Ok(piece), Some(data))),
            Ok(Some(Err(e))) => Some((Err(e), None)),
            Ok(None) => None,
            Err(_) => {
                let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "the upload's body stalled");
                Some((Err(axum::Error::new(e)), None))
            }
        }
    })
}
