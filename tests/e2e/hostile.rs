#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

//! Nothing an upstream or a caller sends can crash, hang or wipe the cache (issue 21): a
//! hostile `dir://` root (absurd sizes, a FIFO or a directory where a blob should be, a
//! truncated version file), the cache or its parent as a destination, SIGTERM with a
//! request stuck.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hoard_tests::{DaemonProcess, hoard_on as hoard, import};
use hoard_types::Version;

/// A `dir://` root with `acme/vision/data` (`a.bin`, `b.txt`), and a daemon on it.
struct Root {
    tmp: tempfile::TempDir,
    daemon: DaemonProcess,
}

impl Root {
    fn new() -> Self {
        Self::with_args(&[])
    }

    /// [`Self::new`] with more `hoard daemon` arguments.
    fn with_args(extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a.bin"), vec![1u8; 1100]).unwrap();
        std::fs::write(src.join("b.txt"), b"twenty-two bytes long!").unwrap();
        import(&tmp.path().join("root"), "acme/vision/data", &src);
        let daemon = DaemonProcess::start_with(
            &tmp.path().join("d.sock"),
            &tmp.path().join("cache"),
            &format!("dir://{}", tmp.path().join("root").display()),
            extra,
        );
        Self { tmp, daemon }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn hoard(&self, args: &[&str]) -> std::process::Output {
        hoard(&self.daemon.socket, self.tmp.path(), args)
    }

    /// `hoard get`, which must fail: its error.
    fn refused(&self, args: &[&str]) -> String {
        let out = self.hoard(args);
        assert!(
            !out.status.success(),
            "{args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The daemon still answers, and a clean get still works.
    fn still_serves(&self) {
        let out = self.hoard(&["get", "acme/vision/data:v0", "--root", &self.fresh()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn fresh(&self) -> String {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.path(&format!("out-{n}")).display().to_string()
    }

    /// Writes `vN` of `acme/vision/data` as `v0` changed by `change` (its digest kept
    /// right, so only the change is hostile).
    fn forge(&self, n: u32, change: impl FnOnce(&mut Version)) {
        let dir = self.path("root/artifacts/acme/vision/data/versions");
        let mut version: Version =
            serde_json::from_slice(&std::fs::read(dir.join("v0.json")).unwrap()).unwrap();
        version.version = format!("v{n}");
        change(&mut version);
        version.digest = version.manifest.digest();
        std::fs::write(
            dir.join(format!("v{n}.json")),
            serde_json::to_vec(&version).unwrap(),
        )
        .unwrap();
    }

    /// The blob file of `bytes` in the root.
    fn root_blob(&self, bytes: &[u8]) -> PathBuf {
        let hex = hoard_types::Digest::of(bytes).to_hex();
        self.path(&format!("root/blobs/{}/{hex}", &hex[..2]))
    }
}

fn entry<'v>(version: &'v mut Version, path: &str) -> &'v mut hoard_types::Entry {
    version
        .manifest
        .entries
        .get_mut(&hoard_types::RelPath::new(path).unwrap())
        .unwrap()
}

/// Finding 1: a manifest size of 1 PiB (or 10 TiB) for a 1,100-byte blob is refused with
/// a clear error before anything is allocated or downloaded; the daemon serves on.
#[test]
fn an_absurd_size_in_a_manifest_is_refused_and_the_daemon_serves_on() {
    let root = Root::new();
    root.forge(1, |v| entry(v, "a.bin").size = 1 << 50);
    root.forge(2, |v| entry(v, "a.bin").size = 10 << 40);
    for (n, size) in [(1, "1024.0 TiB"), (2, "10.0 TiB")] {
        let err = root.refused(&[
            "get",
            &format!("acme/vision/data:v{n}"),
            "--root",
            &root.fresh(),
        ]);
        assert!(err.contains(size) && err.contains("free"), "{err}");
    }
    root.still_serves();
}

/// Finding 3: a FIFO where a blob should be does not hang the get, and SIGTERM ends the
/// daemon within seconds whatever it was doing. A directory there reads as one.
#[test]
fn a_fifo_or_a_directory_for_a_blob_is_an_error_not_a_hang() {
    let root = Root::new();
    let blob = root.root_blob(b"twenty-two bytes long!");
    std::fs::remove_file(&blob).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &blob,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let started = Instant::now();
    let err = root.refused(&["get", "acme/vision/data:v0", "--root", &root.fresh()]);
    assert!(started.elapsed() < Duration::from_secs(20), "the get hung");
    assert!(err.contains("FIFO"), "{err}");
    std::fs::remove_file(&blob).unwrap();
    std::fs::create_dir(&blob).unwrap();
    let err = root.refused(&["get", "acme/vision/data:v0", "--root", &root.fresh()]);
    assert!(err.contains("a directory"), "{err}");
    assert!(!err.contains("4096 bytes"), "{err}");

    let started = Instant::now();
    let status = root.daemon.terminate();
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "SIGTERM took {:?}",
        started.elapsed()
    );
}

/// Finding 9: a truncated version file is an invalid answer, said as such, not "cannot
/// reach the upstream".
#[test]
fn a_truncated_version_file_is_an_invalid_answer() {
    let root = Root::new();
    let dir = root.path("root/artifacts/acme/vision/data/versions");
    let json = std::fs::read(dir.join("v0.json")).unwrap();
    std::fs::write(dir.join("v1.json"), &json[..json.len() / 2]).unwrap();
    let err = root.refused(&["get", "acme/vision/data:v1", "--root", &root.fresh()]);
    assert!(
        err.contains("holds a bad file") && err.contains("v1.json"),
        "{err}"
    );
    assert!(!err.contains("reach"), "{err}");
    root.still_serves();
}

/// Finding 2: the cache, a directory inside it, and a directory that contains it are no
/// destinations, with or without `--clean`; nothing in the cache changes.
#[test]
fn the_cache_is_no_destination() {
    let root = Root::new();
    root.still_serves();
    let cache = root.path("cache");
    let before = tree(&cache);
    for dest in [
        cache.clone(),
        cache.join("blobs-v1"),
        cache.join("tmp/new"),
        cache.join("deep/er/new"),
        root.tmp.path().to_owned(),
    ] {
        for extra in [&[][..], &["--clean"]] {
            let dest = dest.display().to_string();
            let args = [&["get", "acme/vision/data:v0", "--root", &dest][..], extra].concat();
            let err = root.refused(&args);
            assert!(
                err.contains("the daemon's cache directory"),
                "{args:?}: {err}"
            );
        }
    }
    assert!(!cache.join("deep").exists() && !cache.join("tmp/new").exists());
    assert_eq!(tree(&cache), before, "the cache changed");
    root.still_serves();
}

/// Every path below `dir` (the index's files change by themselves, so not below it).
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.ends_with("index-v1") {
                continue;
            }
            if path.is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Changes one byte of a cached blob in place, then restores its mode and mtime: rot that
/// the metadata check cannot see.
fn rot(blob: &Path) {
    use std::io::{Seek, Write};
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(blob, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut file = std::fs::OpenOptions::new().write(true).open(blob).unwrap();
    file.seek(std::io::SeekFrom::Start(10)).unwrap();
    file.write_all(b"\xff").unwrap();
    drop(file);
    std::fs::set_permissions(blob, std::fs::Permissions::from_mode(0o444)).unwrap();
    let one = rustix::fs::Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        blob,
        &rustix::fs::Timestamps {
            last_access: one,
            last_modification: one,
        },
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
}

/// Finding 5: a copy reads every byte, so it hashes them: rotted bytes are never copied
/// out (the blob is fetched again). Without any get, the scrub finds them.
#[test]
fn rotted_bytes_are_caught_by_a_copy_and_by_the_scrub() {
    let root = Root::with_args(&["--scrub-rate", "off"]);
    root.still_serves();
    let blob = cache_blob(&root.path("cache"), &[1u8; 1100]);
    rot(&blob);
    let out = root.path("copy");
    let got = root.hoard(&[
        "get",
        "acme/vision/data:v0",
        "--root",
        &out.display().to_string(),
        "--mode",
        "copy",
    ]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(std::fs::read(out.join("a.bin")).unwrap(), vec![1u8; 1100]);
    assert_eq!(
        std::fs::read(&blob).unwrap(),
        vec![1u8; 1100],
        "fetched again"
    );

    let scrubbed = Root::with_args(&["--scrub-rate", "64MiB/s"]);
    scrubbed.still_serves();
    let blob = cache_blob(&scrubbed.path("cache"), &[1u8; 1100]);
    rot(&blob);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = scrubbed.hoard(&["status"]);
        let text = String::from_utf8_lossy(&status.stdout).into_owned();
        if text.contains("1 bad blob(s) found, 1 fetched again") {
            break;
        }
        assert!(Instant::now() < deadline, "the scrub found nothing: {text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(std::fs::read(&blob).unwrap(), vec![1u8; 1100]);
}

/// The blob file of `bytes` in a cache.
fn cache_blob(cache: &Path, bytes: &[u8]) -> PathBuf {
    let hex = hoard_types::Digest::of(bytes).to_hex();
    cache.join("blobs-v1").join(&hex[..2]).join(hex)
}

/// A small tmpfs, unmounted on drop (root only).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs failed");
        Self(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

/// Fills the filesystem of `dir` with one file, to the last byte.
fn fill(file: &Path) {
    use std::io::Write;
    let mut out = std::fs::File::create(file).unwrap();
    let block = vec![0u8; 1 << 16];
    while out.write_all(&block).is_ok() {}
    let small = [0u8; 512];
    while out.write_all(&small).is_ok() {}
    let _ = out.sync_all();
}

/// Finding 6: with the disk full (by another program), a warm get of a cached version by
/// its alias works (it needs no new bytes, so it writes nothing); a version too big to fit
/// is refused clearly; and once space is freed, the next cold get works at once.
#[test]
#[ignore = "needs root: scripts/test runs it when run as root, as CI does"]
fn a_full_disk_refuses_only_what_needs_room() {
    assert!(
        rustix::process::geteuid().is_root(),
        "mounting a small tmpfs needs root"
    );
    let tmp = tempfile::tempdir().unwrap();
    for (name, len) in [("small", 4096), ("big", 3 << 20), ("later", 8192)] {
        let src = tmp.path().join(format!("src-{name}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f.bin"), vec![name.len() as u8; len]).unwrap();
        import(
            &tmp.path().join("root"),
            &format!("acme/vision/{name}"),
            &src,
        );
    }
    let fs = Tmpfs::mount("48m");
    let daemon = DaemonProcess::start(
        &tmp.path().join("d.sock"),
        &fs.0.path().join("cache"),
        &format!("dir://{}", tmp.path().join("root").display()),
    );
    let get = |name: &str, root: &str| {
        let root = fs.0.path().join(root).display().to_string();
        hoard(
            &daemon.socket,
            tmp.path(),
            &["get", &format!("acme/vision/{name}"), "--root", &root],
        )
    };
    let out = get("small", "warm-0");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    fill(&fs.0.path().join("filler"));
    for round in 1..4 {
        let out = get("small", &format!("warm-{round}"));
        assert!(
            out.status.success(),
            "warm get on a full disk: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = get("big", "big");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("free"), "{err}");

    std::fs::remove_file(fs.0.path().join("filler")).unwrap();
    let started = Instant::now();
    let out = get("later", "later");
    assert!(
        out.status.success(),
        "after freeing space: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let health = daemon.get("/v1/health").unwrap();
    assert!(health.contains("\"ok\""), "{health}");
}

/// Finding 9: `HEAD /v1/health` answers like `GET` (load balancers and probes use it).
#[test]
fn head_of_health_answers_like_get() {
    use std::io::{Read, Write};
    let root = Root::new();
    let mut stream = std::os::unix::net::UnixStream::connect(&root.daemon.socket).unwrap();
    stream
        .write_all(b"HEAD /v1/health HTTP/1.1\r\nHost: hoard\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
