//! The command line: one binary, `aetherfs`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "aetherfs",
    version,
    about = "Versioned datasets, pushed and pulled by changed blocks",
    long_about = "AetherFS distributes datasets (SQLite/DuckDB databases, lookup tables, model files) as \
immutable, content-addressed versions. Push a directory to a hub, tag it, and pull it anywhere: \
only the chunks a side lacks cross the network.\n\n\
Start a hub on local storage:   aetherfs hub\n\
Push a directory:               aetherfs push ./geoip acme/geoip:2026.11 --tag latest\n\
Pull it elsewhere:              aetherfs pull acme/geoip:latest ./geoip",
    after_help = "Exit status is 0 on success and non-zero on any failure, with one line on stderr saying what went wrong."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Hub URL [default: http://127.0.0.1:7070, or the agent config's `hub`].
    #[arg(long, global = true, env = "AETHERFS_HUB")]
    pub hub: Option<String>,
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bars or summaries; errors only.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// How clients authenticate to the hub and trust its certificate. Which
/// credentials win when several are given: docs/auth-clients.md.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Authentication")]
pub struct AuthArgs {
    /// PEM file of the CA(s) that signed an https hub's certificate, trusted
    /// instead of the system's roots (and besides them for the identity provider).
    #[arg(long, global = true, env = "AETHERFS_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Send the bearer token in FILE, read again whenever the file changes
    /// (a Kubernetes projected service-account token). Env: AETHERFS_TOKEN_FILE.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// OAuth client: with a secret, the client-credentials grant (CI); for
    /// `login`, the public client of the device-code flow. Env: AETHERFS_CLIENT_ID.
    #[arg(long, global = true, value_name = "ID")]
    pub client_id: Option<String>,
    /// Secret of the client-credentials client. Prefer AETHERFS_CLIENT_SECRET:
    /// command lines are visible to other users.
    #[arg(long, global = true, value_name = "SECRET")]
    pub client_secret: Option<String>,
    /// OIDC issuer URL (login and client credentials).
    #[arg(long, global = true, env = "AETHERFS_OIDC_ISSUER", value_name = "URL")]
    pub issuer: Option<String>,
    /// Resource indicator (audience) of the hub's tokens, when the provider needs one.
    #[arg(long, global = true, env = "AETHERFS_OIDC_AUDIENCE", value_name = "AUDIENCE")]
    pub audience: Option<String>,
    /// Scopes to ask for, space-separated [login default: "openid offline_access"].
    #[arg(long, global = true, env = "AETHERFS_OIDC_SCOPE", value_name = "SCOPES")]
    pub scope: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a hub server.
    Hub(HubArgs),
    /// Push a directory as a new version of a dataset and tag it.
    Push(PushArgs),
    /// Pull a version into a directory, reusing the data it already holds.
    Pull(PullArgs),
    /// Point a tag at the version a reference names (`tag rm NAME:TAG` deletes one).
    Tag(TagArgs),
    /// Delete a version no tag points at (NAME@DIGEST), or a whole dataset
    /// (NAME --all: its tags, then its versions). Needs the admin permission.
    Rm(RmArgs),
    /// Collect garbage on the hub: remove the versions no tag, retention rule
    /// or reader's lease keeps, then reclaim their space. Needs admin on every
    /// dataset. Try --dry-run first.
    #[command(long_about = "Collect garbage on the hub.\n\n\
A version is kept while a tag points at it, while the hub's retention rule for its dataset keeps it \
(the last N of each tag's history, or younger than a duration; see docs/operations.md), while it is \
younger than the grace period, or while a reader (an agent) holds a lease on it. Every other version \
is removed, then packs with nothing live are deleted and mostly dead packs are rewritten (their live \
chunks copied into new packs): version digests never change.\n\n\
--dry-run lists, per rule, what would be removed and which readers hold what.")]
    Gc(GcArgs),
    /// List datasets, a dataset's tags (NAME), or a tag's history (NAME:TAG:
    /// one move a line, `SEQ DIGEST AT BY PREVIOUS`, tab-separated, oldest first).
    Ls(LsArgs),
    /// Show a version's manifest.
    Inspect(InspectArgs),
    /// Show what changed between two versions: files added, removed and
    /// changed, and how much of the newer one is new data.
    #[command(long_about = "Show what changed between two versions: files added (A), removed (D) and \
changed (M), and for each the bytes that are new versus found in the older version.\n\n\
The last line sums it up: the new data (each new chunk counted once), as stored (compressed): what \
`pull` downloads to move a directory from OLD to NEW, or an agent fetches when a tag moves, and the \
share of NEW served from chunks already stored.")]
    #[command(after_help = "Examples:\n  aetherfs diff acme/geoip:v1 acme/geoip:v2\n  \
aetherfs diff acme/geoip@blake3:… acme/geoip:latest --json   {\"old\", \"new\", \"totals\": {…}, \"paths\": [{\"path\", \"change\", \"new_bytes\", …}]}")]
    Diff(DiffArgs),
    /// Show what each version of a dataset costs: logical, stored, shared and exclusive bytes.
    #[command(long_about = "Show what each version of a dataset costs.\n\n\
LOGICAL is the sum of its file sizes; STORED its distinct chunks as packs hold them (compressed); \
SHARED the part of STORED other versions of the dataset hold too; EXCLUSIVE the rest, about what \
deleting the version (then `aetherfs gc`) frees. The last line compares the dataset's logical bytes, \
every version counted whole, with what it stores.")]
    #[command(after_help = "Examples:\n  aetherfs du acme/geoip\n  aetherfs du acme/geoip --json")]
    Du(DuArgs),
    /// Show what readers do with an agent's mounts: reads, bytes, cache hits,
    /// bytes fetched per version, read latency and the files read most.
    #[command(long_about = "Show what readers do with an agent's mounts, from its admin endpoint \
(`/v1/stats`; `aetherfs mount` and `serve` with --admin have one too).\n\n\
Per mount and per version served (the current one first, then up to 7 older ones, so what a switch \
cost stays visible): reads and bytes read through FUSE, NFS and WebDAV; chunks found in the memory \
tier, the disk cache, or fetched from the hub, and the cache hit ratio; stored bytes fetched for \
readers and read ahead; read latency (mean, and the buckets the median and 99th percentile fall in); \
the files read most.")]
    #[command(after_help = "Examples:\n  aetherfs agent-stats 127.0.0.1:9090\n  \
aetherfs agent-stats http://10.0.0.5:9090 --admin-token-file /etc/aetherfs/admin.token --top 50 --json")]
    AgentStats(AgentStatsArgs),
    /// Show which readers (agents) serve which versions of a dataset, and
    /// the bytes their readers read and fetched, from the readers' leases.
    #[command(long_about = "Show which readers (agents) serve which versions of a dataset, and the \
bytes their readers read and fetched.\n\n\
Every agent renews a lease per dataset while it serves it (docs/operations.md, \"Reader leases\"): \
the versions its mounts hold, and, as of that renewal, the bytes read through each and the stored \
bytes fetched for them. A lease past its time shows as expired until garbage collection removes it.")]
    #[command(after_help = "Examples:\n  aetherfs usage acme/geoip\n  aetherfs usage acme/geoip --json")]
    Usage(UsageArgs),
    /// Print local files' AetherFS digests, to compare with `inspect --files`.
    #[command(long_about = "Print local files' AetherFS digests, to compare with `inspect --files`.\n\n\
A file's AetherFS digest is derived from its chunk list (each chunk's BLAKE3 and length, see \
docs/formats.md), not hashed from its bytes, so `b3sum FILE` does not match it. This command \
chunks each file the way `push` does (FastCDC 2020, min 16 KiB, avg 64 KiB, max 256 KiB) and \
prints `blake3:<hex>  PATH`, b3sum's layout. Nothing is sent anywhere; no hub is needed.")]
    #[command(after_help = "Examples:\n  aetherfs digest data/geo.sqlite\n  \
aetherfs inspect acme/geoip:latest --files | grep geo.sqlite   the same digest, if the file is the same\n  \
aetherfs digest --json a.csv b.csv    [{\"path\": …, \"size\": …, \"digest\": …, \"chunks\": …}, …]")]
    Digest(DigestArgs),
    /// Mount a version read-only through FUSE (foreground until SIGTERM/SIGINT).
    Mount(MountArgs),
    /// Serve a version read-only over WebDAV and/or NFSv3.
    Serve(ServeArgs),
    /// Start a hub, publish the example datasets and serve them: the one-command tour.
    Demo(DemoArgs),
    /// Run the sidecar: several mounts that follow their tags, an encrypted
    /// disk cache, prefetch, and an admin endpoint. See docs/agent.md.
    Agent(AgentArgs),
    /// Log in to the hub through your identity provider (OIDC device code):
    /// open the printed page, approve, and the refreshable credentials are stored.
    Login(LoginArgs),
    /// Forget the stored login for the hub and revoke it at the provider.
    Logout(LogoutArgs),
}

#[derive(Args, Debug)]
#[command(after_help = "Example: aetherfs login --hub https://hub.example.com --issuer https://idp.example.com \\
--client-id aetherfs-cli --scope \"openid offline_access\"\n\n\
Issuer, client id, audience and scopes default to those of the previous login to the same hub. \
Credentials are stored per hub in $AETHERFS_CONFIG_DIR, $XDG_CONFIG_HOME/aetherfs or ~/.config/aetherfs \
(credentials.json, mode 0600).")]
pub struct LoginArgs {
    /// Seconds between polls of the token endpoint while waiting for the
    /// approval [default: what the provider says, else 5].
    #[arg(long, value_name = "SECS")]
    pub poll_interval: Option<f64>,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Only forget the stored credentials; do not revoke them at the provider.
    #[arg(long)]
    pub no_revoke: bool,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The agent's TOML configuration file.
    #[arg(long, env = "AETHERFS_AGENT_CONFIG")]
    pub config: PathBuf,
    /// Admin address (/healthz, /readyz, /metrics, /v1/mounts); overrides the config.
    #[arg(long, env = "AETHERFS_ADMIN")]
    pub admin: Option<SocketAddr>,
    /// Cache directory; overrides the config.
    #[arg(long, env = "AETHERFS_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Disk cache bound, e.g. 10GiB; overrides the config.
    #[arg(long, env = "AETHERFS_CACHE_SIZE")]
    pub cache_size: Option<String>,
    /// File holding the cache key; overrides the config. `AETHERFS_CACHE_KEY`
    /// (hex or base64) takes precedence over both.
    #[arg(long, env = "AETHERFS_CACHE_KEY_FILE")]
    pub cache_key_file: Option<PathBuf>,
}

/// How mounted data is fetched and cached.
#[derive(Args, Debug, Clone)]
pub struct CacheArgs {
    /// Memory cache of hot chunks, in MiB.
    #[arg(long, env = "AETHERFS_CACHE_MIB", default_value_t = 256)]
    pub cache_mib: u64,
    /// Data fetched ahead of a sequential reader, in MiB.
    #[arg(long, default_value_t = 8)]
    pub readahead_mib: u64,
    /// A read that needs the hub fails with EIO after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub fetch_timeout_secs: u64,
    /// The encrypted disk cache under the memory tier, as the agent's
    /// (docs/cache.md). Default: a fresh directory under the system's
    /// temporary directory, removed at exit, with a random key.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// The disk cache's bound (e.g. 10GiB); 0 turns the disk cache off.
    #[arg(long, value_name = "SIZE", default_value = "4GiB", value_parser = parse_size)]
    pub cache_size: u64,
    /// File holding the disk cache's key (hex or base64, 32 bytes): with it
    /// and --cache-dir the cache survives restarts. Default: a random key
    /// held in memory only.
    #[arg(long, value_name = "FILE", requires = "cache_dir")]
    pub cache_key_file: Option<PathBuf>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    s.parse::<aetherfs_agent::config::Size>().map(|z| z.0).map_err(|e| e.to_string())
}

impl CacheArgs {
    /// How the chunk source of `mount`, `serve` and `demo` fetches.
    pub fn source_options(&self) -> aetherfs_agent::source::SourceOptions {
        aetherfs_agent::source::SourceOptions {
            memory_bytes: self.cache_mib << 20,
            timeout: std::time::Duration::from_secs(self.fetch_timeout_secs.max(1)),
            concurrency: aetherfs_agent::source::DEFAULT_CONCURRENCY,
        }
    }

    pub fn readahead_bytes(&self) -> u64 {
        self.readahead_mib << 20
    }

    /// The disk cache these flags ask for, and the temporary directory that
    /// holds it when none was given (removed when dropped).
    pub async fn disk(
        &self,
    ) -> anyhow::Result<(Option<std::sync::Arc<dyn aetherfs_cache::ChunkCache>>, Option<tempfile::TempDir>)> {
        use anyhow::Context;
        if self.cache_size == 0 {
            return Ok((None, None));
        }
        let key = match &self.cache_key_file {
            Some(p) => aetherfs_cache::CacheKey::from_file(p)
                .with_context(|| format!("cannot load the cache key {}", p.display()))?,
            None => aetherfs_cache::CacheKey::Ephemeral,
        };
        let (dir, temp) = match &self.cache_dir {
            Some(d) => (d.clone(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("aetherfs-cache-")
                    .tempdir()
                    .context("cannot create a temporary cache directory")?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let disk = aetherfs_agent::daemon::open_disk(dir, self.cache_size, key).await?;
        Ok((Some(disk), temp))
    }
}

#[derive(Args, Debug)]
pub struct MountArgs {
    /// NAME[:TAG][@DIGEST]; the tag defaults to `latest`.
    pub reference: String,
    /// An existing directory to mount on.
    pub mountpoint: PathBuf,
    /// Let other users (e.g. containers running as other uids) read the mount.
    #[arg(long)]
    pub allow_other: bool,
    /// FUSE worker threads.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Serve /healthz, /readyz and /metrics on this address.
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    #[command(flatten)]
    pub admin_token: AdminTokenArgs,
    /// Host names (besides IP addresses and localhost) WebDAV and the admin
    /// endpoint answer to, comma-separated; "*" for any. Other Host headers
    /// are refused, so a web page cannot reach them by DNS rebinding.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub allowed_hosts: Vec<String>,
    #[command(flatten)]
    pub cache: CacheArgs,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// NAME[:TAG][@DIGEST]; the tag defaults to `latest`.
    pub reference: String,
    /// Serve WebDAV on this address (e.g. 127.0.0.1:8080). Outside loopback
    /// it needs --webdav-users, --webdav-token-file or --webdav-hub-auth
    /// (or --allow-unauthenticated).
    #[arg(long)]
    pub webdav: Option<SocketAddr>,
    /// Serve NFSv3 (with MOUNT on the same port) on this address (e.g.
    /// 127.0.0.1:11111). NFSv3 clients cannot be authenticated: they are
    /// admitted by address (--nfs-allow).
    #[arg(long)]
    pub nfs: Option<SocketAddr>,
    /// NFS export name (default: the dataset's last name segment).
    #[arg(long)]
    pub export: Option<String>,
    /// Serve /healthz, /readyz and /metrics on this address.
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    #[command(flatten)]
    pub admin_token: AdminTokenArgs,
    /// Host names (besides IP addresses and localhost) WebDAV and the admin
    /// endpoint answer to, comma-separated; "*" for any. Other Host headers
    /// are refused, so a web page cannot reach them by DNS rebinding.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub allowed_hosts: Vec<String>,
    #[command(flatten)]
    pub access: FrontendArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// Who may use WebDAV and NFS (docs/security.md, "Front ends").
#[derive(Args, Debug)]
pub struct FrontendArgs {
    /// WebDAV basic auth against this users file (argon2id hashes; write it
    /// with `aetherfs hub passwd FILE USER`).
    #[arg(long, value_name = "FILE")]
    pub webdav_users: Option<PathBuf>,
    /// WebDAV bearer auth: clients send the one token this file holds.
    #[arg(long, value_name = "FILE")]
    pub webdav_token_file: Option<PathBuf>,
    /// WebDAV clients sign in with their own hub credentials (an OIDC token
    /// or a hub user's password), which the hub checks: a client reads the
    /// dataset only if the hub would let it.
    #[arg(long, conflicts_with_all = ["webdav_users", "webdav_token_file"])]
    pub webdav_hub_auth: bool,
    /// Serve WebDAV outside loopback to anyone who connects (a warning is printed).
    #[arg(long)]
    pub allow_unauthenticated: bool,
    /// Client address ranges NFS admits, comma-separated CIDR (default:
    /// 127.0.0.0/8,::1). AUTH_SYS identities are the client's claim, so an
    /// address is all a server can check.
    #[arg(long, value_delimiter = ',', value_name = "CIDRS")]
    pub nfs_allow: Vec<aetherfs_util::Cidr>,
}

impl FrontendArgs {
    pub fn access(&self) -> aetherfs_agent::frontends::FrontendAccess {
        let mut a = aetherfs_agent::frontends::FrontendAccess {
            webdav_users_file: self.webdav_users.clone(),
            webdav_token_file: self.webdav_token_file.clone(),
            webdav_hub_auth: self.webdav_hub_auth,
            allow_unauthenticated: self.allow_unauthenticated,
            ..Default::default()
        };
        if !self.nfs_allow.is_empty() {
            a.nfs_allow = self.nfs_allow.clone();
        }
        a
    }
}

/// The admin endpoint's bearer token.
#[derive(Args, Debug)]
pub struct AdminTokenArgs {
    /// /metrics and /v1/mounts of the admin endpoint need `Authorization:
    /// Bearer` with the token in this file (the probes stay open).
    #[arg(long, value_name = "FILE", requires = "admin")]
    pub admin_token_file: Option<PathBuf>,
}

impl AdminTokenArgs {
    pub fn open(&self) -> anyhow::Result<Option<aetherfs_access::TokenFile>> {
        Ok(self.admin_token_file.as_deref().map(aetherfs_access::TokenFile::open).transpose()?)
    }
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where the demo keeps its hub data and mount point.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("aetherfs-demo"))]
    pub dir: PathBuf,
    /// WebDAV address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub webdav: SocketAddr,
    /// NFSv3 address.
    #[arg(long, default_value = "127.0.0.1:11111")]
    pub nfs: SocketAddr,
    /// Hub address (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub hub_listen: SocketAddr,
    /// Do not mount through FUSE even where /dev/fuse is usable.
    #[arg(long)]
    pub no_fuse: bool,
    /// Seconds after start at which the demo publishes v2 of examples/geoip,
    /// moves latest and shows every view follow; --no-story to skip.
    #[arg(long, value_name = "SECS", default_value_t = 10, conflicts_with = "no_story")]
    pub story_after: u64,
    /// Serve v1 only: do not publish v2.
    #[arg(long)]
    pub no_story: bool,
}

#[derive(Args, Debug)]
pub struct HubArgs {
    /// Address to listen on.
    #[arg(long, env = "AETHERFS_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Where data lives: file:///DIR, s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX],
    /// az://CONTAINER[/PREFIX] or memory://. The cloud stores take their
    /// credentials and endpoints from the usual AWS_*, GOOGLE_* and AZURE_*
    /// environment variables (docs/storage-layout.md lists them).
    /// Default: a data directory under $AETHERFS_DATA_DIR, $XDG_DATA_HOME or ~/.local/share.
    #[arg(long, env = "AETHERFS_STORAGE")]
    pub storage: Option<String>,
    /// Answer pack reads, after the access check, with a 307 redirect to a
    /// short-lived presigned URL of the store: readers fetch the bytes from
    /// S3, GCS or Azure directly, not through the hub. Needs s3://, gs:// or az:// storage.
    #[arg(long, env = "AETHERFS_REDIRECT_READS")]
    pub redirect_reads: bool,
    /// How long a presigned read URL stays valid, in seconds.
    #[arg(long, env = "AETHERFS_REDIRECT_EXPIRY_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(10..=3600))]
    pub redirect_expiry_secs: u64,
    /// Server-side encryption of what the hub writes to S3: `s3` (SSE-S3,
    /// AES256), `kms` (SSE-KMS; with --sse-kms-key-id, else the account's
    /// aws/s3 key) or `dsse-kms`. Default: the bucket's own setting.
    #[arg(long, env = "AETHERFS_SSE", value_enum)]
    pub sse: Option<SseKind>,
    /// KMS key id, alias or ARN for --sse kms / dsse-kms.
    #[arg(long, env = "AETHERFS_SSE_KMS_KEY_ID", value_name = "KEY")]
    pub sse_kms_key_id: Option<String>,
    /// With --sse kms: use an S3 bucket key (fewer KMS requests, lower cost).
    #[arg(long, env = "AETHERFS_SSE_BUCKET_KEY")]
    pub sse_bucket_key: bool,
    /// Azure: encrypt with a customer-provided key, read from this file
    /// (base64 of 32 random bytes). Azure needs the key on every request, so
    /// reads cannot be redirected.
    #[arg(long, env = "AETHERFS_AZURE_ENCRYPTION_KEY_FILE", value_name = "FILE")]
    pub azure_encryption_key_file: Option<PathBuf>,
    /// Largest pack upload accepted, in MiB.
    #[arg(long, default_value_t = 128)]
    pub max_pack_mib: usize,
    /// Connections served at once; more wait until one closes.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// A request head (the first, or the next one on a kept-alive connection)
    /// that takes longer than this many seconds closes the connection.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout_secs: u64,
    /// Most memory the chunk index may take, in MiB: the chunks of recent
    /// packs (about 130 bytes each) and base versions' placements; past it the
    /// oldest are dropped. The store itself may hold any number of chunks.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_index_mib: u64,
    /// How far back, in seconds, the pack log is read at start: the recent
    /// packs a restarted replica dedups against besides the datasets' tagged
    /// versions (docs/storage-layout.md, "The chunk index"). At most 30 days:
    /// start lists one log prefix per day.
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=2_592_000))]
    pub index_window_secs: u64,
    /// Memory, in MiB, for 16 MiB pack blocks read through for readers: once
    /// readers come back to a block, the store is asked for the whole block
    /// once rather than for each small range (docs/storage-layout.md,
    /// "Requests and their cost"). 0: every read goes to the store as asked.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(0..=65_536))]
    pub read_cache_mib: u64,
    /// An upload body (pack, manifest, query) that pauses longer than this
    /// many seconds is refused with 408, freeing its upload slot.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout_secs: u64,
    /// Longest a tag long-poll (`GET …/tags/TAG?since=…&wait=…`) waits, in
    /// seconds; a longer `wait` is capped to it. Keep it below the idle
    /// timeout of any proxy or load balancer in front of the hub.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub long_poll_max_secs: u64,
    /// Auth configuration (TOML): OIDC issuers, a basic-auth users file and
    /// access rules; see docs/security.md. Without it every request is allowed.
    #[arg(long, env = "AETHERFS_AUTH_CONFIG")]
    pub auth_config: Option<PathBuf>,
    /// Host names (besides IP addresses and localhost) a hub without
    /// authentication answers to, comma-separated; "*" for any. Other Host
    /// headers are refused, so a web page cannot reach it by DNS rebinding.
    #[arg(long, env = "AETHERFS_ALLOWED_HOSTS", value_delimiter = ',', value_name = "NAMES")]
    pub allowed_hosts: Vec<String>,
    /// Lifecycle configuration (TOML): retention rules per dataset pattern and
    /// garbage-collection settings (schedule, grace, leases); see
    /// docs/operations.md. Without it: tagged versions are kept, collection
    /// runs only when asked (`aetherfs gc`).
    #[arg(long, env = "AETHERFS_LIFECYCLE", value_name = "FILE")]
    pub lifecycle: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS (reloaded when the file changes).
    #[arg(long, env = "AETHERFS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "AETHERFS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    #[command(subcommand)]
    pub action: Option<HubAction>,
}

/// `--sse`: server-side encryption on S3.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SseKind {
    /// SSE-S3 (AES256, keys managed by S3).
    S3,
    /// SSE-KMS.
    Kms,
    /// DSSE-KMS (two layers of KMS encryption).
    DsseKms,
}

#[derive(Subcommand, Debug)]
pub enum HubAction {
    /// Set a user's password in a basic-auth users file (argon2id; read from stdin).
    Passwd(PasswdArgs),
}

#[derive(Args, Debug)]
pub struct PasswdArgs {
    /// The users file (created with mode 0600 if missing).
    pub file: PathBuf,
    /// The user name.
    pub user: String,
    /// A group the user belongs to (repeatable); replaces the user's groups.
    #[arg(long = "group")]
    pub groups: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Directory to push.
    pub dir: PathBuf,
    /// Dataset, optionally with a tag: NAME[:TAG].
    pub reference: String,
    /// More tags to point at the new version (repeatable). Without any tag, `latest`.
    #[arg(long = "tag", short = 't')]
    pub tags: Vec<String>,
    /// Annotation KEY=VALUE stored in the manifest (repeatable).
    #[arg(long = "annotation", short = 'a')]
    pub annotations: Vec<String>,
    /// Store chunks uncompressed.
    #[arg(long)]
    pub no_compress: bool,
    /// Packs uploaded at once.
    #[arg(long, default_value_t = 3)]
    pub uploads: usize,
    /// Target pack size in MiB. Each pack costs two store writes (the pack
    /// and its record), so 64 MiB keeps a GiB pushed under 48 requests.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=96))]
    pub pack_mib: u16,
    #[command(flatten)]
    pub stat_cache: StatCacheArgs,
}

/// The stat cache: files whose (device, inode, size, mtime, ctime) did not
/// change since they were last hashed are not read again.
#[derive(Args, Debug)]
pub struct StatCacheArgs {
    /// Read and hash every file, ignoring (and not updating) the stat cache.
    #[arg(long, alias = "rehash")]
    pub no_stat_cache: bool,
    /// Where stat caches live (one file per directory); default
    /// `$XDG_CACHE_HOME/aetherfs/stat` (`~/.cache/aetherfs/stat`).
    #[arg(long, env = "AETHERFS_STAT_CACHE_DIR", value_name = "DIR")]
    pub stat_cache_dir: Option<PathBuf>,
}

impl StatCacheArgs {
    /// The directory of stat caches to use, if any.
    pub fn dir(&self) -> Option<PathBuf> {
        if self.no_stat_cache {
            return None;
        }
        self.stat_cache_dir.clone().or_else(aetherfs_hub_client::stat_cache::default_dir)
    }
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// NAME[:TAG][@DIGEST]; the tag defaults to `latest`.
    pub reference: String,
    /// Directory to write the version into (created if missing).
    pub dir: PathBuf,
    /// Remove files and directories the version does not have.
    #[arg(long)]
    pub delete: bool,
    /// Skip the sync (one syncfs per ~512 MiB or 16,384 files) before files are renamed into place (faster, not crash-safe).
    #[arg(long)]
    pub no_fsync: bool,
    #[command(flatten)]
    pub stat_cache: StatCacheArgs,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct TagArgs {
    #[command(subcommand)]
    pub action: Option<TagAction>,
    /// The version to tag: NAME[:TAG][@DIGEST].
    #[arg(required = true)]
    pub source: Option<String>,
    /// The tag to move: NAME:TAG. NAME may differ from the source's dataset.
    #[arg(required = true)]
    pub target: Option<String>,
    /// Compare-and-swap: move only if the tag currently points at DIGEST
    /// (or `absent`: only if it does not exist).
    #[arg(long)]
    pub expect: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum TagAction {
    /// Delete a tag (needs the admin permission). Its history stays readable;
    /// the version it pointed at stays until deleted or garbage-collected.
    Rm(TagRmArgs),
}

#[derive(Args, Debug)]
pub struct TagRmArgs {
    /// NAME:TAG.
    pub target: String,
    /// Delete only if the tag currently points at DIGEST.
    #[arg(long)]
    pub expect: Option<String>,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  aetherfs rm acme/db@blake3:3f…   delete one untagged version\n  \
                        aetherfs rm acme/db --all          delete every tag, then every version")]
pub struct RmArgs {
    /// NAME@DIGEST, or NAME with --all.
    pub reference: String,
    /// Delete the whole dataset: every tag (their histories stay readable), then every version.
    #[arg(long)]
    pub all: bool,
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Show what would be removed and reclaimed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Override the hub's grace period for fresh uploads, untagged new
    /// versions and moved packs (e.g. 0s, 10m, 1h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub grace: Option<std::time::Duration>,
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    aetherfs_util::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// NAME to list its tags, NAME:TAG for that tag's history.
    pub target: Option<String>,
}

#[derive(Args, Debug)]
pub struct DigestArgs {
    /// Files to digest (symlinks are followed); `-` reads standard input.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The older version: NAME:TAG or NAME@DIGEST.
    pub old: String,
    /// The newer version (may be in another dataset).
    pub new: String,
}

#[derive(Args, Debug)]
pub struct AgentStatsArgs {
    /// The admin endpoint: HOST:PORT or http://HOST:PORT.
    pub addr: String,
    /// Files read most to list per version.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// The admin endpoint's bearer token, if it has one.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct UsageArgs {
    /// A dataset NAME.
    pub name: String,
}

#[derive(Args, Debug)]
pub struct DuArgs {
    /// A dataset NAME.
    pub name: String,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// NAME[:TAG][@DIGEST].
    pub reference: String,
    /// List every file, directory and symlink.
    #[arg(long)]
    pub files: bool,
}
