//! [`RegistryClient`]: the hoard registry protocol over HTTP(S) (reqwest, rustls).
//!
//! Every call goes through [`RegistryClient::send`], which retries what is worth
//! retrying (connection errors, 429 after its `Retry-After`, 5xx) with exponential
//! backoff and jitter, and maps the rest to [`Error`] with the server's problem `detail`.
//! A blob download that breaks off mid-body continues with a `Range` request from the
//! last byte received; [`BlobStream`] then checks the count and the digest.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hoard_types::registry::{
    AliasRequest, ArtifactList, BatchRequest, CommitRequest, Committed, MissingRequest,
    MissingResponse, Problem, VersionList,
};
use hoard_types::{ArtifactName, Digest, ProjectName, Selector, Version};
use reqwest::header::{self, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use tokio::io::AsyncReadExt;

use crate::blob::{ChunkSource, check_range};
use crate::error::IoContext;
use crate::upstream::check_resolved;
use crate::{
    BlobBatch, BlobSource, BlobStream, BoxFuture, Catalog, Error, Publisher, RetryPolicy, Upstream,
};

/// How many digests one `blobs/missing` request carries.
const MISSING_BATCH: usize = 10_000;
/// Largest JSON answer accepted (a version with its manifest); the registry accepts
/// commits up to 256 MiB, so this leaves room.
const MAX_JSON: usize = 1 << 30;
/// Largest error body read for its problem `detail`.
const MAX_PROBLEM: usize = 64 * 1024;
/// Read size for uploads.
const UPLOAD_CHUNK: usize = 256 * 1024;
/// Blobs at least this large are uploaded resumably: a broken upload continues from the
/// bytes the registry holds (`GET /v1/blobs/{digest}/upload`, `PUT` with `Upload-Offset`).
const RESUMABLE_UPLOAD: u64 = 16 << 20;
/// How many times a resumable upload continues after breaking off.
const RESUME_ROUNDS: u32 = 5;

/// Settings of a [`RegistryClient`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Sent as `Authorization: Bearer …`; never logged.
    pub token: Option<String>,
    pub connect_timeout: Duration,
    /// A connection that delivers nothing for this long counts as broken.
    pub stall_timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            token: None,
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }
}

/// A client of one hoard registry; cheap to clone (one connection pool).
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    http: reqwest::Client,
    token: Option<HeaderValue>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// A client of the registry at `url` (`http(s)://host[:port][/prefix]`).
    pub fn new(url: &str, options: ClientOptions) -> Result<Self, Error> {
        let bad = |reason: &str| Error::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad("expected `http://` or `https://`"));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() || !parsed.username().is_empty()
        {
            return Err(bad(
                "a registry URL has no query, fragment or user name; pass the token with `HOARD_TOKEN`",
            ));
        }
        let token = options
            .token
            .as_deref()
            .map(|t| {
                let mut value = HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|_| bad("the token contains characters not allowed in a header"))?;
                value.set_sensitive(true);
                Ok::<_, Error>(value)
            })
            .transpose()?;
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.stall_timeout)
            .user_agent(concat!("hoard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                base: url.trim_end_matches('/').to_owned(),
                http,
                token,
                retry: options.retry,
            }),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.base)
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.inner.http.request(method, self.url(path));
        match &self.inner.token {
            Some(token) => request.header(header::AUTHORIZATION, token.clone()),
            None => request,
        }
    }

    /// Sends a request built by `make` (once per attempt), retrying connection errors,
    /// 429 and 5xx; any other non-success status becomes an [`Error`].
    async fn send(
        &self,
        what: &str,
        make: impl Fn() -> Result<RequestBuilder, Error>,
    ) -> Result<Response, Error> {
        match crate::http::send(&self.inner.retry, &self.inner.base, what, make).await {
            Ok(response) => Ok(response),
            Err(crate::http::Failure::Status(response, attempts)) => {
                Err(self.status_error(what, response, attempts).await)
            }
            Err(crate::http::Failure::Error(e)) => Err(e),
        }
    }

    /// [`Self::send`], reading the whole (JSON) answer: one that breaks off is asked for
    /// again. Returns the status and the body.
    async fn send_read(
        &self,
        what: &str,
        make: impl Fn() -> Result<RequestBuilder, Error>,
    ) -> Result<(StatusCode, Bytes), Error> {
        match crate::http::send_read(&self.inner.retry, &self.inner.base, what, MAX_JSON, make)
            .await
        {
            Ok(answer) => Ok(answer),
            Err(crate::http::Failure::Status(response, attempts)) => {
                Err(self.status_error(what, response, attempts).await)
            }
            Err(crate::http::Failure::Error(e)) => Err(e),
        }
    }

    /// Turns a failed response into an error carrying the server's `detail`.
    async fn status_error(&self, what: &str, response: Response, attempts: u32) -> Error {
        let status = response.status();
        let problem = read_problem(response).await;
        let detail = problem
            .as_ref()
            .map_or_else(|| status.to_string(), |p| p.detail.clone());
        let upstream = self.inner.base.clone();
        match status {
            StatusCode::NOT_FOUND => Error::NotFound {
                what: what.to_owned(),
            },
            StatusCode::FORBIDDEN => Error::Forbidden { detail },
            StatusCode::UNAUTHORIZED => Error::Unauthorized {
                upstream,
                detail: format!("{detail}; set `HOARD_TOKEN` to a valid token"),
            },
            StatusCode::CONFLICT if problem.as_ref().is_some_and(|p| !p.missing.is_empty()) => {
                Error::MissingBlobs {
                    missing: problem.map(|p| p.missing).unwrap_or_default(),
                }
            }
            s => Error::from_status(upstream, s, attempts, detail),
        }
    }

    /// A JSON answer of [`Self::send_read`].
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        make: impl Fn() -> Result<RequestBuilder, Error>,
    ) -> Result<T, Error> {
        let (_, body) = self.send_read(what, make).await?;
        serde_json::from_slice(&body).map_err(|e| self.protocol(e.to_string()))
    }

    fn protocol(&self, reason: String) -> Error {
        Error::Protocol {
            upstream: self.inner.base.clone(),
            reason,
        }
    }

    fn artifact_path(name: &ArtifactName) -> String {
        format!(
            "/v1/artifacts/{}/{}/{}",
            name.entity, name.project, name.name
        )
    }

    /// Opens `GET /v1/blobs/{digest}` at `offset`, asking for `offset..end`.
    async fn open_blob(
        &self,
        digest: &Digest,
        size: u64,
        offset: u64,
        end: u64,
    ) -> Result<Response, Error> {
        let path = format!("/v1/blobs/{digest}");
        let ranged = offset != 0 || end != size;
        let response = self
            .send(&format!("blob `{digest}`"), || {
                let request = self.request(Method::GET, &path);
                Ok(if ranged {
                    request.header(header::RANGE, format!("bytes={offset}-{}", end - 1))
                } else {
                    request
                })
            })
            .await?;
        if let Some(etag) = response.headers().get(header::ETAG)
            && etag.as_bytes() != format!("\"{digest}\"").as_bytes()
        {
            return Err(self.protocol(format!(
                "blob `{digest}` came with ETag {etag:?}, expected its digest"
            )));
        }
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {
                let expected = format!("bytes {offset}-{}/{size}", end - 1);
                let got = response.headers().get(header::CONTENT_RANGE);
                if got.is_none_or(|v| v.as_bytes() != expected.as_bytes()) {
                    return Err(self.protocol(format!(
                        "blob `{digest}`: asked for `{expected}`, got Content-Range {got:?}"
                    )));
                }
            }
            StatusCode::OK if ranged => {
                return Err(self.protocol(format!(
                    "blob `{digest}`: the server ignored the Range request"
                )));
            }
            _ => {}
        }
        Ok(response)
    }
}

async fn read_problem(mut response: Response) -> Option<Problem> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_PROBLEM {
            return None;
        }
    }
    serde_json::from_slice(&body).ok()
}

/// One blob of the registry, opened by range for [`crate::http::Resuming`].
struct BlobRange {
    client: RegistryClient,
    digest: Digest,
    size: u64,
}

impl crate::http::OpenRange for BlobRange {
    fn open_range(&self, range: Range<u64>) -> BoxFuture<'_, Result<Response, Error>> {
        Box::pin(
            self.client
                .open_blob(&self.digest, self.size, range.start, range.end),
        )
    }
}

/// A file as a streaming request body.
impl RegistryClient {
    /// The same registry (and connection pool) with another token.
    pub fn with_credential(&self, token: &str) -> Result<Self, Error> {
        let mut value =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| Error::Url {
                url: self.inner.base.clone(),
                reason: "the token contains characters not allowed in a header".to_owned(),
            })?;
        value.set_sensitive(true);
        Ok(Self {
            inner: Arc::new(Inner {
                base: self.inner.base.clone(),
                http: self.inner.http.clone(),
                token: Some(value),
                retry: self.inner.retry.clone(),
            }),
        })
    }

    /// Uploads a large blob so that a broken upload continues where the registry's copy
    /// ends instead of starting over. A registry without resumable uploads gets a plain
    /// `PUT`.
    async fn upload_resumable(&self, digest: &Digest, file: &Path, len: u64) -> Result<(), Error> {
        let path = format!("/v1/blobs/{digest}");
        let what = format!("blob `{digest}`");
        let mut round = 0;
        loop {
            let offset = match self.upload_offset(digest).await {
                Ok(offset) if offset <= len => offset,
                // Longer than the file (not a prefix of it), or a registry from before
                // resumable uploads: start at 0.
                Ok(_) | Err(Error::NotFound { .. }) => 0,
                Err(e) => return Err(e),
            };
            let result = self
                .send(&what, || {
                    use std::io::{Seek, SeekFrom};
                    let mut opened = std::fs::File::open(file).io("open", file)?;
                    opened.seek(SeekFrom::Start(offset)).io("seek", file)?;
                    Ok(self
                        .request(Method::PUT, &path)
                        .header(header::CONTENT_LENGTH, len - offset)
                        .header(header::CONTENT_TYPE, "application/octet-stream")
                        .header("upload-offset", offset)
                        .body(file_body(opened)))
                })
                .await;
            match result {
                Ok(_) => return Ok(()),
                // Another attempt moved the registry's copy on (409), or the connection
                // kept breaking: ask where it is and continue from there.
                Err(Error::Rejected { status: 409, .. } | Error::Unreachable { .. })
                    if round < RESUME_ROUNDS =>
                {
                    round += 1;
                    tracing::debug!(%digest, round, "continuing a broken upload");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// How many bytes of `digest` the registry holds from an earlier upload by us.
    async fn upload_offset(&self, digest: &Digest) -> Result<u64, Error> {
        #[derive(serde::Deserialize)]
        struct Offset {
            offset: u64,
        }
        let path = format!("/v1/blobs/{digest}/upload");
        let answer: Offset = self
            .get_json(&format!("blob `{digest}`"), || {
                Ok(self.request(Method::GET, &path))
            })
            .await?;
        Ok(answer.offset)
    }
}

fn file_body(file: std::fs::File) -> reqwest::Body {
    let file = tokio::fs::File::from_std(file);
    let stream = futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = bytes::BytesMut::with_capacity(UPLOAD_CHUNK);
        match (&mut file)
            .take(UPLOAD_CHUNK as u64)
            .read_buf(&mut buf)
            .await
        {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), file)),
            Err(e) => Some((Err(e), file)),
        }
    });
    reqwest::Body::wrap_stream(stream)
}

impl BlobSource for RegistryClient {
    fn describe(&self) -> String {
        self.inner.base.clone()
    }

    fn fetch_blob<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
        range: Option<Range<u64>>,
    ) -> BoxFuture<'a, Result<BlobStream, Error>> {
        Box::pin(async move {
            let range = check_range(digest, size, range)?;
            if range.is_empty() {
                return Ok(BlobStream::new(*digest, size, range, Box::new(Empty)));
            }
            let response = self.open_blob(digest, size, range.start, range.end).await?;
            let opener = BlobRange {
                client: self.clone(),
                digest: *digest,
                size,
            };
            let source = crate::http::Resuming::new(
                opener,
                range.end,
                self.inner.retry.clone(),
                self.inner.base.clone(),
                Some(response),
            );
            Ok(BlobStream::new(*digest, size, range, Box::new(source)))
        })
    }

    fn fetch_batch(
        &self,
        blobs: Vec<(Digest, u64)>,
    ) -> Option<BoxFuture<'_, Result<BlobBatch, Error>>> {
        Some(Box::pin(self.open_batch(blobs)))
    }
}

impl RegistryClient {
    /// `POST /v1/blobs/batch` for `blobs`; an answer other than `200` (a registry without
    /// the route says `404` or `405`) is an error.
    async fn open_batch(&self, blobs: Vec<(Digest, u64)>) -> Result<BlobBatch, Error> {
        let body = serde_json::to_vec(&BatchRequest {
            digests: blobs.iter().map(|(digest, _)| *digest).collect(),
        })
        .map_err(|e| self.protocol(e.to_string()))?;
        let body = Bytes::from(body);
        let response = self
            .send("blobs", || {
                Ok(self
                    .request(Method::POST, "/v1/blobs/batch")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body.clone()))
            })
            .await?;
        let answer = crate::http::Body {
            url: self.url("/v1/blobs/batch"),
            response,
        };
        Ok(BlobBatch::new(
            blobs,
            Box::new(answer),
            self.inner.base.clone(),
        ))
    }
}

impl Catalog for RegistryClient {
    fn with_token(&self, token: &str) -> Option<Result<Upstream, Error>> {
        Some(
            self.with_credential(token)
                .map(|client| Upstream::publishing(Arc::new(client))),
        )
    }

    fn resolve<'a>(
        &'a self,
        name: &'a ArtifactName,
        selector: &'a Selector,
    ) -> BoxFuture<'a, Result<Version, Error>> {
        Box::pin(async move {
            if let Selector::Alias(alias) = selector
                && hoard_types::is_pull_request(alias)
            {
                return Err(Error::NotFound {
                    what: format!(
                        "artifact `{name}{selector}`: `{alias}` is a Hugging Face Hub revision, and this upstream is a hoard registry"
                    ),
                });
            }
            let path = format!("{}/{}", Self::artifact_path(name), selector.to_segment());
            let what = format!("artifact `{name}{selector}`");
            let (_, body) = self
                .send_read(&what, || Ok(self.request(Method::GET, &path)))
                .await?;
            let version = Version::from_json(&body).map_err(|e| self.protocol(e.to_string()))?;
            check_resolved(&self.describe(), name, selector, &version)?;
            Ok(version)
        })
    }

    fn list<'a>(&'a self, name: &'a ArtifactName) -> BoxFuture<'a, Result<VersionList, Error>> {
        Box::pin(async move {
            let path = format!("{}/versions", Self::artifact_path(name));
            self.get_json(&format!("artifact `{name}`"), || {
                Ok(self.request(Method::GET, &path))
            })
            .await
        })
    }

    fn artifacts<'a>(
        &'a self,
        project: &'a ProjectName,
    ) -> BoxFuture<'a, Result<ArtifactList, Error>> {
        Box::pin(async move {
            let path = format!("/v1/artifacts/{}/{}", project.entity, project.project);
            self.get_json(&format!("project `{project}`"), || {
                Ok(self.request(Method::GET, &path))
            })
            .await
        })
    }
}

impl Publisher for RegistryClient {
    fn missing_blobs<'a>(
        &'a self,
        digests: &'a [Digest],
    ) -> BoxFuture<'a, Result<Vec<Digest>, Error>> {
        Box::pin(async move {
            let mut missing = Vec::new();
            for batch in digests.chunks(MISSING_BATCH) {
                let body = MissingRequest {
                    digests: batch.to_vec(),
                };
                let answer: MissingResponse = self
                    .get_json("blobs", || {
                        Ok(self.request(Method::POST, "/v1/blobs/missing").json(&body))
                    })
                    .await?;
                if let Some(stray) = answer.missing.iter().find(|d| !batch.contains(d)) {
                    return Err(self.protocol(format!(
                        "`blobs/missing` named `{stray}`, which was not asked about"
                    )));
                }
                missing.extend(answer.missing);
            }
            Ok(missing)
        })
    }

    fn upload_blob<'a>(
        &'a self,
        digest: &'a Digest,
        file: &'a Path,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let len = std::fs::metadata(file).io("stat", file)?.len();
            if len >= RESUMABLE_UPLOAD {
                return self.upload_resumable(digest, file, len).await;
            }
            let path = format!("/v1/blobs/{digest}");
            self.send(&format!("blob `{digest}`"), || {
                let opened = std::fs::File::open(file).io("open", file)?;
                let len = opened.metadata().io("stat", file)?.len();
                Ok(self
                    .request(Method::PUT, &path)
                    .header(header::CONTENT_LENGTH, len)
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(file_body(opened)))
            })
            .await?;
            Ok(())
        })
    }

    fn commit<'a>(
        &'a self,
        name: &'a ArtifactName,
        request: &'a CommitRequest,
    ) -> BoxFuture<'a, Result<Committed, Error>> {
        Box::pin(async move {
            let path = format!("{}/versions", Self::artifact_path(name));
            // A commit asked again is harmless: the same content gives the same version.
            let (status, body) = self
                .send_read(&format!("artifact `{name}`"), || {
                    Ok(self.request(Method::POST, &path).json(request))
                })
                .await?;
            let created = status == StatusCode::CREATED;
            let version = Version::from_json(&body).map_err(|e| self.protocol(e.to_string()))?;
            if version.artifact()? != *name || version.digest != request.manifest.digest() {
                return Err(self.protocol(format!(
                    "committing to `{name}` returned `{}/{}/{}@{}`",
                    version.entity, version.project, version.name, version.digest
                )));
            }
            Ok(Committed { version, created })
        })
    }

    fn set_alias<'a>(
        &'a self,
        name: &'a ArtifactName,
        alias: &'a str,
        version: u32,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            hoard_types::check_alias(alias)?;
            let path = format!("{}/aliases/{alias}", Self::artifact_path(name));
            let body = AliasRequest {
                version: format!("v{version}"),
            };
            self.send(&format!("artifact `{name}:v{version}`"), || {
                Ok(self.request(Method::PUT, &path).json(&body))
            })
            .await?;
            Ok(())
        })
    }
}

/// The body of an empty blob: no request needed.
struct Empty;

impl ChunkSource for Empty {
    fn next_chunk(&mut self, _offset: u64) -> BoxFuture<'_, Result<Option<Bytes>, Error>> {
        Box::pin(async { Ok(None) })
    }
}
