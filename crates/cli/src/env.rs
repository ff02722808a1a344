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
/// The daemon's socket (`--socket` of `daemon`, `get`, `ls`, `status`).
pub(crate) const HOARD_SOCKET: &str = "HOARD_SOCKET";
/// The cache directory (`daemon --cache-dir`).
pub(crate) const HOARD_CACHE_DIR: &str = "HOARD_CACHE_DIR";
/// The upstream URL (`daemon --upstream`).
pub(crate) const HOARD_UPSTREAM: &str = "HOARD_UPSTREAM";
/// The fleet tier (`daemon --tier`, `--tier-endpoint-url`).
pub(crate) const HOARD_TIER: &str = "HOARD_TIER";
pub(crate) const HOARD_TIER_ENDPOINT_URL: &str = "HOARD_TIER_ENDPOINT_URL";
/// The credential for the upstream.
pub(crate) const HOARD_TOKEN: &str = "HOARD_TOKEN";
/// Default entity and project for references that leave them out.
pub(crate) const HOARD_ENTITY: &str = "HOARD_ENTITY";
pub(crate) const HOARD_PROJECT: &str = "HOARD_PROJECT";
/// XDG base directories, for the defaults in `paths.rs`.
pub(crate) const XDG_RUNTIME_DIR: &str = "XDG_RUNTIME_DIR";
pub(crate) const XDG_CACHE_HOME: &str = "XDG_CACHE_HOME";
pub(crate) const XDG_DATA_HOME: &str = "XDG_DATA_HOME";
pub(crate) const HOME: &str = "HOME";
/// The Hugging Face cache, as `huggingface_hub` finds it (`get --hf-cache`).
pub(crate) const HF_HUB_CACHE: &str = "HF_HUB_CACHE";
pub(crate) const HF_HOME: &str = "HF_HOME";
/// The daemon's config file (`daemon --config`).
pub(crate) const HOARD_CONFIG: &str = "HOARD_CONFIG";
pub(crate) const XDG_CONFIG_HOME: &str = "XDG_CONFIG_HOME";
