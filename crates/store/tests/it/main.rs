//! Integration tests of hoard-store: real files in temp directories.
//!
//! - `common`: a store in a temp dir, and manifests of given bytes.
//! - `ingest`: streams, partials, local files, concurrency, a full disk.
//! - `materialize`: bytes, inodes, modes, hostile destinations, tampered blobs.
//! - `reconcile`: the states a crash can leave, arranged on disk, then reopened; a real
//!   SIGKILL during ingest.
//! - `maintain`: eviction and verification.

mod common;
mod ingest;
mod maintain;
mod materialize;
mod reconcile;
