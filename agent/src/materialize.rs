//! Materialize mode, for clusters that forbid FUSE: each version is written
//! as plain, read-only files under `DIR/.versions/<digest>/` and published
//! by atomically replacing the symlink `DIR/current`.
//!
//! - A version is built in `DIR/.versions/.partial-<digest>/` from the
//!   current version's files (unchanged files are hard-linked, costing no
//!   write; changed files are built from its local chunks) plus the chunks
//!   fetched from the hub. Every file is verified against its digest as it
//!   is written, every linked one when it is indexed.
//! - Only then is it synced (`syncfs`) and renamed to its final name, so a
//!   directory under its digest is always complete; `current` is replaced by
//!   a rename, so it always points at a complete version. A kill at any
//!   instant leaves at worst a partial directory, removed at the next start.
//! - The last `keep_versions` versions stay (open files and paths kept by
//!   readers keep working); older ones are deleted after each publish.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::SystemTime;

use aetherfs_format::{Digest, Manifest, Name};
use aetherfs_hub_client::{ClientError, HubClient, PullOptions, PullReport, pull_into};

const VERSIONS: &str = ".versions";
const PARTIAL_PREFIX: &str = ".partial-";
const CURRENT: &str = "current";
const CURRENT_TMP: &str = ".current.tmp";

/// Versions kept unless configured.
pub const DEFAULT_KEEP_VERSIONS: usize = 2;

/// Why a version could not be written or published.
#[derive(Debug, thiserror::Error)]
pub enum MaterializeError {
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write version {digest}")]
    Pull {
        digest: Digest,
        #[source]
        source: ClientError,
    },
    #[error("the build task failed")]
    Task(#[source] tokio::task::JoinError),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> MaterializeError + 'a {
    move |source| MaterializeError::Io { op, path: path.to_path_buf(), source }
}

/// Writes and publishes the versions of one dataset under one directory.
pub struct Materializer {
    dir: PathBuf,
    keep: usize,
    client: HubClient,
    name: Name,
    stats: BuildStats,
}

/// Totals over every build, for the metrics.
#[derive(Default)]
struct BuildStats {
    builds: AtomicU64,
    fetched_bytes: AtomicU64,
    reused_bytes: AtomicU64,
    files_written: AtomicU64,
    files_linked: AtomicU64,
    files_cloned: AtomicU64,
}

/// What a materialized mount reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MaterializeStatus {
    pub dir: PathBuf,
    /// The version `current` points at.
    pub current: Option<String>,
    pub keep_versions: usize,
    pub builds: u64,
    /// Stored bytes fetched from the hub, over all builds.
    pub fetched_bytes: u64,
    /// Plaintext bytes copied from the previous version's files.
    pub reused_bytes: u64,
    pub files_written: u64,
    /// Unchanged files hard-linked from the previous version (no write).
    pub files_linked: u64,
    /// Changed files cloned from the previous version (a reflink where the
    /// filesystem can, else an in-kernel copy) and patched where they differ.
    pub files_cloned: u64,
}

impl Materializer {
    /// Prepares `dir` (created if missing) and removes what a killed agent
    /// left half-written.
    pub fn open(dir: &Path, keep: usize, client: HubClient, name: Name) -> Result<Self, MaterializeError> {
        let versions = dir.join(VERSIONS);
        fs::create_dir_all(&versions).map_err(io("cannot create", &versions))?;
        let tmp = dir.join(CURRENT_TMP);
        if fs::symlink_metadata(&tmp).is_ok() {
            fs::remove_file(&tmp).map_err(io("cannot remove", &tmp))?;
        }
        for e in fs::read_dir(&versions).map_err(io("cannot list", &versions))? {
            let e = e.map_err(io("cannot list", &versions))?;
            if e.file_name().to_string_lossy().starts_with(PARTIAL_PREFIX) {
                remove_tree(&e.path())?;
                tracing::info!(path = %e.path().display(), "removed a partly written version");
            }
        }
        Ok(Self { dir: dir.to_path_buf(), keep: keep.max(1), client, name, stats: BuildStats::default() })
    }

    pub fn status(&self) -> MaterializeStatus {
        let s = &self.stats;
        MaterializeStatus {
            dir: self.dir.clone(),
            current: self.current().map(|d| d.to_string()),
            keep_versions: self.keep,
            builds: s.builds.load(Relaxed),
            fetched_bytes: s.fetched_bytes.load(Relaxed),
            reused_bytes: s.reused_bytes.load(Relaxed),
            files_written: s.files_written.load(Relaxed),
            files_linked: s.files_linked.load(Relaxed),
            files_cloned: s.files_cloned.load(Relaxed),
        }
    }

    /// The directory `current` resolves to for `digest`.
    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        self.version_dir(digest)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The published version, if `current` points at a complete one.
    pub fn current(&self) -> Option<Digest> {
        let target = fs::read_link(self.dir.join(CURRENT)).ok()?;
        let digest: Digest = target.strip_prefix(VERSIONS).ok()?.to_str()?.parse().ok()?;
        self.version_dir(&digest).is_dir().then_some(digest)
    }

    fn version_dir(&self, d: &Digest) -> PathBuf {
        self.dir.join(VERSIONS).join(d.to_string())
    }

    /// Writes `digest` (whose verified manifest is `manifest`) unless it is
    /// already complete on disk. Returns what the build did.
    pub async fn build(&self, digest: Digest, manifest: Arc<Manifest>) -> Result<PullReport, MaterializeError> {
        let done = self.version_dir(&digest);
        if done.is_dir() {
            return Ok(PullReport { digest: digest.to_string(), ..PullReport::default() });
        }
        let partial = self.dir.join(VERSIONS).join(format!("{PARTIAL_PREFIX}{digest}"));
        if fs::symlink_metadata(&partial).is_ok() {
            remove_tree(&partial)?;
        }
        let base = self.current().map(|d| self.version_dir(&d));
        // One syncfs before the rename replaces an fsync per file.
        let opts = PullOptions { read_only: true, fsync: false, ..PullOptions::default() };
        let built =
            pull_into(&self.client, &self.name, &digest, manifest, &partial, base.as_deref(), &opts, Arc::new(|_| {}))
                .await;
        let report = match built {
            Ok(r) => r,
            Err(source) => {
                if let Err(e) = remove_tree(&partial) {
                    tracing::warn!(error = %aetherfs_util::one_line(&e), "cannot remove a failed build");
                }
                return Err(MaterializeError::Pull { digest, source });
            }
        };
        let (partial2, done2) = (partial.clone(), done.clone());
        tokio::task::spawn_blocking(move || {
            sync_filesystem(&partial2)?;
            fs::rename(&partial2, &done2).map_err(io("cannot rename", &partial2))?;
            sync_dir(done2.parent().unwrap_or(&done2))
        })
        .await
        .map_err(MaterializeError::Task)??;
        let s = &self.stats;
        s.builds.fetch_add(1, Relaxed);
        s.fetched_bytes.fetch_add(report.fetched_bytes, Relaxed);
        s.reused_bytes.fetch_add(report.reused_bytes, Relaxed);
        s.files_written.fetch_add(report.files_written, Relaxed);
        s.files_linked.fetch_add(report.files_unchanged, Relaxed);
        s.files_cloned.fetch_add(report.files_cloned, Relaxed);
        Ok(report)
    }

    /// Points `current` at `digest` (built before) in one rename, then
    /// deletes versions beyond the newest `keep`.
    pub fn publish(&self, digest: &Digest) -> Result<(), MaterializeError> {
        let version = self.version_dir(digest);
        // Its time orders it among the kept versions.
        fs::File::open(&version)
            .and_then(|f| f.set_modified(SystemTime::now()))
            .map_err(io("cannot touch", &version))?;
        let tmp = self.dir.join(CURRENT_TMP);
        let _ = fs::remove_file(&tmp);
        let target = Path::new(VERSIONS).join(digest.to_string());
        std::os::unix::fs::symlink(&target, &tmp).map_err(io("cannot create", &tmp))?;
        let current = self.dir.join(CURRENT);
        fs::rename(&tmp, &current).map_err(io("cannot replace", &current))?;
        sync_dir(&self.dir)?;
        self.prune(digest)
    }

    /// Deletes all but the newest `keep` complete versions (`current` always stays).
    fn prune(&self, current: &Digest) -> Result<(), MaterializeError> {
        let versions = self.dir.join(VERSIONS);
        let mut found: Vec<(SystemTime, PathBuf)> = Vec::new();
        for e in fs::read_dir(&versions).map_err(io("cannot list", &versions))? {
            let e = e.map_err(io("cannot list", &versions))?;
            let name = e.file_name();
            let Some(d) = name.to_str().and_then(|n| n.parse::<Digest>().ok()) else { continue };
            if d == *current {
                continue;
            }
            let at = e.metadata().and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
            found.push((at, e.path()));
        }
        found.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (_, old) in found.into_iter().skip(self.keep - 1) {
            remove_tree(&old)?;
            tracing::info!(path = %old.display(), "removed an old version");
        }
        Ok(())
    }
}

/// Removes a version directory, making its read-only directories writable first.
fn remove_tree(path: &Path) -> Result<(), MaterializeError> {
    if fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    make_dirs_writable(path);
    fs::remove_dir_all(path).map_err(io("cannot remove", path))
}

fn make_dirs_writable(dir: &Path) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            make_dirs_writable(&e.path());
        }
    }
}

/// Flushes every file of the filesystem holding `path` to stable storage.
fn sync_filesystem(path: &Path) -> Result<(), MaterializeError> {
    let f = fs::File::open(path).map_err(io("cannot open", path))?;
    rustix::fs::syncfs(&f).map_err(|e| io("cannot sync", path)(e.into()))
}

fn sync_dir(path: &Path) -> Result<(), MaterializeError> {
    fs::File::open(path).and_then(|f| f.sync_all()).map_err(io("cannot sync", path))
}
