//! Tags: compare-and-swap moves, history and long-polls, on an object store
//! that offers only create-if-absent.
//!
//! A tag is a directory of immutable records, `…/_tags/<tag>/<seq>`, one per
//! move (a deletion is a record whose digest is null). The current state is
//! the record with the highest seq; the history is all of them. A move reads
//! the current record (seq N), checks the caller's expectation against it,
//! and creates seq N+1 with `PutMode::Create`. If another writer (this
//! replica or another) created N+1 first, the create fails with
//! `AlreadyExists` and the move starts over from the new state, re-checking
//! the expectation. So two writers can never both succeed from the same
//! state: no move is ever lost, and every record's `previous` is the digest
//! of the record before it.
//!
//! Finding the highest seq without listing: `…/<tag>/head` holds a hint (a
//! plain overwrite, possibly stale, never ahead of the truth since it is
//! written after the record). Readers start from the hint, or from the record
//! this replica last saw, and probe seq+1, seq+2, … with HEAD until one is
//! missing. Without a hint they list the directory.
//!
//! Long-polls share one watcher per tag: a task that reads the tag's state
//! from storage every [`RECHECK`] (and at once after a move through this
//! replica) while anyone waits on it, and publishes it to every waiter of
//! every connection. However many wait, one tag costs one read per
//! [`RECHECK`]; the task ends with its last waiter.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aetherfs_format::api::{Expected, TagRecord};
use aetherfs_format::{Digest, Name, Tag};
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use crate::error::{AppError, StorageContext};
use crate::storage::{self, get_bytes};

/// How often a long-poll re-reads storage for moves made by other replicas.
pub(crate) const RECHECK: Duration = Duration::from_secs(1);
/// Past this many probes forward from a hint, listing is cheaper.
const PROBE_MAX: u64 = 16;
/// A move that loses this many races in a row gives up with 503.
const MOVE_ATTEMPTS: usize = 1000;
/// Tag records read at once for a history or a listing.
const READ_PARALLELISM: usize = 16;

type Key = (Name, Tag);

/// What a move does to a tag.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Move {
    Set(Digest),
    Delete,
}

/// The outcome of a move.
pub(crate) struct Applied {
    pub record: TagRecord,
    /// False when the tag already pointed at the digest: nothing was appended.
    pub moved: bool,
}

/// What a tag's watcher last read: nothing yet, the state (the latest record,
/// possibly a deletion, or none), or a storage failure.
type Seen = Option<Result<Option<TagRecord>, ()>>;

/// The watcher of one tag: waiters subscribe to `state`; `poke` asks for a
/// read now (a move through this replica).
struct Watcher {
    state: watch::Sender<Seen>,
    poke: Arc<Notify>,
}

/// Cheap to clone: every clone shares the caches and the watchers.
#[derive(Clone)]
pub(crate) struct TagStore {
    store: Arc<dyn ObjectStore>,
    /// The newest record this replica has seen per tag: a starting point for
    /// probing, never trusted as current without a probe.
    seen: Arc<Mutex<HashMap<Key, TagRecord>>>,
    watchers: Arc<Mutex<HashMap<Key, Watcher>>>,
}

impl TagStore {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store, seen: Arc::default(), watchers: Arc::default() }
    }

    /// The latest record (possibly a deletion), or `None` if the tag never existed.
    pub async fn current(&self, name: &Name, tag: &Tag) -> Result<Option<TagRecord>, AppError> {
        let key = (name.clone(), tag.clone());
        let start = self.seen.lock().get(&key).cloned();
        let start = match start {
            Some(r) => Some(r),
            None => self.read_via_hint(name, tag).await?,
        };
        let Some(mut rec) = start else {
            return self.read_via_listing(name, tag).await;
        };
        let mut seq = rec.seq;
        let mut probes = 0;
        loop {
            match self.store.head(&storage::tag_record(name, tag, seq + 1)).await {
                Ok(_) => seq += 1,
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(AppError::storage("probing a tag", e)),
            }
            probes += 1;
            if probes > PROBE_MAX {
                return self.read_via_listing(name, tag).await;
            }
        }
        if seq != rec.seq {
            rec = self
                .read_record(name, tag, seq)
                .await?
                .ok_or_else(|| AppError::storage("reading a tag", "record vanished"))?;
        }
        self.remember(&rec);
        Ok(Some(rec))
    }

    /// The record the hint names, if both exist.
    async fn read_via_hint(&self, name: &Name, tag: &Tag) -> Result<Option<TagRecord>, AppError> {
        let Some(bytes) = get_bytes(&*self.store, &storage::tag_head(name, tag)).await.ctx("reading a tag hint")?
        else {
            return Ok(None);
        };
        let Some(seq) = std::str::from_utf8(&bytes).ok().and_then(|s| s.trim().parse::<u64>().ok()) else {
            tracing::warn!(%name, %tag, "ignoring an unreadable tag hint");
            return Ok(None);
        };
        self.read_record(name, tag, seq).await
    }

    /// The record with the highest seq, found by listing.
    async fn read_via_listing(&self, name: &Name, tag: &Tag) -> Result<Option<TagRecord>, AppError> {
        let Some(&seq) = self.seqs(name, tag).await?.last() else {
            return Ok(None);
        };
        let rec = self.read_record(name, tag, seq).await?;
        if let Some(r) = &rec {
            self.remember(r);
        }
        Ok(rec)
    }

    /// Every seq stored for a tag, ascending.
    async fn seqs(&self, name: &Name, tag: &Tag) -> Result<Vec<u64>, AppError> {
        let listing: Vec<object_store::ObjectMeta> =
            self.store.list(Some(&storage::tag_dir(name, tag))).try_collect().await.ctx("listing a tag's history")?;
        let mut seqs: Vec<u64> = listing.iter().filter_map(|m| storage::parse_seq(&m.location)).collect();
        seqs.sort_unstable();
        Ok(seqs)
    }

    async fn read_record(&self, name: &Name, tag: &Tag, seq: u64) -> Result<Option<TagRecord>, AppError> {
        let key = storage::tag_record(name, tag, seq);
        let Some(bytes) = get_bytes(&*self.store, &key).await.ctx("reading a tag record")? else {
            return Ok(None);
        };
        match serde_json::from_slice::<TagRecord>(&bytes) {
            Ok(r) if r.seq == seq && &r.name == name && &r.tag == tag => Ok(Some(r)),
            Ok(_) => Err(AppError::storage("reading a tag record", format!("{key} does not describe itself"))),
            Err(e) => Err(AppError::storage("reading a tag record", format!("{key}: {e}"))),
        }
    }

    fn remember(&self, rec: &TagRecord) {
        let mut seen = self.seen.lock();
        let key = (rec.name.clone(), rec.tag.clone());
        match seen.get(&key) {
            Some(old) if old.seq >= rec.seq => {}
            _ => {
                seen.insert(key, rec.clone());
            }
        }
    }

    /// Every move of a tag, oldest first, deletions included.
    pub async fn history(&self, name: &Name, tag: &Tag) -> Result<Vec<TagRecord>, AppError> {
        let seqs = self.seqs(name, tag).await?;
        let records: Vec<Option<TagRecord>> = futures::stream::iter(seqs)
            .map(|seq| self.read_record(name, tag, seq))
            .buffered(READ_PARALLELISM)
            .try_collect()
            .await?;
        Ok(records.into_iter().flatten().collect())
    }

    /// The tags that have ever existed in a dataset.
    pub async fn tag_names(&self, name: &Name) -> Result<Vec<Tag>, AppError> {
        let listing = self.store.list_with_delimiter(Some(&storage::tags_dir(name))).await.ctx("listing tags")?;
        let mut tags: Vec<Tag> = listing.common_prefixes.iter().filter_map(|p| p.filename()?.parse().ok()).collect();
        tags.sort();
        Ok(tags)
    }

    /// The current record of every tag of a dataset that is not deleted, by tag.
    pub async fn list(&self, name: &Name) -> Result<Vec<TagRecord>, AppError> {
        let tags = self.tag_names(name).await?;
        let records: Vec<Option<TagRecord>> = futures::stream::iter(tags)
            .map(|tag| async move { self.current(name, &tag).await })
            .buffered(READ_PARALLELISM)
            .try_collect()
            .await?;
        Ok(records.into_iter().flatten().filter(|r| r.digest.is_some()).collect())
    }

    /// Moves (or deletes) a tag by compare-and-swap; see the module docs.
    pub async fn apply(
        &self,
        name: &Name,
        tag: &Tag,
        mv: Move,
        expected: Option<Expected>,
        by: &str,
    ) -> Result<Applied, AppError> {
        for _ in 0..MOVE_ATTEMPTS {
            let cur = self.current(name, tag).await?;
            let cur_digest = cur.as_ref().and_then(|r| r.digest);
            if let Some(exp) = expected {
                check_expected(name, tag, exp, cur.as_ref())?;
            }
            let new_digest = match mv {
                Move::Delete if cur_digest.is_none() => return Err(tag_not_found(name, tag)),
                Move::Delete => None,
                Move::Set(d) => {
                    if let (Some(c), Some(r)) = (cur_digest, &cur)
                        && c == d
                    {
                        // Re-setting a tag to where it is changes nothing; keep the history clean.
                        return Ok(Applied { record: r.clone(), moved: false });
                    }
                    Some(d)
                }
            };
            let seq = cur.as_ref().map_or(1, |r| r.seq + 1);
            let record = TagRecord {
                name: name.clone(),
                tag: tag.clone(),
                digest: new_digest,
                previous: cur_digest,
                by: by.to_string(),
                at: now_rfc3339(),
                seq,
            };
            let body = serde_json::to_vec(&record).map_err(|e| AppError::internal("encoding a tag record", e))?;
            let put = self
                .store
                .put_opts(&storage::tag_record(name, tag, seq), PutPayload::from(body), PutMode::Create.into())
                .await;
            match put {
                Ok(_) => {
                    self.remember(&record);
                    // The hint only saves listings; a failure costs nothing but speed.
                    let hint = PutPayload::from(seq.to_string());
                    if let Err(e) = self.store.put(&storage::tag_head(name, tag), hint).await {
                        tracing::warn!(%name, %tag, error = %e, "could not update a tag hint");
                    }
                    self.notify(name, tag);
                    return Ok(Applied { record, moved: true });
                }
                // Someone else moved the tag first: reload and re-check.
                Err(object_store::Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(AppError::storage("writing a tag record", e)),
            }
        }
        Err(AppError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "tag_contended",
            format!("tag {name}:{tag} is moving too often to move it now; try again"),
        ))
    }

    fn notify(&self, name: &Name, tag: &Tag) {
        if let Some(w) = self.watchers.lock().get(&(name.clone(), tag.clone())) {
            w.poke.notify_one();
        }
    }

    /// Waits until the tag's digest differs from `since` (a deletion counts as
    /// absent) or `timeout` passes, and returns the record at that moment (as
    /// the tag's watcher last read it).
    pub async fn wait(
        &self,
        name: &Name,
        tag: &Tag,
        since: Expected,
        timeout: Duration,
    ) -> Result<Option<TagRecord>, AppError> {
        let mut rx = self.subscribe(name, tag);
        let moved = |seen: &Seen| match seen {
            None => false,
            Some(Err(())) => true,
            Some(Ok(cur)) => {
                let digest = cur.as_ref().and_then(|r| r.digest);
                match since {
                    Expected::Absent => digest.is_some(),
                    Expected::Digest(d) => digest != Some(d),
                }
            }
        };
        let _ = tokio::time::timeout(timeout, rx.wait_for(moved)).await;
        let seen = rx.borrow().clone();
        match seen {
            Some(Ok(cur)) => Ok(cur),
            Some(Err(())) => Err(AppError::storage("reading a tag", "the tag's watcher could not read storage")),
            // The wait ended before the first read.
            None => self.current(name, tag).await,
        }
    }

    /// Subscribes to the tag's watcher, starting it if no one watches yet.
    fn subscribe(&self, name: &Name, tag: &Tag) -> watch::Receiver<Seen> {
        let key = (name.clone(), tag.clone());
        let mut map = self.watchers.lock();
        if let Some(w) = map.get(&key) {
            return w.state.subscribe();
        }
        let (state, rx) = watch::channel(None);
        let poke = Arc::new(Notify::new());
        map.insert(key.clone(), Watcher { state: state.clone(), poke: poke.clone() });
        drop(map);
        tokio::spawn(self.clone().watch(key, state, poke));
        rx
    }

    /// One tag's watcher: reads while anyone waits, then removes itself.
    async fn watch(self, key: Key, state: watch::Sender<Seen>, poke: Arc<Notify>) {
        loop {
            {
                // Under the map's lock, so no one subscribes to a watcher that is leaving.
                let mut map = self.watchers.lock();
                if state.receiver_count() == 0 {
                    map.remove(&key);
                    return;
                }
            }
            let read = match self.current(&key.0, &key.1).await {
                Ok(r) => Ok(r),
                Err(e) => {
                    tracing::warn!(name = %key.0, tag = %key.1, error = %e.message, "a tag watcher could not read storage");
                    Err(())
                }
            };
            // A failure reaches only waiters who have nothing better.
            state.send_if_modified(|seen| {
                let keep = (read.is_err() && matches!(seen, Some(Ok(_)))) || seen.as_ref() == Some(&read);
                if !keep {
                    *seen = Some(read);
                }
                !keep
            });
            tokio::select! {
                _ = poke.notified() => {}
                _ = tokio::time::sleep(RECHECK) => {}
                _ = state.closed() => {}
            }
        }
    }
}

fn check_expected(name: &Name, tag: &Tag, exp: Expected, cur: Option<&TagRecord>) -> Result<(), AppError> {
    let digest = cur.and_then(|r| r.digest);
    let ok = match exp {
        Expected::Absent => digest.is_none(),
        Expected::Digest(d) => digest == Some(d),
    };
    if ok {
        return Ok(());
    }
    let state = match (cur, digest) {
        (_, Some(d)) => format!("is at {d}"),
        (Some(_), None) => "was deleted".to_string(),
        (None, None) => "does not exist".to_string(),
    };
    Err(AppError::conflict("tag_conflict", format!("tag {name}:{tag} {state} (expected {exp})")))
}

pub(crate) fn tag_not_found(name: &Name, tag: &Tag) -> AppError {
    AppError::not_found("tag_not_found", format!("tag {name}:{tag} does not exist"))
}

fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

/// A time as RFC 3339, as every record of the API writes it.
pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}
