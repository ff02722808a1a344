//! Sending one HTTP request with retries, for every upstream that speaks HTTP: connection
//! errors, 429 (after its `Retry-After`) and 5xx are tried again with exponential backoff
//! and jitter; the caller turns any other answer into its own [`Error`].

use std::ops::Range;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use reqwest::header;
use reqwest::{RequestBuilder, Response, StatusCode};

use crate::blob::ChunkSource;
use crate::{BoxFuture, Error, RetryPolicy};

/// Why [`send`] gave up.
pub(crate) enum Failure {
    /// The upstream answered with this non-success status (after `attempts` tries): the
    /// caller reads the body for the upstream's reason.
    Status(Response, u32),
    Error(Error),
}

/// Sends a request built by `make` (once per attempt); see the module docs. `base` names
/// the upstream in errors.
pub(crate) async fn send(
    retry: &RetryPolicy,
    base: &str,
    what: &str,
    make: impl Fn() -> Result<RequestBuilder, Error>,
) -> Result<Response, Failure> {
    let mut attempt = 0;
    loop {
        let wait = match make().map_err(Failure::Error)?.send().await {
            Ok(response) if response.status().is_success() => return Ok(response),
            Ok(response) => {
                let status = response.status();
                if !crate::retry::retryable(status) || attempt >= retry.retries {
                    return Err(Failure::Status(response, attempt + 1));
                }
                match retry_after(&response) {
                    Some(wait) if wait > retry.max_retry_after => {
                        return Err(Failure::Status(response, attempt + 1));
                    }
                    Some(wait) => wait,
                    None => retry.backoff(attempt),
                }
            }
            Err(e) if e.is_builder() => {
                return Err(Failure::Error(Error::Url {
                    url: base.to_owned(),
                    reason: e.to_string(),
                }));
            }
            Err(e) => {
                // A refused connection is a clear answer (nothing listens there): one
                // quick retry covers a server restarting, more only delays the caller's
                // fallback (a daemon serving from its cache when the upstream is down).
                let limit = if e.is_connect() {
                    retry.retries.min(1)
                } else {
                    retry.retries
                };
                if attempt >= limit {
                    return Err(Failure::Error(Error::unreachable(
                        base.to_owned(),
                        attempt + 1,
                        &e,
                    )));
                }
                tracing::debug!(error = %e, attempt, "{what}: retrying");
                retry.backoff(attempt)
            }
        };
        attempt += 1;
        tokio::time::sleep(wait).await;
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

/// [`send`], then the whole answer read with [`read_bounded`]: an answer that breaks off
/// midway is asked for again like a failed connection, with the same backoff and number
/// of attempts (the requests sent this way may be repeated: reads, and idempotent
/// commits). Returns the status and the body.
pub(crate) async fn send_read(
    retry: &RetryPolicy,
    base: &str,
    what: &str,
    max: usize,
    make: impl Fn() -> Result<RequestBuilder, Error>,
) -> Result<(StatusCode, Bytes), Failure> {
    let mut attempt = 0;
    loop {
        let response = send(retry, base, what, &make).await?;
        let status = response.status();
        match read_bounded(response, max, base).await {
            Err(Error::Broken { source, .. }) if attempt < retry.retries => {
                tracing::debug!(error = %source, attempt, "{what}: the answer broke off; asking again");
                tokio::time::sleep(retry.backoff(attempt)).await;
                attempt += 1;
            }
            Err(Error::Broken { url, source, .. }) => {
                return Err(Failure::Error(Error::Broken {
                    url,
                    attempts: attempt + 1,
                    source,
                }));
            }
            Err(e) => return Err(Failure::Error(e)),
            Ok(body) => return Ok((status, body)),
        }
    }
}

/// A whole answer, read into memory but bounded: an upstream cannot make hoard buffer more
/// than `max` bytes. `base` names the upstream in errors; a body that breaks off is
/// [`Error::Broken`].
pub(crate) async fn read_bounded(
    mut response: Response,
    max: usize,
    base: &str,
) -> Result<bytes::Bytes, Error> {
    let too_long = || Error::Protocol {
        upstream: base.to_owned(),
        reason: format!("an answer of more than {max} bytes"),
    };
    if response
        .content_length()
        .is_some_and(|len| len > max as u64)
    {
        return Err(too_long());
    }
    let mut body = bytes::BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() > max => return Err(too_long()),
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => return Ok(body.freeze()),
            Err(e) => {
                return Err(Error::Broken {
                    url: base.to_owned(),
                    attempts: 1,
                    source: Box::new(e),
                });
            }
        }
    }
}

/// Opens a byte range of one remote file.
pub(crate) trait OpenRange: Send + Sync {
    fn open_range(&self, range: Range<u64>) -> BoxFuture<'_, Result<Response, Error>>;
}

/// A body that resumes with `Range` where a broken connection left off, up to the retry
/// policy's number of times, with its backoff.
pub(crate) struct Resuming<O> {
    opener: O,
    end: u64,
    retry: RetryPolicy,
    /// Names the upstream in errors.
    base: String,
    response: Option<Response>,
    /// Mid-body failures so far.
    breaks: u32,
}

impl<O: OpenRange> Resuming<O> {
    /// A body up to `end`; `response`: the first range, already opened (so that its
    /// errors are the caller's), or `None` to open it on the first read.
    pub(crate) fn new(
        opener: O,
        end: u64,
        retry: RetryPolicy,
        base: String,
        response: Option<Response>,
    ) -> Self {
        Self {
            opener,
            end,
            retry,
            base,
            response,
            breaks: 0,
        }
    }
}

impl<O: OpenRange> ChunkSource for Resuming<O> {
    fn next_chunk(&mut self, offset: u64) -> BoxFuture<'_, Result<Option<Bytes>, Error>> {
        Box::pin(async move {
            loop {
                if offset >= self.end {
                    return Ok(None);
                }
                if self.response.is_none() {
                    self.response = Some(self.opener.open_range(offset..self.end).await?);
                }
                let response = self.response.as_mut().expect("opened above");
                match response.chunk().await {
                    Ok(chunk) => return Ok(chunk),
                    Err(e) => {
                        self.response = None;
                        if self.breaks >= self.retry.retries {
                            return Err(Error::unreachable(self.base.clone(), self.breaks + 1, &e));
                        }
                        tracing::debug!(offset, error = %e, "body broke off; resuming");
                        tokio::time::sleep(self.retry.backoff(self.breaks)).await;
                        self.breaks += 1;
                    }
                }
            }
        })
    }
}

/// One answer's body as chunks, read to its end; a break is an error (the caller decides
/// whether to ask again). `url` names the upstream in it.
pub(crate) struct Body {
    pub(crate) url: String,
    pub(crate) response: Response,
}

impl ChunkSource for Body {
    fn next_chunk(&mut self, _offset: u64) -> BoxFuture<'_, Result<Option<Bytes>, Error>> {
        Box::pin(async move {
            self.response
                .chunk()
                .await
                .map_err(|e| Error::unreachable(self.url.clone(), 1, &e))
        })
    }
}
