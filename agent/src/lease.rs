//! Reader leases: the agent tells the hub, per dataset, which versions it
//! serves (the current one and older ones open files still read), and
//! renews that every third of the lease time the hub announces. The hub's
//! garbage collection never removes a leased version, and `gc --dry-run`
//! names the readers. Each renewal also carries what the mounts' readers
//! did with each version (bytes read and fetched), which `aetherfs usage`
//! shows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use aetherfs_format::api::{LEASE_VERSIONS_MAX, VersionServed};
use aetherfs_format::{Digest, Name};
use aetherfs_hub_client::HubClient;

use crate::admin::Admin;

/// Renewal interval until the hub has said how long its leases last.
const FIRST_INTERVAL: Duration = Duration::from_secs(60);
/// Never renew more often than this, whatever the hub says.
const MIN_INTERVAL: Duration = Duration::from_secs(10);
/// How often the served versions are checked for a change.
const TICK: Duration = Duration::from_secs(1);

/// What to lease now: every version each dataset's mounts hold.
fn held(admin: &Admin) -> BTreeMap<Name, BTreeSet<Digest>> {
    let mut by: BTreeMap<Name, BTreeSet<Digest>> = BTreeMap::new();
    for m in admin.mounts() {
        let versions = by.entry(m.name().clone()).or_default();
        versions.insert(m.digest());
        versions.extend(m.fs().held_digests());
    }
    by
}

/// What each dataset's mounts did with the versions they served (the last
/// few per mount), summed over mounts of the same dataset.
fn served(admin: &Admin) -> BTreeMap<Name, Vec<VersionServed>> {
    let mut by: BTreeMap<Name, BTreeMap<Digest, VersionServed>> = BTreeMap::new();
    for m in admin.mounts() {
        let versions = by.entry(m.name().clone()).or_default();
        for r in m.fs().stats(0) {
            let e = versions.entry(r.digest).or_insert(VersionServed {
                version: r.digest,
                bytes_read: 0,
                fetched_bytes: 0,
            });
            e.bytes_read += r.bytes_read;
            e.fetched_bytes += r.fetched_bytes + r.readahead_bytes;
        }
    }
    by.into_iter().map(|(n, v)| (n, v.into_values().take(LEASE_VERSIONS_MAX).collect())).collect()
}

/// Renews the leases for ever: at once when what is served changes (a new
/// mount, a switch), else every third of the lease time. A failure is
/// logged once per streak and retried at the next tick: leases are a safety
/// net, not a dependency.
pub async fn heartbeat(client: HubClient, admin: Arc<Admin>, reader: String) {
    let mut every = FIRST_INTERVAL;
    let mut failing = false;
    let mut sent: BTreeMap<Name, BTreeSet<Digest>> = BTreeMap::new();
    let mut last = tokio::time::Instant::now();
    loop {
        let now = held(&admin);
        let due = last.elapsed() >= if failing { MIN_INTERVAL } else { every };
        if now != sent || due {
            let mut ok = true;
            let stats = served(&admin);
            for (name, versions) in &now {
                let versions: Vec<Digest> = versions.iter().copied().collect();
                let served = stats.get(name).map_or(&[][..], Vec::as_slice);
                match client.put_lease(name, &reader, &versions, served).await {
                    Ok(lease) => every = (Duration::from_secs(lease.lease_secs) / 3).max(MIN_INTERVAL),
                    Err(e) => {
                        if !failing {
                            eprintln!(
                                "aetherfs agent: cannot renew the lease on {name}: {}",
                                aetherfs_util::one_line(&e)
                            );
                        }
                        ok = false;
                    }
                }
            }
            if ok && failing {
                eprintln!("aetherfs agent: leases renewed again");
            }
            failing = !ok;
            sent = now;
            last = tokio::time::Instant::now();
        }
        tokio::time::sleep(TICK).await;
    }
}
