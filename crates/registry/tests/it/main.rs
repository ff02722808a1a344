//! Integration tests of the registry: the real server in-process, spoken to over HTTP.
//!
//! - `common`: start a server on a free port in a temp dir; tokens for every role
//! - `protocol`: every route, Range edge cases, idempotent and concurrent commits, bad input
//! - `roles`: viewer, member, admin, no grant, no token, proof of possession for commits
//! - `client`: `hoard_upstream::RegistryClient` against the real server

mod client;
mod common;
mod protocol;
mod roles;
