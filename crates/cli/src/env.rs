//! Every environment variable hoard reads, in one place.

/// Log filter (`tracing_subscriber` syntax); falls back to `RUST_LOG`.
pub(crate) const HOARD_LOG: &str = "HOARD_LOG";
pub(crate) const RUST_LOG: &str = "RUST_LOG";
/// `registry serve --root` / `registry import --root`.
pub(crate) const HOARD_REGISTRY_ROOT: &str = "HOARD_REGISTRY_ROOT";
/// `registry serve --listen`.
pub(crate) const HOARD_REGISTRY_LISTEN: &str = "HOARD_REGISTRY_LISTEN";
/// `registry serve --tokens`.
pub(crate) const HOARD_REGISTRY_TOKENS: &str = "HOARD_REGISTRY_TOKENS";
