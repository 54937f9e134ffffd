//! `aetherfs login` and `aetherfs logout`: the OIDC device-code flow, and
//! the stored, refreshable credentials it leaves per hub.

use std::time::Duration;

use aetherfs_hub_client::auth::{CredentialStore, DevicePrompt, LoginEntry, OidcSettings, device_login, revoke_login};
use aetherfs_hub_client::hub_key;
use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::auth::process_env;
use crate::cli::{GlobalArgs, LoginArgs, LogoutArgs};
use crate::commands::{DEFAULT_HUB, print_json};

const DEFAULT_SCOPES: &[&str] = &["openid", "offline_access"];

#[derive(Serialize)]
struct LoginReport<'a> {
    hub: &'a str,
    issuer: &'a str,
    client_id: &'a str,
    subject: Option<&'a str>,
    scopes: &'a [String],
    /// Unix seconds.
    expires_at: Option<u64>,
    refreshable: bool,
    credentials_file: String,
}

pub async fn login(g: &GlobalArgs, a: LoginArgs) -> Result<()> {
    let hub = hub_key(g.hub.as_deref().unwrap_or(DEFAULT_HUB))?;
    let store = CredentialStore::default_location()?;
    if g.auth.client_secret.is_some() {
        bail!("login uses a public client (device code): --client-secret is for the client-credentials grant");
    }
    // Anything not given is taken from the previous login to this hub.
    let previous = {
        let (store, hub) = (store.clone(), hub.clone());
        tokio::task::spawn_blocking(move || store.get(&hub)).await?.ok().flatten()
    };
    let issuer = g
        .auth
        .issuer
        .clone()
        .or_else(|| previous.as_ref().map(|p| p.issuer.clone()))
        .context("give the identity provider: --issuer URL (or AETHERFS_OIDC_ISSUER)")?;
    let client_id = g
        .auth
        .client_id
        .clone()
        .or_else(|| process_env("AETHERFS_CLIENT_ID"))
        .or_else(|| previous.as_ref().map(|p| p.client_id.clone()))
        .context("give the client registered for the CLI: --client-id ID")?;
    let audience = g.auth.audience.clone().or_else(|| previous.as_ref().and_then(|p| p.audience.clone()));
    let scopes = match (&g.auth.scope, &previous) {
        (Some(s), _) => aetherfs_hub_client::auth::parse_scopes(s),
        (None, Some(p)) if !p.scopes.is_empty() => p.scopes.clone(),
        _ => DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect(),
    };
    let poll = match a.poll_interval {
        Some(s) if s.is_finite() && s > 0.0 && s <= 600.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => bail!("bad --poll-interval {s}: give seconds between 0 and 600"),
        None => None,
    };
    let settings =
        OidcSettings { issuer, client_id, client_secret: None, audience, scopes, ca_file: g.auth.ca_file.clone() };

    let entry = device_login(&settings, poll, |p| prompt(&hub, p)).await?;
    {
        let (store, hub, entry) = (store.clone(), hub.clone(), entry.clone());
        tokio::task::spawn_blocking(move || store.put(&hub, entry)).await??;
    }
    if entry.refresh_token.is_none() {
        eprintln!(
            "warning: the provider issued no refresh token (ask for the offline_access scope): \
             log in again when the access token expires"
        );
    }
    report(g, &hub, &entry, &store)
}

/// The user's part, on stderr (stdout stays for `--json`): always shown,
/// even with `--quiet`, since nothing happens without it.
fn prompt(hub: &str, p: &DevicePrompt) {
    eprintln!("To log in to {hub}, open this page in a browser and approve:");
    match &p.verification_uri_complete {
        Some(full) => {
            eprintln!("    {full}");
            eprintln!("(or open {} and enter the code {})", p.verification_uri, p.user_code);
        }
        None => {
            eprintln!("    {}", p.verification_uri);
            eprintln!("and enter the code {}", p.user_code);
        }
    }
    eprintln!("Waiting for the approval (the code expires in {})...", human(p.expires_in));
}

fn report(g: &GlobalArgs, hub: &str, entry: &LoginEntry, store: &CredentialStore) -> Result<()> {
    if g.json {
        return print_json(&LoginReport {
            hub,
            issuer: &entry.issuer,
            client_id: &entry.client_id,
            subject: entry.subject.as_deref(),
            scopes: &entry.scopes,
            expires_at: entry.expires_at,
            refreshable: entry.refresh_token.is_some(),
            credentials_file: store.path().display().to_string(),
        });
    }
    if !g.quiet {
        let who = entry.subject.as_deref().map(|s| format!(" as {s}")).unwrap_or_default();
        let valid = entry
            .expires_at
            .map(|t| {
                let left = Duration::from_secs(t.saturating_sub(entry.obtained_at));
                let refresh = if entry.refresh_token.is_some() { ", refreshed as needed" } else { "" };
                format!("; the access token is valid for {}{refresh}", human(left))
            })
            .unwrap_or_default();
        println!("Logged in to {hub}{who}{valid}. Credentials: {}", store.path().display());
    }
    Ok(())
}

#[derive(Serialize)]
struct LogoutReport<'a> {
    hub: &'a str,
    removed: bool,
    revoked: bool,
}

pub async fn logout(g: &GlobalArgs, a: LogoutArgs) -> Result<()> {
    let hub = hub_key(g.hub.as_deref().unwrap_or(DEFAULT_HUB))?;
    let store = CredentialStore::default_location()?;
    let removed = {
        let (store, hub) = (store.clone(), hub.clone());
        tokio::task::spawn_blocking(move || store.remove(&hub)).await??
    };
    let mut revoked = false;
    if let Some(entry) = &removed
        && !a.no_revoke
    {
        // Best effort: the local credentials are gone either way.
        match revoke_login(entry, g.auth.ca_file.clone()).await {
            Ok(r) => revoked = r,
            Err(e) => eprintln!("warning: could not revoke the login at {}: {e}", entry.issuer),
        }
    }
    if g.json {
        return print_json(&LogoutReport { hub: &hub, removed: removed.is_some(), revoked });
    }
    if !g.quiet {
        match (&removed, revoked) {
            (None, _) => println!("Not logged in to {hub}."),
            (Some(_), true) => println!("Logged out of {hub}; the provider revoked the login."),
            (Some(_), false) => println!("Logged out of {hub}."),
        }
    }
    Ok(())
}

/// "45 s", "10 min", "2 h".
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}
