use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;

use hoard_store::{CleanReport, LinkMode};
use hoard_types::{Manifest, PathPrefix};

use crate::common::{Cache, files_under};

fn version(cache: &Cache) -> Manifest {
    cache.manifest(&[
        ("images/cat.png", b"cat", false),
        ("images/deep/dog.png", b"dog", false),
        ("labels/cat.txt", b"c", false),
        ("README", b"readme", false),
    ])
}

#[test]
fn clean_removes_only_what_the_version_lacks_under_the_prefix() {
    let cache = Cache::new();
    let manifest = version(&cache);
    let dest = cache.path("dest");
    cache
        .materialize(&manifest, &dest, LinkMode::Hardlink)
        .unwrap();
    // Leftovers of an older version, in and out of the prefix.
    fs::write(dest.join("images/old.png"), b"old").unwrap();
    fs::create_dir_all(dest.join("images/gone/deeper")).unwrap();
    fs::write(dest.join("images/gone/deeper/x"), b"x").unwrap();
    fs::write(dest.join("images/deep/stale"), b"s").unwrap();
    fs::write(dest.join("labels/old.txt"), b"o").unwrap();
    fs::write(dest.join("notes"), b"mine").unwrap();
    // A non-UTF-8 name no manifest can hold.
    fs::write(
        dest.join("images").join(OsStr::from_bytes(b"bad\xff")),
        b"b",
    )
    .unwrap();

    let images = PathPrefix::new("images/").unwrap();
    let selected: Manifest = Manifest {
        entries: manifest
            .select(&images)
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect(),
        ..Manifest::new()
    };
    let report = cache.store.clean(&selected, &images, &dest).unwrap();
    assert_eq!(report, CleanReport { files: 4, dirs: 2 });
    assert_eq!(
        files_under(&dest),
        [
            "README",
            "images/cat.png",
            "images/deep/dog.png",
            "labels/cat.txt",
            "labels/old.txt",
            "notes"
        ]
    );

    // The whole version: what is left outside it goes too; a second run has nothing to do.
    let report = cache
        .store
        .clean(&manifest, &PathPrefix::all(), &dest)
        .unwrap();
    assert_eq!(report, CleanReport { files: 2, dirs: 0 });
    assert_eq!(
        files_under(&dest),
        [
            "README",
            "images/cat.png",
            "images/deep/dog.png",
            "labels/cat.txt"
        ]
    );
    let again = cache
        .store
        .clean(&manifest, &PathPrefix::all(), &dest)
        .unwrap();
    assert_eq!(again, CleanReport::default());
}

#[test]
fn clean_never_follows_a_symlink_out_of_the_destination() {
    let cache = Cache::new();
    let manifest = version(&cache);
    let dest = cache.path("dest");
    let outside = cache.path("outside");
    fs::create_dir_all(outside.join("sub")).unwrap();
    fs::write(outside.join("keep.txt"), b"keep").unwrap();
    fs::write(outside.join("sub/keep2.txt"), b"keep").unwrap();
    cache
        .materialize(&manifest, &dest, LinkMode::Hardlink)
        .unwrap();
    symlink(&outside, dest.join("escape")).unwrap();
    symlink(&outside, dest.join("images/escape")).unwrap();
    symlink(outside.join("keep.txt"), dest.join("labels/link.txt")).unwrap();

    let report = cache
        .store
        .clean(&manifest, &PathPrefix::all(), &dest)
        .unwrap();
    assert_eq!(report, CleanReport { files: 3, dirs: 0 });
    assert_eq!(files_under(&outside), ["keep.txt", "sub/keep2.txt"]);
    assert_eq!(fs::read(outside.join("keep.txt")).unwrap(), b"keep");
    assert!(fs::symlink_metadata(dest.join("escape")).is_err());
    assert_eq!(
        files_under(&dest),
        [
            "README",
            "images/cat.png",
            "images/deep/dog.png",
            "labels/cat.txt"
        ]
    );
}
