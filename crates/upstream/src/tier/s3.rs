//! The S3 calls the tier makes, on any S3-compatible store: GET (whole or a range), HEAD,
//! PUT (of bytes or a file, conditional or not), DELETE, a listing, and the three calls
//! of a multipart upload. Each call is sent once, with short timeouts: the tier is a
//! shortcut, and a get that cannot take it goes to the upstream rather than waiting.

use std::ops::Range;
use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hoard_cloud::aws::AwsCredentials;
use hoard_cloud::sigv4::{EMPTY_SHA256, Request, Target, UNSIGNED_PAYLOAD, sha256_hex};
use hoard_cloud::xml_text;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::Error;

/// A bucket of an S3-compatible store, and the keys to sign for it; cheap to clone (the
/// HTTP client and the credentials are shared).
#[derive(Clone)]
pub(crate) struct Bucket {
    http: reqwest::Client,
    credentials: AwsCredentials,
    target: Target,
    /// The bucket's name.
    name_in_store: String,
    /// `s3://bucket/prefix`: names the tier in errors.
    name: String,
}

/// What a body to PUT is.
pub(crate) enum Body<'a> {
    Bytes(Bytes),
    /// `len` bytes of a file from `offset`, streamed (not hashed into the signature).
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
    },
}

/// How a conditional create ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Created {
    Yes,
    /// The store refused it: the key exists (412, or 409 for a concurrent one).
    Exists,
}

/// One object of a listing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Listed {
    pub(crate) key: String,
    /// When the object was last written, by the store's clock (Unix ms), if it says.
    pub(crate) modified_ms: Option<u64>,
}

impl Bucket {
    pub(crate) fn new(
        credentials: AwsCredentials,
        target: Target,
        bucket: String,
        name: String,
    ) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .read_timeout(Duration::from_secs(10))
            .user_agent(concat!("hoard/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self {
            http,
            credentials,
            target,
            name_in_store: bucket,
            name,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Signs and sends one request; any answer comes back, only a failure to ask is an
    /// error.
    async fn send(
        &self,
        method: reqwest::Method,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&'static str, &str)],
        body: Option<Body<'_>>,
    ) -> Result<reqwest::Response, Error> {
        let payload = match &body {
            None => EMPTY_SHA256.to_owned(),
            Some(Body::Bytes(bytes)) => sha256_hex(bytes),
            Some(Body::File { .. }) => UNSIGNED_PAYLOAD.to_owned(),
        };
        let request = Request {
            method: method.as_str(),
            bucket: &self.name_in_store,
            key,
            query,
            headers,
            payload: &payload,
        };
        let signed =
            self.credentials
                .signer()
                .await?
                .sign(&self.target, &request, SystemTime::now())?;
        let mut map = HeaderMap::new();
        for (name, value) in signed.headers {
            let bad = |e: &dyn std::fmt::Display| Error::Url {
                url: self.name.clone(),
                reason: format!("a request header: {e}"),
            };
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(&e))?,
                HeaderValue::from_str(&value).map_err(|e| bad(&e))?,
            );
        }
        let mut builder = self.http.request(method, &signed.url).headers(map);
        match body {
            None => {}
            Some(Body::Bytes(bytes)) => builder = builder.body(bytes),
            Some(Body::File { path, offset, len }) => {
                builder = builder
                    .header(reqwest::header::CONTENT_LENGTH, len)
                    .body(file_body(path, offset, len).await?);
            }
        }
        builder
            .send()
            .await
            .map_err(|e| Error::unreachable(self.name.clone(), 1, &e))
    }

    /// The store's refusal as an error, with its `<Code>` and `<Message>`.
    async fn refused(&self, what: &str, response: reqwest::Response) -> Error {
        let status = response.status();
        let text = crate::http::read_bounded(response, 64 << 10, &self.name)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let code = xml_text(&text, "Code").unwrap_or_default();
        let message = unescape(xml_text(&text, "Message").unwrap_or_default());
        let detail = format!("{what}: {code} {message}");
        match status {
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => Error::Unauthorized {
                upstream: self.name.clone(),
                detail: format!(
                    "{status} {}; check the tier's AWS credentials (`AWS_ACCESS_KEY_ID`, `AWS_PROFILE`) and the bucket's permissions",
                    detail.trim()
                ),
            },
            status => Error::from_status(self.name.clone(), status, 1, detail.trim().to_owned()),
        }
    }

    /// The object at `key` (or `range` of it) as a response to stream; `None` when there
    /// is none.
    pub(crate) async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<Option<reqwest::Response>, Error> {
        let bytes = range.map(|r| format!("bytes={}-{}", r.start, r.end.saturating_sub(1)));
        let headers: Vec<(&'static str, &str)> =
            bytes.iter().map(|b| ("range", b.as_str())).collect();
        let response = self
            .send(reqwest::Method::GET, key, &[], &headers, None)
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK if bytes.is_none() => Ok(Some(response)),
            StatusCode::PARTIAL_CONTENT if bytes.is_some() => Ok(Some(response)),
            s if s.is_success() => Err(Error::Protocol {
                upstream: self.name.clone(),
                reason: format!("`{key}` answered {s} to a GET with a range"),
            }),
            _ => Err(self.refused(&format!("GET `{key}`"), response).await),
        }
    }

    /// A small object whole, at most `max` bytes; `None` when there is none.
    pub(crate) async fn get_small(&self, key: &str, max: usize) -> Result<Option<Bytes>, Error> {
        let Some(response) = self.get(key, None).await? else {
            return Ok(None);
        };
        crate::http::read_bounded(response, max, &self.name)
            .await
            .map(Some)
    }

    /// The size of the object at `key`; `None` when there is none.
    pub(crate) async fn head(&self, key: &str) -> Result<Option<u64>, Error> {
        let response = self
            .send(reqwest::Method::HEAD, key, &[], &[], None)
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(response.content_length().unwrap_or(0))),
            s => Err(Error::from_status(
                self.name.clone(),
                s,
                1,
                format!("HEAD `{key}`"),
            )),
        }
    }

    /// Writes the object `key`; with `if_none_match`, only if there is none (a store that
    /// does not honour the condition replaces it: see `Tier::probe`).
    pub(crate) async fn put(
        &self,
        key: &str,
        body: Body<'_>,
        if_none_match: bool,
    ) -> Result<Created, Error> {
        let headers: &[(&'static str, &str)] = if if_none_match {
            &[("if-none-match", "*")]
        } else {
            &[]
        };
        let response = self
            .send(reqwest::Method::PUT, key, &[], headers, Some(body))
            .await?;
        match response.status() {
            StatusCode::PRECONDITION_FAILED | StatusCode::CONFLICT if if_none_match => {
                Ok(Created::Exists)
            }
            s if s.is_success() => Ok(Created::Yes),
            _ => Err(self.refused(&format!("PUT `{key}`"), response).await),
        }
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), Error> {
        let response = self
            .send(reqwest::Method::DELETE, key, &[], &[], None)
            .await?;
        match response.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            _ => Err(self.refused(&format!("DELETE `{key}`"), response).await),
        }
    }

    /// The objects under `prefix` (the first 1,000: leases and probes are a few).
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<Listed>, Error> {
        let query = [("list-type", "2"), ("prefix", prefix), ("max-keys", "1000")];
        let response = self
            .send(reqwest::Method::GET, "", &query, &[], None)
            .await?;
        if !response.status().is_success() {
            return Err(self.refused(&format!("LIST `{prefix}`"), response).await);
        }
        let body = crate::http::read_bounded(response, 4 << 20, &self.name).await?;
        Ok(parse_listing(&String::from_utf8_lossy(&body)))
    }

    /// Starts a multipart upload of `key`: its upload id.
    pub(crate) async fn create_multipart(&self, key: &str) -> Result<String, Error> {
        let response = self
            .send(reqwest::Method::POST, key, &[("uploads", "")], &[], None)
            .await?;
        if !response.status().is_success() {
            return Err(self
                .refused(&format!("CreateMultipartUpload `{key}`"), response)
                .await);
        }
        let body = crate::http::read_bounded(response, 64 << 10, &self.name).await?;
        xml_text(&String::from_utf8_lossy(&body), "UploadId")
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| Error::Protocol {
                upstream: self.name.clone(),
                reason: format!("CreateMultipartUpload `{key}` answered without an UploadId"),
            })
    }

    /// Uploads part `number` (from 1): its ETag.
    pub(crate) async fn upload_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        body: Body<'_>,
    ) -> Result<String, Error> {
        let number_text = number.to_string();
        let query = [("partNumber", number_text.as_str()), ("uploadId", upload)];
        let response = self
            .send(reqwest::Method::PUT, key, &query, &[], Some(body))
            .await?;
        if !response.status().is_success() {
            return Err(self
                .refused(&format!("UploadPart {number} of `{key}`"), response)
                .await);
        }
        response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| Error::Protocol {
                upstream: self.name.clone(),
                reason: format!("UploadPart {number} of `{key}` answered without an ETag"),
            })
    }

    /// Completes a multipart upload from its parts' ETags, in order; with
    /// `if_none_match`, only if `key` does not exist.
    pub(crate) async fn complete_multipart(
        &self,
        key: &str,
        upload: &str,
        etags: &[String],
        if_none_match: bool,
    ) -> Result<Created, Error> {
        use std::fmt::Write as _;
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (i, etag) in etags.iter().enumerate() {
            let _ = write!(
                xml,
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                i + 1,
                escape(etag)
            );
        }
        xml.push_str("</CompleteMultipartUpload>");
        let headers: &[(&'static str, &str)] = if if_none_match {
            &[("if-none-match", "*")]
        } else {
            &[]
        };
        let response = self
            .send(
                reqwest::Method::POST,
                key,
                &[("uploadId", upload)],
                headers,
                Some(Body::Bytes(xml.into())),
            )
            .await?;
        let status = response.status();
        if matches!(
            status,
            StatusCode::PRECONDITION_FAILED | StatusCode::CONFLICT
        ) && if_none_match
        {
            return Ok(Created::Exists);
        }
        if !status.is_success() {
            return Err(self
                .refused(&format!("CompleteMultipartUpload `{key}`"), response)
                .await);
        }
        // S3 may answer 200 with an error inside the body.
        let body = crate::http::read_bounded(response, 64 << 10, &self.name).await?;
        let text = String::from_utf8_lossy(&body);
        if text.contains("<Error>") {
            return Err(Error::Rejected {
                upstream: self.name.clone(),
                status: status.as_u16(),
                detail: format!(
                    "CompleteMultipartUpload `{key}`: {} {}",
                    xml_text(&text, "Code").unwrap_or_default(),
                    xml_text(&text, "Message").unwrap_or_default()
                ),
            });
        }
        Ok(Created::Yes)
    }

    pub(crate) async fn abort_multipart(&self, key: &str, upload: &str) -> Result<(), Error> {
        let response = self
            .send(
                reqwest::Method::DELETE,
                key,
                &[("uploadId", upload)],
                &[],
                None,
            )
            .await?;
        if response.status().is_success() || response.status() == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(self
                .refused(&format!("AbortMultipartUpload `{key}`"), response)
                .await)
        }
    }
}

/// `len` bytes of `path` from `offset`, as a streamed request body.
async fn file_body(path: &Path, offset: u64, len: u64) -> Result<reqwest::Body, Error> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let io = |source| Error::Io {
        op: "read",
        path: path.to_owned(),
        source,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(io)?;
    let file = file.take(len);
    let chunks = futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0; 256 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    Ok(reqwest::Body::wrap_stream(chunks))
}

/// The keys (and when each was written) of a `ListObjectsV2` answer. An entry that does not parse is left
/// out: a listing is a hint, and every key read from it is checked again by its user.
fn parse_listing(xml: &str) -> Vec<Listed> {
    xml.split("<Contents>")
        .skip(1)
        .filter_map(|part| {
            let part = part.split("</Contents>").next()?;
            Some(Listed {
                key: unescape(xml_text(part, "Key")?),
                modified_ms: xml_text(part, "LastModified").and_then(unix_ms),
            })
        })
        .collect()
}

/// An ISO 8601 time as S3 lists it (`2026-12-01T19:15:37.000Z`), in Unix ms.
fn unix_ms(text: &str) -> Option<u64> {
    let at = humantime::parse_rfc3339_weak(text).ok()?;
    let since = at.duration_since(std::time::UNIX_EPOCH).ok()?;
    u64::try_from(since.as_millis()).ok()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_are_read_and_entries_without_a_key_are_left_out() {
        let xml = r#"<?xml version="1.0"?><ListBucketResult><Name>tier</Name>
            <Contents><Key>p/leases-v1/ab/1-box&amp;a</Key><Size>42</Size>
              <LastModified>2026-12-01T19:15:37.250Z</LastModified></Contents>
            <Contents><Key>p/x</Key><Size>not a number</Size></Contents>
            <Contents><Size>3</Size></Contents>
            <Contents><Key>p/y</Key><Size>0</Size></Contents></ListBucketResult>"#;
        assert_eq!(
            parse_listing(xml),
            vec![
                Listed {
                    key: "p/leases-v1/ab/1-box&a".into(),
                    modified_ms: Some(1_796_152_537_250),
                },
                Listed {
                    key: "p/x".into(),
                    modified_ms: None,
                },
                Listed {
                    key: "p/y".into(),
                    modified_ms: None,
                }
            ]
        );
        assert!(parse_listing("<html>502 Bad Gateway</html>").is_empty());
    }
}
