//! hoard's benchmark. `materialize` builds synthetic trees, ingests them into a fresh
//! cache, and reports hoard's warm materialization next to `cp -al` of the same tree on
//! the same filesystem, as a ratio (the design's budget: ≤ 1.0 for 20,000 files).
//!
//! `fetch` runs the release `hoard` binary as a registry and a daemon and reports a cold
//! `hoard get` next to `curl --parallel` fetching the same blob URLs, a warm `hoard get`
//! next to `cp -al`, and the daemon's peak RSS.
//!
//! `fleet` runs 1, 4 and 8 daemons with caches of their own cold-starting one artifact
//! together through a fleet tier on a three-node Garage cluster: the upstream's bytes ÷
//! the artifact's unique bytes, and the boxes' cold times.
//!
//! Run it in release mode: `cargo run --release -p hoard-bench -- materialize` (or `fetch`,
//! after `cargo build --release -p hoard-cli`).

#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hoard_store::{LinkMode, Store};
use hoard_types::{Entry, Manifest, PathPrefix, RelPath};
use rayon::prelude::*;

mod fetch;
mod fleet;
mod hf;

#[derive(Parser)]
#[command(about = "hoard's benchmark")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Warm materialization vs `cp -al`, for a many-small-files tree and a few-large-files tree.
    Materialize {
        /// Files in the small-files tree (3 levels, 1–64 KiB each).
        #[arg(long, default_value_t = 20_000)]
        files: usize,
        /// Number of large files.
        #[arg(long, default_value_t = 4)]
        large: usize,
        /// Size of each large file, in MiB.
        #[arg(long, default_value_t = 256)]
        large_mib: usize,
        /// Timed repetitions of each measurement (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Where to build the trees and the cache (they must share a filesystem).
        #[arg(long, env = "HOARD_BENCH_DIR")]
        dir: Option<PathBuf>,
    },
    /// Cold `hoard get` vs `curl --parallel`, warm `hoard get` vs `cp -al`, daemon RSS.
    Fetch {
        #[arg(long, default_value_t = 20_000)]
        files: usize,
        #[arg(long, default_value_t = 4)]
        large: usize,
        #[arg(long, default_value_t = 256)]
        large_mib: usize,
        /// curl's `--parallel-max`.
        #[arg(long, default_value_t = 16)]
        parallel: usize,
        /// Runs, each alternating curl and hoard (min, median and max are reported).
        #[arg(long, default_value_t = 7)]
        runs: usize,
        /// MiB another process leaves unsynced while a 5-file artifact is fetched cold
        /// (0: skip that measurement).
        #[arg(long, default_value_t = 2048)]
        beside_mib: usize,
        #[arg(long, env = "HOARD_BENCH_DIR")]
        dir: Option<PathBuf>,
    },
    /// Fleets of 1, 4, 8 boxes cold-starting one artifact together through a fleet tier
    /// on Garage: upstream bytes ÷ unique bytes, cold times, and a later box from the tier.
    Fleet {
        #[arg(long, default_value_t = 20_000)]
        files: usize,
        #[arg(long, default_value_t = 4)]
        large: usize,
        #[arg(long, default_value_t = 256)]
        large_mib: usize,
        /// Fleet sizes, run one after the other.
        #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
        boxes: Vec<usize>,
        /// The Garage binary [default: `$HOARD_GARAGE`; `scripts/garage` builds one].
        #[arg(long, env = "HOARD_GARAGE")]
        garage: PathBuf,
        #[arg(long, env = "HOARD_BENCH_DIR")]
        dir: Option<PathBuf>,
    },
    /// The Hub: cold `hoard get --hf-cache` vs `huggingface_hub`'s `snapshot_download`,
    /// and a second user's cache (hardlinks vs a second download), from a fake Hub.
    Hf {
        #[arg(long, default_value_t = 20_000)]
        files: usize,
        #[arg(long, default_value_t = 4)]
        large: usize,
        #[arg(long, default_value_t = 256)]
        large_mib: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// A Python with `huggingface_hub` [default: `$HOARD_HF_PYTHON`, else `python3`].
        #[arg(long)]
        python: Option<String>,
        #[arg(long, env = "HOARD_BENCH_DIR")]
        dir: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Commands::Fetch {
            files,
            large,
            large_mib,
            parallel,
            runs,
            beside_mib,
            dir,
        } => {
            let work = work_dir(dir)?;
            println!(
                "hoard-bench fetch in {} ({runs} runs, each alternating the anchor and hoard)",
                work.path().display()
            );
            // The large tree first: after the small tree's runs, hundreds of thousands of
            // inodes are in use, and even `cp -al` of 4 files took 4.7 ms there, not 2.
            if large > 0 {
                let large_tree = tree(work.path(), "large", large, |_| large_mib << 20)?;
                fetch::compare(work.path(), "large", &large_tree, parallel, runs)?;
            }
            if files > 0 {
                let small = small_tree(work.path(), files)?;
                fetch::compare(work.path(), "small", &small, parallel, runs)?;
            }
            if beside_mib > 0 {
                let few = tree(work.path(), "beside a writer", 5, |_| 16 << 10)?;
                fetch::beside_a_writer(work.path(), &few, runs, beside_mib)?;
            }
            Ok(())
        }
        Commands::Fleet {
            files,
            large,
            large_mib,
            boxes,
            garage,
            dir,
        } => {
            let work = work_dir(dir)?;
            println!("hoard-bench fleet in {}", work.path().display());
            let both = tree(work.path(), "fleet", large + files, |i| {
                if i < large {
                    large_mib << 20
                } else {
                    1024 + (mix(i as u64) % (63 * 1024)) as usize
                }
            })?;
            fleet::compare(work.path(), &both, &boxes, garage)
        }
        Commands::Hf {
            files,
            large,
            large_mib,
            runs,
            python,
            dir,
        } => {
            let python = hf::python(python);
            let work = work_dir(dir)?;
            println!(
                "hoard-bench hf in {} ({runs} runs each, median; {python})",
                work.path().display()
            );
            if files > 0 {
                let small = small_tree(work.path(), files)?;
                hf::compare(work.path(), "small", &small, runs, &python)?;
            }
            if large > 0 {
                let large_tree = tree(work.path(), "large", large, |_| large_mib << 20)?;
                hf::compare(work.path(), "large", &large_tree, runs, &python)?;
            }
            Ok(())
        }
        Commands::Materialize {
            files,
            large,
            large_mib,
            runs,
            dir,
        } => {
            let work = work_dir(dir)?;
            println!(
                "hoard-bench materialize in {} ({} runs each, median)",
                work.path().display(),
                runs
            );
            let small = tree(work.path(), "small", files, |i| {
                1024 + (mix(i as u64) % (63 * 1024)) as usize
            })?;
            compare(work.path(), "small", &small, runs)?;
            if large > 0 {
                let large_tree = tree(work.path(), "large", large, |_| large_mib << 20)?;
                compare(work.path(), "large", &large_tree, runs)?;
            }
            Ok(())
        }
    }
}

/// A fresh directory for one invocation, in `dir` (default: the system temp dir).
fn work_dir(dir: Option<PathBuf>) -> Result<tempfile::TempDir> {
    let base = dir.unwrap_or_else(std::env::temp_dir);
    fs::create_dir_all(&base).with_context(|| format!("creating `{}`", base.display()))?;
    Ok(tempfile::Builder::new()
        .prefix("hoard-bench-")
        .tempdir_in(&base)?)
}

/// The many-small-files tree: `files` files of 1–64 KiB.
fn small_tree(work: &Path, files: usize) -> Result<Tree> {
    tree(work, "small", files, |i| {
        1024 + (mix(i as u64) % (63 * 1024)) as usize
    })
}

/// A generated source tree: its root and files.
struct Tree {
    root: PathBuf,
    files: Vec<PathBuf>,
    bytes: u64,
}

/// Writes `count` files of pseudo-random bytes, three directory levels deep
/// (`a00/b00/f00000`), each unique.
fn tree(
    work: &Path,
    name: &str,
    count: usize,
    size_of: impl Fn(usize) -> usize + Sync,
) -> Result<Tree> {
    let root = work.join(format!("{name}-src"));
    let started = Instant::now();
    let paths: Vec<PathBuf> = (0..count)
        .map(|i| root.join(format!("a{:02}/b{:02}/f{i:05}", i % 20, (i / 20) % 20)))
        .collect();
    let bytes: u64 = paths
        .par_iter()
        .enumerate()
        .map(|(i, path)| -> Result<u64> {
            fs::create_dir_all(path.parent().expect("generated paths have parents"))?;
            let size = size_of(i);
            let mut file = fs::File::create(path)?;
            let mut state = mix(i as u64 + 1);
            let mut block = vec![0u8; size.min(1 << 20)];
            let mut left = size;
            while left > 0 {
                for chunk in block.chunks_mut(8) {
                    state = mix(state);
                    chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
                }
                let n = left.min(block.len());
                file.write_all(&block[..n])?;
                left -= n;
            }
            Ok(size as u64)
        })
        .sum::<Result<u64>>()?;
    println!(
        "\n{name}: {count} files, {} MiB, generated in {:.1} s",
        bytes >> 20,
        started.elapsed().as_secs_f64()
    );
    Ok(Tree {
        root,
        files: paths,
        bytes,
    })
}

fn compare(work: &Path, name: &str, tree: &Tree, runs: usize) -> Result<()> {
    let cache_dir = work.join(format!("{name}-cache"));
    let store = Store::open(&cache_dir)?;
    let started = Instant::now();
    let ingested = store.ingest_files(&tree.files)?;
    let ingest = started.elapsed();
    println!(
        "  ingest (hash, copy, one syncfs):   {:>8.3} s  ({:.0} MiB/s)",
        ingest.as_secs_f64(),
        tree.bytes as f64 / 1_048_576.0 / ingest.as_secs_f64()
    );
    let mut manifest = Manifest::new();
    for (path, ingested) in tree.files.iter().zip(&ingested) {
        let rel = path
            .strip_prefix(&tree.root)?
            .to_str()
            .context("generated paths are UTF-8")?;
        manifest.entries.insert(
            RelPath::new(rel)?,
            Entry {
                digest: ingested.key.digest,
                exec: ingested.key.exec,
                reference: None,
                size: ingested.size,
            },
        );
    }

    let mut hoard = Vec::new();
    let mut noop = Vec::new();
    let mut cp = Vec::new();
    let mut kept = Vec::new();
    for run in 0..runs {
        let dest = work.join(format!("{name}-hoard-{run}"));
        let started = Instant::now();
        let report = store.materialize(&manifest, &PathPrefix::all(), &dest, LinkMode::Hardlink)?;
        hoard.push(started.elapsed());
        if report.placed != tree.files.len() as u64 {
            bail!(
                "materialize placed {} of {} files",
                report.placed,
                tree.files.len()
            );
        }
        let started = Instant::now();
        let again = store.materialize(&manifest, &PathPrefix::all(), &dest, LinkMode::Hardlink)?;
        noop.push(started.elapsed());
        if again.unchanged != tree.files.len() as u64 {
            bail!("re-materialize changed {} files", again.placed);
        }

        let copy = work.join(format!("{name}-cp-{run}"));
        let started = Instant::now();
        let status = Command::new("cp")
            .arg("-al")
            .arg(&tree.root)
            .arg(&copy)
            .status()
            .context("running `cp -al`")?;
        cp.push(started.elapsed());
        if !status.success() {
            bail!("`cp -al` failed: {status}");
        }
        // Kept until every run is done (see `fetch::compare`: deleting thousands of
        // files slows the next creations on this disk).
        kept.push(dest);
        kept.push(copy);
    }
    for dir in kept {
        fs::remove_dir_all(dir)?;
    }
    println!(
        "  {:<34} {:>9} {:>9} {:>9}",
        "(seconds)", "min", "median", "max"
    );
    row("hoard materialize (hardlink)", &mut hoard);
    row("cp -al of the same tree", &mut cp);
    row("hoard re-materialize (no-op)", &mut noop);
    println!(
        "  ratio of medians hoard / cp -al: {:.2} (budget: <= 1.00)",
        ratio(&hoard, &cp)
    );
    drop(store);
    fs::remove_dir_all(&cache_dir)?;
    fs::remove_dir_all(&tree.root)?;
    Ok(())
}

/// Prints min, median and max of `samples` (sorting them); returns the median.
pub(crate) fn row(label: &str, samples: &mut [Duration]) -> Duration {
    let median = median(samples);
    println!(
        "  {label:<34} {:>9.4} {:>9.4} {:>9.4}",
        samples[0].as_secs_f64(),
        median.as_secs_f64(),
        samples[samples.len() - 1].as_secs_f64()
    );
    median
}

/// The ratio of the medians of two sorted series.
pub(crate) fn ratio(a: &[Duration], b: &[Duration]) -> f64 {
    a[a.len() / 2].as_secs_f64() / b[b.len() / 2].as_secs_f64()
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// splitmix64: cheap, deterministic, good enough to make every file unique.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
