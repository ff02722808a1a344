//! What hoard's two HTTP servers share: the registry (TCP) and the daemon (a Unix socket)
//! differ in their listener and their routes, not in how they serve connections, answer
//! JSON and problems, read request bodies, or count requests.
//!
//! Layout: `serve.rs` (the accept loop, [`serve`]; each request carries the Unix peer's
//! credentials as a [`Peer`] extension), `body.rs` (responses, problem
//! documents, bounded JSON request bodies), `counts.rs` (requests by route and status for
//! `/metrics`).

mod body;
mod counts;
mod serve;

pub use body::{Body, BodyError, empty, full, json, problem, read_json};
pub use counts::RequestCounts;
pub use hoard_types::error_chain;
pub use serve::{DRAIN, Listener, Peer, serve};
