#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

//! A `dir://` root as a [`Catalog`]: resolution and verified streams.

use std::fs;
use std::path::Path;

use hoard_layout::DirRoot;
use hoard_types::registry::CommitRequest;
use hoard_types::{ArtifactName, Digest, Entry, Manifest, RelPath, Selector};
use hoard_upstream::{Catalog, ClientOptions, Error, Upstream};

fn bike() -> ArtifactName {
    ArtifactName::new("acme", "vision", "bike").unwrap()
}

/// Stores `files` as blobs and commits them.
fn publish(root: &DirRoot, files: &[(&str, &[u8])], aliases: &[&str]) -> hoard_types::Version {
    let mut manifest = Manifest::new();
    for (path, data) in files {
        let digest = Digest::of(data);
        root.put_blob(&digest, Some(data.len() as u64), *data, "the test's bytes")
            .unwrap();
        manifest.entries.insert(
            RelPath::new(*path).unwrap(),
            Entry {
                digest,
                exec: false,
                reference: None,
                size: data.len() as u64,
            },
        );
    }
    let request = CommitRequest {
        manifest,
        aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
        kind: None,
        metadata: serde_json::Value::Null,
    };
    root.commit(&bike(), &request, |_| true).unwrap().version
}

fn open(dir: &Path) -> std::sync::Arc<dyn Catalog> {
    match hoard_upstream::open(
        &format!("dir://{}", dir.display()),
        ClientOptions::default(),
    )
    .unwrap()
    {
        Upstream::Native {
            catalog,
            publisher: Some(_),
        } => catalog,
        _ => panic!("`dir://` opened as anything but a native upstream that publishes"),
    }
}

#[test]
fn the_layout_is_the_pinned_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = DirRoot::create(dir.path()).unwrap();
    let v = publish(&root, &[("images/a.png", b"png")], &["best"]);
    let hex = Digest::of(b"png").to_hex();
    assert_eq!(
        fs::read(dir.path().join("blobs").join(&hex[..2]).join(&hex)).unwrap(),
        b"png"
    );
    let stored = fs::read(
        dir.path()
            .join("artifacts/acme/vision/bike/versions/v0.json"),
    )
    .unwrap();
    let parsed = hoard_types::Version::from_json(&stored).unwrap();
    assert_eq!((parsed.version.as_str(), parsed.digest), ("v0", v.digest));
    for alias in ["latest", "best"] {
        let text = fs::read_to_string(
            dir.path()
                .join("artifacts/acme/vision/bike/aliases")
                .join(alias),
        )
        .unwrap();
        assert_eq!(text, "v0\n");
    }
    let mode = fs::metadata(dir.path().join("blobs").join(&hex[..2]).join(&hex)).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o444
    );
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
}

#[tokio::test]
async fn a_dir_upstream_resolves_and_streams_verified_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let root = DirRoot::create(dir.path()).unwrap();
    let data: Vec<u8> = (0..600_000u32).map(|i| (i % 241) as u8).collect();
    let v0 = publish(&root, &[("w.bin", &data)], &[]);
    let v1 = publish(&root, &[("w.bin", b"small")], &[]);
    let upstream = open(dir.path());

    let latest = upstream
        .resolve(&bike(), &Selector::Alias("latest".into()))
        .await
        .unwrap();
    assert_eq!(latest.digest, v1.digest);
    let by_digest = upstream
        .resolve(&bike(), &Selector::Digest(v0.digest))
        .await
        .unwrap();
    assert_eq!(by_digest.version, "v0");
    let e = upstream
        .resolve(&bike(), &Selector::Version(5))
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");

    let digest = Digest::of(&data);
    let size = data.len() as u64;
    let whole = upstream.fetch_blob(&digest, size, None).await.unwrap();
    assert_eq!(whole.read_to_vec().await.unwrap(), data);
    let part = upstream
        .fetch_blob(&digest, size, Some(300_000..300_010))
        .await
        .unwrap();
    assert_eq!(part.read_to_vec().await.unwrap(), &data[300_000..300_010]);
    assert!(
        upstream
            .fetch_blob(&digest, size, Some(0..size + 1))
            .await
            .is_err()
    );

    // Bytes changed behind the upstream's back (same size): an error, not a success.
    let path = root.blob_path(&digest);
    let mut perms = fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    fs::set_permissions(&path, perms).unwrap();
    let mut tampered = data.clone();
    tampered[123] ^= 1;
    fs::write(&path, &tampered).unwrap();
    let e = upstream
        .fetch_blob(&digest, size, None)
        .await
        .unwrap()
        .read_to_vec()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    // A size that disagrees with the manifest is refused before streaming.
    assert!(upstream.fetch_blob(&digest, size - 1, None).await.is_err());
}
