#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

use std::fs;

use hoard_layout::{DirRoot, Error};
use hoard_types::registry::CommitRequest;
use hoard_types::{ArtifactName, Digest, Entry, Manifest, RelPath, Selector};

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

#[test]
fn edited_version_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = DirRoot::create(dir.path()).unwrap();
    publish(&root, &[("a", b"A")], &[]);
    let file = dir
        .path()
        .join("artifacts/acme/vision/bike/versions/v0.json");
    let text = fs::read_to_string(&file).unwrap();
    let copy = dir
        .path()
        .join("artifacts/acme/vision/bike/versions/v1.json");

    // A copy under another number: the content names v0.
    fs::write(&copy, &text).unwrap();
    let e = root.resolve(&bike(), &Selector::Version(1)).unwrap_err();
    assert!(e.to_string().contains("holds `acme/vision/bike:v0`"), "{e}");

    // A hostile path, with the digest recomputed so only the path is wrong.
    let hostile = text.replace("\"a\":", "\"../a\":");
    fs::write(&copy, hostile).unwrap();
    let e = root.resolve(&bike(), &Selector::Version(1)).unwrap_err();
    assert!(e.to_string().contains("Invalid path"), "{e}");

    // A manifest that does not match its digest.
    let forged = text
        .replace("\"size\":1", "\"size\":2")
        .replace("\"version\":\"v0\"", "\"version\":\"v1\"");
    fs::write(&copy, forged).unwrap();
    let e = root.resolve(&bike(), &Selector::Version(1)).unwrap_err();
    assert!(e.to_string().contains("claims digest"), "{e}");

    fs::write(
        dir.path().join("artifacts/acme/vision/bike/aliases/prod"),
        "garbage",
    )
    .unwrap();
    assert!(
        root.resolve(&bike(), &Selector::Alias("prod".into()))
            .is_err()
    );
}

#[test]
fn a_commit_with_missing_blobs_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = DirRoot::create(dir.path()).unwrap();
    let mut manifest = Manifest::new();
    manifest.entries.insert(
        RelPath::new("a").unwrap(),
        Entry {
            digest: Digest::of(b"absent"),
            exec: false,
            reference: None,
            size: 6,
        },
    );
    let request = CommitRequest {
        manifest,
        aliases: vec![],
        kind: None,
        metadata: serde_json::Value::Null,
    };
    let e = root.commit(&bike(), &request, |_| true).unwrap_err();
    assert!(
        matches!(&e, Error::MissingBlobs { missing } if missing == &[Digest::of(b"absent")]),
        "{e}"
    );
    assert!(root.version_numbers(&bike()).unwrap().is_empty());

    // Reference entries need no blob.
    let mut manifest = Manifest::new();
    manifest.entries.insert(
        RelPath::new("remote.bin").unwrap(),
        Entry {
            digest: Digest::of(b"remote"),
            exec: false,
            reference: Some("https://example.com/r".into()),
            size: 6,
        },
    );
    let request = CommitRequest {
        manifest,
        aliases: vec![],
        kind: None,
        metadata: serde_json::Value::Null,
    };
    assert!(root.commit(&bike(), &request, |_| true).unwrap().created);
}

#[test]
fn concurrent_commits_from_threads_get_distinct_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let root = DirRoot::create(dir.path()).unwrap();
    let threads: Vec<_> = (0..8u8)
        .map(|i| {
            let root = root.clone();
            std::thread::spawn(move || {
                let data = vec![i; 3];
                publish(&root, &[("x", &data)], &[]).version
            })
        })
        .collect();
    let mut numbers: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    numbers.sort();
    assert_eq!(numbers, (0..8).map(|n| format!("v{n}")).collect::<Vec<_>>());
    assert_eq!(
        root.version_numbers(&bike()).unwrap(),
        (0..8).collect::<Vec<u32>>()
    );
}

#[test]
fn only_abandoned_temp_files_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let root = DirRoot::create(dir.path()).unwrap();
    let abandoned = dir.path().join("tmp/1234-dead.tmp");
    fs::write(&abandoned, b"half a blob").unwrap();
    let mut live = root.temp_blob().unwrap();
    live.write_all(b"being written").unwrap();
    assert_eq!(root.clean_tmp(std::time::Duration::ZERO).unwrap(), 1);
    assert!(!abandoned.exists());
    assert!(
        live.path().exists(),
        "a file whose writer holds its lock stays"
    );
    drop(live);
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
}
