//! Default locations, when neither a flag nor its environment twin names one.
//!
//! Lookup order, for each:
//!
//! 1. the flag (`--socket`, `--cache-dir`, `--upstream`);
//! 2. its environment twin (`HOARD_SOCKET`, `HOARD_CACHE_DIR`, `HOARD_UPSTREAM`);
//! 3. the XDG default below;
//! 4. a fallback under `$HOME` (or `/tmp` for the socket) when the XDG variable is unset.

use std::path::PathBuf;

use crate::env;

fn var(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn home() -> PathBuf {
    var(env::HOME).unwrap_or_else(|| PathBuf::from("/"))
}

/// `$XDG_RUNTIME_DIR/hoard/hoard.sock`, else `/tmp/hoard-$UID/hoard.sock`.
pub fn default_socket() -> PathBuf {
    var(env::XDG_RUNTIME_DIR)
        .map_or_else(
            || {
                let uid = rustix::process::getuid().as_raw();
                PathBuf::from(format!("/tmp/hoard-{uid}"))
            },
            |dir| dir.join("hoard"),
        )
        .join("hoard.sock")
}

/// `$XDG_CACHE_HOME/hoard`, else `~/.cache/hoard`.
pub fn default_cache_dir() -> PathBuf {
    var(env::XDG_CACHE_HOME)
        .unwrap_or_else(|| home().join(".cache"))
        .join("hoard")
}

/// The Hugging Face cache as `huggingface_hub` finds it: `$HF_HUB_CACHE`, else
/// `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn default_hf_cache() -> PathBuf {
    var(env::HF_HUB_CACHE).unwrap_or_else(|| {
        var(env::HF_HOME)
            .unwrap_or_else(|| home().join(".cache/huggingface"))
            .join("hub")
    })
}

/// The embedded default upstream: `dir://$XDG_DATA_HOME/hoard/upstream`, else
/// `~/.local/share/hoard/upstream`.
pub fn default_upstream_dir() -> PathBuf {
    var(env::XDG_DATA_HOME)
        .unwrap_or_else(|| home().join(".local/share"))
        .join("hoard/upstream")
}
