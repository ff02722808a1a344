//! What the server knows between requests: the storage, the tokens, and which projects
//! each blob belongs to (for access checks on blobs).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hoard_layout::DirRoot;
use hoard_types::{ArtifactName, Digest, Manifest, ProjectName, Version};

use crate::api::ApiError;
use crate::metrics::Metrics;
use crate::tokens::{Role, Token, Tokens};

/// Unlocked temp files older than this are left from a crash and removed at start (the
/// age covers the instant between a writer creating its file and locking it).
const STALE_TMP: Duration = Duration::from_secs(60);

/// Bounds on what a client may send.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest JSON body (a commit's manifest): 256 MiB.
    pub max_json: usize,
    /// Largest blob accepted by `PUT`.
    pub max_blob: u64,
    /// A request body that delivers nothing for this long is abandoned.
    pub body_stall: Duration,
    /// Most digests in one `blobs/missing` request.
    pub max_missing: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_json: 256 << 20,
            max_blob: hoard_types::manifest::MAX_FILE_SIZE,
            body_stall: Duration::from_secs(60),
            max_missing: 100_000,
        }
    }
}

/// The server's shared state.
#[derive(Debug)]
pub struct State {
    pub(crate) root: DirRoot,
    tokens: Option<Tokens>,
    /// With tokens only: blob → the projects (`entity/project`) whose versions use it. A
    /// blob is readable by a token that may download from one of them.
    blob_projects: RwLock<HashMap<Digest, Vec<Arc<str>>>>,
    /// With tokens only: (token name, blob) for blobs a token uploaded and the server
    /// verified. Proof of possession: only then may its commits use a blob it could not
    /// read otherwise. In memory; after a restart the client uploads again.
    proven: Mutex<HashSet<(String, Digest)>>,
    pub(crate) metrics: Metrics,
    pub(crate) limits: Limits,
}

/// Who is asking.
#[derive(Clone, Debug)]
pub(crate) enum Caller {
    /// The server runs without tokens: everyone is an admin everywhere.
    Open,
    Token(Arc<Token>),
}

impl Caller {
    pub(crate) fn name(&self) -> &str {
        match self {
            Self::Open => "-",
            Self::Token(token) => &token.name,
        }
    }

    fn role(&self, entity: &str, project: &str) -> Option<Role> {
        match self {
            Self::Open => Some(Role::Admin),
            Self::Token(token) => token.role(entity, project),
        }
    }

    /// Checks that the caller may list the artifacts of `project`; one without a grant
    /// there is answered like a project that does not exist.
    pub(crate) fn authorize_project(&self, project: &ProjectName) -> Result<(), ApiError> {
        match self.role(&project.entity, &project.project) {
            Some(_) => Ok(()),
            None => Err(ApiError::not_found(format!("project `{project}`"))),
        }
    }

    /// Checks that the caller may do `action` on `name`. A project the caller has no
    /// grant for answers like a missing artifact, so names do not leak.
    pub(crate) fn authorize(&self, name: &ArtifactName, action: Action) -> Result<(), ApiError> {
        let (need, refusal) = match action {
            Action::List => (Role::Viewer, ""),
            Action::Download => (Role::Member, hoard_types::registry::problem::VIEW_ONLY),
            Action::Publish => (Role::Member, "view-only members cannot publish artifacts"),
            Action::MoveAlias => (Role::Admin, "only admins can move aliases"),
        };
        match self.role(&name.entity, &name.project) {
            None => Err(ApiError::not_found(format!("artifact `{name}`"))),
            Some(role) if role >= need => Ok(()),
            Some(role) => Err(ApiError::forbidden(format!(
                "{refusal} (token `{}` is a {role} of `{}/{}`)",
                self.name(),
                name.entity,
                name.project
            ))),
        }
    }

    /// Uploading needs a member grant somewhere.
    pub(crate) fn may_upload(&self) -> Result<(), ApiError> {
        match self {
            Caller::Token(token) if !token.has_anywhere(Role::Member) => Err(ApiError::forbidden(
                format!("token `{}` may not publish anywhere", token.name),
            )),
            _ => Ok(()),
        }
    }
}

/// What a request wants to do to an artifact.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Action {
    List,
    Download,
    Publish,
    MoveAlias,
}

impl State {
    /// Reads a JSON body within the registry's limits.
    pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        request: http::Request<hyper::body::Incoming>,
    ) -> Result<T, ApiError> {
        let limits = &self.limits;
        Ok(hoard_http::read_json(request, limits.max_json, limits.body_stall).await?)
    }

    /// Opens (creating if needed) the storage at `root`. With tokens, reads every version
    /// once to learn which projects use which blobs.
    pub fn open(
        root: PathBuf,
        tokens: Option<Tokens>,
        limits: Limits,
    ) -> Result<Self, hoard_layout::Error> {
        let root = DirRoot::create(root)?;
        let removed = root.clean_tmp(STALE_TMP)?;
        if removed > 0 {
            tracing::info!(removed, "removed temp files left by an earlier crash");
        }
        let state = Self {
            root,
            blob_projects: RwLock::default(),
            proven: Mutex::default(),
            metrics: Metrics::default(),
            limits,
            tokens: None,
        };
        if tokens.is_some() {
            for version in state.all_versions()? {
                state.note_blobs(&version.artifact()?, &version.manifest);
            }
        }
        Ok(Self { tokens, ..state })
    }

    pub fn is_open(&self) -> bool {
        self.tokens.is_none()
    }

    fn all_versions(&self) -> Result<Vec<Version>, hoard_layout::Error> {
        let mut versions = Vec::new();
        let artifacts = self.root.root().join("artifacts");
        for entity in subdirs(&artifacts) {
            for project in subdirs(&artifacts.join(&entity)) {
                for name in subdirs(&artifacts.join(&entity).join(&project)) {
                    let Ok(artifact) = ArtifactName::new(&entity, &project, &name) else {
                        continue;
                    };
                    for number in self.root.version_numbers(&artifact)? {
                        let selector = hoard_types::Selector::Version(number);
                        versions.push(self.root.resolve(&artifact, &selector)?);
                    }
                }
            }
        }
        Ok(versions)
    }

    /// Records that `name`'s project uses every blob of `manifest`.
    pub(crate) fn note_blobs(&self, name: &ArtifactName, manifest: &Manifest) {
        let project: Arc<str> = format!("{}/{}", name.entity, name.project).into();
        let mut map = self
            .blob_projects
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A reference entry does not make a blob readable: its digest is only a claim
        // about the bytes at its URI.
        for entry in manifest.entries.values().filter(|e| e.reference.is_none()) {
            let projects = map.entry(entry.digest).or_default();
            if !projects.contains(&project) {
                projects.push(project.clone());
            }
        }
    }

    pub(crate) fn note_proven(&self, caller: &Caller, digest: Digest) {
        if let Caller::Token(token) = caller {
            let mut proven = self
                .proven
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            proven.insert((token.name.clone(), digest));
        }
    }

    /// The caller behind an `Authorization` header.
    pub(crate) fn caller(&self, authorization: Option<&str>) -> Result<Caller, ApiError> {
        let Some(tokens) = &self.tokens else {
            return Ok(Caller::Open);
        };
        let secret = authorization
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::unauthorized("this registry needs `Authorization: Bearer <token>`")
            })?;
        tokens
            .find(secret.trim())
            .map(Caller::Token)
            .ok_or_else(|| ApiError::unauthorized("the token is not valid"))
    }

    /// Whether the caller may read (download, or use in a commit) a stored blob: an open
    /// server, a project it may download from uses it, or it uploaded the blob itself.
    /// `Err` tells a viewer why not (403) and everyone else that it is not there (404).
    pub(crate) fn may_read_blob(&self, caller: &Caller, digest: &Digest) -> Result<(), ApiError> {
        let Caller::Token(token) = caller else {
            return Ok(());
        };
        let best = {
            let map = self
                .blob_projects
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            map.get(digest).and_then(|projects| {
                projects
                    .iter()
                    .filter_map(|p| p.split_once('/'))
                    .filter_map(|(e, p)| token.role(e, p))
                    .max()
            })
        };
        let proven = || {
            let proven = self
                .proven
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            proven.contains(&(token.name.clone(), *digest))
        };
        match best {
            Some(role) if role >= Role::Member => Ok(()),
            _ if proven() => Ok(()),
            Some(_) => Err(ApiError::forbidden(
                hoard_types::registry::problem::VIEW_ONLY.to_owned(),
            )),
            None => Err(ApiError::not_found(format!("blob `{digest}`"))),
        }
    }
}

fn subdirs(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}
