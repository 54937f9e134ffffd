//! The object store: opening it from a URL (`backend`), counting what is
//! asked of it (`metered`), presigning reads (`presign`), the key layout
//! inside it, and small helpers for reading it.
//!
//! Every durable byte of the hub lives under these keys (see
//! docs/storage-layout.md):
//!
//! ```text
//! packs/<hex>.pack                                   pack bytes
//! packs/<hex>.idx                                    its index (older hubs; now in the pack's record)
//! packs/<hex>.links/<name…>                          empty: dataset <name> may read the pack
//! datasets/<name…>/_manifests/<hex>                  manifest bytes (what the version is)
//! datasets/<name…>/_placements/<hex>                 its placement (where its chunks are; GC rewrites it)
//! datasets/<name…>/_pending/<hex>                    a publish in progress (older hubs): the placement it will write
//! datasets/<name…>/_leases/<reader>                  JSON: versions a reader serves, until when
//! datasets/<name…>/_doomed/<hex>                     empty: the version is being removed
//! datasets/<name…>/_tags/<tag>/<seq, 20 digits>      one TagRecord per move, create-if-absent
//! datasets/<name…>/_tags/<tag>/head                  hint: the latest seq (plain overwrite)
//! gc/condemned/<hex>                                 pack being collected: no publish may use it
//! gc/lock                                            JSON: the collection running, until when
//! index/log/<day>/<ms, 20 digits>-<hex>              pack <hex>'s record: uploader and index (the commit point)
//! ```
//!
//! Name segments start with `[a-z0-9]`, so `_manifests` and `_tags` can never
//! collide with a nested dataset name.

mod backend;
mod metered;
mod presign;

use std::sync::Arc;

use aetherfs_format::{Digest, Name, Tag};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

pub use backend::Encryption;
pub(crate) use backend::{Opened, open};
pub(crate) use metered::{MeteredStore, StoreMeters};
pub use presign::Presigner;

use crate::error::HubError;

/// `file:///abs/dir`, `file://localhost/abs/dir`, or leniently
/// `file://rel/dir` (relative to the working directory, as people write it).
/// The path is taken literally unless it contains '%', so directories with
/// spaces or '#' work without URL-encoding them.
fn open_dir(url: &str, rest: &str) -> Result<(Arc<dyn ObjectStore>, String), HubError> {
    let invalid = |reason: String| HubError::InvalidStorageUrl { url: url.to_string(), reason };
    let rest = rest.strip_prefix("localhost").filter(|r| r.starts_with('/')).unwrap_or(rest);
    let dir = if rest.contains('%') {
        url::Url::parse(&format!("file://{rest}"))
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .ok_or_else(|| invalid("not a valid file URL".to_string()))?
    } else {
        std::path::PathBuf::from(rest)
    };
    if dir.as_os_str().is_empty() {
        return Err(invalid("no directory: use file:///DIR".to_string()));
    }
    std::fs::create_dir_all(&dir).map_err(|source| HubError::CreateDir { path: dir.display().to_string(), source })?;
    let dir = dir.canonicalize().map_err(|source| HubError::CreateDir { path: dir.display().to_string(), source })?;
    let store =
        LocalFileSystem::new_with_prefix(&dir).map_err(|source| HubError::Storage { url: url.to_string(), source })?;
    Ok((Arc::new(store), format!("file://{}", dir.display())))
}

pub(crate) const PACKS: &str = "packs";
const DATASETS: &str = "datasets";
pub(crate) const MANIFESTS_DIR: &str = "_manifests";
pub(crate) const TAGS_DIR: &str = "_tags";
pub(crate) const PLACEMENTS_DIR: &str = "_placements";
pub(crate) const PENDING_DIR: &str = "_pending";
pub(crate) const LEASES_DIR: &str = "_leases";
pub(crate) const DOOMED_DIR: &str = "_doomed";
const GC: &str = "gc";
const INDEX: &str = "index";
const LOG: &str = "log";
const CONDEMNED: &str = "condemned";
const HEAD_HINT: &str = "head";
const PACK_EXT: &str = ".pack";
const INDEX_EXT: &str = ".idx";
const LINKS_EXT: &str = ".links";
/// Width of a tag record's sequence number: `u64::MAX` has 20 digits, so
/// lexicographic order is numeric order.
const SEQ_WIDTH: usize = 20;

pub(crate) fn packs_dir() -> Path {
    Path::from(PACKS)
}

pub(crate) fn pack(d: &Digest) -> Path {
    Path::from_iter([PACKS, &format!("{}{PACK_EXT}", d.hex())])
}

pub(crate) fn pack_index(d: &Digest) -> Path {
    Path::from_iter([PACKS, &format!("{}{INDEX_EXT}", d.hex())])
}

/// The pack a `packs/<hex>.idx` key belongs to.
pub(crate) fn parse_pack_index(key: &Path) -> Option<Digest> {
    let file = key.filename()?;
    Digest::from_hex(file.strip_suffix(INDEX_EXT)?).ok()
}

/// `packs/<hex>.links/<name…>`: an empty object saying that dataset `name`
/// may read the pack (it uploaded it, or published a version into it).
pub(crate) fn pack_link(pack: &Digest, name: &Name) -> Path {
    let dir = format!("{}{LINKS_EXT}", pack.hex());
    Path::from_iter([PACKS, dir.as_str()].into_iter().chain(name.segments()))
}

/// The pack and dataset a [`pack_link`] key names.
pub(crate) fn parse_pack_link(key: &Path) -> Option<(Digest, Name)> {
    let parts: Vec<_> = key.parts().collect();
    if parts.len() < 3 || parts[0].as_ref() != PACKS {
        return None;
    }
    let pack = Digest::from_hex(parts[1].as_ref().strip_suffix(LINKS_EXT)?).ok()?;
    let name = parts[2..].iter().map(|p| p.as_ref()).collect::<Vec<_>>().join("/").parse().ok()?;
    Some((pack, name))
}

/// The pack a `packs/<hex>.pack` key names.
pub(crate) fn parse_pack(key: &Path) -> Option<Digest> {
    let file = key.filename()?;
    Digest::from_hex(file.strip_suffix(PACK_EXT)?).ok()
}

/// Milliseconds in a day of the pack log.
pub(crate) const LOG_DAY_MS: u64 = 86_400_000;

/// `index/log/<day>/<ms>-<hex>`: pack `d`'s index was committed at `ms` (Unix
/// milliseconds of the writer's clock; `day` is `ms / LOG_DAY_MS`, 8
/// digits). Keys sort by time, and a day's directory lists on its own, so
/// reading the last day costs the same whatever the log holds.
pub(crate) fn pack_log(ms: u64, d: &Digest) -> Path {
    let (day, file) = (format!("{:08}", ms / LOG_DAY_MS), format!("{ms:0SEQ_WIDTH$}-{}", d.hex()));
    Path::from_iter([INDEX, LOG, day.as_str(), file.as_str()])
}

/// The whole pack log.
pub(crate) fn pack_log_dir() -> Path {
    Path::from_iter([INDEX, LOG])
}

/// The directory of one day of the pack log.
pub(crate) fn pack_log_day(day: u64) -> Path {
    let day = format!("{day:08}");
    Path::from_iter([INDEX, LOG, day.as_str()])
}

/// A listing offset: every [`pack_log`] key at or after `ms` sorts after it.
pub(crate) fn pack_log_from(ms: u64) -> Path {
    let (day, file) = (format!("{:08}", ms / LOG_DAY_MS), format!("{ms:0SEQ_WIDTH$}"));
    Path::from_iter([INDEX, LOG, day.as_str(), file.as_str()])
}

/// The time and pack a [`pack_log`] key names.
pub(crate) fn parse_pack_log(key: &Path) -> Option<(u64, Digest)> {
    let (ms, hex) = key.filename()?.split_once('-')?;
    if ms.len() != SEQ_WIDTH || !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((ms.parse().ok()?, Digest::from_hex(hex).ok()?))
}

/// Whether `key` is a top-level `packs/<file>` key (not a link below a pack).
pub(crate) fn is_pack_file(key: &Path) -> bool {
    let mut parts = key.parts();
    parts.next().is_some_and(|p| p.as_ref() == PACKS) && parts.next().is_some() && parts.next().is_none()
}

pub(crate) fn pack_links(pack: &Digest) -> Path {
    let dir = format!("{}{LINKS_EXT}", pack.hex());
    Path::from_iter([PACKS, dir.as_str()])
}

pub(crate) fn datasets_dir() -> Path {
    Path::from(DATASETS)
}

pub(crate) fn dataset(name: &Name) -> Path {
    Path::from_iter(std::iter::once(DATASETS).chain(name.segments()))
}

fn dataset_child<'a>(name: &'a Name, rest: impl IntoIterator<Item = &'a str>) -> Path {
    Path::from_iter(std::iter::once(DATASETS).chain(name.segments()).chain(rest))
}

pub(crate) fn manifest(name: &Name, d: &Digest) -> Path {
    let hex = d.hex();
    dataset_child(name, [MANIFESTS_DIR, hex.as_str()])
}

/// Every placement of `name` (not those of nested datasets).
pub(crate) fn placements_dir(name: &Name) -> Path {
    dataset_child(name, [PLACEMENTS_DIR])
}

pub(crate) fn placement(name: &Name, d: &Digest) -> Path {
    let hex = d.hex();
    dataset_child(name, [PLACEMENTS_DIR, hex.as_str()])
}

pub(crate) fn pending(name: &Name, d: &Digest) -> Path {
    let hex = d.hex();
    dataset_child(name, [PENDING_DIR, hex.as_str()])
}

pub(crate) fn doomed(name: &Name, d: &Digest) -> Path {
    let hex = d.hex();
    dataset_child(name, [DOOMED_DIR, hex.as_str()])
}

/// `datasets/<name…>/_leases/<reader>`; `reader` is validated by the caller.
pub(crate) fn lease(name: &Name, reader: &str) -> Path {
    dataset_child(name, [LEASES_DIR, reader])
}

pub(crate) fn condemned(pack: &Digest) -> Path {
    let hex = pack.hex();
    Path::from_iter([GC, CONDEMNED, hex.as_str()])
}

pub(crate) fn condemned_dir() -> Path {
    Path::from_iter([GC, CONDEMNED])
}

pub(crate) fn gc_lock() -> Path {
    Path::from_iter([GC, "lock"])
}

/// The digest a key ends with (`…/<hex>`), for manifests, placements,
/// pending publishes and condemned packs alike.
pub(crate) fn parse_hex_key(key: &Path) -> Option<Digest> {
    Digest::from_hex(key.filename()?).ok()
}

pub(crate) fn manifests_dir(name: &Name) -> Path {
    dataset_child(name, [MANIFESTS_DIR])
}

/// The version a `datasets/<name…>/_manifests/<hex>` key holds.
pub(crate) fn parse_manifest(key: &Path) -> Option<Digest> {
    parse_hex_key(key)
}

pub(crate) fn leases_prefix(name: &Name) -> Path {
    dataset_child(name, [LEASES_DIR])
}

pub(crate) fn tags_dir(name: &Name) -> Path {
    dataset_child(name, [TAGS_DIR])
}

pub(crate) fn tag_dir(name: &Name, tag: &Tag) -> Path {
    dataset_child(name, [TAGS_DIR, tag.as_str()])
}

pub(crate) fn tag_record(name: &Name, tag: &Tag, seq: u64) -> Path {
    let seq = format!("{seq:0SEQ_WIDTH$}");
    dataset_child(name, [TAGS_DIR, tag.as_str(), seq.as_str()])
}

pub(crate) fn tag_head(name: &Name, tag: &Tag) -> Path {
    dataset_child(name, [TAGS_DIR, tag.as_str(), HEAD_HINT])
}

/// The sequence number a tag record key ends with; `None` for the hint and strays.
pub(crate) fn parse_seq(key: &Path) -> Option<u64> {
    let file = key.filename()?;
    if file.len() != SEQ_WIDTH || !file.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    file.parse().ok()
}

/// The dataset name a `datasets/…` prefix spells, if it is a valid name.
pub(crate) fn name_of_dataset_prefix(prefix: &Path) -> Option<Name> {
    let mut parts = prefix.parts();
    if parts.next()?.as_ref() != DATASETS {
        return None;
    }
    let segs: Vec<String> = parts.map(|p| p.as_ref().to_string()).collect();
    if segs.is_empty() {
        return None;
    }
    segs.join("/").parse().ok()
}

/// The whole object, or `None` when it does not exist.
pub(crate) async fn get_bytes(
    store: &dyn ObjectStore,
    key: &Path,
) -> Result<Option<bytes::Bytes>, object_store::Error> {
    match store.get(key).await {
        Ok(r) => r.bytes().await.map(Some),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_documented_layout() {
        let name: Name = "acme/geoip".parse().expect("name");
        let tag: Tag = "latest".parse().expect("tag");
        let d = Digest::of(b"x");
        assert_eq!(pack(&d).as_ref(), format!("packs/{}.pack", d.hex()));
        assert_eq!(pack_index(&d).as_ref(), format!("packs/{}.idx", d.hex()));
        assert_eq!(parse_pack_index(&pack_index(&d)), Some(d));
        assert_eq!(parse_pack(&pack(&d)), Some(d));
        assert_eq!(parse_pack_index(&pack(&d)), None);
        assert_eq!(manifest(&name, &d).as_ref(), format!("datasets/acme/geoip/_manifests/{}", d.hex()));
        assert_eq!(placement(&name, &d).as_ref(), format!("datasets/acme/geoip/_placements/{}", d.hex()));
        assert_eq!(pending(&name, &d).as_ref(), format!("datasets/acme/geoip/_pending/{}", d.hex()));
        assert_eq!(condemned(&d).as_ref(), format!("gc/condemned/{}", d.hex()));
        assert_eq!(pack_log(7, &d).as_ref(), format!("index/log/00000000/00000000000000000007-{}", d.hex()));
        assert_eq!(parse_pack_log(&pack_log(7, &d)), Some((7, d)));
        assert!(pack_log(7, &d) > pack_log_from(7) && pack_log(6, &d) < pack_log_from(7));
        assert!(
            pack_log(LOG_DAY_MS, &d) > pack_log_from(7) && pack_log(LOG_DAY_MS, &d).prefix_matches(&pack_log_day(1))
        );
        assert!(is_pack_file(&pack_index(&d)) && !is_pack_file(&pack_link(&d, &name)));
        assert_eq!(parse_hex_key(&condemned(&d)), Some(d));
        assert_eq!(tag_record(&name, &tag, 7).as_ref(), "datasets/acme/geoip/_tags/latest/00000000000000000007");
        assert_eq!(parse_seq(&tag_record(&name, &tag, u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_seq(&tag_head(&name, &tag)), None);
        assert_eq!(name_of_dataset_prefix(&dataset(&name)), Some(name));
    }

    #[test]
    fn storage_urls() {
        let open = |url: &str| open(url, &Encryption::StoreDefault);
        assert!(open("memory://").is_ok());
        assert!(matches!(open("ftp://x"), Err(HubError::UnsupportedStorage(_))));
        assert!(open("not a url").is_err());
        assert!(open("file://").is_err());
        for bad in ["s3://", "gs://", "az://", "s3://user:pw@b/x", "gs://b/x?key=1"] {
            assert!(matches!(open(bad), Err(HubError::InvalidStorageUrl { .. })), "{bad}");
        }
        // Cloud stores carry a presigner, the local ones none.
        assert!(open("memory://").expect("memory").presigner.is_none());
        let s3 = open("s3://bucket/some/prefix").expect("s3 builds without contacting S3");
        assert_eq!(s3.description, "s3://bucket/some/prefix");
        assert!(s3.presigner.is_some());
        // Encryption that does not fit the store is refused, naming it.
        let kms = Encryption::S3Kms { key_id: Some("alias/x".into()), bucket_key: false };
        let Err(e) = backend::open("file:///tmp/x", &kms) else { panic!("SSE-KMS on file:// accepted") };
        assert!(e.to_string().contains("s3://"), "{e}");
        assert!(backend::open("s3://bucket", &kms).is_ok());
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("a/b");
        let desc = open(&format!("file://{}", sub.display())).expect("opens").description;
        assert!(sub.is_dir());
        assert!(desc.starts_with("file:///"), "{desc}");
        let spaced = dir.path().join("with space#1");
        open(&format!("file://{}", spaced.display())).expect("opens");
        assert!(spaced.is_dir());
        let encoded = url::Url::from_directory_path(dir.path().join("enc dir")).expect("url").to_string();
        open(&encoded).expect("opens");
        assert!(dir.path().join("enc dir").is_dir());
    }
}
