//! Which credentials a command sends to the hub. The first that applies wins
//! (docs/auth-clients.md says the same for users):
//!
//! 1. flags: `--token-file FILE`, or `--client-id`/`--client-secret`
//!    (either flag; the other half may come from the environment);
//! 2. the environment: `AETHERFS_TOKEN`, `AETHERFS_CLIENT_ID` with
//!    `AETHERFS_CLIENT_SECRET`, `AETHERFS_TOKEN_FILE`, `AETHERFS_USER` with
//!    `AETHERFS_PASSWORD` (two of these at once is an error, not a guess);
//! 3. the agent config's `[auth]`: `token_file`, or `client_id` with
//!    `client_secret_file`;
//! 4. the login `aetherfs login` stored for this hub;
//! 5. none: requests go out without an `Authorization` header.
//!
//! Client credentials need an issuer (`--issuer`, `AETHERFS_OIDC_ISSUER` or
//! the config's `issuer`). The CA file (`--ca-file`, `AETHERFS_CA_FILE`, the
//! config's `ca_file`) is trusted for the identity provider too, besides the
//! system's roots.

use std::path::Path;
use std::sync::Arc;

use aetherfs_hub_client::auth::{
    BasicAuth, ClientCredentials, CredentialStore, Credentials, OidcSettings, StaticToken, StoredLogin, TokenFile,
    parse_scopes,
};
use anyhow::{Context, Result, bail};

use crate::cli::AuthArgs;
use aetherfs_agent::config::AuthConfig;

/// Reads one environment variable; empty counts as unset.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// The credentials for the hub stored under `hub_key`, by the precedence above.
pub fn choose(
    args: &AuthArgs,
    config: &AuthConfig,
    hub_key: &str,
    ca_file: Option<&Path>,
    env: Env<'_>,
) -> Result<Option<Arc<dyn Credentials>>> {
    let oidc = |client_id: String, secret: String, issuer: Option<&String>| -> Result<Arc<dyn Credentials>> {
        let issuer = issuer.or(config.issuer.as_ref()).context(
            "client credentials need the identity provider: give --issuer URL (or AETHERFS_OIDC_ISSUER, or issuer in [auth])",
        )?;
        let settings = OidcSettings {
            issuer: issuer.clone(),
            client_id,
            client_secret: Some(secret),
            audience: args.audience.clone().or_else(|| config.audience.clone()),
            scopes: args.scope.as_deref().or(config.scope.as_deref()).map(parse_scopes).unwrap_or_default(),
            ca_file: ca_file.map(Path::to_path_buf),
        };
        Ok(Arc::new(ClientCredentials::new(settings)?))
    };

    // 1. Flags.
    if args.token_file.is_some() && (args.client_id.is_some() || args.client_secret.is_some()) {
        bail!("give --token-file or --client-id/--client-secret, not both");
    }
    if let Some(p) = &args.token_file {
        return Ok(Some(Arc::new(TokenFile::new(p))));
    }
    if args.client_secret.is_some() {
        let id = args
            .client_id
            .clone()
            .or_else(|| env("AETHERFS_CLIENT_ID"))
            .context("--client-secret needs --client-id (or AETHERFS_CLIENT_ID)")?;
        let secret = args.client_secret.clone().unwrap_or_default();
        return oidc(id, secret, args.issuer.as_ref()).map(Some);
    }
    if let Some(id) = &args.client_id {
        let secret = env("AETHERFS_CLIENT_SECRET")
            .context("--client-id needs a secret: set AETHERFS_CLIENT_SECRET (or give --client-secret)")?;
        return oidc(id.clone(), secret, args.issuer.as_ref()).map(Some);
    }

    // 2. The environment.
    let token = env("AETHERFS_TOKEN");
    let client = pair(env, "AETHERFS_CLIENT_ID", "AETHERFS_CLIENT_SECRET")?;
    let token_file = env("AETHERFS_TOKEN_FILE");
    let basic = pair(env, "AETHERFS_USER", "AETHERFS_PASSWORD")?;
    let set: Vec<&str> = [
        token.as_ref().map(|_| "AETHERFS_TOKEN"),
        client.as_ref().map(|_| "AETHERFS_CLIENT_ID/AETHERFS_CLIENT_SECRET"),
        token_file.as_ref().map(|_| "AETHERFS_TOKEN_FILE"),
        basic.as_ref().map(|_| "AETHERFS_USER/AETHERFS_PASSWORD"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if set.len() > 1 {
        bail!("credentials are set twice in the environment ({}): unset all but one", set.join(", "));
    }
    if let Some(t) = token {
        return Ok(Some(Arc::new(StaticToken::new(&t).context("AETHERFS_TOKEN")?)));
    }
    if let Some((id, secret)) = client {
        return oidc(id, secret, args.issuer.as_ref()).map(Some);
    }
    if let Some(p) = token_file {
        return Ok(Some(Arc::new(TokenFile::new(p))));
    }
    if let Some((user, password)) = basic {
        return Ok(Some(Arc::new(BasicAuth::new(&user, &password)?)));
    }

    // 3. The agent's config.
    if let Some(p) = &config.token_file {
        return Ok(Some(Arc::new(TokenFile::new(p))));
    }
    if let (Some(id), Some(secret_file)) = (&config.client_id, &config.client_secret_file) {
        let secret = std::fs::read_to_string(secret_file)
            .with_context(|| format!("cannot read the client secret file {}", secret_file.display()))?;
        return oidc(id.clone(), secret.trim().to_string(), args.issuer.as_ref()).map(Some);
    }

    // 4. The stored login (read lazily: a hub without auth never needs the file).
    match CredentialStore::default_location() {
        Ok(store) => Ok(Some(Arc::new(StoredLogin::new(store, hub_key, ca_file.map(Path::to_path_buf))))),
        Err(e) => {
            tracing::debug!(error = %e, "no stored logins");
            Ok(None)
        }
    }
}

/// Two variables that only mean something together.
fn pair(env: Env<'_>, a: &str, b: &str) -> Result<Option<(String, String)>> {
    match (env(a), env(b)) {
        (Some(x), Some(y)) => Ok(Some((x, y))),
        (None, None) => Ok(None),
        _ => bail!("{a} and {b} go together: set both or neither"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use super::*;

    fn pick(args: &AuthArgs, config: &AuthConfig, vars: &[(&str, &str)]) -> Result<String> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let env = move |k: &str| vars.get(k).cloned();
        Ok(choose(args, config, "http://hub/", None, &env)?.map(|c| c.describe()).unwrap_or_default())
    }

    /// The global auth flags clash with no subcommand's own.
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        crate::cli::Cli::command().debug_assert();
    }

    #[test]
    fn precedence() {
        let none = AuthArgs::default();
        let issuer = AuthArgs { issuer: Some("http://idp".into()), ..AuthArgs::default() };
        let cfg = AuthConfig::default();
        let cc = [("AETHERFS_CLIENT_ID", "ci"), ("AETHERFS_CLIENT_SECRET", "s")];

        // Flags beat the environment.
        let flag_file = AuthArgs { token_file: Some(PathBuf::from("/flag")), ..issuer.clone() };
        assert_eq!(pick(&flag_file, &cfg, &[("AETHERFS_TOKEN", "t")]).unwrap(), "token file /flag");
        let flag_cc = AuthArgs { client_id: Some("flagged".into()), ..issuer.clone() };
        assert!(pick(&flag_cc, &cfg, &[("AETHERFS_CLIENT_SECRET", "s")]).unwrap().contains("flagged"));
        assert!(pick(&flag_cc, &cfg, &[]).unwrap_err().to_string().contains("AETHERFS_CLIENT_SECRET"));

        // The environment, one kind at a time.
        assert_eq!(pick(&none, &cfg, &[("AETHERFS_TOKEN", "t")]).unwrap(), "a bearer token");
        assert!(pick(&issuer, &cfg, &cc).unwrap().contains("client credentials of ci at http://idp"));
        assert!(pick(&none, &cfg, &cc).unwrap_err().to_string().contains("--issuer"));
        assert_eq!(pick(&none, &cfg, &[("AETHERFS_TOKEN_FILE", "/env")]).unwrap(), "token file /env");
        let basic = [("AETHERFS_USER", "bob"), ("AETHERFS_PASSWORD", "pw")];
        assert_eq!(pick(&none, &cfg, &basic).unwrap(), "basic authentication as bob");
        assert!(pick(&none, &cfg, &[("AETHERFS_USER", "bob")]).is_err());
        let both = [("AETHERFS_TOKEN", "t"), ("AETHERFS_TOKEN_FILE", "/env")];
        assert!(pick(&none, &cfg, &both).unwrap_err().to_string().contains("set twice"));

        // The config, beneath the environment.
        let cfg_file = AuthConfig { token_file: Some(PathBuf::from("/cfg")), ..AuthConfig::default() };
        assert_eq!(pick(&none, &cfg_file, &[]).unwrap(), "token file /cfg");
        assert_eq!(pick(&none, &cfg_file, &[("AETHERFS_TOKEN_FILE", "/env")]).unwrap(), "token file /env");

        // Else the stored login (when there is a place for one).
        let stored = pick(&none, &cfg, &[]).unwrap();
        assert!(stored.is_empty() || stored.starts_with("the stored login for http://hub/"), "{stored}");
    }
}
