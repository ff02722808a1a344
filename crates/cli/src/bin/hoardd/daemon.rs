//! `hoard daemon`: opens the cache, connects the upstream, serves the socket.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use hoard_daemon::{Budget, Daemon, Options};
use hoard_layout::DirRoot;
use hoard_upstream::{ClientOptions, Upstream};

use crate::config::FsVerity;
use hoard_cli::values::{Rate, Size, check_socket_path, parse_mode, parse_rate};
use hoard_cli::{env, paths};

#[derive(Args, Clone)]
pub(crate) struct DaemonArgs {
    /// The Unix socket to serve [default: `$XDG_RUNTIME_DIR/hoard/hoard.sock`].
    #[arg(long, env = env::HOARD_SOCKET)]
    socket: Option<PathBuf>,
    /// The cache directory [default: `$XDG_CACHE_HOME/hoard`].
    #[arg(long, env = env::HOARD_CACHE_DIR)]
    cache_dir: Option<PathBuf>,
    /// `http(s)://host:port` (a hoard registry), `dir:///path`, `wandb`, `hf` (the Hugging
    /// Face Hub at `HF_ENDPOINT`), or the name of one of the config's `[upstreams]`
    /// [default: the config's default upstream, else the embedded
    /// `dir://$XDG_DATA_HOME/hoard/upstream`].
    #[arg(long, env = env::HOARD_UPSTREAM)]
    upstream: Option<String>,
    /// How long an alias resolution is reused without asking the upstream (e.g. `30s`)
    /// [default: `0s`].
    #[arg(long, value_parser = humantime::parse_duration)]
    alias_ttl: Option<Duration>,
    /// Serve cached files only to callers who send their own credential (`HOARD_TOKEN` on
    /// their side): for a system daemon shared by several users.
    #[arg(long)]
    require_caller_token: bool,
    /// How long the upstream's confirmation that a caller's credential may download a
    /// version is reused (e.g. `60s`) [default: `60s`].
    #[arg(long, value_parser = humantime::parse_duration)]
    access_ttl: Option<Duration>,
    /// Blobs fetched at the same time [default: 16].
    #[arg(long, value_parser = at_least_one)]
    fetch_concurrency: Option<usize>,
    /// Blobs of at least this many MiB are fetched as parallel byte ranges [default: 64].
    #[arg(long)]
    large_blob_mib: Option<u64>,
    /// The size of those ranges, MiB, rounded down to a power of two [default: 16].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    range_mib: Option<u64>,
    /// The socket's mode: `0600` for a per-user daemon, `0660` (with `--socket-group`) for a
    /// system daemon that serves a group [default: 0600].
    #[arg(long)]
    socket_mode: Option<String>,
    /// The group that may use the socket (a name or a number), e.g. `hoard`.
    #[arg(long)]
    socket_group: Option<String>,
    /// Also serve `/metrics` on this loopback TCP address (e.g. `127.0.0.1:9477`).
    #[arg(long)]
    metrics_listen: Option<String>,
    /// The cache budget: `200GiB`, `500MB`, or `40%` of the cache's filesystem
    /// [default: unbounded].
    #[arg(long, allow_hyphen_values = true, value_parser = |s: &str| s.parse::<Size>())]
    max_size: Option<Size>,
    /// Re-hash every blob in the background at this rate, to find bytes that rotted on
    /// disk: `16MiB/s`, or `off` [default: 16MiB/s].
    #[arg(long, value_parser = parse_rate)]
    scrub_rate: Option<Rate>,
    /// Seal blobs with fs-verity, so nobody (not even root) can change their bytes
    /// [default: auto].
    #[arg(long, value_enum)]
    fs_verity: Option<FsVerity>,
    /// The fleet tier, `s3://BUCKET/PREFIX` on an S3-compatible store that every box of a
    /// fleet reads before the upstream and fills after it (see docs/fleet.md), or `off`
    /// [default: the config's `[tier]`, else none]. Credentials: the AWS settings.
    #[arg(long, env = env::HOARD_TIER)]
    tier: Option<String>,
    /// The tier's S3-compatible server, `http(s)://host:port` [default: the config's
    /// `[tier] endpoint_url`, else AWS].
    #[arg(long, env = env::HOARD_TIER_ENDPOINT_URL)]
    tier_endpoint_url: Option<String>,
    /// A `hoard.toml` (see `config/hoard.toml`) [default: `$XDG_CONFIG_HOME/hoard/hoard.toml`
    /// if present].
    #[arg(long, env = env::HOARD_CONFIG)]
    config: Option<PathBuf>,
}

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{text}` is not a number of at least 1")),
    }
}

/// Opens the configured upstream; the embedded default is created if missing.
pub(crate) fn open_upstream(
    url: Option<&str>,
    config: &crate::config::Config,
) -> anyhow::Result<Upstream> {
    let defaults = ClientOptions::default();
    let options = ClientOptions {
        token: std::env::var(env::HOARD_TOKEN)
            .ok()
            .filter(|t| !t.is_empty()),
        connect_timeout: config
            .upstream_connect_timeout
            .unwrap_or(defaults.connect_timeout),
        stall_timeout: config
            .upstream_stall_timeout
            .unwrap_or(defaults.stall_timeout),
        ..defaults
    };
    if let Some(url) = url {
        return Ok(hoard_upstream::open(url, options)?);
    }
    let dir = paths::default_upstream_dir();
    let root = DirRoot::create(&dir)
        .with_context(|| format!("Failed to create the embedded upstream `{}`", dir.display()))?;
    Ok(Upstream::publishing(Arc::new(root)))
}

/// The listening socket systemd passed (socket activation: `LISTEN_PID` is this process,
/// `LISTEN_FDS` is 1, the socket is descriptor 3), if any.
fn inherited_listener() -> anyhow::Result<Option<std::os::unix::net::UnixListener>> {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    if var("LISTEN_PID") != Some(std::process::id()) {
        return Ok(None);
    }
    match var("LISTEN_FDS").unwrap_or(0) {
        0 => return Ok(None),
        1 => {}
        n => bail!(
            "systemd passed {n} sockets; hoard serves exactly one (its socket unit should have one ListenStream)"
        ),
    }
    // SAFETY: under socket activation systemd hands descriptor 3 to this process (checked
    // with LISTEN_PID) and nothing else in the process owns it; it is checked to be a
    // socket before it is used.
    #[expect(
        unsafe_code,
        reason = "adopting the descriptor systemd passed (sd_listen_fds)"
    )]
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(3) };
    let kind = rustix::fs::fstat(&fd).map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode));
    if kind.ok() != Some(rustix::fs::FileType::Socket) {
        bail!("systemd socket activation: descriptor 3 is not a socket");
    }
    let listener = std::os::unix::net::UnixListener::from(fd);
    listener.set_nonblocking(true)?;
    Ok(Some(listener))
}

/// Tells systemd (`Type=notify`) that the daemon is ready, when it runs under it.
fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| -> std::io::Result<()> {
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(b"READY=1", &addr)?;
        } else {
            socket.send_to(b"READY=1", &path)?;
        }
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot notify systemd that the daemon is ready");
    }
}

/// Binds the metrics address: loopback only (node exporters and scrapers on this host).
async fn bind_metrics(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let parsed = hoard_cli::values::metrics_addr(addr)?;
    tokio::net::TcpListener::bind(parsed)
        .await
        .with_context(|| format!("Failed to listen on `{addr}` for /metrics"))
}

/// Binds the socket: its directory is created private, a stale socket (nobody answers)
/// is replaced, a live one is an error. The socket is 0600: a per-user daemon.
pub(crate) fn bind(socket: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    check_socket_path(socket)?;
    // A bare file name (`hoard.sock`) has the empty path as its parent: the current
    // directory, which exists.
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("Failed to create `{}`", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("Failed to make `{}` private", dir.display()))?;
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
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("Failed to make `{}` private", socket.display()))?;
    Ok(listener)
}

/// Opens the socket to a group (a system daemon: mode 0660, group `hoard`): its directory
/// becomes searchable by the group too.
fn share_socket(socket: &Path, mode: u32, group: Option<&str>) -> anyhow::Result<()> {
    let gid = group.map(group_id).transpose()?;
    if let Some(gid) = gid {
        for path in [Some(socket), socket.parent()].into_iter().flatten() {
            rustix::fs::chown(path, None, Some(rustix::fs::Gid::from_raw(gid)))
                .with_context(|| format!("Failed to give `{}` to group {gid}", path.display()))?;
        }
    }
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode))?;
    if mode & 0o077 != 0
        && let Some(dir) = socket.parent()
    {
        let group_search = if mode & 0o070 != 0 { 0o050 } else { 0 };
        let other_search = if mode & 0o007 != 0 { 0o005 } else { 0 };
        std::fs::set_permissions(
            dir,
            std::fs::Permissions::from_mode(0o700 | group_search | other_search),
        )?;
    }
    Ok(())
}

/// A group by name (from `/etc/group`) or number.
fn group_id(group: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let text = std::fs::read_to_string("/etc/group").context("Failed to read /etc/group")?;
    text.lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next() == Some(group)).then(|| fields.nth(1)?.parse().ok())?
        })
        .with_context(|| format!("No group `{group}` in /etc/group"))
}

/// The cache budget from `--max-size` or the config file, with its watermarks.
fn budget(
    args: &DaemonArgs,
    config: &crate::config::Config,
    cache_dir: &Path,
) -> anyhow::Result<Option<Budget>> {
    let size = match (args.max_size, &config.max_size) {
        (Some(size), _) => size,
        (None, Some(text)) => text.parse::<Size>().map_err(anyhow::Error::msg)?,
        (None, None) => return Ok(None),
    };
    let max_bytes = match size {
        Size::Bytes(bytes) => bytes,
        Size::Share(share) => {
            let fs = rustix::fs::statvfs(cache_dir).with_context(|| {
                format!(
                    "Failed to measure the filesystem of `{}`",
                    cache_dir.display()
                )
            })?;
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "a share of a byte count, rounded down"
            )]
            let bytes = ((fs.f_blocks * fs.f_frsize) as f64 * share) as u64;
            bytes
        }
    };
    if max_bytes == 0 {
        bail!("Invalid cache budget: `max_size` must be more than 0 bytes");
    }
    let (high, low) = config.watermarks();
    let budget = Budget::new(max_bytes, high, low)
        .map_err(|e| anyhow::anyhow!("Invalid cache budget: {e}"))?;
    Ok(Some(budget))
}

/// Decides whether blobs get sealed with fs-verity: `auto` seals where the cache's
/// filesystem has it, for a daemon that serves other users; `on` insists.
fn seal_blobs(store: &hoard_store::Store, setting: FsVerity, shared: bool) -> anyhow::Result<()> {
    let sealing = verity(store, setting, shared)?;
    tracing::info!(fs_verity = ?sealing, "blob sealing");
    store.set_verity(sealing);
    Ok(())
}

fn verity(
    store: &hoard_store::Store,
    setting: FsVerity,
    shared: bool,
) -> anyhow::Result<hoard_store::Verity> {
    use hoard_store::{Verity, VeritySupport};
    match setting {
        FsVerity::Off => return Ok(Verity::Off("`fs_verity = \"off\"`".to_owned())),
        FsVerity::Auto if !shared => {
            return Ok(Verity::Off(
                "a per-user daemon (`fs_verity = \"on\"` seals its blobs too)".to_owned(),
            ));
        }
        FsVerity::Auto | FsVerity::On => {}
    }
    let missing = match store.probe_verity()? {
        VeritySupport::Supported => return Ok(Verity::Seal),
        VeritySupport::Unsupported => "the cache's filesystem has no fs-verity (on ext4: `tune2fs -O verity` on the unmounted device, with a kernel built with CONFIG_FS_VERITY)".to_owned(),
        VeritySupport::Failed(e) => format!("sealing a test file failed: {e}"),
    };
    if setting == FsVerity::On {
        bail!("`fs_verity = \"on\"`, but {missing}; set it to `auto` or `off` to run without");
    }
    Ok(Verity::Off(missing))
}

/// The fleet tier the flags or the file name, checked; `None` for none (or `--tier off`).
fn tier_config(
    args: &DaemonArgs,
    config: &crate::config::Config,
) -> anyhow::Result<Option<hoard_upstream::TierConfig>> {
    let endpoint = args.tier_endpoint_url.as_deref();
    let tier = match (args.tier.as_deref(), &config.tier) {
        (Some("off"), _) | (None, None) => return Ok(None),
        (url, Some(section)) => section.to_config(url, endpoint),
        (Some(url), None) => hoard_upstream::TierConfig {
            url: url.to_owned(),
            endpoint_url: endpoint.map(str::to_owned),
            region: None,
            path_style: None,
        },
    };
    tier.check().context("Invalid `--tier` or `[tier]`")?;
    Ok(Some(tier))
}

/// The fleet tier, started (inside the runtime: its upload queue is a task).
fn start_tier(
    tier: Option<&hoard_upstream::TierConfig>,
    upstream: &Upstream,
) -> anyhow::Result<Option<Arc<hoard_upstream::Tier>>> {
    let Some(tier) = tier else {
        return Ok(None);
    };
    let tier = hoard_upstream::Tier::start(tier, &upstream.describe())
        .context("Cannot use the fleet tier")?;
    tracing::info!(tier = tier.describe(), "fleet tier");
    Ok(Some(tier))
}

/// The daemon's settings: flags (and their env twins) beat the file, the file beats the
/// defaults. Used at start and again on SIGHUP.
fn settings(
    args: &DaemonArgs,
    config: &crate::config::Config,
    cache_dir: &Path,
) -> anyhow::Result<Options> {
    let budget = budget(args, config, cache_dir)?;
    let defaults = Options::default();
    Ok(Options {
        alias_ttl: args
            .alias_ttl
            .or(config.alias_ttl)
            .unwrap_or(defaults.alias_ttl),
        fetch_concurrency: args
            .fetch_concurrency
            .or(config.fetch_concurrency)
            .unwrap_or(defaults.fetch_concurrency),
        large_blob: args
            .large_blob_mib
            .or(config.large_blob_mib)
            .map_or(defaults.large_blob, |m| m << 20),
        range_size: args
            .range_mib
            .or(config.range_mib)
            .map_or(defaults.range_size, |m| m << 20),
        budget,
        access_ttl: args
            .access_ttl
            .or(config.access_ttl)
            .unwrap_or(defaults.access_ttl),
        require_caller_token: args.require_caller_token
            || config.require_caller_token.unwrap_or(false),
        references: config.references()?,
        scrub_rate: match args.scrub_rate.or(config.scrub_rate()?) {
            Some(Rate::Off) => None,
            Some(Rate::PerSecond(n)) => Some(n),
            None => defaults.scrub_rate,
        },
        ..defaults
    })
}

pub(crate) fn run(args: &DaemonArgs) -> anyhow::Result<()> {
    hoard_cli::process::raise_nofile_limit();
    bound_malloc_arenas();
    let config = crate::config::Config::load(args.config.as_deref())?;
    // Absolute, so that the log names it fully and its directory is a real one.
    let socket = std::path::absolute(
        args.socket
            .clone()
            .or(config.socket.clone())
            .unwrap_or_else(paths::default_socket),
    )
    .context("Failed to find the current directory for a relative `socket`")?;
    // Settings that need nothing opened are checked before the cache is touched.
    let metrics_listen = args
        .metrics_listen
        .clone()
        .or(config.metrics_listen.clone());
    if let Some(addr) = &metrics_listen {
        hoard_cli::values::metrics_addr(addr)?;
    }
    let socket_mode = match args.socket_mode.clone().or(config.socket_mode.clone()) {
        Some(text) => parse_mode(&text)?,
        None => 0o600,
    };
    let cache_dir = args
        .cache_dir
        .clone()
        .or(config.cache_dir.clone())
        .unwrap_or_else(paths::default_cache_dir);
    let store = hoard_store::Store::open(&cache_dir)?;
    let mut options = settings(args, &config, &cache_dir)?;
    let url = config.upstream_url(args.upstream.as_deref().or(config.upstream.as_deref()))?;
    let upstream = open_upstream(url.as_deref(), &config)?;
    store.bind_upstream(&upstream.describe())?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("Failed to start the async runtime")?;
    let socket_group = args.socket_group.clone().or(config.socket_group.clone());
    let shared = options.require_caller_token
        || socket_mode != 0o600
        || socket_group.is_some()
        || rustix::process::geteuid().is_root();
    seal_blobs(
        &store,
        args.fs_verity.or(config.fs_verity).unwrap_or_default(),
        shared,
    )?;
    let served = runtime.block_on(async {
        // Under socket activation systemd made the socket (mode and group come from its
        // socket unit) and keeps it; otherwise the daemon binds it and removes it at exit.
        let activated = inherited_listener()?;
        let owns_socket = activated.is_none();
        let listener = if let Some(listener) = activated {
            tokio::net::UnixListener::from_std(listener)?
        } else {
            let listener = bind(&socket)?;
            if socket_mode != 0o600 || socket_group.is_some() {
                share_socket(&socket, socket_mode, socket_group.as_deref())?;
            }
            listener
        };
        let metrics = match &metrics_listen {
            Some(addr) => Some(bind_metrics(addr).await?),
            None => None,
        };
        tracing::info!(
            socket = %socket.display(), cache = %cache_dir.display(), upstream = upstream.describe(),
            metrics = metrics_listen.as_deref().unwrap_or("-"), "daemon listening"
        );
        // No `--root` may be in or around what the daemon lives on. The socket is protected
        // as a file: its directory may be a shared one like /tmp.
        if socket.exists() {
            store.protect(&socket, "the daemon's socket")?;
        }
        if let Some(file) = &config.source {
            store.protect(file, "the daemon's configuration file")?;
        }
        options.tier = start_tier(tier_config(args, &config)?.as_ref(), &upstream)?;
        let daemon = Arc::new(Daemon::new(store, upstream, options));
        // One signal stops both servers.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            crate::registry::shutdown_signal().await;
            let _ = stop.send(true);
        });
        let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        if let Some(metrics) = metrics {
            let (daemon, rx) = (daemon.clone(), stopped.clone());
            tokio::spawn(async move {
                if let Err(e) = hoard_daemon::run_metrics(metrics, daemon, until_stopped(rx)).await {
                    tracing::error!(error = %e, "the metrics listener failed");
                }
            });
        }
        reload_on_hangup(daemon.clone(), args.clone(), cache_dir.clone());
        notify_ready();
        hoard_daemon::run(listener, daemon, until_stopped(stopped)).await?;
        if owns_socket {
            let _ = std::fs::remove_file(&socket);
        }
        tracing::info!("daemon stopped");
        Ok::<_, anyhow::Error>(())
    });
    // Work still running on blocking threads (a stuck read of a hostile file system, say)
    // must not keep the process alive: give it a moment, then leave it behind.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    served
}

/// On SIGHUP: reads the configuration again and applies what can change while running (a
/// bad file keeps the running settings).
fn reload_on_hangup(daemon: Arc<Daemon>, args: DaemonArgs, cache_dir: PathBuf) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangup.recv().await.is_some() {
            let reloaded = crate::config::Config::load(args.config.as_deref())
                .and_then(|config| settings(&args, &config, &cache_dir));
            match reloaded {
                Ok(options) => daemon.reload(&options),
                Err(e) => tracing::error!(
                    error = format!("{e:#}"),
                    "the configuration did not reload; the running one stays"
                ),
            }
        }
    });
}

/// Bounds glibc's malloc to one arena. By default it makes one per thread that contends,
/// up to 8 per core, and keeps what each grew to: a cold get of 20,000 files left three
/// arenas of 14–20 MiB and a daemon of 77–88 MiB RSS. With two arenas, the peak of a cold
/// then a warm get of that version was 59–66 MiB, from run to run, as the warm get's work
/// landed in the arena that the cold one had not left free; with one, 59–60 MiB, and the
/// cold get was no slower (3.7–4.0 s against 3.8–5.5 s, alternated). `MALLOC_ARENA_MAX`
/// in the environment still overrides it.
fn bound_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: `mallopt` only sets a parameter of the allocator; it takes no pointers
        // and is called before the daemon starts its threads.
        #[expect(unsafe_code, reason = "glibc's mallopt has no safe wrapper")]
        let set = unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
        if set != 1 {
            tracing::debug!("could not bound malloc to one arena");
        }
    }
}
