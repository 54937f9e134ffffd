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
