//! The NFS server's door: a TCP listener in front of nfsserve that admits
//! only clients whose address is on the allowlist, and at most so many at
//! once.
//!
//! nfsserve accepts on its own listener and has no hook for refusing a
//! connection, so when a filter is needed nfsserve listens on an ephemeral
//! loopback port and this gate relays admitted connections to it. When the
//! server is bound to loopback and the allowlist holds all of loopback (the
//! default), nothing could be refused and nfsserve takes connections itself,
//! with no relay in the data path.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aetherfs_util::Cidr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Who may connect to an NFS server.
#[derive(Clone, Debug)]
pub struct NfsAccess {
    /// Client addresses allowed; default: loopback only.
    pub allow: Vec<Cidr>,
    /// Connections at once through the gate (each NFS client keeps one).
    pub max_connections: usize,
}

impl Default for NfsAccess {
    fn default() -> Self {
        Self { allow: Cidr::LOOPBACK.to_vec(), max_connections: 1024 }
    }
}

impl NfsAccess {
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|r| r.contains(ip))
    }

    /// Whether a server bound to `addr` needs the gate: a client could
    /// connect from an address the allowlist refuses.
    pub fn needs_gate(&self, addr: SocketAddr) -> bool {
        let covered = |r: &Cidr| self.allow.iter().any(|a| a.covers(r));
        // nfsserve listens on IPv4 only: with every IPv4 address allowed,
        // nothing could be refused wherever it is bound.
        if covered(&Cidr::ANY_V4) {
            return false;
        }
        !(addr.ip().is_loopback() && Cidr::LOOPBACK.iter().all(covered))
    }
}

/// Connections the gate turned away, for logs and tests.
#[derive(Debug, Default)]
pub struct GateCounters {
    pub refused: AtomicU64,
    pub relayed: AtomicU64,
}

/// Accepts on `listener` forever, relaying admitted clients to `backend`.
pub(crate) async fn run(listener: TcpListener, backend: SocketAddr, access: NfsAccess, counters: Arc<GateCounters>) {
    let slots = Arc::new(Semaphore::new(access.max_connections.max(1)));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (client, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "NFS accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !access.allows(peer.ip()) {
            // Closed at once; counted, and logged at debug (a scanner must not fill the log).
            counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "NFS client address not allowed; connection closed");
            continue;
        }
        counters.relayed.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = relay(client, backend).await {
                tracing::debug!(%peer, error = %e, "NFS connection ended");
            }
        });
    }
}

async fn relay(mut client: TcpStream, backend: SocketAddr) -> std::io::Result<()> {
    let mut server = TcpStream::connect(backend).await?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut client, &mut server).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect(s)
    }

    #[test]
    fn the_gate_is_needed_only_when_something_could_be_refused() {
        let default = NfsAccess::default();
        assert!(!default.needs_gate(sa("127.0.0.1:2049")));
        assert!(default.needs_gate(sa("0.0.0.0:2049")));
        assert!(default.needs_gate(sa("10.0.0.5:2049")));
        let narrow = NfsAccess { allow: vec!["127.0.0.1/32".parse().expect("cidr")], ..Default::default() };
        assert!(narrow.needs_gate(sa("127.0.0.1:2049")), "127.0.0.2 must be refused");
        assert!(default.allows("127.9.9.9".parse().expect("ip")) && !default.allows("10.0.0.1".parse().expect("ip")));
        let everyone = NfsAccess { allow: vec!["0.0.0.0/0".parse().expect("cidr")], ..Default::default() };
        assert!(!everyone.needs_gate(sa("0.0.0.0:2049")), "nothing to refuse, so no relay");
    }
}
