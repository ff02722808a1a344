//! What the daemon asks of a server of record, as narrow traits, and [`Upstream`], the
//! kinds of upstream the daemon knows.
//!
//! - [`BlobSource`]: fetches a blob (or a byte range of it) by its blake3 digest. Every
//!   byte source is one: a catalog, a reference entry's URI, one file of a foreign
//!   version.
//! - [`Catalog`]: a [`BlobSource`] that also resolves references to [`Version`]s (blake3
//!   manifests) and lists an artifact's versions: the hoard registry, a `dir://` root.
//! - [`Publisher`]: takes publishes (missing blobs, uploads, commits, aliases); a native
//!   upstream that has it is a [`Catalog`] too, but the daemon's outbox sees only this.
//! - [`ForeignCatalog`]: an upstream that names files by its own digests (W&B's MD5):
//!   versions are [`ForeignVersion`]s, and each file is fetched from the [`FileSource`]
//!   the catalog hands out for it, checked against the foreign digest.
//!
//! # Adding an upstream kind
//!
//! Write a module that implements [`Catalog`] (and [`Publisher`] if it takes publishes)
//! or [`ForeignCatalog`] with its [`FileSource`]s, then give its URL form one line in
//! [`crate::open`]. The daemon needs no change: it sees an [`Upstream`].

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use hoard_types::api::ListedArtifact;
use hoard_types::registry::{ArtifactList, CommitRequest, Committed, VersionList};
use hoard_types::{
    ArtifactName, ArtifactRef, Digest, ForeignVersion, ProjectName, RelPath, Selector, Version,
};

use crate::{BlobBatch, BlobStream, BoxFuture, Error};

/// A version as a foreign upstream lists it: its label (`vN`, a Hub commit) and aliases
/// (a Hub commit's branches and tags), and what else the upstream tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignListed {
    pub label: String,
    pub aliases: Vec<String>,
    pub created_at: Option<String>,
    pub files: Option<u64>,
    pub size: Option<u64>,
}

/// The kinds of upstream, each with the capabilities it has.
#[derive(Clone)]
pub enum Upstream {
    /// Versions are blake3 manifests (the registry, `dir://`).
    Native {
        catalog: Arc<dyn Catalog>,
        /// The same server, when it takes publishes.
        publisher: Option<Arc<dyn Publisher>>,
    },
    /// Versions name files by the upstream's digests (W&B); publishing is the upstream's
    /// own tools' business.
    Foreign(Arc<dyn ForeignCatalog>),
}

impl Upstream {
    /// A native upstream that takes publishes.
    pub fn publishing<T: Catalog + Publisher + 'static>(server: Arc<T>) -> Self {
        Self::Native {
            catalog: server.clone(),
            publisher: Some(server),
        }
    }

    /// A native upstream that only serves.
    pub fn read_only(catalog: Arc<dyn Catalog>) -> Self {
        Self::Native {
            catalog,
            publisher: None,
        }
    }

    /// `http://host:port`, `dir:///path`, `wandb https://api.wandb.ai`: for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Native { catalog, .. } => catalog.describe(),
            Self::Foreign(foreign) => foreign.describe(),
        }
    }

    /// The same upstream speaking with another credential (a caller's), or `None` when it
    /// has no credentials (a `dir://` root: the filesystem decides).
    pub fn with_token(&self, token: &str) -> Option<Result<Upstream, Error>> {
        match self {
            Self::Native { catalog, .. } => catalog.with_token(token),
            Self::Foreign(foreign) => foreign.with_token(token),
        }
    }

    /// The artifact `reference` names, with `entity` and `project` for what it leaves
    /// out (the upstream's default entity, or its own reading of such a reference).
    pub fn qualify(
        &self,
        reference: &ArtifactRef,
        entity: Option<&str>,
        project: Option<&str>,
    ) -> Result<ArtifactName, hoard_types::Error> {
        if let Self::Foreign(foreign) = self
            && let Some(name) = foreign.qualify(reference, entity, project)
        {
            return name;
        }
        reference.qualify(entity.or(self.default_entity()), project)
    }

    /// The entity a reference without one means, if the upstream has one.
    pub fn default_entity(&self) -> Option<&str> {
        match self {
            Self::Native { .. } => None,
            Self::Foreign(foreign) => foreign.default_entity(),
        }
    }

    /// Where blobs are fetched by digest, for an upstream that serves them so.
    pub fn blobs(&self) -> Option<Arc<dyn BlobSource>> {
        match self {
            Self::Native { catalog, .. } => Some(catalog.clone()),
            Self::Foreign(_) => None,
        }
    }

    /// Where publishes go, for an upstream that takes them.
    pub fn publisher(&self) -> Option<Arc<dyn Publisher>> {
        match self {
            Self::Native { publisher, .. } => publisher.clone(),
            Self::Foreign(_) => None,
        }
    }
}

/// Bytes by blake3 digest. Answers are untrusted: the streams verify what they carry.
pub trait BlobSource: Send + Sync {
    /// `http://host:port`, `dir:///path`, a URI: for messages and `status`.
    fn describe(&self) -> String;

    /// A blob of `size` bytes, or the byte range `range` of it, as a verified stream.
    fn fetch_blob<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
        range: Option<Range<u64>>,
    ) -> BoxFuture<'a, Result<BlobStream, Error>>;

    /// Many whole blobs, `(digest, size)`, in one answer read in that order, for a source
    /// that serves them so (the hoard registry's `POST /v1/blobs/batch`); `None` when it
    /// does not (the caller asks for each blob with [`Self::fetch_blob`] then).
    fn fetch_batch(
        &self,
        _blobs: Vec<(Digest, u64)>,
    ) -> Option<BoxFuture<'_, Result<BlobBatch, Error>>> {
        None
    }
}

/// A server of record whose versions are blake3 manifests.
///
/// Implementations validate versions (names, manifest, digest) and check that a resolved
/// version is the one asked for.
pub trait Catalog: BlobSource {
    /// The version an alias, `vN` or digest names, with its manifest.
    fn resolve<'a>(
        &'a self,
        name: &'a ArtifactName,
        selector: &'a Selector,
    ) -> BoxFuture<'a, Result<Version, Error>>;

    /// Every version (without manifests) and alias of an artifact.
    fn list<'a>(&'a self, name: &'a ArtifactName) -> BoxFuture<'a, Result<VersionList, Error>>;

    /// The artifacts of a project.
    fn artifacts<'a>(
        &'a self,
        project: &'a ProjectName,
    ) -> BoxFuture<'a, Result<ArtifactList, Error>>;

    /// See [`Upstream::with_token`]; `None` for a catalog without credentials.
    fn with_token(&self, _token: &str) -> Option<Result<Upstream, Error>> {
        None
    }
}

/// A server that takes publishes: blobs it lacks are uploaded, then the manifest is
/// committed as a version.
pub trait Publisher: Send + Sync {
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
}

/// An upstream whose versions are [`ForeignVersion`]s (see `hoard_types::foreign`).
pub trait ForeignCatalog: Send + Sync {
    /// `wandb https://api.wandb.ai`: for messages and `status`.
    fn describe(&self) -> String;

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

    /// See [`Upstream::with_token`]; `None` for a catalog without credentials.
    fn with_token(&self, _token: &str) -> Option<Result<Upstream, Error>> {
        None
    }

    /// The entity a reference without one means (the Hub: `models`).
    fn default_entity(&self) -> Option<&str> {
        None
    }

    /// The artifacts of a project (the Hub: an owner's repos).
    fn artifacts<'a>(
        &'a self,
        _project: &'a ProjectName,
    ) -> BoxFuture<'a, Result<Vec<ListedArtifact>, Error>> {
        not_built(format!("listing artifacts of `{}`", self.describe()))
    }

    /// The versions of an artifact that the upstream names (the Hub: the commits of its
    /// branches and tags), newest first where it says.
    fn versions<'a>(
        &'a self,
        _name: &'a ArtifactName,
    ) -> BoxFuture<'a, Result<Vec<ForeignListed>, Error>> {
        not_built(format!("listing versions of `{}`", self.describe()))
    }

    /// A reference this upstream reads its own way (the Hub: `gpt2`, a repo without an
    /// owner); `None`: the defaults apply as for any upstream.
    fn qualify(
        &self,
        _reference: &ArtifactRef,
        _entity: Option<&str>,
        _project: Option<&str>,
    ) -> Option<Result<ArtifactName, hoard_types::Error>> {
        None
    }

    /// The label of the one version `selector` names for good, when it does (a Hub
    /// commit): answered from the index once cached, with no network call.
    fn fixed<'s>(&self, _selector: &'s Selector) -> Option<&'s str> {
        None
    }

    /// Confirms that this catalog's credential may download `version` as this cache holds
    /// it: by default, the version asked for again, which must be the same one.
    fn confirm<'a>(&'a self, version: &'a ForeignVersion) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let name = version.artifact()?;
            let selector =
                Selector::parse_tag(&version.version).map_err(|reason| Error::Protocol {
                    upstream: self.describe(),
                    reason,
                })?;
            if self.resolve_foreign(&name, &selector).await?.digest() == version.digest() {
                Ok(())
            } else {
                Err(Error::NotFound {
                    what: format!(
                        "`{name}:{}` as this cache knows it (it changed upstream)",
                        version.version
                    ),
                })
            }
        })
    }

    /// Whether anyone may download the version with these `metadata` (a public Hub repo):
    /// then a caller's credential needs no confirmation before cached files are handed
    /// out. `false` unless the upstream says so.
    fn public(&self, _metadata: &serde_json::Value) -> bool {
        false
    }

    /// The label of the version `selector` names now (a Hub branch: its commit), when the
    /// upstream tells it for less than the whole version: a version the index holds by that
    /// label is then not asked for again. `None`: ask for the whole version.
    fn label<'a>(
        &'a self,
        _name: &'a ArtifactName,
        _selector: &'a Selector,
    ) -> BoxFuture<'a, Result<Option<String>, Error>> {
        Box::pin(async { Ok(None) })
    }
}

/// One file of a [`ForeignVersion`]: fetched whole and checked against the upstream's
/// digest while its blake3 digest is unknown, or (as a [`BlobSource`]) by range and
/// checked against its blake3 digest once hoard knows it.
pub trait FileSource: BlobSource {
    /// The whole file, checked against the upstream's digest of it.
    fn fetch_foreign(&self) -> BoxFuture<'_, Result<BlobStream, Error>>;

    /// A byte range of the file, only counted: the caller checks the whole (see
    /// [`Self::whole`]).
    fn fetch_part(&self, range: Range<u64>) -> BoxFuture<'_, Result<BlobStream, Error>>;

    /// The digest the upstream claims for the file when the bytes can be checked against
    /// it ([`crate::ForeignCheck`]): a caller that fetched it in parts checks the
    /// assembled bytes. `None` for an ETag.
    fn whole(&self) -> Option<hoard_types::ForeignDigest>;
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

/// What an upstream kind does not do yet, as [`Error::Unsupported`].
fn not_built<'a, T: 'a>(what: String) -> BoxFuture<'a, Result<T, Error>> {
    Box::pin(async move {
        Err(Error::Unsupported {
            what: format!("{what} is not built yet"),
        })
    })
}
