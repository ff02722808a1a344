#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

//! `hoard publish` as processes, against a real registry (and without one).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use hoard_tests::{DaemonProcess, RegistryProcess, hoard_json as json, hoard_on as hoard};

const FILES: usize = 30;

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// A dataset of `FILES` files under `dir/data`, and a model file `dir/model.bin`.
fn dataset(dir: &Path) {
    for i in 0..FILES {
        write(
            &dir.join(format!("data/part-{i:02}.txt")),
            format!("sample {i}\n").repeat(50).as_bytes(),
        );
    }
    write(&dir.join("model.bin"), &[7u8; 5000]);
}

fn blob_puts(registry: &RegistryProcess) -> u64 {
    registry.metric("hoard_registry_requests_total{route=\"blob_put\",status=\"201\"}")
        + registry.metric("hoard_registry_requests_total{route=\"blob_put\",status=\"200\"}")
}

fn commits(registry: &RegistryProcess) -> u64 {
    registry.metric("hoard_registry_requests_total{route=\"commit\",status=\"201\"}")
}

#[test]
fn publish_is_usable_elsewhere_idempotent_and_uploads_only_what_is_new() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    dataset(&t.join("src"));
    let registry = RegistryProcess::start(&t.join("registry"), &[]);
    let a = DaemonProcess::start(&t.join("a.sock"), &t.join("cache-a"), &registry.url);
    let b = DaemonProcess::start(&t.join("b.sock"), &t.join("cache-b"), &registry.url);
    let source_meta = std::fs::metadata(t.join("src/model.bin")).unwrap();

    let first = json(
        &a.socket,
        t,
        &[
            "publish",
            "acme/vision/new",
            "src/data",
            "weights/model.bin=src/model.bin",
            "--type",
            "dataset",
            "--alias",
            "best",
            "--wait",
        ],
    );
    assert_eq!(first["state"], "committed", "{first}");
    assert_eq!(first["version"], "v0");
    assert_eq!(first["files"], FILES + 1);
    assert_eq!(first["uploaded_blobs"], FILES + 1);
    assert_eq!(blob_puts(&registry), (FILES + 1) as u64);

    // Another machine's cache gets identical bytes, by alias.
    let got = json(
        &b.socket,
        t,
        &["get", "acme/vision/new:best", "--root", "elsewhere"],
    );
    assert_eq!(got["version"], "v0");
    for i in [0, FILES - 1] {
        let name = format!("part-{i:02}.txt");
        assert_eq!(
            std::fs::read(t.join("elsewhere").join(&name)).unwrap(),
            std::fs::read(t.join("src/data").join(&name)).unwrap()
        );
    }
    assert_eq!(
        std::fs::read(t.join("elsewhere/weights/model.bin")).unwrap(),
        [7u8; 5000]
    );

    // The same content again: the same version, nothing uploaded, no new commit.
    let again = json(
        &a.socket,
        t,
        &[
            "publish",
            "acme/vision/new",
            "src/data",
            "weights/model.bin=src/model.bin",
            "--wait",
        ],
    );
    assert_eq!(again["version"], "v0", "{again}");
    assert_eq!(again["uploaded_blobs"], 0);
    assert_eq!(again["digest"], first["digest"]);
    assert_eq!(blob_puts(&registry), (FILES + 1) as u64);
    assert_eq!(commits(&registry), 1);

    // A tenth of the files change: only those are uploaded.
    for i in 0..3 {
        write(
            &t.join(format!("src/data/part-{i:02}.txt")),
            format!("changed {i}").as_bytes(),
        );
    }
    let third = json(
        &a.socket,
        t,
        &[
            "publish",
            "acme/vision/new",
            "src/data",
            "weights/model.bin=src/model.bin",
            "--wait",
        ],
    );
    assert_eq!(third["version"], "v1", "{third}");
    assert_eq!(third["uploaded_blobs"], 3);
    assert_eq!(blob_puts(&registry), (FILES + 4) as u64);

    // The user's files were not moved, linked or modified; a later edit of one does not
    // reach the cached blob.
    let after = std::fs::metadata(t.join("src/model.bin")).unwrap();
    assert_eq!(
        (after.ino(), after.nlink(), after.mtime()),
        (source_meta.ino(), 1, source_meta.mtime())
    );
    write(&t.join("src/model.bin"), b"edited");
    json(
        &a.socket,
        t,
        &["get", "acme/vision/new:v0", "--root", "again"],
    );
    assert_eq!(
        std::fs::read(t.join("again/weights/model.bin")).unwrap(),
        [7u8; 5000]
    );
    assert_eq!(
        std::fs::read(t.join("again/part-05.txt")).unwrap(),
        std::fs::read(t.join("elsewhere/part-05.txt")).unwrap()
    );
}

/// A port nothing listens on (yet).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An alias given while offline resolves here, to the publish, with a warning; the text
/// summary names it by digest, and a get with no --root puts it under that digest.
fn aliases_of_a_pending_publish_resolve_here(socket: &Path, t: &Path, digest: &str) {
    let again = json(
        socket,
        t,
        &[
            "publish",
            "acme/vision/offline",
            "src",
            "--alias",
            "candidate",
        ],
    );
    assert_eq!(again["digest"], digest, "the same content: one publish");
    for alias in ["candidate", "latest"] {
        let reference = format!("acme/vision/offline:{alias}");
        let got = json(socket, t, &["get", &reference, "--root", alias]);
        assert_eq!(got["files"], FILES + 1, "{got}");
        assert_eq!(
            std::fs::read(t.join(alias).join("model.bin")).unwrap(),
            [7u8; 5000]
        );
    }
    let out = hoard(socket, t, &["get", "acme/vision/offline:candidate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("not uploaded yet") && stderr.contains("has not confirmed"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("acme/vision/offline@{digest} (pending upload)")),
        "{stdout}"
    );
    assert!(
        t.join(format!("artifacts/offline@{digest}/model.bin"))
            .exists()
    );
    let out = hoard(
        socket,
        t,
        &["get", "acme/vision/offline:prod", "--root", "x"],
    );
    assert!(
        !out.status.success(),
        "an alias no publish gave still fails"
    );
}

#[test]
fn a_publish_while_the_registry_is_down_is_usable_at_once_and_uploaded_later() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    dataset(&t.join("src"));
    let addr = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{addr}");
    let (socket, cache) = (t.join("d.sock"), t.join("cache"));
    let daemon = DaemonProcess::start(&socket, &cache, &url);

    let published = json(
        &socket,
        t,
        &["publish", "acme/vision/offline", "src", "--root", "here"],
    );
    assert_eq!(published["state"], "pending", "{published}");
    assert!(published["version"].is_null());
    assert_eq!(
        std::fs::read(t.join("here/data/part-01.txt")).unwrap(),
        std::fs::read(t.join("src/data/part-01.txt")).unwrap(),
        "--root materializes at once"
    );
    let digest = published["digest"].as_str().unwrap().to_owned();
    let by_digest = format!("acme/vision/offline@{digest}");
    let got = json(&socket, t, &["get", &by_digest, "--root", "by-digest"]);
    assert_eq!(got["files"], FILES + 1);
    assert_eq!(got["fetched_blobs"], 0);

    aliases_of_a_pending_publish_resolve_here(&socket, t, &digest);

    let status = json(&socket, t, &["status"]);
    let pending = &status["pending_uploads"][0];
    assert_eq!(pending["artifact"], "acme/vision/offline", "{status}");
    assert_eq!(pending["digest"], digest.as_str());

    // --wait with a short timeout: exits non-zero, the publish stays queued.
    let out = hoard(
        &socket,
        t,
        &[
            "publish",
            "acme/vision/offline",
            "src",
            "--wait",
            "--timeout",
            "1s",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stays queued"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A second version while still offline: it must be numbered after the first.
    let second = json(&socket, t, &["publish", "acme/vision/offline", "src/data"]);
    assert_eq!(second["state"], "pending");
    let second_digest = second["digest"].as_str().unwrap().to_owned();

    // A restart keeps the outbox; the registry comes up; the versions appear upstream, in
    // order, without anyone asking.
    assert!(daemon.terminate().success());
    let registry = RegistryProcess::start_on(&t.join("registry"), &addr, &[]);
    let daemon = DaemonProcess::start(&socket, &cache, &url);
    wait_until("the outbox to empty", || commits(&registry) == 2);
    wait_until("status to show no pending uploads", || {
        json(&socket, t, &["status"])["pending_uploads"]
            .as_array()
            .unwrap()
            .is_empty()
    });
    // The outbox reached the upstream: `status` says so (it said "unknown" until a
    // resolution asked, or kept an old "unreachable").
    let state = json(&socket, t, &["status"])["upstream_state"].clone();
    assert!(state.as_str().unwrap().starts_with("reachable"), "{state}");
    assert_eq!(
        blob_puts(&registry),
        (FILES + 1) as u64,
        "the second shares all blobs"
    );
    let other = DaemonProcess::start(&t.join("o.sock"), &t.join("cache-o"), &registry.url);
    let got = json(
        &other.socket,
        t,
        &["get", "acme/vision/offline:v0", "--root", "elsewhere"],
    );
    assert_eq!(got["digest"], digest.as_str());
    let latest = json(
        &other.socket,
        t,
        &["get", "acme/vision/offline:latest", "--root", "latest"],
    );
    assert_eq!(latest["version"], "v1");
    assert_eq!(latest["digest"], second_digest.as_str());
    drop(daemon);
}

#[test]
fn bad_publishes_are_refused_and_nothing_is_half_published() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    dataset(&t.join("src"));
    let registry = RegistryProcess::start(&t.join("registry"), &[]);
    let daemon = DaemonProcess::start(&t.join("d.sock"), &t.join("cache"), &registry.url);
    std::fs::write(t.join("secret"), b"s").unwrap();
    std::os::unix::fs::symlink(t.join("secret"), t.join("src/data/leak")).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(t.join("a-socket")).unwrap();
    std::fs::create_dir_all(t.join("plain")).unwrap();
    std::fs::write(t.join("plain/one.txt"), b"1").unwrap();

    for (args, needle) in [
        (vec!["publish", "acme/vision/x", "missing"], "missing"),
        (
            vec!["publish", "acme/vision/x", "a-socket"],
            "not a regular file",
        ),
        (vec!["publish", "acme/vision/x", "src"], "outside"),
        (
            vec!["publish", "acme/vision/x", "plain", "one.txt=src/model.bin"],
            "also given by",
        ),
        (vec!["publish", "acme/vision/bad name", "plain"], "name"),
        (
            vec!["publish", "acme/vision/x:v3", "plain"],
            "not a version",
        ),
        (
            vec!["publish", "acme/vision/x", "plain", "--metadata", "[1]"],
            "JSON object",
        ),
        (
            vec!["publish", "acme/vision/x", "../up=plain/one.txt"],
            "..",
        ),
    ] {
        let out = hoard(&daemon.socket, t, &args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    drop(listener);
    assert_eq!(commits(&registry), 0);
    assert_eq!(blob_puts(&registry), 0);
    let status = json(&daemon.socket, t, &["status"]);
    assert!(status["pending_uploads"].as_array().unwrap().is_empty());
}

#[test]
fn a_viewer_cannot_publish_and_is_told_why() {
    // config/registry-tokens.toml: token "change-me" is a member of acme/vision and a
    // viewer of the other acme projects.
    let tokens = hoard_tests::repo("config/registry-tokens.toml");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    dataset(&t.join("src"));
    let registry =
        RegistryProcess::start(&t.join("registry"), &["--tokens", tokens.to_str().unwrap()]);
    let daemon = DaemonProcess::start_env(
        &t.join("d.sock"),
        &t.join("cache"),
        &registry.url,
        &[],
        &[("HOARD_TOKEN", "change-me")],
    );
    let out = hoard(
        &daemon.socket,
        t,
        &["publish", "acme/audio/speech", "src", "--wait"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused the publish"), "{err}");
    assert!(err.to_lowercase().contains("permission"), "{err}");
    assert_eq!(commits(&registry), 0);
    let status = json(&daemon.socket, t, &["status"]);
    assert_eq!(status["pending_uploads"][0]["state"], "failed", "{status}");

    // A member's publish goes through.
    let ok = json(
        &daemon.socket,
        t,
        &["publish", "acme/vision/speech", "src", "--wait"],
    );
    assert_eq!(ok["version"], "v0", "{ok}");
}

#[test]
fn a_dir_upstream_takes_publishes_too() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    dataset(&t.join("src"));
    // A `dir://` root must look like one (a typo must not start an empty upstream).
    let root = t.join("shared");
    std::fs::create_dir_all(root.join("artifacts")).unwrap();
    std::fs::create_dir_all(root.join("blobs")).unwrap();
    let url = format!("dir://{}", root.display());
    let a = DaemonProcess::start(&t.join("a.sock"), &t.join("cache-a"), &url);
    let published = json(
        &a.socket,
        t,
        &[
            "publish",
            "acme/vision/dirpub",
            "src",
            "--alias",
            "best",
            "--wait",
        ],
    );
    assert_eq!(published["version"], "v0", "{published}");
    assert!(
        root.join("artifacts/acme/vision/dirpub/versions/v0.json")
            .is_file()
    );
    assert_eq!(
        std::fs::read_to_string(root.join("artifacts/acme/vision/dirpub/aliases/best"))
            .unwrap()
            .trim(),
        "v0"
    );
    let b = DaemonProcess::start(&t.join("b.sock"), &t.join("cache-b"), &url);
    let got = json(
        &b.socket,
        t,
        &["get", "acme/vision/dirpub:best", "--root", "out"],
    );
    assert_eq!(got["fetched_blobs"], FILES + 1);
    assert_eq!(
        std::fs::read(t.join("out/data/part-07.txt")).unwrap(),
        std::fs::read(t.join("src/data/part-07.txt")).unwrap()
    );
}
