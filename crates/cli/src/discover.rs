//! `hoard artifacts` and `hoard versions`: what exists upstream, and what of it is cached.

use std::io::Write as _;

use clap::Args;
use hoard_types::api::{ArtifactsRequest, PENDING, VersionsRequest};

use crate::get::{Connect, bytes, explain_not_found, runtime};
use crate::process::{count, out, table};

#[derive(Args)]
pub struct ArtifactsArgs {
    /// `entity/project` or `project` [default: `HOARD_ENTITY`/`HOARD_PROJECT`].
    #[arg(value_name = "PROJECT")]
    path: Option<String>,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Connect,
}

#[derive(Args)]
pub struct VersionsArgs {
    /// `[[entity/]project/]name`, without `:alias` or `@digest`.
    name: String,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Connect,
}

pub fn artifacts(args: &ArtifactsArgs) -> anyhow::Result<()> {
    let client = args.connect.client();
    runtime()?.block_on(async {
        let request = ArtifactsRequest {
            path: args.path.clone(),
            entity: args.connect.entity.clone(),
            project: args.connect.project.clone(),
        };
        let listed = match client.artifacts(&request).await {
            Ok(listed) => listed,
            Err(e) => return Err(explain_not_found(&client, e).await),
        };
        if args.json {
            return out(&serde_json::to_string(&listed)?);
        }
        let _ = writeln!(
            std::io::stderr().lock(),
            "{}/{} at `{}`: {}",
            listed.entity,
            listed.project,
            listed.upstream,
            count(listed.artifacts.len() as u64, "artifact")
        );
        let rows = listed.artifacts.iter().map(|a| {
            vec![
                a.name.clone(),
                a.versions.map_or_else(|| "-".to_owned(), |n| n.to_string()),
                a.latest.clone().unwrap_or_else(|| "-".to_owned()),
                a.aliases.join(", "),
            ]
        });
        table(&["NAME", "VERSIONS", "LATEST", "ALIASES"], rows)
    })
}

pub fn versions(args: &VersionsArgs) -> anyhow::Result<()> {
    let client = args.connect.client();
    runtime()?.block_on(async {
        let request = VersionsRequest {
            name: args.name.clone(),
            entity: args.connect.entity.clone(),
            project: args.connect.project.clone(),
        };
        let listed = match client.versions(&request).await {
            Ok(listed) => listed,
            Err(e) => return Err(explain_not_found(&client, e).await),
        };
        if args.json {
            return out(&serde_json::to_string(&listed)?);
        }
        let _ = writeln!(
            std::io::stderr().lock(),
            "{}/{}/{} at `{}`: {}",
            listed.entity,
            listed.project,
            listed.name,
            listed.upstream,
            count(listed.versions.len() as u64, "version")
        );
        let unknown = || "-".to_owned();
        let rows = listed.versions.iter().map(|v| {
            vec![
                if v.version == PENDING {
                    "pending upload".to_owned()
                } else {
                    v.version.clone()
                },
                v.aliases.join(", "),
                v.files.map_or_else(unknown, |n| n.to_string()),
                v.size.map_or_else(unknown, bytes),
                v.created_at.clone().unwrap_or_else(unknown),
                match (v.cached_files, v.files) {
                    (Some(n), Some(files)) => format!("{n}/{files}"),
                    _ => unknown(),
                },
                v.digest.map_or_else(unknown, |d| d.to_string()),
            ]
        });
        table(
            &[
                "VERSION", "ALIASES", "FILES", "SIZE", "CREATED", "CACHED", "DIGEST",
            ],
            rows,
        )
    })
}
