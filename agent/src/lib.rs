//! The AetherFS sidecar agent as a library.
pub mod config;
pub mod serving;
pub mod source;
pub mod testing;
