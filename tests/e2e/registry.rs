//! `hoard registry import` and `hoard registry serve`, as processes.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

use std::path::Path;
use std::process::Command;

use hoard_tests::{RegistryProcess, binary};
use hoard_types::{ArtifactName, Digest, Selector};
use hoard_upstream::{Catalog, ClientOptions, Upstream};

fn hoard(args: &[&str]) -> std::process::Output {
    Command::new(binary("hoard")).args(args).output().unwrap()
}

/// The catalog behind an upstream URL that serves hoard versions.
fn catalog(url: &str, options: ClientOptions) -> std::sync::Arc<dyn Catalog> {
    match hoard_upstream::open(url, options).unwrap() {
        Upstream::Native { catalog, .. } => catalog,
        Upstream::Foreign(_) => panic!("`{url}` opened as a foreign upstream"),
    }
}

fn tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("images/bikes")).unwrap();
    std::fs::write(dir.join("images/bikes/a.png"), b"png bytes").unwrap();
    std::fs::write(dir.join("labels.csv"), b"a,1\n").unwrap();
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::write(dir.join("bin/prepare.sh"), b"#!/bin/sh\n").unwrap();
    let mut perms = std::fs::metadata(dir.join("bin/prepare.sh"))
        .unwrap()
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(dir.join("bin/prepare.sh"), perms).unwrap();
}

fn import(root: &Path, src: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "registry",
        "import",
        "--json",
        "--root",
        root.to_str().unwrap(),
        "acme/vision/bike",
        src.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = hoard(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn an_imported_root_is_served_and_read_as_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, src) = (tmp.path().join("registry"), tmp.path().join("src"));
    tree(&src);
    let v0 = import(&root, &src, &["--alias", "best", "--type", "dataset"]);
    assert_eq!(v0["version"], "v0");
    assert_eq!(v0["manifest"]["entries"]["bin/prepare.sh"]["exec"], true);
    let again = import(&root, &src, &[]);
    assert_eq!(again["version"], "v0", "the same tree is the same version");
    std::fs::write(src.join("labels.csv"), b"a,2\n").unwrap();
    let v1 = import(&root, &src, &[]);
    assert_eq!(v1["version"], "v1");

    let name = ArtifactName::new("acme", "vision", "bike").unwrap();
    let dir = catalog(
        &format!("dir://{}", root.display()),
        ClientOptions::default(),
    );
    let registry = RegistryProcess::start(&root, &[]);
    let http = catalog(&registry.url, ClientOptions::default());
    for upstream in [&dir, &http] {
        let best = upstream
            .resolve(&name, &Selector::Alias("best".into()))
            .await
            .unwrap();
        assert_eq!(best.version, "v0", "{}", upstream.describe());
        let latest = upstream
            .resolve(&name, &Selector::Alias("latest".into()))
            .await
            .unwrap();
        assert_eq!(latest.version, "v1");
        let entry = &latest.manifest.entries[&hoard_types::RelPath::new("labels.csv").unwrap()];
        assert_eq!(entry.digest, Digest::of(b"a,2\n"));
        let bytes = upstream
            .fetch_blob(&entry.digest, entry.size, None)
            .await
            .unwrap()
            .read_to_vec()
            .await
            .unwrap();
        assert_eq!(bytes, b"a,2\n");
    }
    // The source tree is untouched: still writable, still its own inode.
    let meta = std::fs::metadata(src.join("labels.csv")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::nlink(&meta), 1);
    assert!(registry.terminate().success(), "SIGTERM is a clean exit");
}

#[test]
fn an_open_registry_stays_on_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    let out = hoard(&[
        "registry",
        "serve",
        "--root",
        root.to_str().unwrap(),
        "--listen",
        "0.0.0.0:0",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Refusing to listen on `0.0.0.0:0` without `--tokens`"),
        "{err}"
    );
}

#[test]
fn a_bad_tokens_file_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = tmp.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[token]]\nname = \"alice\"\nsecret_sha256 = \"hunter2\"\n",
    )
    .unwrap();
    let out = hoard(&[
        "registry",
        "serve",
        "--root",
        tmp.path().join("r").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--tokens",
        tokens.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tokens.toml") && err.contains("`secret_sha256` of token `alice`"),
        "{err}"
    );
}

#[tokio::test]
async fn the_documented_tokens_file_works() {
    // config/registry-tokens.toml holds the hash of "change-me" for its example token.
    let config = hoard_tests::repo("config/registry-tokens.toml");
    let tmp = tempfile::tempdir().unwrap();
    let (root, src) = (tmp.path().join("registry"), tmp.path().join("src"));
    tree(&src);
    import(&root, &src, &[]);
    let registry = RegistryProcess::start(&root, &["--tokens", config.to_str().unwrap()]);
    let name = ArtifactName::new("acme", "vision", "bike").unwrap();
    let options = |token: &str| ClientOptions {
        token: Some(token.to_owned()),
        ..ClientOptions::default()
    };
    let alice = catalog(&registry.url, options("change-me"));
    assert_eq!(
        alice
            .resolve(&name, &Selector::Version(0))
            .await
            .unwrap()
            .version,
        "v0"
    );
    let stranger = catalog(&registry.url, options("guess"));
    let e = stranger
        .resolve(&name, &Selector::Version(0))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("refused the credential"), "{e}");
}

#[test]
fn import_refuses_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    let root = root.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["acme/vision/bike", "/nonexistent"],
            "Cannot import `/nonexistent`",
        ),
        (
            vec!["vision/bike", "."],
            "needs the full `entity/project/name`",
        ),
        (vec!["acme/vision/bike:v1", "."], "creates a new version"),
        (vec!["acme/vision/../x", "."], "Invalid artifact reference"),
        (
            vec!["acme/vision/bike", ".", "--metadata", "[1]"],
            "must be a JSON object",
        ),
        (
            vec!["acme/vision/bike", ".", "--alias", "v2"],
            "version number",
        ),
    ] {
        let mut full = vec!["registry", "import", "--root", root];
        full.extend(args);
        let out = hoard(&full);
        assert!(!out.status.success(), "{full:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{full:?}: {err}");
    }
}

/// Every blob file holds the bytes its name says, and every version file names only
/// blobs that are there.
fn assert_consistent(root: &Path) {
    for shard in std::fs::read_dir(root.join("blobs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for blob in std::fs::read_dir(shard.path()).unwrap().flatten() {
            let name = blob.file_name().into_string().unwrap();
            let bytes = std::fs::read(blob.path()).unwrap();
            assert_eq!(
                Digest::of(&bytes).to_hex(),
                name,
                "a blob with wrong bytes is visible"
            );
        }
    }
    let versions = root.join("artifacts/acme/vision/bike/versions");
    for file in std::fs::read_dir(versions).into_iter().flatten().flatten() {
        let version =
            hoard_types::Version::from_json(&std::fs::read(file.path()).unwrap()).unwrap();
        for entry in version.manifest.entries.values() {
            let hex = entry.digest.to_hex();
            assert!(
                root.join("blobs").join(&hex[..2]).join(&hex).exists(),
                "a version names a missing blob"
            );
        }
    }
}

#[test]
fn a_killed_import_leaves_nothing_half_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, src) = (tmp.path().join("registry"), tmp.path().join("src"));
    tree(&src);
    let big: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(src.join("big.bin"), &big).unwrap();
    for i in 0..50 {
        std::fs::write(src.join(format!("small-{i}.txt")), format!("{i}")).unwrap();
    }
    for delay_ms in [20, 80, 200] {
        let mut child = Command::new(binary("hoard"))
            .args([
                "registry",
                "import",
                "--root",
                root.to_str().unwrap(),
                "acme/vision/bike",
                src.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        assert_consistent(&root);
    }
    let done = import(&root, &src, &[]);
    assert_eq!(
        done["version"], "v0",
        "an interrupted import never took a version number"
    );
    assert_consistent(&root);
}
