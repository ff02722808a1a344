//! Responses: JSON bodies, streamed blob bodies, and errors as
//! `application/problem+json`.

use hoard_http::{Body, BodyError};
use hoard_types::Digest;
use hoard_types::registry::{Problem, problem};
use http::{HeaderValue, Response, StatusCode, header};

/// An error answer; see [`Problem`].
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    kind: &'static str,
    detail: String,
    missing: Vec<Digest>,
    /// For a resumable upload at another offset: answered as `Upload-Offset`.
    pub(crate) upload_offset: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
            missing: Vec::new(),
            upload_offset: None,
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
        let mut response = hoard_http::problem(&body);
        if let Some(offset) = self.upload_offset {
            response
                .headers_mut()
                .insert(UPLOAD_OFFSET, HeaderValue::from(offset));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<BodyError> for ApiError {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::TooLarge { .. } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                problem::TOO_LARGE,
                error.to_string(),
            ),
            _ => Self::bad_request(error.to_string()),
        }
    }
}

impl From<hoard_layout::Error> for ApiError {
    fn from(error: hoard_layout::Error) -> Self {
        use hoard_layout::Error as E;
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
                upload_offset: None,
            },
            E::Invalid(e) => Self::bad_request(e.to_string()),
            e @ (E::WrongBytes { .. } | E::WrongSize { .. }) => Self::new(
                StatusCode::BAD_REQUEST,
                problem::DIGEST_MISMATCH,
                e.to_string(),
            ),
            E::Rejected { reason } => {
                Self::new(StatusCode::BAD_REQUEST, problem::BAD_REQUEST, reason)
            }
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

/// The header of a resumable upload: where this request's body starts in the blob.
pub(crate) const UPLOAD_OFFSET: &str = "upload-offset";

/// Runs blocking storage work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, hoard_layout::Error> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => {
            tracing::error!(error = %e, "storage task panicked");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                problem::INTERNAL,
                "internal error; see the server log",
            ))
        }
    }
}
