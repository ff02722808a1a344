//! Integration tests of hoard-upstream.
//!
//! - `faults`: `RegistryClient` against a scripted server that breaks connections, stalls,
//!   answers 5xx/429 or sends wrong bytes
//! - `dir_upstream`: a `dir://` root as an upstream: resolution, verified streams

mod dir_upstream;
mod faults;
