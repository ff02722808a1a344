use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use hoard_store::{BlobKey, Error, Store};
use hoard_types::Digest;

use crate::common::Cache;

/// The state a crash between the rename into `blobs-v1/` and the index batch leaves: a
/// complete blob file without a row. Reopening re-hashes and adopts it.
#[test]
fn a_blob_without_a_row_is_verified_and_adopted() {
    let cache = Cache::new();
    let data = b"renamed but not indexed";
    let key = BlobKey::new(Digest::of(data), false);
    let path = cache.store.blob_path(&key);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, data).unwrap();
    assert!(cache.store.record(&key).unwrap().is_none());
    let cache = cache.reopen();
    let record = cache.store.record(&key).unwrap().expect("adopted");
    assert_eq!(record.size, data.len() as u64);
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
        0o444
    );
    assert!(cache.store.verify().unwrap().bad.is_empty());
}

#[test]
fn a_wrong_file_without_a_row_is_quarantined() {
    let cache = Cache::new();
    let key = BlobKey::new(Digest::of(b"what the name says"), false);
    let path = cache.store.blob_path(&key);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, b"something else").unwrap();
    fs::write(path.parent().unwrap().join("not-a-digest"), b"junk").unwrap();
    let cache = cache.reopen();
    assert!(cache.store.record(&key).unwrap().is_none());
    assert!(!path.exists());
    assert_eq!(
        fs::read_dir(cache.root().join("quarantine"))
            .unwrap()
            .count(),
        2
    );
}

#[test]
fn a_row_without_a_blob_is_dropped() {
    let cache = Cache::new();
    let ingested = cache
        .store
        .ingest_reader(&b"soon gone"[..], false, None)
        .unwrap();
    fs::remove_file(cache.store.blob_path(&ingested.key)).unwrap();
    let cache = cache.reopen();
    assert!(cache.store.record(&ingested.key).unwrap().is_none());
    assert_eq!(
        cache.store.missing(&[ingested.key]).unwrap(),
        vec![ingested.key]
    );
}

#[test]
fn orphans_in_tmp_are_removed_and_partials_kept() {
    let cache = Cache::new();
    let tmp = cache.root().join("tmp");
    let partial = format!("{}.partial", Digest::of(b"x"));
    fs::write(tmp.join("ingest-999-0"), b"half").unwrap();
    fs::write(tmp.join(&partial), b"resume me").unwrap();
    fs::write(tmp.join("garbage.partial"), b"?").unwrap();
    let _cache = cache.reopen();
    let left: Vec<String> = fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec![partial]);
}

#[test]
fn a_newer_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("blobs-v2")).unwrap();
    let err = Store::open(dir.path()).err().unwrap();
    assert!(
        matches!(err, Error::NewerLayout { ref found, .. } if found == "blobs-v2"),
        "{err}"
    );
    assert!(err.to_string().contains("newer hoard"), "{err}");
    assert!(
        !dir.path().join("index-v1").exists(),
        "nothing may be created in a newer cache"
    );
}

#[test]
fn a_second_open_of_the_same_cache_is_refused() {
    let cache = Cache::new();
    let err = Store::open(cache.root()).err().unwrap();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(
        err.to_string().contains("in use by another hoard process"),
        "{err}"
    );
}

/// Not a test on its own: the child process of `a_kill_during_ingest_leaves_a_consistent_cache`.
#[test]
fn crash_child() {
    let Ok(root) = std::env::var("HOARD_TEST_CRASH_ROOT") else {
        return;
    };
    let store = Store::open(root).unwrap();
    let mut out = std::io::stdout();
    for i in 0u64.. {
        let data: Vec<u8> = (0..(20_000 + i * 997 % 50_000))
            .map(|j| (j * (i + 1) % 251) as u8)
            .collect();
        if i % 3 == 0 {
            let dir = tempfile::tempdir().unwrap();
            let paths: Vec<_> = (0..5u64)
                .map(|k| {
                    let p = dir.path().join(k.to_string());
                    fs::write(&p, [&data[..], &k.to_le_bytes()].concat()).unwrap();
                    p
                })
                .collect();
            store.ingest_files(&paths).unwrap();
        } else {
            store.ingest_reader(&data[..], i % 2 == 0, None).unwrap();
        }
        std::io::Write::write_all(&mut out, b"ingested\n").unwrap();
    }
}

/// SIGKILL a process in the middle of ingesting, at several points, and check after each
/// that the reopened cache holds only complete, verified blobs.
#[test]
fn a_kill_during_ingest_leaves_a_consistent_cache() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    for round in 0..3u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "reconcile::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("HOARD_TEST_CRASH_ROOT", &root)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let wanted = 5 + round * 7;
        let mut seen = 0u64;
        while seen < wanted {
            match lines.next() {
                Some(Ok(line)) if line == "ingested" => seen += 1,
                Some(Ok(_)) => {}
                other => panic!("the child stopped early: {other:?}"),
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let store = Store::open(&root).unwrap();
        let report = store.verify().unwrap();
        assert!(report.bad.is_empty(), "round {round}: {:?}", report.bad);
        assert!(
            report.checked >= seen,
            "round {round}: {} blobs for {seen} ingests",
            report.checked
        );
        let tmp_left = fs::read_dir(root.join("tmp")).unwrap().count();
        assert_eq!(tmp_left, 0, "round {round}: orphans were left in tmp/");
    }
}
