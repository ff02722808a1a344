//! The daemon's socket API (v1): request bodies, answers, and the NDJSON events a long
//! call streams. The daemon (`hoard-daemon`) and its clients (`hoard-client`, the CLI, the
//! Python package) share these shapes.

use serde::{Deserialize, Serialize};

use crate::{Digest, RelPath};

/// `POST /v1/artifacts`: the artifacts of a project, as the upstream lists them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactsRequest {
    /// `entity/project` or `project` as typed; `None`: the defaults below.
    #[serde(default)]
    pub path: Option<String>,
    /// Defaults, as for [`ResolveRequest`].
    #[serde(default)]
    pub entity: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
}

/// The answer to [`ArtifactsRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifacts {
    pub entity: String,
    pub project: String,
    /// The upstream that was asked.
    pub upstream: String,
    pub artifacts: Vec<ListedArtifact>,
}

/// One artifact of [`Artifacts`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedArtifact {
    pub name: String,
    /// How many versions it has, where the upstream says (not the Hub).
    #[serde(default)]
    pub versions: Option<u64>,
    /// The newest version, `vN`, where the upstream says.
    #[serde(default)]
    pub latest: Option<String>,
    /// Every alias of any version, sorted.
    #[serde(default)]
    pub aliases: Vec<String>,
}

impl From<crate::registry::ArtifactSummary> for ListedArtifact {
    fn from(a: crate::registry::ArtifactSummary) -> Self {
        Self {
            name: a.name,
            versions: Some(a.versions),
            latest: a.latest,
            aliases: a.aliases,
        }
    }
}

/// `POST /v1/versions`: every version and alias of an artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionsRequest {
    /// `[[entity/]project/]name`, without a selector.
    pub name: String,
    #[serde(default)]
    pub entity: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
}

/// The answer to [`VersionsRequest`]: the upstream's versions, oldest first, then
/// publishes made here and not uploaded yet (version [`PENDING`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    pub entity: String,
    pub project: String,
    pub name: String,
    pub upstream: String,
    pub versions: Vec<ListedVersion>,
    /// Alias → `vN`.
    pub aliases: std::collections::BTreeMap<String, String>,
}

/// One version of [`Versions`], and how much of it this cache holds. What a foreign
/// upstream does not list (the Hub's refs name commits only) is known once the version
/// was resolved here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedVersion {
    /// `vN`, a Hub commit, or [`PENDING`].
    pub version: String,
    /// hoard's digest of the version, once known here (always, for a native upstream).
    #[serde(default)]
    pub digest: Option<Digest>,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub files: Option<u64>,
    #[serde(default)]
    pub size: Option<u64>,
    /// Files whose bytes are cached here; `None`: this cache has never resolved the version.
    pub cached_files: Option<u64>,
}

impl ListedVersion {
    /// A version as a hoard registry or `dir://` lists it, with how much is cached.
    pub fn native(v: crate::registry::VersionSummary, cached_files: Option<u64>) -> Self {
        Self {
            version: v.version,
            digest: Some(v.digest),
            aliases: v.aliases,
            kind: v.kind,
            created_at: v.created_at,
            files: Some(v.files),
            size: Some(v.size),
            cached_files,
        }
    }
}

/// `POST /v1/resolve`: what a reference names, and how much of it is cached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    pub reference: String,
    /// Defaults for a reference without entity or project (the client's
    /// `HOARD_ENTITY`/`HOARD_PROJECT`).
    #[serde(default)]
    pub entity: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
    /// Include every entry in the answer (`hoard ls`).
    #[serde(default)]
    pub entries: bool,
}

/// The `version` of a [`Resolved`] publish made on this machine and not uploaded yet: it
/// has no number, and is named by its digest.
pub const PENDING: &str = "pending";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    pub entity: String,
    pub project: String,
    pub name: String,
    /// `vN`, a foreign upstream's label, or [`PENDING`].
    pub version: String,
    pub digest: Digest,
    pub aliases: Vec<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The version's metadata (a JSON object), as published.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub metadata: serde_json::Value,
    pub files: u64,
    pub bytes: u64,
    /// Files whose bytes are in the cache now (counted by `resolve`, not by the streams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_files: Option<u64>,
    /// Set when the answer is not fresh from the upstream (it could not be reached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<ListedEntry>,
}

impl Resolved {
    /// The reference that names this version and no other: `entity/project/name:vN`, or
    /// `…@digest` for a publish not uploaded yet.
    pub fn pinned(&self) -> String {
        let (entity, project, name) = (&self.entity, &self.project, &self.name);
        if self.version == PENDING {
            format!("{entity}/{project}/{name}@{}", self.digest)
        } else {
            format!("{entity}/{project}/{name}:{}", self.version)
        }
    }
}

/// One file of a version, as `hoard ls` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedEntry {
    pub path: RelPath,
    pub size: u64,
    /// blake3 of the bytes; `None` for a file of a foreign version (W&B) that this cache
    /// has not downloaded yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// The upstream's own digest (W&B: `md5:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_digest: Option<crate::ForeignDigest>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exec: bool,
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// `POST /v1/materialize` (and `/v1/prefetch`, which ignores `dest`, `mode` and `clean`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaterializeRequest {
    pub reference: String,
    #[serde(default)]
    pub entity: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
    /// Absolute directory to materialize into (the client resolves relative paths).
    #[serde(default)]
    pub dest: Option<String>,
    /// W&B's `path_prefix`: a plain string prefix of the logical paths.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Exactly one logical path (W&B's `get_path(name).download()`).
    #[serde(default)]
    pub file: Option<String>,
    /// More logical paths, each of which must exist (with `file`: all of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// Glob patterns (`fnmatch`'s, as `hf download --include/--exclude`): only files
    /// matching one `include` (if any) and no `exclude`. Not with `file`/`files`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Resolve and select, say what would be fetched and placed (the summary, with
    /// `planned`), and change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// `auto`, `hardlink`, `reflink`, `copy` or `symlink`; default `auto`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Also remove what `dest` holds under `path_prefix` that the version does not name.
    /// Not with `file`.
    #[serde(default)]
    pub clean: bool,
    /// Instead of `dest`: a Hugging Face cache directory (absolute) to fill, for a version
    /// of the Hub (`…/models--ORG--NAME/{blobs,snapshots,refs}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hf_cache: Option<String>,
}

/// One line of a streamed answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The version is known; work starts.
    Resolved(Resolved),
    /// Blobs fetched so far, of those missing when the call started.
    Progress {
        fetched_blobs: u64,
        missing_blobs: u64,
        fetched_bytes: u64,
        missing_bytes: u64,
    },
    Warning {
        message: String,
    },
    Done(Summary),
    Error {
        kind: String,
        detail: String,
    },
}

/// How a materialization (or prefetch) ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// What was materialized: `entity/project/name:version`.
    #[serde(default)]
    pub entity: String,
    #[serde(default)]
    pub project: String,
    #[serde(default)]
    pub name: String,
    pub version: String,
    pub digest: Digest,
    pub dest: Option<String>,
    /// Files selected (after `path_prefix` / `file`).
    pub files: u64,
    pub bytes: u64,
    /// Blobs fetched from the upstream by this call (or by a concurrent call it waited for).
    pub fetched_blobs: u64,
    pub fetched_bytes: u64,
    /// Files placed in `dest` now, and files that were already right.
    pub placed: u64,
    pub unchanged: u64,
    /// Files and directories `clean` removed from `dest`.
    #[serde(default)]
    pub removed: u64,
    /// The link mode used (`hardlink`, `reflink`, `copy`, `symlink`).
    pub mode: Option<String>,
    pub seconds: f64,
    /// A dry run: nothing was fetched or placed. `fetched_*` are what the call would
    /// fetch, `placed` the files it would place, and `planned` lists every file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<PlannedFile>,
}

/// A file a dry run selected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedFile {
    pub path: RelPath,
    pub size: u64,
    /// Its bytes are in the cache: placing it fetches nothing.
    pub cached: bool,
}

/// `GET /v1/health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`, or `degraded` (with `detail`): serving, but something needs attention.
    pub status: String,
    pub version: String,
    pub cache_dir: String,
    pub upstream: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub cache_dir: String,
    pub upstream: String,
    pub blobs: u64,
    /// Versions whose manifests are cached (hoard's own and W&B's).
    #[serde(default)]
    pub versions: u64,
    pub cache_bytes: u64,
    /// Blobs found cached when a call needed them, and blobs that had to be fetched.
    pub hits: u64,
    pub misses: u64,
    pub fetched_bytes: u64,
    pub in_flight: u64,
    /// Publishes not yet committed upstream.
    #[serde(default)]
    pub pending_uploads: Vec<PendingUpload>,
    /// The cache budget (`max_size`), and the size eviction starts above; `None` when no
    /// budget is set.
    #[serde(default)]
    pub budget_bytes: Option<u64>,
    #[serde(default)]
    pub high_watermark_bytes: Option<u64>,
    /// Bytes eviction would give back to the filesystem now (blobs no workdir links, not
    /// pinned), and bytes of blobs that materialized directories also link.
    #[serde(default)]
    pub reclaimable_bytes: u64,
    #[serde(default)]
    pub held_by_workdirs_bytes: u64,
    #[serde(default)]
    pub pinned_versions: u64,
    /// Blobs evicted since the daemon started.
    #[serde(default)]
    pub evicted_blobs: u64,
    /// What the last call to the upstream found: `reachable`, `unreachable` or `unknown`
    /// (no call yet), with how long ago and, when unreachable, why.
    #[serde(default)]
    pub upstream_state: String,
    /// The link modes `auto` settled on, e.g. `dev 254:0 → dev 254:0: hardlink`.
    #[serde(default)]
    pub link_modes: Vec<String>,
    /// Whether blobs are sealed with fs-verity (`on: N blobs sealed since start`), or why
    /// not (`off: …`).
    #[serde(default)]
    pub fs_verity: String,
    /// The background scrub: `off`, or its rate and the pass under way.
    #[serde(default)]
    pub scrub: String,
    /// What needs attention now (the index cannot write on a full disk), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trouble: Option<String>,
    /// The fleet tier, when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<TierStatus>,
}

/// The fleet tier's state and figures since the daemon started (see `docs/fleet.md`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierStatus {
    /// `s3://bucket/prefix at http://endpoint`.
    pub url: String,
    /// `on`, or `off for N s more, then tried again: <why>`.
    pub state: String,
    /// What the store does with `If-None-Match: *` on a PUT: `honoured`, `ignored …`,
    /// `unknown` (not probed yet).
    pub conditional_create: String,
    /// Blobs the tier served, and blobs it lacked (fetched from the upstream).
    pub hits: u64,
    pub misses: u64,
    /// Blobs whose tier copy was wrong (refused, fetched from the upstream, replaced).
    pub bad: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Blobs uploaded, waiting or being uploaded, failed, and dropped from a full queue.
    pub uploads: u64,
    pub queued: u64,
    pub upload_failures: u64,
    pub dropped: u64,
    /// Immutable metadata (versions, foreign digests' blobs) found in the tier or not.
    pub metadata_hits: u64,
    pub metadata_misses: u64,
    /// Leases this box won (it downloaded) and waited on (another box did).
    pub leases_won: u64,
    pub leases_waited: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// `POST /v1/pins`: keep a version from eviction (it is fetched first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinRequest {
    pub reference: String,
    #[serde(default)]
    pub entity: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
}

/// A pinned version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub entity: String,
    pub project: String,
    pub name: String,
    pub version: String,
    pub digest: Digest,
    pub files: u64,
    pub bytes: u64,
}

/// `POST /v1/gc`: evict now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    /// Evict until the cache holds at most this many bytes (default: the low watermark).
    #[serde(default)]
    pub target_bytes: Option<u64>,
    /// Report what would be evicted, evict nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What `gc` did (or, with `dry_run`, would do).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    pub target_bytes: u64,
    pub dry_run: bool,
    pub evicted_blobs: u64,
    /// Bytes returned to the filesystem.
    pub freed_bytes: u64,
    /// Bytes that left the cache but stay on disk while materialized directories link them.
    pub released_bytes: u64,
    pub remaining_bytes: u64,
    pub held_by_workdirs_bytes: u64,
}

/// A publish waiting in the outbox, as `status` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingUpload {
    /// `entity/project/name`.
    pub artifact: String,
    pub digest: Digest,
    pub attempts: u32,
    /// `retrying` (the upstream could not be reached or failed) or `failed` (it refused:
    /// retried when the daemon restarts).
    pub state: String,
    pub last_error: Option<String>,
}

/// `POST /v1/publish`: a new version from local files (W&B's create-and-use).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// `[[entity/]project/]name`, without a selector.
    pub artifact: String,
    #[serde(default)]
    pub entity: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
    /// Absolute paths of files or directories, each `PATH` or `NAME=PATH`.
    pub inputs: Vec<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Aliases besides `latest`.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// A JSON object.
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    /// Also materialize the new version here (absolute).
    #[serde(default)]
    pub dest: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    /// Wait up to this long for the upstream commit before answering `pending`.
    #[serde(default)]
    pub wait_seconds: Option<u64>,
    /// With `wait_seconds`: stop waiting after the first attempt that fails (the upload
    /// goes on in the background). For callers that want a version number when the
    /// upstream is up, and no delay when it is not.
    #[serde(default)]
    pub wait_one_attempt: bool,
}

/// The answer to a publish.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub entity: String,
    pub project: String,
    pub name: String,
    /// The manifest digest: `NAME@DIGEST` names the version on this machine at once.
    pub digest: Digest,
    /// `vN` once committed upstream; `null` while pending.
    pub version: Option<String>,
    /// `committed` or `pending`.
    pub state: String,
    /// Blobs and bytes this publish uploaded (over all its attempts so far).
    pub uploaded_blobs: u64,
    pub uploaded_bytes: u64,
    pub files: u64,
    pub bytes: u64,
    /// Where the version was materialized (`dest`).
    pub dest: Option<String>,
    /// Why it is still pending, if an attempt failed.
    pub last_error: Option<String>,
}

/// `POST /v1/verify`: every blob re-hashed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    pub checked: u64,
    pub bytes: u64,
    /// Blobs that failed (`blob`, `why`); each was quarantined, then fetched again from the
    /// upstream (`repaired`), or else when a version needs it.
    pub bad: Vec<BadBlob>,
    /// Good blobs this run sealed with fs-verity (ingested before sealing was on).
    #[serde(default)]
    pub sealed: u64,
    /// Good blobs sealed with fs-verity now, of `checked`.
    #[serde(default)]
    pub sealed_total: u64,
    /// Files in directories hoard hardlinked that still hold a blob found modified (its
    /// quarantined inode), and with `repair`, whether they were linked to the blob again.
    #[serde(default)]
    pub damaged: Vec<DamagedFile>,
}

/// `POST /v1/verify`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// Also link the damaged files to the blob again (fetching it if needed), each as the
    /// user who asked for it there.
    #[serde(default)]
    pub repair: bool,
}

/// A file that is a hardlink to a blob found modified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamagedFile {
    /// The destination it was materialized into, and its path there.
    pub dest: String,
    pub path: RelPath,
    pub blob: String,
    /// Linked to the blob again (`repair`).
    #[serde(default)]
    pub repaired: bool,
    #[serde(default)]
    pub repair_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadBlob {
    pub blob: String,
    pub why: String,
    /// Fetched again from the upstream.
    #[serde(default)]
    pub repaired: bool,
    /// Why it could not be fetched again now (a W&B file, a reference, a publish not yet
    /// uploaded, the upstream down).
    #[serde(default)]
    pub repair_error: Option<String>,
}
