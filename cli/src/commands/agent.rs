//! `aetherfs agent`: the sidecar (see `aetherfs_agent::daemon`): the config
//! file with its flag and environment overrides, the hub client, the cache key.

use aetherfs_agent::config::{AgentConfig, Size};
use aetherfs_cache::CacheKey;
use anyhow::{Context, Result};

use crate::cli::{AgentArgs, GlobalArgs};
use crate::commands::{DEFAULT_HUB, client_for, shutdown_signal};

pub async fn run(g: &GlobalArgs, a: AgentArgs) -> Result<()> {
    let mut cfg = AgentConfig::load(&a.config)?;
    if let Some(addr) = a.admin {
        cfg.admin.listen = addr;
    }
    if let Some(d) = a.cache_dir {
        cfg.cache.dir = d;
    }
    if let Some(s) = &a.cache_size {
        cfg.cache.max_size = s.parse::<Size>().context("bad --cache-size")?;
    }
    if let Some(k) = a.cache_key_file {
        cfg.cache.key_file = Some(k);
    }
    let hub = g.hub.clone().or(cfg.hub.clone()).unwrap_or_else(|| DEFAULT_HUB.to_string());
    let client = client_for(g, &hub, &cfg.auth)?;

    let key = match std::env::var("AETHERFS_CACHE_KEY") {
        Ok(v) => CacheKey::from_env_value(&v).context("bad AETHERFS_CACHE_KEY")?,
        Err(_) => match &cfg.cache.key_file {
            Some(p) => CacheKey::from_file(p).with_context(|| format!("cannot load the cache key {}", p.display()))?,
            None => {
                tracing::warn!(
                    "no cache key configured: using a random in-memory key; the cache starts empty on every start"
                );
                CacheKey::Ephemeral
            }
        },
    };
    aetherfs_agent::daemon::run(client, cfg, key, shutdown_signal()).await?;
    Ok(())
}
