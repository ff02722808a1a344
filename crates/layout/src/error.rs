use std::io;
use std::path::PathBuf;

use hoard_types::Digest;

/// What the layout can fail at. Errors say where the problem is: the root's own files
/// (edited or corrupt), bytes handed in (an upload, a local file), or the filesystem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such artifact or version in the root.
    #[error("Not found: {what}")]
    NotFound { what: String },

    /// A commit names blobs the root does not hold (or the committer may not use).
    #[error("The root lacks {} blob(s) the version refers to (first: `{}`); upload them first", missing.len(), missing.first().map(ToString::to_string).unwrap_or_default())]
    MissingBlobs { missing: Vec<Digest> },

    /// A file of the root is not what the layout says it must be (edited by hand, cut
    /// short, or not a regular file).
    #[error("The `dir://` root `{}` holds a bad file: {reason}", root.display())]
    Corrupt { root: PathBuf, reason: String },

    /// A commit that the layout refuses (an alias or a type that is not valid, a size
    /// that disagrees with the stored blob).
    #[error("Refused: {reason}")]
    Rejected { reason: String },

    /// Bytes handed in are not the blob they should be: `what` names them (the uploaded
    /// bytes, a local file that changed while it was read).
    #[error("{what} hash to `{actual}`, not to `{digest}`")]
    WrongBytes {
        what: String,
        digest: Digest,
        actual: Digest,
    },

    /// Bytes handed in are not as long as they should be.
    #[error("{what} are {received} bytes long, not the {expected} expected")]
    WrongSize {
        what: String,
        expected: u64,
        received: u64,
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
