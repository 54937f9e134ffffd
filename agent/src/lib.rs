//! The AetherFS sidecar agent as a library: everything a program needs to
//! serve datasets from a hub, which the `aetherfs` binary only wires to its
//! command line.
//!
//! - [`source`]: [`source::HubSource`], the chunk source mounts read through:
//!   memory tier, then the disk cache, then ranged pack reads from the hub.
//! - [`mount`]: [`mount::Mount`], one served dataset, its front ends and its
//!   version switch ([`mount::Mount::switch_to`] does every step).
//! - [`follow`]: following a tag (long-poll → prefetch → switch) and the one
//!   [`follow::Backoff`] every retry uses.
//! - [`frontends`]: starting WebDAV and NFSv3 servers for a mount.
//! - [`materialize`]: materialize mode, versions written as plain files
//!   behind an atomically replaced `current` symlink.
//! - [`on_switch`]: the hook run after each switch.
//! - [`lease`]: reader leases, renewed on the hub for the versions served.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`, `/v1/mounts`.
//! - [`config`]: the agent's configuration file.
//! - [`testing`]: fakes of the hub below the source, for tests.
//! - [`daemon`]: the whole sidecar ([`daemon::run`]) and the one-mount setup
//!   of `mount`/`serve`/`demo` ([`daemon::open_one`]).

pub mod admin;
pub mod config;
pub mod daemon;
pub mod follow;
pub mod frontends;
pub mod hub_gate;
pub mod lease;
pub mod materialize;
pub mod mount;
pub mod on_switch;
pub mod source;
pub mod testing;
