//! JSON bodies of the hub's HTTP API, shared by the hub and its client.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::Digest;
use crate::manifest::{ChunkLocation, ManifestStats};
use crate::name::{Name, Tag};

/// Most digests one missing-chunks query may carry.
pub const MISSING_QUERY_MAX: usize = 50_000;

/// Every error the API returns: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, machine-readable code such as `tag_conflict`.
    pub code: String,
    pub message: String,
}

/// One move of a tag. `digest` is `None` when the move deleted the tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    pub name: Name,
    pub tag: Tag,
    pub digest: Option<Digest>,
    pub previous: Option<Digest>,
    pub by: String,
    /// RFC 3339, UTC.
    pub at: String,
    /// Position in the tag's history, from 1.
    pub seq: u64,
}

/// The state a compare-and-swap expects the tag to be in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// The tag must not exist (or be deleted).
    Absent,
    Digest(Digest),
}

impl FromStr for Expected {
    type Err = crate::FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "absent" { Ok(Expected::Absent) } else { s.parse().map(Expected::Digest) }
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Absent => f.write_str("absent"),
            Expected::Digest(d) => d.fmt(f),
        }
    }
}

impl Serialize for Expected {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Expected {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `PUT /v1/datasets/{name}/tags/{tag}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetTagRequest {
    pub digest: Digest,
    /// Compare-and-swap: the move happens only if the tag is in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Expected>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatasetSummary {
    pub name: Name,
    pub tags: Vec<Tag>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatasetList {
    pub datasets: Vec<DatasetSummary>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TagList {
    pub name: Name,
    pub tags: Vec<TagRecord>,
}

/// One stored version of a dataset.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VersionEntry {
    pub digest: Digest,
    /// Size of the encoded manifest.
    pub size: u64,
    /// When it was stored (RFC 3339).
    pub stored_at: String,
}

/// `GET …/manifests`: every stored version of a dataset, oldest first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VersionList {
    pub name: Name,
    pub versions: Vec<VersionEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TagHistory {
    pub name: Name,
    pub tag: Tag,
    /// Oldest first.
    pub records: Vec<TagRecord>,
}

/// `POST /v1/datasets/{name}/chunks/missing`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissingChunksRequest {
    pub digests: Vec<Digest>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PresentChunk {
    pub digest: Digest,
    pub len: u32,
    #[serde(flatten)]
    pub location: ChunkLocation,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MissingChunksResponse {
    pub missing: Vec<Digest>,
    /// Where each chunk the hub has lives, so a manifest can point at it.
    pub present: Vec<PresentChunk>,
}

/// `PUT /v1/datasets/{name}/packs/{digest}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PackStored {
    pub pack: Digest,
    pub chunks: u32,
    pub bytes: u64,
    /// False when the pack was already stored.
    pub created: bool,
}

/// `PUT /v1/datasets/{name}/manifests/{digest}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ManifestStored {
    pub name: Name,
    pub digest: Digest,
    pub stats: ManifestStats,
    pub created: bool,
}

/// `POST /v1/gc`: run garbage collection (admin on every dataset).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    /// Report what would be removed; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Overrides the configured grace period for fresh uploads, untagged new
    /// versions and moved packs (tests use 0).
    #[serde(default, deserialize_with = "whole::option")]
    pub grace_secs: Option<u64>,
}

/// A version garbage collection removes (or would remove).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GcVersion {
    pub name: Name,
    pub digest: Digest,
    /// The rule that decided, e.g. `rule 1 (team-a/**)` or `default`.
    pub rule: String,
    /// Why nothing keeps it.
    pub reason: String,
    /// Readers whose lease on it has expired (they may still be reading).
    #[serde(default)]
    pub readers: Vec<String>,
}

/// A version only readers' leases keep.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GcHeld {
    pub name: Name,
    pub digest: Digest,
    pub readers: Vec<String>,
}

/// Space per dataset after collection (or as it would be).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GcDataset {
    pub name: Name,
    pub versions_kept: u64,
    pub versions_removed: u64,
    /// Stored bytes of the distinct chunks its kept versions reference.
    pub live_bytes: u64,
    /// Readers' leases in force.
    pub leases_held: u64,
}

/// What a collection did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct GcReport {
    pub dry_run: bool,
    pub grace_secs: u64,
    pub versions_removed: Vec<GcVersion>,
    pub held_by_leases: Vec<GcHeld>,
    /// Packs deleted: nothing live in them, or their live chunks were moved.
    pub packs_deleted: u64,
    pub bytes_deleted: u64,
    /// Packs whose live chunks were copied into new packs this run.
    pub packs_rewritten: u64,
    pub packs_written: u64,
    pub bytes_written: u64,
    /// Packs whose chunks moved but which are kept for the grace period
    /// (readers holding the old placement); a later run deletes them.
    pub packs_waiting: u64,
    /// Packs a concurrent publish started using; kept.
    pub packs_rescued: u64,
    pub stored_bytes_before: u64,
    pub stored_bytes_after: u64,
    /// Stored bytes of every chunk some kept version references.
    pub live_bytes: u64,
    pub datasets: Vec<GcDataset>,
    pub duration_ms: u64,
}

/// `PUT /v1/datasets/{name}/leases/{reader}`: the versions of `name` a
/// reader is serving. Sent again before the lease runs out.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    pub versions: Vec<Digest>,
    /// What the reader did with versions it served (at most
    /// [`LEASE_VERSIONS_MAX`]): `aetherfs usage` shows it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub served: Vec<VersionServed>,
}

/// A reader's counters for one version, as of its last renewal.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VersionServed {
    pub version: Digest,
    /// Bytes its readers read.
    #[serde(deserialize_with = "whole::u64")]
    pub bytes_read: u64,
    /// Stored bytes it fetched from the hub for them, read-ahead included.
    #[serde(deserialize_with = "whole::u64")]
    pub fetched_bytes: u64,
}

/// `GET /v1/datasets/{name}/leases`: every reader's lease on the dataset,
/// in force or expired (not yet collected), by reader.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaseList {
    pub name: Name,
    pub leases: Vec<Lease>,
}

/// A stored lease, as the hub answers it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lease {
    pub name: Name,
    pub reader: String,
    pub versions: Vec<Digest>,
    /// RFC 3339, UTC.
    pub renewed_at: String,
    /// Unix seconds after which the lease no longer protects its versions.
    pub expires_unix: u64,
    /// How long a lease lasts; renew well within it.
    pub lease_secs: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub served: Vec<VersionServed>,
}

/// Most versions one lease may name.
pub const LEASE_VERSIONS_MAX: usize = 64;

/// Whether `s` may name a reader: 1–128 of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
pub fn valid_reader(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(['.', '-'])
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Whole numbers in request bodies. JSON (and JSON Schema's `integer`) does
/// not tell `176` from `176.0`, so both are accepted; a fraction, a negative
/// number or one past `u64::MAX` is refused.
mod whole {
    use serde::de::{Deserializer, Error, Unexpected, Visitor};

    struct Whole;

    impl Visitor<'_> for Whole {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number from 0 to 2^64-1")
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
        }

        fn visit_f64<E: Error>(self, v: f64) -> Result<u64, E> {
            // 2^64 is exact as an f64; every whole f64 below it fits a u64.
            if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Ok(v as u64)
            } else {
                Err(E::invalid_value(Unexpected::Float(v), &self))
            }
        }
    }

    pub(super) fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(Whole)
    }

    pub(super) fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        struct Opt;
        impl<'de> Visitor<'de> for Opt {
            type Value = Option<u64>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("null or a whole number")
            }
            fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                u64(d).map(Some)
            }
        }
        d.deserialize_option(Opt)
    }

    #[cfg(test)]
    mod tests {
        use crate::api::GcRequest;

        #[test]
        fn whole_floats_are_whole_numbers_and_fractions_are_not() {
            let g = |s: &str| serde_json::from_str::<GcRequest>(s).map(|r| r.grace_secs);
            assert_eq!(g(r#"{"grace_secs": 176.0}"#).ok(), Some(Some(176)));
            assert_eq!(g(r#"{"grace_secs": 176}"#).ok(), Some(Some(176)));
            assert_eq!(g(r#"{"grace_secs": null}"#).ok(), Some(None));
            assert_eq!(g("{}").ok(), Some(None));
            for bad in ["176.5", "-1", "-1.0", "1e20", "\"3\""] {
                assert!(g(&format!(r#"{{"grace_secs": {bad}}}"#)).is_err(), "{bad} accepted");
            }
        }
    }
}
