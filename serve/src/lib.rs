//! The one connection loop of every AetherFS HTTP server (the hub, WebDAV,
//! the agent's admin endpoint), plain HTTP or TLS: every connection is
//! bounded in time and in number, so slow or idle clients cannot hold a
//! server's file descriptors.
//!
//! - At most `max_connections` at once: past that, the loop stops accepting
//!   until one closes (the kernel's backlog holds the rest).
//! - A TLS handshake must finish within [`HANDSHAKE_TIMEOUT`], and each
//!   request head (the first, and each next one on a kept-alive connection)
//!   within `header_read_timeout`: a half-sent request or an idle connection
//!   is closed.
//! - Each request carries the peer address (`ConnectInfo`), for the hub's
//!   per-address limit on failed sign-ins.
//! - HTTP/1.1 and HTTP/2 on one port (the hub's gRPC rides on HTTP/2): on
//!   plain TCP a client that opens with the HTTP/2 preface (h2c, prior
//!   knowledge) gets HTTP/2, anyone else HTTP/1.1; under TLS the same, after
//!   ALPN offered `h2` and `http/1.1`. HTTP/2 connections are bounded too:
//!   streams at once per connection, frame and header-list sizes, and a
//!   keepalive ping that closes connections whose peer stopped answering.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// A TLS handshake that takes longer is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How connections are bounded.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// A request head that takes longer to arrive is dropped (slow or idle clients).
    pub header_read_timeout: Duration,
    pub http2: Http2Limits,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self { max_connections: 4096, header_read_timeout: Duration::from_secs(30), http2: Http2Limits::default() }
    }
}

/// How each HTTP/2 connection is bounded.
#[derive(Clone, Copy, Debug)]
pub struct Http2Limits {
    /// Requests (streams) open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Largest frame payload the peer may send (16 KiB … 16 MiB).
    pub max_frame_size: u32,
    /// Largest request head, decoded (HPACK) bytes.
    pub max_header_list_size: u32,
    /// A ping goes out after this long without frames from the peer…
    pub keep_alive_interval: Duration,
    /// …and the connection is closed if the ping is not answered within this.
    pub keep_alive_timeout: Duration,
}

impl Default for Http2Limits {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 128,
            max_frame_size: 1 << 20,
            max_header_list_size: 64 << 10,
            keep_alive_interval: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(20),
        }
    }
}

/// The HTTP/1.1 + HTTP/2 connection builder with `limits`.
fn builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let h2 = &limits.http2;
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(h2.max_concurrent_streams)
        .max_frame_size(h2.max_frame_size)
        .max_header_list_size(h2.max_header_list_size)
        .keep_alive_interval(h2.keep_alive_interval)
        .keep_alive_timeout(h2.keep_alive_timeout);
    b
}

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown`
/// resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let acceptor = tls;
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // The peer address rides on each request (no per-connection router rebuild).
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                req
            },
        ));
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let http = builder(&limits);
            let served = match acceptor {
                None => {
                    // Telling HTTP/1 from HTTP/2 waits for the first bytes with no
                    // timeout of its own: a connection that sends nothing within the
                    // header timeout is closed here.
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(limits.header_read_timeout, tcp.peek(&mut first)).await {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => {
                            tracing::debug!(%peer, "no request within the header timeout");
                            return;
                        }
                    }
                    watcher.watch(http.serve_connection(TokioIo::new(tcp), service)).await
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
