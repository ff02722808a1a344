use thiserror::Error;

/// Why a piece of text is not a valid hoard value. Each message says what was expected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Error {
    #[error("Invalid digest `{input}`: expected 64 lowercase hex characters (a blake3 digest)")]
    Digest { input: String },

    #[error(
        "Invalid foreign digest `{input}`: expected `md5:<32 hex>`, `sha256:<64 hex>` or `etag:<text>`"
    )]
    ForeignDigest { input: String },

    #[error("Invalid path `{input}`: {reason}")]
    Path { input: String, reason: &'static str },

    #[error(
        "Invalid artifact reference `{input}`: {reason}; expected \
         `[[entity/]project/]name[:alias|:vN]` or `[[entity/]project/]name@<manifest digest>`"
    )]
    Reference { input: String, reason: String },

    #[error("Invalid project `{input}`: {reason}; expected `entity/project` or `project`")]
    Project { input: String, reason: String },

    #[error("Invalid manifest: {reason}")]
    Manifest { reason: String },
}
