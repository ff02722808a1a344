//! The `dir://` layout and local inputs: what the hoard registry stores, and what a new
//! version is made of.
//!
//! The layout ([`DirRoot`]) is the registry server's storage and, read directly, an
//! upstream of its own (`dir:///path`, the embedded default): `hoard-upstream` serves it
//! to the daemon, `hoard-registry` serves it over HTTP. Both read it the same way, so its
//! rules live here once, with no HTTP or cloud code (a registry built from this crate
//! links neither reqwest nor the credential chains). The local-input rules ([`local`]) are
//! shared by `hoard registry import` and `hoard publish`.
//!
//! Layout: `dir.rs` (the layout: blobs, versions, aliases, crash-safe writes), `local.rs`
//! (files and trees given on a command line), `error.rs` ([`Error`]).

pub mod dir;
mod error;
pub mod local;

pub use dir::DirRoot;
pub use error::Error;
