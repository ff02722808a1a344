//! The [`Upstream`] trait: everything the daemon asks of a server of record.

use std::future::Future;
use std::ops::Range;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use hoard_types::registry::{CommitRequest, Committed, VersionList};
use hoard_types::{ArtifactName, Digest, ForeignVersion, RelPath, Selector, Version};

use crate::{BlobStream, Error};

/// A boxed future, so that [`Upstream`] can be used as `dyn Upstream`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A server of record: the hoard registry, a `dir://` root, W&B (through
/// [`ForeignUpstream`]), later HF Hub.
///
/// Answers are untrusted: implementations validate versions (names, manifest, digest) and
/// check that a resolved version is the one asked for; blob streams verify their bytes.
pub trait Upstream: Send + Sync {
    /// `http://host:port`, `dir:///path`: for messages and `status`.
    fn describe(&self) -> String;

    /// The version an alias, `vN` or digest names, with its manifest.
    fn resolve<'a>(
        &'a self,
        name: &'a ArtifactName,
        selector: &'a Selector,
    ) -> BoxFuture<'a, Result<Version, Error>>;

    /// Every version (without manifests) and alias of an artifact.
    fn list<'a>(&'a self, name: &'a ArtifactName) -> BoxFuture<'a, Result<VersionList, Error>>;

    /// A blob of `size` bytes, or the byte range `range` of it, as a verified stream.
    fn fetch_blob<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
        range: Option<Range<u64>>,
    ) -> BoxFuture<'a, Result<BlobStream, Error>>;

    /// Which of these blobs the upstream lacks (and so must be uploaded before a commit).
    fn missing_blobs<'a>(
        &'a self,
        digests: &'a [Digest],
    ) -> BoxFuture<'a, Result<Vec<Digest>, Error>>;

    /// Uploads the blob `digest` from a local file; the upstream verifies it.
    fn upload_blob<'a>(
        &'a self,
        digest: &'a Digest,
        file: &'a Path,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Commits a manifest as a version (or finds the existing one with the same digest).
    fn commit<'a>(
        &'a self,
        name: &'a ArtifactName,
        request: &'a CommitRequest,
    ) -> BoxFuture<'a, Result<Committed, Error>>;

    /// Points `alias` at version `vN`.
    fn set_alias<'a>(
        &'a self,
        name: &'a ArtifactName,
        alias: &'a str,
        version: u32,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// The same upstream, speaking with another credential (a caller's), or `None` when
    /// this upstream has no credentials (a `dir://` root: the filesystem decides).
    fn with_token(&self, _token: &str) -> Option<Result<std::sync::Arc<dyn Upstream>, Error>> {
        None
    }

    /// For an upstream that names files by its own digests (W&B): its versions are
    /// [`ForeignVersion`]s, resolved with this instead of [`Self::resolve`].
    fn foreign(&self) -> Option<&dyn ForeignUpstream> {
        None
    }
}

/// An upstream whose versions are [`ForeignVersion`]s (see `hoard_types::foreign`).
pub trait ForeignUpstream: Send + Sync {
    /// The version an alias or `vN` names, with its entries.
    fn resolve_foreign<'a>(
        &'a self,
        name: &'a ArtifactName,
        selector: &'a Selector,
    ) -> BoxFuture<'a, Result<ForeignVersion, Error>>;

    /// Where to fetch the files `paths` of `version`: one source per path, asking the
    /// upstream only for these (signed URLs expire, so ask right before fetching).
    fn sources<'a>(
        &'a self,
        version: &'a ForeignVersion,
        paths: &'a [RelPath],
    ) -> BoxFuture<'a, Result<Vec<Arc<dyn FileSource>>, Error>>;
}

/// One file of a [`ForeignVersion`]: fetched whole and checked against the upstream's
/// digest while its blake3 digest is unknown, or (as an [`Upstream`] that only fetches)
/// by range and checked against its blake3 digest once hoard knows it.
pub trait FileSource: Upstream {
    /// The whole file, checked against the upstream's digest of it.
    fn fetch_foreign(&self) -> BoxFuture<'_, Result<BlobStream, Error>>;

    /// A byte range of the file, only counted: the caller checks the whole (see
    /// [`Self::md5`]).
    fn fetch_part(&self, range: Range<u64>) -> BoxFuture<'_, Result<BlobStream, Error>>;

    /// The MD5 the upstream claims for the file, when it names it by one: a caller that
    /// fetched it in parts checks the assembled bytes against it.
    fn md5(&self) -> Option<[u8; 16]>;

    fn into_upstream(self: Arc<Self>) -> Arc<dyn Upstream>;
}

/// Checks that an upstream answered the question asked: the right artifact and, for an
/// immutable selector, the right version.
pub(crate) fn check_resolved(
    upstream: &str,
    name: &ArtifactName,
    selector: &Selector,
    version: &Version,
) -> Result<(), Error> {
    let wrong = |what: String| Error::Protocol {
        upstream: upstream.to_owned(),
        reason: format!("asked for `{name}{selector}`, got {what}"),
    };
    let got = version.artifact()?;
    if got != *name {
        return Err(wrong(format!("`{got}`")));
    }
    match selector {
        Selector::Version(n) if version.number()? != *n => {
            Err(wrong(format!("version `{}`", version.version)))
        }
        Selector::Digest(d) if version.digest != *d => {
            Err(wrong(format!("digest `{}`", version.digest)))
        }
        _ => Ok(()),
    }
}
