//! hoard's blob store: a content-addressed cache directory and its RocksDB index.
//!
//! A blob is the content of one file, named by its blake3 digest and exec bit
//! ([`BlobKey`]). The store gets bytes in ([`Store::begin`], [`Store::ingest_reader`],
//! [`Store::ingest_files`]) without ever exposing a half-written or unverified blob, makes
//! versions appear in directories ([`Store::materialize`]) without ever writing outside
//! them, and keeps the cache within a budget ([`Store::evict_to`]) and honest
//! ([`Store::verify`]).
//!
//! # Layout
//!
//! - `store.rs`: [`Store`], opening, leases, the tamper check every hand-out goes through.
//! - `layout.rs`: the cache directory's (versioned) layout.
//! - `ingest.rs`: writing blobs: streams, resumable partials, local files, batches;
//!   `parts.rs`: one blob written as parallel parts, hashed as they arrive.
//! - `materialize.rs` and `dest.rs`: link modes, and the symlink-proof destination tree;
//!   `clean.rs`: removing what a destination holds beyond the version; `as_user.rs`: the
//!   thread that makes those changes with another user's rights; `guard.rs`: the places
//!   (the cache, the daemon's socket and config) no destination may be in or around.
//! - `maintain.rs`: eviction and verification.
//! - `verity.rs`: sealing blobs with fs-verity where the filesystem has it.
//! - `reconcile.rs`: repairing index/file disagreements on open.
//! - `index.rs`: the RocksDB index, the only module that uses `rocksdb`; `record.rs`: its
//!   record encodings.
//!
//! The store is synchronous and thread-safe: the daemon calls it from blocking tasks.

mod as_user;
mod clean;
mod dest;
mod error;
mod guard;
mod hf_cache;
mod index;
mod ingest;
mod layout;
mod link_mode;
mod maintain;
mod materialize;
mod parts;
mod reconcile;
mod record;
mod store;
mod sys;
mod tables;
mod verity;

pub use as_user::{AsUser, Identity};
pub use clean::CleanReport;
pub use dest::DestRoot;
pub use error::{Error, Result};
pub use hf_cache::{HfReport, HfSnapshot};
pub use index::Table;
pub use ingest::{Begin, BlobWriter, Ingested, Staged};
pub use layout::Layout;
pub use link_mode::LinkMode;
pub use maintain::{BadBlob, EvictReport, VerifyReport};
pub use materialize::MaterializeReport;
pub use parts::{Part, PartedWriter};
pub use reconcile::ReconcileReport;
pub use record::{AliasRecord, BlobKey, BlobRecord};
pub use store::{Lease, Provenance, Store};
pub use sys::BLOB_MTIME;
pub use tables::{OutboxRecord, PinRecord, Placement};
pub use verity::{Verity, VeritySupport};
