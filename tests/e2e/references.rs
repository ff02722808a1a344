//! Reference entries (`ref` set): fetched from their URI like any blob, checked against the
//! manifest's digest and size; unknown schemes refused by name.

use hoard_tests::{DaemonProcess, RegistryProcess, hoard_on as hoard, import};
use hoard_types::Digest;

fn commit(url: &str, name: &str, entries: &[(&str, &[u8], &str)]) {
    let entries: Vec<(&str, Digest, u64, &str)> = entries
        .iter()
        .map(|(path, bytes, uri)| (*path, Digest::of(bytes), bytes.len() as u64, *uri))
        .collect();
    hoard_tests::commit_refs(url, None, name, &entries);
}

#[test]
fn references_are_fetched_from_their_uri_and_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // Bytes the registry serves at a plain URL (standing in for any https:// object).
    let src = t.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let served = b"weights served over http".repeat(100);
    std::fs::write(src.join("w.bin"), &served).unwrap();
    let root = t.join("registry");
    import(&root, "acme/vision/holder", &src);
    let registry = RegistryProcess::start(&root, &[]);
    let http_uri = format!("{}/v1/blobs/{}", registry.url, Digest::of(&served));
    // And a local file.
    let local = b"a local file".to_vec();
    std::fs::write(t.join("local.bin"), &local).unwrap();
    let file_uri = format!("file://{}", t.join("local.bin").display());
    commit(
        &registry.url,
        "acme/vision/refs",
        &[
            ("remote/w.bin", &served, &http_uri),
            ("local.bin", &local, &file_uri),
        ],
    );
    let daemon = DaemonProcess::start(&t.join("d.sock"), &t.join("cache"), &registry.url);
    let socket = daemon.socket.clone();

    // `ls` shows the URIs (W&B's Entry.ref); `get` fetches and checks the bytes.
    let out = hoard(&socket, t, &["ls", "acme/vision/refs", "--json"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains(&http_uri) && listing.contains(&file_uri),
        "{listing}"
    );
    let out = hoard(
        &socket,
        t,
        &["get", "acme/vision/refs", "--root", "out", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(t.join("out/remote/w.bin")).unwrap(), served);
    assert_eq!(std::fs::read(t.join("out/local.bin")).unwrap(), local);

    // A reference whose bytes changed since it was recorded: refused, nothing written.
    let changed = b"the recorded bytes".to_vec();
    std::fs::write(t.join("changed.bin"), b"other bytes, same story").unwrap();
    let changed_uri = format!("file://{}", t.join("changed.bin").display());
    commit(
        &registry.url,
        "acme/vision/stale",
        &[("c.bin", &changed, &changed_uri)],
    );
    let out = hoard(&socket, t, &["get", "acme/vision/stale", "--root", "stale"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("c.bin") || err.contains("bytes"), "{err}");
    assert!(!t.join("stale/c.bin").exists());

    // `s3://` without credentials for the daemon: refused by name, before anything is
    // fetched.
    commit(
        &registry.url,
        "acme/vision/s3",
        &[("x.bin", b"x", "s3://bucket/x.bin")],
    );
    let out = hoard(&socket, t, &["get", "acme/vision/s3", "--root", "s3"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`s3://`"), "{err}");
    assert!(!t.join("s3").exists());
}
