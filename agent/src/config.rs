//! The sidecar agent's configuration file (TOML), with the environment
//! variables that override its common settings. Documented in docs/agent.md.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use aetherfs_format::{FormatError, Reference};
use serde::Deserialize;

/// What is wrong with a configuration (or a size).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is larger than 1 MiB")]
    TooLarge { path: PathBuf },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    /// A valid file with a setting that cannot work.
    #[error("{path}: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: Invalid,
    },
}

/// A setting that cannot work, in a file that parsed.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("no [[mount]] sections: nothing to serve")]
    NoMounts,
    #[error("fetch.timeout_secs and fetch.concurrency must be at least 1")]
    ZeroFetch,
    #[error("reader {0:?}: use 1-128 of [A-Za-z0-9._-], not starting with '.' or '-'")]
    Reader(String),
    #[error("auth: give token_file or client_id, not both")]
    TokenAndClient,
    #[error("auth: client_id and client_secret_file go together")]
    HalfClient,
    #[error("{what}: {source}")]
    Reference {
        what: String,
        #[source]
        source: FormatError,
    },
    #[error("{what}: give at least one of fuse, materialize, nfs, webdav")]
    NoFrontend { what: String },
    #[error("{what}: keep_versions must be at least 1, and goes with materialize")]
    KeepVersions { what: String },
    #[error("{what}: {source}")]
    OnSwitch {
        what: String,
        #[source]
        source: crate::on_switch::OnSwitchInvalid,
    },
    #[error("{what}: path {} is used twice", path.display())]
    PathTwice { what: String, path: PathBuf },
    #[error("{what}: address {addr} is used twice")]
    AddressTwice { what: String, addr: SocketAddr },
    #[error("{what}: address {addr} is also the admin address")]
    AdminAddress { what: String, addr: SocketAddr },
    #[error("{what}: {source}")]
    Frontends {
        what: String,
        #[source]
        source: crate::frontends::AccessInvalid,
    },
}

/// A size that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("bad size {0:?}: expected e.g. 512MiB or 10GiB")]
    Number(String),
    #[error("bad size unit in {0:?}: use B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB)")]
    Unit(String),
    #[error("size {0:?} out of range")]
    Range(String),
}

/// What a mount fetches before it serves (and before a followed tag switches).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Prefetch {
    /// Only the manifest: file data is fetched as it is read.
    None,
    /// The manifest (all metadata); the same as `none` today, kept distinct
    /// because the manifest is all the metadata there is.
    #[default]
    Metadata,
    /// Every chunk of the version, into the disk cache.
    All,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Hub URL (overridden by `--hub` / `AETHERFS_HUB`).
    pub hub: Option<String>,
    /// How this agent names itself in its leases on the hub (which versions
    /// it serves); default: the host name and a random suffix.
    pub reader: Option<String>,
    /// Host names (besides IP addresses and `localhost`) the WebDAV front
    /// ends and the admin endpoint answer to; other Host headers are refused
    /// (DNS rebinding). `["*"]`: any.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    #[serde(default)]
    pub admin: AdminConfig,
    /// Who may use the WebDAV and NFS front ends (docs/security.md).
    #[serde(default)]
    pub frontends: crate::frontends::FrontendAccess,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub fetch: FetchConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default, rename = "mount")]
    pub mounts: Vec<MountConfig>,
}

/// How the agent authenticates to the hub and trusts its certificate; the
/// command line and the environment override it (docs/auth-clients.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Bearer token file, read again when it changes (a projected
    /// service-account token).
    pub token_file: Option<PathBuf>,
    /// Client-credentials grant: the client id, with its secret in a file.
    pub client_id: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    /// OIDC issuer URL for the client-credentials grant.
    pub issuer: Option<String>,
    /// Resource indicator (audience) to ask tokens for.
    pub audience: Option<String>,
    /// Scopes to ask for, space-separated.
    pub scope: Option<String>,
    /// PEM file of the CA(s) that signed the hub's certificate.
    pub ca_file: Option<PathBuf>,
}

impl AuthConfig {
    fn validate(&self) -> Result<(), Invalid> {
        if self.token_file.is_some() && self.client_id.is_some() {
            return Err(Invalid::TokenAndClient);
        }
        if self.client_id.is_some() != self.client_secret_file.is_some() {
            return Err(Invalid::HalfClient);
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin")]
    pub listen: SocketAddr,
    /// File holding a bearer token that `/metrics` and `/v1/mounts` require
    /// (the probes stay open); read again at most once a second.
    pub token_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { listen: default_admin(), token_file: None }
    }
}

fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9100))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Directory of the encrypted chunk cache.
    #[serde(default = "default_cache_dir")]
    pub dir: PathBuf,
    /// Disk bound, e.g. "10GiB" or a number of bytes.
    #[serde(default = "default_disk")]
    pub max_size: Size,
    /// Memory tier of hot plaintext chunks.
    #[serde(default = "default_memory")]
    pub memory_size: Size,
    /// File holding the 32-byte cache key (raw, hex or base64). Without a key
    /// (here or in `AETHERFS_CACHE_KEY`) the key is random, lives only in
    /// memory, and the cache starts empty on every start.
    pub key_file: Option<PathBuf>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { dir: default_cache_dir(), max_size: default_disk(), memory_size: default_memory(), key_file: None }
    }
}

fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("aetherfs/chunks")
}

fn default_disk() -> Size {
    Size(10 << 30)
}

fn default_memory() -> Size {
    Size(256 << 20)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchConfig {
    /// A read that needs the hub fails with EIO after this long.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Range requests in flight to the hub at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Bytes fetched ahead of a sequential reader.
    #[serde(default = "default_readahead")]
    pub readahead: Size,
    /// Longest a tag long-poll waits before asking again.
    #[serde(default = "default_poll")]
    pub poll_secs: u64,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            timeout_secs: default_timeout(),
            concurrency: default_concurrency(),
            readahead: default_readahead(),
            poll_secs: default_poll(),
        }
    }
}

fn default_timeout() -> u64 {
    30
}
fn default_concurrency() -> usize {
    crate::source::DEFAULT_CONCURRENCY
}
fn default_readahead() -> Size {
    Size(8 << 20)
}
fn default_poll() -> u64 {
    60
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountConfig {
    /// `name:tag` follows the tag; `name@digest` never changes.
    #[serde(rename = "ref")]
    pub reference: String,
    pub fuse: Option<PathBuf>,
    pub nfs: Option<SocketAddr>,
    pub webdav: Option<SocketAddr>,
    #[serde(default)]
    pub prefetch: Prefetch,
    /// NFS export name (default: the dataset's last name segment).
    pub export: Option<String>,
    /// FUSE: let other users read (containers running as other uids).
    #[serde(default)]
    pub allow_other: bool,
    /// Write each version as files under this directory and point its
    /// `current` symlink at the newest (no FUSE, no privileges).
    pub materialize: Option<PathBuf>,
    /// Materialize: versions kept on disk, `current` included (default 2).
    pub keep_versions: Option<usize>,
    /// Run after each switch.
    pub on_switch: Option<crate::on_switch::OnSwitchConfig>,
}

impl MountConfig {
    /// Versions a materialized mount keeps.
    pub fn keep_versions(&self) -> usize {
        self.keep_versions.unwrap_or(crate::materialize::DEFAULT_KEEP_VERSIONS)
    }
}

/// A size in bytes, written as a number or with a unit: "512MiB", "10GiB", "1.5GB".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = SizeError;
    fn from_str(s: &str) -> Result<Self, SizeError> {
        let t = s.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num.parse().map_err(|_| SizeError::Number(s.to_string()))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            _ => return Err(SizeError::Unit(s.to_string())),
        };
        let v = n * mult as f64;
        if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
            return Err(SizeError::Range(s.to_string()));
        }
        Ok(Size(v as u64))
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl AgentConfig {
    /// The reader id of this agent's leases: the configured one, or the host
    /// name (made valid) with a random suffix, so two agents on one host differ.
    pub fn reader_id(&self) -> String {
        if let Some(r) = &self.reader {
            return r.clone();
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .unwrap_or_default();
        let mut id: String = host
            .trim()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' { c } else { '-' })
            .take(100)
            .collect();
        id = id.trim_start_matches(['.', '-']).to_string();
        if id.is_empty() {
            id = "agent".to_string();
        }
        format!("{id}-{:06x}", rand::random::<u32>() & 0xff_ffff)
    }

    /// Reads and checks a config file: every problem is reported with the
    /// file's name.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let path_buf = || path.to_path_buf();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path_buf(), source })?;
        if text.len() > 1 << 20 {
            return Err(ConfigError::TooLarge { path: path_buf() });
        }
        let cfg: AgentConfig =
            toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path_buf(), source })?;
        cfg.validate().map_err(|source| ConfigError::Invalid { path: path_buf(), source })?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        if self.mounts.is_empty() {
            return Err(Invalid::NoMounts);
        }
        let mut seen_paths = HashSet::new();
        let mut seen_addrs = HashSet::new();
        if self.fetch.timeout_secs == 0 || self.fetch.concurrency == 0 {
            return Err(Invalid::ZeroFetch);
        }
        if let Some(r) = &self.reader
            && !aetherfs_format::api::valid_reader(r)
        {
            return Err(Invalid::Reader(r.clone()));
        }
        self.auth.validate()?;
        for (i, m) in self.mounts.iter().enumerate() {
            let what = format!("mount #{} ({})", i + 1, m.reference);
            if let Err(source) = m.reference.parse::<Reference>() {
                return Err(Invalid::Reference { what, source });
            }
            if m.fuse.is_none() && m.materialize.is_none() && m.nfs.is_none() && m.webdav.is_none() {
                return Err(Invalid::NoFrontend { what });
            }
            if m.keep_versions.is_some_and(|k| k == 0 || m.materialize.is_none()) {
                return Err(Invalid::KeepVersions { what });
            }
            if let Some(Err(source)) = m.on_switch.as_ref().map(|h| h.validate()) {
                return Err(Invalid::OnSwitch { what, source });
            }
            for p in [&m.fuse, &m.materialize].into_iter().flatten() {
                if !seen_paths.insert(p.clone()) {
                    return Err(Invalid::PathTwice { what, path: p.clone() });
                }
            }
            for a in [m.nfs, m.webdav].into_iter().flatten() {
                if a.port() != 0 && !seen_addrs.insert(a) {
                    return Err(Invalid::AddressTwice { what, addr: a });
                }
            }
            if seen_addrs.contains(&self.admin.listen) && self.admin.listen.port() != 0 {
                return Err(Invalid::AdminAddress { what, addr: self.admin.listen });
            }
            if let Err(source) = self.frontends.validate(m.webdav) {
                return Err(Invalid::Frontends { what, source });
            }
        }
        if let Err(source) = self.frontends.validate([]) {
            return Err(Invalid::Frontends { what: "[frontends]".into(), source });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!("10GiB".parse::<Size>(), Ok(Size(10 << 30)));
        assert_eq!("512 MiB".parse::<Size>(), Ok(Size(512 << 20)));
        assert_eq!("1.5GB".parse::<Size>(), Ok(Size(1_500_000_000)));
        assert_eq!("42".parse::<Size>(), Ok(Size(42)));
        assert!("ten".parse::<Size>().is_err());
        assert!("5 parsecs".parse::<Size>().is_err());
        assert!("-1GiB".parse::<Size>().is_err());
    }

    #[test]
    fn parses_a_full_config() {
        let cfg: AgentConfig = toml::from_str(
            r#"
            hub = "http://127.0.0.1:7070"
            [admin]
            listen = "127.0.0.1:9200"
            [cache]
            dir = "/var/cache/aetherfs"
            max_size = "2GiB"
            memory_size = 134217728
            key_file = "/etc/aetherfs/key"
            [fetch]
            timeout_secs = 5
            [auth]
            token_file = "/var/run/secrets/tokens/aetherfs"
            ca_file = "/etc/aetherfs/ca.pem"
            [[mount]]
            ref = "acme/geoip:latest"
            fuse = "/data/geoip"
            prefetch = "all"
            [[mount]]
            ref = "acme/models:stable"
            webdav = "127.0.0.1:8080"
            nfs = "127.0.0.1:11111"
            prefetch = "none"
            "#,
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.cache.max_size, Size(2 << 30));
        assert_eq!(cfg.mounts[0].prefetch, Prefetch::All);
        assert_eq!(cfg.mounts[1].prefetch, Prefetch::None);
        assert_eq!(cfg.fetch.concurrency, 8);
        assert_eq!(cfg.auth.token_file.as_deref(), Some(Path::new("/var/run/secrets/tokens/aetherfs")));
        assert!(!cfg.frontends.webdav_hub_auth);
        assert_eq!(cfg.frontends.nfs_allow, aetherfs_util::Cidr::LOOPBACK.to_vec());
    }

    #[test]
    fn frontend_access_is_checked_with_the_mounts() {
        let parse = |frontends: &str, webdav: &str| {
            let text = format!("{frontends}\n[[mount]]\nref = \"acme/x:latest\"\nwebdav = \"{webdav}\"\n");
            let cfg: AgentConfig = toml::from_str(&text).unwrap();
            cfg.validate().map(|()| cfg)
        };
        assert!(parse("", "127.0.0.1:8080").is_ok());
        let err = parse("", "0.0.0.0:8080").unwrap_err().to_string();
        assert!(err.contains("refusing to serve WebDAV on 0.0.0.0:8080"), "{err}");
        assert!(parse("[frontends]\nallow_unauthenticated = true", "0.0.0.0:8080").is_ok());
        let cfg = parse("[frontends]\nwebdav_hub_auth = true\nnfs_allow = [\"10.0.0.0/8\"]", "0.0.0.0:8080").unwrap();
        assert_eq!(cfg.frontends.nfs_allow, vec!["10.0.0.0/8".parse().unwrap()]);
        let err = toml::from_str::<AgentConfig>("[frontends]\nnfs_allow = [\"10.0.0.0/40\"]").unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/40"), "{err}");
        assert!(toml::from_str::<AgentConfig>("[frontends]\nwebdav_user = \"x\"").is_err(), "unknown keys are refused");
    }

    #[test]
    fn parses_a_materialized_mount_with_a_hook() {
        let cfg: AgentConfig = toml::from_str(
            "[[mount]]\nref = \"acme/db:stable\"\nmaterialize = \"/data\"\nkeep_versions = 3\n\
             [mount.on_switch]\ncommand = [\"/bin/reload\", \"--now\"]\ntimeout_secs = 5",
        )
        .unwrap();
        cfg.validate().unwrap();
        let m = &cfg.mounts[0];
        assert_eq!((m.materialize.as_deref(), m.keep_versions()), (Some(Path::new("/data")), 3));
        let hook = m.on_switch.as_ref().unwrap();
        assert_eq!((hook.command.as_ref().unwrap()[1].as_str(), hook.timeout_secs), ("--now", 5));
    }

    #[test]
    fn refuses_bad_configs() {
        for bad in [
            "",
            "[[mount]]\nref = \"Bad Name\"\nfuse = \"/x\"",
            "[[mount]]\nref = \"acme/x\"",
            "[[mount]]\nref = \"acme/x\"\nfuse = \"/x\"\n[[mount]]\nref = \"acme/y\"\nfuse = \"/x\"",
            "[[mount]]\nref = \"acme/x\"\nfuse = \"/x\"\nprefetch = \"some\"",
            "[[mount]]\nref = \"acme/x\"\nfuse = \"/x\"\nunknown = 1",
            "[cache]\nmax_size = \"lots\"\n[[mount]]\nref = \"acme/x\"\nfuse = \"/x\"",
            "[auth]\ntoken_file = \"/t\"\nclient_id = \"c\"\nclient_secret_file = \"/s\"\n[[mount]]\nref = \"acme/x\"\nfuse = \"/x\"",
            "[auth]\nclient_id = \"c\"\n[[mount]]\nref = \"acme/x\"\nfuse = \"/x\"",
            "[auth]\npassword = \"p\"\n[[mount]]\nref = \"acme/x\"\nfuse = \"/x\"",
            "[[mount]]\nref = \"acme/x\"\nfuse = \"/x\"\nkeep_versions = 2",
            "[[mount]]\nref = \"acme/x\"\nmaterialize = \"/m\"\nkeep_versions = 0",
            "[[mount]]\nref = \"acme/x\"\nmaterialize = \"/x\"\nfuse = \"/x\"",
            "[[mount]]\nref = \"acme/x\"\nmaterialize = \"/m\"\n[mount.on_switch]\ntimeout_secs = 5",
            "[[mount]]\nref = \"acme/x\"\nmaterialize = \"/m\"\n[mount.on_switch]\nurl = \"ftp://x/\"",
        ] {
            let r = toml::from_str::<AgentConfig>(bad)
                .map_err(|e| e.to_string())
                .and_then(|c| c.validate().map_err(|e| e.to_string()));
            assert!(r.is_err(), "accepted: {bad}");
        }
    }
}
