#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

//! Cached bytes are not an access grant: a caller's own credential is checked with the
//! upstream before cached files are handed out.

use std::path::Path;
use std::process::{Command, Output};

use hoard_tests::{DaemonProcess, RegistryProcess, binary, import, tokens_file};

/// `hoard get` as a caller holding `token` (none: the daemon's credential applies).
fn get(socket: &Path, cwd: &Path, token: Option<&str>, reference: &str, root: &str) -> Output {
    let mut command = Command::new(binary("hoard"));
    command
        .args(["get", reference, "--root", root])
        .env("HOARD_SOCKET", socket)
        .env("HOARD_LOG", "warn")
        .env_remove("HOARD_TOKEN")
        .current_dir(cwd);
    if let Some(token) = token {
        command.env("HOARD_TOKEN", token);
    }
    command.output().unwrap()
}

#[test]
fn a_viewer_is_refused_cached_files_and_confirmations_expire_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    tokens_file(
        &t.join("tokens.toml"),
        &[
            ("daemon", "daemon-secret", "acme/*", "member"),
            ("vera", "vera-secret", "acme/audio", "viewer"),
            ("max", "max-secret", "acme/audio", "member"),
            ("mia", "mia-secret", "acme/audio", "member"),
        ],
    );
    let src = t.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("speech.wav"), b"hello").unwrap();
    let root = t.join("registry");
    import(&root, "acme/audio/speech", &src);
    let tokens = t.join("tokens.toml");
    let registry = RegistryProcess::start(&root, &["--tokens", tokens.to_str().unwrap()]);
    let daemon = DaemonProcess::start_env(
        &t.join("d.sock"),
        &t.join("cache"),
        &registry.url,
        &["--alias-ttl", "1h"],
        &[("HOARD_TOKEN", "daemon-secret")],
    );
    let socket = daemon.socket.clone();

    // A member gets it: now every blob is cached.
    let out = get(
        &socket,
        t,
        Some("max-secret"),
        "acme/audio/speech:v0",
        "max",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gets = registry.blob_gets();

    // A viewer is refused even so, with the upstream's reason; nothing is written.
    let out = get(
        &socket,
        t,
        Some("vera-secret"),
        "acme/audio/speech:v0",
        "vera",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("view-only members cannot download artifacts"),
        "{err}"
    );
    assert!(!t.join("vera").exists());
    // A credential the registry does not know is refused too.
    let out = get(
        &socket,
        t,
        Some("nobody-secret"),
        "acme/audio/speech:v0",
        "nobody",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the credential"));
    assert_eq!(registry.blob_gets(), gets, "refusals fetch nothing");

    // A system daemon may insist on callers' own credentials.
    let strict = DaemonProcess::start_env(
        &t.join("strict.sock"),
        &t.join("strict-cache"),
        &registry.url,
        &["--require-caller-token"],
        &[("HOARD_TOKEN", "daemon-secret")],
    );
    let out = get(
        &strict.socket,
        t,
        None,
        "acme/audio/speech:v0",
        "strict-none",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("set HOARD_TOKEN"));
    let out = get(
        &strict.socket,
        t,
        Some("max-secret"),
        "acme/audio/speech:v0",
        "strict-max",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(strict);

    // The upstream goes away: the member confirmed a moment ago is still served; a member
    // never confirmed is refused with the reason.
    drop(registry);
    let out = get(
        &socket,
        t,
        Some("max-secret"),
        "acme/audio/speech:v0",
        "max-again",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = get(
        &socket,
        t,
        Some("mia-secret"),
        "acme/audio/speech:v0",
        "mia",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot confirm"), "{err}");
    assert!(!t.join("mia").exists());
    // Without a credential of their own, a caller is served on the daemon's.
    let out = get(&socket, t, None, "acme/audio/speech:v0", "plain");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A credential that is not valid header text is refused, not dropped (the caller would
/// be served on the daemon's credential instead of theirs).
#[test]
fn a_token_that_is_not_header_text_is_refused() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = t.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f.txt"), b"x").unwrap();
    let root = t.join("registry");
    import(&root, "acme/audio/speech", &src);
    let registry = RegistryProcess::start(&root, &[]);
    let daemon = DaemonProcess::start(&t.join("d.sock"), &t.join("cache"), &registry.url);
    let body = br#"{"reference": "acme/audio/speech", "dest": "/tmp/never-written"}"#;
    let mut request = format!(
        "POST /v1/materialize HTTP/1.1\r\nHost: hoard\r\nContent-Length: {}\r\nConnection: close\r\nX-Hoard-Token: ",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(b"caf\xe9-token\r\n\r\n");
    request.extend_from_slice(body);
    let mut stream = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    stream.write_all(&request).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("X-Hoard-Token"), "{answer}");
    assert!(!Path::new("/tmp/never-written").exists());
}
