//! `hoard registry serve` and `hoard registry import`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use hoard_layout::DirRoot;
use hoard_registry::{Limits, State, Tokens};
use hoard_types::{ArtifactName, ArtifactRef, Selector};

use hoard_cli::env;

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Serve a registry over HTTP.
    Serve(Serve),
    /// Add a local directory as a new version of an artifact, without a server.
    Import(Import),
}

#[derive(Args)]
pub(crate) struct Serve {
    /// The storage directory (a `dir://` root; created if missing).
    #[arg(long, env = env::HOARD_REGISTRY_ROOT)]
    root: PathBuf,
    /// Address to listen on; port 0 picks a free port. The address is printed on stdout.
    #[arg(long, env = env::HOARD_REGISTRY_LISTEN, default_value = "127.0.0.1:7700")]
    listen: SocketAddr,
    /// Tokens file (see `config/registry-tokens.toml`). Without it the registry is open to
    /// anyone who can connect, which is allowed on loopback only.
    #[arg(long, env = env::HOARD_REGISTRY_TOKENS)]
    tokens: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct Import {
    /// The storage directory (a `dir://` root; created if missing).
    #[arg(long, env = env::HOARD_REGISTRY_ROOT)]
    root: PathBuf,
    /// `entity/project/name`.
    artifact: String,
    /// The directory whose files become the version.
    src: PathBuf,
    /// Aliases for the version, besides `latest` (repeatable).
    #[arg(long = "alias")]
    aliases: Vec<String>,
    /// The artifact type, e.g. `dataset` or `model`.
    #[arg(long = "type")]
    kind: Option<String>,
    /// Metadata as a JSON object.
    #[arg(long)]
    metadata: Option<String>,
    /// Print the version as JSON instead of a summary line.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(serve) => run_serve(&serve),
        Command::Import(import) => run_import(import),
    }
}

fn run_serve(args: &Serve) -> anyhow::Result<()> {
    hoard_cli::process::raise_nofile_limit();
    let tokens = args.tokens.as_deref().map(Tokens::load).transpose()?;
    if tokens.is_none() && !args.listen.ip().is_loopback() {
        bail!(
            "Refusing to listen on `{}` without `--tokens`: anyone who can connect could read \
             and publish every artifact. Pass `--tokens FILE` (see `config/registry-tokens.toml`) \
             or listen on a loopback address such as `127.0.0.1`",
            args.listen
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("Failed to start the async runtime")?;
    runtime.block_on(async {
        let open = tokens.is_none();
        let root = args.root.clone();
        let state =
            tokio::task::spawn_blocking(move || State::open(root, tokens, Limits::default()))
                .await?
                .with_context(|| {
                    format!(
                        "Failed to open the registry storage `{}`",
                        args.root.display()
                    )
                })?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("Failed to listen on `{}`", args.listen))?;
        let addr = listener.local_addr()?;
        if open {
            tracing::warn!(
                "the registry is OPEN: no --tokens given, so every client on this machine may \
                 read, publish and move aliases"
            );
        }
        tracing::info!(%addr, root = %args.root.display(), "registry listening");
        hoard_cli::process::out(&format!("http://{addr}"))?;
        hoard_registry::run(listener, Arc::new(state), shutdown_signal()).await?;
        tracing::info!("registry stopped");
        Ok(())
    })
}

/// Completes on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!(target: "hoard", "shutting down: finishing requests in flight");
}

fn run_import(args: Import) -> anyhow::Result<()> {
    let reference: ArtifactRef = args.artifact.parse()?;
    let (Some(entity), Some(project)) = (&reference.entity, &reference.project) else {
        bail!(
            "`{}`: import needs the full `entity/project/name`",
            args.artifact
        );
    };
    if reference.selector != Selector::Alias(Selector::LATEST.to_owned())
        || args.artifact.contains([':', '@'])
    {
        bail!(
            "`{}`: import creates a new version; give `entity/project/name` and aliases with `--alias`",
            args.artifact
        );
    }
    let name = ArtifactName::new(entity, project, &reference.name)?;
    let metadata = match &args.metadata {
        None => serde_json::Value::Object(serde_json::Map::new()),
        Some(text) => {
            let value: serde_json::Value =
                serde_json::from_str(text).context("`--metadata` is not valid JSON")?;
            if !value.is_object() {
                bail!("`--metadata` must be a JSON object");
            }
            value
        }
    };
    let root = DirRoot::create(&args.root)?;
    let committed =
        hoard_registry::import_dir(&root, &name, &args.src, args.aliases, args.kind, metadata)?;
    let version = &committed.version;
    if args.json {
        hoard_cli::process::out(&serde_json::to_string(version)?)?;
    } else {
        hoard_cli::process::out(&format!(
            "{name}:{} {} ({}, {}{})",
            version.version,
            version.digest,
            hoard_cli::process::count(version.manifest.entries.len() as u64, "file"),
            hoard_types::human_bytes(version.manifest.total_size()),
            if committed.created {
                ""
            } else {
                ", identical to an existing version"
            }
        ))?;
    }
    Ok(())
}
