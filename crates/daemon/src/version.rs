//! What a request resolved to ([`Found`]: a native or a foreign version, with the
//! [`Head`] that names either) and which of its files it wants ([`Selection`]).

use std::sync::Arc;

use hoard_store::BlobKey;
use hoard_types::{ArtifactName, Manifest, PathPrefix, RelPath, Selector, Version};

use crate::error::ApiError;

pub(crate) use hoard_types::api::PENDING;

/// A version and, if it is not fresh from the upstream, why.
pub(crate) struct Found {
    pub version: Versioned,
    pub warning: Option<String>,
}

/// A version of either kind of upstream.
pub(crate) enum Versioned {
    /// A blake3 manifest: from a native upstream, or published here and not yet
    /// committed upstream.
    Native(Arc<Version>),
    /// A version of a foreign upstream (W&B), whose files are bound to blobs per request,
    /// and its [`hoard_types::ForeignVersion::digest`].
    Foreign(Arc<hoard_types::ForeignVersion>, hoard_types::Digest),
}

/// What names a version, of either kind: for messages, access checks and answers.
pub(crate) struct Head<'a> {
    pub entity: &'a str,
    pub project: &'a str,
    pub name: &'a str,
    /// `vN`, or [`PENDING`].
    pub version: &'a str,
    pub digest: hoard_types::Digest,
    pub aliases: &'a [String],
    pub kind: Option<&'a str>,
    pub metadata: &'a serde_json::Value,
}

impl Head<'_> {
    pub(crate) fn artifact(&self) -> Result<ArtifactName, hoard_types::Error> {
        ArtifactName::new(self.entity, self.project, self.name)
    }

    /// The `N` of `vN`.
    pub(crate) fn number(&self) -> Result<u32, hoard_types::Error> {
        match Selector::parse_tag(self.version) {
            Ok(Selector::Version(n)) => Ok(n),
            _ => Err(hoard_types::Error::Manifest {
                reason: format!(
                    "version `{}` is not of the form `vN`",
                    hoard_types::truncate(self.version)
                ),
            }),
        }
    }

    /// Published here and not yet committed upstream.
    pub(crate) fn is_pending(&self) -> bool {
        self.version == PENDING
    }
}

impl std::fmt::Display for Head<'_> {
    /// `entity/project/name:vN`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}:{}",
            self.entity, self.project, self.name, self.version
        )
    }
}

impl Versioned {
    pub(crate) fn head(&self) -> Head<'_> {
        match self {
            Self::Native(v) => Head {
                entity: &v.entity,
                project: &v.project,
                name: &v.name,
                version: &v.version,
                digest: v.digest,
                aliases: &v.aliases,
                kind: v.kind.as_deref(),
                metadata: &v.metadata,
            },
            Self::Foreign(v, digest) => Head {
                entity: &v.entity,
                project: &v.project,
                name: &v.name,
                version: &v.version,
                digest: *digest,
                aliases: &v.aliases,
                kind: v.kind.as_deref(),
                metadata: &v.metadata,
            },
        }
    }
}

impl Found {
    pub(crate) fn fresh(version: Version) -> Self {
        Self::shared(Arc::new(version))
    }

    /// [`Self::fresh`] for a version already shared (the resolver's decoded versions).
    pub(crate) fn shared(version: Arc<Version>) -> Self {
        Self {
            version: Versioned::Native(version),
            warning: None,
        }
    }

    pub(crate) fn foreign(version: hoard_types::ForeignVersion) -> Self {
        let digest = version.digest();
        Self {
            version: Versioned::Foreign(Arc::new(version), digest),
            warning: None,
        }
    }

    pub(crate) fn head(&self) -> Head<'_> {
        self.version.head()
    }
}

/// Which files of a version a call wants.
#[derive(Default)]
pub(crate) struct Selection<'a> {
    /// W&B's `path_prefix`: a plain string prefix of the logical paths.
    pub path_prefix: Option<&'a str>,
    /// Exact logical paths (W&B's `get_path`); each must exist. None: every file.
    pub files: Vec<&'a str>,
    /// Glob patterns as `hf download` and `fnmatch` read them (`*` also matches `/`; a
    /// pattern ending in `/` means everything under it): a file is kept when it matches
    /// one `include` (or there is none) and no `exclude`.
    pub include: &'a [String],
    pub exclude: &'a [String],
    /// Remove from the destination what the version does not name under the prefix.
    pub clean: bool,
}

impl<'a> Selection<'a> {
    /// What a materialize request selects.
    pub(crate) fn of(asked: &'a hoard_types::api::MaterializeRequest) -> Self {
        Self {
            path_prefix: asked.path_prefix.as_deref(),
            files: asked
                .file
                .iter()
                .chain(&asked.files)
                .map(String::as_str)
                .collect(),
            include: &asked.include,
            exclude: &asked.exclude,
            clean: asked.clean,
        }
    }

    fn filtered(&self) -> bool {
        !self.include.is_empty() || !self.exclude.is_empty()
    }

    /// Every file of the version: no files named, no prefix, no patterns.
    fn is_whole(&self) -> bool {
        self.files.is_empty() && self.path_prefix.is_none_or(str::is_empty) && !self.filtered()
    }
}

/// The entries a call selected: all, those under W&B's string `path_prefix` that match
/// the patterns, or the files named.
pub(crate) fn select(
    version: &Arc<Version>,
    selection: &Selection<'_>,
) -> Result<Selected, ApiError> {
    if selection.is_whole() {
        return Ok(Selected::Whole(version.clone()));
    }
    let mut selected = Manifest::new();
    selected.entries = select_entries(&version.manifest.entries, selection)?
        .into_iter()
        .collect();
    Ok(Selected::Part(Arc::new(selected)))
}

/// The manifest of the files a request selected: the version's own when it asked for all
/// of it (a 20,000-file manifest takes 2 MiB, which is not copied), else the selection's.
#[derive(Clone)]
pub(crate) enum Selected {
    Whole(Arc<Version>),
    Part(Arc<Manifest>),
}

impl Selected {
    pub(crate) fn part(manifest: Manifest) -> Self {
        Self::Part(Arc::new(manifest))
    }
}

impl std::ops::Deref for Selected {
    type Target = Manifest;

    fn deref(&self) -> &Manifest {
        match self {
            Self::Whole(version) => &version.manifest,
            Self::Part(manifest) => manifest,
        }
    }
}

/// [`select`] over any path-ordered entries (a manifest's, or a foreign version's).
pub(crate) fn select_entries<E: Clone>(
    entries: &std::collections::BTreeMap<RelPath, E>,
    selection: &Selection<'_>,
) -> Result<Vec<(RelPath, E)>, ApiError> {
    if !selection.files.is_empty() {
        if selection.clean {
            return Err(ApiError::bad_request(
                "`clean` applies to a version or a `path_prefix`, not to named files",
            ));
        }
        if selection.path_prefix.is_some() || selection.filtered() {
            return Err(ApiError::bad_request(
                "name files, or select them with `path_prefix`/`include`/`exclude`, not both",
            ));
        }
        let mut selected = Vec::with_capacity(selection.files.len());
        for file in &selection.files {
            let path = RelPath::new(*file)?;
            let entry = entries
                .get(&path)
                .ok_or_else(|| ApiError::not_found(format!("the version has no file `{path}`")))?;
            selected.push((path, entry.clone()));
        }
        selected.sort_by(|a, b| a.0.cmp(&b.0));
        selected.dedup_by(|a, b| a.0 == b.0);
        return Ok(selected);
    }
    if selection.clean && selection.filtered() {
        return Err(ApiError::bad_request(
            "`clean` applies to a version or a `path_prefix`, not with `include`/`exclude` (it would remove the files they leave out)",
        ));
    }
    let prefix = match selection.path_prefix {
        Some(prefix) => PathPrefix::new(prefix)?,
        None => PathPrefix::all(),
    };
    let include = patterns(selection.include)?;
    let exclude = patterns(selection.exclude)?;
    let selected: Vec<_> = hoard_types::manifest::under_prefix(entries, &prefix)
        .filter(|(path, _)| {
            (include.is_empty() || include.iter().any(|p| p.matches(path.as_str())))
                && !exclude.iter().any(|p| p.matches(path.as_str()))
        })
        .map(|(path, entry)| (path.clone(), entry.clone()))
        .collect();
    if selected.is_empty() && selection.filtered() {
        return Err(ApiError::not_found(format!(
            "no file of the version{} matches the patterns (include {:?}, exclude {:?})",
            selection
                .path_prefix
                .map(|p| format!(" under `{p}`"))
                .unwrap_or_default(),
            selection.include,
            selection.exclude
        )));
    }
    if selected.is_empty() && selection.path_prefix.is_some() {
        return Err(ApiError::not_found(format!(
            "no file of the version starts with `{}`",
            prefix.as_str()
        )));
    }
    Ok(selected)
}

/// One glob pattern, matched as `fnmatch` does.
struct Pattern(glob::Pattern);

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        const FNMATCH: glob::MatchOptions = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: false,
            require_literal_leading_dot: false,
        };
        self.0.matches_with(path, FNMATCH)
    }
}

fn patterns(texts: &[String]) -> Result<Vec<Pattern>, ApiError> {
    texts
        .iter()
        .map(|text| {
            // `hf download --include "images/"`: everything under the folder.
            let full = if text.ends_with('/') {
                format!("{text}*")
            } else {
                text.clone()
            };
            glob::Pattern::new(&full).map(Pattern).map_err(|e| {
                ApiError::bad_request(format!(
                    "`{}` is not a glob pattern: {e}",
                    hoard_types::truncate(text)
                ))
            })
        })
        .collect()
}

/// The blobs a manifest names, each once.
pub(crate) fn blob_keys(manifest: &Manifest) -> Vec<BlobKey> {
    let mut keys: Vec<BlobKey> = manifest
        .entries
        .values()
        .map(|e| BlobKey::new(e.digest, e.exec))
        .collect();
    keys.sort_unstable_by_key(|k| (k.digest, k.exec));
    keys.dedup();
    keys
}

/// `acme/vision/bike:<version>` with `manifest`, for the crate's unit tests.
#[cfg(test)]
pub(crate) fn a_version(version: &str, manifest: Manifest) -> Version {
    Version {
        entity: "acme".into(),
        project: "vision".into(),
        name: "bike".into(),
        version: version.into(),
        digest: manifest.digest(),
        aliases: vec![],
        kind: None,
        metadata: serde_json::json!({}),
        created_at: None,
        manifest,
    }
}

#[cfg(test)]
mod tests {
    use hoard_types::{Digest, Entry};

    use super::*;

    fn version(files: &[&str]) -> Arc<Version> {
        let mut manifest = Manifest::new();
        for name in files {
            let entry = Entry {
                digest: Digest::of(name.as_bytes()),
                exec: false,
                reference: None,
                size: 1,
            };
            manifest
                .entries
                .insert(RelPath::new(*name).expect("a plain name"), entry);
        }
        Arc::new(a_version("v0", manifest))
    }

    /// A request for every file shares the version's manifest (a 20,000-file one takes
    /// 2 MiB); a prefix, a file or a pattern selects a manifest of its own.
    #[test]
    fn the_whole_version_is_shared_and_a_part_is_its_own() {
        let v = version(&["a/1", "a/2", "b/1"]);
        let none: &[String] = &[];
        let all = Selection {
            path_prefix: None,
            files: vec![],
            include: none,
            exclude: none,
            clean: true,
        };
        let whole = select(&v, &all).expect("selects");
        assert!(matches!(&whole, Selected::Whole(w) if Arc::ptr_eq(w, &v)));
        let empty_prefix = Selection {
            path_prefix: Some(""),
            ..all
        };
        assert!(matches!(
            select(&v, &empty_prefix).expect("selects"),
            Selected::Whole(_)
        ));
        let prefix = Selection {
            path_prefix: Some("a/"),
            files: vec![],
            include: none,
            exclude: none,
            clean: false,
        };
        let part = select(&v, &prefix).expect("selects");
        assert!(matches!(part, Selected::Part(_)));
        let paths: Vec<&str> = part.entries.keys().map(RelPath::as_str).collect();
        assert_eq!(paths, ["a/1", "a/2"]);
        let one = Selection {
            path_prefix: None,
            files: vec!["b/1"],
            include: none,
            exclude: none,
            clean: false,
        };
        assert_eq!(select(&v, &one).expect("selects").entries.len(), 1);
    }
}
