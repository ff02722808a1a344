//! The Hugging Face Hub as an upstream (`hf`, or `hf+https://host` for a mirror or a
//! self-hosted Hub; `HF_ENDPOINT` otherwise).
//!
//! References: `models/ORG/NAME:REVISION` and `datasets/ORG/NAME:REVISION`; `models/` is
//! the default entity, so `ORG/NAME:main` is a model. A revision is a branch, a tag or a
//! pull request's `refs/pr/N` (followed within `alias_ttl`, like an alias; `latest` means
//! `main`), or a 40-hex commit, which names one version for good and is answered from the
//! index once resolved.
//!
//! - Resolve: `GET /api/{models,datasets}/ORG/NAME/revision/REV` gives the commit; then
//!   `GET …/tree/COMMIT?recursive=true`, paged by `Link: <…>; rel="next"`, lists the files
//!   with their size, git blob id and, for LFS files, SHA-256. These become the foreign
//!   digests of a [`ForeignVersion`] labelled with the commit (`gitsha1:` and `sha256:`),
//!   bound to blake3 like W&B's MD5s.
//! - Files: `GET /[datasets/]ORG/NAME/resolve/COMMIT/PATH`, following redirects (to the
//!   CDN for LFS files). The token goes only to the Hub's own origin, never to the host a
//!   redirect points at. A CDN URL refused (expired) is asked of the Hub again, once per
//!   request. Bytes are checked against the Hub's digest as they are hashed.
//! - Token: `HF_TOKEN`, else `HUGGING_FACE_HUB_TOKEN`, else the file `HF_TOKEN_PATH`
//!   (default `$HF_HOME/token`, `HF_HOME` defaulting to `~/.cache/huggingface`), where
//!   `hf auth login` writes it.
//!
//! A repo without an owner (`gpt2`, `datasets/squad`) is `models/_/gpt2`: the Hub moved
//! those to organizations and answers the old names with a redirect, which API calls and
//! downloads follow on the Hub's own origin.
//!
//! Not here: Xet storage (plain `resolve` serves Xet-backed files too; hoard never speaks
//! the Xet protocol), spaces, and publishing (the Hub's own tools do that).

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use hoard_types::api::ListedArtifact;
use hoard_types::foreign::{OWNERLESS, hub_repo_id, is_commit};
use hoard_types::{
    ArtifactName, ArtifactRef, Digest, ForeignDigest, ForeignEntry, ForeignVersion, ProjectName,
    RelPath, Selector,
};
use reqwest::header::{self, HeaderValue};
use reqwest::{Response, StatusCode, Url};
use serde::Deserialize;

use crate::blob::{ChunkSource, check_range};
use crate::http::Failure;
use crate::upstream::{FileSource, ForeignCatalog, ForeignListed};
use crate::{BlobSource, BlobStream, BoxFuture, ClientOptions, Error, RetryPolicy, Upstream};

/// The Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Largest JSON answer accepted (a tree page).
const MAX_JSON: usize = 256 << 20;
/// Redirects followed for one file.
const MAX_REDIRECTS: usize = 5;
/// Pages of one tree listing at most (1,000 files each on the Hub).
const MAX_PAGES: usize = 10_000;

/// Settings of an [`HfClient`].
#[derive(Clone, Debug)]
pub struct HfOptions {
    /// `https://huggingface.co`, a mirror, or a self-hosted Hub.
    pub endpoint: String,
    /// Never logged.
    pub token: Option<String>,
    /// Where the token came from, for the message when the Hub refuses it.
    pub token_source: String,
    pub client: ClientOptions,
}

impl HfOptions {
    /// The endpoint from `endpoint` or `HF_ENDPOINT` (default [`DEFAULT_ENDPOINT`]), the
    /// token as `huggingface_hub` finds it (see the module docs).
    pub fn from_env(endpoint: Option<&str>, client: ClientOptions) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let endpoint = endpoint
            .map(str::to_owned)
            .or_else(|| var("HF_ENDPOINT"))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let token_file = var("HF_TOKEN_PATH").map(PathBuf::from).or_else(|| {
            var("HF_HOME")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".cache/huggingface")))
                .map(|home| home.join("token"))
        });
        let (token, token_source) = if let Some(token) = var("HF_TOKEN") {
            (Some(token), "`HF_TOKEN`".to_owned())
        } else if let Some(token) = var("HUGGING_FACE_HUB_TOKEN") {
            (Some(token), "`HUGGING_FACE_HUB_TOKEN`".to_owned())
        } else {
            match token_file
                .as_ref()
                .and_then(|f| std::fs::read_to_string(f).ok())
            {
                Some(text) if !text.trim().is_empty() => (
                    Some(text.trim().to_owned()),
                    format!("`{}`", token_file.as_ref().expect("read above").display()),
                ),
                _ => (None, "nowhere: no `HF_TOKEN` and no token file".to_owned()),
            }
        };
        Self {
            endpoint,
            token,
            token_source,
            client,
        }
    }
}

/// A client of one Hub; cheap to clone.
#[derive(Clone)]
pub struct HfClient {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Url,
    /// `endpoint` as text, without a trailing `/`: for URLs and messages.
    base: String,
    http: reqwest::Client,
    auth: Option<HeaderValue>,
    token_source: String,
    retry: RetryPolicy,
}

impl std::fmt::Debug for HfClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfClient")
            .field("endpoint", &self.inner.base)
            .finish_non_exhaustive()
    }
}

fn bearer(token: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Which kind of repo an entity names.
fn repo_kind(name: &ArtifactName) -> Result<(&'static str, &'static str), Error> {
    match name.entity.as_str() {
        "models" => Ok(("models", "")),
        "datasets" => Ok(("datasets", "datasets/")),
        other => Err(Error::NotFound {
            what: format!(
                "`{name}`: the Hub's repos are `models/ORG/NAME` and `datasets/ORG/NAME` (or `ORG/NAME` for a model), not `{other}/…`"
            ),
        }),
    }
}

/// The revision a selector asks the Hub for.
fn revision(name: &ArtifactName, selector: &Selector) -> Result<String, Error> {
    match selector {
        Selector::Alias(alias) if alias == "latest" => Ok("main".to_owned()),
        Selector::Alias(alias) => Ok(alias.clone()),
        Selector::Version(n) => Err(Error::NotFound {
            what: format!(
                "`{name}:v{n}`: Hub revisions have no numbers; ask for a branch, a tag or a commit (`{name}:main`)"
            ),
        }),
        Selector::Digest(digest) => Err(Error::NotFound {
            what: format!(
                "`{name}@{digest}`: a Hub version is known by hoard's digest only once resolved here; ask for its commit (`{name}:<40-hex commit>`)"
            ),
        }),
    }
}

/// A repo's part of a URL path: `ORG/NAME`, or `NAME` for one without an owner, each
/// segment percent-encoded.
fn repo_segments(project: &str, name: &str) -> String {
    if project == OWNERLESS {
        segment(name)
    } else {
        format!("{}/{}", segment(project), segment(name))
    }
}

/// One segment of a URL path, percent-encoded.
fn segment(text: &str) -> String {
    hoard_cloud::uri::encode_segment(text)
}

/// `revision/REV` and tree answers.
#[derive(Deserialize)]
struct RepoInfo {
    sha: Option<String>,
    #[serde(default)]
    private: Option<bool>,
    /// `false`, or how access is granted (`"auto"`, `"manual"`).
    #[serde(default)]
    gated: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct TreeItem {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    oid: Option<String>,
    #[serde(default)]
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    oid: String,
    #[serde(default)]
    size: Option<u64>,
}

impl HfClient {
    pub fn new(options: HfOptions) -> Result<Self, Error> {
        let bad = |reason: &str| Error::Url {
            url: options.endpoint.clone(),
            reason: reason.to_owned(),
        };
        let endpoint = Url::parse(&options.endpoint).map_err(|e| bad(&e.to_string()))?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.query().is_some() {
            return Err(bad(
                "the Hub's endpoint is `https://host[:port]` (set `HF_ENDPOINT`)",
            ));
        }
        let auth = match options.token.as_deref() {
            Some(token) => Some(
                bearer(token)
                    .ok_or_else(|| bad("the token contains characters not allowed in a header"))?,
            ),
            None => None,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(options.client.connect_timeout)
            .read_timeout(options.client.stall_timeout)
            // Redirects are followed here, so that the token goes to the Hub only.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hoard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                base: options.endpoint.trim_end_matches('/').to_owned(),
                endpoint,
                http,
                auth,
                token_source: options.token_source,
                retry: options.client.retry,
            }),
        })
    }

    /// The same Hub (and connection pool) with a caller's token.
    pub fn with_bearer(&self, token: &str) -> Result<Self, Error> {
        let auth = bearer(token).ok_or_else(|| Error::Url {
            url: self.inner.base.clone(),
            reason: "the token contains characters not allowed in a header".to_owned(),
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                endpoint: self.inner.endpoint.clone(),
                base: self.inner.base.clone(),
                http: self.inner.http.clone(),
                auth: Some(auth),
                token_source: "the caller's `HOARD_TOKEN`".to_owned(),
                retry: self.inner.retry.clone(),
            }),
        })
    }

    fn protocol(&self, reason: String) -> Error {
        Error::Protocol {
            upstream: self.inner.base.clone(),
            reason,
        }
    }

    /// Whether a request to `url` may carry the token: the Hub's own origin only.
    fn is_hub(&self, url: &Url) -> bool {
        url.origin() == self.inner.endpoint.origin()
    }

    /// Maps a final non-success answer of the Hub, with the remedy the user needs.
    async fn status_error(
        &self,
        repo: &str,
        what: &str,
        response: Response,
        attempts: u32,
    ) -> Error {
        let status = response.status();
        let code = response
            .headers()
            .get("x-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = crate::http::read_bounded(response, 64 * 1024, &self.inner.base)
            .await
            .unwrap_or_default();
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| hoard_types::truncate(String::from_utf8_lossy(&body).trim()));
        let page = format!("{}/{repo}", self.inner.base);
        let upstream = self.inner.base.clone();
        match (status, code.as_str()) {
            (_, "GatedRepo") => Error::Forbidden {
                detail: format!(
                    "`{repo}` is gated: accept its terms on {page} with your account, then set `HF_TOKEN` to a token of that account (the token came from {})",
                    self.inner.token_source
                ),
            },
            (_, "RepoNotFound") => Error::NotFound {
                what: format!(
                    "the Hub repo `{repo}` at `{upstream}` (or it is private: set `HF_TOKEN` to a token that may read it; the token came from {})",
                    self.inner.token_source
                ),
            },
            (_, "RevisionNotFound") => Error::NotFound {
                what: format!("{what} (no such revision of `{repo}` at `{upstream}`)"),
            },
            (_, "EntryNotFound") => Error::NotFound {
                what: format!("{what} (no such file in `{repo}` at `{upstream}`)"),
            },
            (StatusCode::UNAUTHORIZED, _) => Error::Unauthorized {
                upstream,
                detail: format!(
                    "{detail} (the token came from {}); set `HF_TOKEN` to a valid token, or run `hf auth login`",
                    self.inner.token_source
                ),
            },
            (StatusCode::FORBIDDEN, _) => Error::Forbidden {
                detail: format!("the Hub refused {what}: {detail}"),
            },
            (StatusCode::NOT_FOUND, _) => Error::NotFound {
                what: format!("{what} (at `{upstream}`)"),
            },
            (s, _) => Error::from_status(upstream, s, attempts, detail),
        }
    }

    /// A JSON answer of the Hub's API at `url`, and the next page's URL if it names one.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        repo: &str,
        what: &str,
        url: &str,
    ) -> Result<(T, Option<String>), Error> {
        let mut url = Url::parse(url).map_err(|e| self.protocol(format!("{what}: {e}")))?;
        let mut hops = 0;
        // A repo renamed or moved to an organization (`gpt2`) is answered with a redirect
        // on the Hub itself; one elsewhere is not followed (nor given the token).
        let response = loop {
            let make = || {
                let request = self.inner.http.get(url.clone());
                Ok(match &self.inner.auth {
                    Some(auth) => request.header(header::AUTHORIZATION, auth.clone()),
                    None => request,
                })
            };
            match crate::http::send(&self.inner.retry, &self.inner.base, what, make).await {
                Ok(response) => break response,
                Err(Failure::Status(response, _)) if response.status().is_redirection() => {
                    hops += 1;
                    let next = response
                        .headers()
                        .get(header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|location| url.join(location).ok())
                        .filter(|next| self.is_hub(next) && hops <= MAX_REDIRECTS)
                        .ok_or_else(|| {
                            self.protocol(format!(
                                "{what}: a redirect away from the Hub, without a `Location`, or more than {MAX_REDIRECTS}"
                            ))
                        })?;
                    url = next;
                }
                Err(Failure::Status(response, attempts)) => {
                    return Err(self.status_error(repo, what, response, attempts).await);
                }
                Err(Failure::Error(e)) => return Err(e),
            }
        };
        let next = next_page(&response);
        let body = crate::http::read_bounded(response, MAX_JSON, &self.inner.base).await?;
        let parsed =
            serde_json::from_slice(&body).map_err(|e| self.protocol(format!("{what}: {e}")))?;
        Ok((parsed, next))
    }

    /// `…/api/{models,datasets}/ORG/NAME`.
    fn api(&self, name: &ArtifactName) -> Result<String, Error> {
        let (kind, _) = repo_kind(name)?;
        Ok(format!(
            "{}/api/{kind}/{}",
            self.inner.base,
            repo_segments(&name.project, &name.name)
        ))
    }

    /// The commit a revision names now.
    async fn commit_of(&self, name: &ArtifactName, selector: &Selector) -> Result<String, Error> {
        Ok(self.revision_info(name, selector).await?.0)
    }

    /// The commit a revision names now, and whether the repo is public (neither private
    /// nor gated, as far as the Hub said).
    async fn revision_info(
        &self,
        name: &ArtifactName,
        selector: &Selector,
    ) -> Result<(String, bool), Error> {
        let rev = revision(name, selector)?;
        let repo = hub_repo_id(&name.project, &name.name);
        let what = format!("revision `{rev}` of `{repo}`");
        let url = format!("{}/revision/{}", self.api(name)?, segment(&rev));
        let (info, _): (RepoInfo, _) = self.get_json(&repo, &what, &url).await?;
        let commit = info
            .sha
            .filter(|sha| is_commit(sha))
            .ok_or_else(|| self.protocol(format!("{what}: no 40-hex `sha` in the answer")))?;
        if is_commit(&rev) && rev != commit {
            return Err(self.protocol(format!("asked for commit `{rev}`, got `{commit}`")));
        }
        let gated = info.gated.is_some_and(|g| {
            !matches!(g, serde_json::Value::Bool(false) | serde_json::Value::Null)
        });
        let public = info.private == Some(false) && !gated;
        Ok((commit, public))
    }

    /// An owner's repos of one kind: `GET /api/{models,datasets}?author=ORG`, paged by
    /// `Link`.
    async fn repos_of(&self, project: &ProjectName) -> Result<Vec<ListedArtifact>, Error> {
        #[derive(Deserialize)]
        struct Listed {
            id: String,
        }
        let probe = ArtifactName::new(&project.entity, &project.project, "x")?;
        let (kind, _) = repo_kind(&probe)?;
        let what = format!("the {kind} of `{}`", project.project);
        let mut page = Some(format!(
            "{}/api/{kind}?author={}&limit=1000",
            self.inner.base,
            hoard_cloud::uri::encode_segment(&project.project)
        ));
        let (mut listed, mut pages) = (Vec::new(), 0);
        while let Some(url) = page.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(self.protocol(format!("{what}: more than {MAX_PAGES} pages")));
            }
            let (items, next): (Vec<Listed>, _) =
                self.get_json(&project.project, &what, &url).await?;
            for item in items {
                // `ORG/NAME`, of this owner only (an answer about others is ignored).
                if let Some(name) = item
                    .id
                    .strip_prefix(&format!("{}/", project.project))
                    .filter(|n| ArtifactName::new(&project.entity, &project.project, n).is_ok())
                {
                    listed.push(ListedArtifact {
                        name: name.to_owned(),
                        versions: None,
                        latest: None,
                        aliases: Vec::new(),
                    });
                }
            }
            page = match next {
                None => None,
                Some(next) => {
                    let next = Url::parse(&next)
                        .or_else(|_| self.inner.endpoint.join(&next))
                        .ok()
                        .filter(|url| self.is_hub(url))
                        .ok_or_else(|| {
                            self.protocol(format!("{what}: a next page `{next}` off the Hub"))
                        })?;
                    Some(next.to_string())
                }
            };
        }
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        if listed.is_empty() {
            return Err(Error::NotFound {
                what: format!("{what} (none, or none your token may see)"),
            });
        }
        Ok(listed)
    }

    /// A repo's branches and tags, by the commit each names: `GET …/refs`.
    async fn refs_of(&self, name: &ArtifactName) -> Result<Vec<ForeignListed>, Error> {
        #[derive(Deserialize)]
        struct Ref {
            name: String,
            #[serde(rename = "targetCommit")]
            target_commit: String,
        }
        #[derive(Deserialize)]
        struct Refs {
            #[serde(default)]
            branches: Vec<Ref>,
            #[serde(default)]
            tags: Vec<Ref>,
        }
        let repo = hub_repo_id(&name.project, &name.name);
        let url = format!("{}/refs", self.api(name)?);
        let what = format!("the branches and tags of `{repo}`");
        let (refs, _): (Refs, _) = self.get_json(&repo, &what, &url).await?;
        let mut by_commit: std::collections::BTreeMap<String, Vec<String>> =
            std::collections::BTreeMap::new();
        for r in refs.branches.into_iter().chain(refs.tags) {
            if !is_commit(&r.target_commit) {
                return Err(self.protocol(format!(
                    "{what}: `{}` names `{}`, which is not a commit",
                    r.name, r.target_commit
                )));
            }
            by_commit.entry(r.target_commit).or_default().push(r.name);
        }
        Ok(by_commit
            .into_iter()
            .map(|(label, mut aliases)| {
                aliases.sort();
                ForeignListed {
                    label,
                    aliases,
                    created_at: None,
                    files: None,
                    size: None,
                }
            })
            .collect())
    }

    async fn fetch_version(
        &self,
        name: &ArtifactName,
        selector: &Selector,
    ) -> Result<ForeignVersion, Error> {
        let (kind, _) = repo_kind(name)?;
        let rev = revision(name, selector)?;
        let repo = hub_repo_id(&name.project, &name.name);
        let api = self.api(name)?;
        let (commit, public) = self.revision_info(name, selector).await?;
        let mut entries = std::collections::BTreeMap::new();
        let mut page = Some(format!("{api}/tree/{commit}?recursive=true&expand=false"));
        let mut pages = 0;
        while let Some(url) = page.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(self.protocol(format!(
                    "the file list of `{repo}` has more than {MAX_PAGES} pages"
                )));
            }
            let listing = format!("the file list of `{repo}` at `{commit}`");
            let (items, next): (Vec<TreeItem>, _) = self.get_json(&repo, &listing, &url).await?;
            for item in items {
                if item.kind == "directory" {
                    continue;
                }
                let path = RelPath::new(&item.path)
                    .map_err(|e| self.protocol(format!("{listing}: {e}")))?;
                let entry = self.entry(&listing, &item)?;
                if entries.insert(path, entry).is_some() {
                    return Err(self.protocol(format!("{listing} names `{}` twice", item.path)));
                }
            }
            if let Some(next) = next {
                let next_url = Url::parse(&next)
                    .or_else(|_| self.inner.endpoint.join(&next))
                    .map_err(|e| self.protocol(format!("{listing}: a next page `{next}`: {e}")))?;
                if !self.is_hub(&next_url) {
                    return Err(
                        self.protocol(format!("{listing}: a next page on another host (`{next}`)"))
                    );
                }
                page = Some(next_url.to_string());
            }
        }
        let version = ForeignVersion {
            entity: name.entity.clone(),
            project: name.project.clone(),
            name: name.name.clone(),
            version: commit.clone(),
            id: commit,
            aliases: if is_commit(&rev) {
                Vec::new()
            } else {
                vec![rev]
            },
            kind: Some(kind.trim_end_matches('s').to_owned()),
            // Only what hoard acts on: whether a caller's token needs confirming.
            metadata: serde_json::json!({ "public": public }),
            created_at: None,
            storage: None,
            entries,
        };
        version
            .validate()
            .map_err(|e| self.protocol(format!("`{repo}`: {e}")))?;
        Ok(version)
    }

    /// A file of the tree listing: its size and the Hub's digest of it.
    fn entry(&self, listing: &str, item: &TreeItem) -> Result<ForeignEntry, Error> {
        let bad = |reason: &str| self.protocol(format!("{listing}: `{}` {reason}", item.path));
        let size = item.size.ok_or_else(|| bad("has no size"))?;
        let mut blob_id = None;
        let digest = match &item.lfs {
            Some(lfs) => {
                if lfs.size.is_some_and(|s| s != size) {
                    return Err(bad("has two sizes (the file's and its LFS object's)"));
                }
                // The pointer's git id, for huggingface_hub's tree cache; kept only when
                // it is one.
                blob_id = item
                    .oid
                    .clone()
                    .filter(|oid| oid.len() == 40 && oid.bytes().all(|b| b.is_ascii_hexdigit()));
                format!("sha256:{}", lfs.oid)
            }
            None => format!(
                "gitsha1:{}",
                item.oid.as_deref().ok_or_else(|| bad("has no oid"))?
            ),
        };
        Ok(ForeignEntry {
            digest: digest
                .parse()
                .map_err(|_| bad("has a digest that is not 64 (LFS) or 40 (git) hex digits"))?,
            size,
            reference: None,
            origin: None,
            blob_id,
        })
    }
}

/// The `rel="next"` target of a `Link` header.
fn next_page(response: &Response) -> Option<String> {
    let link = response.headers().get(header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"))
            .then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
    })
}

impl ForeignCatalog for HfClient {
    fn describe(&self) -> String {
        format!("hf {}", self.inner.base)
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
            let name = version.artifact()?;
            let (_, prefix) = repo_kind(&name)?;
            paths
                .iter()
                .map(|path| {
                    let entry = version.entries.get(path).ok_or_else(|| Error::NotFound {
                        what: format!("`{path}` in `{name}:{}`", version.version),
                    })?;
                    let encoded: Vec<String> = path.as_str().split('/').map(segment).collect();
                    let url = format!(
                        "{}/{prefix}{}/resolve/{}/{}",
                        self.inner.base,
                        repo_segments(&version.project, &version.name),
                        version.version,
                        encoded.join("/")
                    );
                    let url =
                        Url::parse(&url).map_err(|e| self.protocol(format!("`{path}`: {e}")))?;
                    Ok(Arc::new(HfFile {
                        client: self.clone(),
                        repo: hub_repo_id(&version.project, &version.name),
                        what: format!("`{path}` of `{name}:{}`", version.version),
                        url,
                        entry: entry.clone(),
                    }) as Arc<dyn FileSource>)
                })
                .collect()
        })
    }

    fn with_token(&self, token: &str) -> Option<Result<Upstream, Error>> {
        Some(
            self.with_bearer(token)
                .map(|client| Upstream::Foreign(Arc::new(client))),
        )
    }

    fn artifacts<'a>(
        &'a self,
        project: &'a ProjectName,
    ) -> BoxFuture<'a, Result<Vec<ListedArtifact>, Error>> {
        Box::pin(self.repos_of(project))
    }

    fn versions<'a>(
        &'a self,
        name: &'a ArtifactName,
    ) -> BoxFuture<'a, Result<Vec<ForeignListed>, Error>> {
        Box::pin(self.refs_of(name))
    }

    fn qualify(
        &self,
        reference: &ArtifactRef,
        entity: Option<&str>,
        project: Option<&str>,
    ) -> Option<Result<ArtifactName, hoard_types::Error>> {
        // `gpt2`, `datasets/squad`: a repo without an owner, as `huggingface_hub` takes
        // it (the Hub redirects it to the organization that has it now).
        let kind = match (reference.entity.as_deref(), reference.project.as_deref()) {
            (None, None) if project.is_none() => entity.unwrap_or("models"),
            (None, Some(kind @ ("models" | "datasets"))) => kind,
            _ => return None,
        };
        Some(ArtifactName::new(kind, OWNERLESS, &reference.name))
    }

    fn default_entity(&self) -> Option<&str> {
        Some("models")
    }

    /// The commit must still be readable, and one of its files too: a gated repo shows its
    /// metadata to anyone, its files only to accounts that accepted its terms.
    fn confirm<'a>(&'a self, version: &'a ForeignVersion) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let name = version.artifact()?;
            self.commit_of(&name, &Selector::Alias(version.version.clone()))
                .await?;
            // One byte of one file that has any, read (a body opens on its first read).
            let Some((path, _)) = version.entries.iter().find(|(_, e)| e.size > 0) else {
                return Ok(());
            };
            let sources = self.sources(version, std::slice::from_ref(path)).await?;
            let file = sources
                .first()
                .ok_or_else(|| self.protocol(format!("no source for `{path}`")))?;
            file.fetch_part(0..1).await?.read_to_vec().await.map(drop)
        })
    }

    fn public(&self, metadata: &serde_json::Value) -> bool {
        metadata["public"] == serde_json::Value::Bool(true)
    }

    fn fixed<'s>(&self, selector: &'s Selector) -> Option<&'s str> {
        match selector {
            Selector::Alias(alias) if is_commit(alias) => Some(alias),
            _ => None,
        }
    }

    fn label<'a>(
        &'a self,
        name: &'a ArtifactName,
        selector: &'a Selector,
    ) -> BoxFuture<'a, Result<Option<String>, Error>> {
        Box::pin(async move { self.commit_of(name, selector).await.map(Some) })
    }
}

/// One file of a Hub version.
struct HfFile {
    client: HfClient,
    /// `ORG/NAME`, for messages.
    repo: String,
    what: String,
    /// `…/resolve/COMMIT/PATH` on the Hub.
    url: Url,
    entry: ForeignEntry,
}

impl HfFile {
    /// GETs `range` of the file: the Hub's URL, then its redirects (the token to the Hub's
    /// origin only). A refused CDN URL (expired) is asked of the Hub again, once.
    async fn open(&self, range: Range<u64>) -> Result<Response, Error> {
        let inner = &self.client.inner;
        let whole = range.start == 0 && range.end == self.entry.size;
        let mut url = self.url.clone();
        let (mut hops, mut renewed) = (0, false);
        loop {
            let to_hub = self.client.is_hub(&url);
            let make = || {
                let mut request = inner.http.get(url.clone());
                if !whole {
                    request = request.header(
                        header::RANGE,
                        format!("bytes={}-{}", range.start, range.end - 1),
                    );
                }
                if to_hub && let Some(auth) = &inner.auth {
                    request = request.header(header::AUTHORIZATION, auth.clone());
                }
                Ok(request)
            };
            match crate::http::send(&inner.retry, &inner.base, &self.what, make).await {
                Ok(response) => {
                    let expected = if whole {
                        StatusCode::OK
                    } else {
                        StatusCode::PARTIAL_CONTENT
                    };
                    if response.status() != expected {
                        return Err(self.client.protocol(format!(
                            "{}: answered {} to a request for bytes {}..{}",
                            self.what,
                            response.status(),
                            range.start,
                            range.end
                        )));
                    }
                    return Ok(response);
                }
                Err(Failure::Status(response, _)) if response.status().is_redirection() => {
                    hops += 1;
                    let location = response
                        .headers()
                        .get(header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .ok_or_else(|| {
                            self.client
                                .protocol(format!("{}: a redirect without a `Location`", self.what))
                        })?;
                    let next = url.join(location).map_err(|e| {
                        self.client
                            .protocol(format!("{}: a redirect to `{location}`: {e}", self.what))
                    })?;
                    if hops > MAX_REDIRECTS || !matches!(next.scheme(), "http" | "https") {
                        return Err(self.client.protocol(format!(
                            "{}: more than {MAX_REDIRECTS} redirects, or one to `{next}`",
                            self.what
                        )));
                    }
                    url = next;
                }
                Err(Failure::Status(response, _))
                    if !to_hub
                        && !renewed
                        && matches!(response.status().as_u16(), 400 | 401 | 403) =>
                {
                    tracing::debug!(file = self.what, status = %response.status(), "CDN URL refused (expired?): asking the Hub again");
                    (url, hops, renewed) = (self.url.clone(), 0, true);
                }
                Err(Failure::Status(response, attempts)) => {
                    return Err(self
                        .client
                        .status_error(&self.repo, &self.what, response, attempts)
                        .await);
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

    fn clone_parts(&self) -> Arc<Self> {
        Arc::new(Self {
            client: self.client.clone(),
            repo: self.repo.clone(),
            what: self.what.clone(),
            url: self.url.clone(),
            entry: self.entry.clone(),
        })
    }
}

impl crate::http::OpenRange for Arc<HfFile> {
    fn open_range(&self, range: Range<u64>) -> BoxFuture<'_, Result<Response, Error>> {
        Box::pin(self.open(range))
    }
}

impl BlobSource for HfFile {
    fn describe(&self) -> String {
        self.what.clone()
    }

    fn fetch_blob<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
        range: Option<Range<u64>>,
    ) -> BoxFuture<'a, Result<BlobStream, Error>> {
        Box::pin(async move {
            let range = check_range(digest, size, range)?;
            let this = self.clone_parts();
            Ok(BlobStream::new(
                *digest,
                size,
                range.clone(),
                this.body(range.end),
            ))
        })
    }
}

impl FileSource for HfFile {
    fn fetch_foreign(&self) -> BoxFuture<'_, Result<BlobStream, Error>> {
        Box::pin(async move {
            let this = self.clone_parts();
            Ok(BlobStream::foreign(
                self.entry.digest.clone(),
                self.entry.size,
                self.what.clone(),
                this.body(self.entry.size),
            ))
        })
    }

    fn fetch_part(&self, range: Range<u64>) -> BoxFuture<'_, Result<BlobStream, Error>> {
        Box::pin(async move {
            let range = crate::blob::check_part(&range, self.entry.size, &self.what)?;
            let this = self.clone_parts();
            Ok(BlobStream::part(
                range.clone(),
                self.what.clone(),
                this.body(range.end),
            ))
        })
    }

    fn whole(&self) -> Option<ForeignDigest> {
        Some(self.entry.digest.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_and_entities_read_as_on_the_hub() {
        let model = ArtifactName::new("models", "org", "net").unwrap();
        assert_eq!(
            revision(&model, &Selector::Alias("latest".into())).unwrap(),
            "main"
        );
        assert_eq!(
            revision(&model, &Selector::Alias("v1.0".into())).unwrap(),
            "v1.0"
        );
        let e = revision(&model, &Selector::Version(3)).unwrap_err();
        assert!(e.to_string().contains("no numbers"), "{e}");
        let other = ArtifactName::new("spaces", "org", "app").unwrap();
        let e = repo_kind(&other).unwrap_err();
        assert!(e.to_string().contains("datasets/ORG/NAME"), "{e}");
        assert_eq!(
            repo_kind(&ArtifactName::new("datasets", "org", "d").unwrap()).unwrap(),
            ("datasets", "datasets/")
        );
    }
}
