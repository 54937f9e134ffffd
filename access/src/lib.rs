//! Who may use an AetherFS server: the pieces of authentication that the hub
//! and the agent's front ends (WebDAV, the admin endpoint) share.
//!
//! - [`UsersFile`]: basic auth from a file of argon2id hashes (written by
//!   `aetherfs hub passwd`), re-read when it changes, with a [`Throttle`]
//!   that slows password guessing per user and per client address.
//! - [`TokenFile`]: one bearer token in a file (a Kubernetes Secret), read
//!   again at most once a second so a rotated token works without a restart.
//! - [`Gate`]: what a front end asks before it serves a request, with
//!   [`require`], the axum middleware that asks it. [`LocalGate`] is the
//!   gate of the two files above; the agent adds one that asks the hub.

mod gate;
mod throttle;
mod token;
mod users;

use std::path::PathBuf;

pub use gate::{Admitted, Gate, LocalGate, Refused, require, split_authorization};
pub use throttle::{FailureLimits, TRUSTED_FOR, Throttle};
pub use token::TokenFile;
pub use users::{BasicError, BasicUser, UsersError, UsersFile, basic_authorization, hash_password, set_user};

/// Why a users or token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid users file {}: {source}", path.display())]
    Users {
        path: PathBuf,
        #[source]
        source: UsersError,
    },
    #[error("invalid user name {0:?}: no ':', spaces or control characters")]
    UserName(String),
    #[error("invalid group {0:?}: no ',' or spaces")]
    Group(String),
    #[error("cannot hash the password: {0}")]
    Hash(#[source] argon2::password_hash::Error),
    #[error("token file {} is empty", .0.display())]
    EmptyToken(PathBuf),
}
