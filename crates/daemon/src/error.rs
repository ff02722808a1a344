//! [`ApiError`]: every failure as the problem document the socket answers with.

use http::StatusCode;

/// A failure with its HTTP status, a stable `type` and a human `detail`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

pub(crate) use hoard_http::error_chain as chain;

impl From<hoard_upstream::Error> for ApiError {
    fn from(error: hoard_upstream::Error) -> Self {
        use hoard_upstream::Error as E;
        let detail = chain(&error);
        match error {
            E::NotFound { .. } => Self::new(StatusCode::NOT_FOUND, "not-found", detail),
            E::Unsupported { .. } => Self::new(StatusCode::NOT_IMPLEMENTED, "unsupported", detail),
            E::Forbidden { .. } => Self::new(StatusCode::FORBIDDEN, "forbidden", detail),
            E::Unauthorized { .. } => Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail),
            E::Invalid(_) | E::BadRange { .. } => Self::bad_request(detail),
            E::Unreachable { .. } | E::Unavailable { .. } | E::Broken { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, "upstream-unreachable", detail)
            }
            E::DigestMismatch { .. }
            | E::ForeignMismatch { .. }
            | E::ShortBody { .. }
            | E::LongBody { .. }
            | E::Protocol { .. } => Self::new(StatusCode::BAD_GATEWAY, "upstream-invalid", detail),
            E::MissingBlobs { .. } | E::Rejected { .. } | E::Url { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, "upstream-rejected", detail)
            }
            E::Io { .. } => Self::internal(detail),
            E::Cloud(cloud) => {
                use hoard_cloud::Error as C;
                match cloud {
                    C::Refused { .. } => {
                        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
                    }
                    C::Unreachable { .. } => {
                        Self::new(StatusCode::BAD_GATEWAY, "upstream-unreachable", detail)
                    }
                    C::Protocol { .. } => {
                        Self::new(StatusCode::BAD_GATEWAY, "upstream-invalid", detail)
                    }
                    C::Unusable { .. } => {
                        Self::new(StatusCode::BAD_GATEWAY, "upstream-rejected", detail)
                    }
                }
            }
            E::Layout(layout) => {
                use hoard_layout::Error as L;
                match layout {
                    L::NotFound { .. } => Self::new(StatusCode::NOT_FOUND, "not-found", detail),
                    L::MissingBlobs { .. } | L::Rejected { .. } => {
                        Self::new(StatusCode::BAD_GATEWAY, "upstream-rejected", detail)
                    }
                    L::Corrupt { .. } => {
                        Self::new(StatusCode::BAD_GATEWAY, "upstream-invalid", detail)
                    }
                    // Bytes handed to the root: a local file that changed while read.
                    L::WrongBytes { .. } | L::WrongSize { .. } | L::Invalid(_) => {
                        Self::bad_request(detail)
                    }
                    L::Io { .. } => Self::internal(detail),
                }
            }
        }
    }
}

impl From<hoard_store::Error> for ApiError {
    fn from(error: hoard_store::Error) -> Self {
        use hoard_store::Error as E;
        let detail = chain(&error);
        match error {
            E::Invalid(_) => Self::bad_request(detail),
            E::MissingBlobs { .. } => Self::new(StatusCode::CONFLICT, "not-cached", detail),
            E::Refused { .. } => Self::new(StatusCode::FORBIDDEN, "destination-refused", detail),
            E::Destination { .. } | E::ModeUnsupported { .. } => {
                Self::new(StatusCode::BAD_REQUEST, "destination", detail)
            }
            E::DigestMismatch { .. } | E::SizeMismatch { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, "upstream-invalid", detail)
            }
            E::Tampered { .. } => Self::new(StatusCode::CONFLICT, "tampered", detail),
            E::NoRoom { .. } => Self::new(StatusCode::INSUFFICIENT_STORAGE, "no-room", detail),
            _ => Self::internal(detail),
        }
    }
}

impl From<hoard_types::Error> for ApiError {
    fn from(error: hoard_types::Error) -> Self {
        Self::bad_request(error.to_string())
    }
}
