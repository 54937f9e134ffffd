//! The AetherFS hub client: a typed client of the hub's REST API, and the
//! push and pull engines built on it. Both engines report progress as events
//! so the CLI can draw bars and tests can count. [`auth`] holds the
//! credentials every request carries.

pub mod auth;
mod client;
mod error;
pub mod fetch;
mod hashing;
mod pull;
mod push;
pub mod stat_cache;
mod tls;
pub mod walk;

pub use client::{HubClient, hub_key};
pub use error::ClientError;
pub use pull::{PullEvent, PullOptions, PullReport, pull, pull_into};
pub use push::{Progress, PushEvent, PushOptions, PushReport, push};
