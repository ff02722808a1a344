use std::io;
use std::path::PathBuf;

use hoard_types::Digest;

/// What can go wrong talking to an upstream. Every variant names the upstream object
/// (artifact, blob, URL or path) it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Unknown artifact or version, or one the credential may not see: upstreams answer
    /// both the same way so that names do not leak.
    #[error("Not found: {what}")]
    NotFound { what: String },

    /// Something this kind of upstream cannot do (yet).
    #[error("{what}")]
    Unsupported { what: String },

    #[error("Permission denied: {detail}")]
    Forbidden { detail: String },

    /// The credential was refused; `detail` says which setting holds it.
    #[error("The upstream `{upstream}` refused the credential: {detail}")]
    Unauthorized { upstream: String, detail: String },

    /// The upstream lacks blobs a commit refers to.
    #[error("The upstream lacks {} blob(s) the version refers to (first: `{}`); upload them first", missing.len(), missing.first().map(ToString::to_string).unwrap_or_default())]
    MissingBlobs { missing: Vec<Digest> },

    /// The request was wrong (4xx other than the above), with the upstream's words.
    #[error("The upstream `{upstream}` rejected the request ({status}): {detail}")]
    Rejected {
        upstream: String,
        status: u16,
        detail: String,
    },

    /// The upstream failed (5xx, 429) and retries ran out.
    #[error("The upstream `{upstream}` failed ({status}) after {attempts} attempt(s): {detail}")]
    Unavailable {
        upstream: String,
        status: u16,
        attempts: u32,
        detail: String,
    },

    /// The upstream could not be reached, or the connection broke, and retries ran out.
    /// `cause` is the innermost reason (`Connection refused (os error 111)`): the HTTP
    /// library's layers in between say nothing a user can act on.
    #[error("Cannot reach the upstream at `{url}` after {attempts} attempt(s): {cause}")]
    Unreachable {
        url: String,
        attempts: u32,
        cause: String,
    },

    /// The upstream answered, but its answer broke off before its end, every time it was
    /// asked (a connection reset mid-body, a proxy that cut it).
    #[error(
        "The upstream at `{url}` answered, but its answer broke off before its end, {attempts} time(s)"
    )]
    Broken {
        url: String,
        attempts: u32,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The upstream sent something that breaks the protocol (bad JSON, a manifest that
    /// does not validate, a wrong Content-Range).
    #[error("The upstream `{upstream}` sent an invalid answer: {reason}")]
    Protocol { upstream: String, reason: String },

    #[error(
        "Blob `{digest}` from the upstream has digest `{actual}`: the bytes are corrupt or were tampered with"
    )]
    DigestMismatch { digest: Digest, actual: Digest },

    /// A file an upstream names by its own digest (W&B: MD5) hashed to something else.
    #[error(
        "{blob} from the upstream has {actual}, not the {expected} the upstream claims: the bytes are corrupt or were tampered with"
    )]
    ForeignMismatch {
        blob: String,
        expected: String,
        actual: String,
    },

    /// `blob` names what was fetched: "Blob `<digest>`", "`path` (md5:…)".
    #[error("{blob} from the upstream ended after {received} of {expected} bytes")]
    ShortBody {
        blob: String,
        expected: u64,
        received: u64,
    },

    #[error("{blob} from the upstream is longer than the {expected} bytes expected")]
    LongBody { blob: String, expected: u64 },

    #[error("Invalid range {start}..{end} for blob `{digest}` of {size} bytes")]
    BadRange {
        digest: Digest,
        start: u64,
        end: u64,
        size: u64,
    },

    #[error(transparent)]
    Invalid(#[from] hoard_types::Error),

    #[error("Failed to {op} `{}`", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("Invalid upstream URL `{url}`: {reason}")]
    Url { url: String, reason: String },

    /// From a `dir://` root: its files, or bytes handed to it.
    #[error(transparent)]
    Layout(#[from] hoard_layout::Error),

    /// Finding or using cloud credentials (`s3://`, `gs://` references), naming the
    /// setting or the credentials service.
    #[error(transparent)]
    Cloud(#[from] hoard_cloud::Error),
}

impl Error {
    /// Why the upstream could not be reached, without naming it again (for messages that
    /// already do): `Connection refused (os error 111), after 2 attempt(s)`.
    pub fn reason(&self) -> String {
        match self {
            Self::Unreachable {
                attempts, cause, ..
            } => format!("{cause}, after {attempts} attempt(s)"),
            other => hoard_types::error_chain(other),
        }
    }

    /// [`Self::Unreachable`], with the innermost cause of `error` as its reason.
    pub fn unreachable(
        url: impl Into<String>,
        attempts: u32,
        error: &dyn std::error::Error,
    ) -> Self {
        let mut cause: &dyn std::error::Error = error;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        Self::Unreachable {
            url: url.into(),
            attempts,
            cause: cause.to_string(),
        }
    }

    /// An answer with a failing `status` that no caller treats specially: `Unavailable`
    /// (worth retrying) for 429 and 5xx, `Rejected` otherwise.
    pub(crate) fn from_status(
        upstream: String,
        status: reqwest::StatusCode,
        attempts: u32,
        detail: String,
    ) -> Self {
        if crate::retry::retryable(status) {
            Self::Unavailable {
                upstream,
                status: status.as_u16(),
                attempts,
                detail,
            }
        } else {
            Self::Rejected {
                upstream,
                status: status.as_u16(),
                detail,
            }
        }
    }

    /// Whether the upstream could not be asked at all (network down, server gone), as
    /// opposed to having answered. A daemon falls back to what it knows in that case.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Unavailable { .. } | Self::Broken { .. } => true,
            Self::Cloud(e) => e.is_unreachable(),
            _ => false,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Self::NotFound { .. } | Self::Layout(hoard_layout::Error::NotFound { .. })
        )
    }
}

pub(crate) trait IoContext<T> {
    fn io(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T, Error>;
}

impl<T> IoContext<T> for Result<T, io::Error> {
    fn io(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T, Error> {
        self.map_err(|source| Error::Io {
            op,
            path: path.into(),
            source,
        })
    }
}
