#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

//! `hoard artifacts` and `hoard versions`: what an upstream holds, as the caller may see
//! it, and how much of each version this cache holds.

use std::path::Path;
use std::process::Command;

use hoard_tests::{
    DaemonProcess, RegistryProcess, artifact_names, hoard_json as json, hoard_on as hoard, import,
    tokens_file,
};

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// Two versions of `acme/vision/bike` (v1 has one more file), one of `acme/vision/cars`.
fn upstream(root: &Path, t: &Path) {
    write(&t.join("v0/a.txt"), b"a");
    write(&t.join("v0/b.txt"), b"b");
    import(root, "acme/vision/bike", &t.join("v0"));
    write(&t.join("v1/a.txt"), b"a");
    write(&t.join("v1/b.txt"), b"b");
    write(&t.join("v1/c.txt"), b"c");
    import(root, "acme/vision/bike", &t.join("v1"));
    import(root, "acme/vision/cars", &t.join("v0"));
}

/// A registry on `root` with `tokens`, and a daemon in front of it holding `daemon-secret`.
fn behind_tokens(t: &Path, root: &Path, tokens: &Path) -> (RegistryProcess, DaemonProcess) {
    let registry = RegistryProcess::start(root, &["--tokens", tokens.to_str().unwrap()]);
    let daemon = DaemonProcess::start_env(
        &t.join("d.sock"),
        &t.join("cache"),
        &registry.url,
        &[],
        &[("HOARD_TOKEN", "daemon-secret")],
    );
    (registry, daemon)
}

fn versions(listed: &serde_json::Value) -> Vec<(String, Option<u64>)> {
    listed["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap().to_owned(),
                v["cached_files"].as_u64(),
            )
        })
        .collect()
}

#[test]
fn a_registry_and_a_dir_root_list_their_artifacts_and_versions_and_what_is_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let root = t.join("registry");
    upstream(&root, t);
    let registry = RegistryProcess::start(&root, &[]);
    let dir = format!("dir://{}", root.display());
    for (i, url) in [registry.url.as_str(), dir.as_str()]
        .into_iter()
        .enumerate()
    {
        let daemon = DaemonProcess::start(
            &t.join(format!("{i}.sock")),
            &t.join(format!("cache-{i}")),
            url,
        );
        let socket = &daemon.socket;
        let listed = json(socket, t, &["artifacts", "acme/vision"]);
        assert_eq!(listed["upstream"], url, "{listed}");
        assert_eq!(artifact_names(&listed), ["bike", "cars"], "{listed}");
        assert_eq!(listed["artifacts"][0]["versions"], 2);
        assert_eq!(listed["artifacts"][0]["latest"], "v1");

        // Nothing cached yet; then v0 only, then v1 with two of its three blobs shared.
        let listed = json(socket, t, &["versions", "acme/vision/bike"]);
        assert_eq!(
            versions(&listed),
            [("v0".to_owned(), None), ("v1".to_owned(), None)]
        );
        assert_eq!(listed["aliases"]["latest"], "v1", "{listed}");
        assert_eq!(listed["versions"][1]["files"], 3);
        json(socket, t, &["get", "acme/vision/bike:v0", "--root", "zero"]);
        let listed = json(socket, t, &["versions", "acme/vision/bike"]);
        assert_eq!(
            versions(&listed),
            [("v0".to_owned(), Some(2)), ("v1".to_owned(), None)]
        );
        json(socket, t, &["get", "acme/vision/bike:v1", "--root", "one"]);
        let listed = json(socket, t, &["versions", "acme/vision/bike"]);
        assert_eq!(
            versions(&listed),
            [("v0".to_owned(), Some(2)), ("v1".to_owned(), Some(3))]
        );

        // The defaults of a reference apply; a project that does not exist is named.
        let out = Command::new(hoard_tests::binary("hoard"))
            .args(["artifacts", "vision", "--json"])
            .env("HOARD_SOCKET", socket)
            .env("HOARD_ENTITY", "acme")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = hoard(socket, t, &["artifacts", "acme/elsewhere"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("no project `acme/elsewhere`"),
            "{stderr}"
        );
    }
}

#[test]
fn a_publish_not_uploaded_yet_is_listed_with_its_aliases() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // The daemon's credential may list but not publish: its publish stays in the outbox.
    let tokens = t.join("tokens.toml");
    tokens_file(
        &tokens,
        &[("daemon", "daemon-secret", "acme/vision", "viewer")],
    );
    let root = t.join("registry");
    upstream(&root, t);
    let (_registry, daemon) = behind_tokens(t, &root, &tokens);
    let socket = &daemon.socket;
    write(&t.join("new/d.txt"), b"d");
    let published = json(
        socket,
        t,
        &["publish", "acme/vision/bike", "new", "--alias", "candidate"],
    );
    assert_eq!(published["state"], "pending");
    let listed = json(socket, t, &["versions", "acme/vision/bike"]);
    assert_eq!(
        versions(&listed),
        [
            ("v0".to_owned(), None),
            ("v1".to_owned(), None),
            ("pending".to_owned(), Some(1))
        ],
        "{listed}"
    );
    assert_eq!(listed["versions"][2]["aliases"][0], "candidate", "{listed}");
    assert_eq!(listed["versions"][2]["digest"], published["digest"]);
    let out = hoard(socket, t, &["versions", "acme/vision/bike"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .last()
            .unwrap()
            .starts_with("pending upload  candidate"),
        "{stdout}"
    );
}

#[test]
fn a_listing_shows_what_the_callers_credential_may_see() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let tokens = t.join("tokens.toml");
    tokens_file(
        &tokens,
        &[
            ("daemon", "daemon-secret", "acme/*", "member"),
            ("vera", "vera-secret", "acme/vision", "viewer"),
        ],
    );
    let root = t.join("registry");
    upstream(&root, t);
    import(&root, "acme/secret/plans", &t.join("v0"));
    let (_registry, daemon) = behind_tokens(t, &root, &tokens);
    let as_vera = |args: &[&str]| {
        Command::new(hoard_tests::binary("hoard"))
            .args(args)
            .env("HOARD_SOCKET", &daemon.socket)
            .env("HOARD_TOKEN", "vera-secret")
            .env("HOARD_LOG", "warn")
            .current_dir(t)
            .output()
            .unwrap()
    };
    // A viewer may list what they may not download.
    let out = as_vera(&["versions", "acme/vision/bike", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A project they have no grant in is not there for them, though the daemon's own
    // credential sees it, and a not-found names nothing of it.
    for args in [
        &["artifacts", "acme/secret"][..],
        &["versions", "acme/secret/plans"],
        &["get", "acme/secret/plans:nope", "--root", "x"],
    ] {
        let out = as_vera(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr.contains("no project `acme/secret`"),
            "{args:?}: {stderr}"
        );
        assert!(
            !stderr.contains("plans:") && !stderr.contains("latest"),
            "{stderr}"
        );
    }
    let listed = json(&daemon.socket, t, &["artifacts", "acme/secret"]);
    assert_eq!(listed["artifacts"][0]["name"], "plans");
}
