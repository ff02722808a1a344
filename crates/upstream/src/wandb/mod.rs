//! Weights & Biases as an upstream: GraphQL at `{base}/graphql` with HTTP Basic
//! `api:<API key>`, manifests and files behind signed URLs.
//!
//! - Resolve: `ArtifactMembershipByName` with the whole `name:alias` (or `name:vN`); the
//!   server resolves it. A name the key cannot see comes back `null`: not found.
//! - Manifest: `FetchArtifactManifest(id)` gives a signed URL; the manifest names files by
//!   base64 MD5 (`manifest.rs`).
//! - Files: `GetArtifactMembershipFileUrls` pages of signed URLs, asked only when files
//!   are missing, and by name when few are; a URL that has expired (403) is asked for
//!   again, then the authenticated `artifactsV2` (or V1 `artifacts`) path is tried.
//!
//! Publishing to W&B is not supported: its upload protocol is the SDK's business.

mod graphql;
mod listing;
mod manifest;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use hoard_types::api::ListedArtifact;
use hoard_types::{
    ArtifactName, Digest, ForeignDigest, ForeignEntry, ForeignVersion, ProjectName, RelPath,
    Selector,
};
use reqwest::header::{self, HeaderValue};
use reqwest::{Response, StatusCode};

use crate::blob::{ChunkSource, check_range};
use crate::http::Failure;
use crate::upstream::{FileSource, ForeignCatalog, ForeignListed};
use crate::{BlobSource, BlobStream, BoxFuture, ClientOptions, Error, RetryPolicy, Upstream};

/// W&B's public server.
pub const DEFAULT_BASE_URL: &str = "https://api.wandb.ai";
/// Largest GraphQL answer or manifest accepted.
const MAX_JSON: usize = 1 << 30;
/// Names asked for in one file-URL query.
const NAMES_PER_QUERY: usize = 500;

/// Settings of a [`WandbClient`].
#[derive(Clone, Debug)]
pub struct WandbOptions {
    /// `https://api.wandb.ai`, or a self-hosted server.
    pub base_url: String,
    /// Never logged.
    pub api_key: Option<String>,
    /// Where the key came from, for the message when W&B refuses it.
    pub key_source: String,
    /// Timeouts and retries.
    pub client: ClientOptions,
    /// File URLs per page (the SDK's 5,000).
    pub page_size: u32,
}

impl WandbOptions {
    /// The base URL from `base_url` or `WANDB_BASE_URL` (default [`DEFAULT_BASE_URL`]); the
    /// key from `WANDB_API_KEY`, else from `~/.netrc` (`$NETRC`) for the base URL's host,
    /// where `wandb login` writes it.
    pub fn from_env(base_url: Option<&str>, client: ClientOptions) -> Self {
        let base_url = base_url
            .map(str::to_owned)
            .or_else(|| {
                std::env::var("WANDB_BASE_URL")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let (api_key, key_source) = match std::env::var("WANDB_API_KEY") {
            Ok(key) if !key.is_empty() => (Some(key), "`WANDB_API_KEY`".to_owned()),
            _ => match hoard_cloud::netrc::password(&base_url) {
                Some((key, file)) => (Some(key), format!("`{}`", file.display())),
                None => (
                    None,
                    "nowhere: no `WANDB_API_KEY` and no `~/.netrc` entry".to_owned(),
                ),
            },
        };
        Self {
            base_url,
            api_key,
            key_source,
            client,
            page_size: 5000,
        }
    }
}

/// A client of one W&B server; cheap to clone.
#[derive(Clone)]
pub struct WandbClient {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    http: reqwest::Client,
    auth: Option<HeaderValue>,
    key_source: String,
    retry: RetryPolicy,
    page_size: u32,
}

impl std::fmt::Debug for WandbClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WandbClient")
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

fn basic_auth(key: &str) -> Option<HeaderValue> {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("api:{key}"));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

impl WandbClient {
    pub fn new(options: WandbOptions) -> Result<Self, Error> {
        let url = &options.base_url;
        let bad = |reason: &str| Error::Url {
            url: url.clone(),
            reason: reason.to_owned(),
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() {
            return Err(bad(
                "a W&B base URL is `https://host[:port]` (set `WANDB_BASE_URL`)",
            ));
        }
        let auth =
            match options.api_key.as_deref() {
                Some(key) => Some(basic_auth(key).ok_or_else(|| {
                    bad("the API key contains characters not allowed in a header")
                })?),
                None => None,
            };
        let http = reqwest::Client::builder()
            .connect_timeout(options.client.connect_timeout)
            .read_timeout(options.client.stall_timeout)
            .user_agent(concat!("hoard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                base: url.trim_end_matches('/').to_owned(),
                http,
                auth,
                key_source: options.key_source,
                retry: options.client.retry,
                page_size: options.page_size.max(1),
            }),
        })
    }

    /// The same server (and connection pool) with a caller's API key.
    pub fn with_key(&self, key: &str) -> Result<Self, Error> {
        let auth = basic_auth(key).ok_or_else(|| Error::Url {
            url: self.inner.base.clone(),
            reason: "the API key contains characters not allowed in a header".to_owned(),
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                base: self.inner.base.clone(),
                http: self.inner.http.clone(),
                auth: Some(auth),
                key_source: "the caller's `HOARD_TOKEN`".to_owned(),
                retry: self.inner.retry.clone(),
                page_size: self.inner.page_size,
            }),
        })
    }

    fn protocol(&self, reason: String) -> Error {
        Error::Protocol {
            upstream: self.inner.base.clone(),
            reason,
        }
    }

    /// Maps a final non-success answer of W&B (GraphQL or the authenticated file paths).
    async fn status_error(&self, what: &str, response: Response, attempts: u32) -> Error {
        let status = response.status();
        let body = crate::http::read_bounded(response, 64 * 1024, &self.inner.base)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        let detail = match serde_json::from_slice::<graphql::Response<serde_json::Value>>(&body) {
            Ok(answer) if !answer.errors.is_empty() => messages(&answer.errors),
            _ if text.trim().is_empty() => status.to_string(),
            _ => hoard_types::truncate(text.trim()),
        };
        let upstream = self.inner.base.clone();
        match status {
            StatusCode::UNAUTHORIZED => Error::Unauthorized {
                upstream,
                detail: format!(
                    "{detail} (the API key came from {}); set `WANDB_API_KEY` to a valid key, or run `wandb login`",
                    self.inner.key_source
                ),
            },
            StatusCode::FORBIDDEN => Error::Forbidden {
                detail: format!("W&B refused {what}: {detail}"),
            },
            StatusCode::NOT_FOUND => Error::NotFound {
                what: format!("{what} (at `{upstream}`)"),
            },
            s => Error::from_status(upstream, s, attempts, detail),
        }
    }

    /// One GraphQL operation: retried like every request, errors in a 200 answer made
    /// into an [`Error`].
    async fn graphql<V: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        operation: &str,
        query: &str,
        variables: V,
        what: &str,
    ) -> Result<T, Error> {
        let url = format!("{}/graphql", self.inner.base);
        let body = serde_json::to_vec(&graphql::Request {
            operation,
            query,
            variables,
        })
        .map_err(|e| self.protocol(e.to_string()))?;
        let make = || {
            let request = self
                .inner
                .http
                .post(&url)
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            Ok(match &self.inner.auth {
                Some(auth) => request.header(header::AUTHORIZATION, auth.clone()),
                None => request,
            })
        };
        let sent =
            crate::http::send_read(&self.inner.retry, &self.inner.base, what, MAX_JSON, make).await;
        let body = match sent {
            Ok((_, body)) => body,
            Err(Failure::Status(response, attempts)) => {
                return Err(self.status_error(what, response, attempts).await);
            }
            Err(Failure::Error(e)) => return Err(e),
        };
        let answer: graphql::Response<T> = serde_json::from_slice(&body)
            .map_err(|e| self.protocol(format!("{operation}: {e}")))?;
        if !answer.errors.is_empty() {
            let detail = messages(&answer.errors);
            let lower = detail.to_lowercase();
            return Err(
                if lower.contains("permission") || lower.contains("not authorized") {
                    Error::Forbidden {
                        detail: format!("W&B refused {what}: {detail}"),
                    }
                } else {
                    Error::Rejected {
                        upstream: self.inner.base.clone(),
                        status: 200,
                        detail: format!("{operation}: {detail}"),
                    }
                },
            );
        }
        answer
            .data
            .ok_or_else(|| self.protocol(format!("{operation}: an answer without `data`")))
    }

    /// A signed URL's body (no credentials are sent to it), retried like every request.
    async fn get_signed(&self, url: &str, what: &str) -> Result<Response, Error> {
        check_url(url).map_err(|reason| self.protocol(format!("{what}: {reason}")))?;
        match crate::http::send(&self.inner.retry, &self.inner.base, what, || {
            Ok(self.inner.http.get(url))
        })
        .await
        {
            Ok(response) => Ok(response),
            Err(Failure::Status(response, attempts)) => {
                Err(self.status_error(what, response, attempts).await)
            }
            Err(Failure::Error(e)) => Err(e),
        }
    }

    /// The SDK's `ArtifactMembershipByName` for `name:tag`: `None` when there is none the
    /// key may see.
    async fn membership(
        &self,
        name: &ArtifactName,
        tag: &str,
        what: &str,
    ) -> Result<Option<graphql::Membership>, Error> {
        let full = format!("{}:{tag}", name.name);
        let data: graphql::MembershipData = self
            .graphql(
                "ArtifactMembershipByName",
                graphql::MEMBERSHIP_BY_NAME,
                graphql::MembershipVars {
                    entity: &name.entity,
                    project: &name.project,
                    name: &full,
                },
                what,
            )
            .await?;
        Ok(data.project.and_then(|p| p.membership))
    }

    /// The type of an artifact's collection, as its `latest` version says.
    async fn latest_kind(&self, name: &ArtifactName) -> Result<String, Error> {
        self.membership(name, "latest", &format!("`{name}:latest`"))
            .await?
            .and_then(|m| m.artifact)
            .and_then(|a| a.kind)
            .map(|kind| kind.name)
            .ok_or_else(|| Error::NotFound {
                what: format!("artifact `{name}` on W&B (or the API key may not see it)"),
            })
    }

    async fn fetch_version(
        &self,
        name: &ArtifactName,
        selector: &Selector,
    ) -> Result<ForeignVersion, Error> {
        let tag = match selector {
            Selector::Alias(alias) => alias.clone(),
            Selector::Version(n) => format!("v{n}"),
            Selector::Digest(d) => {
                return Err(Error::NotFound {
                    what: format!(
                        "`{name}@{d}`: W&B names versions by alias or `vN`; `@digest` names a version this cache already holds"
                    ),
                });
            }
        };
        let what = format!("`{name}:{tag}`");
        let not_found = || Error::NotFound {
            what: format!("{what} on W&B (or the API key may not see it)"),
        };
        let membership = self
            .membership(name, &tag, &what)
            .await?
            .ok_or_else(not_found)?;
        let artifact = membership.artifact.ok_or_else(not_found)?;
        if let Some(state) = artifact.state.as_deref()
            && state != "COMMITTED"
        {
            return Err(Error::Rejected {
                upstream: self.inner.base.clone(),
                status: 200,
                detail: format!("{what} is {state}, not committed: it cannot be downloaded yet"),
            });
        }
        let index = membership
            .version_index
            .ok_or_else(|| self.protocol(format!("{what}: no `versionIndex`")))?;
        let collection = membership.collection.map(|c| {
            let project = c.project.map(|p| (p.entity.map(|e| e.name), p.name));
            (c.name, project)
        });
        if let Some((collection, project)) = &collection {
            let same_project = project.as_ref().is_none_or(|(entity, project)| {
                *project == name.project && entity.as_ref().is_none_or(|e| *e == name.entity)
            });
            if *collection != name.name || !same_project {
                return Err(self.protocol(format!(
                    "asked for {what}, got a version of `{collection}` in another project"
                )));
            }
        }
        if let Selector::Version(n) = selector
            && *n != index
        {
            return Err(self.protocol(format!("asked for {what}, got `v{index}`")));
        }
        let parsed = self.fetch_manifest(&artifact.id, &what).await?;
        let metadata = artifact
            .metadata
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok())
            .unwrap_or_default();
        let version = ForeignVersion {
            entity: name.entity.clone(),
            project: name.project.clone(),
            name: name.name.clone(),
            version: format!("v{index}"),
            id: artifact.id,
            aliases: membership
                .aliases
                .into_iter()
                .map(|a| a.alias)
                .filter(|a| hoard_types::check_alias(a).is_ok())
                .collect(),
            kind: artifact.kind.map(|t| t.name),
            metadata,
            created_at: artifact.created_at,
            storage: Some(parsed.storage),
            entries: parsed.entries,
        };
        let _ = artifact.description;
        let _ = artifact.file_count;
        version
            .validate()
            .map_err(|e| self.protocol(format!("{what}: {e}")))?;
        Ok(version)
    }

    async fn fetch_manifest(&self, id: &str, what: &str) -> Result<manifest::Parsed, Error> {
        let data: graphql::ManifestData = self
            .graphql(
                "FetchArtifactManifest",
                graphql::FETCH_MANIFEST,
                graphql::ManifestVars { id },
                what,
            )
            .await?;
        let url = data
            .artifact
            .and_then(|a| a.current)
            .and_then(|m| m.file)
            .and_then(|f| f.url)
            .ok_or_else(|| self.protocol(format!("{what}: no manifest URL")))?;
        let response = self
            .get_signed(&url, &format!("the manifest of {what}"))
            .await?;
        let body = crate::http::read_bounded(response, MAX_JSON, &self.inner.base).await?;
        manifest::parse(&body).map_err(|reason| self.protocol(format!("{what}: {reason}")))
    }

    /// Signed URLs of the files `paths` of `version` (by name when they are few, else
    /// every page). A file the server gives no URL for is left out.
    async fn file_urls(
        &self,
        version: &ForeignVersion,
        paths: &[&str],
    ) -> Result<HashMap<String, String>, Error> {
        let what = format!(
            "the file URLs of `{}/{}/{}:{}`",
            version.entity, version.project, version.name, version.version
        );
        let mut urls = HashMap::new();
        if paths.is_empty() {
            return Ok(urls);
        }
        let wanted: std::collections::HashSet<&str> = paths.iter().copied().collect();
        // By name unless nearly all are wanted: a page holds 5,000 URLs, a query by name
        // 500 names, so paging is cheaper only for (nearly) whole versions.
        let all = paths.len() * 10 >= version.entries.len() * 9;
        let batches: Vec<Option<&[&str]>> = if all {
            vec![None]
        } else {
            paths.chunks(NAMES_PER_QUERY).map(Some).collect()
        };
        for names in batches {
            // A server that keeps saying "next page" cannot keep us here: every page must
            // bring a file, so there are no more pages than files, plus one. (A server may
            // send fewer per page than asked.)
            let limit = version.entries.len() + 1;
            let mut cursor = None;
            for _ in 0..limit {
                let data: graphql::FileUrlData = self
                    .graphql(
                        "GetArtifactMembershipFileUrls",
                        graphql::FILE_URLS,
                        graphql::FileUrlVars {
                            entity: &version.entity,
                            project: &version.project,
                            collection: &version.name,
                            alias: &version.version,
                            names,
                            cursor: cursor.take(),
                            per_page: self.inner.page_size,
                        },
                        &what,
                    )
                    .await?;
                let files = data
                    .project
                    .and_then(|p| p.collection)
                    .and_then(|c| c.membership)
                    .and_then(|m| m.files)
                    .ok_or_else(|| Error::NotFound {
                        what: format!("{what} (the version is gone from W&B?)"),
                    })?;
                if files.edges.is_empty() {
                    break;
                }
                for node in files.edges.into_iter().filter_map(|e| e.node) {
                    if let Some(url) = node.url
                        && wanted.contains(node.name.as_str())
                    {
                        urls.insert(node.name, url);
                    }
                }
                if !files.page.has_next_page || urls.len() == wanted.len() {
                    break;
                }
                cursor = Some(files.page.end_cursor.ok_or_else(|| {
                    self.protocol(format!("{what}: a next page without a cursor"))
                })?);
            }
        }
        Ok(urls)
    }

    /// The authenticated path of a file without a signed URL (the SDK's `_file_url`).
    fn fallback_url(
        &self,
        version: &ForeignVersion,
        path: &RelPath,
        entry: &ForeignEntry,
    ) -> Option<String> {
        let ForeignDigest::Md5(md5) = &entry.digest else {
            return None;
        };
        let hex = hoard_types::hex_encode(md5);
        let base = &self.inner.base;
        let storage = version.storage.as_deref().unwrap_or("V1");
        if storage == "V1" {
            return Some(format!("{base}/artifacts/{}/{hex}", enc(&version.entity)));
        }
        let region = storage.strip_prefix("V2/").unwrap_or("default");
        let file = path.as_str().rsplit('/').next().unwrap_or(path.as_str());
        Some(format!(
            "{base}/artifactsV2/{}/{}/{}/{}/{}/{}/{hex}/{}",
            enc(region),
            enc(&version.entity),
            enc(&version.project),
            enc(&version.name),
            enc(&version.id),
            enc(entry.origin.as_deref().unwrap_or_default()),
            enc(file)
        ))
    }
}

/// Percent-encodes one path segment.
fn enc(segment: &str) -> String {
    hoard_cloud::uri::encode_segment(segment)
}

fn messages(errors: &[graphql::GraphqlError]) -> String {
    let joined: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
    hoard_types::truncate(&joined.join("; "))
}

/// A URL from an answer must be `http(s)://`.
fn check_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(()),
        _ => Err(format!(
            "`{}` is not an http(s) URL",
            hoard_types::truncate(url)
        )),
    }
}

impl ForeignCatalog for WandbClient {
    fn describe(&self) -> String {
        format!("wandb {}", self.inner.base)
    }

    fn with_token(&self, token: &str) -> Option<Result<Upstream, Error>> {
        Some(
            self.with_key(token)
                .map(|client| Upstream::Foreign(Arc::new(client))),
        )
    }

    fn artifacts<'a>(
        &'a self,
        project: &'a ProjectName,
    ) -> BoxFuture<'a, Result<Vec<ListedArtifact>, Error>> {
        Box::pin(self.list_artifacts(project))
    }

    fn versions<'a>(
        &'a self,
        name: &'a ArtifactName,
    ) -> BoxFuture<'a, Result<Vec<ForeignListed>, Error>> {
        Box::pin(self.list_versions(name))
    }

    fn resolve_foreign<'a>(
        &'a self,
        name: &'a ArtifactName,
        selector: &'a Selector,
    ) -> BoxFuture<'a, Result<ForeignVersion, Error>> {
        Box::pin(self.fetch_version(name, selector))
    }

    fn sources<'a>(
        &'a self,
        version: &'a ForeignVersion,
        paths: &'a [RelPath],
    ) -> BoxFuture<'a, Result<Vec<Arc<dyn FileSource>>, Error>> {
        Box::pin(async move {
            let stored: Vec<&str> = paths
                .iter()
                .filter(|p| {
                    version
                        .entries
                        .get(*p)
                        .is_some_and(|e| e.reference.is_none())
                })
                .map(RelPath::as_str)
                .collect();
            let mut urls = self.file_urls(version, &stored).await?;
            let version = Arc::new(version.clone());
            paths
                .iter()
                .map(|path| {
                    let entry = version.entries.get(path).ok_or_else(|| Error::NotFound {
                        what: format!("`{path}` in `{}:{}`", version.name, version.version),
                    })?;
                    if let Some(uri) = &entry.reference {
                        return crate::reference::foreign_reference(uri, path, entry);
                    }
                    Ok(Arc::new(WandbFile {
                        client: self.clone(),
                        fallback: self.fallback_url(&version, path, entry),
                        url: Mutex::new(urls.remove(path.as_str())),
                        version: version.clone(),
                        path: path.clone(),
                        entry: entry.clone(),
                    }) as Arc<dyn FileSource>)
                })
                .collect()
        })
    }
}

/// One stored file of a W&B version.
struct WandbFile {
    client: WandbClient,
    version: Arc<ForeignVersion>,
    path: RelPath,
    entry: ForeignEntry,
    /// The signed URL, renewed when it expires; `None`: use the fallback.
    url: Mutex<Option<String>>,
    fallback: Option<String>,
}

impl WandbFile {
    fn what(&self) -> String {
        format!(
            "`{}` of `{}/{}/{}:{}`",
            self.path,
            self.version.entity,
            self.version.project,
            self.version.name,
            self.version.version
        )
    }

    fn signed(&self) -> Option<String> {
        self.url
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Opens `range` of the file: at the signed URL; if it has expired (400/401/403), at a
    /// freshly asked one; then at the authenticated fallback path.
    async fn open(&self, range: Range<u64>) -> Result<Response, Error> {
        let whole = range.start == 0 && range.end == self.entry.size;
        let what = self.what();
        let mut refreshed = false;
        loop {
            let (url, signed) = match self.signed() {
                Some(url) => (url, true),
                None => match &self.fallback {
                    Some(url) => (url.clone(), false),
                    None => {
                        return Err(Error::NotFound {
                            what: format!("a download URL for {what}"),
                        });
                    }
                },
            };
            check_url(&url).map_err(|reason| self.client.protocol(format!("{what}: {reason}")))?;
            let inner = &self.client.inner;
            let make = || {
                let mut request = inner.http.get(&url);
                if !whole {
                    request = request.header(
                        header::RANGE,
                        format!("bytes={}-{}", range.start, range.end - 1),
                    );
                }
                if !signed && let Some(auth) = &inner.auth {
                    request = request.header(header::AUTHORIZATION, auth.clone());
                }
                Ok(request)
            };
            match crate::http::send(&inner.retry, &inner.base, &what, make).await {
                Ok(response) => {
                    let expected = if whole {
                        StatusCode::OK
                    } else {
                        StatusCode::PARTIAL_CONTENT
                    };
                    if response.status() != expected {
                        return Err(self.client.protocol(format!(
                            "{what}: answered {} to a request for bytes {}..{}",
                            response.status(),
                            range.start,
                            range.end
                        )));
                    }
                    return Ok(response);
                }
                Err(Failure::Status(response, _))
                    if signed && matches!(response.status().as_u16(), 400 | 401 | 403) =>
                {
                    tracing::debug!(path = %self.path, status = %response.status(), "signed URL refused (expired?)");
                    let renewed = if refreshed {
                        None
                    } else {
                        refreshed = true;
                        self.client
                            .file_urls(&self.version, &[self.path.as_str()])
                            .await?
                            .remove(self.path.as_str())
                    };
                    *self.url.lock().unwrap_or_else(PoisonError::into_inner) = renewed;
                }
                Err(Failure::Status(response, attempts)) => {
                    return Err(self.client.status_error(&what, response, attempts).await);
                }
                Err(Failure::Error(e)) => return Err(e),
            }
        }
    }

    fn body(self: &Arc<Self>, end: u64) -> Box<dyn ChunkSource> {
        let inner = &self.client.inner;
        Box::new(crate::http::Resuming::new(
            self.clone(),
            end,
            inner.retry.clone(),
            inner.base.clone(),
            None,
        ))
    }
}

impl BlobSource for WandbFile {
    fn describe(&self) -> String {
        self.what()
    }

    fn fetch_blob<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
        range: Option<Range<u64>>,
    ) -> BoxFuture<'a, Result<BlobStream, Error>> {
        Box::pin(async move {
            let range = check_range(digest, size, range)?;
            let this = Arc::new(self.clone_parts());
            Ok(BlobStream::new(
                *digest,
                size,
                range.clone(),
                this.body(range.end),
            ))
        })
    }
}

impl WandbFile {
    /// A copy sharing the client and the current URL (bodies own their file).
    fn clone_parts(&self) -> Self {
        Self {
            client: self.client.clone(),
            version: self.version.clone(),
            path: self.path.clone(),
            entry: self.entry.clone(),
            url: Mutex::new(self.signed()),
            fallback: self.fallback.clone(),
        }
    }
}

impl FileSource for WandbFile {
    fn fetch_foreign(&self) -> BoxFuture<'_, Result<BlobStream, Error>> {
        Box::pin(async move {
            if !matches!(self.entry.digest, ForeignDigest::Md5(_)) {
                return Err(self
                    .client
                    .protocol(format!("{}: a stored file without an MD5", self.what())));
            }
            let this = Arc::new(self.clone_parts());
            Ok(BlobStream::foreign(
                self.entry.digest.clone(),
                self.entry.size,
                this.what(),
                this.body(self.entry.size),
            ))
        })
    }

    fn fetch_part(&self, range: Range<u64>) -> BoxFuture<'_, Result<BlobStream, Error>> {
        Box::pin(async move {
            let range = crate::blob::check_part(&range, self.entry.size, &self.what())?;
            let this = Arc::new(self.clone_parts());
            Ok(BlobStream::part(
                range.clone(),
                this.what(),
                this.body(range.end),
            ))
        })
    }

    fn whole(&self) -> Option<ForeignDigest> {
        matches!(self.entry.digest, ForeignDigest::Md5(_)).then(|| self.entry.digest.clone())
    }
}

impl crate::http::OpenRange for Arc<WandbFile> {
    fn open_range(&self, range: Range<u64>) -> BoxFuture<'_, Result<Response, Error>> {
        Box::pin(self.open(range))
    }
}
