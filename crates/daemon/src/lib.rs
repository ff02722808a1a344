//! The hoard daemon: one per machine (or per user), serving jobs over a Unix socket.
//!
//! A job asks "materialize `entity/project/name:alias` (or a path prefix of it) into this
//! directory"; the daemon resolves the reference (immutable versions from its index,
//! aliases from the upstream, with the last answer as a fallback when the upstream is
//! down), fetches the blobs that are not cached — each once, however many jobs ask — and
//! links the files into place. A job can also publish local files as a new version:
//! usable here at once, and committed upstream as soon as the upstream takes it.
//!
//! # Layout
//!
//! - `server.rs`: [`run`], the accept loop on the socket.
//! - `routes.rs`: the socket API (v1) calls, problem documents, NDJSON progress streams.
//! - `daemon.rs`: [`Daemon`]: resolution, selection, fetch-then-materialize.
//! - `fetch.rs`: the fetch engine (coalescing, bounded concurrency, detached fetches).
//! - `foreign.rs`: versions of a foreign upstream (W&B): kept in the index, their files
//!   bound to blobs per request through the `md5:` → blake3 map, fetched when unseen.
//! - `publish.rs`: publishing, and the outbox that takes publishes upstream.
//! - `budget.rs`: the cache budget and eviction; `pins.rs`: pinned versions.
//! - `caller.rs`: the caller's identity (`SO_PEERCRED`) and acting within their rights;
//!   `access.rs`: confirming with the upstream, by the caller's credential, that they may
//!   download what is cached.
//! - `references.rs`: which reference entries are fetched for whom, and from where.
//! - `scrub.rs`: re-hashing every blob in the background at a bounded rate.
//! - `metrics.rs`: `/metrics`.
//! - `error.rs`: [`ApiError`], how store and upstream failures are answered.

mod access;
mod budget;
mod caller;
mod daemon;
mod error;
mod fetch;
mod foreign;
mod metrics;
mod pins;
mod publish;
mod references;
mod routes;
mod scrub;
mod server;

pub use budget::Budget;
pub use daemon::{Daemon, Options};
pub use error::ApiError;
pub use references::ReferencePolicy;
pub use server::{run, run_metrics};
