//! W&B's listings, as the SDK's `Api.artifact_types`, `Api.artifact_collections` and
//! `Api.artifacts` make them: a project's artifacts are its collections of every type, and
//! an artifact's versions are its collection's (whose type its `latest` names).

use hoard_types::api::ListedArtifact;
use hoard_types::{ArtifactName, ProjectName};

use super::WandbClient;
use super::graphql::{self, Connection, ListVars};
use crate::Error;
use crate::upstream::ForeignListed;

/// Entries per page, and pages at most, of one listing.
const PER_PAGE: u32 = 100;
const MAX_PAGES: usize = 10_000;

impl WandbClient {
    /// Every page of a connection; `None` when `connection` finds none in the answer (a
    /// project, type or collection that does not exist, or that the key may not see).
    async fn pages<D: serde::de::DeserializeOwned, E>(
        &self,
        (operation, query): (&str, &str),
        vars: ListVars<'_>,
        what: &str,
        connection: fn(D) -> Option<Connection<E>>,
    ) -> Result<Option<Vec<E>>, Error> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let vars = ListVars {
                cursor: cursor.as_deref(),
                ..vars
            };
            let data: D = self.graphql(operation, query, vars, what).await?;
            let Some(page) = connection(data) else {
                return Ok(None);
            };
            all.extend(page.edges);
            match page.page {
                Some(info) if info.has_next_page => match info.end_cursor {
                    Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
                    _ => {
                        return Err(
                            self.protocol(format!("{what}: a next page without a new cursor"))
                        );
                    }
                },
                _ => return Ok(Some(all)),
            }
        }
        Err(self.protocol(format!("{what}: more than {MAX_PAGES} pages")))
    }

    pub(super) async fn list_artifacts(
        &self,
        project: &ProjectName,
    ) -> Result<Vec<ListedArtifact>, Error> {
        let what = format!("the artifacts of `{project}`");
        let not_found = || Error::NotFound {
            what: format!("project `{project}` on W&B (or the API key may not see it)"),
        };
        let vars = ListVars {
            entity: &project.entity,
            project: &project.project,
            kind: None,
            collection: None,
            cursor: None,
            per_page: PER_PAGE,
        };
        let types = self
            .pages(
                ("ProjectArtifactTypes", graphql::PROJECT_ARTIFACT_TYPES),
                vars,
                &what,
                |d: graphql::TypesData| d.project?.types,
            )
            .await?
            .ok_or_else(not_found)?;
        let mut listed = Vec::new();
        for kind in types {
            let vars = ListVars {
                kind: Some(&kind.node.name),
                ..vars
            };
            let collections = self
                .pages(
                    ("ArtifactTypeArtifactCollections", graphql::TYPE_COLLECTIONS),
                    vars,
                    &what,
                    |d: graphql::CollectionsData| d.project?.kind?.collections,
                )
                .await?
                .unwrap_or_default();
            listed.extend(collections.into_iter().map(|c| ListedArtifact {
                name: c.node.name,
                versions: None,
                latest: None,
                aliases: Vec::new(),
            }));
        }
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        listed.dedup_by(|a, b| a.name == b.name);
        if listed.is_empty() {
            return Err(not_found());
        }
        Ok(listed)
    }

    pub(super) async fn list_versions(
        &self,
        name: &ArtifactName,
    ) -> Result<Vec<ForeignListed>, Error> {
        let what = format!("the versions of `{name}`");
        // The collection's type, from its latest version.
        let kind = self.latest_kind(name).await?;
        let vars = ListVars {
            entity: &name.entity,
            project: &name.project,
            kind: Some(&kind),
            collection: Some(&name.name),
            cursor: None,
            per_page: PER_PAGE,
        };
        let edges = self
            .pages(
                ("ProjectArtifacts", graphql::PROJECT_ARTIFACTS),
                vars,
                &what,
                |d: graphql::ArtifactsData| d.project?.kind?.collection?.artifacts,
            )
            .await?
            .ok_or_else(|| Error::NotFound {
                what: format!("artifact `{name}` on W&B (or the API key may not see it)"),
            })?;
        let mut listed = Vec::with_capacity(edges.len());
        for edge in edges {
            let label = match (edge.node.version_index, edge.version) {
                (Some(n), _) => format!("v{n}"),
                (None, Some(version)) => version,
                (None, None) => {
                    return Err(self.protocol(format!("{what}: a version without a number")));
                }
            };
            let mut aliases: Vec<String> = edge
                .node
                .aliases
                .into_iter()
                // An artifact's aliases in other collections (links) are not this one's.
                .filter(|a| a.collection.as_ref().is_none_or(|c| c.name == name.name))
                .map(|a| a.alias)
                .collect();
            aliases.sort();
            listed.push(ForeignListed {
                label,
                aliases,
                created_at: edge.node.created_at,
                files: edge.node.file_count,
                size: edge.node.size,
            });
        }
        Ok(listed)
    }
}
