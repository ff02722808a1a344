//! Integration tests of hoard-upstream.
//!
//! - `faults`: `RegistryClient` against a scripted server that breaks connections, stalls,
//!   answers 5xx/429 or sends wrong bytes
//! - `dir`: the `dir://` layout: pinned paths, validation of what is read back, commits

mod dir;
mod faults;
