#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

//! `hoard daemon` and `hoard get` as processes, against a real registry.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hoard_tests::{DaemonProcess, RegistryProcess, binary};

/// A registry with `acme/vision/bike` (v0, alias `best`), and a daemon in front of it.
struct Setup {
    tmp: tempfile::TempDir,
    registry: Option<RegistryProcess>,
    daemon: Option<DaemonProcess>,
}

const IMAGES: usize = 30;

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

impl Setup {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        for i in 0..IMAGES {
            write(
                &src.join(format!("images/bikes/{i:03}.png")),
                format!("bike {i}").repeat(100).as_bytes(),
            );
        }
        write(&src.join("images/cars/car.png"), b"car");
        write(&src.join("labels.csv"), b"bike,1\n");
        write(
            &src.join("imagesX.txt"),
            b"not under images/ but shares the string prefix",
        );
        let mut this = Self {
            tmp,
            registry: None,
            daemon: None,
        };
        this.import(&["--alias", "best"]);
        this.registry = Some(RegistryProcess::start(&this.root(), &[]));
        this.start_daemon();
        this
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("registry")
    }

    fn src(&self) -> PathBuf {
        self.tmp.path().join("src")
    }

    fn socket(&self) -> PathBuf {
        self.tmp.path().join("run/hoard.sock")
    }

    fn cache(&self) -> PathBuf {
        self.tmp.path().join("cache")
    }

    fn registry(&self) -> &RegistryProcess {
        self.registry.as_ref().unwrap()
    }

    fn start_daemon(&mut self) {
        let url = self.registry().url.clone();
        self.daemon = Some(DaemonProcess::start(&self.socket(), &self.cache(), &url));
    }

    fn import(&self, extra: &[&str]) {
        let mut args = vec!["registry", "import", "--root"];
        let root = self.root();
        let src = self.src();
        args.push(root.to_str().unwrap());
        args.push("acme/vision/bike");
        args.push(src.to_str().unwrap());
        args.extend_from_slice(extra);
        let out = Command::new(binary("hoard")).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn hoard(&self, args: &[&str]) -> Output {
        Command::new(binary("hoard"))
            .args(args)
            .env("HOARD_SOCKET", self.socket())
            .env("HOARD_LOG", "warn")
            .current_dir(self.tmp.path())
            .output()
            .unwrap()
    }

    /// `hoard get REF --root DIR --json …`, which must succeed; its summary.
    fn get(&self, reference: &str, root: &str, extra: &[&str]) -> serde_json::Value {
        let dir = self.tmp.path().join(root);
        let mut args = vec!["get", reference, "--json", "--root", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = self.hoard(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn out(&self, root: &str) -> PathBuf {
        self.tmp.path().join(root)
    }
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                found.push(
                    entry
                        .path()
                        .strip_prefix(dir)
                        .unwrap()
                        .display()
                        .to_string(),
                );
            }
        }
    }
    found.sort();
    found
}

#[test]
fn cold_then_warm_and_the_files_are_cache_blobs() {
    let s = Setup::new();
    let cold = s.get("acme/vision/bike:latest", "job1", &[]);
    assert_eq!(cold["fetched_blobs"], IMAGES + 3);
    assert_eq!(cold["placed"], IMAGES + 3);
    assert_eq!(s.registry().blob_gets(), (IMAGES + 3) as u64);
    assert_eq!(files_under(&s.out("job1")), files_under(&s.src()));
    for file in files_under(&s.src()) {
        assert_eq!(
            std::fs::read(s.out("job1").join(&file)).unwrap(),
            std::fs::read(s.src().join(&file)).unwrap()
        );
    }

    let warm = s.get("acme/vision/bike:latest", "job2", &[]);
    assert_eq!(warm["fetched_blobs"], 0);
    assert_eq!(warm["mode"], "hardlink");
    assert_eq!(
        s.registry().blob_gets(),
        (IMAGES + 3) as u64,
        "nothing fetched again"
    );
    let digest = hoard_types::Digest::of(b"bike,1\n").to_hex();
    let blob = s.cache().join("blobs-v1").join(&digest[..2]).join(&digest);
    let inode = std::fs::metadata(&blob).unwrap().ino();
    assert_eq!(
        std::fs::metadata(s.out("job1/labels.csv")).unwrap().ino(),
        inode
    );
    assert_eq!(
        std::fs::metadata(s.out("job2/labels.csv")).unwrap().ino(),
        inode
    );

    // The default root is ./artifacts/NAME:vN, like W&B.
    let out = s.hoard(&["get", "acme/vision/bike:best"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.tmp.path().join("artifacts/bike:v0/labels.csv").exists());
    assert!(String::from_utf8_lossy(&out.stdout).contains("placed 33"));

    let status = s.hoard(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["blobs"], IMAGES + 3);
    assert_eq!(status["misses"], IMAGES + 3);

    let ls = s.hoard(&["ls", "acme/vision/bike:v0"]);
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert_eq!(
        ls.lines().count(),
        1 + IMAGES + 3,
        "a header, then a line per file"
    );
    let labels = ls.lines().find(|l| l.starts_with("labels.csv")).unwrap();
    assert_eq!(
        labels.split_whitespace().collect::<Vec<_>>(),
        ["labels.csv", "7", "B", digest.as_str()],
        "{ls}"
    );
}

#[test]
fn path_prefix_and_file_fetch_and_write_only_what_they_name() {
    let s = Setup::new();
    let got = s.get(
        "acme/vision/bike",
        "prefix",
        &["--path-prefix", "images/bikes/"],
    );
    assert_eq!(got["files"], IMAGES);
    assert_eq!(s.registry().blob_gets(), IMAGES as u64);
    assert_eq!(files_under(&s.out("prefix")).len(), IMAGES);

    // W&B's string prefix: `images` also matches `imagesX.txt`.
    let got = s.get(
        "acme/vision/bike",
        "string-prefix",
        &["--path-prefix", "images"],
    );
    assert_eq!(got["files"], IMAGES + 2);
    assert_eq!(got["fetched_blobs"], 2, "only the two not fetched before");

    let got = s.get("acme/vision/bike", "one", &["--file", "labels.csv"]);
    assert_eq!(got["files"], 1);
    assert_eq!(files_under(&s.out("one")), ["labels.csv"]);
    assert_eq!(s.registry().blob_gets(), (IMAGES + 3) as u64);

    let out = s.hoard(&[
        "get",
        "acme/vision/bike",
        "--file",
        "nope.txt",
        "--root",
        "x",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no file `nope.txt`"));
    assert!(!s.out("x").exists(), "nothing written for a failed request");
}

#[test]
fn several_files_and_globs_select_as_hf_download_does() {
    let s = Setup::new();
    let got = s.get(
        "acme/vision/bike",
        "two",
        &["--file", "labels.csv", "--file", "images/cars/car.png"],
    );
    assert_eq!(got["files"], 2);
    assert_eq!(
        files_under(&s.out("two")),
        ["images/cars/car.png", "labels.csv"]
    );
    assert_eq!(s.registry().blob_gets(), 2, "only what was named");

    // `*` also matches `/` (fnmatch), `dir/` is all under it; excludes win.
    let got = s.get(
        "acme/vision/bike",
        "globs",
        &[
            "--include",
            "images/*.png",
            "--exclude",
            "images/bikes/00*",
            "--exclude",
            "images/cars/",
        ],
    );
    assert_eq!(got["files"], IMAGES - 10, "{got}");
    let placed = files_under(&s.out("globs"));
    assert!(
        placed.iter().all(|p| p.starts_with("images/bikes/")),
        "{placed:?}"
    );
    assert!(!placed.contains(&"images/bikes/001.png".to_owned()));
    assert!(placed.contains(&"images/bikes/010.png".to_owned()));

    for (args, needle) in [
        (
            &["--include", "*.parquet"][..],
            "no file of the version matches",
        ),
        (&["--include", "images/***"], "is not a glob pattern"),
        (
            &["--include", "*.png", "--clean"],
            "not with `include`/`exclude`",
        ),
    ] {
        let mut all = vec!["get", "acme/vision/bike", "--root", "x"];
        all.extend_from_slice(args);
        let out = s.hoard(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(needle),
            "{args:?}: {stderr}"
        );
        assert!(
            !s.out("x").exists(),
            "nothing written for a refused request"
        );
    }
}

#[test]
fn a_dry_run_says_what_would_be_fetched_and_changes_nothing() {
    let s = Setup::new();
    s.get("acme/vision/bike", "before", &["--file", "labels.csv"]);
    let gets = s.registry().blob_gets();
    let plan = s.get("acme/vision/bike", "planned", &["--dry-run"]);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["files"], IMAGES + 3);
    assert_eq!(
        plan["fetched_blobs"],
        IMAGES + 2,
        "labels.csv is cached: {plan}"
    );
    let planned = plan["planned"].as_array().unwrap();
    let cached: Vec<&str> = planned
        .iter()
        .filter(|p| p["cached"] == true)
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(cached, ["labels.csv"]);
    assert_eq!(s.registry().blob_gets(), gets, "nothing fetched");
    assert!(!s.out("planned").exists(), "nothing placed");

    // As text: one line per file, then what a get would do.
    let out = s.hoard(&[
        "get",
        "acme/vision/bike",
        "--root",
        "t",
        "--dry-run",
        "--include",
        "*.csv",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("labels.csv  7 B   cached"), "{stdout}");
    assert!(
        stdout.contains("would place 1 file (7 B), fetching 0 blobs (0 B); dry run"),
        "{stdout}"
    );

    // --quiet: the destination alone, for `$(hoard get … -q)`.
    let out = s.hoard(&["get", "acme/vision/bike", "--root", "q", "-q"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        s.out("q").display().to_string()
    );
    assert_eq!(files_under(&s.out("q")).len(), IMAGES + 3);
}

#[test]
fn clean_removes_what_the_version_lacks_and_nothing_else() {
    let s = Setup::new();
    s.get("acme/vision/bike", "job", &[]);
    let job = s.out("job");
    // Leftovers under the prefix, outside it, and a symlink out of the destination.
    write(&job.join("images/bikes/old.png"), b"old");
    write(&job.join("images/trucks/t.png"), b"truck");
    write(&job.join("mine.txt"), b"mine");
    let outside = s.out("outside");
    write(&outside.join("precious"), b"keep");
    std::os::unix::fs::symlink(&outside, job.join("images/escape")).unwrap();

    let got = s.get(
        "acme/vision/bike",
        "job",
        &["--path-prefix", "images/", "--clean"],
    );
    assert_eq!(got["removed"], 4, "2 files, 1 symlink, 1 directory: {got}");
    assert_eq!(got["unchanged"], IMAGES + 1);
    let files = files_under(&job);
    assert!(files.contains(&"mine.txt".to_owned()), "outside the prefix");
    assert!(files.contains(&"labels.csv".to_owned()));
    assert!(
        !files
            .iter()
            .any(|f| f.contains("old") || f.contains("truck"))
    );
    assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"keep");

    // The whole version: `mine.txt` goes now.
    let got = s.get("acme/vision/bike", "job", &["--clean"]);
    assert_eq!(got["removed"], 1);
    assert_eq!(files_under(&job).len(), IMAGES + 3);

    let out = s.hoard(&["get", "acme/vision/bike", "--file", "labels.csv", "--clean"]);
    assert!(!out.status.success(), "--clean with --file is refused");
}

#[test]
fn concurrent_cold_gets_fetch_each_blob_once() {
    let s = Setup::new();
    let children: Vec<_> = (0..16)
        .map(|i| {
            Command::new(binary("hoard"))
                .args(["get", "acme/vision/bike:best", "--json", "--root"])
                .arg(s.out(&format!("job{i}")))
                .env("HOARD_SOCKET", s.socket())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
    }
    assert_eq!(
        s.registry().blob_gets(),
        (IMAGES + 3) as u64,
        "one GET per unique blob"
    );
    for i in 0..16 {
        assert_eq!(
            std::fs::read(s.out(&format!("job{i}/labels.csv"))).unwrap(),
            b"bike,1\n"
        );
    }
}

#[test]
fn a_moved_alias_is_followed_and_the_cache_serves_when_the_upstream_is_gone() {
    let mut s = Setup::new();
    s.get("acme/vision/bike:latest", "before", &[]);
    write(&s.src().join("labels.csv"), b"bike,2\n");
    s.import(&[]);
    let after = s.get("acme/vision/bike:latest", "after", &[]);
    assert_eq!(after["version"], "v1");
    assert_eq!(after["fetched_blobs"], 1, "only the changed file");
    assert_eq!(
        std::fs::read(s.out("after/labels.csv")).unwrap(),
        b"bike,2\n"
    );

    // A third version nobody fetched, then the registry goes away.
    write(&s.src().join("labels.csv"), b"bike,3\n");
    s.import(&["--alias", "fresh"]);
    drop(s.registry.take());

    let v0 = s.get("acme/vision/bike:v0", "offline-v0", &[]);
    assert_eq!(v0["fetched_blobs"], 0);
    let out = s.hoard(&["get", "acme/vision/bike:latest", "--root", "offline-latest"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning:") && err.contains("cannot be reached"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(s.out("offline-latest/labels.csv")).unwrap(),
        b"bike,2\n"
    );

    let out = s.hoard(&["get", "acme/vision/bike:v2", "--root", "offline-v2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Cannot reach the upstream"));
    assert!(!s.out("offline-v2").exists(), "never a partial directory");

    // `status` says so, and which link mode `auto` chose.
    let out = s.hoard(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let state = status["upstream_state"].as_str().unwrap();
    assert!(state.starts_with("unreachable"), "{state}");
    let modes = status["link_modes"].as_array().unwrap();
    assert!(
        modes.len() == 1 && modes[0].as_str().unwrap().ends_with("hardlink"),
        "{status}"
    );
}

#[test]
fn a_killed_daemon_restarts_and_finishes_the_fetch() {
    let mut s = Setup::new();
    let big: Vec<u8> = (0..96u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    write(&s.src().join("weights.bin"), &big);
    s.import(&[]);
    let child = Command::new(binary("hoard"))
        .args(["get", "acme/vision/bike:latest", "--root"])
        .arg(s.out("interrupted"))
        .env("HOARD_SOCKET", s.socket())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it as soon as the fetch is under way (a fixed sleep raced a fast fetch).
    let fetching = || {
        let answer = s.daemon.as_ref().unwrap().get("/v1/status")?;
        let body: serde_json::Value =
            serde_json::from_str(answer.split("\r\n\r\n").nth(1)?).ok()?;
        Some(body["in_flight"].as_u64()? > 0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fetching() != Some(true) {
        assert!(
            std::time::Instant::now() < deadline,
            "the fetch never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    s.daemon.take().unwrap().kill9();
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "the get cannot succeed without its daemon"
    );

    s.start_daemon();
    let done = s.get("acme/vision/bike:latest", "resumed", &[]);
    assert_eq!(done["files"], IMAGES + 4);
    assert_eq!(std::fs::read(s.out("resumed/weights.bin")).unwrap(), big);
    assert!(s.daemon.take().unwrap().terminate().success());
    let store = hoard_store::Store::open(s.cache()).unwrap();
    let report = store.verify().unwrap();
    assert!(report.bad.is_empty(), "{report:?}");
    assert_eq!(report.checked, (IMAGES + 4) as u64);
}

#[test]
fn bad_requests_are_one_clear_line() {
    let s = Setup::new();
    for (args, needle) in [
        (
            vec!["get", "acme/vision/nope:latest"],
            "no artifact `nope` in project `acme/vision`",
        ),
        (
            vec!["get", "acme/vision/bike:nope"],
            "artifact `acme/vision/bike` has no alias `nope`",
        ),
        (vec!["get", "a/b/c/d"], "Invalid artifact reference"),
        (vec!["get", "bike"], "no project given"),
        (
            vec!["get", "acme/vision/bike", "--mode", "teleport"],
            "teleport",
        ),
    ] {
        let out = s.hoard(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    write(&s.out("afile"), b"x");
    let out = s.hoard(&["get", "acme/vision/bike", "--root", "afile"]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read(s.out("afile")).unwrap(), b"x");

    let out = Command::new(binary("hoard"))
        .args(["get", "acme/vision/bike"])
        .env("HOARD_SOCKET", s.tmp.path().join("nobody.sock"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("start one on your upstream, e.g. `hoard daemon --upstream")
    );
    assert!(
        s.daemon.as_ref().unwrap().get("/v1/health").is_some(),
        "the daemon stays up"
    );
}

#[test]
fn malformed_and_oversized_socket_requests_are_refused() {
    use std::io::{Read, Write};
    let s = Setup::new();
    let post = |body: &[u8]| {
        let mut stream = std::os::unix::net::UnixStream::connect(s.socket()).unwrap();
        let head = format!(
            "POST /v1/materialize HTTP/1.1\r\nHost: hoard\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        let _ = stream.write_all(body);
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    };
    let answer = post(b"{\"reference\": ");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("invalid request"), "{answer}");
    let answer = post(br#"{"reference": "acme/vision/bike", "dest": "relative/dir"}"#);
    assert!(answer.contains("must be an absolute path"), "{answer}");
    let answer = post(&vec![b' '; 2 << 20]);
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    assert!(
        s.daemon.as_ref().unwrap().get("/v1/health").is_some(),
        "the daemon stays up"
    );
}

#[test]
fn the_file_call_answers_an_entry_without_fetching_or_places_one_file() {
    use std::io::{Read, Write};
    let s = Setup::new();
    let post = |body: &str| {
        let mut stream = std::os::unix::net::UnixStream::connect(s.socket()).unwrap();
        let head = format!(
            "POST /v1/file HTTP/1.1\r\nHost: hoard\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    // Without `dest`: the entry (W&B's `Entry`), and no blob is fetched.
    let answer = post(r#"{"reference": "acme/vision/bike:best", "file": "labels.csv"}"#);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body: serde_json::Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["path"], "labels.csv");
    assert_eq!(body["size"], 7);
    assert_eq!(
        body["digest"],
        hoard_types::Digest::of(b"bike,1\n").to_string(),
        "{body}"
    );
    assert!(body.get("ref").is_none(), "not a reference entry: {body}");
    assert_eq!(s.registry().blob_gets(), 0);

    let answer = post(r#"{"reference": "acme/vision/bike:best", "file": "nope"}"#);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let answer = post(r#"{"reference": "acme/vision/bike:best"}"#);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("`file` is required"), "{answer}");

    // With `dest`: that one file, placed.
    let dest = s.out("one");
    let answer = post(&format!(
        r#"{{"reference": "acme/vision/bike:best", "file": "labels.csv", "dest": "{}"}}"#,
        dest.display()
    ));
    assert!(answer.contains(r#""event":"done""#), "{answer}");
    assert_eq!(files_under(&dest), ["labels.csv"]);
    assert_eq!(std::fs::read(dest.join("labels.csv")).unwrap(), b"bike,1\n");
    assert_eq!(s.registry().blob_gets(), 1);
}

#[test]
fn corrupt_upstream_bytes_never_reach_a_job() {
    let s = Setup::new();
    // Flip the bytes of one blob in the registry's storage (same size).
    let digest = hoard_types::Digest::of(b"bike,1\n").to_hex();
    let blob = s.root().join("blobs").join(&digest[..2]).join(&digest);
    let mut perms = std::fs::metadata(&blob).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(&blob, perms).unwrap();
    std::fs::write(&blob, b"bike,9\n").unwrap();

    let out = s.hoard(&["get", "acme/vision/bike", "--root", "job"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&digest) && err.contains("corrupt"), "{err}");
    assert!(
        !s.out("job").exists(),
        "nothing is written when a blob is bad"
    );
    let cached = s.cache().join("blobs-v1").join(&digest[..2]).join(&digest);
    assert!(!cached.exists(), "the bad bytes are not in the cache");
    let metrics = s.daemon.as_ref().unwrap().get("/metrics").unwrap();
    assert!(
        metrics.contains("hoard_fetch_failures_by_kind_total{kind=\"upstream-invalid\"} 1"),
        "{metrics}"
    );
    // A good copy upstream heals it (no bad partial is resumed from).
    std::fs::write(&blob, b"bike,1\n").unwrap();
    let got = s.get("acme/vision/bike", "job", &[]);
    assert!(got["fetched_blobs"].as_u64().unwrap() >= 1);
    assert_eq!(std::fs::read(s.out("job/labels.csv")).unwrap(), b"bike,1\n");
}

#[test]
fn the_registrys_refusals_reach_the_user() {
    // config/registry-tokens.toml: token "change-me" is a member of acme/vision and a
    // viewer of the other acme projects.
    let tokens = hoard_tests::repo("config/registry-tokens.toml");
    let mut s = Setup::new();
    let src = s.src();
    let out = Command::new(binary("hoard"))
        .args(["registry", "import", "--root"])
        .arg(s.root())
        .arg("acme/audio/speech")
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success());
    drop(s.daemon.take());
    drop(s.registry.take());
    let registry = RegistryProcess::start(&s.root(), &["--tokens", tokens.to_str().unwrap()]);
    for (token, reference, needle) in [
        ("wrong", "acme/vision/bike", "refused the credential"),
        (
            "change-me",
            "acme/audio/speech",
            "view-only members cannot download artifacts",
        ),
        ("change-me", "beta/x/y", "Not found"),
    ] {
        let socket = s.tmp.path().join(format!("{token}.sock"));
        let daemon = Command::new(binary("hoard"))
            .args(["daemon", "--socket"])
            .arg(&socket)
            .arg("--cache-dir")
            .arg(s.tmp.path().join(format!("cache-{token}")))
            .args(["--upstream", &registry.url])
            .env("HOARD_TOKEN", token)
            .env("HOARD_LOG", "error")
            .spawn()
            .unwrap();
        let mut daemon = Guard(daemon);
        for _ in 0..500 {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let out = Command::new(binary("hoard"))
            .args(["get", reference, "--root", "x"])
            .env("HOARD_SOCKET", &socket)
            .current_dir(s.tmp.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{token} {reference}: {err}");
        let _ = daemon.0.kill();
        let _ = daemon.0.wait();
    }
}

/// Kills the child when dropped (a failed assertion must not leak a daemon).
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn large_blobs_come_as_parallel_ranges() {
    let mut s = Setup::new();
    let big: Vec<u8> = (0..(5u32 << 20) + 100)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    write(&s.src().join("weights.bin"), &big);
    s.import(&[]);
    drop(s.daemon.take());
    let url = s.registry().url.clone();
    s.daemon = Some(DaemonProcess::start_with(
        &s.socket(),
        &s.cache(),
        &url,
        &["--large-blob-mib", "1", "--range-mib", "1"],
    ));
    let got = s.get("acme/vision/bike", "big", &["--file", "weights.bin"]);
    assert_eq!(got["fetched_bytes"], big.len());
    assert_eq!(std::fs::read(s.out("big/weights.bin")).unwrap(), big);
    let ranges = s
        .registry()
        .metric("hoard_registry_requests_total{route=\"blob_get\",status=\"206\"}");
    assert_eq!(ranges, 6, "five whole MiB and a 100-byte tail");
}

#[test]
fn prefetch_warms_the_cache_without_writing_files() {
    use std::io::{Read, Write};
    let s = Setup::new();
    let body = br#"{"reference": "acme/vision/bike:best", "path_prefix": "images/bikes/"}"#;
    let mut stream = std::os::unix::net::UnixStream::connect(s.socket()).unwrap();
    let head = format!(
        "POST /v1/prefetch HTTP/1.1\r\nHost: hoard\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("application/x-ndjson"), "{answer}");
    assert!(answer.contains(r#""event":"resolved""#), "{answer}");
    assert!(answer.contains(r#""event":"done""#), "{answer}");
    assert_eq!(s.registry().blob_gets(), IMAGES as u64);
    let got = s.get(
        "acme/vision/bike:best",
        "after",
        &["--path-prefix", "images/bikes/"],
    );
    assert_eq!(got["fetched_blobs"], 0, "prefetched");
    assert_eq!(got["placed"], IMAGES);
}

#[test]
fn a_config_file_sets_the_daemon_up_and_bad_ones_stop_it() {
    let mut s = Setup::new();
    drop(s.daemon.take());
    let config = s.tmp.path().join("hoard.toml");
    std::fs::write(&config, "fetch_concurency = 4\n").unwrap();
    let out = Command::new(binary("hoard"))
        .args(["daemon", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hoard.toml") && err.contains("unknown field `fetch_concurency`"),
        "{err}"
    );

    std::fs::write(
        &config,
        format!(
            "socket = \"{}\"\ncache_dir = \"{}\"\nupstream = \"{}\"\nfetch_concurrency = 2\n",
            s.socket().display(),
            s.cache().display(),
            s.registry().url
        ),
    )
    .unwrap();
    let daemon = Command::new(binary("hoard"))
        .args(["daemon", "--config"])
        .arg(&config)
        .env("HOARD_LOG", "warn")
        .spawn()
        .unwrap();
    let _daemon = Guard(daemon);
    for _ in 0..500 {
        if std::os::unix::net::UnixStream::connect(s.socket()).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let got = s.get("acme/vision/bike", "from-config", &[]);
    assert_eq!(got["fetched_blobs"], IMAGES + 3);
}

#[test]
fn a_blob_modified_behind_the_daemons_back_is_never_handed_out() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new();
    s.get("acme/vision/bike", "first", &[]);
    let gets = s.registry().blob_gets();
    // Someone with the daemon's rights edits a cached blob in place (same size).
    let labels = s.out("first/labels.csv");
    let ino = std::fs::metadata(&labels).unwrap().ino();
    let blob = walk_files(&s.cache())
        .into_iter()
        .find(|p| std::fs::metadata(p).unwrap().ino() == ino)
        .unwrap();
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&blob, b"bike,9\n").unwrap();

    // The next job gets the right bytes: the blob was quarantined and fetched again.
    s.get("acme/vision/bike", "second", &[]);
    assert_eq!(
        std::fs::read(s.out("second/labels.csv")).unwrap(),
        b"bike,1\n"
    );
    assert_eq!(s.registry().blob_gets(), gets + 1);
    let metrics = s.daemon.as_ref().unwrap().get("/metrics").unwrap();
    assert!(
        metrics.contains("\nhoard_tampered_blobs_total 1\n"),
        "{metrics}"
    );

    // `hoard verify` finds a blob corrupted the same way, says so with its exit code, and
    // fetches it again from the upstream: the next get fetches nothing.
    let gets = s.registry().blob_gets();
    let ino = std::fs::metadata(s.out("second/images/bikes/003.png"))
        .unwrap()
        .ino();
    let blob = walk_files(&s.cache())
        .into_iter()
        .find(|p| std::fs::metadata(p).unwrap().ino() == ino)
        .unwrap();
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&blob, &bytes).unwrap();
    let out = s.hoard(&["verify", "--json"]);
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["bad"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["bad"][0]["repaired"], true, "{report}");
    assert_eq!(s.registry().blob_gets(), gets + 1);
    // The cache is right again; the directories handed out before still hold the
    // modified inodes, until `--repair` links them to the fetched blobs.
    let out = s.hoard(&["verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    for file in ["first/labels.csv", "second/images/bikes/003.png"] {
        assert!(
            stdout.contains(&s.out(file).display().to_string()),
            "{stdout}"
        );
    }
    let out = s.hoard(&["verify", "--repair"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        std::fs::read(s.out("first/labels.csv")).unwrap(),
        b"bike,1\n"
    );
    let out = s.hoard(&["verify"]);
    assert!(out.status.success(), "clean after the repair");
    let third = s.get("acme/vision/bike", "third", &[]);
    assert_eq!(third["fetched_blobs"], 0, "{third}");
    assert_eq!(
        std::fs::read(s.out("third/images/bikes/003.png")).unwrap()[0],
        bytes[0] ^ 1,
        "the right bytes"
    );

    // Refusals are counted by the rule that refused.
    let out = s.hoard(&["get", "acme/vision/nope", "--root", "x"]);
    assert!(!out.status.success());
    let metrics = s.daemon.as_ref().unwrap().get("/metrics").unwrap();
    assert!(
        metrics.contains("hoard_refusals_total{reason=\"not-found\"} 1"),
        "{metrics}"
    );
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                found.push(entry.path());
            }
        }
    }
    found
}
