//! One module per subcommand.

mod agent;
mod demo;
mod hub;
mod inspect;
mod ls;
mod mount;
mod pull;
mod push;
mod serve;
mod tag;

use aetherfs_format::Reference;
use aetherfs_hub_client::HubClient;
use anyhow::{Context, Result};

use crate::cli::{Cli, Command, GlobalArgs};

pub async fn run(cli: Cli) -> Result<()> {
    let g = cli.global;
    match cli.command {
        Command::Hub(a) => hub::run(a).await,
        Command::Push(a) => push::run(&g, a).await,
        Command::Pull(a) => pull::run(&g, a).await,
        Command::Tag(a) => tag::run(&g, a).await,
        Command::Ls(a) => ls::run(&g, a).await,
        Command::Inspect(a) => inspect::run(&g, a).await,
        Command::Mount(a) => mount::run(&g, a).await,
        Command::Serve(a) => serve::run(&g, a).await,
        Command::Demo(a) => demo::run(a).await,
        Command::Agent(a) => agent::run(&g, a).await,
    }
}

/// The hub used when neither `--hub`, `AETHERFS_HUB` nor a config names one.
pub(crate) const DEFAULT_HUB: &str = "http://127.0.0.1:7070";

pub(crate) fn client(g: &GlobalArgs) -> Result<HubClient> {
    Ok(HubClient::new(g.hub.as_deref().unwrap_or(DEFAULT_HUB))?)
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
