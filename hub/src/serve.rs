//! The hub's connection loop: [`aetherfs_serve`] with the hub's TLS.

use std::future::Future;

pub use aetherfs_serve::{ConnectionLimits, HANDSHAKE_TIMEOUT};
use axum::Router;
use tokio::net::TcpListener;

use crate::tls::Tls;

/// Serves `router` on `listener` (over TLS with `tls`, whose certificate
/// reloads apply to new connections) until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<&Tls>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    aetherfs_serve::serve(listener, router, tls.map(Tls::acceptor), limits, shutdown).await
}
