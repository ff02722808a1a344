//! `hoard-bench fleet`: N boxes (daemons with caches of their own, on one machine)
//! cold-start one artifact at the same instant through a fleet tier on a three-node
//! Garage cluster: the upstream's bytes ÷ the artifact's unique bytes, and the boxes'
//! cold times, next to one box without a tier (the anchor); then one box more, later,
//! from the tier alone, next to a single box's cold start from the upstream.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hoard_fakes::garage::Garage;

use crate::fetch::{Killed, hoard, timed};
use crate::{Tree, row};

/// A box: its daemon and socket.
struct Box {
    _daemon: Killed,
    socket: PathBuf,
}

fn start_box(
    hoard: &Path,
    dir: &Path,
    url: &str,
    garage: &Garage,
    node: usize,
    prefix: &str,
) -> Result<Box> {
    std::fs::create_dir_all(dir)?;
    let socket = dir.join("hoard.sock");
    let bucket = garage.bucket(node);
    let daemon = Command::new(hoard)
        .arg("daemon")
        .arg("--socket")
        .arg(&socket)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(["--upstream", url, "--scrub-rate", "off"])
        .args([
            "--tier",
            &format!("s3://tier/{prefix}"),
            "--tier-endpoint-url",
            &bucket.endpoint,
        ])
        .envs(bucket.env())
        .env("HOARD_LOG", "warn")
        .spawn()?;
    let daemon = Killed(daemon);
    crate::fetch::wait_for_socket(&socket)?;
    Ok(Box {
        _daemon: daemon,
        socket,
    })
}

/// A cold `hoard get` of the artifact on `b`: how long it took.
fn get(hoard: &Path, b: &Box, root: &Path) -> Result<Duration> {
    let mut command = Command::new(hoard);
    command
        .args(["get", "acme/bench/fleet:v0", "-q", "--root"])
        .arg(root)
        .env("HOARD_SOCKET", &b.socket)
        .env("HOARD_LOG", "warn");
    timed(command)
}

/// Waits until none of `boxes` has uploads queued (at most 30 min): how long it took, and
/// their tier figures then.
fn settle(hoard: &Path, boxes: &[Box]) -> Result<(Duration, Vec<serde_json::Value>)> {
    let started = std::time::Instant::now();
    let mut tiers = Vec::new();
    for b in boxes {
        loop {
            let out = Command::new(hoard)
                .args(["status", "--json"])
                .env("HOARD_SOCKET", &b.socket)
                .output()?;
            let status: serde_json::Value =
                serde_json::from_slice(&out.stdout).with_context(|| {
                    format!(
                        "`hoard status --json`: {}",
                        String::from_utf8_lossy(&out.stderr)
                    )
                })?;
            if status["tier"]["queued"] == 0 {
                tiers.push(status["tier"].clone());
                break;
            }
            if started.elapsed() > Duration::from_secs(1800) {
                bail!("uploads did not end in 30 minutes: {}", status["tier"]);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok((started.elapsed(), tiers))
}

/// One line of the fleet's tier figures, summed over its boxes.
fn summary(tiers: &[serde_json::Value]) -> String {
    let sum = |field: &str| -> u64 { tiers.iter().filter_map(|t| t[field].as_u64()).sum() };
    let errors: std::collections::BTreeSet<String> = tiers
        .iter()
        .filter_map(|t| t["last_error"].as_str())
        .map(hoard_types::truncate)
        .collect();
    format!(
        "tier hits {}, misses {}, wrong {}; leases won {}, waited {}; errors: {}",
        sum("hits"),
        sum("misses"),
        sum("bad"),
        sum("leases_won"),
        sum("leases_waited"),
        if errors.is_empty() {
            "none".to_owned()
        } else {
            errors.into_iter().collect::<Vec<_>>().join(" | ")
        }
    )
}

/// Bytes of blobs the registry at `url` served so far.
fn served(url: &str) -> Result<u64> {
    let out = Command::new("curl")
        .args(["-sf", &format!("{url}/metrics")])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("hoard_registry_blob_bytes_served_total "))
        .and_then(|v| v.trim().parse().ok())
        .context("the registry's /metrics has no blob bytes")
}

pub(crate) fn compare(
    work: &Path,
    tree: &Tree,
    counts: &[usize],
    garage_binary: PathBuf,
) -> Result<()> {
    let hoard = hoard()?;
    let (_registry, url, _) = crate::fetch::serve(work, "fleet", tree)?;
    let garage = Garage::start_binary(garage_binary, &work.join("garage"));
    let unique = tree.bytes;
    println!(
        "  {} files, {:.1} MiB; boxes start together; times in s (min, median, max)",
        tree.files.len(),
        unique as f64 / f64::from(1 << 20)
    );
    // The anchor: one box without a tier, from the upstream alone.
    {
        let dir = work.join("anchor");
        std::fs::create_dir_all(&dir)?;
        let (daemon, socket) = crate::fetch::start_daemon(&hoard, &dir, &url)?;
        let alone = Box {
            _daemon: daemon,
            socket,
        };
        let took = get(&hoard, &alone, &dir.join("out"))?;
        row("1 box without a tier (the anchor)", &mut [took]);
        drop(alone);
        std::fs::remove_dir_all(&dir)?;
    }
    let mut single = None;
    for &n in counts {
        if n == 0 {
            bail!("a fleet of 0 boxes");
        }
        let prefix = format!("run-{n}");
        let boxes: Vec<Box> = (0..n)
            .map(|i| {
                start_box(
                    &hoard,
                    &work.join(format!("{prefix}/box{i}")),
                    &url,
                    &garage,
                    i % 3,
                    &prefix,
                )
            })
            .collect::<Result<_>>()?;
        let before = served(&url)?;
        let mut times: Vec<Duration> = std::thread::scope(|scope| {
            let handles: Vec<_> = boxes
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let (hoard, root) = (&hoard, work.join(format!("{prefix}/out{i}")));
                    scope.spawn(move || get(hoard, b, &root))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().map_err(|_| anyhow::anyhow!("a get panicked"))?)
                .collect::<Result<_>>()
        })?;
        let upstream = served(&url)? - before;
        let median = row(
            &format!(
                "{n} box(es) cold, upstream {:.3}× unique",
                upstream as f64 / unique as f64
            ),
            &mut times,
        );
        if n == 1 {
            single = Some(median);
        }
        let (settled, tiers) = settle(&hoard, &boxes)?;
        println!(
            "  their uploads to the tier ended     {:>9.3} s later",
            settled.as_secs_f64()
        );
        println!("    {}", summary(&tiers));
        // One box more, once the others are done: everything from the tier.
        if n == *counts.last().unwrap_or(&0) {
            let later = start_box(
                &hoard,
                &work.join(format!("{prefix}/later")),
                &url,
                &garage,
                0,
                &prefix,
            )?;
            let before = served(&url)?;
            let took = get(&hoard, &later, &work.join(format!("{prefix}/later-out")))?;
            let upstream = served(&url)? - before;
            let vs = single.map_or(String::new(), |s| {
                format!(
                    ", {:.2}× the single box's",
                    took.as_secs_f64() / s.as_secs_f64()
                )
            });
            println!(
                "  a later box, from the tier:        {:>9.3} s (upstream {upstream} B{vs})",
                took.as_secs_f64()
            );
        }
        drop(boxes);
        std::fs::remove_dir_all(work.join(&prefix))?;
    }
    Ok(())
}
