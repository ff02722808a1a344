//! `hoard-bench fetch`: cold fetch through the daemon against `curl` fetching the same
//! blob URLs from the same registry, warm `hoard get` against `cp -al`, and the daemon's
//! peak RSS. The registry and the daemon are the release `hoard` binary, as processes.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hoard_layout::DirRoot;
use hoard_types::{ArtifactName, Digest};

use crate::{Tree, median, ratio, row};

/// The `hoard` binary beside this one (same profile).
pub(crate) fn hoard() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name("hoard");
    if !path.exists() {
        bail!(
            "`{}` is missing: `cargo build --release -p hoard-cli` first",
            path.display()
        );
    }
    Ok(path)
}

pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn wait_for_socket(socket: &Path) -> Result<()> {
    for _ in 0..2000 {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    bail!("the daemon never listened on `{}`", socket.display())
}

/// Peak resident memory of a process, from `/proc` (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub(crate) fn timed(mut command: Command) -> Result<Duration> {
    let started = Instant::now();
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(started.elapsed())
}

/// `sync -f`: flushes the filesystem holding `dir`; returns how long it took.
fn sync(dir: &Path) -> Result<Duration> {
    let mut command = Command::new("sync");
    command.arg("-f").arg(dir);
    timed(command)
}

/// Starts `hoard registry serve` on a free port; its URL.
fn start_registry(hoard: &Path, root: &Path) -> Result<(Killed, String)> {
    let mut registry = Command::new(hoard)
        .args(["registry", "serve", "--listen", "127.0.0.1:0", "--root"])
        .arg(root)
        .env("HOARD_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut url = String::new();
    BufReader::new(registry.stdout.take().context("stdout")?).read_line(&mut url)?;
    Ok((Killed(registry), url.trim().to_owned()))
}

/// Fetches every blob URL with curl into `out`: `--parallel` for many blobs, one curl
/// per blob for a few.
fn curl_all(
    work: &Path,
    url: &str,
    digests: &[hoard_types::Digest],
    out: &Path,
    parallel: usize,
) -> Result<Duration> {
    fs::create_dir_all(out)?;
    if digests.len() > parallel {
        let config = work.join("curl.cfg");
        let mut cfg = fs::File::create(&config)?;
        for (i, d) in digests.iter().enumerate() {
            writeln!(
                cfg,
                "url = {url}/v1/blobs/{d}\noutput = {}/{i}",
                out.display()
            )?;
        }
        let mut command = Command::new("curl");
        command
            .args([
                "-sf",
                "--parallel",
                "--parallel-max",
                &parallel.to_string(),
                "-K",
            ])
            .arg(&config);
        return timed(command);
    }
    let started = Instant::now();
    let children: Vec<Child> = digests
        .iter()
        .enumerate()
        .map(|(i, d)| {
            Command::new("curl")
                .args(["-sf", "-o"])
                .arg(out.join(i.to_string()))
                .arg(format!("{url}/v1/blobs/{d}"))
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    for child in children {
        if !child.wait_with_output()?.status.success() {
            bail!("curl failed");
        }
    }
    Ok(started.elapsed())
}

/// One run with a fresh daemon and cache: cold get, warm get, `cp -al` of the cold tree,
/// recording the daemon's peak RSS in [`PEAK`]. What it writes stays until the caller
/// removes `work/run` (see [`compare`]).
fn hoard_run(hoard: &Path, work: &Path, url: &str, name: &str, one: &str) -> Result<[Duration; 4]> {
    let (daemon, socket) = start_daemon(hoard, work, url)?;
    let pid = daemon.0.id();
    let get = |root: &Path| {
        let mut command = Command::new(hoard);
        command
            .args(["get", &format!("acme/bench/{name}:v0"), "--root"])
            .arg(root)
            .env("HOARD_SOCKET", &socket)
            .env("HOARD_LOG", "warn");
        command
    };
    let (cold_root, warm_root, copy) = (work.join("cold"), work.join("warm"), work.join("cp"));
    let cold = timed(get(&cold_root))?;
    let warm = timed(get(&warm_root))?;
    let mut single = get(&work.join("one"));
    single.args(["--file", one]);
    let single = timed(single)?;
    let mut command = Command::new("cp");
    command.arg("-al").arg(&cold_root).arg(&copy);
    let cp = timed(command)?;
    PEAK.fetch_max(
        peak_rss_kib(pid).unwrap_or(0),
        std::sync::atomic::Ordering::Relaxed,
    );
    drop(daemon);
    Ok([cold, warm, cp, single])
}

/// A daemon with a fresh cache in `work`, answering on the socket returned.
pub(crate) fn start_daemon(hoard: &Path, work: &Path, url: &str) -> Result<(Killed, PathBuf)> {
    let socket = work.join("daemon.sock");
    let daemon = Command::new(hoard)
        .arg("daemon")
        .arg("--socket")
        .arg(&socket)
        .arg("--cache-dir")
        .arg(work.join("cache"))
        .arg("--upstream")
        .arg(url)
        .env("HOARD_LOG", "warn")
        .spawn()?;
    let daemon = Killed(daemon);
    wait_for_socket(&socket)?;
    Ok((daemon, socket))
}

/// `tree` imported into a registry in `work` as `acme/bench/NAME`, served on loopback:
/// the server, its URL and the version's blob digests.
pub(crate) fn serve(work: &Path, name: &str, tree: &Tree) -> Result<(Killed, String, Vec<Digest>)> {
    let hoard = hoard()?;
    let root = DirRoot::create(work.join(format!("{name}-registry")))?;
    let artifact = ArtifactName::new("acme", "bench", name)?;
    let started = Instant::now();
    let committed = hoard_registry::import_dir(
        &root,
        &artifact,
        &tree.root,
        vec![],
        None,
        serde_json::json!({}),
    )?;
    println!(
        "  registry import:                   {:>8.3} s",
        started.elapsed().as_secs_f64()
    );
    let (registry, url) = start_registry(&hoard, root.root())?;
    let digests = committed
        .version
        .manifest
        .entries
        .values()
        .map(|e| e.digest)
        .collect();
    Ok((registry, url, digests))
}

/// A small artifact fetched cold while another process has `dirty_mib` MiB of unsynced
/// writes on the same filesystem (a training job writing a checkpoint), against the
/// same fetch with nothing else to write back. A cold get makes its blobs durable; it
/// should not wait for the other process's data.
pub(crate) fn beside_a_writer(
    work: &Path,
    tree: &Tree,
    runs: usize,
    dirty_mib: usize,
) -> Result<()> {
    let hoard = hoard()?;
    let (_registry, url, _) = serve(work, "beside", tree)?;
    let dir = work.join("beside-runs");
    fs::create_dir_all(&dir)?;
    let (_daemon, socket) = start_daemon(&hoard, &dir, &url)?;
    let hoard_cmd = |args: &[&str]| {
        let mut command = Command::new(&hoard);
        command
            .args(args)
            .env("HOARD_SOCKET", &socket)
            .env("HOARD_LOG", "warn");
        command
    };
    let (mut idle, mut beside) = (Vec::new(), Vec::new());
    for run in 0..runs {
        for (dirty, samples) in [(false, &mut idle), (true, &mut beside)] {
            let root = dir.join(format!("get-{run}-{dirty}"));
            let checkpoint = dir.join("checkpoint");
            if dirty {
                let chunk = vec![7u8; 1 << 20];
                let mut file = fs::File::create(&checkpoint)?;
                for _ in 0..dirty_mib {
                    file.write_all(&chunk)?;
                }
            }
            let root_arg = root.to_string_lossy().into_owned();
            samples.push(timed(hoard_cmd(&[
                "get",
                "acme/bench/beside:v0",
                "--root",
                &root_arg,
            ]))?);
            timed(hoard_cmd(&["gc", "--target", "0"]))?;
            if dirty {
                fs::remove_file(&checkpoint)?;
            }
            sync(work)?;
        }
    }
    println!(
        "  hoard get, cold, {} files:          {:>8.3} s",
        tree.files.len(),
        median(&mut idle).as_secs_f64()
    );
    println!(
        "  the same beside {dirty_mib} MiB unsynced: {:>8.3} s",
        median(&mut beside).as_secs_f64()
    );
    fs::remove_dir_all(&dir)?;
    Ok(())
}

/// The daemon's peak RSS over all runs, KiB.
static PEAK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Cold and warm runs for one tree.
pub(crate) fn compare(
    work: &Path,
    name: &str,
    tree: &Tree,
    parallel: usize,
    runs: usize,
) -> Result<()> {
    let hoard = hoard()?;
    let (_registry, url, digests) = serve(work, name, tree)?;
    // The file a warm single-file get asks for.
    let one = tree.files[0]
        .strip_prefix(&tree.root)
        .context("the tree's files are under its root")?
        .to_string_lossy()
        .into_owned();
    let mut s = Series::default();
    PEAK.store(0, std::sync::atomic::Ordering::Relaxed);
    // Nothing is deleted until every run is done: on ext4 without a journal (this
    // project's VMs), creating files within a minute of deleting thousands is several
    // times slower (the inode allocator skips recently deleted inodes one by one), which
    // once made whichever side ran after a deletion look slow.
    let kept = work.join(format!("{name}-runs"));
    for run in 0..runs {
        let run_dir = kept.join(run.to_string());
        fs::create_dir_all(&run_dir)?;
        sync(work)?;
        // Each run alternates the anchor and hoard, so that the disk's drift reaches both.
        let fetched = curl_all(&run_dir, &url, &digests, &run_dir.join("curl"), parallel)?;
        s.curl.push(fetched);
        // What the daemon also does: make the bytes durable (it syncs before it answers).
        s.durable.push(fetched + sync(work)?);
        let [c, w, p, one] = hoard_run(&hoard, &run_dir, &url, name, &one)?;
        s.cold.push(c);
        s.warm.push(w);
        s.cp.push(p);
        s.single.push(one);
    }
    fs::remove_dir_all(&kept)?;
    let mib = tree.bytes as f64 / 1_048_576.0;
    println!(
        "  {:<34} {:>9} {:>9} {:>9}",
        "(seconds)", "min", "median", "max"
    );
    row(
        &format!("curl --parallel-max {parallel} (blob URLs)"),
        &mut s.curl,
    );
    row("curl, then `sync -f` (durable)", &mut s.durable);
    let cold = row("hoard get, cold (incl. CLI)", &mut s.cold);
    row("hoard get, warm (incl. CLI)", &mut s.warm);
    row("cp -al of the same tree", &mut s.cp);
    row("hoard get --file, warm (one file)", &mut s.single);
    println!(
        "  cold: {:.0} MiB/s; ratios of medians (goal <= 1.00): cold / curl {:.2}, cold / durable curl {:.2}, warm / cp -al {:.2}",
        mib / cold.as_secs_f64(),
        ratio(&s.cold, &s.curl),
        ratio(&s.cold, &s.durable),
        ratio(&s.warm, &s.cp)
    );
    let peak = PEAK.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "  daemon peak RSS over the runs: {:.1} MiB (goal: < 64); its scrub ran at the default rate",
        peak as f64 / 1024.0
    );
    Ok(())
}

/// One tree's timings, a sample per run.
#[derive(Default)]
struct Series {
    curl: Vec<Duration>,
    durable: Vec<Duration>,
    cold: Vec<Duration>,
    warm: Vec<Duration>,
    cp: Vec<Duration>,
    single: Vec<Duration>,
}
