//! The hoard registry: the upstream server a team self-hosts, and that tests run.
//!
//! It speaks the registry protocol (v1) of `docs/registry.md` over HTTP/1.1: resolve a version by
//! alias, `vN` or digest; list versions; blobs with `GET`/`HEAD`/`Range`; dedup with
//! `blobs/missing`; verified `PUT` of blobs; idempotent commits; alias moves. Storage is a
//! `dir://` root ([`hoard_layout::DirRoot`]), so a registry's directory is also an
//! upstream by itself.
//!
//! Layout: `server.rs` (the accept loop, [`run`]), `routes.rs` (dispatch and the artifact
//! routes), `blobs.rs` (the blob routes), `state.rs` (storage, tokens, access checks),
//! `tokens.rs` (the tokens file and roles), `import.rs` (`hoard registry import`), `api.rs` (responses and problem documents),
//! `metrics.rs`.

mod api;
mod blobs;
mod import;
mod metrics;
mod routes;
mod server;
mod state;
mod tokens;

pub use import::{ImportError, import_dir};
pub use server::run;
pub use state::{Limits, State};
pub use tokens::{Role, Tokens, TokensError};
