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

use hoard_cli::env;

/// Every key of `hoard.toml`; all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) socket: Option<PathBuf>,
    pub(crate) cache_dir: Option<PathBuf>,
    /// A URL, or the name of one of `upstreams`.
    pub(crate) upstream: Option<String>,
    /// Named upstreams; the one with `default = true` serves unless `upstream` says.
    #[serde(default)]
    pub(crate) upstreams: std::collections::BTreeMap<String, NamedUpstream>,
    #[serde(default, with = "humantime_serde_opt")]
    pub(crate) alias_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub(crate) access_ttl: Option<Duration>,
    /// How long connecting to the upstream may take.
    #[serde(default, with = "humantime_serde_opt")]
    pub(crate) upstream_connect_timeout: Option<Duration>,
    /// A transfer that delivers nothing for this long counts as broken (and resumes).
    #[serde(default, with = "humantime_serde_opt")]
    pub(crate) upstream_stall_timeout: Option<Duration>,
    pub(crate) fetch_concurrency: Option<usize>,
    pub(crate) large_blob_mib: Option<u64>,
    pub(crate) range_mib: Option<u64>,
    /// `"200 GiB"`, `"500MB"`, or `"40%"` of the cache's filesystem.
    pub(crate) max_size: Option<String>,
    /// A loopback `host:port` that also serves `/metrics`.
    pub(crate) metrics_listen: Option<String>,
    pub(crate) require_caller_token: Option<bool>,
    /// `"0600"` (per-user) or `"0660"` (system daemon, with `socket_group`).
    pub(crate) socket_mode: Option<String>,
    pub(crate) socket_group: Option<String>,
    pub(crate) high_watermark: Option<f64>,
    pub(crate) low_watermark: Option<f64>,
    /// Seal blobs with fs-verity: `auto`, `on` or `off`.
    pub(crate) fs_verity: Option<FsVerity>,
    /// Origins (`https://host`, `s3://bucket`, `*`) the daemon fetches reference entries
    /// from for other users than its own; default: the upstream's own origin.
    pub(crate) reference_hosts: Option<Vec<String>>,
    /// The background scrub's rate: `"16MiB/s"` or `"off"`.
    pub(crate) scrub_rate: Option<String>,
    /// `[tier]`: the fleet tier on an S3-compatible store.
    pub(crate) tier: Option<TierSection>,
    /// The file these settings came from (none: the defaults).
    #[serde(skip)]
    pub(crate) source: Option<PathBuf>,
}

impl Config {
    /// `scrub_rate`, parsed.
    pub(crate) fn scrub_rate(&self) -> anyhow::Result<Option<hoard_cli::values::Rate>> {
        self.scrub_rate
            .as_deref()
            .map(hoard_cli::values::parse_rate)
            .transpose()
            .map_err(|e| anyhow::anyhow!("`scrub_rate`: {e}"))
    }

    /// `reference_hosts` as the daemon applies it.
    pub(crate) fn references(&self) -> anyhow::Result<Option<hoard_daemon::ReferencePolicy>> {
        self.reference_hosts
            .as_deref()
            .map(|hosts| hoard_daemon::ReferencePolicy::new(Some(hosts), ""))
            .transpose()
            .map_err(|e| anyhow::anyhow!(e))
    }
}

/// Whether blobs are sealed with fs-verity (read at start, not on reload).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FsVerity {
    /// Where the cache's filesystem has it, by a daemon that serves other users (run as
    /// root, `require_caller_token`, or a socket shared with a group).
    #[default]
    Auto,
    /// Always: the daemon does not start on a filesystem without it.
    On,
    Off,
}

/// `[tier]` (see `docs/fleet.md`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TierSection {
    /// `s3://BUCKET/PREFIX`.
    pub(crate) url: String,
    /// An S3-compatible server (`http://garage:3900`); none: AWS.
    pub(crate) endpoint_url: Option<String>,
    pub(crate) region: Option<String>,
    /// Path-style requests; default: yes with `endpoint_url`, no on AWS.
    pub(crate) path_style: Option<bool>,
}

impl TierSection {
    /// The tier these settings name, with a flag's `url` or `endpoint_url` over theirs.
    pub(crate) fn to_config(
        &self,
        url: Option<&str>,
        endpoint_url: Option<&str>,
    ) -> hoard_upstream::TierConfig {
        hoard_upstream::TierConfig {
            url: url.unwrap_or(&self.url).to_owned(),
            endpoint_url: endpoint_url
                .map(str::to_owned)
                .or_else(|| self.endpoint_url.clone()),
            region: self.region.clone(),
            path_style: self.path_style,
        }
    }
}

/// `[upstreams.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NamedUpstream {
    /// `hoard` (a registry), `dir` (a `dir://` root), `wandb` (Weights & Biases) or `hf`
    /// (the Hugging Face Hub).
    pub(crate) kind: String,
    /// For `hoard`: `http(s)://host:port`; for `wandb`, the server (default:
    /// `WANDB_BASE_URL`, else `https://api.wandb.ai`).
    pub(crate) url: Option<String>,
    /// For `dir`: an absolute path.
    pub(crate) path: Option<PathBuf>,
    #[serde(default)]
    pub(crate) default: bool,
}

impl Config {
    /// `high_watermark` and `low_watermark`, with their defaults.
    pub(crate) fn watermarks(&self) -> (f64, f64) {
        (
            self.high_watermark
                .unwrap_or(hoard_daemon::Budget::DEFAULT_HIGH),
            self.low_watermark
                .unwrap_or(hoard_daemon::Budget::DEFAULT_LOW),
        )
    }

    /// The upstream URL to use: `chosen` (a flag, env or the `upstream` key: a URL or the
    /// name of one of `upstreams`), else the named upstream marked default (or the only
    /// one); `None` for the embedded default.
    pub(crate) fn upstream_url(&self, chosen: Option<&str>) -> anyhow::Result<Option<String>> {
        let named = |name: &str| -> anyhow::Result<String> {
            let upstream = self.upstreams.get(name).ok_or_else(|| {
                anyhow::anyhow!(
                    "No upstream `{name}`: `upstream` is a URL (http(s)://… or dir:///…) or one of the names under [upstreams] ({})",
                    self.upstreams.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
            upstream.url(name)
        };
        if let Some(chosen) = chosen {
            if chosen.contains("://")
                || (matches!(chosen, "wandb" | "hf") && !self.upstreams.contains_key(chosen))
            {
                return Ok(Some(chosen.to_owned()));
            }
            return named(chosen).map(Some);
        }
        let defaults: Vec<&String> = self
            .upstreams
            .iter()
            .filter(|(_, u)| u.default)
            .map(|(name, _)| name)
            .collect();
        match (defaults.as_slice(), self.upstreams.len()) {
            ([one], _) => named(one).map(Some),
            ([], 0) => Ok(None),
            ([], 1) => named(self.upstreams.keys().next().expect("one upstream")).map(Some),
            ([], _) => bail!("Several [upstreams] and none marked `default = true`"),
            (many, _) => bail!(
                "Only one upstream may be `default = true`, not {}",
                many.iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

impl NamedUpstream {
    fn url(&self, name: &str) -> anyhow::Result<String> {
        match self.kind.as_str() {
            "hoard" => match &self.url {
                Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                    Ok(url.clone())
                }
                _ => bail!(
                    "[upstreams.{name}]: a `hoard` upstream needs `url = \"http(s)://host:port\"`"
                ),
            },
            "dir" => match &self.path {
                Some(path) if path.is_absolute() => Ok(format!("dir://{}", path.display())),
                _ => bail!("[upstreams.{name}]: a `dir` upstream needs an absolute `path`"),
            },
            "wandb" => match &self.url {
                None => Ok("wandb".to_owned()),
                Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                    Ok(format!("wandb+{}", url.trim_end_matches('/')))
                }
                Some(_) => bail!(
                    "[upstreams.{name}]: a `wandb` upstream's `url` is the server, `https://host[:port]`"
                ),
            },
            "hf" => match &self.url {
                None => Ok("hf".to_owned()),
                Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                    Ok(format!("hf+{}", url.trim_end_matches('/')))
                }
                Some(_) => bail!(
                    "[upstreams.{name}]: an `hf` upstream's `url` is the Hub's endpoint, `https://host[:port]`"
                ),
            },
            other => {
                bail!(
                    "[upstreams.{name}]: unknown kind `{other}`; expected hoard, dir, wandb or hf"
                )
            }
        }
    }
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
        let mut config: Self = toml::from_str(&text).map_err(|e| {
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
        for (name, upstream) in &config.upstreams {
            upstream
                .url(name)
                .map_err(|e| anyhow::anyhow!("Invalid config file `{}`: {e}", path.display()))?;
        }
        config
            .upstream_url(config.upstream.as_deref())
            .map_err(|e| anyhow::anyhow!("Invalid config file `{}`: {e}", path.display()))?;
        if let Some(size) = &config.max_size {
            size.parse::<hoard_cli::values::Size>().map_err(|e| {
                anyhow::anyhow!("Invalid config file `{}`: `max_size`: {e}", path.display())
            })?;
        }
        let (high, low) = config.watermarks();
        hoard_daemon::Budget::check_watermarks(high, low)
            .map_err(|e| anyhow::anyhow!("Invalid config file `{}`: {e}", path.display()))?;
        if config.range_mib == Some(0) {
            bail!(
                "Invalid config file `{}`: `range_mib` must be at least 1",
                path.display()
            );
        }
        config
            .references()
            .with_context(|| format!("Invalid config file `{}`", path.display()))?;
        config
            .scrub_rate()
            .with_context(|| format!("Invalid config file `{}`", path.display()))?;
        config.source = Some(path.to_owned());
        Ok(config)
    }
}

/// `hoard config check [FILE]`: loads the file like the daemon would and checks what the
/// daemon checks at start without opening anything.
pub(crate) fn check(file: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    if let Some(socket) = &config.socket {
        hoard_cli::values::check_socket_path(socket)?;
    }
    if let Some(mode) = &config.socket_mode {
        hoard_cli::values::parse_mode(mode)?;
    }
    if let Some(url) = config.upstream_url(config.upstream.as_deref())? {
        url.parse::<hoard_upstream::UpstreamUrl>().with_context(|| {
            format!("Invalid config: `upstream` must be an upstream URL or a name under [upstreams], not `{url}`")
        })?;
    }
    if let Some(addr) = &config.metrics_listen {
        hoard_cli::values::metrics_addr(addr).context("Invalid config: `metrics_listen`")?;
    }
    if let Some(tier) = &config.tier {
        tier.to_config(None, None)
            .check()
            .context("Invalid config: `[tier]`")?;
    }
    match &config.source {
        Some(path) => hoard_cli::process::out(&format!("`{}` is valid", path.display())),
        None => hoard_cli::process::out(
            "no config file (none given, no HOARD_CONFIG, no `$XDG_CONFIG_HOME/hoard/hoard.toml`): the defaults apply",
        ),
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
        let example = Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join("../../config/hoard.toml");
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
            ("max_size = \"lots\"", "`max_size`: `lots` is not a size"),
            ("max_size = \"12 parsecs\"", "`max_size`"),
            ("max_size = \"150%\"", "at most 100%"),
            (
                "high_watermark = 1.5",
                "`high_watermark` must be a fraction",
            ),
        ] {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(
                e.contains(needle) && e.contains("hoard.toml"),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn named_upstreams_resolve_to_urls() {
        let config = parse(
            "[upstreams.team]\nkind = \"hoard\"\nurl = \"http://registry:7700\"\ndefault = true\n\
             [upstreams.local]\nkind = \"dir\"\npath = \"/data/hoard\"\n",
        )
        .unwrap();
        assert_eq!(
            config.upstream_url(None).unwrap().as_deref(),
            Some("http://registry:7700")
        );
        assert_eq!(
            config.upstream_url(Some("local")).unwrap().as_deref(),
            Some("dir:///data/hoard")
        );
        assert_eq!(
            config.upstream_url(Some("dir:///x")).unwrap().as_deref(),
            Some("dir:///x")
        );
        let e = format!("{:#}", config.upstream_url(Some("nope")).unwrap_err());
        assert!(
            e.contains("No upstream `nope`") && e.contains("local, team"),
            "{e}"
        );
        assert_eq!(parse("").unwrap().upstream_url(None).unwrap(), None);
        let hub =
            parse("[upstreams.hub]\nkind = \"hf\"\nurl = \"https://hub.example/\"\n").unwrap();
        assert_eq!(
            hub.upstream_url(None).unwrap().as_deref(),
            Some("hf+https://hub.example")
        );
        assert_eq!(
            parse("")
                .unwrap()
                .upstream_url(Some("hf"))
                .unwrap()
                .as_deref(),
            Some("hf")
        );
        let bad = parse("[upstreams.hub]\nkind = \"hf\"\nurl = \"ftp://x\"\n");
        assert!(format!("{:#}", bad.unwrap_err()).contains("Hub's endpoint"));
    }

    #[test]
    fn bad_named_upstreams_are_refused_at_start() {
        for (text, needle) in [
            (
                "[upstreams.w]\nkind = \"wandb\"\nurl = \"api.wandb.ai\"\n",
                "`url` is the server",
            ),
            ("[upstreams.x]\nkind = \"ftp\"\n", "unknown kind `ftp`"),
            ("[upstreams.x]\nkind = \"hoard\"\n", "needs `url"),
            (
                "[upstreams.x]\nkind = \"dir\"\npath = \"rel\"\n",
                "absolute `path`",
            ),
            (
                "[upstreams.a]\nkind = \"dir\"\npath = \"/a\"\n[upstreams.b]\nkind = \"dir\"\npath = \"/b\"\n",
                "none marked `default = true`",
            ),
            ("upstream = \"other\"\n", "No upstream `other`"),
        ] {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(
                e.contains(needle) && e.contains("hoard.toml"),
                "{text}: {e}"
            );
        }
    }
}
