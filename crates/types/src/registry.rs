//! The bodies of the hoard registry protocol (v1) that are not a [`Version`] itself: what a
//! client sends to commit, list or dedup, and the problem document every error carries.
//!
//! The server (`hoard-registry`) and the client (`hoard-upstream`) share these types, so
//! the two cannot drift apart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Digest, Manifest, Version};

/// `POST /v1/artifacts/{entity}/{project}/{name}/versions`: create a version (or get the
/// existing one with the same manifest digest).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    pub manifest: Manifest,
    /// Aliases to point at the version, besides `latest`, which a new version always takes.
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: serde_json::Value,
}

/// The answer to a commit: the version, and whether this commit created it (`201`) or
/// found it already there (`200`, idempotent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub version: Version,
    pub created: bool,
}

/// `GET /v1/artifacts/{entity}/{project}`: the artifacts of a project, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactList {
    pub artifacts: Vec<ArtifactSummary>,
}

/// One artifact of a project, without its versions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactSummary {
    pub name: String,
    pub versions: u64,
    /// The newest version, `vN`.
    pub latest: Option<String>,
    /// Every alias of any version, sorted.
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// `GET /v1/artifacts/{entity}/{project}/{name}/versions`: what viewers may see.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionList {
    /// Oldest first.
    pub versions: Vec<VersionSummary>,
    /// Alias → `vN`.
    pub aliases: BTreeMap<String, String>,
}

/// One version without its manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionSummary {
    pub version: String,
    pub digest: Digest,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    pub files: u64,
    pub size: u64,
}

impl VersionSummary {
    pub fn of(version: &Version) -> Self {
        Self {
            version: version.version.clone(),
            digest: version.digest,
            aliases: version.aliases.clone(),
            kind: version.kind.clone(),
            created_at: version.created_at.clone(),
            files: version.manifest.entries.len() as u64,
            size: version.manifest.total_size(),
        }
    }
}

/// `POST /v1/blobs/missing`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissingRequest {
    pub digests: Vec<Digest>,
}

/// `POST /v1/blobs/batch`: whole blobs in one answer, for a client that needs many small
/// ones at once (a cold fetch of thousands of files would otherwise pay a request each).
///
/// The answer (`200`, `application/octet-stream`) holds one frame per asked digest, in
/// the order asked: the blob's length as 8 bytes, big-endian, then its bytes. A blob the
/// server lacks, or the caller may not read, is the length [`BATCH_ABSENT`] alone; the
/// client asks for it with `GET /v1/blobs/{digest}` to learn why (`404`, or `403` for a
/// viewer). The client checks each blob's length and digest, as for any blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub digests: Vec<Digest>,
}

/// The length a batch answer gives a blob it does not send (see [`BatchRequest`]).
pub const BATCH_ABSENT: u64 = u64::MAX;

/// Most digests in one `blobs/batch` request.
pub const MAX_BATCH: usize = 1024;

/// Which of the asked digests the client must upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingResponse {
    pub missing: Vec<Digest>,
}

/// `PUT /v1/artifacts/{entity}/{project}/{name}/aliases/{alias}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasRequest {
    /// `vN`.
    pub version: String,
}

/// An error over HTTP (RFC 9457 `application/problem+json`). `type` is stable and meant
/// for programs; `detail` is for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Blobs a commit referred to that the server does not have (`type` =
    /// `missing-blobs`), so the client knows what to upload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<Digest>,
}

/// Stable problem types.
pub mod problem {
    pub const NOT_FOUND: &str = "not-found";
    pub const FORBIDDEN: &str = "forbidden";
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const BAD_REQUEST: &str = "bad-request";
    pub const DIGEST_MISMATCH: &str = "digest-mismatch";
    pub const MISSING_BLOBS: &str = "missing-blobs";
    pub const TOO_LARGE: &str = "too-large";
    pub const METHOD_NOT_ALLOWED: &str = "method-not-allowed";
    pub const RANGE_NOT_SATISFIABLE: &str = "range-not-satisfiable";
    /// A resumable upload that is elsewhere than the request says (`Upload-Offset` tells
    /// where), or is in progress on another connection.
    pub const CONFLICT: &str = "conflict";
    pub const INTERNAL: &str = "internal";
    /// The message a view-only member gets for a manifest or a blob, as W&B words it.
    pub const VIEW_ONLY: &str = "view-only members cannot download artifacts";
}
