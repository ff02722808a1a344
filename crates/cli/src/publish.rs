//! `hoard publish`: local files become a new version (W&B's create-and-use).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use hoard_types::api::{PublishRequest, Published};

use crate::get::{Connect, bytes, runtime};

#[derive(Args)]
pub struct PublishArgs {
    /// `[[entity/]project/]name` of the artifact (created if it does not exist).
    artifact: String,
    /// Files (added at their file name) and directories (their tree); `NAME=PATH` puts a
    /// file or tree at the logical path `NAME`.
    #[arg(required = true)]
    paths: Vec<String>,
    /// The artifact type, e.g. `dataset` or `model`.
    #[arg(long = "type")]
    kind: Option<String>,
    /// Aliases for the version, besides `latest` (repeatable).
    #[arg(long = "alias")]
    aliases: Vec<String>,
    /// Metadata as a JSON object.
    #[arg(long)]
    metadata: Option<String>,
    /// Also materialize the new version into this directory.
    #[arg(long)]
    root: Option<PathBuf>,
    /// How files are placed under `--root`: `auto`, `hardlink`, `reflink`, `copy` or
    /// `symlink`.
    #[arg(long, default_value = "auto", value_parser = crate::values::LinkModes, hide_possible_values = true)]
    mode: String,
    /// Wait until the upstream has committed the version.
    #[arg(long)]
    wait: bool,
    /// With `--wait`: give up after this long (the upload goes on in the background).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print the answer as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Connect,
}

pub fn publish(args: &PublishArgs) -> anyhow::Result<()> {
    let metadata = args
        .metadata
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
        .transpose()
        .context("Invalid --metadata: expected a JSON object")?;
    let inputs = args
        .paths
        .iter()
        .map(|input| absolute_input(input))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dest = args
        .root
        .as_ref()
        .map(|root| {
            std::path::absolute(root).with_context(|| format!("Invalid root `{}`", root.display()))
        })
        .transpose()?;
    let request = PublishRequest {
        artifact: args.artifact.clone(),
        entity: args.connect.entity.clone(),
        project: args.connect.project.clone(),
        inputs,
        kind: args.kind.clone(),
        aliases: args.aliases.clone(),
        metadata,
        dest: dest.map(|d| d.display().to_string()),
        mode: Some(args.mode.clone()),
        wait_seconds: args.wait.then(|| args.timeout.as_secs().max(1)),
        wait_one_attempt: false,
    };
    let client = args.connect.client();
    let published = runtime()?.block_on(client.publish(&request))?;
    if args.json {
        crate::process::out(&serde_json::to_string(&published)?)?;
    } else {
        crate::process::out(&line(&published))?;
    }
    if args.wait && published.version.is_none() {
        bail!(
            "the upstream has not committed `{}/{}/{}@{}` yet{}; it stays queued (see `hoard status`)",
            published.entity,
            published.project,
            published.name,
            published.digest,
            published
                .last_error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// `PATH` or `NAME=PATH`, with `PATH` made absolute (the daemon has another working
/// directory).
fn absolute_input(input: &str) -> anyhow::Result<String> {
    let (name, path) = match input.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => (Some(name), path),
        _ => (None, input),
    };
    let path = std::path::absolute(path).with_context(|| format!("Invalid path `{path}`"))?;
    Ok(match name {
        Some(name) => format!("{name}={}", path.display()),
        None => path.display().to_string(),
    })
}

fn line(p: &Published) -> String {
    let name = format!("{}/{}/{}", p.entity, p.project, p.name);
    let state = match &p.version {
        Some(version) => format!(
            "committed as {name}:{version}, uploaded {} ({})",
            crate::process::count(p.uploaded_blobs, "blob"),
            bytes(p.uploaded_bytes)
        ),
        None => format!(
            "queued for upload{}; use `{name}@{}` on this machine now",
            p.last_error
                .as_deref()
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default(),
            p.digest
        ),
    };
    format!(
        "{name}@{}: {} ({}), {state}{}",
        p.digest,
        crate::process::count(p.files, "file"),
        bytes(p.bytes),
        p.dest
            .as_deref()
            .map(|d| format!(", materialized in {d}"))
            .unwrap_or_default()
    )
}
