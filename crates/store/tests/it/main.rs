//! Integration tests of hoard-store: real files in temp directories.
//!
//! - `common`: a store in a temp dir, and manifests of given bytes.
//! - `clean`: removing what a destination holds beyond a version, never outside it.
//! - `index`: versions, aliases and foreign digests kept across restarts.
//! - `ingest`: streams, partials, local files, concurrency, a full disk.
//! - `materialize`: bytes, inodes, modes, hostile destinations, tampered blobs.
//! - `reconcile`: the states a crash can leave, arranged on disk, then reopened; a real
//!   SIGKILL during ingest.
//! - `maintain`: eviction and verification.

mod clean;
mod common;
mod index;
mod ingest;
mod maintain;
mod materialize;
mod reconcile;
