//! `hoard.toml`: the daemon's settings in a file (`config/hoard.toml` documents every key).
//!
//! Which file is read:
//!
//! 1. `--config FILE` (it must exist);
//! 2. `HOARD_CONFIG` (it must exist);
//! 3. `$XDG_CONFIG_HOME/hoard/hoard.toml` (else `~/.config/hoard/hoard.toml`), if present;
//! 4. none: built-in defaults.
//!
//! A flag (or its environment twin) beats the file, the file beats the default. An unknown
//! key or a bad value is an error naming the key and the file, at start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::env;

/// Every key of `hoard.toml`; all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) socket: Option<PathBuf>,
    pub(crate) cache_dir: Option<PathBuf>,
    pub(crate) upstream: Option<String>,
    #[serde(default, with = "humantime_serde_opt")]
    pub(crate) alias_ttl: Option<Duration>,
    pub(crate) fetch_concurrency: Option<usize>,
    pub(crate) large_blob_mib: Option<u64>,
    pub(crate) range_mib: Option<u64>,
}

/// `"30s"`, `"5m"`: durations as humans write them.
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map(Some).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration ({e}); write e.g. \"30s\""
            ))
        })
    }
}

impl Config {
    /// Loads the file the lookup order above picks.
    pub(crate) fn load(flag: Option<&Path>) -> anyhow::Result<Self> {
        let explicit = flag.map(Path::to_owned).or_else(|| {
            std::env::var_os(env::HOARD_CONFIG)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        if let Some(path) = explicit {
            if !path.is_file() {
                bail!("The config file `{}` does not exist", path.display());
            }
            return Self::read(&path);
        }
        let default = std::env::var_os(env::XDG_CONFIG_HOME)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os(env::HOME).map(|h| PathBuf::from(h).join(".config")))
            .map(|dir| dir.join("hoard/hoard.toml"));
        match default {
            Some(path) if path.is_file() => Self::read(&path),
            _ => Ok(Self::default()),
        }
    }

    pub(crate) fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("Failed to read the config file `{}`", path.display()))?;
        let config: Self = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "Invalid config file `{}`: {}",
                path.display(),
                e.to_string().trim()
            )
        })?;
        if config.fetch_concurrency == Some(0) {
            bail!(
                "Invalid config file `{}`: `fetch_concurrency` must be at least 1",
                path.display()
            );
        }
        if config.range_mib == Some(0) {
            bail!(
                "Invalid config file `{}`: `range_mib` must be at least 1",
                path.display()
            );
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hoard.toml");
        std::fs::write(&path, text).unwrap();
        Config::read(&path)
    }

    #[test]
    fn the_documented_example_parses() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/hoard.toml");
        let config = Config::read(&example).unwrap();
        assert_eq!(config.alias_ttl, Some(Duration::ZERO));
        assert_eq!(config.fetch_concurrency, Some(16));
    }

    #[test]
    fn bad_keys_and_values_name_the_key_and_the_file() {
        for (text, needle) in [
            ("socket_path = \"/x\"", "unknown field `socket_path`"),
            ("alias_ttl = \"soon\"", "`soon` is not a duration"),
            ("fetch_concurrency = \"many\"", "fetch_concurrency"),
            ("fetch_concurrency = 0", "must be at least 1"),
        ] {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(
                e.contains(needle) && e.contains("hoard.toml"),
                "{text}: {e}"
            );
        }
    }
}
