use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::Arc;

use hoard_store::{BLOB_MTIME, Begin, BlobKey, Error, Store};
use hoard_types::Digest;

use crate::common::{Cache, Tmpfs, is_root};

#[test]
fn a_blob_is_read_only_with_pinned_mtime_and_the_right_bytes() {
    let cache = Cache::new();
    let data = b"hello hoard".repeat(1000);
    let ingested = cache.store.ingest_reader(&data[..], false, None).unwrap();
    assert!(ingested.fresh);
    assert_eq!(ingested.size, data.len() as u64);
    let path = cache.store.blob_path(&ingested.key);
    assert_eq!(fs::read(&path).unwrap(), data);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o444);
    assert_eq!(meta.mtime(), BLOB_MTIME);
    let record = cache.store.record(&ingested.key).unwrap().unwrap();
    assert_eq!((record.size, record.ino), (data.len() as u64, meta.ino()));
    assert!(
        fs::read_dir(cache.root().join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "tmp/ must be empty"
    );

    let exec = cache.store.ingest_reader(&data[..], true, None).unwrap();
    assert_ne!(exec.key, ingested.key, "exec and plain blobs are distinct");
    assert_eq!(
        fs::metadata(cache.store.blob_path(&exec.key))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o555
    );
}

#[test]
fn ingesting_present_bytes_does_not_rewrite_the_blob() {
    let cache = Cache::new();
    let data = b"same bytes";
    let first = cache.store.ingest_reader(&data[..], false, None).unwrap();
    let ino = cache.blob_ino(data, false);
    let again = cache.store.ingest_reader(&data[..], false, None).unwrap();
    assert!(!again.fresh);
    assert_eq!(
        cache.blob_ino(data, false),
        ino,
        "the blob file was replaced"
    );
    // With the digest known up front, the stream is not even read.
    let unread = PanicReader;
    let known = cache
        .store
        .ingest_reader(unread, false, Some((first.key.digest, data.len() as u64)))
        .unwrap();
    assert!(!known.fresh);
}

struct PanicReader;
impl std::io::Read for PanicReader {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        panic!("the stream must not be read when the blob is present");
    }
}

#[test]
fn wrong_digest_or_size_is_refused_and_leaves_nothing() {
    let cache = Cache::new();
    let data = b"the real bytes";
    let wrong = Digest::of(b"other bytes");
    let err = cache
        .store
        .ingest_reader(&data[..], false, Some((wrong, data.len() as u64)))
        .unwrap_err();
    assert!(
        matches!(err, Error::DigestMismatch { expected, .. } if expected == wrong),
        "{err}"
    );
    assert!(err.to_string().contains(&wrong.to_string()));

    let truncated = &data[..5];
    let err = cache
        .store
        .ingest_reader(
            truncated,
            false,
            Some((Digest::of(data), data.len() as u64)),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::SizeMismatch {
                expected: 14,
                actual: 5,
                ..
            }
        ),
        "{err}"
    );
    let err = cache
        .store
        .ingest_reader(
            &b"the real bytes and more"[..],
            false,
            Some((Digest::of(data), data.len() as u64)),
        )
        .unwrap_err();
    assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");

    assert!(
        fs::read_dir(cache.root().join("tmp"))
            .unwrap()
            .next()
            .is_none()
    );
    assert_eq!(cache.store.usage().unwrap(), (0, 0));
    assert!(
        cache
            .store
            .record(&BlobKey::new(wrong, false))
            .unwrap()
            .is_none()
    );
}

#[test]
fn an_interrupted_download_resumes_from_its_offset() {
    let cache = Cache::new();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let key = BlobKey::new(Digest::of(&data), false);
    match cache.store.begin(key, data.len() as u64).unwrap() {
        Begin::Write(mut w) => {
            assert_eq!(w.offset(), 0);
            w.write(&data[..100_000]).unwrap();
            // dropped: the connection broke
        }
        Begin::Present(_) => panic!("not cached yet"),
    }
    let cache = cache.reopen();
    let Begin::Write(mut w) = cache.store.begin(key, data.len() as u64).unwrap() else {
        panic!("not cached yet")
    };
    assert_eq!(w.offset(), 100_000, "the partial survives a restart");
    w.write(&data[100_000..]).unwrap();
    let done = w.finish().unwrap();
    assert!(done.fresh);
    assert_eq!(fs::read(cache.store.blob_path(&key)).unwrap(), data);
    assert!(matches!(
        cache.store.begin(key, data.len() as u64).unwrap(),
        Begin::Present(_)
    ));
}

#[test]
fn a_corrupt_partial_is_caught_at_the_end_and_discarded() {
    let cache = Cache::new();
    let data = vec![7u8; 10_000];
    let key = BlobKey::new(Digest::of(&data), false);
    let Begin::Write(mut w) = cache.store.begin(key, 10_000).unwrap() else {
        panic!()
    };
    w.write(&[8u8; 4_000]).unwrap(); // wrong bytes
    drop(w);
    let Begin::Write(mut w) = cache.store.begin(key, 10_000).unwrap() else {
        panic!()
    };
    assert_eq!(w.offset(), 4_000);
    w.write(&data[4_000..]).unwrap();
    assert!(matches!(
        w.finish().unwrap_err(),
        Error::DigestMismatch { .. }
    ));
    let Begin::Write(w) = cache.store.begin(key, 10_000).unwrap() else {
        panic!()
    };
    assert_eq!(w.offset(), 0, "the bad partial must not be resumed");
}

#[test]
fn concurrent_ingests_of_the_same_bytes_leave_one_blob() {
    let cache = Arc::new(Cache::new());
    let data: Arc<Vec<u8>> = Arc::new((0..1_000_000u32).map(|i| (i * 7 % 256) as u8).collect());
    let key = BlobKey::new(Digest::of(&data), false);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (cache, data) = (Arc::clone(&cache), Arc::clone(&data));
            std::thread::spawn(move || {
                if i % 2 == 0 {
                    cache
                        .store
                        .ingest_reader(&data[..], false, None)
                        .map(|r| r.key)
                } else {
                    match cache.store.begin(key, data.len() as u64)? {
                        Begin::Present(p) => Ok(p.key),
                        Begin::Write(mut w) => {
                            for chunk in data.chunks(65_536) {
                                w.write(chunk)?;
                            }
                            w.finish().map(|r| r.key)
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().unwrap(), key);
    }
    let shard = cache.store.blob_path(&key).parent().unwrap().to_owned();
    assert_eq!(fs::read_dir(&shard).unwrap().count(), 1);
    assert_eq!(fs::read(cache.store.blob_path(&key)).unwrap(), *data);
    assert_eq!(cache.store.usage().unwrap(), (data.len() as u64, 1));
    assert!(fs::read_dir(cache.root().join("tmp")).unwrap().all(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")
    }));
}

#[test]
fn ingesting_a_local_file_leaves_it_untouched() {
    let cache = Cache::new();
    let src = cache.path("script.sh");
    fs::write(&src, b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o750)).unwrap();
    let before = fs::metadata(&src).unwrap();
    let ingested = cache.store.ingest_file(&src).unwrap();
    assert!(ingested.key.exec, "the exec bit comes from the file's mode");
    let after = fs::metadata(&src).unwrap();
    assert_eq!(
        (after.ino(), after.mode(), after.mtime_nsec(), after.nlink()),
        (before.ino(), before.mode(), before.mtime_nsec(), 1)
    );
    assert_ne!(
        cache.blob_ino(b"#!/bin/sh\necho hi\n", true),
        before.ino(),
        "the blob must not share the user's inode"
    );
}

#[test]
fn batch_ingest_commits_every_file() {
    let cache = Cache::new();
    let dir = cache.path("src");
    fs::create_dir(&dir).unwrap();
    let paths: Vec<_> = (0..50)
        .map(|i| {
            let p = dir.join(format!("f{i}"));
            fs::write(&p, format!("file {}", i % 40)).unwrap();
            p
        })
        .collect();
    let results = cache.store.ingest_files(&paths).unwrap();
    assert_eq!(results.len(), 50);
    assert_eq!(
        results.iter().filter(|r| r.fresh).count(),
        40,
        "10 files repeat earlier contents"
    );
    for (path, r) in paths.iter().zip(&results) {
        assert_eq!(r.key.digest, Digest::of(&fs::read(path).unwrap()));
        assert!(cache.store.record(&r.key).unwrap().is_some());
    }
    assert_eq!(cache.store.usage().unwrap().1, 40);
}

#[test]
#[ignore = "needs root: scripts/test runs it when run as root, as CI does"]
fn a_full_disk_is_a_clear_error_and_the_cache_stays_consistent() {
    assert!(is_root(), "mounting a small tmpfs needs root");
    let fs_ = Tmpfs::mount("2m");
    let root = fs_.dir.path().join("cache");
    let store = Store::open(&root).unwrap();
    let small = vec![1u8; 100_000];
    store.ingest_reader(&small[..], false, None).unwrap();
    let big = vec![2u8; 4_000_000];
    let err = store.ingest_reader(&big[..], false, None).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("tmp/ingest-"), "{text}");
    let source = std::error::Error::source(&err)
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(source.contains("No space left"), "{source}");
    let key = BlobKey::new(Digest::of(&big), false);
    let Err(err) = (match store.begin(key, big.len() as u64) {
        Ok(Begin::Write(mut w)) => w.write(&big),
        Ok(Begin::Present(_)) => panic!("cannot be present"),
        Err(e) => Err(e),
    }) else {
        panic!("writing 4 MB into 2 MB must fail")
    };
    // Refused before it starts: the filesystem has less room than the blob needs.
    assert!(err.to_string().contains("free"), "{err}");
    assert_eq!(
        fs::read_dir(root.join("tmp")).unwrap().count(),
        0,
        "a partial that filled the disk must go"
    );
    drop(store);
    let store = Store::open(&root).unwrap();
    let report = store.verify().unwrap();
    assert!(report.bad.is_empty(), "{:?}", report.bad);
    assert_eq!(store.usage().unwrap(), (100_000, 1));
    assert!(store.record(&key).unwrap().is_none());
}

#[test]
fn a_cache_root_that_is_a_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"x").unwrap();
    let err = Store::open(file.join("cache")).err().unwrap().to_string();
    assert!(err.contains("not-a-dir/cache"), "{err}");
}

#[test]
fn parts_are_hashed_as_written_checked_and_staged() {
    let cache = Cache::new();
    // 5 parts of 1 KiB and a short sixth: a tree of uneven depth.
    let data: Vec<u8> = (0..5500u32).map(|i| (i % 251) as u8).collect();
    let digest = Digest::of(&data);
    let size = data.len() as u64;

    // Parts arrive out of order, each in two writes.
    let writer = cache
        .store
        .parted_writer(false, Some(digest), size, 1024)
        .unwrap();
    // A claim of 1 PiB (an untrusted manifest's) is refused before anything is allocated
    // or written, saying how much room there is.
    let err = cache
        .store
        .parted_writer(false, Some(digest), 1 << 50, 1 << 24)
        .err()
        .unwrap();
    assert!(err.to_string().contains("1024.0 TiB"), "{err}");
    let ranges: Vec<_> = writer.ranges().collect();
    assert_eq!(ranges.len(), 6);
    assert_eq!(ranges[5], 5120..5500);
    for i in [3, 5, 0, 1, 4, 2] {
        let mut part = writer.part(i);
        let r = part.range();
        let (start, end) = (r.start as usize, r.end as usize);
        let mid = start + (end - start) / 3;
        part.write(&data[start..mid]).unwrap();
        part.write(&data[mid..end]).unwrap();
        if i == 5 {
            assert!(part.write(b"x").is_err(), "past the part's end");
        }
        part.finish().unwrap();
    }
    let staged = writer.finish_staged().unwrap();
    let key = staged.ingested.key;
    assert_eq!(key.digest, digest);
    assert!(
        cache.store.record(&key).unwrap().is_none(),
        "not in the index before the commit"
    );
    cache.store.commit_staged([&staged]).unwrap();
    assert!(cache.store.record(&key).unwrap().is_some());
    assert_eq!(fs::read(cache.store.blob_path(&key)).unwrap(), data);

    let no_tmp = || {
        fs::read_dir(cache.root().join("tmp"))
            .unwrap()
            .next()
            .is_none()
    };
    // A part with wrong bytes: refused at the end, and nothing stays behind.
    let other: Vec<u8> = data.iter().map(|b| b ^ 1).collect();
    let writer = cache
        .store
        .parted_writer(true, Some(Digest::of(&other)), size, 2048)
        .unwrap();
    for (i, range) in (0..).zip(writer.ranges()) {
        let source = if i == 1 { &data } else { &other };
        let mut part = writer.part(i);
        part.write(&source[range.start as usize..range.end as usize])
            .unwrap();
        part.finish().unwrap();
    }
    let e = writer.finish_staged().unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert!(no_tmp());

    // A short part cannot be finished, and a blob with a missing part is refused.
    let writer = cache
        .store
        .parted_writer(false, Some(digest), size, 4096)
        .unwrap();
    let mut part = writer.part(0);
    part.write(&data[..100]).unwrap();
    assert!(matches!(part.finish(), Err(Error::SizeMismatch { .. })));
    let mut part = writer.part(1);
    part.write(&data[4096..]).unwrap();
    part.finish().unwrap();
    let e = writer.finish_staged().unwrap_err();
    assert!(matches!(e, Error::Parts { .. }), "{e}");
    assert!(no_tmp());

    // Part sizes must be powers of two of at least one BLAKE3 chunk.
    for step in [1000, 3072, 512] {
        assert!(
            cache
                .store
                .parted_writer(false, Some(digest), size, step)
                .is_err()
        );
    }
}

#[test]
fn a_file_written_to_while_it_is_ingested_is_refused() {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    let cache = Cache::new();
    let path = cache.path("growing.bin");
    fs::write(&path, vec![1u8; 32 << 20]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(std::sync::Barrier::new(2));
    let writer = {
        let (path, stop, started) = (path.clone(), stop.clone(), started.clone());
        std::thread::spawn(move || {
            let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
            file.write_all(b"x").unwrap();
            started.wait();
            while !stop.load(Ordering::Relaxed) {
                file.write_all(b"x").unwrap();
            }
        })
    };
    started.wait();
    let result = cache.store.ingest_file(&path);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let e = result.unwrap_err();
    let e = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(e.contains("changed while it was read"), "{e}");
    assert!(
        fs::read_dir(cache.root().join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "nothing left behind"
    );
    let (bytes, blobs) = cache.store.usage().unwrap();
    assert_eq!((bytes, blobs), (0, 0));
}

/// A blob written in parts survives a crash of its writer: the parts it completed are
/// re-hashed from the file and kept, only the others are written again; a kept part whose
/// bytes changed on disk makes the blob fail its digest, and nothing stays behind.
#[test]
fn parts_a_crashed_writer_completed_are_resumed() {
    let cache = Cache::new();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 241) as u8).collect();
    let digest = Digest::of(&data);
    let size = data.len() as u64;
    let write = |writer: &hoard_store::PartedWriter<'_>, index: u64| {
        let mut part = writer.part(index);
        let r = part.range();
        part.write(&data[r.start as usize..r.end as usize]).unwrap();
        part.finish().unwrap();
    };
    // The first writer completes parts 0, 3 and 7 of 10, then "crashes" (is dropped).
    let first = cache
        .store
        .parted_writer(false, Some(digest), size, 1024)
        .unwrap();
    assert_eq!(first.pending().len(), 10);
    for i in [0, 3, 7] {
        write(&first, i);
    }
    drop(first);
    let second = cache
        .store
        .parted_writer(false, Some(digest), size, 1024)
        .unwrap();
    assert_eq!(second.resumed(), 3);
    let pending: Vec<u64> = second.pending().into_iter().map(|(i, _)| i).collect();
    assert_eq!(pending, [1, 2, 4, 5, 6, 8, 9]);
    for i in pending {
        write(&second, i);
    }
    let staged = second.finish_staged().unwrap();
    cache.store.commit_staged([&staged]).unwrap();
    assert_eq!(
        fs::read(cache.store.blob_path(&staged.ingested.key)).unwrap(),
        data
    );
    let tmp = || fs::read_dir(cache.root().join("tmp")).unwrap().count();
    assert_eq!(tmp(), 0, "the parts and their ledger are gone once staged");

    // Kept parts are re-hashed, not trusted: one changed on disk fails the whole blob.
    let other: Vec<u8> = data.iter().map(|b| b ^ 0x55).collect();
    let other_digest = Digest::of(&other);
    let third = cache
        .store
        .parted_writer(false, Some(other_digest), size, 1024)
        .unwrap();
    let mut part = third.part(2);
    part.write(&other[2048..3072]).unwrap();
    part.finish().unwrap();
    drop(third);
    let ranges = cache.root().join(format!("tmp/{other_digest}.ranges"));
    let mut bytes = fs::read(&ranges).unwrap();
    bytes[2500] ^= 1;
    fs::write(&ranges, bytes).unwrap();
    let fourth = cache
        .store
        .parted_writer(false, Some(other_digest), size, 1024)
        .unwrap();
    assert_eq!(fourth.resumed(), 1);
    for (i, r) in fourth.pending() {
        let mut part = fourth.part(i);
        part.write(&other[r.start as usize..r.end as usize])
            .unwrap();
        part.finish().unwrap();
    }
    let err = fourth.finish_staged().unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert_eq!(tmp(), 0);
}

/// RocksDB stops writing for good once a write fails for want of space (a background
/// error it does not clear by itself); the index reopens it at the next write that finds
/// room, and every write it acknowledged before survives.
#[test]
#[ignore = "needs root: scripts/test runs it when run as root, as CI does"]
fn the_index_writes_again_at_once_after_a_full_disk() {
    assert!(is_root(), "mounting a small tmpfs needs root");
    let disk = Tmpfs::mount("32m");
    let root = disk.dir.path().join("cache");
    let store = Store::open(&root).unwrap();
    let value = vec![7u8; 100_000];
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let key = format!("before{i}");
        store
            .put_record(hoard_store::Table::Pins, &key, &value)
            .unwrap();
        acknowledged.push(key);
    }
    // Another program fills the disk.
    let filler = disk.dir.path().join("filler");
    {
        use std::io::Write;
        let mut f = fs::File::create(&filler).unwrap();
        let block = vec![0u8; 1 << 16];
        while f.write_all(&block).is_ok() {}
        let small = [0u8; 512];
        while f.write_all(&small).is_ok() {}
    }
    for i in 0..2000 {
        let key = format!("k{i}");
        match store.put_record(hoard_store::Table::Pins, &key, &value) {
            Ok(()) => acknowledged.push(key),
            Err(e) => {
                assert!(e.to_string().contains("space"), "{e}");
                break;
            }
        }
    }
    assert!(acknowledged.len() < 2000, "the disk never filled");
    let trouble = store.trouble().expect("health names the full disk");
    assert!(trouble.contains("disk was full"), "{trouble}");
    // While the disk stays full, writes keep failing with a clear error.
    let err = store
        .put_record(hoard_store::Table::Pins, "still-full", b"x")
        .unwrap_err();
    assert!(err.to_string().contains("space"), "{err}");

    fs::remove_file(&filler).unwrap();
    store
        .put_record(hoard_store::Table::Pins, "after", b"x")
        .expect("the first write after space is freed works");
    assert_eq!(store.trouble(), None);
    for key in &acknowledged {
        assert_eq!(
            store.get_record(hoard_store::Table::Pins, key).unwrap(),
            Some(value.clone()),
            "{key} was acknowledged before the disk filled"
        );
    }
    drop(store);
    let store = Store::open(&root).unwrap();
    assert_eq!(
        store.get_record(hoard_store::Table::Pins, "after").unwrap(),
        Some(b"x".to_vec())
    );
    let last = acknowledged.last().unwrap();
    assert!(
        store
            .get_record(hoard_store::Table::Pins, last)
            .unwrap()
            .is_some()
    );
}

/// The store remembers which shard directories (`blobs-v1/ab/`) it made; one that goes
/// away behind its back (an operator cleaning up) is made again by the next blob in it.
#[test]
fn a_shard_directory_removed_behind_the_stores_back_is_made_again() {
    let cache = Cache::new();
    let first = cache
        .store
        .ingest_reader(&b"first"[..], false, None)
        .unwrap();
    let shard = cache
        .store
        .blob_path(&first.key)
        .parent()
        .unwrap()
        .to_owned();
    // Bytes whose blob lands in the same shard.
    let same_shard = (0u32..100_000)
        .map(|i| format!("second {i}").into_bytes())
        .find(|data| Digest::of(data).as_bytes()[0] == first.key.digest.as_bytes()[0])
        .unwrap();
    fs::remove_dir_all(&shard).unwrap();
    let second = cache
        .store
        .ingest_reader(&same_shard[..], false, None)
        .unwrap();
    assert_eq!(
        fs::read(cache.store.blob_path(&second.key)).unwrap(),
        same_shard
    );
}
