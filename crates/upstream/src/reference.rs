//! Reference entries: files whose bytes live at a URI (`https://`, `http://`, `file://`)
//! rather than in the upstream's blob store. [`reference()`] gives a [`BlobSource`], so the
//! fetch engine treats a reference like any blob:
//! streamed, resumed, fetched in ranges, and checked against the manifest's digest and
//! size before it becomes visible. `s3://` is fetched with the daemon's AWS credentials,
//! `gs://` with its Google credentials (a token, a service account's key, gcloud's login
//! or the VM's account), both found and applied by `hoard-cloud`; other schemes are
//! refused with a message naming the scheme, and so are `s3://`/`gs://` without
//! credentials.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use hoard_types::Digest;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::blob::{ChunkSource, check_range};
use crate::{BlobSource, BlobStream, BoxFuture, Error};

/// Read size for `file://` references.
const FILE_CHUNK: usize = 1 << 20;

/// The source of one reference entry; `allow_files` says whether `file://` may be read (a
/// daemon serving other users must not read local files on their behalf).
pub fn reference(uri: &str, allow_files: bool) -> Result<Arc<dyn BlobSource>, Error> {
    Ok(Arc::new(open(uri, allow_files)?))
}

/// Where a reference's bytes are.
enum Source {
    Http(Box<HttpReference>),
    File(FileReference),
}

fn open(uri: &str, allow_files: bool) -> Result<Source, Error> {
    let refuse = |reason: String| Error::Url {
        url: uri.to_owned(),
        reason,
    };
    let scheme = uri.split_once("://").map(|(s, _)| s).unwrap_or_default();
    match scheme {
        "http" | "https" => {
            reqwest::Url::parse(uri).map_err(|e| refuse(e.to_string()))?;
            Ok(Source::Http(Box::new(HttpReference {
                uri: uri.to_owned(),
                http: client().map_err(&refuse)?,
                auth: Auth::None,
                retry: crate::RetryPolicy::default(),
            })))
        }
        "file" => {
            if !allow_files {
                return Err(refuse(
                    "this daemon serves several users and does not read local files for them; \
                     fetch it with a per-user daemon"
                        .to_owned(),
                ));
            }
            let path = &uri["file://".len()..];
            if !path.starts_with('/') {
                return Err(refuse(
                    "a `file://` reference needs an absolute path".to_owned(),
                ));
            }
            Ok(Source::File(FileReference {
                uri: uri.to_owned(),
                path: path.into(),
            }))
        }
        "s3" => {
            let s3 = hoard_cloud::aws::AwsCredentials::from_env().ok_or_else(|| {
                refuse(
                    "`s3://` references need credentials: set `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` for the daemon, or `AWS_PROFILE` for a profile of `~/.aws/credentials` (and `AWS_REGION`, or `AWS_ENDPOINT_URL` for an S3-compatible server); on EC2 the instance role is used"
                        .to_owned(),
                )
            })?;
            let (bucket, key) = bucket_and_object(uri)
                .ok_or_else(|| refuse("expected `s3://BUCKET/KEY`".to_owned()))?;
            // Signed per request (the signature holds the time); checked once here.
            s3.check(bucket, key).map_err(|e| refuse(e.to_string()))?;
            Ok(Source::Http(Box::new(HttpReference {
                uri: uri.to_owned(),
                http: client().map_err(&refuse)?,
                auth: Auth::S3(s3, bucket.to_owned(), key.to_owned()),
                retry: crate::RetryPolicy::default(),
            })))
        }
        "gs" => {
            let auth = hoard_cloud::gcs::GcsAuth::from_env()
                .map_err(|e| refuse(e.to_string()))?.ok_or_else(|| {
                refuse(
                    "`gs://` references need credentials: set `GOOGLE_APPLICATION_CREDENTIALS` to a service account's key file, run `gcloud auth application-default login`, or set `GOOGLE_OAUTH_ACCESS_TOKEN` for the daemon (`STORAGE_EMULATOR_HOST` for an emulator)"
                        .to_owned(),
                )
            })?;
            let (bucket, object) = bucket_and_object(uri)
                .ok_or_else(|| refuse("expected `gs://BUCKET/OBJECT`".to_owned()))?;
            let endpoint = std::env::var("STORAGE_EMULATOR_HOST")
                .ok()
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "https://storage.googleapis.com".to_owned());
            // The JSON API names an object by its whole name, `/` included, encoded.
            let url = format!(
                "{}/storage/v1/b/{}/o/{}?alt=media",
                endpoint.trim_end_matches('/'),
                hoard_cloud::uri::encode_segment(bucket),
                hoard_cloud::uri::encode_segment(object)
            );
            reqwest::Url::parse(&url).map_err(|e| refuse(e.to_string()))?;
            Ok(Source::Http(Box::new(HttpReference {
                uri: uri.to_owned(),
                http: client().map_err(&refuse)?,
                auth: Auth::Gcs(url, auth),
                retry: crate::RetryPolicy::default(),
            })))
        }
        "" => Err(refuse(
            "a reference must be a URI such as `https://…`".to_owned(),
        )),
        other => Err(refuse(format!(
            "references with the scheme `{other}://` are not supported yet (https, http, file, s3 and gs are)"
        ))),
    }
}

/// `BUCKET` and `OBJECT` of `s3://BUCKET/OBJECT` or `gs://…`, both non-empty.
fn bucket_and_object(uri: &str) -> Option<(&str, &str)> {
    let (_, rest) = uri.split_once("://")?;
    rest.split_once('/')
        .filter(|(bucket, object)| !bucket.is_empty() && !object.is_empty())
}

struct HttpReference {
    uri: String,
    http: reqwest::Client,
    auth: Auth,
    retry: crate::RetryPolicy,
}

/// How a reference's requests are made.
enum Auth {
    /// A plain `GET` of the URI.
    None,
    /// `s3://`: the credentials that sign each request, the bucket and the key.
    S3(hoard_cloud::aws::AwsCredentials, String, String),
    /// `gs://`: a `GET` of this JSON API URL with an OAuth access token from these
    /// credentials.
    Gcs(String, hoard_cloud::gcs::GcsAuth),
}

/// The HTTP client of every reference: built once (it loads the TLS roots) and shared,
/// with its connection pool, by the thousands of references a version may have.
fn client() -> Result<reqwest::Client, String> {
    static CLIENT: std::sync::OnceLock<Result<reqwest::Client, String>> =
        std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .read_timeout(std::time::Duration::from_secs(30))
                .user_agent(concat!("hoard/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| e.to_string())
        })
        .clone()
}

struct FileReference {
    uri: String,
    path: std::path::PathBuf,
}

impl Source {
    fn uri(&self) -> &str {
        match self {
            Self::Http(http) => &http.uri,
            Self::File(file) => &file.uri,
        }
    }

    /// `range` of the resource, of `size` bytes.
    async fn body(&self, range: Range<u64>, size: u64) -> Result<Box<dyn ChunkSource>, Error> {
        Ok(match self {
            Self::Http(http) => Box::new(http.open(range, size).await?),
            Self::File(file) => Box::new(file.open(range).await?),
        })
    }
}

impl BlobSource for Source {
    fn describe(&self) -> String {
        self.uri().to_owned()
    }

    fn fetch_blob<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
        range: Option<Range<u64>>,
    ) -> BoxFuture<'a, Result<BlobStream, Error>> {
        Box::pin(async move {
            let range = check_range(digest, size, range)?;
            let body = self.body(range.clone(), size).await?;
            Ok(BlobStream::new(*digest, size, range, body))
        })
    }
}

impl HttpReference {
    /// GETs `range` of a resource of `size` bytes; connection errors, 429 and 5xx are
    /// asked again by the retry policy (a request is signed or authorized once for all
    /// its attempts).
    async fn open(&self, range: Range<u64>, size: u64) -> Result<crate::http::Body, Error> {
        let whole = range.start == 0 && range.end == size;
        let bad_header = |e: &dyn std::fmt::Display| Error::Url {
            url: self.uri.clone(),
            reason: format!("a request header: {e}"),
        };
        let mut headers = HeaderMap::new();
        let url = match &self.auth {
            Auth::None => self.uri.clone(),
            Auth::S3(credentials, bucket, key) => {
                let signed =
                    credentials
                        .signer()
                        .await?
                        .get(bucket, key, std::time::SystemTime::now())?;
                for (name, value) in signed.headers {
                    let name =
                        HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad_header(&e))?;
                    let value = HeaderValue::from_str(&value).map_err(|e| bad_header(&e))?;
                    headers.insert(name, value);
                }
                signed.url
            }
            Auth::Gcs(url, auth) => {
                headers.insert(reqwest::header::AUTHORIZATION, auth.header().await?);
                url.clone()
            }
        };
        if !whole {
            let bytes = format!("bytes={}-{}", range.start, range.end - 1);
            headers.insert(
                reqwest::header::RANGE,
                HeaderValue::from_str(&bytes).map_err(|e| bad_header(&e))?,
            );
        }
        let make = || Ok(self.http.get(&url).headers(headers.clone()));
        let what = format!("reference `{}`", self.uri);
        let response = match crate::http::send(&self.retry, &self.uri, &what, make).await {
            Ok(response) => response,
            Err(crate::http::Failure::Error(e)) => return Err(e),
            Err(crate::http::Failure::Status(response, attempts)) => {
                let status = response.status();
                return Err(Error::from_status(
                    self.uri.clone(),
                    status,
                    attempts,
                    format!("it answered {status}"),
                ));
            }
        };
        let expected = if whole {
            StatusCode::OK
        } else {
            StatusCode::PARTIAL_CONTENT
        };
        if response.status() != expected {
            return Err(Error::from_status(
                self.uri.clone(),
                response.status(),
                1,
                "it ignored the byte range asked for".to_owned(),
            ));
        }
        Ok(crate::http::Body {
            url: self.uri.clone(),
            response,
        })
    }
}

impl FileReference {
    /// Opens the file at `range.start`; the body ends at `range.end`.
    async fn open(&self, range: Range<u64>) -> Result<FileBody, Error> {
        let path = self.path.clone();
        let start = range.start;
        let file = tokio::task::spawn_blocking(move || {
            let mut file = std::fs::File::open(&path)?;
            file.seek(SeekFrom::Start(start))?;
            Ok::<_, std::io::Error>(file)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|e| Error::Io {
            op: "open the reference",
            path: self.path.clone(),
            source: e,
        })?;
        Ok(FileBody {
            path: self.path.clone(),
            file: Some(file),
            left: range.end - range.start,
        })
    }
}

struct FileBody {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
    left: u64,
}

impl ChunkSource for FileBody {
    fn next_chunk(&mut self, _offset: u64) -> BoxFuture<'_, Result<Option<Bytes>, Error>> {
        Box::pin(async move {
            if self.left == 0 {
                return Ok(None);
            }
            let Some(mut file) = self.file.take() else {
                return Ok(None);
            };
            let want = usize::try_from(self.left)
                .unwrap_or(FILE_CHUNK)
                .min(FILE_CHUNK);
            let (file, read) = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0; want];
                let read = file.read(&mut buf).map(|n| {
                    buf.truncate(n);
                    buf
                });
                (file, read)
            })
            .await
            .map_err(|e| Error::Io {
                op: "read the reference",
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })?;
            let buf = read.map_err(|e| Error::Io {
                op: "read the reference",
                path: self.path.clone(),
                source: e,
            })?;
            self.file = Some(file);
            if buf.is_empty() {
                // The file is shorter than the manifest says: the stream reports it.
                self.left = 0;
                return Ok(None);
            }
            self.left -= buf.len() as u64;
            Ok(Some(Bytes::from(buf)))
        })
    }
}

/// A reference entry of a foreign version (W&B): checked against the MD5 it was logged
/// with, or for an `http(s)://` reference logged with an ETag, against the ETag the server
/// sends now.
pub(crate) fn foreign_reference(
    uri: &str,
    path: &hoard_types::RelPath,
    entry: &hoard_types::ForeignEntry,
) -> Result<Arc<dyn crate::FileSource>, Error> {
    Ok(Arc::new(ForeignReference {
        source: open(uri, true)?,
        what: format!("`{path}` (a reference to `{uri}`)"),
        entry: entry.clone(),
    }))
}

struct ForeignReference {
    source: Source,
    what: String,
    entry: hoard_types::ForeignEntry,
}

impl BlobSource for ForeignReference {
    fn describe(&self) -> String {
        self.what.clone()
    }

    fn fetch_blob<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
        range: Option<Range<u64>>,
    ) -> BoxFuture<'a, Result<BlobStream, Error>> {
        self.source.fetch_blob(digest, size, range)
    }
}

impl crate::FileSource for ForeignReference {
    fn fetch_foreign(&self) -> BoxFuture<'_, Result<BlobStream, Error>> {
        Box::pin(async move {
            let size = self.entry.size;
            let body: Box<dyn ChunkSource> = match &self.source {
                Source::Http(http) => {
                    let body = http.open(0..size, size).await?;
                    if let hoard_types::ForeignDigest::Etag(logged) = &self.entry.digest {
                        let now = body
                            .response
                            .headers()
                            .get(reqwest::header::ETAG)
                            .and_then(|v| v.to_str().ok())
                            .map(|v| v.trim_start_matches("W/").trim_matches('"').to_owned());
                        if now.as_deref() != Some(logged.as_str()) {
                            return Err(Error::ForeignMismatch {
                                blob: self.what.clone(),
                                expected: format!("ETag {logged:?}"),
                                actual: now.map_or_else(
                                    || "no ETag".to_owned(),
                                    |t| format!("ETag {t:?}"),
                                ),
                            });
                        }
                    }
                    Box::new(body)
                }
                Source::File(_) => self.source.body(0..size, size).await?,
            };
            // Checked against the logged MD5, or (an ETag) only by its size here.
            Ok(BlobStream::foreign(
                self.entry.digest.clone(),
                size,
                self.what.clone(),
                body,
            ))
        })
    }

    fn fetch_part(&self, range: Range<u64>) -> BoxFuture<'_, Result<BlobStream, Error>> {
        Box::pin(async move {
            let size = self.entry.size;
            let range = crate::blob::check_part(&range, size, &self.what)?;
            let body = self.source.body(range.clone(), size).await?;
            Ok(BlobStream::part(range, self.what.clone(), body))
        })
    }

    fn whole(&self) -> Option<hoard_types::ForeignDigest> {
        crate::ForeignCheck::new(&self.entry.digest, self.entry.size)
            .map(|_| self.entry.digest.clone())
    }
}
