//! Every environment variable hoard reads, in one place.

/// Log filter (`tracing_subscriber` syntax); falls back to `RUST_LOG`.
pub const HOARD_LOG: &str = "HOARD_LOG";
pub const RUST_LOG: &str = "RUST_LOG";
/// `registry serve --root` / `registry import --root`.
pub const HOARD_REGISTRY_ROOT: &str = "HOARD_REGISTRY_ROOT";
/// `registry serve --listen`.
pub const HOARD_REGISTRY_LISTEN: &str = "HOARD_REGISTRY_LISTEN";
/// `registry serve --tokens`.
pub const HOARD_REGISTRY_TOKENS: &str = "HOARD_REGISTRY_TOKENS";
/// The daemon's socket (`--socket` of `daemon`, `get`, `ls`, `status`).
pub const HOARD_SOCKET: &str = "HOARD_SOCKET";
/// The cache directory (`daemon --cache-dir`).
pub const HOARD_CACHE_DIR: &str = "HOARD_CACHE_DIR";
/// The upstream URL (`daemon --upstream`).
pub const HOARD_UPSTREAM: &str = "HOARD_UPSTREAM";
/// The fleet tier (`daemon --tier`, `--tier-endpoint-url`).
pub const HOARD_TIER: &str = "HOARD_TIER";
pub const HOARD_TIER_ENDPOINT_URL: &str = "HOARD_TIER_ENDPOINT_URL";
/// The credential for the upstream.
pub const HOARD_TOKEN: &str = "HOARD_TOKEN";
/// Default entity and project for references that leave them out.
pub const HOARD_ENTITY: &str = "HOARD_ENTITY";
pub const HOARD_PROJECT: &str = "HOARD_PROJECT";
/// XDG base directories, for the defaults in `paths.rs`.
pub const XDG_RUNTIME_DIR: &str = "XDG_RUNTIME_DIR";
pub const XDG_CACHE_HOME: &str = "XDG_CACHE_HOME";
pub const XDG_DATA_HOME: &str = "XDG_DATA_HOME";
pub const HOME: &str = "HOME";
/// The Hugging Face cache, as `huggingface_hub` finds it (`get --hf-cache`).
pub const HF_HUB_CACHE: &str = "HF_HUB_CACHE";
pub const HF_HOME: &str = "HF_HOME";
/// The daemon's config file (`daemon --config`).
pub const HOARD_CONFIG: &str = "HOARD_CONFIG";
pub const XDG_CONFIG_HOME: &str = "XDG_CONFIG_HOME";
