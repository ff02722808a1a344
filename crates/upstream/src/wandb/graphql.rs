//! The handful of W&B GraphQL operations hoard uses, as typed requests and answers.
//!
//! The query texts ask only for the fields read here; the operation names and shapes are
//! those of the wandb SDK (`wandb/sdk/artifacts/_generated/operations.py`), so a server
//! that answers the SDK answers hoard. Every field of an answer is optional where the
//! schema lets the server send `null` (an artifact the key cannot see resolves to null).

use serde::{Deserialize, Serialize};

pub(crate) const MEMBERSHIP_BY_NAME: &str = "\
query ArtifactMembershipByName($entity: String!, $project: String!, $name: String!) {
  project(name: $project, entityName: $entity) {
    artifactCollectionMembership(name: $name) {
      versionIndex
      aliases { alias }
      artifactCollection { name project { name entity { name } } }
      artifact {
        id state fileCount size digest description metadata createdAt
        artifactType { name }
      }
    }
  }
}";

pub(crate) const FETCH_MANIFEST: &str = "\
query FetchArtifactManifest($id: ID!) {
  artifact(id: $id) { currentManifest { file { directUrl } } }
}";

/// The SDK's `GetArtifactMembershipFileUrls`, with the `names` filter of its
/// `ArtifactMembershipFiles`: hoard asks for the URLs of the files it lacks, or pages
/// through all of them when it lacks most.
pub(crate) const FILE_URLS: &str = "\
query GetArtifactMembershipFileUrls($entity: String!, $project: String!, $collection: String!, $alias: String!, $fileNames: [String!], $cursor: String, $perPage: Int) {
  project(name: $project, entityName: $entity) {
    artifactCollection(name: $collection) {
      artifactMembership(aliasName: $alias) {
        files(names: $fileNames, after: $cursor, first: $perPage) {
          pageInfo { endCursor hasNextPage }
          edges { node { name directUrl } }
        }
      }
    }
  }
}";

#[derive(Serialize)]
pub(crate) struct Request<'a, V: Serialize> {
    #[serde(rename = "operationName")]
    pub operation: &'a str,
    pub query: &'a str,
    pub variables: V,
}

/// `{"data": …, "errors": [...]}`: a 200 answer can carry errors instead of (or with) data.
#[derive(Deserialize)]
pub(crate) struct Response<T> {
    pub data: Option<T>,
    #[serde(default)]
    pub errors: Vec<GraphqlError>,
}

#[derive(Deserialize)]
pub(crate) struct GraphqlError {
    #[serde(default)]
    pub message: String,
}

#[derive(Serialize)]
pub(crate) struct MembershipVars<'a> {
    pub entity: &'a str,
    pub project: &'a str,
    /// `name:alias` or `name:vN`: the server resolves it.
    pub name: &'a str,
}

#[derive(Deserialize)]
pub(crate) struct MembershipData {
    pub project: Option<MembershipProject>,
}

#[derive(Deserialize)]
pub(crate) struct MembershipProject {
    #[serde(rename = "artifactCollectionMembership")]
    pub membership: Option<Membership>,
}

#[derive(Deserialize)]
pub(crate) struct Membership {
    #[serde(rename = "versionIndex")]
    pub version_index: Option<u32>,
    #[serde(default)]
    pub aliases: Vec<Alias>,
    #[serde(rename = "artifactCollection")]
    pub collection: Option<Collection>,
    pub artifact: Option<Artifact>,
}

#[derive(Deserialize)]
pub(crate) struct Alias {
    pub alias: String,
}

#[derive(Deserialize)]
pub(crate) struct Collection {
    pub name: String,
    pub project: Option<Project>,
}

#[derive(Deserialize)]
pub(crate) struct Project {
    pub name: String,
    pub entity: Option<Named>,
}

#[derive(Deserialize)]
pub(crate) struct Named {
    pub name: String,
}

#[derive(Deserialize)]
pub(crate) struct Artifact {
    pub id: String,
    pub state: Option<String>,
    #[serde(rename = "fileCount")]
    pub file_count: Option<u64>,
    pub description: Option<String>,
    /// A JSON object serialized as a string.
    pub metadata: Option<String>,
    #[serde(rename = "createdAt")]
    pub created_at: Option<String>,
    #[serde(rename = "artifactType")]
    pub kind: Option<Named>,
}

#[derive(Serialize)]
pub(crate) struct ManifestVars<'a> {
    pub id: &'a str,
}

#[derive(Deserialize)]
pub(crate) struct ManifestData {
    pub artifact: Option<ManifestArtifact>,
}

#[derive(Deserialize)]
pub(crate) struct ManifestArtifact {
    #[serde(rename = "currentManifest")]
    pub current: Option<CurrentManifest>,
}

#[derive(Deserialize)]
pub(crate) struct CurrentManifest {
    pub file: Option<DirectUrl>,
}

#[derive(Deserialize)]
pub(crate) struct DirectUrl {
    #[serde(rename = "directUrl")]
    pub url: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct FileUrlVars<'a> {
    pub entity: &'a str,
    pub project: &'a str,
    pub collection: &'a str,
    /// `vN`.
    pub alias: &'a str,
    #[serde(rename = "fileNames")]
    pub names: Option<&'a [&'a str]>,
    pub cursor: Option<String>,
    #[serde(rename = "perPage")]
    pub per_page: u32,
}

#[derive(Deserialize)]
pub(crate) struct FileUrlData {
    pub project: Option<FileUrlProject>,
}

#[derive(Deserialize)]
pub(crate) struct FileUrlProject {
    #[serde(rename = "artifactCollection")]
    pub collection: Option<FileUrlCollection>,
}

#[derive(Deserialize)]
pub(crate) struct FileUrlCollection {
    #[serde(rename = "artifactMembership")]
    pub membership: Option<FileUrlMembership>,
}

#[derive(Deserialize)]
pub(crate) struct FileUrlMembership {
    pub files: Option<FileConnection>,
}

#[derive(Deserialize)]
pub(crate) struct FileConnection {
    #[serde(rename = "pageInfo")]
    pub page: PageInfo,
    #[serde(default)]
    pub edges: Vec<FileEdge>,
}

#[derive(Deserialize)]
pub(crate) struct PageInfo {
    #[serde(rename = "endCursor")]
    pub end_cursor: Option<String>,
    #[serde(rename = "hasNextPage")]
    pub has_next_page: bool,
}

#[derive(Deserialize)]
pub(crate) struct FileEdge {
    pub node: Option<FileNode>,
}

#[derive(Deserialize)]
pub(crate) struct FileNode {
    pub name: String,
    #[serde(rename = "directUrl")]
    pub url: Option<String>,
}

/// The SDK's `ProjectArtifactTypes`: the artifact types of a project.
pub(crate) const PROJECT_ARTIFACT_TYPES: &str = "\
query ProjectArtifactTypes($entity: String!, $project: String!, $cursor: String, $perPage: Int) {
  project(name: $project, entityName: $entity) {
    artifactTypes(after: $cursor, first: $perPage) {
      edges { node { name } }
      pageInfo { endCursor hasNextPage }
    }
  }
}";

/// The SDK's `ArtifactTypeArtifactCollections`: a type's collections (artifacts).
pub(crate) const TYPE_COLLECTIONS: &str = "\
query ArtifactTypeArtifactCollections($entity: String!, $project: String!, $type: String!, $cursor: String, $perPage: Int) {
  project(entityName: $entity, name: $project) {
    artifactType(name: $type) {
      artifactCollections(after: $cursor, first: $perPage) {
        pageInfo { endCursor hasNextPage }
        edges { node { name } }
      }
    }
  }
}";

/// The SDK's `ProjectArtifacts`: a collection's versions.
pub(crate) const PROJECT_ARTIFACTS: &str = "\
query ProjectArtifacts($entity: String!, $project: String!, $type: String!, $collection: String!, $cursor: String, $perPage: Int) {
  project(entityName: $entity, name: $project) {
    artifactType(name: $type) {
      artifactCollection(name: $collection) {
        artifacts(after: $cursor, first: $perPage) {
          pageInfo { endCursor hasNextPage }
          edges {
            version
            node { versionIndex createdAt fileCount size aliases { alias artifactCollection { name } } }
          }
        }
      }
    }
  }
}";

#[derive(Clone, Copy, Serialize)]
pub(crate) struct ListVars<'a> {
    pub entity: &'a str,
    pub project: &'a str,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collection: Option<&'a str>,
    pub cursor: Option<&'a str>,
    #[serde(rename = "perPage")]
    pub per_page: u32,
}

/// A page of a connection: its nodes (and edges' other fields), and where the next starts.
#[derive(Deserialize)]
pub(crate) struct Connection<E> {
    #[serde(default = "Vec::new")]
    pub edges: Vec<E>,
    #[serde(rename = "pageInfo")]
    pub page: Option<PageInfo>,
}

#[derive(Deserialize)]
pub(crate) struct NodeEdge<N> {
    pub node: N,
}

#[derive(Deserialize)]
pub(crate) struct TypesData {
    pub project: Option<TypesProject>,
}

#[derive(Deserialize)]
pub(crate) struct TypesProject {
    #[serde(rename = "artifactTypes")]
    pub types: Option<Connection<NodeEdge<Named>>>,
}

#[derive(Deserialize)]
pub(crate) struct CollectionsData {
    pub project: Option<CollectionsProject>,
}

#[derive(Deserialize)]
pub(crate) struct CollectionsProject {
    #[serde(rename = "artifactType")]
    pub kind: Option<CollectionsType>,
}

#[derive(Deserialize)]
pub(crate) struct CollectionsType {
    #[serde(rename = "artifactCollections")]
    pub collections: Option<Connection<NodeEdge<Named>>>,
}

#[derive(Deserialize)]
pub(crate) struct ArtifactsData {
    pub project: Option<ArtifactsProject>,
}

#[derive(Deserialize)]
pub(crate) struct ArtifactsProject {
    #[serde(rename = "artifactType")]
    pub kind: Option<ArtifactsType>,
}

#[derive(Deserialize)]
pub(crate) struct ArtifactsType {
    #[serde(rename = "artifactCollection")]
    pub collection: Option<ArtifactsCollection>,
}

#[derive(Deserialize)]
pub(crate) struct ArtifactsCollection {
    pub artifacts: Option<Connection<VersionEdge>>,
}

#[derive(Deserialize)]
pub(crate) struct VersionEdge {
    pub version: Option<String>,
    pub node: ListedArtifactNode,
}

#[derive(Deserialize)]
pub(crate) struct ListedArtifactNode {
    #[serde(rename = "versionIndex")]
    pub version_index: Option<u32>,
    #[serde(rename = "createdAt")]
    pub created_at: Option<String>,
    #[serde(rename = "fileCount")]
    pub file_count: Option<u64>,
    pub size: Option<u64>,
    #[serde(default)]
    pub aliases: Vec<CollectionAlias>,
}

#[derive(Deserialize)]
pub(crate) struct CollectionAlias {
    pub alias: String,
    #[serde(rename = "artifactCollection")]
    pub collection: Option<Named>,
}
