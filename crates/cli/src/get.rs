//! The daemon's clients: `hoard get`, `hoard ls`, `hoard status` (and what `hoard publish`
//! shares with them).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use hoard_client::Client;
use hoard_types::api::{Event, MaterializeRequest, PENDING, ResolveRequest, Summary};

use crate::process::count;
use crate::progress::Progress;
use crate::{env, paths};

/// The daemon to ask, for the commands that name no artifact.
#[derive(Args)]
pub struct Socket {
    /// The daemon's socket [default: `$XDG_RUNTIME_DIR/hoard/hoard.sock`, else
    /// `/tmp/hoard-$UID/hoard.sock`].
    #[arg(long, env = env::HOARD_SOCKET)]
    socket: Option<PathBuf>,
}

impl Socket {
    pub fn client(&self) -> Client {
        // The caller's own credential, for a daemon that serves several users.
        let token = std::env::var(env::HOARD_TOKEN).ok();
        Client::new(self.socket.clone().unwrap_or_else(paths::default_socket)).with_token(token)
    }
}

/// The daemon to ask, and the defaults of the references it is asked about.
#[derive(Args)]
pub struct Connect {
    #[command(flatten)]
    socket: Socket,
    /// Entity for references without one.
    #[arg(long, env = env::HOARD_ENTITY)]
    pub entity: Option<String>,
    /// Project for references without one.
    #[arg(long, env = env::HOARD_PROJECT)]
    pub project: Option<String>,
}

impl Connect {
    pub fn client(&self) -> Client {
        self.socket.client()
    }
}

#[derive(Args)]
pub struct GetArgs {
    /// `[[entity/]project/]name[:alias|:vN]` or `…name@<digest>`.
    reference: String,
    /// Where to put the files [default: `./artifacts/NAME:vN`, like W&B].
    #[arg(long, conflicts_with = "hf_cache")]
    root: Option<PathBuf>,
    /// Instead of a root: fill the Hugging Face cache (a Hub version; for `transformers`
    /// and `huggingface_hub`) and print the snapshot folder. `--hf-cache=DIR` names the
    /// cache [default: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `~/.cache/huggingface/hub`].
    #[arg(
        long,
        num_args = 0..=1,
        require_equals = true,
        value_name = "DIR",
        conflicts_with_all = ["mode", "clean"]
    )]
    #[expect(
        clippy::option_option,
        reason = "clap's shape for a flag with an optional value: absent, alone, or with DIR"
    )]
    hf_cache: Option<Option<PathBuf>>,
    /// Only files whose path starts with this string (W&B's `path_prefix`).
    #[arg(long, conflicts_with = "file")]
    path_prefix: Option<String>,
    /// Only this file (W&B's `get_path(name).download()`); repeat for several.
    #[arg(long, value_name = "PATH")]
    file: Vec<String>,
    /// Only files matching this glob (`*` also matches `/`; `dir/` is all under it), as
    /// `hf download --include`; repeat for several.
    #[arg(long, value_name = "GLOB", conflicts_with = "file")]
    include: Vec<String>,
    /// Leave out files matching this glob; repeat for several.
    #[arg(long, value_name = "GLOB", conflicts_with = "file")]
    exclude: Vec<String>,
    /// Say what would be fetched and placed, and the bytes; change nothing.
    #[arg(long, conflicts_with = "clean")]
    dry_run: bool,

    /// `auto`, `hardlink`, `reflink`, `copy` or `symlink`.
    #[arg(long, default_value = "auto", value_parser = crate::values::LinkModes, hide_possible_values = true)]
    mode: String,
    /// Also remove files under the root (and the prefix) that the version does not have.
    #[arg(long, conflicts_with = "file")]
    clean: bool,
    #[command(flatten)]
    print: Print,
    #[command(flatten)]
    connect: Connect,
}

/// How `get` prints its answer.
#[derive(Args)]
struct Print {
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Print only the destination (for `$(hoard get … -q)`); no progress.
    #[arg(short, long, conflicts_with = "json")]
    quiet: bool,
}

#[derive(Args)]
pub struct LsArgs {
    reference: String,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Connect,
}

#[derive(Args)]
pub struct StatusArgs {
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Socket,
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("Failed to start the async runtime")
}

pub use hoard_types::human_bytes as bytes;

pub fn summary_line(reference: &str, s: &Summary) -> String {
    let dest = s.dest.as_deref().map_or_else(|| "-".to_owned(), shown_path);
    if s.dry_run {
        return format!(
            "{reference} → {dest}: would place {} ({}), fetching {} ({}); dry run, nothing changed",
            count(s.placed, "file"),
            bytes(s.bytes),
            count(s.fetched_blobs, "blob"),
            bytes(s.fetched_bytes),
        );
    }
    let mut line = format!(
        "{reference} → {dest}: {} ({}), fetched {} ({}), placed {}",
        count(s.files, "file"),
        bytes(s.bytes),
        count(s.fetched_blobs, "blob"),
        bytes(s.fetched_bytes),
        s.placed,
    );
    for (n, what) in [(s.unchanged, "unchanged"), (s.removed, "removed")] {
        if n > 0 {
            let _ = std::fmt::Write::write_fmt(&mut line, format_args!(", {n} {what}"));
        }
    }
    let _ = std::fmt::Write::write_fmt(
        &mut line,
        format_args!(
            ", mode {}, {:.2} s",
            s.mode.as_deref().unwrap_or("-"),
            s.seconds
        ),
    );
    line
}

/// A destination as the user would type it: relative to the working directory when it is
/// under it.
fn shown_path(dest: &str) -> String {
    let cwd = std::env::current_dir().ok();
    match cwd
        .as_deref()
        .and_then(|cwd| std::path::Path::new(dest).strip_prefix(cwd).ok())
    {
        Some(relative) if !relative.as_os_str().is_empty() => relative.display().to_string(),
        _ => dest.to_owned(),
    }
}

/// The built-in upstream, as a daemon describes it.
fn built_in_upstream() -> String {
    format!("dir://{}", paths::default_upstream_dir().display())
}

/// A not-found answer from a daemon that serves the built-in upstream, which starts
/// empty: says so, and how to point the daemon at a real one.
pub async fn explain_not_found(client: &Client, error: hoard_client::Error) -> anyhow::Error {
    if error.kind() != "not-found" {
        return error.into();
    }
    let embedded = built_in_upstream();
    match client.status().await {
        Ok(status) if status.upstream == embedded => anyhow::anyhow!(
            "{error}. This daemon serves the built-in upstream `{embedded}`, which holds only what was published here: start it on your upstream, e.g. `hoard daemon --upstream http://registry:7700` (or `wandb`, `hf`)"
        ),
        _ => error.into(),
    }
}

pub fn get(args: &GetArgs) -> anyhow::Result<()> {
    let client = args.connect.client();
    runtime()?.block_on(async {
        // With `--root`, one call. Without, the default root names the version, so resolve
        // first and then materialize exactly that version (an alias moving in between
        // cannot mix two versions).
        if let Some(cache) = &args.hf_cache {
            // `--hf-cache` alone: where huggingface_hub looks.
            let cache = cache.clone().unwrap_or_else(paths::default_hf_cache);
            return hf_cache(args, &client, cache).await;
        }
        let (reference, root) = if let Some(root) = &args.root {
            (args.reference.clone(), root.clone())
        } else {
            let resolved = client
                .resolve(&ResolveRequest {
                    reference: args.reference.clone(),
                    entity: args.connect.entity.clone(),
                    project: args.connect.project.clone(),
                    entries: false,
                })
                .await;
            let resolved = match resolved {
                Ok(resolved) => resolved,
                Err(e) => return Err(explain_not_found(&client, e).await),
            };
            // The get below names the version exactly, so this answer's warning is the one.
            if let Some(warning) = &resolved.warning {
                let _ = writeln!(std::io::stderr().lock(), "warning: {warning}");
            }
            let pinned = resolved.pinned();
            // W&B's `artifacts/name:vN`; a publish not uploaded yet is named by its digest.
            let dir = if resolved.version == PENDING {
                format!("{}@{}", resolved.name, resolved.digest)
            } else {
                format!("{}:{}", resolved.name, resolved.version)
            };
            let root = PathBuf::from("artifacts").join(dir);
            (pinned, root)
        };
        let root = std::path::absolute(&root)
            .with_context(|| format!("Invalid root `{}`", root.display()))?;
        let request = MaterializeRequest {
            dest: Some(root.display().to_string()),
            mode: Some(args.mode.clone()),
            clean: args.clean,
            ..args.request(reference)
        };
        let mut progress = Progress::new(args.print.quiet);
        let mut named = args.reference.clone();
        let summary = client
            .materialize(&request, |event| {
                if let Event::Resolved(r) = event {
                    named = r.pinned();
                    if r.version == PENDING {
                        named.push_str(" (pending upload)");
                    }
                }
                progress.event(event);
            })
            .await;
        let summary = match summary {
            Ok(summary) => summary,
            Err(e) => return Err(explain_not_found(&client, e).await),
        };
        print_summary(args, &named, &summary)
    })
}

/// The summary as `--json`, `--quiet` (the destination alone) or a line, after the files
/// a dry run would place.
fn print_summary(args: &GetArgs, named: &str, summary: &Summary) -> anyhow::Result<()> {
    if args.print.json {
        return crate::process::out(&serde_json::to_string(summary)?);
    }
    if args.print.quiet {
        return crate::process::out(summary.dest.as_deref().unwrap_or_default());
    }
    if summary.dry_run {
        let rows = summary.planned.iter().map(|p| {
            let state = if p.cached { "cached" } else { "fetch" };
            vec![p.path.to_string(), bytes(p.size), state.to_owned()]
        });
        crate::process::table(&["PATH", "SIZE", "STATE"], rows)?;
    }
    crate::process::out(&summary_line(named, summary))
}

/// `get --hf-cache`: the version filled into the HF cache; prints the snapshot folder (as
/// `snapshot_download` returns it), or the summary as JSON.
async fn hf_cache(args: &GetArgs, client: &Client, cache: PathBuf) -> anyhow::Result<()> {
    let cache = std::path::absolute(&cache)
        .with_context(|| format!("Invalid HF cache `{}`", cache.display()))?;
    let request = MaterializeRequest {
        hf_cache: Some(cache.display().to_string()),
        ..args.request(args.reference.clone())
    };
    let mut progress = Progress::new(args.print.quiet);
    let summary = client
        .materialize(&request, |event| progress.event(event))
        .await?;
    if args.print.json || summary.dry_run {
        print_summary(args, &args.reference, &summary)
    } else {
        crate::process::out(summary.dest.as_deref().unwrap_or_default())
    }
}

impl GetArgs {
    /// What every `get` asks for `reference`: the defaults and the selection.
    fn request(&self, reference: String) -> MaterializeRequest {
        let (file, files) = match self.file.split_first() {
            Some((first, rest)) => (Some(first.clone()), rest.to_vec()),
            None => (None, Vec::new()),
        };
        MaterializeRequest {
            reference,
            entity: self.connect.entity.clone(),
            project: self.connect.project.clone(),
            path_prefix: self.path_prefix.clone(),
            file,
            files,
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            dry_run: self.dry_run,
            ..MaterializeRequest::default()
        }
    }
}

pub fn ls(args: &LsArgs) -> anyhow::Result<()> {
    let client = args.connect.client();
    runtime()?.block_on(async {
        let resolved = client
            .resolve(&ResolveRequest {
                reference: args.reference.clone(),
                entity: args.connect.entity.clone(),
                project: args.connect.project.clone(),
                entries: true,
            })
            .await;
        let resolved = match resolved {
            Ok(resolved) => resolved,
            Err(e) => return Err(explain_not_found(&client, e).await),
        };
        if args.json {
            return crate::process::out(&serde_json::to_string(&resolved)?);
        }
        // Which version the reference named, on stderr; stdout is the table (`--json`
        // for scripts, with sizes in bytes).
        {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(
                err,
                "{} ({}, {})",
                resolved.pinned(),
                count(resolved.files, "file"),
                bytes(resolved.bytes)
            );
        }
        if let Some(warning) = &resolved.warning {
            let _ = writeln!(std::io::stderr().lock(), "warning: {warning}");
        }
        let with_refs = resolved.entries.iter().any(|e| e.reference.is_some());
        let rows = resolved.entries.iter().map(|entry| {
            let mut row = vec![
                entry.path.to_string(),
                bytes(entry.size),
                match (&entry.digest, &entry.upstream_digest) {
                    (Some(digest), _) => digest.to_string(),
                    (None, Some(upstream)) => upstream.to_string(),
                    (None, None) => "-".to_owned(),
                },
            ];
            if with_refs {
                row.push(entry.reference.clone().unwrap_or_else(|| "-".to_owned()));
            }
            row
        });
        let header: &[&str] = if with_refs {
            &["PATH", "SIZE", "DIGEST", "REF"]
        } else {
            &["PATH", "SIZE", "DIGEST"]
        };
        crate::process::table(header, rows)?;
        Ok(())
    })
}

pub fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let client = args.connect.client();
    runtime()?.block_on(async {
        let status = client.status().await?;
        if args.json {
            return crate::process::out(&serde_json::to_string(&status)?);
        }
        crate::process::out(&format!(
            "cache:     {} ({}, {}, {}{})\nworkdirs:  {} also linked by materialized directories; {} reclaimable\npinned:    {}; evicted {} since start\nupstream:  {}\nhits:      {} ({:.0}% of blobs needed)\nmisses:    {}\nfetched:   {}\nin flight: {}\npending uploads: {}",
            status.cache_dir,
            count(status.blobs, "blob"),
            count(status.versions, "version"),
            bytes(status.cache_bytes),
            status
                .budget_bytes
                .map(|b| format!(" of a {} budget", bytes(b)))
                .unwrap_or_default(),
            bytes(status.held_by_workdirs_bytes),
            bytes(status.reclaimable_bytes),
            count(status.pinned_versions, "version"),
            count(status.evicted_blobs, "blob"),
            if status.upstream == built_in_upstream() {
                format!(
                    "{} (the built-in upstream: it holds only what was published here; `hoard daemon --upstream URL` serves a real one)",
                    status.upstream
                )
            } else {
                status.upstream.clone()
            },
            status.hits,
            hit_ratio(status.hits, status.misses),
            status.misses,
            bytes(status.fetched_bytes),
            status.in_flight,
            status.pending_uploads.len()
        ))?;
        if let Some(trouble) = &status.trouble {
            crate::process::out(&format!("TROUBLE: {trouble}"))?;
        }
        crate::process::out(&format!("upstream state: {}", status.upstream_state))?;
        if let Some(tier) = &status.tier {
            crate::process::out(&tier_lines(tier))?;
        }
        crate::process::out(&format!("fs-verity: {}", status.fs_verity))?;
        if !status.scrub.is_empty() {
            crate::process::out(&format!("scrub: {}", status.scrub))?;
        }
        for mode in &status.link_modes {
            crate::process::out(&format!("link mode: {mode}"))?;
        }
        for p in &status.pending_uploads {
            crate::process::out(&format!(
                "  {}@{}: {} after {} attempt(s){}",
                p.artifact,
                p.digest,
                p.state,
                p.attempts,
                p.last_error
                    .as_deref()
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            ))?;
        }
        Ok(())
    })
}

/// The fleet tier's part of `hoard status`.
fn tier_lines(tier: &hoard_types::api::TierStatus) -> String {
    use std::fmt::Write as _;
    let mut text = format!(
        "tier: {} ({}; conditional create {})\n  \
         served {} blob(s), {} missed, {} wrong (replaced); read {}, wrote {}\n  \
         uploads: {} done, {} queued, {} failed, {} dropped; metadata: {} found, {} missing; leases: {} won, {} waited",
        tier.url,
        tier.state,
        tier.conditional_create,
        tier.hits,
        tier.misses,
        tier.bad,
        bytes(tier.bytes_read),
        bytes(tier.bytes_written),
        tier.uploads,
        tier.queued,
        tier.upload_failures,
        tier.dropped,
        tier.metadata_hits,
        tier.metadata_misses,
        tier.leases_won,
        tier.leases_waited,
    );
    if let Some(error) = &tier.last_error {
        let _ = write!(text, "\n  last error: {error}");
    }
    text
}

/// Hits as a percentage of the blobs calls needed.
fn hit_ratio(hits: u64, misses: u64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "a percentage for display")]
    let ratio = if hits + misses == 0 {
        0.0
    } else {
        hits as f64 * 100.0 / (hits + misses) as f64
    };
    ratio
}
