//! End-to-end tests through the real `aetherfs` binary and real peers
//! (sqlite3, diff, moto's S3 server, the test OpenID provider).

#![allow(clippy::unwrap_used)]

mod harness;

mod auth;
mod bad_input;
mod concurrency;
mod dedup;
mod digest;
mod front_access;
mod gc;
mod grpc;
mod hub_dav;
mod integrity;
mod login;
mod materialize;
mod mounts;
mod pull_semantics;
mod replicas;
mod roundtrip;
mod schemathesis;
mod sidecar;
mod stat_cache;
mod stores;
mod tools;
mod web;
