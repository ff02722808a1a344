//! `hoard daemon`: opens the cache, connects the upstream, serves the socket.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use hoard_daemon::{Daemon, Options};
use hoard_upstream::{ClientOptions, DirRoot, Upstream};

use crate::{env, paths};

#[derive(Args)]
pub(crate) struct DaemonArgs {
    /// The Unix socket to serve [default: `$XDG_RUNTIME_DIR/hoard/hoard.sock`].
    #[arg(long, env = env::HOARD_SOCKET)]
    socket: Option<PathBuf>,
    /// The cache directory [default: `$XDG_CACHE_HOME/hoard`].
    #[arg(long, env = env::HOARD_CACHE_DIR)]
    cache_dir: Option<PathBuf>,
    /// `http(s)://host:port` (a hoard registry) or `dir:///path` [default: the embedded
    /// `dir://$XDG_DATA_HOME/hoard/upstream`].
    #[arg(long, env = env::HOARD_UPSTREAM)]
    upstream: Option<String>,
    /// How long an alias resolution is reused without asking the upstream (e.g. `30s`).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    alias_ttl: Duration,
    /// Blobs fetched at the same time.
    #[arg(long, default_value_t = 16)]
    fetch_concurrency: usize,
    /// Blobs of at least this many MiB are fetched as parallel byte ranges.
    #[arg(long, default_value_t = 64)]
    large_blob_mib: u64,
    /// The size of those ranges, MiB.
    #[arg(long, default_value_t = 16)]
    range_mib: u64,
}

/// Opens the configured upstream; the embedded default is created if missing.
pub(crate) fn open_upstream(url: Option<&str>) -> anyhow::Result<Arc<dyn Upstream>> {
    let options = ClientOptions {
        token: std::env::var(env::HOARD_TOKEN)
            .ok()
            .filter(|t| !t.is_empty()),
        ..ClientOptions::default()
    };
    if let Some(url) = url {
        return Ok(hoard_upstream::open(url, options)?);
    }
    let dir = paths::default_upstream_dir();
    let root = DirRoot::create(&dir)
        .with_context(|| format!("Failed to create the embedded upstream `{}`", dir.display()))?;
    Ok(Arc::new(root))
}

/// Binds the socket: its directory is created private, a stale socket (nobody answers)
/// is replaced, a live one is an error. The socket is 0600: a per-user daemon.
pub(crate) fn bind(socket: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(dir) = socket.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("Failed to create `{}`", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            bail!(
                "Another hoard daemon is already listening on `{}`; stop it first, or use `--socket` for another",
                socket.display()
            );
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("Failed to remove the stale socket `{}`", socket.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("Failed to listen on `{}`", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub(crate) fn run(args: &DaemonArgs) -> anyhow::Result<()> {
    crate::raise_nofile_limit();
    let socket = args.socket.clone().unwrap_or_else(paths::default_socket);
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(paths::default_cache_dir);
    let store = hoard_store::Store::open(&cache_dir)?;
    let upstream = open_upstream(args.upstream.as_deref())?;
    let options = Options {
        alias_ttl: args.alias_ttl,
        fetch_concurrency: args.fetch_concurrency,
        large_blob: args.large_blob_mib << 20,
        range_size: args.range_mib << 20,
        ..Options::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("Failed to start the async runtime")?;
    runtime.block_on(async {
        let listener = bind(&socket)?;
        tracing::info!(
            socket = %socket.display(), cache = %cache_dir.display(), upstream = upstream.describe(),
            "daemon listening"
        );
        let daemon = Arc::new(Daemon::new(store, upstream, options));
        hoard_daemon::run(listener, daemon, crate::registry::shutdown_signal()).await?;
        let _ = std::fs::remove_file(&socket);
        tracing::info!("daemon stopped");
        Ok(())
    })
}
