//! The lifecycle configuration (`aetherfs hub --lifecycle FILE`): how long
//! versions are kept, and how garbage collection runs.
//!
//! ```toml
//! [gc]
//! interval = "24h"      # run inside the hub on this schedule (default: only on request)
//! grace = "1h"          # uploads, versions and moved packs younger than this are kept
//! max_unused = 0.10     # rewrite packs until at most this fraction of pack bytes is dead
//! lease = "10m"         # a reader's versions are kept this long after its last heartbeat
//! lock_ttl = "60s"      # a collection's lock outlives a killed holder by at most this
//!
//! [[retention]]         # the first rule whose pattern matches a dataset applies
//! datasets = "team-a/**"
//! keep_last = 5         # the last 5 versions of each tag's history
//! keep_younger_than = "30d"
//! ```
//!
//! Whatever the rules say, a version a tag points at is kept, and so is one a
//! reader holds a lease on. A dataset no rule matches keeps only those (and
//! what is younger than the grace period).

use std::path::{Path, PathBuf};
use std::time::Duration;

use aetherfs_util::{DurationError, parse_duration};
use serde::Deserialize;

use crate::auth::policy::{Pattern, PatternError};

/// Why the lifecycle file was refused.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    #[error("{field}: {source}")]
    Duration { field: String, source: DurationError },
    #[error("retention rule {index}: {source}")]
    Pattern { index: usize, source: PatternError },
    #[error("gc.max_unused must be between 0 and 0.9, not {0}")]
    MaxUnused(f64),
    #[error("gc.lease must be at least 30s, not {0}")]
    Lease(String),
    #[error("gc.lock_ttl must be at least 2s, not {0}")]
    LockTtl(String),
    #[error("retention rule {0}: keep_last must be at least 1 (tagged versions are always kept)")]
    KeepLast(usize),
}

/// How garbage collection runs.
#[derive(Clone, Debug, PartialEq)]
pub struct GcSettings {
    /// Run on this schedule inside the hub; `None`: only when asked.
    pub interval: Option<Duration>,
    /// What is younger than this is never collected: packs nothing references
    /// yet (a push in progress), versions not yet tagged, packs whose chunks
    /// were just moved (readers with the old placement still use them).
    pub grace: Duration,
    /// Packs are rewritten, least-live first, until at most this fraction of
    /// the stored pack bytes is dead.
    pub max_unused: f64,
    /// How long a reader's lease protects its versions after its last heartbeat.
    pub lease: Duration,
    /// Lifetime of the store-wide collection lock, renewed every third of it
    /// while a collection runs: how long a killed collector blocks the next.
    pub lock_ttl: Duration,
}

impl Default for GcSettings {
    fn default() -> Self {
        Self {
            interval: None,
            grace: Duration::from_secs(3600),
            max_unused: 0.10,
            lease: Duration::from_secs(600),
            lock_ttl: Duration::from_secs(60),
        }
    }
}

/// One retention rule.
#[derive(Clone, Debug)]
pub struct RetentionRule {
    pub(crate) datasets: Pattern,
    /// Keep the last N versions each tag pointed at (current one included).
    pub keep_last: Option<usize>,
    /// Keep versions published less than this long ago.
    pub keep_younger_than: Option<Duration>,
}

/// The whole file.
#[derive(Clone, Debug, Default)]
pub struct Lifecycle {
    pub gc: GcSettings,
    pub retention: Vec<RetentionRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    gc: GcFile,
    #[serde(default)]
    retention: Vec<RuleFile>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GcFile {
    interval: Option<String>,
    grace: Option<String>,
    max_unused: Option<f64>,
    lease: Option<String>,
    lock_ttl: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    datasets: String,
    keep_last: Option<usize>,
    keep_younger_than: Option<String>,
}

fn duration(field: &str, s: &str) -> Result<Duration, LifecycleError> {
    parse_duration(s).map_err(|source| LifecycleError::Duration { field: field.to_string(), source })
}

impl Lifecycle {
    pub fn load(path: &Path) -> Result<Self, LifecycleError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| LifecycleError::Io { path: path.to_path_buf(), source })?;
        Self::from_toml(&text)
    }

    pub fn from_toml(text: &str) -> Result<Self, LifecycleError> {
        let f: File = toml::from_str(text)?;
        let d = GcSettings::default();
        let gc = GcSettings {
            interval: f
                .gc
                .interval
                .as_deref()
                .map(|s| duration("gc.interval", s))
                .transpose()?
                .filter(|d| !d.is_zero()),
            grace: f.gc.grace.as_deref().map(|s| duration("gc.grace", s)).transpose()?.unwrap_or(d.grace),
            max_unused: f.gc.max_unused.unwrap_or(d.max_unused),
            lease: f.gc.lease.as_deref().map(|s| duration("gc.lease", s)).transpose()?.unwrap_or(d.lease),
            lock_ttl: f.gc.lock_ttl.as_deref().map(|s| duration("gc.lock_ttl", s)).transpose()?.unwrap_or(d.lock_ttl),
        };
        if gc.lock_ttl < Duration::from_secs(2) {
            return Err(LifecycleError::LockTtl(aetherfs_util::format_duration(gc.lock_ttl)));
        }
        if !(0.0..=0.9).contains(&gc.max_unused) {
            return Err(LifecycleError::MaxUnused(gc.max_unused));
        }
        if gc.lease < Duration::from_secs(30) {
            return Err(LifecycleError::Lease(aetherfs_util::format_duration(gc.lease)));
        }
        let mut retention = Vec::new();
        for (i, r) in f.retention.into_iter().enumerate() {
            let index = i + 1;
            if r.keep_last == Some(0) {
                return Err(LifecycleError::KeepLast(index));
            }
            retention.push(RetentionRule {
                datasets: Pattern::parse(&r.datasets).map_err(|source| LifecycleError::Pattern { index, source })?,
                keep_last: r.keep_last,
                keep_younger_than: r
                    .keep_younger_than
                    .as_deref()
                    .map(|s| duration(&format!("retention rule {index}: keep_younger_than"), s))
                    .transpose()?,
            });
        }
        Ok(Self { gc, retention })
    }

    /// The rule for a dataset (the first that matches), and its number from 1.
    pub(crate) fn rule_for(&self, name: &str) -> Option<(usize, &RetentionRule)> {
        self.retention.iter().enumerate().find(|(_, r)| r.datasets.matches(name)).map(|(i, r)| (i + 1, r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_picks_the_first_matching_rule() {
        let l = Lifecycle::from_toml(
            "[gc]\ninterval = \"1d\"\ngrace = \"0s\"\nmax_unused = 0.2\n\
             [[retention]]\ndatasets = \"team-a/**\"\nkeep_last = 3\n\
             [[retention]]\ndatasets = \"**\"\nkeep_younger_than = \"7d\"\n",
        )
        .expect("valid");
        assert_eq!(l.gc.interval, Some(Duration::from_secs(86_400)));
        assert_eq!(l.gc.grace, Duration::ZERO);
        assert_eq!(l.rule_for("team-a/x").map(|(i, r)| (i, r.keep_last)), Some((1, Some(3))));
        assert_eq!(
            l.rule_for("team-b").map(|(i, r)| (i, r.keep_younger_than)),
            Some((2, Some(Duration::from_secs(604_800))))
        );
        assert_eq!(Lifecycle::default().gc, GcSettings::default());
    }

    #[test]
    fn refuses_mistakes_with_the_field() {
        for (text, needle) in [
            ("[gc]\ngrace = \"soon\"", "gc.grace"),
            ("[gc]\nmax_unused = 2.0", "max_unused"),
            ("[gc]\nlease = \"5s\"", "gc.lease"),
            ("[gc]\nlock_ttl = \"1s\"", "gc.lock_ttl"),
            ("[gc]\nunknown = 1", "unknown"),
            ("[[retention]]\ndatasets = \"Team\"", "retention rule 1"),
            ("[[retention]]\ndatasets = \"a\"\nkeep_last = 0", "keep_last"),
            ("[[retention]]\ndatasets = \"a\"\nkeep_younger_than = \"x\"", "keep_younger_than"),
        ] {
            let e = Lifecycle::from_toml(text).expect_err(text).to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
