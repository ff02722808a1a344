#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

//! Operating the daemon: `config check`, limits checked at start, systemd readiness,
//! `/metrics` on a loopback TCP address, shell completions; `hoard` and `hoardd`.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

use hoard_tests::binary;

fn hoard(args: &[&str]) -> Output {
    Command::new(binary("hoard"))
        .args(args)
        .env("HOARD_LOG", "warn")
        .env_remove("HOARD_CONFIG")
        .output()
        .unwrap()
}

/// `hoard daemon` run to its end (for start-up refusals).
fn daemon_output(socket: &Path, cache: &Path, upstream: &str, extra: &[&str]) -> Output {
    Command::new(binary("hoard"))
        .arg("daemon")
        .args(extra)
        .arg("--socket")
        .arg(socket)
        .arg("--cache-dir")
        .arg(cache)
        .args(["--upstream", upstream])
        .env("HOARD_LOG", "warn")
        .output()
        .unwrap()
}

fn dir_root(t: &Path) -> String {
    let root = t.join("up");
    std::fs::create_dir_all(root.join("artifacts")).unwrap();
    std::fs::create_dir_all(root.join("blobs")).unwrap();
    format!("dir://{}", root.display())
}

#[test]
fn config_check_accepts_the_documented_file_and_names_what_is_wrong() {
    let example = hoard_tests::repo("config/hoard.toml");
    let out = hoard(&["config", "check", example.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let tmp = tempfile::tempdir().unwrap();
    for (text, needle) in [
        ("max_size = \"huge\"", "`max_size`"),
        ("metrics_listen = \"0.0.0.0:9477\"", "loopback"),
        ("upstream = \"ftp://x\"", "`upstream`"),
        (&format!("socket = \"/{}\"", "s".repeat(120)), "at most 107"),
        ("cache_dirs = \"/x\"", "unknown field `cache_dirs`"),
        ("[tier]\nurl = \"https://bucket\"", "s3://BUCKET/PREFIX"),
        (
            "[tier]\nurl = \"s3://fleet\"\nendpoint_url = \"garage:3900\"",
            "`endpoint_url`",
        ),
        (
            "[tier]\nurl = \"s3://fleet\"\nregoin = \"x\"",
            "unknown field `regoin`",
        ),
    ] {
        let file = tmp.path().join("hoard.toml");
        std::fs::write(&file, text).unwrap();
        let out = hoard(&["config", "check", file.to_str().unwrap()]);
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn a_socket_path_that_is_too_long_stops_the_daemon_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let long = tmp.path().join("s".repeat(110));
    let out = daemon_output(&long, &tmp.path().join("cache"), &dir_root(tmp.path()), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unix sockets allow at most 107"));
}

/// `fs_verity = "on"` insists: on a filesystem without fs-verity (tmpfs never has it) the
/// daemon does not start, and says why and what to do. `auto` starts and `hoard status`
/// says why blobs are not sealed. (Sealing itself is tested in a VM: `verity.rs`.)
#[test]
fn fs_verity_on_refuses_a_filesystem_without_it_and_auto_says_why_it_is_off() {
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = daemon_output(
        &tmp.path().join("d.sock"),
        &shm.path().join("cache"),
        &dir_root(tmp.path()),
        &["--fs-verity", "on"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`fs_verity = \"on\"`, but the cache's filesystem has no fs-verity")
            && err.contains("set it to `auto` or `off`"),
        "{err}"
    );

    let socket = tmp.path().join("auto.sock");
    let daemon = hoard_tests::DaemonProcess::start_with(
        &socket,
        &shm.path().join("cache"),
        &dir_root(tmp.path()),
        &["--require-caller-token"],
    );
    let status = hoard_tests::hoard_json(&socket, tmp.path(), &["status"]);
    assert_eq!(
        status["fs_verity"].as_str().unwrap(),
        "off: the cache's filesystem has no fs-verity (on ext4: `tune2fs -O verity` on the unmounted device, with a kernel built with CONFIG_FS_VERITY)"
    );
    drop(daemon);
}

#[test]
fn the_daemon_tells_systemd_it_is_ready_and_serves_metrics_on_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let notify = std::os::unix::net::UnixDatagram::bind(t.join("notify")).unwrap();
    notify
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(binary("hoard"))
        .args(["daemon", "--socket"])
        .arg(t.join("d.sock"))
        .arg("--cache-dir")
        .arg(t.join("cache"))
        .args(["--upstream", &dir_root(t)])
        .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
        .env("NOTIFY_SOCKET", t.join("notify"))
        .env("HOARD_LOG", "warn")
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means ready: the socket answers at once.
    assert!(std::os::unix::net::UnixStream::connect(t.join("d.sock")).is_ok());

    let get = |path: &str| {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    let metrics = get("/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("\nhoard_cache_bytes 0\n"), "{metrics}");
    assert!(
        get("/v1/status").starts_with("HTTP/1.1 404"),
        "only /metrics on TCP"
    );

    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id().cast_signed()).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn completions_are_generated_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = hoard(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("publish") && text.contains("gc"), "{shell}");
    }
}

/// `hoard` runs the daemon's clients itself and hands the rest to `hoardd`: both say the
/// same help, for the whole command and for a subcommand that `hoardd` runs.
#[test]
fn hoard_and_hoardd_say_the_same_help() {
    for args in [
        &["--help"][..],
        &["daemon", "--help"],
        &["help", "registry"],
        &["--log-format", "json", "registry", "serve", "--help"],
        &["get", "--help"],
        &["--version"],
    ] {
        let lean = hoard(args);
        let whole = Command::new(binary("hoardd")).args(args).output().unwrap();
        assert!(lean.status.success(), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&lean.stdout),
            String::from_utf8_lossy(&whole.stdout),
            "{args:?}"
        );
    }
}

/// The `hoard` that jobs run links no RocksDB (its static initializers alone cost a
/// millisecond per process); a `hoard` without `hoardd` beside it still runs the clients,
/// and says what is missing for the rest.
#[test]
fn hoard_is_the_lean_client_and_names_a_missing_hoardd() {
    let lean = std::fs::read(binary("hoard")).unwrap();
    let whole = std::fs::read(binary("hoardd")).unwrap();
    let names_rocksdb = |bytes: &[u8]| bytes.windows(9).any(|w| w == b"rocksdb::");
    assert!(names_rocksdb(&whole), "the check would see RocksDB");
    assert!(!names_rocksdb(&lean), "`hoard` links RocksDB");

    let tmp = tempfile::tempdir().unwrap();
    let alone = tmp.path().join("hoard");
    std::fs::copy(binary("hoard"), &alone).unwrap();
    let out = Command::new(&alone)
        .args(["daemon", "--socket", "x.sock"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("`hoard daemon` is run by `hoardd`, which is not beside this `hoard`")
            && said.contains("cargo install --path crates/cli"),
        "{said}"
    );
    let socket = tmp.path().join("none.sock");
    let out = Command::new(&alone)
        .args(["status", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !said.contains("hoardd"), "{said}");
}

#[test]
fn sighup_reloads_what_can_change_and_keeps_the_rest_on_a_bad_file() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let config = t.join("hoard.toml");
    std::fs::write(&config, "max_size = \"1 MiB\"\n").unwrap();
    let mut child = Command::new(binary("hoard"))
        .args(["daemon", "--config"])
        .arg(&config)
        .arg("--socket")
        .arg(t.join("d.sock"))
        .arg("--cache-dir")
        .arg(t.join("cache"))
        .args(["--upstream", &dir_root(t)])
        .env("HOARD_LOG", "warn")
        .spawn()
        .unwrap();
    let budget = || -> Option<u64> {
        let out = Command::new(binary("hoard"))
            .args(["status", "--json"])
            .env("HOARD_SOCKET", t.join("d.sock"))
            .output()
            .ok()?;
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        status["budget_bytes"].as_u64()
    };
    let wait_for = |want: u64| {
        for _ in 0..500 {
            if budget() == Some(want) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("the budget never became {want} (it is {:?})", budget());
    };
    wait_for(1 << 20);
    let pid = rustix::process::Pid::from_raw(child.id().cast_signed()).unwrap();

    std::fs::write(&config, "max_size = \"2 MiB\"\n").unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    wait_for(2 << 20);

    // A bad file changes nothing and stops nothing.
    std::fs::write(&config, "max_size = \"lots\"\n").unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(budget(), Some(2 << 20));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the daemon is still running"
    );

    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_socket_passed_by_systemd_is_served() {
    let Ok(activate) = which("systemd-socket-activate") else {
        eprintln!("skipped: systemd-socket-activate is not installed");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let socket = t.join("activated.sock");
    // systemd-socket-activate listens, then starts the daemon with the socket as fd 3.
    let mut child = Command::new(activate)
        .arg("--listen")
        .arg(&socket)
        .arg(binary("hoard"))
        .args(["daemon", "--cache-dir"])
        .arg(t.join("cache"))
        .args(["--upstream", &dir_root(t)])
        .arg("--socket")
        .arg(t.join("unused.sock"))
        .env("HOARD_LOG", "warn")
        .spawn()
        .unwrap();
    for _ in 0..500 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = Command::new(binary("hoard"))
        .args(["status", "--json"])
        .env("HOARD_SOCKET", &socket)
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["blobs"], 0);
    assert!(
        !t.join("unused.sock").exists(),
        "the daemon bound nothing itself"
    );
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .ok_or(())
}

#[test]
fn the_default_named_upstream_serves_and_another_is_chosen_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let first = dir_root(t);
    let second = t.join("second");
    std::fs::create_dir_all(second.join("artifacts")).unwrap();
    std::fs::create_dir_all(second.join("blobs")).unwrap();
    let config = t.join("hoard.toml");
    std::fs::write(
        &config,
        format!(
            "[upstreams.main]\nkind = \"dir\"\npath = \"{}\"\ndefault = true\n\n[upstreams.spare]\nkind = \"dir\"\npath = \"{}\"\n",
            first.trim_start_matches("dir://"),
            second.display()
        ),
    )
    .unwrap();
    for (chosen, expected) in [
        (None, first.clone()),
        (Some("spare"), format!("dir://{}", second.display())),
    ] {
        let socket = t.join(format!("{}.sock", chosen.unwrap_or("main")));
        let mut command = Command::new(binary("hoard"));
        command
            .args(["daemon", "--config"])
            .arg(&config)
            .arg("--socket")
            .arg(&socket)
            .arg("--cache-dir")
            .arg(t.join(format!("cache-{}", chosen.unwrap_or("main"))))
            .env("HOARD_LOG", "warn")
            .env_remove("HOARD_UPSTREAM");
        if let Some(name) = chosen {
            command.args(["--upstream", name]);
        }
        let mut child = command.spawn().unwrap();
        let mut status = serde_json::Value::Null;
        for _ in 0..500 {
            let out = Command::new(binary("hoard"))
                .args(["status", "--json"])
                .env("HOARD_SOCKET", &socket)
                .output()
                .unwrap();
            if out.status.success() {
                status = serde_json::from_slice(&out.stdout).unwrap();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(status["upstream"], expected.as_str(), "{chosen:?}");
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it when run as root, as CI does"]
fn a_cache_on_a_read_only_filesystem_stops_the_daemon_with_a_reason() {
    assert!(
        rustix::process::geteuid().is_root(),
        "needs root to mount a read-only filesystem"
    );
    let tmp = tempfile::tempdir().unwrap();
    let mount = tmp.path().join("ro");
    std::fs::create_dir_all(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(mounted.success());
    let out = Command::new(binary("hoard"))
        .args(["daemon", "--cache-dir"])
        .arg(mount.join("cache"))
        .arg("--socket")
        .arg(tmp.path().join("s.sock"))
        .args(["--upstream", &dir_root(tmp.path())])
        .output()
        .unwrap();
    let _ = Command::new("umount").arg("-l").arg(&mount).status();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Read-only file system") && err.contains("cache"),
        "{err}"
    );
}

/// One cache, two upstreams in turn that both have `acme/p/x:v0`, with different files. A
/// `vN` is answered from the cache without asking the upstream, so the cache must not
/// answer with the other upstream's version: switching forgets the versions (blobs stay).
/// While a publish waits to be uploaded to the first upstream, switching is refused.
#[test]
fn a_cache_switched_to_another_upstream_does_not_serve_the_first_ones_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let socket = t.join("d.sock");
    let mut roots = Vec::new();
    for name in ["a", "b"] {
        let root = t.join(name).join("up");
        std::fs::create_dir_all(t.join(name)).unwrap();
        let url = dir_root(&t.join(name));
        std::fs::write(t.join(name).join("f.txt"), format!("from {name}\n")).unwrap();
        let publisher =
            hoard_tests::DaemonProcess::start(&socket, &t.join(name).join("cache"), &url);
        let src = t.join(name).join("f.txt");
        hoard_tests::hoard_json(
            &socket,
            t,
            &["publish", "acme/p/x", src.to_str().unwrap(), "--wait"],
        );
        drop(publisher);
        assert!(root.join("artifacts").exists());
        roots.push(url);
    }
    let cache = t.join("shared-cache");
    let get = |into: &str| {
        let root = t.join(into);
        hoard_tests::hoard_json(
            &socket,
            t,
            &["get", "acme/p/x:v0", "--root", root.to_str().unwrap()],
        );
        std::fs::read_to_string(root.join("f.txt")).unwrap()
    };
    let daemon = hoard_tests::DaemonProcess::start(&socket, &cache, &roots[0]);
    assert_eq!(get("d1"), "from a\n");
    hoard_tests::hoard_json(&socket, t, &["pin", "acme/p/x:v0"]);
    drop(daemon);
    let daemon = hoard_tests::DaemonProcess::start(&socket, &cache, &roots[1]);
    assert_eq!(
        hoard_tests::hoard_json(&socket, t, &["pins"]),
        serde_json::json!([]),
        "a pin of the first upstream's version could not be unpinned here"
    );
    assert_eq!(get("d2"), "from b\n");
    drop(daemon);
    // Back to the first: its version is fetched again (metadata only: the blob is cached).
    let daemon = hoard_tests::DaemonProcess::start(&socket, &cache, &roots[0]);
    assert_eq!(get("d3"), "from a\n");
    assert_eq!(
        std::fs::metadata(t.join("d3/f.txt")).unwrap().ino(),
        std::fs::metadata(t.join("d1/f.txt")).unwrap().ino(),
        "the blob stayed in the cache"
    );

    // A publish that cannot be uploaded (the registry is down) pins the cache to it.
    drop(daemon);
    let down = "http://127.0.0.1:1";
    let daemon = hoard_tests::DaemonProcess::start(&socket, &cache, down);
    let out = hoard_tests::hoard_on(
        &socket,
        t,
        &["publish", "acme/p/y", t.join("a/f.txt").to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(daemon);
    let out = daemon_output(&socket, &cache, &roots[1], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holds 1 publish(es) not yet uploaded to `http://127.0.0.1:1`"),
        "{err}"
    );
}

/// A socket named relative to the current directory (`--socket hoard.sock`): the daemon
/// listens there (it failed with a bare "No such file or directory" before).
#[test]
fn a_relative_socket_path_is_served() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let upstream = dir_root(t);
    let mut child = Command::new(binary("hoard"))
        .args(["daemon", "--socket", "hoard.sock", "--cache-dir", "cache"])
        .args(["--upstream", &upstream])
        .current_dir(t)
        .env("HOARD_LOG", "warn")
        .spawn()
        .unwrap();
    let status = || {
        Command::new(binary("hoard"))
            .args(["status", "--json"])
            .env("HOARD_SOCKET", "hoard.sock")
            .current_dir(t)
            .output()
            .unwrap()
    };
    let mut served = false;
    for _ in 0..500 {
        if status().status.success() {
            served = true;
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the daemon stopped");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(served, "nothing answered on hoard.sock");
    let pid = rustix::process::Pid::from_raw(child.id().cast_signed()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(child.wait().unwrap().success());
}

/// A metrics address off loopback is refused before the cache is created or opened.
#[test]
fn a_bad_metrics_address_is_refused_before_the_cache_is_touched() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let cache = t.join("cache");
    let out = daemon_output(
        &t.join("d.sock"),
        &cache,
        &dir_root(t),
        &["--metrics-listen", "0.0.0.0:9477"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback"), "{err}");
    assert!(!cache.exists(), "the cache was created: {err}");
}

/// `hoard completions bash | true`: a reader that goes away ends the command quietly (it
/// panicked with exit 101).
#[test]
fn completions_into_a_closed_pipe_exit_quietly() {
    let mut child = Command::new(binary("hoard"))
        .args(["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    // `--mode` completes to the modes, not to file names.
    let script = Command::new(binary("hoard"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    let script = String::from_utf8_lossy(&script.stdout);
    assert!(
        script.contains("auto hardlink reflink copy symlink"),
        "no mode values in the bash completion"
    );
}

/// A daemon started without an upstream serves the built-in one, which starts empty: a
/// get of something it does not have says so, and how to start the daemon on a real
/// upstream; with no daemon at all, the hint shows how to start one on an upstream.
#[test]
fn the_built_in_upstream_and_a_missing_daemon_get_hints_that_lead_somewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let socket = t.join("hoard.sock");
    let with_env = |command: &mut Command| {
        command
            .env("XDG_DATA_HOME", t.join("data"))
            .env("XDG_CACHE_HOME", t.join("cache"))
            .env("HOME", t)
            .env("HOARD_SOCKET", &socket)
            .env("HOARD_LOG", "warn")
            .env_remove("HOARD_UPSTREAM")
            .env_remove("HOARD_CONFIG");
    };
    let mut get = Command::new(binary("hoard"));
    get.args(["get", "acme/vision/bike:v0", "--root"])
        .arg(t.join("out"));
    with_env(&mut get);
    let out = get.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--upstream"), "{err}");

    let mut daemon = Command::new(binary("hoard"));
    daemon.arg("daemon");
    with_env(&mut daemon);
    let mut daemon = daemon.spawn().unwrap();
    for _ in 0..500 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = get.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("built-in upstream") && err.contains("--upstream"),
        "{err}"
    );
    let mut status = Command::new(binary("hoard"));
    status.arg("status");
    with_env(&mut status);
    let said = String::from_utf8_lossy(&status.output().unwrap().stdout).into_owned();
    assert!(said.contains("(the built-in upstream"), "{said}");
    let pid = rustix::process::Pid::from_raw(daemon.id().cast_signed()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(daemon.wait().unwrap().success());
}
