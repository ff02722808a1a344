//! The vocabulary of hoard: blob digests, artifact references, manifests and safe relative
//! paths, as every other crate and every upstream sees them.
//!
//! Nothing here does I/O. Everything that arrives as text (a reference a user typed, a
//! manifest an upstream sent) is parsed into one of these types, and the parsers reject
//! what the rest of hoard must never see: a path with `..`, a digest of the wrong length,
//! a manifest whose paths collide. The canonical form of a manifest (and so its digest) is
//! defined in [`manifest`].

pub mod api;
mod digest;
mod error;
pub mod foreign;
pub mod manifest;
mod path;
mod reference;
pub mod registry;
mod text;
mod time;
mod version;

pub use digest::{Digest, ForeignDigest, hex_encode, truncate};
pub use error::Error;
pub use foreign::{ForeignEntry, ForeignVersion};
pub use manifest::{Entry, Manifest, PathPrefix};
pub use path::RelPath;
pub use reference::{
    ArtifactName, ArtifactRef, ProjectName, Selector, check_alias, is_pull_request,
};
pub use text::{error_chain, human_bytes};
pub use time::now_ms;
pub use version::Version;
