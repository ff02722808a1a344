//! Responses: JSON bodies, streamed blob bodies, and errors as
//! `application/problem+json`.

use std::io;

use bytes::Bytes;
use hoard_types::Digest;
use hoard_types::registry::{Problem, problem};
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// Every response body: small ones in full, blobs streamed.
pub(crate) type Body = UnsyncBoxBody<Bytes, io::Error>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(crate) fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub(crate) fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("response types always serialize");
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An error answer; see [`Problem`].
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    kind: &'static str,
    detail: String,
    missing: Vec<Digest>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
            missing: Vec::new(),
        }
    }

    pub(crate) fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            problem::NOT_FOUND,
            format!("Not found: {what}"),
        )
    }

    pub(crate) fn forbidden(detail: String) -> Self {
        Self::new(StatusCode::FORBIDDEN, problem::FORBIDDEN, detail)
    }

    pub(crate) fn unauthorized(detail: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, problem::UNAUTHORIZED, detail)
    }

    pub(crate) fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, problem::BAD_REQUEST, detail)
    }

    pub(crate) fn into_response(self) -> Response<Body> {
        let body = Problem {
            kind: self.kind.to_owned(),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
            missing: self.missing,
        };
        let mut response = json(self.status, &body);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<hoard_upstream::Error> for ApiError {
    fn from(error: hoard_upstream::Error) -> Self {
        use hoard_upstream::Error as E;
        match error {
            E::NotFound { what } => Self::not_found(what),
            E::MissingBlobs { missing } => Self {
                status: StatusCode::CONFLICT,
                kind: problem::MISSING_BLOBS,
                detail: E::MissingBlobs {
                    missing: missing.clone(),
                }
                .to_string(),
                missing,
            },
            E::Invalid(e) => Self::bad_request(e.to_string()),
            e @ (E::DigestMismatch { .. } | E::ShortBody { .. } | E::LongBody { .. }) => Self::new(
                StatusCode::BAD_REQUEST,
                problem::DIGEST_MISMATCH,
                e.to_string(),
            ),
            E::Rejected { status, detail, .. } => Self::new(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                problem::BAD_REQUEST,
                detail,
            ),
            e => {
                tracing::error!(error = %hoard_http::error_chain(&e), "storage error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    problem::INTERNAL,
                    "The registry's storage failed; see the server log",
                )
            }
        }
    }
}
