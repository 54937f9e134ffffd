//! Following a tag: long-poll the hub for a move, fetch the new manifest,
//! prefetch what the mount's policy asks for, [`Mount::prepare`] it (a
//! materialized mount writes it out), then [`Mount::switch_to`].
//! Every step that needs the hub retries with one [`Backoff`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use aetherfs_format::{ChunkRef, Digest, Manifest, Reference};
use aetherfs_hub_client::ClientError;
use aetherfs_mounts::SourceError;

use crate::config::Prefetch;
use crate::mount::Mount;
use crate::source::{HubPacks, HubSource};

/// Exponential backoff from 250 ms to 30 s, reset on success.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(30);

    pub fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The wait before the next attempt; each call doubles the one after.
    pub fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }

    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `f` until it succeeds, waiting by a [`Backoff`] between failures.
pub async fn retry<T, E, F>(what: &str, mut f: impl FnMut() -> F) -> T
where
    E: std::error::Error + 'static,
    F: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::new();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                let wait = backoff.step();
                tracing::warn!(error = %aetherfs_util::one_line(&e), "{what} failed; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Why resolving a reference failed.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot resolve {reference}")]
    Resolve {
        reference: Reference,
        #[source]
        source: ClientError,
    },
    #[error("cannot fetch the manifest of {reference}@{digest}")]
    Manifest {
        reference: Reference,
        digest: Digest,
        #[source]
        source: ClientError,
    },
}

/// Resolves a reference and fetches its verified manifest; its packs are
/// then read through its dataset.
pub async fn resolve(packs: &HubPacks, reference: &Reference) -> Result<(Digest, Manifest), ResolveError> {
    let client = packs.client();
    let digest = client
        .resolve(reference)
        .await
        .map_err(|source| ResolveError::Resolve { reference: reference.clone(), source })?;
    let (manifest, _) = client
        .get_manifest(&reference.name, &digest)
        .await
        .map_err(|source| ResolveError::Manifest { reference: reference.clone(), digest, source })?;
    packs.register(&reference.name, &digest, &manifest);
    Ok((digest, manifest))
}

/// Fetches what `policy` asks for into the cache; returns the bytes fetched.
pub async fn prefetch(source: &Arc<HubSource>, manifest: &Manifest, policy: Prefetch) -> Result<u64, SourceError> {
    match policy {
        Prefetch::None | Prefetch::Metadata => Ok(0),
        Prefetch::All => {
            let chunks: Vec<ChunkRef> = manifest.unique_chunks().into_values().collect();
            source.prefetch(&chunks).await
        }
    }
}

/// Follows `mount`'s tag for ever: each move is fetched, prefetched and
/// switched to. Returns at once for a mount by digest.
pub async fn follow(packs: Arc<HubPacks>, source: Arc<HubSource>, mount: Arc<Mount>, policy: Prefetch, poll: Duration) {
    if !mount.follows_tag() {
        return;
    }
    let client = packs.client();
    let reference = mount.reference().clone();
    let tag = reference.tag_or_latest();
    let mut backoff = Backoff::new();
    loop {
        let since = mount.digest();
        match client.wait_tag(&reference.name, &tag, Some(since), poll).await {
            Ok(rec) => {
                backoff.reset();
                let Some(next) = rec.digest.filter(|d| *d != since) else { continue };
                let seen = Instant::now();
                let at = format!("{}@{next}", reference.name);
                let (manifest, _) =
                    retry(&format!("fetching {at}"), || client.get_manifest(&reference.name, &next)).await;
                packs.register(&reference.name, &next, &manifest);
                let manifest = Arc::new(manifest);
                retry(&format!("prefetching {at}"), || prefetch(&source, &manifest, policy)).await;
                // A version that cannot be written or published is not
                // retried as such: the next poll answers at once with
                // whatever the tag points at by then.
                let switched = match mount.prepare(next, &manifest).await {
                    Ok(()) => mount.switch_to(next, &manifest, seen).await,
                    Err(e) => Err(e),
                };
                match switched {
                    Ok(()) => {
                        // The switch's own time, without the on_switch hook's run.
                        eprintln!(
                            "aetherfs agent: {reference}: switched {since} -> {next} in {:?}",
                            mount.last_switch()
                        )
                    }
                    Err(e) => {
                        let wait = backoff.step();
                        eprintln!(
                            "aetherfs agent: {reference}: cannot switch to {next}, staying on {since}: {}; retrying in {wait:?}",
                            aetherfs_util::one_line(&e)
                        );
                        tokio::time::sleep(wait).await;
                    }
                }
            }
            Err(e) => {
                let wait = backoff.step();
                tracing::warn!(error = %aetherfs_util::one_line(&e), "following {reference} failed; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Long-poll timeout used when following a tag.
pub fn poll_interval(secs: u64) -> Duration {
    Duration::from_secs(secs.clamp(1, 300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new();
        let steps: Vec<u128> = (0..10).map(|_| b.step().as_millis()).collect();
        assert_eq!(steps, [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        b.reset();
        assert_eq!(b.step(), Duration::from_millis(250));
    }
}
