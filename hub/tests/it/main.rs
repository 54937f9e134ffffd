//! The hub's HTTP API in process, in one test binary: `api` (datasets,
//! tags, manifests, packs, chunks, storage backends) and `auth` (OIDC, basic
//! auth, access rules, TLS), over the shared `harness`.

#![allow(clippy::unwrap_used)]

mod api;
mod auth;
mod gc;
mod harness;
mod hostile;
mod index;
mod stores;
mod web_scale;
