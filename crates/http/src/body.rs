//! Response bodies, problem documents, and bounded JSON request bodies.

use std::time::Duration;

use bytes::Bytes;
use hoard_types::registry::Problem;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;

/// Every response body: small ones in full, large ones (blobs, NDJSON) streamed.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A JSON answer.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("response types always serialize");
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An error answer as `application/problem+json`, with the status the problem names.
pub fn problem(problem: &Problem) -> Response<Body> {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json(status, problem);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// Why a request body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body is larger than the {limit} bytes accepted")]
    TooLarge { limit: usize },
    #[error("the request body was not sent in time")]
    Slow,
    #[error("reading the request body failed: {0}")]
    Broken(String),
    #[error("invalid JSON body: {0}")]
    Invalid(String),
}

/// Reads a JSON body of at most `limit` bytes, which must arrive within `deadline`. A
/// `Content-Length` over the limit is refused before anything is read.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
    limit: usize,
    deadline: Duration,
) -> Result<T, BodyError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let body = http_body_util::Limited::new(request.into_body(), limit);
    let bytes = match tokio::time::timeout(deadline, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(BodyError::TooLarge { limit });
        }
        Ok(Err(e)) => return Err(BodyError::Broken(e.to_string())),
        Err(_) => return Err(BodyError::Slow),
    };
    serde_json::from_slice(&bytes).map_err(|e| BodyError::Invalid(e.to_string()))
}
