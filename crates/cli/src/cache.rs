//! `hoard pin`, `hoard unpin`, `hoard pins`, `hoard gc`: the cache budget by hand.

use clap::Args;
use hoard_types::api::{GcRequest, Pin, PinRequest, VerifyRequest};

use crate::get::{Connect, Socket, bytes, runtime};
use crate::process::count;
use crate::values::Size;

#[derive(Args)]
pub struct PinArgs {
    /// `[[entity/]project/]name[:alias|:vN]` or `…name@<digest>`.
    reference: String,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Connect,
}

#[derive(Args)]
pub struct PinsArgs {
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Socket,
}

#[derive(Args)]
pub struct GcArgs {
    /// Evict until the cache holds at most this much (`50GiB`) [default: the budget's low
    /// watermark].
    #[arg(long, value_parser = |s: &str| s.parse::<Size>())]
    target: Option<Size>,
    /// Show what would be evicted; evict nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Socket,
}

fn pin_line(p: &Pin) -> String {
    format!(
        "{}/{}/{}:{} @{} ({}, {})",
        p.entity,
        p.project,
        p.name,
        p.version,
        p.digest,
        crate::process::count(p.files, "file"),
        bytes(p.bytes)
    )
}

fn request(args: &PinArgs) -> PinRequest {
    PinRequest {
        reference: args.reference.clone(),
        entity: args.connect.entity.clone(),
        project: args.connect.project.clone(),
    }
}

pub fn pin(args: &PinArgs) -> anyhow::Result<()> {
    let pin = runtime()?.block_on(args.connect.client().pin(&request(args)))?;
    if args.json {
        return crate::process::out(&serde_json::to_string(&pin)?);
    }
    crate::process::out(&format!("pinned {}", pin_line(&pin)))
}

pub fn unpin(args: &PinArgs) -> anyhow::Result<()> {
    let pin = runtime()?.block_on(args.connect.client().unpin(&request(args)))?;
    if args.json {
        return crate::process::out(&serde_json::to_string(&pin)?);
    }
    crate::process::out(&format!("unpinned {}", pin_line(&pin)))
}

pub fn pins(args: &PinsArgs) -> anyhow::Result<()> {
    let pins = runtime()?.block_on(args.connect.client().pins())?;
    if args.json {
        return crate::process::out(&serde_json::to_string(&pins)?);
    }
    if pins.is_empty() {
        return crate::process::out("no pinned versions");
    }
    for pin in &pins {
        crate::process::out(&pin_line(pin))?;
    }
    Ok(())
}

pub fn gc(args: &GcArgs) -> anyhow::Result<()> {
    let target_bytes = match args.target {
        None => None,
        Some(Size::Bytes(bytes)) => Some(bytes),
        Some(Size::Share(_)) => anyhow::bail!("--target takes a size (e.g. `50GiB`), not a share"),
    };
    let report = runtime()?.block_on(args.connect.client().gc(&GcRequest {
        target_bytes,
        dry_run: args.dry_run,
    }))?;
    if args.json {
        return crate::process::out(&serde_json::to_string(&report)?);
    }
    crate::process::out(&format!(
        "{} {} blobs: {} freed, {} released (still linked by workdirs); the cache holds {} (target {}), {} of it linked by workdirs",
        if report.dry_run {
            "would evict"
        } else {
            "evicted"
        },
        report.evicted_blobs,
        bytes(report.freed_bytes),
        bytes(report.released_bytes),
        bytes(report.remaining_bytes),
        bytes(report.target_bytes),
        bytes(report.held_by_workdirs_bytes)
    ))
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Also link the files that still hold a modified blob (in directories hoard
    /// hardlinked) to the fetched blob again, each as the user who asked for it there.
    #[arg(long)]
    repair: bool,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Socket,
}

/// Exits non-zero when a blob was bad (it was quarantined; the next use fetches it again)
/// or a damaged file is left.
pub fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let request = VerifyRequest {
        repair: args.repair,
    };
    let report = runtime()?.block_on(args.connect.client().verify(&request))?;
    if args.json {
        crate::process::out(&serde_json::to_string(&report)?)?;
    } else {
        crate::process::out(&format!(
            "checked {} ({}), {} bad",
            count(report.checked, "blob"),
            bytes(report.bytes),
            report.bad.len()
        ))?;
        if report.sealed > 0 {
            crate::process::out(&format!("sealed {} blobs with fs-verity", report.sealed))?;
        }
        if report.sealed_total > 0 {
            crate::process::out(&format!(
                "fs-verity: {} of {} blobs sealed",
                report.sealed_total, report.checked
            ))?;
        }
        for bad in &report.bad {
            let repair = match (&bad.repaired, &bad.repair_error) {
                (true, _) => "quarantined, fetched again from the upstream".to_owned(),
                (false, Some(e)) => format!(
                    "quarantined; not fetched again now ({e}): a get that needs it fetches it"
                ),
                (false, None) => "quarantined; fetched again when needed".to_owned(),
            };
            crate::process::out(&format!("  {}: {} ({repair})", bad.blob, bad.why))?;
        }
        if !report.damaged.is_empty() {
            crate::process::out(&format!(
                "{} placed earlier {} a blob found modified:",
                count(report.damaged.len() as u64, "file"),
                if report.damaged.len() == 1 {
                    "holds"
                } else {
                    "hold"
                }
            ))?;
        }
        for file in &report.damaged {
            let path = std::path::Path::new(&file.dest).join(file.path.as_str());
            let state = match (file.repaired, &file.repair_error) {
                (true, _) => "linked to the fetched blob again".to_owned(),
                (false, Some(e)) => format!("not repaired: {e}"),
                (false, None) => "`hoard verify --repair` links it again".to_owned(),
            };
            crate::process::out(&format!("  {} ({state})", path.display()))?;
        }
    }
    let left = report.damaged.iter().filter(|d| !d.repaired).count();
    if !report.bad.is_empty() {
        anyhow::bail!(
            "{} failed verification",
            count(report.bad.len() as u64, "blob")
        );
    }
    if left > 0 {
        anyhow::bail!(
            "{} still {} a modified blob",
            count(left as u64, "file"),
            if left == 1 { "holds" } else { "hold" }
        );
    }
    Ok(())
}
