use std::io;
use std::path::PathBuf;

use hoard_types::Digest;
use thiserror::Error;

use crate::BlobKey;

/// Everything the store can fail at. Each variant names the path, digest or blob concerned.
#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] hoard_types::Error),

    #[error("Failed to {op} `{}`", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("The cache at `{}` is in use by another hoard process; stop it, or set `HOARD_CACHE_DIR` to another directory", path.display())]
    Locked { path: PathBuf },

    #[error("The cache at `{}` has layout `{found}`, written by a newer hoard; upgrade hoard or use another cache directory", path.display())]
    NewerLayout { path: PathBuf, found: String },

    #[error("The cache directory `{}` cannot be made private to the daemon's user: {reason}; use a directory of the daemon's own, or set `HOARD_CACHE_DIR`", path.display())]
    NotPrivate { path: PathBuf, reason: String },

    #[error("The index at `{}` failed: {message}", path.display())]
    Index { path: PathBuf, message: String },

    #[error("The cache at `{}` holds {pending} publish(es) not yet uploaded to `{from}`; start the daemon with that upstream until `hoard status` lists none, or use another cache directory for `{to}`", cache.display())]
    PendingForAnotherUpstream {
        cache: PathBuf,
        from: String,
        to: String,
        pending: usize,
    },

    #[error("The index holds a corrupt {what} record under key `{key}`; run `hoard verify`")]
    CorruptRecord { what: &'static str, key: String },

    #[error("Blob `{what}` would need {}, but the cache's filesystem (`{}`) has {} free; free some space (`hoard gc`) or check the manifest's size", hoard_types::human_bytes(*size), cache.display(), hoard_types::human_bytes(*free))]
    NoRoom {
        what: String,
        cache: PathBuf,
        size: u64,
        free: u64,
    },

    #[error("Expected {expected} bytes for blob `{digest}`, got {actual}")]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },

    #[error("Blob `{digest}` written in parts: {reason}")]
    Parts { digest: String, reason: String },

    #[error("Expected blob `{expected}`, but the bytes received hash to `{actual}`")]
    DigestMismatch { expected: Digest, actual: Digest },

    /// Never empty.
    #[error(
        "{} blob(s) of this version are not in the cache (for example `{}`); fetch them first",
        missing.len(),
        missing[0]
    )]
    MissingBlobs { missing: Vec<BlobKey> },

    #[error(
        "Blob `{key}` was modified behind hoard's back ({what}); it was quarantined and must be fetched again"
    )]
    Tampered {
        key: BlobKey,
        what: String,
        /// Files the materialization had placed before it found the blob (0 elsewhere):
        /// a retry finds them in place, and the request's summary counts them as placed.
        placed: u64,
    },

    #[error("Cannot act as uid {uid} on their destination: {reason}")]
    AsUser { uid: u32, reason: String },

    /// A destination the caller may not use, said before anything is written.
    #[error("Cannot materialize into `{}`: {reason}", dest.display())]
    Refused { dest: PathBuf, reason: String },

    #[error("Cannot write `{path}` in the destination `{}`: {reason}", dest.display())]
    Destination {
        dest: PathBuf,
        path: String,
        reason: String,
    },

    #[error("Cannot {mode} from the cache into `{}`: {reason}; use `--mode copy` or `--mode auto`", dest.display())]
    ModeUnsupported {
        mode: crate::LinkMode,
        dest: PathBuf,
        reason: String,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches the operation and path to an I/O error: `.io("open", &path)?`.
pub(crate) trait IoContext<T> {
    fn io(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T, E: Into<io::Error>> IoContext<T> for std::result::Result<T, E> {
    fn io(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::Io {
            op,
            path: path.into(),
            source: e.into(),
        })
    }
}

/// The error for blobs that are not cached; `keys` is never empty.
pub(crate) fn missing(keys: Vec<BlobKey>) -> Error {
    debug_assert!(!keys.is_empty());
    Error::MissingBlobs { missing: keys }
}
