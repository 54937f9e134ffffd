//! One served dataset: its filesystem, its front ends, and the one place a
//! version switch happens.
//!
//! [`Mount::switch_to`] does every step of a switch, in order: install the
//! new version in the core (new lookups from the root see it, open files keep
//! theirs), record it, tell the kernel to drop what it cached of the old root
//! (without this FUSE keeps showing the old names for up to the root's TTL),
//! forget versions older than [`KEEP_PREVIOUS_VERSIONS`], and count the
//! switch; then run the mount's `on_switch` hook. A materialized mount
//! first publishes the version (built before by [`Mount::prepare`]), so a
//! version that cannot be published is never switched to. Nothing else
//! changes what a mount serves.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aetherfs_format::{Digest, Manifest, Name, Reference};
use aetherfs_mounts::fuse::{FuseError, FuseMount, FuseOptions};
use aetherfs_mounts::{ChunkSource, DatasetFs, Version};
use parking_lot::{Mutex, RwLock};

use crate::materialize::{MaterializeError, MaterializeStatus, Materializer};
use crate::on_switch::{Hook, HookStatus, SwitchEvent};

/// Older versions kept readable for files opened before a switch.
pub const KEEP_PREVIOUS_VERSIONS: usize = 3;

/// A served dataset and what it currently serves.
pub struct Mount {
    reference: Reference,
    fs: Arc<DatasetFs>,
    current: RwLock<Digest>,
    /// The initial prefetch is done: this mount may be relied upon.
    ready: AtomicBool,
    switches: AtomicU64,
    last_switch_micros: AtomicU64,
    frontends: RwLock<Vec<String>>,
    /// The FUSE session, told about switches and unmounted at shutdown.
    fuse: Mutex<Option<FuseMount>>,
    materializer: OnceLock<Materializer>,
    hook: OnceLock<Hook>,
    /// Why the last attempt to bring up or switch to a version failed;
    /// cleared by the next success.
    last_error: Mutex<Option<String>>,
}

/// What a mount reports about itself.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MountStatus {
    pub reference: String,
    pub name: String,
    pub digest: String,
    pub follows_tag: bool,
    pub ready: bool,
    pub switches: u64,
    pub frontends: Vec<String>,
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub materialize: Option<MaterializeStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_switch: Option<HookStatus>,
}

impl Mount {
    /// A mount serving `manifest` (whose digest is `digest`) read through
    /// `source`, reading `readahead` bytes ahead of sequential readers.
    pub fn new(
        reference: Reference,
        digest: Digest,
        manifest: &Manifest,
        source: Arc<dyn ChunkSource>,
        readahead: u64,
    ) -> Arc<Self> {
        let fs = Arc::new(DatasetFs::new(Version::new(digest, manifest), source).with_readahead(readahead));
        Arc::new(Self {
            reference,
            fs,
            current: RwLock::new(digest),
            ready: AtomicBool::new(false),
            switches: AtomicU64::new(0),
            last_switch_micros: AtomicU64::new(0),
            frontends: RwLock::new(Vec::new()),
            fuse: Mutex::new(None),
            materializer: OnceLock::new(),
            hook: OnceLock::new(),
            last_error: Mutex::new(None),
        })
    }

    /// Makes this a materialized mount (once, before it serves).
    pub fn set_materializer(&self, m: Materializer) {
        self.add_frontend(format!("materialize:{}", m.dir().display()));
        let _ = self.materializer.set(m);
    }

    pub fn materializer(&self) -> Option<&Materializer> {
        self.materializer.get()
    }

    /// Runs `hook` after each switch (set once, before following).
    pub fn set_hook(&self, hook: Hook) {
        let _ = self.hook.set(hook);
    }

    pub fn hook(&self) -> Option<&Hook> {
        self.hook.get()
    }

    /// Records why bringing up or switching to a version failed (`None`: it worked).
    pub fn record_error(&self, e: Option<&(dyn std::error::Error + 'static)>) {
        *self.last_error.lock() = e.map(aetherfs_util::one_line);
    }

    /// Gets `next` ready to be switched to: a materialized mount writes it
    /// out (fetching only what the current version lacks). Failures are
    /// recorded in the status.
    pub async fn prepare(&self, next: Digest, manifest: &Arc<Manifest>) -> Result<(), MaterializeError> {
        let Some(m) = self.materializer() else { return Ok(()) };
        let r = m.build(next, manifest.clone()).await.map(|_| ());
        self.record_error(r.as_ref().err().map(|e| e as &(dyn std::error::Error + 'static)));
        r
    }

    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    pub fn name(&self) -> &Name {
        &self.reference.name
    }

    /// The filesystem the front ends serve.
    pub fn fs(&self) -> &Arc<DatasetFs> {
        &self.fs
    }

    /// The version served now.
    pub fn digest(&self) -> Digest {
        *self.current.read()
    }

    /// A reference by tag follows it; one by digest never changes.
    pub fn follows_tag(&self) -> bool {
        self.reference.digest.is_none()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed)
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Relaxed);
    }

    pub fn switches(&self) -> u64 {
        self.switches.load(Relaxed)
    }

    /// How long the last switch took, from seeing the tag move to serving.
    pub fn last_switch(&self) -> Duration {
        Duration::from_micros(self.last_switch_micros.load(Relaxed))
    }

    /// Records a front end (`webdav:URL`, `nfs:URL`, `fuse:PATH`) for status pages.
    pub fn add_frontend(&self, f: String) {
        self.frontends.write().push(f);
    }

    pub fn status(&self) -> MountStatus {
        MountStatus {
            reference: self.reference.to_string(),
            name: self.name().to_string(),
            digest: self.digest().to_string(),
            follows_tag: self.follows_tag(),
            ready: self.is_ready(),
            switches: self.switches(),
            frontends: self.frontends.read().clone(),
            last_error: self.last_error.lock().clone(),
            materialize: self.materializer().map(Materializer::status),
            on_switch: self.hook().map(Hook::status),
        }
    }

    /// Mounts the filesystem with FUSE at `path` (which must exist); the
    /// session is kept so switches reach the kernel.
    pub fn mount_fuse(&self, path: &Path, opts: &FuseOptions, rt: tokio::runtime::Handle) -> Result<(), FuseError> {
        let session = aetherfs_mounts::fuse::mount(self.fs.clone(), path, opts, rt)?;
        *self.fuse.lock() = Some(session);
        self.add_frontend(format!("fuse:{}", path.display()));
        Ok(())
    }

    /// Takes the FUSE session out (to unmount it), if there is one.
    pub fn take_fuse(&self) -> Option<FuseMount> {
        self.fuse.lock().take()
    }

    /// A materialized mount writes and publishes the version it was made
    /// with (at once if it is on disk from an earlier run); others have
    /// nothing to do.
    pub async fn materialize_initial(&self, manifest: &Arc<Manifest>) -> Result<(), MaterializeError> {
        let Some(m) = self.materializer() else { return Ok(()) };
        let digest = self.digest();
        self.prepare(digest, manifest).await?;
        let r = m.publish(&digest);
        self.record_error(r.as_ref().err().map(|e| e as &(dyn std::error::Error + 'static)));
        r
    }

    /// Serves `next` from now on: every step of a switch (see the module
    /// doc). `seen` is when the tag move was seen; the time since then is what
    /// the metrics report as the switch's duration. Switching to the version
    /// already served changes nothing.
    pub async fn switch_to(
        &self,
        next: Digest,
        manifest: &Manifest,
        seen: std::time::Instant,
    ) -> Result<(), MaterializeError> {
        let since = self.digest();
        if next == since {
            return Ok(());
        }
        if let Some(m) = self.materializer()
            && let Err(e) = m.publish(&next)
        {
            self.record_error(Some(&e));
            return Err(e);
        }
        self.record_error(None);
        let previous = self.fs.current();
        self.fs.switch(Version::new(next, manifest));
        *self.current.write() = next;
        if let Some(f) = self.fuse.lock().as_ref()
            && let Err(e) = f.notify_switch(&previous)
        {
            tracing::warn!(error = %aetherfs_util::one_line(&e), "kernel cache invalidation failed; the switch shows within a second");
        }
        self.fs.retain_previous(KEEP_PREVIOUS_VERSIONS);
        self.switches.fetch_add(1, Relaxed);
        self.last_switch_micros.store(seen.elapsed().as_micros() as u64, Relaxed);
        if let Some(hook) = self.hook() {
            let path = self.materializer().map(|m| m.path_of(&next));
            hook.run(&SwitchEvent { reference: self.reference.to_string(), previous: since, digest: next, path }).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use aetherfs_mounts::testing::version_of_dir;
    use aetherfs_mounts::{FsError, ROOT};

    use super::*;

    /// Versions 1..=n of a dataset whose `data.txt` says which it is; the
    /// source of the last holds every version's chunks (its `v*.txt` files
    /// carry the older contents).
    fn versions(n: usize) -> Vec<(Digest, Manifest, Arc<dyn ChunkSource>)> {
        (1..=n)
            .map(|i| {
                let dir = tempfile::tempdir().expect("temp dir");
                std::fs::write(dir.path().join("data.txt"), format!("version {i}\n")).expect("write");
                for old in 1..i {
                    std::fs::write(dir.path().join(format!("v{old}.txt")), format!("version {old}\n")).expect("write");
                }
                let (v, source, manifest) = version_of_dir(dir.path()).expect("version");
                (v.digest, manifest, Arc::new(source) as Arc<dyn ChunkSource>)
            })
            .collect()
    }

    async fn read_all(fs: &DatasetFs, ino: u64) -> String {
        String::from_utf8(fs.read(ino, 0, 1 << 20).await.expect("read").to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn switch_to_serves_the_new_version_and_keeps_open_files() {
        let vs = versions(2);
        let source = vs[1].2.clone();
        let reference: Reference = "acme/data:latest".parse().expect("ref");
        let m = Mount::new(reference, vs[0].0, &vs[0].1, source, 0);
        assert!(m.follows_tag());
        let old = m.fs().lookup(ROOT, "data.txt").expect("v1 file");
        assert_eq!(read_all(m.fs(), old.ino).await, "version 1\n");

        m.switch_to(vs[1].0, &vs[1].1, Instant::now()).await.expect("switch");
        assert_eq!(m.digest(), vs[1].0);
        assert_eq!(m.switches(), 1);
        assert_eq!(m.status().digest, vs[1].0.to_string());
        // New lookups from the root see the new version; the old handle keeps its bytes.
        let new = m.fs().lookup(ROOT, "data.txt").expect("v2 file");
        assert_ne!(new.ino, old.ino);
        assert_eq!(read_all(m.fs(), new.ino).await, "version 2\n");
        assert_eq!(read_all(m.fs(), old.ino).await, "version 1\n");
        assert!(m.fs().lookup(ROOT, "v1.txt").is_ok());

        // The same version again is no switch.
        m.switch_to(vs[1].0, &vs[1].1, Instant::now()).await.expect("switch");
        assert_eq!(m.switches(), 1);
    }

    #[tokio::test]
    async fn switch_to_forgets_versions_beyond_the_kept_ones() {
        let n = KEEP_PREVIOUS_VERSIONS + 3;
        let vs = versions(n);
        let source = vs[n - 1].2.clone();
        let m = Mount::new("acme/data:latest".parse().expect("ref"), vs[0].0, &vs[0].1, source, 0);
        let first = m.fs().lookup(ROOT, "data.txt").expect("v1 file");
        for (d, manifest, _) in &vs[1..] {
            m.switch_to(*d, manifest, Instant::now()).await.expect("switch");
        }
        assert_eq!(m.switches(), (n - 1) as u64);
        assert_eq!(m.fs().versions_held(), KEEP_PREVIOUS_VERSIONS + 1);
        // A handle of a forgotten version is stale, never another version's bytes.
        assert_eq!(m.fs().read(first.ino, 0, 100).await.err(), Some(FsError::Stale));
        assert_eq!(
            read_all(m.fs(), m.fs().lookup(ROOT, "data.txt").expect("current").ino).await,
            format!("version {n}\n")
        );
    }
}
