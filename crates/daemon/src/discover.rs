//! Discovery: the artifacts of a project and the versions of an artifact, as the upstream
//! lists them to the caller (with their credential when they send one), and not-found
//! errors that say which part of a reference is unknown and what exists instead.

use std::fmt::Write as _;
use std::sync::Arc;

use hoard_store::BlobKey;
use hoard_types::api::{
    Artifacts, ArtifactsRequest, ListedArtifact, ListedVersion, Versions, VersionsRequest,
};
use hoard_types::registry::VersionSummary;
use hoard_types::{ArtifactName, ArtifactRef, ProjectName, Selector};
use hoard_upstream::{Catalog, Upstream};

use crate::caller::Asker;
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::runtime::blocking;

/// Names shown in a not-found error before "and N more".
const SHOWN: usize = 10;

impl Daemon {
    /// The upstream as `who` may see it.
    fn upstream_for(&self, who: &Asker) -> Result<Upstream, ApiError> {
        self.access.demand_credential(who)?;
        Ok(match &who.token {
            Some(token) => self.access.upstream_for(self.upstream(), token)?,
            None => self.upstream().clone(),
        })
    }

    /// The native catalog as `who` may see it (`None`: a foreign upstream).
    fn catalog_for(&self, who: &Asker) -> Result<Option<Arc<dyn Catalog>>, ApiError> {
        Ok(match self.upstream_for(who)? {
            Upstream::Native { catalog, .. } => Some(catalog),
            Upstream::Foreign(_) => None,
        })
    }

    pub(crate) async fn artifacts_for(
        &self,
        who: &Asker,
        asked: &ArtifactsRequest,
    ) -> Result<Artifacts, ApiError> {
        let project = ProjectName::parse(
            asked.path.as_deref(),
            asked.entity.as_deref().or(self.upstream().default_entity()),
            asked.project.as_deref(),
        )?;
        let listed = match self.upstream_for(who)? {
            Upstream::Native { catalog, .. } => catalog.artifacts(&project).await.map(|list| {
                list.artifacts
                    .into_iter()
                    .map(ListedArtifact::from)
                    .collect()
            }),
            Upstream::Foreign(foreign) => foreign.artifacts(&project).await,
        };
        let artifacts = listed.map_err(|e| {
            if e.is_not_found() {
                ApiError::not_found(format!(
                    "Not found: no project `{project}` at `{}` (or your credential may not see it); check the entity and project",
                    self.upstream().describe()
                ))
            } else {
                e.into()
            }
        })?;
        Ok(Artifacts {
            entity: project.entity,
            project: project.project,
            upstream: self.upstream().describe(),
            artifacts,
        })
    }

    pub(crate) async fn versions_for(
        &self,
        who: &Asker,
        asked: &VersionsRequest,
    ) -> Result<Versions, ApiError> {
        if asked.name.contains([':', '@']) {
            return Err(ApiError::bad_request(format!(
                "`{}` names a version; name the artifact alone (`entity/project/name`) to list its versions",
                hoard_types::truncate(&asked.name)
            )));
        }
        let name = self.qualify(
            &asked.name,
            asked.entity.as_deref(),
            asked.project.as_deref(),
        )?;
        let (mut versions, aliases) = match self.upstream_for(who)? {
            Upstream::Native { catalog, .. } => match catalog.list(&name).await {
                Ok(list) => {
                    let mut versions = Vec::with_capacity(list.versions.len());
                    for version in list.versions {
                        let cached_files = self.cached_files(version.digest).await?;
                        versions.push(ListedVersion::native(version, cached_files));
                    }
                    (versions, list.aliases)
                }
                Err(e) => {
                    let (entity, project) = (asked.entity.as_deref(), asked.project.as_deref());
                    return Err(self
                        .explain(who, &asked.name, entity, project, e.into())
                        .await);
                }
            },
            Upstream::Foreign(foreign) => {
                let listed = foreign.versions(&name).await?;
                self.foreign_listed(&name, listed).await?
            }
        };
        // Publishes not uploaded yet are the daemon's user's alone (as in `status`).
        if who.caller.is_daemon_user() {
            for pending in self.outbox.pending_of(&name).await? {
                let local = crate::outbox::local_version(&pending);
                let mut version = VersionSummary::of(&local);
                version.aliases.clone_from(&pending.commit.aliases);
                let files = Some(version.files);
                versions.push(ListedVersion::native(version, files));
            }
        }
        Ok(Versions {
            entity: name.entity,
            project: name.project,
            name: name.name,
            upstream: self.upstream().describe(),
            versions,
            aliases,
        })
    }

    /// A foreign upstream's versions, with what this cache knows of each (its digest,
    /// files and size once resolved here, and how many files are cached), and the aliases.
    async fn foreign_listed(
        &self,
        name: &ArtifactName,
        listed: Vec<hoard_upstream::ForeignListed>,
    ) -> Result<
        (
            Vec<ListedVersion>,
            std::collections::BTreeMap<String, String>,
        ),
        ApiError,
    > {
        let mut versions = Vec::with_capacity(listed.len());
        let mut aliases = std::collections::BTreeMap::new();
        for v in listed {
            for alias in &v.aliases {
                aliases.insert(alias.clone(), v.label.clone());
            }
            let (store, key, label) = (self.store.clone(), name.clone(), v.label.clone());
            let held = blocking(move || {
                Ok(match Selector::parse_tag(&label) {
                    Ok(Selector::Version(n)) => store.foreign_version(&key, n)?,
                    _ => store.foreign_version_by_label(&key, &label)?,
                })
            })
            .await?;
            let mut version = ListedVersion {
                version: v.label,
                digest: None,
                aliases: v.aliases,
                kind: None,
                created_at: v.created_at,
                files: v.files,
                size: v.size,
                cached_files: None,
            };
            if let Some(held) = held {
                let held = Arc::new(held);
                let entries = crate::foreign::listed(&self.store, &held).await?;
                let keys: Vec<BlobKey> = entries
                    .iter()
                    .filter_map(|e| Some(BlobKey::new(e.digest?, e.exec)))
                    .collect();
                let (store, bound) = (self.store.clone(), keys.len() as u64);
                let missing = blocking(move || Ok(store.missing(&keys)?.len() as u64)).await?;
                version.digest = Some(held.digest());
                version.files = Some(held.entries.len() as u64);
                version.size = Some(held.total_size());
                version.cached_files = Some(bound - missing);
            }
            versions.push(version);
        }
        Ok((versions, aliases))
    }

    fn qualify(
        &self,
        name: &str,
        entity: Option<&str>,
        project: Option<&str>,
    ) -> Result<ArtifactName, ApiError> {
        let typed: ArtifactRef = name.parse()?;
        Ok(self.upstream().qualify(&typed, entity, project)?)
    }

    /// How many files of the version with this manifest digest are cached (`None`: the
    /// version is not known here).
    async fn cached_files(&self, digest: hoard_types::Digest) -> Result<Option<u64>, ApiError> {
        let store = self.store.clone();
        blocking(move || {
            let Some(version) = store.version_by_digest(&digest)? else {
                return Ok(None);
            };
            let keys = crate::version::blob_keys(&version.manifest);
            let missing = store.missing(&keys)?.len();
            Ok(Some((keys.len() - missing) as u64))
        })
        .await
    }

    /// A not-found for `reference`, told more exactly: which part is unknown (the project,
    /// the artifact, the alias or version), at which upstream, and what exists there.
    /// Any other error, or one the upstream cannot list for, is returned as it is.
    pub(crate) async fn explain(
        &self,
        who: &Asker,
        reference: &str,
        entity: Option<&str>,
        project: Option<&str>,
        error: ApiError,
    ) -> ApiError {
        if error.kind != "not-found" {
            return error;
        }
        let Ok(typed) = reference.parse::<ArtifactRef>() else {
            return error;
        };
        let Ok(name) = self.qualify(reference, entity, project) else {
            return error;
        };
        let Ok(Some(catalog)) = self.catalog_for(who) else {
            return error;
        };
        let at = self.upstream().describe();
        let detail = match catalog.list(&name).await {
            Ok(list) => {
                let aliases: Vec<String> = list
                    .aliases
                    .iter()
                    .map(|(alias, version)| format!("{alias} → {version}"))
                    .collect();
                let numbers = match (list.versions.first(), list.versions.last()) {
                    (Some(oldest), Some(newest)) if oldest.version != newest.version => {
                        format!("{}–{}", oldest.version, newest.version)
                    }
                    (Some(only), _) => only.version.clone(),
                    _ => "none".to_owned(),
                };
                let unknown = match &typed.selector {
                    Selector::Alias(alias) => format!("no alias `{alias}`"),
                    Selector::Version(n) => format!("no version `v{n}`"),
                    Selector::Digest(digest) => format!("no version with digest `{digest}`"),
                };
                format!(
                    "artifact `{name}` has {unknown} at `{at}`; its aliases: {}; its versions: {numbers} (`hoard versions {name}`)",
                    shown(&aliases)
                )
            }
            Err(e) if e.is_not_found() => {
                let in_project = ProjectName {
                    entity: name.entity.clone(),
                    project: name.project.clone(),
                };
                match catalog.artifacts(&in_project).await {
                    Ok(list) => {
                        let names: Vec<String> =
                            list.artifacts.into_iter().map(|a| a.name).collect();
                        format!(
                            "no artifact `{}` in project `{in_project}` at `{at}`; the project has: {} (`hoard artifacts {in_project}`)",
                            name.name,
                            shown(&names)
                        )
                    }
                    Err(e) if e.is_not_found() => format!(
                        "no project `{in_project}` at `{at}` (or your credential may not see it); check the entity and project"
                    ),
                    Err(_) => return error,
                }
            }
            Err(_) => return error,
        };
        ApiError::not_found(format!("Not found: {detail}"))
    }
}

/// Up to [`SHOWN`] names, then how many more.
fn shown(names: &[String]) -> String {
    if names.is_empty() {
        return "none".to_owned();
    }
    let mut text = names[..names.len().min(SHOWN)].join(", ");
    if names.len() > SHOWN {
        let _ = write!(text, " and {} more", names.len() - SHOWN);
    }
    text
}
