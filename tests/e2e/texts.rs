#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

//! The texts users read, pinned as insta snapshots (`e2e/snapshots/`): what `hoard get`,
//! `ls`, `artifacts`, `versions`, `status` and `publish` print, and their errors, config errors and the daemon's
//! start-up errors. A change of wording is a snapshot diff to review: run the test with
//! `INSTA_UPDATE=always`, then read `git diff tests/e2e/snapshots`. Temporary paths,
//! ports, timings, ages, device numbers and what the machine's filesystem can do are
//! replaced by placeholders.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output};

use hoard_tests::{DaemonProcess, RegistryProcess, binary, import};

/// Commands and what they printed, as a user sees them.
struct Transcript {
    text: String,
}

impl Transcript {
    fn new() -> Self {
        Self {
            text: String::new(),
        }
    }

    /// Appends `$ hoard ARGS`, then stdout, stderr and a non-zero exit code.
    fn add(&mut self, args: &[&str], out: &Output) {
        let _ = writeln!(self.text, "$ hoard {}", args.join(" "));
        self.text.push_str(&String::from_utf8_lossy(&out.stdout));
        self.text.push_str(&String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            let _ = writeln!(self.text, "[exit {}]", out.status.code().unwrap_or(-1));
        }
        self.text.push('\n');
    }
}

/// `hoard ARGS` in `cwd`, with `env` set and no configuration from the machine.
fn run(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(binary("hoard"));
    command
        .args(args)
        .current_dir(cwd)
        .env("HOARD_LOG", "warn")
        .env_remove("HOARD_CONFIG")
        .env_remove("HOARD_ENTITY")
        .env_remove("HOARD_PROJECT")
        .env_remove("HOARD_TOKEN")
        .env_remove("HOARD_SOCKET")
        .env("NO_COLOR", "1");
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A command that should have stopped (a daemon that started after all) is stopped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("`hoard {}` did not finish", args.join(" "));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// Snapshots `text` with the run's variable parts replaced.
fn pin(name: &str, tmp: &Path, text: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots");
    settings.set_prepend_module_to_snapshot(false);
    let tmp = tmp.canonicalize().unwrap();
    settings.add_filter(&regex_escape(&tmp.display().to_string()), "[TMP]");
    settings.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
    settings.add_filter(r"\d{4}-\d\d-\d\dT[0-9:.]+Z", "[TIME]");
    settings.add_filter(r"\b\d+(\.\d+)? ?(ms|s)\b", "[T]");
    settings.add_filter(r"dev \d+:\d+", "dev [DEV]");
    // Whether the machine's filesystem has fs-verity.
    settings.add_filter(r"fs-verity: .*", "fs-verity: [THIS MACHINE]");
    settings.add_filter(r"uid \d+", "uid [UID]");
    settings.add_filter(r"hoard-\d+", "hoard-[UID]");
    // Said to root callers only (`e2e/damaged.rs` checks it).
    settings.add_filter(
        r"warning: these files are hardlinks of the cache's blobs.*\n",
        "",
    );
    settings.bind(|| insta::assert_snapshot!(name, text));
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '_' || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

/// A registry with `acme/vision/bike` (v0, alias `latest`) and a daemon in front of it.
fn setup(t: &Path) -> (RegistryProcess, DaemonProcess) {
    let src = t.join("src");
    std::fs::create_dir_all(src.join("images")).unwrap();
    std::fs::write(src.join("images/a.png"), b"png a").unwrap();
    std::fs::write(src.join("images/b.png"), b"png b").unwrap();
    std::fs::write(src.join("labels.csv"), b"id,label\n0,bike\n").unwrap();
    import(&t.join("registry"), "acme/vision/bike", &src);
    let registry = RegistryProcess::start(&t.join("registry"), &[]);
    let daemon = DaemonProcess::start(&t.join("hoard.sock"), &t.join("cache"), &registry.url);
    (registry, daemon)
}

#[test]
fn what_get_ls_status_and_publish_print() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (registry, daemon) = setup(t);
    let socket = daemon.socket.display().to_string();
    let env = [("HOARD_SOCKET", socket.as_str())];
    let mut said = Transcript::new();
    for args in [
        &["get", "acme/vision/bike:latest", "--root", "data"][..],
        &["get", "acme/vision/bike:v0", "--root", "data"],
        &[
            "get",
            "acme/vision/bike:v0",
            "--root",
            "one",
            "--file",
            "labels.csv",
        ],
        &["ls", "acme/vision/bike:v0"],
        &["ls", "acme/vision/bike"],
        &["artifacts", "acme/vision"],
        &["versions", "acme/vision/bike"],
        &[
            "publish",
            "acme/vision/labels",
            "src/labels.csv",
            "--alias",
            "best",
            "--wait",
        ],
        &["status"],
    ] {
        said.add(args, &run(t, &env, args));
    }
    pin("get_ls_status_publish", t, &said.text);

    let mut said = Transcript::new();
    for args in [
        &["get", "acme/vision/nothing:v0", "--root", "x"][..],
        &["get", "acme/vision/bike:v7", "--root", "x"],
        &["get", "acme/vision/bike:prod", "--root", "x"],
        &["get", "vision/bike:v0", "--root", "x"],
        &["get", "acme/vision/bike:v0:x", "--root", "x"],
        &[
            "get",
            "acme/vision/bike:v0",
            "--root",
            "x",
            "--file",
            "missing.txt",
        ],
        &["ls", "acme/vision/nothing"],
        &["get", "acme/elsewhere/bike", "--root", "x"],
        &["artifacts", "acme/elsewhere"],
        &["artifacts", "acme/vision/bike"],
        &["artifacts"],
        &["versions", "acme/vision/bike:v0"],
        &["versions", "acme/vision/nothing"],
        &["publish", "acme/vision/labels", "no/such/file"],
        &[
            "get",
            "acme/vision/bike:v0",
            "--root",
            "x",
            "--mode",
            "teleport",
        ],
    ] {
        said.add(args, &run(t, &env, args));
    }
    drop(registry);
    // The upstream gone: the alias's last answer, with a warning.
    let offline = ["get", "acme/vision/bike:latest", "--root", "offline"];
    said.add(&offline, &run(t, &env, &offline));
    drop(daemon);
    let gone = [("HOARD_SOCKET", socket.as_str())];
    said.add(&["status"], &run(t, &gone, &["status"]));
    pin("errors_of_get_ls_publish", t, &said.text);
}

#[test]
fn config_and_start_up_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mut said = Transcript::new();
    for (name, text) in [
        ("size.toml", "max_size = \"huge\""),
        ("metrics.toml", "metrics_listen = \"0.0.0.0:9477\""),
        ("upstream.toml", "upstream = \"ftp://x\""),
        ("unknown.toml", "cache_dirs = \"/x\""),
        (
            "watermarks.toml",
            "high_watermark = 0.5\nlow_watermark = 0.7",
        ),
        ("mode.toml", "socket_mode = \"0640\""),
        ("syntax.toml", "max_size = "),
    ] {
        std::fs::write(t.join(name), text).unwrap();
        let args = ["config", "check", name];
        said.add(&args, &run(t, &[], &args));
    }
    // No file at all: the defaults.
    let home = t.display().to_string();
    let args = ["config", "check"];
    said.add(
        &args,
        &run(t, &[("XDG_CONFIG_HOME", &home), ("HOME", &home)], &args),
    );
    let up = t.join("up");
    std::fs::create_dir_all(up.join("artifacts")).unwrap();
    let dir = format!("dir://{}", up.display());
    let long = format!("{}/{}", t.display(), "s".repeat(110));
    for (socket, upstream, extra) in [
        (long.as_str(), dir.as_str(), &[][..]),
        ("d.sock", "ftp://x", &[]),
        ("d.sock", "dir://relative", &[]),
        ("d.sock", "dir:///nonexistent/root", &[]),
        ("d.sock", &dir, &["--metrics-listen", "0.0.0.0:1"]),
        ("d.sock", &dir, &["--max-size", "-5GiB"]),
        ("d.sock", &dir, &["--scrub-rate", "fast"]),
    ] {
        let mut args = vec!["daemon", "--socket", socket, "--cache-dir", "cache"];
        args.extend(["--upstream", upstream]);
        args.extend(extra);
        said.add(&args, &run(t, &[], &args));
    }
    pin("config_and_start_up_errors", t, &said.text);
}

#[test]
fn what_help_says() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mut said = Transcript::new();
    for args in [
        &["get", "--help"][..],
        &["ls", "--help"],
        &["status", "--help"],
    ] {
        said.add(args, &run(t, &[], args));
    }
    pin("help", t, &said.text);
}
