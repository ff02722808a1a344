//! `hoard-bench hf`: the Hugging Face Hub path, against the fake Hub of `hoard-fakes` on
//! loopback (its API, `resolve` URLs and a CDN on a second port), next to the real
//! `huggingface_hub`:
//!
//! - cold: `hoard get ORG/NAME:main --hf-cache=…` (fresh daemon and cache) against
//!   `snapshot_download(…, max_workers=16)` into an empty HF cache;
//! - a second user's HF cache on the same machine: hoard again (hardlinks of the blobs it
//!   holds) against `snapshot_download` again (it downloads everything again).
//!
//! hoard makes its blobs durable before it answers; `huggingface_hub` does not sync.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use hoard_fakes::hub::FakeHub;

use crate::fetch::{Killed, hoard, start_daemon, timed};
use crate::{Tree, ratio, row};

/// The Python with `huggingface_hub`: `--python`, else `$HOARD_HF_PYTHON`, else `python3`.
pub(crate) fn python(given: Option<String>) -> String {
    given
        .or_else(|| std::env::var("HOARD_HF_PYTHON").ok())
        .unwrap_or_else(|| "python3".to_owned())
}

/// `snapshot_download` of `repo` into `cache`, as a command to time.
fn client(python: &str, hub: &FakeHub, home: &Path, repo: &str, cache: &Path) -> Command {
    let mut command = Command::new(python);
    command
        .args([
            "-c",
            "import sys\n\
             from huggingface_hub import snapshot_download\n\
             snapshot_download(sys.argv[1], cache_dir=sys.argv[2], max_workers=16)\n",
            repo,
        ])
        .arg(cache)
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HOME", home)
        .env("HF_HUB_DISABLE_XET", "1")
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN");
    command
}

/// hoard's `get --hf-cache` of `repo` into `cache`, through the daemon on `socket`.
fn hoard_get(hoard: &Path, socket: &Path, repo: &str, cache: &Path) -> Command {
    let mut command = Command::new(hoard);
    command
        .args(["get", &format!("{repo}:main")])
        .arg(format!("--hf-cache={}", cache.display()))
        .env("HOARD_SOCKET", socket)
        .env("HOARD_LOG", "warn");
    command
}

/// The runs for one tree.
pub(crate) fn compare(
    work: &Path,
    name: &str,
    tree: &Tree,
    runs: usize,
    python: &str,
) -> Result<()> {
    let hoard = hoard()?;
    let hub = FakeHub::start("hf_bench");
    let repo = format!("bench/{name}");
    let files: Vec<(String, Vec<u8>)> = tree
        .files
        .iter()
        .map(|path| -> Result<(String, Vec<u8>)> {
            let rel = path.strip_prefix(&tree.root).context("a generated path")?;
            Ok((rel.display().to_string(), std::fs::read(path)?))
        })
        .collect::<Result<_>>()?;
    let borrowed: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    hub.commit(&format!("models/{repo}"), "main", &borrowed);
    drop(files);
    let (mut ours, mut theirs, mut ours_again, mut theirs_again) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // As in `fetch`: nothing is deleted until every run is done.
    let kept = work.join(format!("{name}-hf-runs"));
    for run in 0..runs {
        let dir = kept.join(run.to_string());
        std::fs::create_dir_all(&dir)?;
        let home = dir.join("hf-home");
        theirs.push(timed(client(
            python,
            &hub,
            &home,
            &repo,
            &dir.join("py-1"),
        ))?);
        theirs_again.push(timed(client(
            python,
            &hub,
            &home,
            &repo,
            &dir.join("py-2"),
        ))?);
        let (daemon, socket): (Killed, _) = start_daemon(&hoard, &dir, &format!("hf+{}", hub.url))?;
        ours.push(timed(hoard_get(
            &hoard,
            &socket,
            &repo,
            &dir.join("hoard-1"),
        ))?);
        ours_again.push(timed(hoard_get(
            &hoard,
            &socket,
            &repo,
            &dir.join("hoard-2"),
        ))?);
        drop(daemon);
    }
    std::fs::remove_dir_all(&kept)?;
    println!(
        "  {:<34} {:>9} {:>9} {:>9}",
        "(seconds)", "min", "median", "max"
    );
    row("snapshot_download(max_workers=16)", &mut theirs);
    row("hoard get --hf-cache (incl. CLI)", &mut ours);
    row("snapshot_download, a 2nd cache", &mut theirs_again);
    row("hoard get --hf-cache, a 2nd cache", &mut ours_again);
    println!(
        "  ratios of medians hoard / snapshot_download: cold {:.2}, a second user's cache {:.2}",
        ratio(&ours, &theirs),
        ratio(&ours_again, &theirs_again)
    );
    Ok(())
}
