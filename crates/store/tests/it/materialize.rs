use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

use hoard_store::{Error, LinkMode};
use hoard_types::{Digest, PathPrefix};

use crate::common::{Cache, Tmpfs, files_under, is_root};

const FILES: &[(&str, &[u8], bool)] = &[
    ("images/bike.png", b"png bytes", false),
    ("images/deep/car.png", b"car bytes", false),
    ("bin/prepare.sh", b"#!/bin/sh\n", true),
    ("labels.csv", b"a,b\n", false),
    ("copy-of-labels.csv", b"a,b\n", false),
];

#[test]
fn hardlinks_share_the_blob_inode_and_bytes() {
    let cache = Cache::new();
    let manifest = cache.manifest(FILES);
    let dest = cache.path("job");
    let report = cache
        .materialize(&manifest, &dest, LinkMode::Hardlink)
        .unwrap();
    assert_eq!(
        (report.files, report.placed, report.unchanged, report.mode),
        (5, 5, 0, LinkMode::Hardlink)
    );
    assert_eq!(
        report.bytes,
        FILES.iter().map(|f| f.1.len() as u64).sum::<u64>()
    );
    for (path, data, exec) in FILES {
        let file = dest.join(path);
        assert_eq!(fs::read(&file).unwrap(), *data, "{path}");
        let meta = fs::metadata(&file).unwrap();
        assert_eq!(
            meta.ino(),
            cache.blob_ino(data, *exec),
            "{path} must be a hardlink to its blob"
        );
        assert_eq!(meta.mode() & 0o7777, if *exec { 0o555 } else { 0o444 });
    }
    assert_eq!(files_under(&dest).len(), 5);
    // A job cannot write through the link (for a non-root caller the mode forbids it).
    if !is_root() {
        assert!(
            fs::OpenOptions::new()
                .write(true)
                .open(dest.join("labels.csv"))
                .is_err()
        );
    }
}

#[test]
fn rematerializing_is_a_no_op_that_keeps_inodes() {
    let cache = Cache::new();
    let manifest = cache.manifest(FILES);
    let dest = cache.path("job");
    cache
        .materialize(&manifest, &dest, LinkMode::Hardlink)
        .unwrap();
    let before: Vec<u64> = FILES
        .iter()
        .map(|f| fs::metadata(dest.join(f.0)).unwrap().ino())
        .collect();
    fs::write(dest.join("my-notes.txt"), b"mine").unwrap();
    let report = cache
        .materialize(&manifest, &dest, LinkMode::Hardlink)
        .unwrap();
    assert_eq!((report.placed, report.unchanged), (0, 5));
    let after: Vec<u64> = FILES
        .iter()
        .map(|f| fs::metadata(dest.join(f.0)).unwrap().ino())
        .collect();
    assert_eq!(before, after);
    assert_eq!(
        fs::read(dest.join("my-notes.txt")).unwrap(),
        b"mine",
        "files the version does not name are left alone"
    );
}

#[test]
fn a_stale_file_is_replaced_atomically() {
    let cache = Cache::new();
    let manifest = cache.manifest(FILES);
    let dest = cache.path("job");
    fs::create_dir_all(dest.join("images")).unwrap();
    fs::write(dest.join("images/bike.png"), b"old version").unwrap();
    let report = cache
        .materialize(&manifest, &dest, LinkMode::Hardlink)
        .unwrap();
    assert_eq!(report.placed, 5);
    assert_eq!(
        fs::read(dest.join("images/bike.png")).unwrap(),
        b"png bytes"
    );
    assert!(
        files_under(&dest).iter().all(|f| !f.contains(".hoard-tmp")),
        "{:?}",
        files_under(&dest)
    );
}

#[test]
fn a_path_prefix_selects_like_wandb() {
    let cache = Cache::new();
    let manifest = cache.manifest(FILES);
    let dest = cache.path("job");
    let report = cache
        .store
        .materialize(
            &manifest,
            &PathPrefix::new("images/").unwrap(),
            &dest,
            LinkMode::Hardlink,
        )
        .unwrap();
    assert_eq!(report.files, 2);
    assert_eq!(
        files_under(&dest),
        ["images/bike.png", "images/deep/car.png"]
    );
}

#[test]
fn copies_are_independent_and_writable() {
    let cache = Cache::new();
    let manifest = cache.manifest(FILES);
    let dest = cache.path("job");
    let report = cache.materialize(&manifest, &dest, LinkMode::Copy).unwrap();
    assert_eq!(report.mode, LinkMode::Copy);
    for (path, data, exec) in FILES {
        let meta = fs::metadata(dest.join(path)).unwrap();
        assert_ne!(meta.ino(), cache.blob_ino(data, *exec));
        assert_eq!(meta.mode() & 0o7777, if *exec { 0o755 } else { 0o644 });
        assert_eq!(fs::read(dest.join(path)).unwrap(), *data);
    }
    fs::write(dest.join("labels.csv"), b"edited").unwrap();
    assert_eq!(
        fs::read(
            cache
                .store
                .blob_path(&hoard_store::BlobKey::new(Digest::of(b"a,b\n"), false))
        )
        .unwrap(),
        b"a,b\n"
    );
    let again = cache.materialize(&manifest, &dest, LinkMode::Copy).unwrap();
    assert_eq!(
        (again.placed, again.unchanged),
        (1, 4),
        "only the edited copy is restored"
    );
    assert_eq!(fs::read(dest.join("labels.csv")).unwrap(), b"a,b\n");
}

#[test]
fn symlinks_point_at_blobs() {
    let cache = Cache::new();
    let manifest = cache.manifest(FILES);
    let dest = cache.path("job");
    cache
        .materialize(&manifest, &dest, LinkMode::Symlink)
        .unwrap();
    let target = fs::read_link(dest.join("labels.csv")).unwrap();
    assert_eq!(
        target,
        cache
            .store
            .blob_path(&hoard_store::BlobKey::new(Digest::of(b"a,b\n"), false))
    );
    assert_eq!(fs::read(dest.join("labels.csv")).unwrap(), b"a,b\n");
    let again = cache
        .materialize(&manifest, &dest, LinkMode::Symlink)
        .unwrap();
    assert_eq!(again.unchanged, 5);
}

#[test]
fn auto_reports_the_mode_it_used() {
    let cache = Cache::new();
    let manifest = cache.manifest(FILES);
    for job in ["a", "b"] {
        let dest = cache.path(job);
        let report = cache.materialize(&manifest, &dest, LinkMode::Auto).unwrap();
        assert!(
            matches!(report.mode, LinkMode::Reflink | LinkMode::Hardlink),
            "{:?}",
            report.mode
        );
        assert_eq!(report.placed, 5);
        for (path, data, _) in FILES {
            assert_eq!(fs::read(dest.join(path)).unwrap(), *data);
        }
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it when run as root, as CI does"]
fn across_filesystems_hardlink_fails_clearly_and_auto_copies() {
    assert!(is_root(), "mounting a tmpfs needs root");
    let cache = Cache::new();
    let manifest = cache.manifest(FILES);
    let other = Tmpfs::mount("4m");
    let err = cache
        .materialize(&manifest, &other.dir.path().join("x"), LinkMode::Hardlink)
        .unwrap_err();
    assert!(matches!(err, Error::ModeUnsupported { .. }), "{err}");
    assert!(
        err.to_string().contains("different filesystems")
            && err.to_string().contains("--mode copy"),
        "{err}"
    );
    let report = cache
        .materialize(&manifest, &other.dir.path().join("y"), LinkMode::Auto)
        .unwrap();
    assert_eq!((report.mode, report.placed), (LinkMode::Copy, 5));
    assert_eq!(
        fs::read(other.dir.path().join("y/bin/prepare.sh")).unwrap(),
        b"#!/bin/sh\n"
    );
}

#[test]
fn a_symlinked_directory_in_the_destination_is_never_followed() {
    let cache = Cache::new();
    let manifest = cache.manifest(FILES);
    let outside = cache.path("outside");
    fs::create_dir(&outside).unwrap();
    let dest = cache.path("job");
    fs::create_dir_all(dest.join("images")).unwrap();
    symlink(&outside, dest.join("images/deep")).unwrap();
    let err = cache
        .materialize(&manifest, &dest, LinkMode::Hardlink)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Destination { path, .. } if path == "images/deep"),
        "{err}"
    );
    assert!(err.to_string().contains("symlink"), "{err}");
    assert!(
        files_under(&outside).is_empty(),
        "something was written outside: {:?}",
        files_under(&outside)
    );
    // Same with a symlink at the top.
    let dest2 = cache.path("job2");
    fs::create_dir(&dest2).unwrap();
    symlink(&outside, dest2.join("bin")).unwrap();
    for mode in [LinkMode::Hardlink, LinkMode::Copy, LinkMode::Symlink] {
        assert!(cache.materialize(&manifest, &dest2, mode).is_err());
    }
    assert!(files_under(&outside).is_empty());
}

#[test]
fn a_symlink_where_a_file_goes_is_replaced_not_followed() {
    let cache = Cache::new();
    let manifest = cache.manifest(FILES);
    let victim = cache.path("victim.txt");
    fs::write(&victim, b"precious").unwrap();
    let dest = cache.path("job");
    fs::create_dir(&dest).unwrap();
    symlink(&victim, dest.join("labels.csv")).unwrap();
    for mode in [LinkMode::Hardlink, LinkMode::Copy] {
        cache.materialize(&manifest, &dest, mode).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(
            !fs::symlink_metadata(dest.join("labels.csv"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(dest.join("labels.csv")).unwrap(), b"a,b\n");
        fs::remove_file(dest.join("labels.csv")).unwrap();
        symlink(&victim, dest.join("labels.csv")).unwrap();
    }
}

#[test]
fn conflicting_destination_entries_are_errors_not_deletions() {
    let cache = Cache::new();
    let manifest = cache.manifest(FILES);
    let dest = cache.path("job");
    fs::create_dir_all(dest.join("labels.csv")).unwrap();
    fs::write(dest.join("labels.csv/keep"), b"keep").unwrap();
    let err = cache
        .store
        .materialize(
            &manifest,
            &PathPrefix::new("labels").unwrap(),
            &dest,
            LinkMode::Hardlink,
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("labels.csv") && err.to_string().contains("directory"),
        "{err}"
    );
    assert_eq!(fs::read(dest.join("labels.csv/keep")).unwrap(), b"keep");

    let dest = cache.path("job2");
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("images"), b"a file").unwrap();
    let err = cache
        .materialize(&manifest, &dest, LinkMode::Hardlink)
        .unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
    assert_eq!(fs::read(dest.join("images")).unwrap(), b"a file");
}

#[test]
fn a_blob_written_through_a_hardlink_is_detected_and_never_handed_out() {
    let cache = Cache::new();
    let manifest = cache.manifest(FILES);
    let dest = cache.path("job");
    cache
        .materialize(&manifest, &dest, LinkMode::Hardlink)
        .unwrap();
    // A careless job makes its file writable and edits it: the blob changes with it.
    let file = dest.join("images/bike.png");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&file, b"PNG BYTES").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o444)).unwrap();

    let dest2 = cache.path("job2");
    let err = cache
        .materialize(&manifest, &dest2, LinkMode::Hardlink)
        .unwrap_err();
    let key = hoard_store::BlobKey::new(Digest::of(b"png bytes"), false);
    assert!(
        matches!(&err, Error::Tampered { key: k, .. } if *k == key),
        "{err}"
    );
    assert!(err.to_string().contains(&key.digest.to_string()), "{err}");
    assert!(
        !dest2.join("images/bike.png").exists(),
        "the modified blob was handed out"
    );
    assert!(
        cache.store.record(&key).unwrap().is_none(),
        "the row must go so the caller refetches"
    );
    assert!(!cache.store.blob_path(&key).exists());
    assert_eq!(
        fs::read_dir(cache.root().join("quarantine"))
            .unwrap()
            .count(),
        1
    );
    // Refetch, and it works again.
    cache
        .store
        .ingest_reader(&b"png bytes"[..], false, None)
        .unwrap();
    cache
        .materialize(&manifest, &dest2, LinkMode::Hardlink)
        .unwrap();
    assert_eq!(
        fs::read(dest2.join("images/bike.png")).unwrap(),
        b"png bytes"
    );
}

#[test]
fn a_chmod_of_a_blob_is_detected() {
    let cache = Cache::new();
    let manifest = cache.manifest(FILES);
    let key = hoard_store::BlobKey::new(Digest::of(b"a,b\n"), false);
    fs::set_permissions(
        cache.store.blob_path(&key),
        fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let err = cache
        .materialize(&manifest, &cache.path("job"), LinkMode::Hardlink)
        .unwrap_err();
    assert!(err.to_string().contains("mode 666"), "{err}");
}

#[test]
fn missing_blobs_are_listed() {
    let cache = Cache::new();
    let mut manifest = cache.manifest(FILES);
    let other = hoard_types::Manifest::new();
    let _ = other;
    manifest.entries.insert(
        hoard_types::RelPath::new("not/cached.bin").unwrap(),
        hoard_types::Entry {
            digest: Digest::of(b"nope"),
            exec: false,
            reference: None,
            size: 4,
        },
    );
    let dest = cache.path("job");
    let err = cache
        .materialize(&manifest, &dest, LinkMode::Hardlink)
        .unwrap_err();
    assert!(
        matches!(&err, Error::MissingBlobs { missing } if missing.len() == 1 && missing[0].digest == Digest::of(b"nope")),
        "{err}"
    );
    assert!(
        !dest.exists() || files_under(&dest).is_empty(),
        "nothing may be written for an incomplete version"
    );
}
