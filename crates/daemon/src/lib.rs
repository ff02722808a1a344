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
//! [`Daemon`] (`daemon.rs`) is made of parts, each with its own state; none of them
//! imports the daemon:
//!
//! - `resolve.rs`: the resolver: which version a reference names (the index first, then
//!   the fleet tier for immutable versions, aliases within their TTL, the last answer when
//!   the upstream is down).
//! - `fetch/`: the fetch engine (coalescing, bounded concurrency, detached fetches,
//!   ranges, one commit for many blobs) and, in `fetch/tier.rs`, the fleet tier's part in
//!   it (asked first, leases and batches, offers once committed), in `fetch/gather.rs`
//!   the batch requests of a large request's small blobs; `drive.rs` drives one request's
//!   fetches and reports progress.
//! - `outbox.rs`: publishes on their way upstream, with backoff.
//! - `budget.rs`: the cache budget and eviction.
//! - `access.rs`: confirming with the upstream, by the caller's credential, that they may
//!   download what is cached.
//! - `scrub.rs`: re-hashing every blob in the background at a bounded rate.
//! - `metrics.rs`: `/metrics`, rendered from a snapshot the parts hand over.
//!
//! What a request does, over those parts (these modules add `impl Daemon` blocks and
//! import the daemon; the daemon does not import them):
//!
//! - `materialize.rs`: fetch what a selection lacks, then link it into place.
//! - `foreign.rs`: bind a foreign (W&B) version's files to blobs through the `md5:` →
//!   blake3 map, fetching the unseen ones.
//! - `hf_cache.rs`: a Hub version filled into a Hugging Face cache directory.
//! - `publish.rs`: publishing; `pins.rs`: pinned versions.
//! - `routes.rs`: the socket API (v1) calls, problem documents, NDJSON progress streams;
//!   `server.rs`: [`run`], the accept loop on the socket.
//!
//! Shared by all: `version.rs` (what a request resolved to, and which files it selects),
//! `caller.rs` (the caller's identity, `SO_PEERCRED`, and acting within their rights),
//! `references.rs` (which reference entries are fetched for whom, and from where),
//! `runtime.rs` (blocking work, the wall clock), `error.rs` ([`ApiError`], how store and
//! upstream failures are answered).

mod access;
mod budget;
mod caller;
mod daemon;
mod discover;
mod drive;
mod error;
mod fetch;
mod foreign;
mod hf_cache;
mod materialize;
mod metrics;
mod outbox;
mod pins;
mod placements;
mod publish;
mod reachability;
mod references;
mod repair;
mod resolve;
mod routes;
mod runtime;
mod scrub;
mod server;
mod version;

pub use budget::Budget;
pub use daemon::{Daemon, Options};
pub use error::ApiError;
pub use references::ReferencePolicy;
pub use server::{run, run_metrics};
