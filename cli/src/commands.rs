//! One module per subcommand.

mod agent;
mod agent_stats;
mod demo;
mod diff;
mod digest;
mod du;
mod gc;
mod hub;
mod inspect;
mod login;
mod ls;
mod mount;
mod pull;
mod push;
mod rm;
mod serve;
mod tag;
mod usage;

use aetherfs_format::Reference;
use aetherfs_hub_client::{ClientError, HubClient, hub_key};
use anyhow::{Context, Result};

use crate::cli::{Cli, Command, GlobalArgs};
use aetherfs_agent::config::AuthConfig;

pub async fn run(cli: Cli) -> Result<()> {
    let g = cli.global;
    let result = match cli.command {
        Command::Hub(a) => hub::run(a).await,
        Command::Push(a) => push::run(&g, a).await,
        Command::Pull(a) => pull::run(&g, a).await,
        Command::Tag(a) => tag::run(&g, a).await,
        Command::Rm(a) => rm::run(&g, a).await,
        Command::Gc(a) => gc::run(&g, a).await,
        Command::Ls(a) => ls::run(&g, a).await,
        Command::Inspect(a) => inspect::run(&g, a).await,
        Command::Diff(a) => diff::run(&g, a).await,
        Command::Du(a) => du::run(&g, a).await,
        Command::AgentStats(a) => agent_stats::run(&g, a).await,
        Command::Usage(a) => usage::run(&g, a).await,
        Command::Digest(a) => digest::run(&g, a),
        Command::Mount(a) => mount::run(&g, a).await,
        Command::Serve(a) => serve::run(&g, a).await,
        Command::Demo(a) => demo::run(a).await,
        Command::Agent(a) => agent::run(&g, a).await,
        Command::Login(a) => login::login(&g, a).await,
        Command::Logout(a) => login::logout(&g, a).await,
    };
    result.map_err(auth_hint)
}

/// A 401 from the hub says what to do about it.
fn auth_hint(e: anyhow::Error) -> anyhow::Error {
    let unauthorized = e.chain().any(|c| matches!(c.downcast_ref(), Some(ClientError::Api { status: 401, .. })));
    if unauthorized {
        e.context("the hub needs valid credentials (`aetherfs login`, a token or client credentials: see docs/auth-clients.md)")
    } else {
        e
    }
}

/// The hub used when neither `--hub`, `AETHERFS_HUB` nor a config names one.
pub(crate) const DEFAULT_HUB: &str = "http://127.0.0.1:7070";

/// The hub client of every command that talks to the hub: the hub from
/// `--hub`/`AETHERFS_HUB`, the CA file and the credentials chosen by
/// [`crate::auth::choose`].
pub(crate) fn client(g: &GlobalArgs) -> Result<HubClient> {
    client_for(g, g.hub.as_deref().unwrap_or(DEFAULT_HUB), &AuthConfig::default())
}

/// [`client`] for a given hub, with an agent config's `[auth]` beneath the
/// flags and the environment.
pub(crate) fn client_for(g: &GlobalArgs, hub: &str, config: &AuthConfig) -> Result<HubClient> {
    let mut client = HubClient::new(hub)?;
    let ca_file = g.auth.ca_file.clone().or_else(|| config.ca_file.clone());
    if let Some(ca) = &ca_file {
        client = client.with_ca_file(ca)?;
    }
    let key = hub_key(hub)?;
    if let Some(credentials) =
        crate::auth::choose(&g.auth, config, &key, ca_file.as_deref(), &crate::auth::process_env)?
    {
        tracing::debug!(credentials = %credentials.describe(), "hub credentials");
        client = client.with_credentials(credentials);
    }
    Ok(client)
}

pub(crate) fn parse_ref(s: &str) -> Result<Reference> {
    s.parse::<Reference>().with_context(|| format!("bad reference {s:?}"))
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers, run until killed.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
